//! Tests of the public harness, `evetcd::testing`, through its own API (errors, not
//! panics), with the binary the rest of the suite uses: members and clusters start, crash,
//! restart, pause and resume as documented, the proxy cuts and heals the link, and nothing is
//! left behind once they are dropped.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use evetcd::testing::{self, Cluster, Error, Etcd, EtcdBinary, EtcdBuilder, Mode, Proxy};
use evetcd::{Client, Code, Config, GetOptions, PutOptions};
use support::client::{block, ok};
use support::unique_prefix;

/// The harness with the suite's etcd (`$EVETCD_ETCD_BIN_DIR`, or the repo's).
fn builder() -> EtcdBuilder {
    EtcdBuilder::new().binary(support::etcd_binary())
}

/// Whether `pid` is a live process (a zombie waiting for its reaper is not).
fn pid_alive(pid: u32) -> bool {
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    });
    // SAFETY: signal 0 only checks existence.
    !zombie && unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// A client of `config` whose calls give up after a second.
fn quick(config: Config) -> Client {
    Client::new(config.timeout(Duration::from_secs(1)).retry(0, Duration::ZERO)).expect("config")
}

fn put(client: &Client, key: &str, value: &str) {
    let (k, v) = (key.to_owned(), value.to_owned());
    ok(client, |cb| client.put(k, v, PutOptions::new(), cb));
}

