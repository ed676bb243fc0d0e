//! `examples/etcdctl` against etcdctl 3.5.1 for `lease` (grant, revoke, timetolive, list,
//! keep-alive), `lock` and `elect`: output, `-w json`, argument and server errors, exit
//! codes. The commands that run until interrupted are started, read line by line (every read
//! bounded by [`LIMIT`], so a regression fails instead of hanging), sent SIGINT or SIGTERM,
//! and then another etcdctl must get the lock or leadership they held at once.
//!
//! Leases the tests revoke or inspect are granted with fixed ids (through the client), so
//! both binaries print the same ids; what is normalised is only what differs between two
//! runs by nature: the ids etcd picks (also in lock and election keys), revisions, and the
//! remaining TTL. Tests share one etcd ([`shared_etcd`]) and use their own names and ids,
//! except where the whole server's state shows (`lease list`) or etcd restarts.

mod support;

use evetcd::{Client, GetOptions, LeaseGrantOptions, PutOptions};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};
use support::client::{block, client, ok};
use support::etcdctl::{exact, example_bin, same, same_after, Run};
use support::{etcd_bin_dir, Etcd};

/// The longest a read of a running command's output, or its exit, may take.
const LIMIT: Duration = Duration::from_secs(10);

/// How soon another etcdctl must get a released lock or leadership: well below the TTLs
/// (10 s for `lock`, 60 s for `elect`) after which a lock left behind would free itself.
const RELEASED: Duration = Duration::from_secs(3);

/// One etcd for the tests that run meanwhile: each test holds it while it runs, and the last
/// one to finish stops it.
fn shared_etcd() -> Arc<Etcd> {
    static SHARED: Mutex<Weak<Etcd>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(etcd) = shared.upgrade() {
        return etcd;
    }
    let etcd = Arc::new(Etcd::start());
    *shared = Arc::downgrade(&etcd);
    etcd
}

fn etcdctl_bin() -> PathBuf {
    etcd_bin_dir().join("etcdctl")
}

/// etcdctl first, then the example.
fn both() -> [PathBuf; 2] {
    [etcdctl_bin(), example_bin()]
}

/// Grants lease `id` afresh (revoking the one a previous run left), before each binary's run.
fn fresh_lease(c: &Client, id: i64, ttl: i64) {
    let _ = block(c, |cb| c.lease_revoke(id, cb));
    ok(c, |cb| c.lease_grant(ttl, LeaseGrantOptions::new().id(id), cb));
}

/// `same` for a command that must fail with `code` and `error`.
fn same_err(ep: &str, args: &[&str], code: i32, error: &str) {
    let run = same(ep, args, None, exact);
    assert_eq!((run.code, run.errors.as_slice()), (code, [format!("Error: {error}")].as_slice()));
}

/// `same_after` for a command that must succeed.
fn same_ok_after(setup: &dyn Fn(), ep: &str, args: &[&str], normalise: fn(&str) -> String) -> Run {
    let run = same_after(setup, ep, args, None, normalise);
    assert_eq!(run.code, 0, "{args:?}: {run:?}");
    run
}

fn assert_same(what: &str, theirs: &Run, ours: &Run, normalise: fn(&str) -> String) {
    let (t, o) = (normalise(&theirs.stdout), normalise(&ours.stdout));
    assert!(
        t == o && theirs.errors == ours.errors && theirs.code == ours.code,
        "{what} differs\n--- etcdctl: {theirs:?}\n--- example: {ours:?}\n--- normalised:\n{t}\n{o}"
    );
}

/// Lease ids as `<id>`: 16 hex digits, or fewer in lock and election keys (`%x`), where
/// they start with etcd's member id.
fn ids(s: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in s.chars().map(Some).chain([None]) {
        match c {
            Some(c) if c.is_ascii_digit() || ('a'..='f').contains(&c) => run.push(c),
            _ => {
                out.push_str(if (12..=16).contains(&run.len()) { "<id>" } else { &run });
                run.clear();
                out.extend(c);
            }
        }
    }
    out
}

