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
    support::examples::build_example("tokio", &["futures"])
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
