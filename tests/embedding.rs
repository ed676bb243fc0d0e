//! The embedding examples against a real etcd: `examples/calloop.rs` (the client as a calloop
//! `EventSource` beside a ticking calloop timer) and `examples/epoll.rs` (a raw epoll loop
//! serving the client's fd and a UDP socket). Each exits 0 with nothing on stderr, and its
//! lines show the two kinds of event in the order the example guarantees.

mod support;

use std::path::PathBuf;
use std::process::Command;
use support::Etcd;

/// Builds `examples/NAME.rs` (into `CARGO_TARGET_DIR` when set) and returns its path.
fn example_bin(name: &str) -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", name])
        .current_dir(&repo)
        .status()
        .unwrap_or_else(|e| panic!("cargo build --example {name}: {e}"));
    assert!(status.success(), "cargo build --example {name} failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));
    target.join("debug/examples").join(name)
}

/// Runs the example against `etcd`; checks it exits 0 with an empty stderr and returns its
/// stdout's lines.
fn run(name: &str, etcd: &Etcd) -> Vec<String> {
    let out =
        Command::new(example_bin(name)).arg(etcd.endpoint()).output().expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "{}\n{stdout}\n{stderr}", out.status);
    stdout.lines().map(str::to_owned).collect()
}

/// The index of the one line that starts with `prefix`.
fn position(lines: &[String], prefix: &str) -> usize {
    let found: Vec<usize> =
        lines.iter().enumerate().filter(|(_, l)| l.starts_with(prefix)).map(|(i, _)| i).collect();
    assert_eq!(found.len(), 1, "one line {prefix:?} in:\n{}", lines.join("\n"));
    found[0]
}

#[test]
fn the_calloop_example_ticks_while_the_watch_sees_each_tick_s_put() {
    let etcd = Etcd::start();
    let lines = run("calloop", &etcd);
    let at = |prefix: &str| position(&lines, prefix);
    assert_eq!(lines[0], format!("calloop example against {}", etcd.endpoint()));
    // The ticker starts once the watch is created, and each tick's put reaches the watch
    // after that tick: calloop's timer and etcd's work take turns on the one thread (how the
    // ticks and the events fall between each other depends on etcd's speed).
    let created = at("watching calloop/ from revision ");
    let ticks: Vec<usize> =
        (1..=3).map(|i| at(&format!("tick {i}: put calloop/tick/{i}"))).collect();
    let seen: Vec<usize> =
        (1..=3).map(|i| at(&format!("watch: put calloop/tick/{i} = {i}"))).collect();
    assert!(created < ticks[0], "{lines:#?}");
    for i in 0..3 {
        assert!(ticks[i] < seen[i], "tick {} after its watch event: {lines:#?}", i + 1);
    }
    assert!(ticks.is_sorted() && seen.is_sorted(), "{lines:#?}");
    // Then the read, the cancel and the cleanup, in order, and the loop stops by itself.
    let tail = &lines[seen[2] + 1..];
    assert_eq!(
        tail[..3],
        ["get calloop/tick/: 3 keys", "watch cancelled", "deleted 3 keys"],
        "{lines:#?}"
    );
    assert!(tail[3].starts_with("loop stopped after ") && tail[3].ends_with("; idle: true"));
    assert_eq!(tail.len(), 4, "{lines:#?}");
}

#[test]
fn the_epoll_example_alternates_socket_commands_and_client_callbacks() {
    let etcd = Etcd::start();
    let lines = run("epoll", &etcd);
    assert_eq!(lines[0], format!("epoll example against {}", etcd.endpoint()));
    // Each command is read from the socket, its etcd call's callback runs, and the reply goes
    // out from it before the peer sends the next command: one order, every run.
    let revision = |line: &str| -> i64 {
        line.rsplit(' ').next().and_then(|r| r.parse().ok()).unwrap_or_else(|| panic!("{line}"))
    };
    let (a, b) = (revision(&lines[2]), revision(&lines[5]));
    assert_eq!(b, a + 1, "{lines:#?}");
    let expected = [
        "udp <- put epoll/a 1".to_string(),
        format!("etcd: put epoll/a at revision {a}"),
        format!("udp -> OK {a}"),
        "udp <- put epoll/b 2".into(),
        format!("etcd: put epoll/b at revision {b}"),
        format!("udp -> OK {b}"),
        "udp <- get epoll/".into(),
        "etcd: get: 2 keys".into(),
        "udp -> epoll/a=1 epoll/b=2".into(),
        "udp <- delete epoll/".into(),
        "etcd: deleted 2 keys".into(),
        "udp -> deleted 2".into(),
        "udp <- quit".into(),
        "done: the peer got 4 replies; client idle: true".into(),
    ];
    assert_eq!(lines[1..], expected, "{lines:#?}");
}