/// The value of `key`, read serializably (from the member's own state).
fn get(client: &Client, key: &str) -> Result<Option<String>, evetcd::EtcdError> {
    let k = key.to_owned();
    let res = block(client, |cb| client.get(k, GetOptions::new().serializable(true), cb))?;
    Ok(res.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// Every pid and data dir of `members`, to check after they are dropped.
fn footprint(members: &[Etcd]) -> Vec<(Option<u32>, PathBuf)> {
    members.iter().map(|m| (m.pid(), m.data_dir().to_owned())).collect()
}

#[track_caller]
fn assert_gone(footprint: &[(Option<u32>, PathBuf)]) {
    for (pid, dir) in footprint {
        if let Some(pid) = pid {
            assert!(!pid_alive(*pid), "etcd pid {pid} survived drop");
        }
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn single_member_serves_its_config_and_drop_cleans_up() -> Result<(), Error> {
    let etcd = builder().start()?;
    assert_eq!(etcd.endpoint(), format!("127.0.0.1:{}", etcd.client_port()));
    assert_eq!(etcd.client_addr().port(), etcd.client_port());
    assert_ne!(etcd.client_port(), etcd.peer_port());
    assert_eq!(etcd.name(), "m0");
    assert!(etcd.data_dir().join("member").is_dir());
    assert!(etcd.is_leader(), "a single member leads");
    assert!(etcd.logs().iter().any(|l| l.contains("ready to serve client requests")));

    let client = quick(etcd.config());
    let key = format!("{}k", unique_prefix("harness-single"));
    put(&client, &key, "v");
    assert_eq!(get(&client, &key).expect("get"), Some("v".to_owned()));

    let gone = footprint(std::slice::from_ref(&etcd));
    assert!(gone[0].0.is_some_and(pid_alive));
    drop(etcd);
    assert_gone(&gone);
    Ok(())
}

#[test]
fn cluster_of_three_survives_kill_and_restart_of_a_member() -> Result<(), Error> {
    let mut cluster = builder().start_cluster(3)?;
    let names: Vec<&str> = cluster.members.iter().map(Etcd::name).collect();
    assert_eq!(names, ["m0", "m1", "m2"]);
    let leader = cluster.leader_index().expect("a leader after start");
    let client = quick(cluster.config());
    let prefix = unique_prefix("harness-cluster");

    // kill -9 of a follower: its pid is gone, a second kill is an error, not a panic.
    let f = (leader + 1) % 3;
    let old_pid = cluster.members[f].pid().expect("running");
    cluster.members[f].kill()?;
    assert!(!pid_alive(old_pid));
    assert!(!cluster.members[f].is_running());
    assert_eq!(cluster.members[f].pid(), None);
    assert!(matches!(cluster.members[f].kill(), Err(Error::Process(_))));
    put(&quick(cluster.members[leader].config()), &format!("{prefix}k"), "while-down");

    // Restarted on its ports with its data, it catches up.
    cluster.members[f].restart()?;
    assert_ne!(cluster.members[f].pid(), Some(old_pid));
    let restarted = quick(cluster.members[f].config());
    let caught_up = (0..50).any(|_| {
        let found = get(&restarted, &format!("{prefix}k")).ok().flatten();
        found.as_deref() == Some("while-down") || {
            std::thread::sleep(Duration::from_millis(100));
            false
        }
    });
    assert!(caught_up, "the restarted member never saw the write");

    // After a full outage all come back together.
    for m in &mut cluster.members {
        m.kill()?;
    }
    assert_eq!(cluster.leader_index(), None);
    cluster.restart_all()?;
    let leader = (0..50).find_map(|_| cluster.leader_index()).expect("a leader after restart");
    assert!(leader < 3);
    assert_eq!(get(&client, &format!("{prefix}k")).ok().flatten().as_deref(), Some("while-down"));

    let gone = footprint(&cluster.members);
    drop(cluster);
    assert_gone(&gone);
    Ok(())
}

#[test]
fn pause_freezes_the_member_until_resume() -> Result<(), Error> {
    let mut etcd = builder().start()?;
    let client = quick(etcd.config());
    let key = format!("{}k", unique_prefix("harness-pause"));
    put(&client, &key, "v");

    etcd.pause()?;
    assert!(etcd.is_paused());
    assert!(etcd.is_running(), "paused counts as running");
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", etcd.pid().expect("pid")));
    assert!(stat.expect("stat").rsplit_once(')').expect("comm").1.trim_start().starts_with('T'));
    let frozen = get(&client, &key).expect_err("a paused member answered");
    assert_eq!(frozen.code(), Code::DeadlineExceeded, "{frozen}");
    assert!(!etcd.is_leader(), "a paused member answers nothing");

    etcd.resume()?;
    assert!(!etcd.is_paused());
    assert_eq!(get(&client, &key).expect("get after resume"), Some("v".to_owned()));

    // Dropped while paused, the hardest case for cleanup.
    etcd.pause()?;
    let gone = footprint(std::slice::from_ref(&etcd));
    drop(etcd);
    assert_gone(&gone);
    Ok(())
}

#[test]
fn proxy_blackhole_silences_the_link_until_pass() -> Result<(), Error> {
    let etcd = builder().start()?;
    let proxy = Proxy::start(etcd.client_addr())?;
    assert_eq!(proxy.endpoint(), format!("127.0.0.1:{}", proxy.addr().port()));
    let client = quick(Config::new().endpoints([proxy.endpoint()]));
    let key = format!("{}k", unique_prefix("harness-proxy"));
    put(&client, &key, "v");
    assert_eq!(proxy.accepted(), 1);

    proxy.set_mode(Mode::Blackhole);
    let cut = get(&client, &key).expect_err("a blackholed link answered");
    assert_eq!(cut.code(), Code::DeadlineExceeded, "{cut}");

    proxy.set_mode(Mode::Pass);
    assert_eq!(get(&client, &key).expect("get after pass"), Some("v".to_owned()));
    // The link healed: the same connection carried on.
    assert_eq!(proxy.accepted(), 1);
    assert_eq!(proxy.open(), 1);
    drop(client);
    drop(proxy);
    Ok(())
}

#[test]
fn failures_are_errors_with_their_reason() -> Result<(), Error> {
    // No etcd in a directory.
    let empty = std::env::temp_dir();
    let err = EtcdBinary::from_dir(&empty).expect_err("the temp dir holds no etcd");
    assert!(matches!(err, Error::Binary(_)), "{err:?}");
    assert!(err.to_string().contains("etcd"), "{err}");

    // A flag etcd refuses: the member exits, and the error carries its log.
    let err = builder().flag("--no-such-flag").start().expect_err("etcd refuses the flag");
    assert!(matches!(err, Error::Start(_)), "{err:?}");
    assert!(err.to_string().contains("no-such-flag"), "{err}");
    assert!(matches!(builder().start_cluster(0), Err(Error::Start(_))));

    // A member that is not running cannot be paused, stopped or started twice.
    let mut etcd = builder().start()?;
    assert!(matches!(etcd.start_again(), Err(Error::Process(_))));
    etcd.stop()?;
    assert!(!etcd.is_running());
    assert!(matches!(etcd.pause(), Err(Error::Process(_))));
    assert!(matches!(etcd.stop(), Err(Error::Process(_))));
    etcd.start_again()?;
    etcd.wait_ready()?;
    assert!(etcd.is_running());

    let refused = testing::refused_endpoint()?;
    let err = std::net::TcpStream::connect(&refused).expect_err("nothing listens");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    Ok(())
}

#[test]
fn binary_reports_its_version_and_spells_flags_for_it() {
    let binary = support::etcd_binary();
    let (major, minor, patch) = binary.version();
    assert!(binary.is_version(&format!("{major}.{minor}.{patch}")));
    assert!(binary.is_version(&format!("{major}.{minor}")));
    assert!(!binary.is_version(&format!("{major}.{}", minor + 1)));
    assert_eq!(binary.etcd(), binary.dir().join("etcd"));
    assert_eq!(EtcdBinary::from_dir(binary.dir()).expect("the same dir"), binary);
    let flag = "--experimental-watch-progress-notify-interval=1s";
    let expected = match (major, minor) >= (3, 6) {
        true => "--watch-progress-notify-interval=1s",
        false => flag,
    };
    assert_eq!(binary.versioned_flag(flag), expected);
    assert!(Path::new(&binary.etcd()).is_file());
}

#[cfg(feature = "tls")]
#[test]
fn tls_members_serve_with_given_files_and_their_config_trusts_them() -> Result<(), Error> {
    let files = support::certs::TlsFiles::new();
    for mtls in [false, true] {
        let etcd = builder().tls(files.etcd_tls(mtls)).start()?;
        assert_eq!(etcd.endpoint(), format!("https://127.0.0.1:{}", etcd.client_port()));
        let client = quick(etcd.config());
        let key = format!("{}k", unique_prefix("harness-tls"));
        put(&client, &key, "v");
        assert_eq!(get(&client, &key).expect("get over TLS"), Some("v".to_owned()));
        assert!(etcd.is_leader());
        if mtls {
            // Without a client certificate the member refuses the client.
            let anonymous = evetcd::Tls::new().ca_file(&files.ca);
            let stranger = quick(Config::new().endpoints([etcd.endpoint()]).tls(anonymous));
            assert!(get(&stranger, &key).is_err(), "an mTLS member served a client without one");
        }
    }
    Ok(())
}

#[test]
fn a_member_added_at_run_time_joins_and_is_cleaned_up() -> Result<(), Error> {
    let mut cluster = builder().start_cluster(1)?;
    let admin = quick(cluster.config());
    let new = cluster.add_member(|name, peer_url| {
        let added = ok(&admin, |cb| admin.member_add([peer_url], false, cb));
        let id = added.member.expect("the added member").id;
        let members: Vec<(String, Vec<String>)> = added
            .members
            .iter()
            .map(|m| {
                (if m.id == id { name.to_owned() } else { m.name.clone() }, m.peer_ur_ls.clone())
            })
            .collect();
        Cluster::initial_cluster(&members)
    })?;
    assert_eq!(new, 1);
    assert_eq!(cluster.members[1].name(), "m1");
    let list = ok(&admin, |cb| admin.member_list(false, cb));
    assert_eq!(list.members.len(), 2);
    let gone = footprint(&cluster.members);
    drop(cluster);
    assert_gone(&gone);
    Ok(())
}

/// Set in the test process [`a_test_process_killed_outright_leaves_no_etcd`] starts.
const CHILD_ENV: &str = "EVETCD_TESTING_HARNESS_CHILD";

/// Only in that child: starts etcd, prints its pid, and waits to be killed.
#[test]
fn child_that_starts_etcd_and_waits() -> Result<(), Error> {
    if std::env::var_os(CHILD_ENV).is_none() {
        return Ok(());
    }
    let etcd = builder().start()?;
    println!("etcd-pid={}", etcd.pid().expect("running"));
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

#[test]
fn a_test_process_killed_outright_leaves_no_etcd() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let setpriv = Command::new("setpriv").arg("--help").output();
    if !setpriv.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--pdeathsig")) {
        eprintln!("SKIP: no setpriv with --pdeathsig: etcd cannot be tied to its parent");
        return;
    }
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_that_starts_etcd_and_waits", "--nocapture"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning the test binary");
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    let pid: u32 = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("etcd-pid=").map(|p| p.parse().expect("a pid")))
        .expect("the child printed etcd's pid");
    assert!(pid_alive(pid));
    child.kill().expect("SIGKILL to the test process");
    child.wait().expect("reaping it");
    let gone = (0..100).any(|_| {
        !pid_alive(pid) || {
            std::thread::sleep(Duration::from_millis(50));
            false
        }
    });
    assert!(gone, "etcd pid {pid} outlived its test process");
}