/// The number right after each `marker` as `N`.
fn number_after(s: &str, marker: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(marker) {
        let (head, tail) = rest.split_at(i + marker.len());
        out.push_str(head);
        let digits = tail.len() - tail.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            out.push('N');
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

/// JSON revisions and the ids etcd picks, in text or JSON.
fn ids_and_revisions(s: &str) -> String {
    let s = number_after(&ids(s), "\"revision\":");
    number_after(&number_after(&s, "\"ID\":"), "rev=")
}

/// A get response's key (named after a lease), revisions and lease, in JSON.
fn json_kv(s: &str) -> String {
    let mut s = s.to_string();
    for marker in ["\"revision\":", "\"create_revision\":", "\"mod_revision\":", "\"lease\":"] {
        s = number_after(&s, marker);
    }
    match s.split_once("\"key\":\"") {
        Some((head, tail)) => {
            format!("{head}\"key\":<key>{}", &tail[tail.find('"').unwrap_or(0)..])
        }
        None => s,
    }
}

/// Revisions and the remaining TTL, which ticks.
fn remaining(s: &str) -> String {
    number_after(&number_after(&number_after(s, "\"revision\":"), "remaining("), "\"ttl\":")
}

/// The first line, then the others sorted (etcd lists leases from a map).
fn sorted_after_first(s: &str) -> String {
    let mut lines: Vec<&str> = s.lines().collect();
    lines[1..].sort_unstable();
    lines.join("\n")
}

/// A binary started on a command that runs until it is interrupted: its stdout is read line
/// by line by a thread, and every wait is bounded. Dropping it kills the process.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
    what: String,
}

impl Running {
    fn start(bin: &Path, ep: &str, args: &[&str]) -> Running {
        let mut child = support::etcdctl::command(bin, ep, args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || loop {
            let mut line = Vec::new();
            match stdout.read_until(b'\n', &mut line) {
                Ok(n) if n > 0 && tx.send(String::from_utf8_lossy(&line).into_owned()).is_ok() => {}
                _ => return,
            }
        });
        let mut err = child.stderr.take().expect("piped");
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let what = format!("{} {args:?}", bin.file_name().unwrap_or_default().to_string_lossy());
        Running { child, lines, stderr: Some(stderr), what }
    }

    /// The next line it prints.
    fn line(&self) -> String {
        let line = self.lines.recv_timeout(LIMIT);
        line.unwrap_or_else(|e| panic!("{}: no line within {LIMIT:?} ({e:?})", self.what))
    }

    fn lines(&self, n: usize) -> String {
        (0..n).map(|_| self.line()).collect()
    }

    fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) of our own child, not reaped yet (finish() and drop reap it).
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {}", self.what);
    }

    /// Waits for the exit, at most `limit`: what it printed from now on, its `Error:` lines,
    /// its exit code (-1 when a signal ended it).
    fn finish_within(mut self, limit: Duration) -> Run {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "{} did not exit within {limit:?}", self.what);
            thread::sleep(Duration::from_millis(10));
        };
        let mut stdout = String::new();
        while let Ok(line) = self.lines.recv_timeout(LIMIT) {
            stdout.push_str(&line);
        }
        let stderr = self.stderr.take().expect("once").join().expect("stderr reader");
        let errors = stderr.lines().filter(|l| l.starts_with("Error:")).map(String::from);
        Run { stdout, errors: errors.collect(), code: status.code().unwrap_or(-1) }
    }

    fn finish(self) -> Run {
        self.finish_within(LIMIT)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `args` with `bin` until it printed `lines` lines, then sends `signal`: all it
/// printed, its errors and its exit code.
fn interrupted(bin: &Path, ep: &str, args: &[&str], lines: usize, signal: i32) -> Run {
    let running = Running::start(bin, ep, args);
    let head = running.lines(lines);
    running.signal(signal);
    let mut run = running.finish();
    run.stdout.insert_str(0, &head);
    run
}

/// Waits until `n` keys exist under `prefix`: a lock's or an election's holder and waiters
/// have one each.
fn wait_keys(c: &Client, prefix: &str, n: i64) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let opts = GetOptions::new().prefix(true).count_only(true);
        let count = ok(c, |cb| c.get(prefix.to_string(), opts, cb)).count;
        if count == n {
            return;
        }
        assert!(Instant::now() < deadline, "{prefix}: {count} keys, not {n}, after {LIMIT:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Another etcdctl gets lock `name` at once: whoever held it released it.
fn assert_lock_free(ep: &str, name: &str) {
    let run = Running::start(&etcdctl_bin(), ep, &["lock", name, "--", "true"]);
    assert_eq!(run.finish_within(RELEASED).code, 0, "lock {name}");
}

/// Another etcdctl becomes leader of `name` at once: whoever led resigned.
fn assert_leadership_free(ep: &str, name: &str) {
    let next = Running::start(&etcdctl_bin(), ep, &["elect", name, "next"]);
    let leader = next.lines.recv_timeout(RELEASED);
    assert!(leader.is_ok_and(|l| l.starts_with(&format!("{name}/"))), "elect {name}");
    next.signal(libc::SIGINT);
    assert_eq!(next.finish().code, 0);
}

#[test]
fn lease_grant() {
    let etcd = shared_etcd();
    let ep = &etcd.endpoint();
    for ttl in ["5", "+7", "0"] {
        let run = same(ep, &["lease", "grant", ttl], None, ids);
        assert!(run.stdout.starts_with("lease ") && run.code == 0, "{run:?}");
    }
    same(ep, &["-w", "json", "lease", "grant", "5"], None, ids_and_revisions);
    same_err(ep, &["lease", "grant"], 128, "lease grant command needs TTL argument");
    same_err(ep, &["lease", "grant", "1", "2"], 128, "lease grant command needs TTL argument");
    let bad = |ttl: &str, why: &str| {
        let error = format!("bad TTL (strconv.ParseInt: parsing \"{ttl}\": {why})");
        same_err(ep, &["lease", "grant", ttl], 128, &error);
    };
    bad("abc", "invalid syntax");
    bad("", "invalid syntax");
    bad("0x10", "invalid syntax");
    bad("99999999999999999999", "value out of range");
    let too_large = "failed to grant lease (etcdserver: too large lease TTL)";
    same_err(ep, &["lease", "grant", "99999999999"], 1, too_large);
}

#[test]
fn lease_revoke() {
    let etcd = shared_etcd();
    let ep = &etcd.endpoint();
    let c = client(ep);
    let setup = || fresh_lease(&c, 0x7e57_0001, 60);
    let run = same_ok_after(&setup, ep, &["lease", "revoke", "7e570001"], exact);
    assert_eq!(run.stdout, "lease 000000007e570001 revoked\n");
    same_ok_after(&setup, ep, &["-w", "json", "lease", "revoke", "7e570001"], ids_and_revisions);
    let not_found = "failed to revoke lease (etcdserver: requested lease not found)";
    same_err(ep, &["lease", "revoke", "7e570001"], 1, not_found);
    same_err(ep, &["lease", "revoke"], 128, "lease revoke command needs 1 argument");
    same_err(ep, &["lease", "revoke", "1", "2"], 128, "lease revoke command needs 1 argument");
    let bad = |id: &str, why: &str| {
        let error = format!(
            "bad lease ID arg (strconv.ParseInt: parsing \"{id}\": {why}), expecting ID in Hex"
        );
        same_err(ep, &["lease", "revoke", id], 128, &error);
    };
    bad("zz", "invalid syntax");
    bad("0x12", "invalid syntax");
    bad("ffffffffffffffff", "value out of range");
}

#[test]
fn lease_timetolive() {
    let etcd = shared_etcd();
    let ep = &etcd.endpoint();
    let c = client(ep);
    let (with_key, bare) = (0x7e57_0002, 0x7e57_0003);
    fresh_lease(&c, with_key, 100);
    fresh_lease(&c, bare, 100);
    ok(&c, |cb| c.put("ttl test key", "v", PutOptions::new().lease(with_key), cb));
    for args in [
        &["lease", "timetolive", "7e570002"][..],
        &["lease", "timetolive", "--keys", "7e570002"],
        &["lease", "timetolive", "7e570002", "--keys=false"],
        &["lease", "timetolive", "--keys", "7e570003"],
        &["-w", "json", "lease", "timetolive", "--keys", "7e570002"],
        &["-w", "json", "lease", "timetolive", "7e570003"],
    ] {
        let run = same(ep, args, None, remaining);
        assert!(run.code == 0 && run.stdout.contains("100"), "{args:?}: {run:?}");
    }
    // An unknown (or expired) lease.
    for args in [
        &["lease", "timetolive", "7e57dead"][..],
        &["lease", "timetolive", "--keys", "7e57dead"],
        &["-w", "json", "lease", "timetolive", "7e57dead"],
    ] {
        let run = same(ep, args, None, remaining);
        assert_eq!(run.code, 0, "{run:?}");
    }
    let usage = "lease timetolive command needs lease ID as argument";
    same_err(ep, &["lease", "timetolive"], 128, usage);
    let bad =
        "bad lease ID arg (strconv.ParseInt: parsing \"xyz\": invalid syntax), expecting ID in Hex";
    same_err(ep, &["lease", "timetolive", "xyz"], 128, bad);
}

/// Its own etcd: the list shows every lease of the server.
#[test]
fn lease_list() {
    let etcd = Etcd::start();
    let ep = &etcd.endpoint();
    let c = client(ep);
    let run = same(ep, &["lease", "list"], None, exact);
    assert_eq!(run.stdout, "found 0 leases\n");
    same(ep, &["-w", "json", "lease", "list"], None, exact);
    fresh_lease(&c, 0x7e57_0004, 60);
    same(ep, &["-w", "json", "lease", "list"], None, exact);
    fresh_lease(&c, 0x7e57_0005, 60);
    let run = same(ep, &["lease", "list", "ignored"], None, sorted_after_first);
    assert_eq!(
        sorted_after_first(&run.stdout),
        "found 2 leases\n000000007e570004\n000000007e570005"
    );
}

#[test]
fn lease_keep_alive_once() {
    let etcd = shared_etcd();
    let ep = &etcd.endpoint();
    let c = client(ep);
    fresh_lease(&c, 0x7e57_0006, 60);
    let run = same(ep, &["lease", "keep-alive", "--once", "7e570006"], None, exact);
    assert_eq!(run.stdout, "lease 000000007e570006 keepalived with TTL(60)\n");
    same(ep, &["-w", "json", "lease", "keep-alive", "--once", "7e570006"], None, ids_and_revisions);
    let not_found = "etcdserver: requested lease not found";
    same_err(ep, &["lease", "keep-alive", "--once", "7e57dead"], 2, not_found);
    let usage = "lease keep-alive command needs lease ID as argument";
    same_err(ep, &["lease", "keep-alive"], 128, usage);
    same_err(ep, &["lease", "keep-alive", "--once", "a", "b"], 128, usage);
}

/// Renewals until the lease is revoked, then etcdctl's last line and exit 0; a lease that
/// is gone already ends it at once; SIGINT kills it (no handler, as in etcdctl).
#[test]
fn lease_keep_alive_until_revoked_or_interrupted() {
    let etcd = shared_etcd();
    let ep = &etcd.endpoint();
    let c = client(ep);
    let id = 0x7e57_0007;
    let runs = both().map(|bin| {
        fresh_lease(&c, id, 2); // renewed every 2/3 s: the revocation shows soon
        let running = Running::start(&bin, ep, &["lease", "keep-alive", "7e570007"]);
        let first = running.line();
        ok(&c, |cb| c.lease_revoke(id, cb));
        let mut run = running.finish();
        run.stdout.insert_str(0, &first);
        run
    });
    for run in &runs {
        let lines: Vec<&str> = run.stdout.lines().collect();
        let renewals = &lines[..lines.len() - 1];
        assert!(renewals.iter().all(|l| *l == "lease 000000007e570007 keepalived with TTL(2)"));
        assert_eq!(lines.last(), Some(&"lease 000000007e570007 expired or revoked."), "{run:?}");
        assert_eq!(run.code, 0, "{run:?}");
    }
    let gone = same(ep, &["lease", "keep-alive", "7e57dead"], None, exact);
    assert_eq!(
        (gone.stdout.as_str(), gone.code),
        ("lease 000000007e57dead expired or revoked.\n", 0)
    );

    fresh_lease(&c, id, 60);
    let [theirs, ours] = both()
        .map(|bin| interrupted(&bin, ep, &["lease", "keep-alive", "7e570007"], 1, libc::SIGINT));
    assert_same("keep-alive, SIGINT", &theirs, &ours, exact);
    assert_eq!(ours.code, -1, "killed by the signal: {ours:?}");
}

/// Its own etcd, restarted while both binaries keep the same lease alive: both carry on
/// with the new server.
#[test]
fn lease_keep_alive_survives_a_restart() {
    let mut etcd = Etcd::start();
    let ep = &etcd.endpoint();
    let c = client(ep);
    fresh_lease(&c, 0x7e57_0008, 5);
    let running = both().map(|bin| Running::start(&bin, ep, &["lease", "keep-alive", "7e570008"]));
    for r in &running {
        assert_eq!(r.line(), "lease 000000007e570008 keepalived with TTL(5)\n");
    }
    etcd.restart();
    for r in &running {
        while r.lines.try_recv().is_ok() {} // renewals from before the restart
        assert_eq!(r.line(), "lease 000000007e570008 keepalived with TTL(5)\n", "{}", r.what);
    }
    for r in running {
        r.signal(libc::SIGINT);
        assert_eq!(r.finish().code, -1);
    }
}

#[test]
fn lock_holds_until_interrupted() {
    let etcd = shared_etcd();
    let ep = &etcd.endpoint();
    for (name, signal) in [("etcdctl-lock-int", libc::SIGINT), ("etcdctl lock term", libc::SIGTERM)]
    {
        let [theirs, ours] = both().map(|bin| {
            let run = interrupted(&bin, ep, &["lock", name], 2, signal);
            assert_lock_free(ep, name);
            run
        });
        assert_same(&format!("lock {name}"), &theirs, &ours, ids);
        assert_eq!((ids(&ours.stdout), ours.code), (format!("{name}/<id>\n\n"), 0));
    }
    let name = "etcdctl-lock-json";
    let [theirs, ours] = both().map(|bin| {
        let run = interrupted(&bin, ep, &["-w", "json", "lock", name], 1, libc::SIGINT);
        assert_lock_free(ep, name);
        run
    });
    assert_same("lock -w json", &theirs, &ours, json_kv);
    let shape = "{\"header\":{\"cluster_id\":";
    assert!(ours.stdout.starts_with(shape) && ours.stdout.ends_with("\"count\":1}\n"), "{ours:?}");
}

/// `lock NAME CMD...`: the command runs with the lock held (it sees its key in etcd) and
/// etcdctl's variables; its failure is the exit code; the lock is released after.
#[test]
fn lock_runs_a_command() {
    let etcd = shared_etcd();
    let ep = &etcd.endpoint();
    let name = "etcdctl-lock-cmd";
    let script = format!(
        "echo \"rev=$ETCD_LOCK_REV\"; {} --endpoints={ep} get --keys-only \"$ETCD_LOCK_KEY\"; exit 3",
        etcdctl_bin().display()
    );
    let run = same(ep, &["lock", name, "--", "sh", "-c", &script], None, ids_and_revisions);
    assert_eq!(ids_and_revisions(&run.stdout), format!("rev=N\n{name}/<id>\n\n"));
    assert_eq!(
        (run.code, run.errors.as_slice()),
        (3, ["Error: exit status 3".to_string()].as_slice())
    );
    let rev: i64 =
        run.stdout.lines().next().and_then(|l| l.strip_prefix("rev=")?.parse().ok()).unwrap_or(0);
    assert!(rev > 0, "{run:?}");
    assert_lock_free(ep, name);

    let run = same(ep, &["lock", "--ttl=5", name, "echo", "a b"], None, exact);
    assert_eq!((run.stdout.as_str(), run.code), ("a b\n", 0));
    same_err(ep, &["lock", name, "--", "sh", "-c", "kill -9 $$"], 255, "signal: killed");
    let missing = "exec: \"etcdctl-no-such-command\": executable file not found in $PATH";
    same_err(ep, &["lock", name, "etcdctl-no-such-command"], 1, missing);
    same_err(
        ep,
        &["lock", name, "/nonexistent/cmd"],
        1,
        "fork/exec /nonexistent/cmd: no such file or directory",
    );
    same_err(ep, &["lock", name, "/etc/passwd"], 1, "fork/exec /etc/passwd: permission denied");
    assert_lock_free(ep, name);
}

/// SIGINT while waiting for a lock or leadership: "context canceled", and the waiter's key
/// is gone.
#[test]
fn waiting_then_interrupted() {
    let etcd = shared_etcd();
    let ep = &etcd.endpoint();
    let c = client(ep);
    for command in [&["lock", "etcdctl-lock-wait"][..], &["elect", "etcdctl-elect-wait", "x"]] {
        let prefix = format!("{}/", command[1]);
        let holder = Running::start(&etcdctl_bin(), ep, command);
        holder.lines(2);
        let [theirs, ours] = both().map(|bin| {
            let waiter = Running::start(&bin, ep, command);
            wait_keys(&c, &prefix, 2);
            waiter.signal(libc::SIGINT);
            let run = waiter.finish();
            wait_keys(&c, &prefix, 1);
            run
        });
        assert_same(&format!("{command:?}"), &theirs, &ours, exact);
        assert_eq!(ours.errors, ["Error: context canceled"]);
        assert_eq!((ours.stdout.as_str(), ours.code), ("", 1));
        holder.signal(libc::SIGINT);
        assert_eq!(holder.finish().code, 0);
    }
}

/// The session's lease revoked under a held lock: "session expired", exit 1.
#[test]
fn lock_session_expired() {
    let etcd = shared_etcd();
    let ep = &etcd.endpoint();
    let c = client(ep);
    let name = "etcdctl-lock-expired";
    let [theirs, ours] = both().map(|bin| {
        let holder = Running::start(&bin, ep, &["lock", "--ttl=2", name]);
        let head = holder.lines(2);
        let lease = head.trim().rsplit('/').next().map(|id| i64::from_str_radix(id, 16));
        let lease = lease.and_then(Result::ok).unwrap_or_else(|| panic!("lease of {head:?}"));
        ok(&c, |cb| c.lease_revoke(lease, cb));
        let mut run = holder.finish();
        run.stdout.insert_str(0, &head);
        run
    });
    assert_same("lock, lease revoked", &theirs, &ours, ids);
    assert_eq!(
        (ours.errors.as_slice(), ours.code),
        (["Error: session expired".to_string()].as_slice(), 1)
    );
}

#[test]
fn lock_errors() {
    let etcd = shared_etcd();
    let ep = &etcd.endpoint();
    let usage = "lock takes a lock name argument and an optional command to execute";
    same_err(ep, &["lock"], 128, usage);
    let too_large = "etcdserver: too large lease TTL";
    same_err(ep, &["lock", "--ttl=99999999999", "etcdctl-lock-err", "--", "true"], 1, too_large);
    // --ttl 0 (or less) falls back to the session's default.
    same(ep, &["lock", "--ttl=0", "etcdctl-lock-err", "true"], None, exact);
}

#[test]
fn elect_campaign_until_interrupted() {
    let etcd = shared_etcd();
    let ep = &etcd.endpoint();
    for (name, signal) in
        [("etcdctl-elect-int", libc::SIGINT), ("etcdctl-elect-term", libc::SIGTERM)]
    {
        let [theirs, ours] = both().map(|bin| {
            let run = interrupted(&bin, ep, &["elect", name, "my proposal"], 2, signal);
            assert_leadership_free(ep, name);
            run
        });
        assert_same(&format!("elect {name}"), &theirs, &ours, ids);
        assert_eq!((ids(&ours.stdout), ours.code), (format!("{name}/<id>\nmy proposal\n"), 0));
    }
}

/// `elect -l`: each leader once, until SIGINT.
#[test]
fn elect_listen() {
    let etcd = shared_etcd();
    let ep = &etcd.endpoint();
    let c = client(ep);
    let name = "etcdctl-elect-listen";
    let [theirs, ours] = both().map(|bin| {
        let observer = Running::start(&bin, ep, &["elect", "-l", name]);
        let first = Running::start(&etcdctl_bin(), ep, &["elect", name, "first"]);
        first.lines(2);
        let mut seen = observer.lines(2);
        let second = Running::start(&etcdctl_bin(), ep, &["elect", name, "second"]);
        wait_keys(&c, &format!("{name}/"), 2);
        first.signal(libc::SIGINT);
        assert_eq!(first.finish().code, 0);
        second.lines(2);
        seen += &observer.lines(2);
        second.signal(libc::SIGINT);
        assert_eq!(second.finish().code, 0);
        observer.signal(libc::SIGINT);
        let mut run = observer.finish();
        run.stdout.insert_str(0, &seen);
        run
    });
    assert_same("elect -l", &theirs, &ours, ids);
    let expected = format!("{name}/<id>\nfirst\n{name}/<id>\nsecond\n");
    assert_eq!((ids(&ours.stdout), ours.code), (expected, 0));
}

#[test]
fn elect_errors() {
    let etcd = shared_etcd();
    let ep = &etcd.endpoint();
    let usage = "elect takes one election name argument and an optional proposal argument";
    same_err(ep, &["elect"], 128, usage);
    same_err(ep, &["elect", "a", "b", "c"], 128, usage);
    same_err(ep, &["elect", "a"], 128, "no proposal argument but -l not set");
    same_err(ep, &["elect", "-l", "a", "b"], 128, "proposal given but -l is set");
    same_err(ep, &["elect", "--listen", "a", "b"], 128, "proposal given but -l is set");
}
