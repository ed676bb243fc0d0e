//! `examples/etcdctl` against etcdctl 3.5.1 for the cluster and maintenance commands:
//! `member` (list, add, update, remove, promote), `move-leader` on a 3-member cluster;
//! `endpoint status|health`, `alarm list|disarm`, `defrag` and `snapshot save` on single
//! members. Each test has its own etcd: these commands change cluster-wide state (members,
//! leadership, alarms) that would leak into each other's output.
//!
//! Normalised: health check timings, and the id and peer URL of a member each binary adds
//! (etcd derives the id from the peer URLs and the current second, and refuses an id it
//! removed, so the two runs cannot add the same member twice).

mod support;

use evetcd::pb::etcdserverpb::Member;
use evetcd::{AlarmAction, AlarmType, Client};
use std::path::{Path, PathBuf};
use support::client::{client, ok};
use support::etcdctl::{etcdctl_run, exact, example_run, same, same_after, Run};
use support::{Cluster, Etcd};

/// Short enough that etcdctl, which waits that long for a dead endpoint, stays quick.
const TIMEOUT: &str = "--command-timeout=1s";

/// Each member's id, in member order.
fn member_ids(cluster: &Cluster) -> Vec<u64> {
    let status = |ep: &String| {
        let c = client(ep);
        ok(&c, |cb| c.status(cb)).header.expect("header").member_id
    };
    cluster.endpoints().iter().map(status).collect()
}

fn members(c: &Client) -> Vec<Member> {
    ok(c, |cb| c.member_list(true, cb)).members
}

/// Removes the members a test added (the harness's members all have names).
fn remove_added(c: &Client) {
    for m in members(c).into_iter().filter(|m| m.name.is_empty()) {
        ok(c, |cb| c.member_remove(m.id, cb));
    }
}

/// Adds a learner that never starts; returns its id.
fn add_learner(c: &Client, peer_url: &str) -> u64 {
    ok(c, |cb| c.member_add([peer_url], true, cb)).member.expect("member").id
}

/// A peer URL nothing listens on.
fn unused_peer_url() -> String {
    format!("http://{}", support::refused_endpoint())
}

/// Asserts that two runs agree, as `same_after` does, given their stdout normalised.
fn assert_agree(args: &[&str], (theirs, t): (&Run, &str), (ours, o): (&Run, &str)) {
    assert!(
        t == o && theirs.errors == ours.errors && theirs.code == ours.code,
        "etcdctl {args:?} differs\n--- etcdctl: {theirs:?}\n--- example: {ours:?}\n--- normalised:\n{t}\n{o}"
    );
}

/// `same` for a command that must succeed.
fn same_ok(ep: &str, args: &[&str], normalise: fn(&str) -> String) -> Run {
    let run = same(ep, args, None, normalise);
    assert_eq!(run.code, 0, "{args:?}: {run:?}");
    run
}

/// `same` for a command that must fail with `code` and `error`.
fn same_err(ep: &str, args: &[&str], code: i32, error: &str) {
    let run = same(ep, args, None, exact);
    assert_eq!((run.code, run.errors.as_slice()), (code, [format!("Error: {error}")].as_slice()));
}

