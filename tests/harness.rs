//! Tests of the test harness itself (no evetcd API), so a broken harness
//! shows up here rather than as mysterious client test failures.

mod support;

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use support::{etcdctl, refused_endpoint, unique_prefix, Cluster, Etcd, SilentListener};

#[track_caller]
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "etcdctl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn get_value(endpoints: &str, key: &str) -> String {
    ok(etcdctl(endpoints, &["get", "--print-value-only", key])).trim_end().to_owned()
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks existence.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[test]
fn single_member_serves_put_and_get() {
    let t = Instant::now();
    let etcd = Etcd::start();
    eprintln!("single member ready in {:?}", t.elapsed());
    assert_eq!(etcd.endpoint(), format!("127.0.0.1:{}", etcd.client_port()));
    let key = format!("{}k", unique_prefix("single"));
    ok(etcdctl(&etcd.endpoint(), &["put", &key, "v1"]));
    assert_eq!(get_value(&etcd.endpoint(), &key), "v1");
}

#[test]
fn cluster_of_three_starts_and_member_rejoins_after_kill() {
    let t = Instant::now();
    let mut cluster = Cluster::start(3);
    eprintln!("3-member cluster ready in {:?}", t.elapsed());
    let all = cluster.endpoints().join(",");
    let list = ok(etcdctl(&all, &["member", "list"]));
    let started: Vec<&str> = list.lines().filter(|l| l.contains(", started, ")).collect();
    assert_eq!(started.len(), 3, "member list:\n{list}");
    for m in &cluster.members {
        assert!(list.contains(&format!(", {}, ", m.name())), "{list}");
    }

    // Write while a follower is down; restarted, it must have it locally.
    // (Killing the leader instead would make this write race the election:
    // a proposal forwarded to a dead leader is lost and etcd answers
    // "request timed out" only after ~5 s.)
    let leader = cluster.leader_index().expect("a leader after start");
    let f = (leader + 1) % 3;
    let key = format!("{}k", unique_prefix("cluster"));
    let old_pid = cluster.members[f].pid();
    cluster.members[f].kill();
    assert!(!pid_alive(old_pid));
    let leader_ep = cluster.members[leader].endpoint();
    ok(etcdctl(&leader_ep, &["put", &key, "while-down"]));
    let t = Instant::now();
    cluster.members[f].restart();
    eprintln!("member rejoined in {:?}", t.elapsed());
    assert_ne!(cluster.members[f].pid(), old_pid);
    // Serializable: answered from the member's own state, not the leader's.
    let local = ok(etcdctl(
        &cluster.members[f].endpoint(),
        &["get", "--consistency=s", "--print-value-only", &key],
    ));
    assert_eq!(local.trim_end(), "while-down");
}

#[test]
fn restart_keeps_data_after_stop_and_after_kill() {
    let mut etcd = Etcd::start();
    let prefix = unique_prefix("restart");
    let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
    let ep = etcd.endpoint();
    ok(etcdctl(&ep, &["put", &a, "1"]));
    etcd.stop();
    assert!(!etcd.is_running());
    etcd.restart();
    assert_eq!(etcd.endpoint(), ep, "restart keeps the ports");
    assert_eq!(get_value(&ep, &a), "1");

    // A crash loses nothing either: --unsafe-no-fsync only skips fsync, the
    // writes are in the page cache.
    ok(etcdctl(&ep, &["put", &b, "2"]));
    etcd.kill();
    etcd.restart();
    assert_eq!(get_value(&ep, &a), "1");
    assert_eq!(get_value(&ep, &b), "2");
}

#[test]
fn pause_freezes_and_drop_kills_and_cleans_up() {
    let mut etcd = Etcd::start();
    let ep = etcd.endpoint();
    let key = format!("{}k", unique_prefix("pause"));
    ok(etcdctl(&ep, &["put", &key, "v"]));

    etcd.pause();
    let frozen = etcdctl(&ep, &["--command-timeout=300ms", "get", &key]);
    assert!(!frozen.status.success(), "a paused etcd answered");
    etcd.resume();
    assert_eq!(get_value(&ep, &key), "v");

    // Drop while paused: the hardest case for cleanup.
    etcd.pause();
    let pid = etcd.pid();
    let data_dir = etcd.data_dir().to_owned();
    assert!(data_dir.join("member").is_dir());
    drop(etcd);
    assert!(!pid_alive(pid), "etcd pid {pid} survived drop");
    assert!(!Path::new(&data_dir).exists(), "{data_dir:?} left behind");
}

#[test]
fn refused_and_silent_endpoints_behave() {
    let refused = refused_endpoint();
    let err = TcpStream::connect(&refused).expect_err("nothing should listen");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);

    let silent = SilentListener::new();
    let mut stream = TcpStream::connect(silent.endpoint()).expect("handshake completes");
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let err = stream.read(&mut [0u8; 1]).expect_err("nothing is ever sent");
    assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{err}");
}
