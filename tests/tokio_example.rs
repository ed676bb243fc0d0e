//! `examples/tokio.rs` (the futures adapter on a current-thread tokio runtime) against a
//! real etcd: every step runs in order, the watch stream sees the concurrent writes, and
//! the program leaves no key behind and exits cleanly.
#![cfg(feature = "futures")]

mod support;

use evetcd::GetOptions;
use std::path::PathBuf;
use std::process::Command;
use support::client::{client, ok};
use support::Etcd;

fn tokio_bin() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--quiet", "--features", "futures", "--example", "tokio"]);
    // As from a shell: without the variables cargo sets for this test (ring's build script
    // tracks some, so they would rebuild it here, and again in the next build from a shell).
    const SET_BY_CARGO_TEST: [&str; 8] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_") || SET_BY_CARGO_TEST.contains(&&*name) {
            build.env_remove(&*name);
        }
    }
    let status = build.current_dir(&repo).status().expect("cargo build --example tokio");
    assert!(status.success(), "cargo build --example tokio failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));
    target.join("debug/examples/tokio")
}

#[test]
fn the_tokio_example_runs_every_step_and_exits_cleanly() {
    let etcd = Etcd::start();
    let out = Command::new(tokio_bin()).arg(etcd.endpoint()).output().expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "{stdout}\n{stderr}");
    let steps = [
        "evetcd on tokio against ",
        "put tokio-example/greeting at revision ",
        "get tokio-example/greeting = hello",
        "txn succeeded: true",
        "lease ",
        "lease ",
        "watching tokio-example/events/ from revision ",
        "watch: PUT tokio-example/events/1",
        "watch: PUT tokio-example/events/2",
        "watch: PUT tokio-example/events/3",
        "writer task done",
        "watch cancelled by dropping its stream",
        "lease ",
        "cleanup: 4 key(s) deleted",
        "client closed, driver ended",
    ];
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), steps.len(), "{stdout}");
    for (line, step) in lines.iter().zip(steps) {
        assert!(line.starts_with(step), "{line:?} is not {step:?}:\n{stdout}");
    }
    assert!(lines[4].contains("granted for 30 s"), "{stdout}");
    assert!(lines[5].ends_with("holds 1 key(s)"), "{stdout}");
    assert!(lines[12].ends_with("revoked"), "{stdout}");
    let c = client(&etcd.endpoint());
    let left = ok(&c, |cb| c.get("tokio-example/", GetOptions::new().prefix(true), cb));
    assert!(left.kvs.is_empty(), "{:?}", left.kvs);
}