/// Health checks print how long they took.
/// The backend's size may grow between the two runs (etcd commits its batch every 100 ms,
/// with no raft entry to show for it): the size fields of `endpoint status` become `N`, in
/// the table (`25 kB`) and in JSON (`"dbSize":24576`, `"dbSizeInUse":…`).
fn no_db_size(s: &str) -> String {
    let mut out = String::new();
    for line in s.lines() {
        let mut fields: Vec<String> = line.split(", ").map(str::to_string).collect();
        if fields.len() > 4 && fields[3].ends_with(" kB")
            || fields.len() > 4 && fields[3].ends_with(" MB")
        {
            fields[3] = "N".to_string();
        }
        let mut line = fields.join(", ");
        for key in ["\"dbSize\":", "\"dbSizeInUse\":"] {
            let mut from = 0;
            while let Some(i) = line[from..].find(key).map(|i| from + i + key.len()) {
                let end =
                    line[i..].find(|c: char| !c.is_ascii_digit()).map_or(line.len(), |e| i + e);
                line.replace_range(i..end, "N");
                from = i;
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn no_timings(s: &str) -> String {
    s.lines()
        .map(|l| match (l.find("took = "), l.find("\"took\":\"")) {
            (Some(i), _) => format!("{}took = T", &l[..i]),
            (None, Some(i)) => {
                let start = i + "\"took\":\"".len();
                let end = l[start..].find('"').map_or(l.len(), |e| start + e);
                format!("{}T{}", &l[..start], &l[end..])
            }
            (None, None) => l.to_string(),
        })
        .map(|l| l + "\n")
        .collect()
}

/// `member add`'s output with the new member's peer URL and id replaced by placeholders,
/// and the members (whose order follows the ids) sorted.
fn normalise_add(out: &str, peer_url: &str) -> String {
    let mut s = out.replace(peer_url, "PEER");
    let hex = s.strip_prefix("Member ").and_then(|r| r.get(..16)).map(str::trim);
    let json = s.split("\"member\":{\"ID\":").nth(1).and_then(|r| r.split([',', '}']).next());
    let id = match (hex, json) {
        (Some(h), _) => u64::from_str_radix(h, 16).ok(),
        (None, Some(d)) => d.parse().ok(),
        _ => None,
    };
    if let Some(id) = id {
        s = s.replace(&format!("{id:16x}"), "NEW").replace(&id.to_string(), "NEW");
    }
    let sort = |items: &str, sep: &str| {
        let mut v: Vec<&str> = items.split(sep).collect();
        v.sort();
        v.join(sep)
    };
    if let Some((head, rest)) = s.split_once("\"members\":[{") {
        let (list, tail) = rest.rsplit_once("}]").unwrap_or((rest, ""));
        s = format!("{head}\"members\":[{{{}}}]{tail}", sort(list, "},{"));
    }
    s.lines()
        .map(|l| match l.strip_prefix("ETCD_INITIAL_CLUSTER=\"") {
            Some(v) => {
                format!("ETCD_INITIAL_CLUSTER=\"{}\n", sort(v.trim_end_matches('"'), ",") + "\"")
            }
            None => format!("{l}\n"),
        })
        .collect()
}

/// Runs `member add NAME --peer-urls=URL FLAGS` through both binaries, each after removing
/// the members added before, each with a peer URL of its own.
fn agree_add(c: &Client, ep: &str, name: &str, flags: &[&str]) -> Run {
    let run = |peer_url: &str, bin: fn(&str, &[&str], Option<&str>) -> Run| {
        remove_added(c);
        let urls = format!("--peer-urls={peer_url}");
        let args: Vec<&str> = ["member", "add", name, &urls].iter().chain(flags).copied().collect();
        bin(ep, &args, None)
    };
    let (theirs_url, ours_url) = (unused_peer_url(), unused_peer_url());
    let theirs = run(&theirs_url, etcdctl_run);
    let ours = run(&ours_url, example_run);
    let t = normalise_add(&theirs.stdout, &theirs_url);
    let o = normalise_add(&ours.stdout, &ours_url);
    assert_agree(&["member", "add", name], (&theirs, &t), (&ours, &o));
    assert_eq!(ours.code, 0, "{ours:?}");
    ours
}

#[test]
fn member_list_add_update_promote_remove() {
    // etcd's strict check refuses to add members until every peer link has been up 5 s.
    let cluster = Cluster::start_with(3, &["--strict-reconfig-check=false"]);
    let ep = &cluster.endpoints()[0];
    let all = &cluster.endpoints().join(",");
    let c = client(ep);
    same_ok(ep, &["member", "list"], exact);
    same_ok(all, &["member", "list"], exact);
    same_ok(ep, &["member", "list", "-w", "json"], exact);
    same_ok(ep, &["member", "list", "ignored"], exact);

    let run = agree_add(&c, ep, "newbie", &[]);
    assert!(run.stdout.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""), "{run:?}");
    agree_add(&c, ep, "learner", &["--learner"]);
    agree_add(&c, ep, "quoted\"name", &["--learner=true"]);
    let run = agree_add(&c, ep, "json", &["--learner", "-w", "json"]);
    assert!(run.stdout.contains("\"isLearner\":true"), "{run:?}");
    remove_added(&c);

    // update and promote act on one learner, put back as it was before each run.
    let original = unused_peer_url();
    let learner = add_learner(&c, &original);
    let id = &format!("{learner:x}");
    let reset = || {
        ok(&c, |cb| c.member_update(learner, [original.as_str()], cb));
    };
    let urls = &format!("--peer-urls={},{}", unused_peer_url(), unused_peer_url());
    let run = same_after(&reset, ep, &["member", "update", id, urls], None, exact);
    assert!(run.stdout.starts_with("Member "), "{run:?}");
    same_after(&reset, ep, &["member", "update", id, urls, "-w", "json"], None, exact);
    let not_ready = "etcdserver: can only promote a learner member which is in sync with leader";
    same_err(ep, &["member", "promote", id], 1, not_ready);
    let voter = &format!("{:x}", member_ids(&cluster)[1]);
    same_err(ep, &["member", "promote", voter], 1, "etcdserver: can only promote a learner member");

    // remove: each binary its own learner.
    let remove = |bin: fn(&str, &[&str], Option<&str>) -> Run, json: bool| {
        let id = add_learner(&c, &unused_peer_url());
        let hex = format!("{id:16x}"); // as printed: padded to 16
        let mut args = vec!["member", "remove", hex.trim_start()];
        args.extend(if json { &["-w", "json"][..] } else { &[] });
        (bin(ep, &args, None), hex)
    };
    for json in [false, true] {
        let ((theirs, t_id), (ours, o_id)) = (remove(etcdctl_run, json), remove(example_run, json));
        let (t, o) = (theirs.stdout.replace(&t_id, "ID"), ours.stdout.replace(&o_id, "ID"));
        assert_agree(&["member", "remove"], (&theirs, &t), (&ours, &o));
        assert_eq!(ours.code, 0, "{ours:?}");
    }

    let missing = "etcdserver: member not found";
    same_err(ep, &["member", "remove", "1"], 1, missing);
    same_err(ep, &["member", "update", "1", "--peer-urls=http://127.0.0.1:1"], 1, missing);
    same_err(ep, &["member", "promote", "1"], 1, missing);
    for sub in ["remove", "update", "promote"] {
        same_err(ep, &["member", sub], 128, "member ID is not provided");
        same_err(ep, &["member", sub, "1", "2"], 128, "member ID is not provided");
        same_err(
            ep,
            &["member", sub, "xyz"],
            128,
            "bad member ID arg (strconv.ParseUint: parsing \"xyz\": invalid syntax), expecting ID in Hex",
        );
    }
    same_err(
        ep,
        &["member", "remove", "1ffffffffffffffff"],
        128,
        "bad member ID arg (strconv.ParseUint: parsing \"1ffffffffffffffff\": value out of range), expecting ID in Hex",
    );
    same_err(ep, &["member", "update", "1"], 128, "member peer urls not provided");
    same_err(ep, &["member", "add"], 128, "member name not provided");
    same_err(ep, &["member", "add", "x"], 128, "member peer urls not provided");
    same_err(
        ep,
        &["member", "add", "x", "http://a", "HTTPS://b"],
        128,
        "too many arguments, did you mean --peer-urls=http://a, did you mean --peer-urls=HTTPS://b",
    );
}

#[test]
fn move_leader() {
    let cluster = Cluster::start(3);
    let eps = cluster.endpoints();
    let all = &eps.join(",");
    let ids = member_ids(&cluster);
    // Before each run: member 0 leads.
    let lead_with_0 = || {
        if let Some(i) = cluster.leader_index().filter(|&i| i != 0) {
            let c = client(&eps[i]);
            ok(&c, |cb| c.move_leader(ids[0], cb));
        }
    };
    let to_1 = &format!("{:x}", ids[1]);
    let run = same_after(&lead_with_0, all, &["move-leader", to_1], None, exact);
    assert_eq!(run.stdout, format!("Leadership transferred from {:x} to {to_1}\n", ids[0]));
    same_after(&lead_with_0, all, &["move-leader", to_1, "-w", "json"], None, exact);

    lead_with_0();
    let followers = &eps[1..].join(",");
    let error = format!("no leader endpoint given at [{} {}]", eps[1], eps[2]);
    same_err(followers, &["move-leader", to_1], 128, &error);
    same_err(all, &["move-leader", "1"], 1, "etcdserver: bad leader transferee");
    same_err(all, &["move-leader"], 128, "move-leader command needs 1 argument");
    same_err(all, &["move-leader", "1", "2"], 128, "move-leader command needs 1 argument");
    same_err(all, &["move-leader", "zz"], 128, "strconv.ParseUint: parsing \"zz\": invalid syntax");
}

#[test]
fn endpoint_status_and_health() {
    let etcd = Etcd::start();
    let ep = &etcd.endpoint();
    for args in [&["endpoint", "status"][..], &["endpoint", "status", "-w", "json"]] {
        same_ok(ep, args, no_db_size);
        let mut cluster = args.to_vec();
        cluster.push("--cluster");
        let run = same_ok(ep, &cluster, no_db_size);
        assert!(run.stdout.contains("http://127.0.0.1:"), "{run:?}");
    }
    for args in [&["endpoint", "health"][..], &["endpoint", "health", "-w", "json"]] {
        same_ok(ep, args, no_timings);
        let mut cluster = args.to_vec();
        cluster.push("--cluster");
        same_ok(ep, &cluster, no_timings);
    }
    // A dead endpoint is reported on stderr and makes the exit status 1.
    let with_dead = &format!("{ep},{}", support::refused_endpoint());
    let run = same(with_dead, &[TIMEOUT, "endpoint", "status"], None, exact);
    assert_eq!((run.code, run.stdout.lines().count(), run.errors.len()), (1, 1, 0), "{run:?}");
    let run = same(with_dead, &[TIMEOUT, "endpoint", "health"], None, no_timings);
    assert_eq!(
        (run.code, run.errors.as_slice()),
        (1, &["Error: unhealthy cluster".to_string()][..])
    );
}

#[test]
fn alarm_list_and_disarm() {
    let etcd = Etcd::start();
    let ep = &etcd.endpoint();
    let c = client(ep);
    let id = ok(&c, |cb| c.status(cb)).header.expect("header").member_id;
    for args in [&["alarm", "list"][..], &["alarm", "disarm"], &["alarm", "disarm", "-w", "json"]] {
        let run = same_ok(ep, args, exact);
        assert!(!run.stdout.contains("alarm:"), "{run:?}");
    }
    same_ok(ep, &["alarm", "list", "-w", "json"], exact);

    // One alarm only: etcd lists several in a random order.
    let raise = || {
        ok(&c, |cb| c.alarm(AlarmAction::Activate, id, AlarmType::Nospace, cb));
    };
    raise();
    let run = same_ok(ep, &["alarm", "list"], exact);
    assert_eq!(run.stdout, format!("memberID:{id} alarm:NOSPACE \n"));
    same_ok(ep, &["alarm", "list", "-w", "json"], exact);
    let run = same_ok(ep, &["endpoint", "status"], exact);
    assert!(run.stdout.ends_with(&format!(", memberID:{id} alarm:NOSPACE \n")), "{run:?}");
    same_ok(ep, &["endpoint", "status", "-w", "json"], no_size_in_use);
    let run = same(ep, &["endpoint", "health"], None, no_timings);
    assert_eq!((run.code, run.stdout.as_str()), (1, ""), "{run:?}");
    let run = same(ep, &["endpoint", "health", "-w", "json"], None, no_timings);
    assert!(run.stdout.contains("\"error\":\"Active Alarm(s): NOSPACE \""), "{run:?}");
    for args in [&["alarm", "disarm"][..], &["alarm", "disarm", "-w", "json"]] {
        let run = same_after(&raise, ep, args, None, exact);
        assert!(run.stdout.contains("NOSPACE") || run.stdout.contains("\"alarm\":1"), "{run:?}");
    }
    same_ok(ep, &["alarm", "list"], exact);
    same_err(ep, &["alarm", "list", "x"], 128, "alarm list command accepts no arguments");
    same_err(ep, &["alarm", "disarm", "x"], 128, "alarm disarm command accepts no arguments");
}

#[test]
fn defrag_and_snapshot_save() {
    let etcd = Etcd::start();
    let ep = &etcd.endpoint();
    same_ok(ep, &["defrag"], exact);
    same_ok(ep, &["defrag", "--cluster"], exact);
    same_ok(ep, &["defrag", "-w", "json"], exact);
    let with_dead = &format!("{ep},{}", support::refused_endpoint());
    let run = same(with_dead, &[TIMEOUT, "defrag"], None, exact);
    assert_eq!((run.code, run.stdout.lines().count(), run.errors.len()), (1, 1, 0), "{run:?}");

    // Both save to the same path (it is in the output); etcdctl's file is moved aside
    // before the example runs. Nothing changes etcd in between: the files are identical.
    let dir = TempDir::new();
    let path = dir.0.join("snap.db");
    let theirs = dir.0.join("etcdctl.db");
    let move_aside = || {
        if path.exists() {
            std::fs::rename(&path, &theirs).expect("rename");
        }
    };
    let file = path.to_str().expect("utf-8");
    let run = same_after(&move_aside, ep, &["snapshot", "save", file], None, exact);
    assert_eq!((run.code, run.stdout), (0, format!("Snapshot saved at {file}\n")));
    let (ours_bytes, theirs_bytes) = (read(&path), read(&theirs));
    assert!(ours_bytes == theirs_bytes, "the example's snapshot differs from etcdctl's");
    assert!(!dir.0.join("snap.db.part").exists());
    restore_with_etcdutl(&path, &dir.0.join("restored"));

    let part_fails = &format!("{}/missing/x.db", dir.0.display());
    let error = format!(
        "could not open {part_fails}.part (open {part_fails}.part: no such file or directory)"
    );
    same_err(ep, &["snapshot", "save", part_fails], 5, &error);
    let over_dir = &dir.0.display().to_string();
    let error = format!("could not rename {over_dir}.part to {over_dir} (rename {over_dir}.part {over_dir}: file exists)");
    same_err(ep, &["snapshot", "save", over_dir], 5, &error);
    let two = &format!("{ep},{ep}");
    let error =
        format!("snapshot must be requested to one selected node, not multiple [{ep} {ep}]");
    same_err(two, &["snapshot", "save", file], 5, &error);
    same_err(ep, &["snapshot", "save"], 128, "snapshot save expects one argument");
    same_err(ep, &["snapshot", "save", "a", "b"], 128, "snapshot save expects one argument");
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `etcdutl snapshot restore` checks the file's checksum; skipped without etcdutl.
fn restore_with_etcdutl(snapshot: &Path, data_dir: &Path) {
    let etcdutl = support::etcd_bin_dir().join("etcdutl");
    if !etcdutl.exists() {
        return;
    }
    let out = std::process::Command::new(etcdutl)
        .args(["snapshot", "restore"])
        .arg(snapshot)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("etcdutl");
    assert!(out.status.success(), "etcdutl: {}", String::from_utf8_lossy(&out.stderr));
}

/// A directory under the temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let name = format!("evetcd-etcdctl-{}-{}", std::process::id(), support::next_id());
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Masks `dbSizeInUse`: etcd's backend commits in the background (every 100 ms), so the size in
/// use can change between the two clients' Status calls while nothing else does.
fn no_size_in_use(s: &str) -> String {
    let key = "\"dbSizeInUse\":";
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(key) {
        out.push_str(&rest[..i + key.len()]);
        rest = rest[i + key.len()..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('N');
    }
    out.push_str(rest);
    out
}
