//! `examples/recipes.rs` against a real etcd: every step of the tour runs, in order, and
//! the session's close leaves none of its recipe keys behind.

mod support;

use evetcd::GetOptions;
use std::path::PathBuf;
use std::process::Command;
use support::client::{client, ok};
use support::Etcd;

fn recipes_bin() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", "recipes"])
        .current_dir(&repo)
        .status()
        .expect("cargo build --example recipes");
    assert!(status.success(), "cargo build --example recipes failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));
    target.join("debug/examples/recipes")
}

#[test]
fn the_recipes_tour_runs_every_step_and_leaves_no_recipe_key() {
    let etcd = Etcd::start();
    let out = Command::new(recipes_bin()).arg(etcd.endpoint()).output().expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "{stdout}\n{stderr}");
    // The tour's own steps in order; the observer's lines (printed from its watch) in
    // their own order, interleaved as the events happen to arrive.
    let steps = [
        "session: lease ",
        "locked: key recipes/lock/",
        "fenced write applied",
        "unlocked",
        "elected as recipes/election/",
        "resigned",
        "transferred 30 from a to b at revision ",
        "session closed: its keys are gone",
    ];
    let observed = ["  observer: leader value first", "  observer: leader value second"];
    let lines: Vec<&str> = stdout.lines().skip(1).collect();
    let (watched, tour): (Vec<&str>, Vec<&str>) =
        lines.iter().partition(|l| l.starts_with("  observer:"));
    assert_eq!(watched, observed, "{stdout}");
    assert_eq!(tour.len(), steps.len(), "{stdout}");
    for (line, step) in tour.iter().zip(steps) {
        assert!(line.starts_with(step), "{line:?} is not {step:?}:\n{stdout}");
    }
    let c = client(&etcd.endpoint());
    for prefix in ["recipes/lock/", "recipes/election/"] {
        let left = ok(&c, |cb| c.get(prefix, GetOptions::new().prefix(true), cb));
        assert!(left.kvs.is_empty(), "{prefix}: {:?}", left.kvs);
    }
    let b = ok(&c, |cb| c.get("recipes/accounts/b", GetOptions::new(), cb));
    assert_eq!(&b.kvs[0].value[..], b"30");
}
