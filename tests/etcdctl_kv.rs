//! `examples/etcdctl` against etcdctl 3.5.1 for the key-value commands: `put`, `get`, `del`,
//! `txn` (its stdin syntax and its errors), `compaction` and `watch`, every flag, `-w json`,
//! and the argument and server errors with their exit codes.
//!
//! Most tests share one etcd, each under its own key prefix; revisions in JSON are
//! normalised, since the two runs (and the other tests) write in between. Compaction is
//! global, and so is a restart: those tests have their own etcd. Watches run both binaries
//! at once on the same events, so their output must be identical.

mod support;

use evetcd::{Client, DeleteOptions, GetOptions, LeaseGrantOptions, PutOptions};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};
use support::client::{client, ok};
use support::etcdctl::{exact, example_bin, same, same_after, Run};
use support::metrics::{metric, wait_for_metric};
use support::{etcd_bin_dir, unique_prefix, Etcd};

/// The etcd most tests share.
fn shared() -> &'static Etcd {
    static ETCD: OnceLock<Etcd> = OnceLock::new();
    ETCD.get_or_init(Etcd::start)
}

/// Keys that sort after every `unique_prefix`, for `--from-key`; only `from_key_ranges`
/// writes there.
const LAST_KEYS: &str = "~etcdctl-kv/";

/// Replaces the number after every `revision":` (also `create_revision`, `mod_revision`).
fn no_revisions(s: &str) -> String {
    const FIELD: &str = "revision\":";
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(FIELD) {
        let (head, tail) = rest.split_at(i + FIELD.len());
        out.push_str(head);
        out.push('N');
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// Deletes everything under `prefix`, then writes `kvs` in order.
fn reset(c: &Client, prefix: &str, kvs: &[(&str, &str)]) {
    ok(c, |cb| c.delete(prefix.to_string(), DeleteOptions::new().prefix(true), cb));
    for (k, v) in kvs {
        ok(c, |cb| c.put(format!("{prefix}{k}"), v.to_string(), PutOptions::new(), cb));
    }
}

/// The revision of the last write.
fn put_rev(c: &Client, key: &str, value: &str) -> i64 {
    let put = ok(c, |cb| c.put(key.to_string(), value.to_string(), PutOptions::new(), cb));
    put.header.expect("header").revision
}

fn value_of(c: &Client, key: &str) -> Vec<u8> {
    let got = ok(c, |cb| c.get(key.to_string(), GetOptions::new(), cb));
    got.kvs.first().map(|kv| kv.value.to_vec()).unwrap_or_default()
}

/// Both binaries print the same for `args` (each right after `setup`), and succeed.
fn agree_ok(setup: &dyn Fn(), ep: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let run = same_after(setup, ep, args, stdin, no_revisions);
    assert_eq!(run.code, 0, "{args:?}: {run:?}");
    run
}

/// Both binaries fail on `args` with exit `code` and `Error: {error}`.
fn agree_err(ep: &str, args: &[&str], stdin: Option<&str>, code: i32, error: &str) {
    let run = same(ep, args, stdin, exact);
    assert_eq!(
        (run.code, run.errors.as_slice()),
        (code, [format!("Error: {error}")].as_slice()),
        "{args:?} {stdin:?}"
    );
}

#[test]
fn put_writes_like_etcdctl() {
    let ep = &shared().endpoint();
    let c = client(ep);
    let p = unique_prefix("put");
    let k = &format!("{p}k");
    let setup = || reset(&c, &p, &[("k", "old")]);
    assert_eq!(agree_ok(&setup, ep, &["put", k, "v"], None).stdout, "OK\n");
    assert_eq!(
        agree_ok(&setup, ep, &["put", "--prev-kv", k, "v"], None).stdout,
        format!("OK\n{k}\nold\n")
    );
    agree_ok(&setup, ep, &["put", k, "v", "ignored"], None);
    agree_ok(&setup, ep, &["put", &format!("{p}new"), "--prev-kv", "v"], None);
    agree_ok(&setup, ep, &["-w", "json", "put", k, "v"], None);
    agree_ok(&setup, ep, &["-w", "json", "put", "--prev-kv", k, "v"], None);
    agree_ok(&setup, ep, &["put", "--ignore-value", "--prev-kv", k], None);
    assert_eq!(value_of(&c, k), b"old");
    agree_ok(&setup, ep, &["put", k, "--", "-dash"], None);
    assert_eq!(value_of(&c, k), b"-dash");
    agree_ok(&setup, ep, &["put", k], Some("from stdin\nline 2\n"));
    assert_eq!(value_of(&c, k), b"from stdin\nline 2\n");

    let lease = ok(&c, |cb| c.lease_grant(300, LeaseGrantOptions::new(), cb)).id;
    let hex = format!("{lease:x}");
    agree_ok(&setup, ep, &["put", "--lease", &hex, k, "v"], None);
    let with_lease = || {
        setup();
        ok(&c, |cb| c.put(k.clone(), "v", PutOptions::new().lease(lease), cb));
    };
    agree_ok(&with_lease, ep, &["put", "--ignore-lease", k, "w"], None);
    agree_ok(&with_lease, ep, &["-w", "json", "put", "--ignore-lease", "--prev-kv", k, "w"], None);
    assert_eq!(ok(&c, |cb| c.get(k.clone(), GetOptions::new(), cb)).kvs[0].lease, lease);
}

#[test]
fn put_refuses_like_etcdctl() {
    let ep = &shared().endpoint();
    let k = &format!("{}k", unique_prefix("put-err"));
    let needs = "put command needs 1 argument and input from stdin or 2 arguments";
    agree_err(ep, &["put"], None, 128, needs);
    agree_err(ep, &["put", k], None, 128, needs);
    agree_err(ep, &["put", k], Some(""), 128, needs);
    let only_one = "put command needs only 1 argument when 'ignore-value' is set";
    agree_err(ep, &["put", "--ignore-value", k, "v"], None, 128, only_one);
    let bad_lease = |id: &str, why: &str| {
        format!("bad lease ID (strconv.ParseInt: parsing \"{id}\": {why}), expecting ID in Hex")
    };
    agree_err(ep, &["put", "--lease=zz", k, "v"], None, 128, &bad_lease("zz", "invalid syntax"));
    agree_err(ep, &["put", "--lease=", k, "v"], None, 128, &bad_lease("", "invalid syntax"));
    let big = "1ffffffffffffffff";
    agree_err(
        ep,
        &["put", "--lease", big, k, "v"],
        None,
        128,
        &bad_lease(big, "value out of range"),
    );
    agree_err(
        ep,
        &["put", "--lease=123", k, "v"],
        None,
        1,
        "etcdserver: requested lease not found",
    );
    agree_err(ep, &["put", "--ignore-value", k], None, 1, "etcdserver: key not found");
    agree_err(ep, &["put", "--ignore-lease", k, "v"], None, 1, "etcdserver: key not found");
    agree_err(ep, &["put", "", "v"], None, 1, "etcdserver: key is not provided");
}

#[test]
fn get_reads_like_etcdctl() {
    let ep = &shared().endpoint();
    let c = client(ep);
    let p = unique_prefix("get");
    reset(&c, &p, &[("a", "3"), ("b", "1"), ("c", "2")]);
    let rev = put_rev(&c, &format!("{p}b"), "4"); // b: version 2, last modified
    put_rev(&c, &format!("{p}c"), "0");
    let (a, c_) = (&format!("{p}a"), &format!("{p}c"));
    let rev = &format!("--rev={rev}");
    let reads: &[&[&str]] = &[
        &["get", a],
        &["get", a, c_],
        &["get", a, c_, "ignored"],
        &["get", "--prefix", &p],
        &["get", "--prefix", "--limit=2", &p],
        &["get", "--prefix", "--keys-only", &p],
        &["get", "--prefix", "--print-value-only", &p],
        &["get", "--prefix", rev, &p],
        &["get", "--prefix", "--rev=-1", &p],
        &["get", "--prefix", "--consistency=s", &p],
        &["get", "--prefix", "--sort-by=VALUE", &p],
        &["get", "--prefix", "--sort-by=value", "--order=descend", &p],
        &["get", "--prefix", "--sort-by=CREATE", "--order=DESCEND", &p],
        &["get", "--prefix", "--sort-by=MODIFY", &p],
        &["get", "--prefix", "--sort-by=VERSION", "--order=DESCEND", "--limit=1", &p],
        &["get", "--prefix", "--sort-by=KEY", "--order=DESCEND", &p],
        &["get", "--prefix", "--order=ASCEND", &p],
        &["-w", "json", "get", a],
        &["-w", "json", "get", "--prefix", "--limit=1", &p],
        &["-w", "json", "get", "--prefix", "--keys-only", "--sort-by=value", &p],
    ];
    for args in reads {
        assert!(!agree_ok(&|| {}, ep, args, None).stdout.is_empty(), "{args:?}");
    }
    let none = &format!("{p}none");
    assert_eq!(agree_ok(&|| {}, ep, &["get", none], None).stdout, "");
    agree_ok(&|| {}, ep, &["-w", "json", "get", none], None);
}

#[test]
fn get_refuses_like_etcdctl() {
    let ep = &shared().endpoint();
    let k = &format!("{}k", unique_prefix("get-err"));
    let one_key = "get command needs one argument as key and an optional argument as range_end";
    agree_err(ep, &["get"], None, 128, one_key);
    let choose = "`--prefix` and `--from-key` cannot be set at the same time, choose one";
    agree_err(ep, &["get", "--prefix", "--from-key", k], None, 128, choose);
    let keys_count = "`--keys-only` and `--count-only` cannot be set at the same time, choose one";
    agree_err(ep, &["get", "--keys-only", "--count-only", k], None, 128, keys_count);
    let too_many =
        "too many arguments, only accept one argument when `--prefix` or `--from-key` is set";
    agree_err(ep, &["get", "--prefix", k, "z"], None, 128, too_many);
    agree_err(ep, &["get", "--from-key", k, "z"], None, 128, too_many);
    agree_err(ep, &["get", "--consistency=x", k], None, 4, "unknown consistency flag \"x\"");
    agree_err(ep, &["get", "--order=up", k], None, 4, "bad sort order up");
    agree_err(ep, &["get", "--sort-by=size", k], None, 4, "bad sort target size");
    // Checked in etcdctl's order: the consistency before the range end, the range end
    // before the sort.
    agree_err(
        ep,
        &["get", "--consistency=x", "--prefix", k, "z"],
        None,
        4,
        "unknown consistency flag \"x\"",
    );
    agree_err(ep, &["get", "--order=x", "--prefix", k, "z"], None, 128, too_many);
    // Refused only once the answer is in.
    let count = "--count-only is only for `--write-out=fields`";
    agree_err(ep, &["get", "--count-only", k], None, 128, count);
    agree_err(ep, &["-w", "json", "get", "--count-only", k], None, 128, count);
    let simple = "print-value-only is only for `--write-out=simple`";
    agree_err(ep, &["-w", "json", "get", "--print-value-only", k], None, 128, simple);
    let future = "etcdserver: mvcc: required revision is a future revision";
    agree_err(ep, &["get", "--rev=100000000", "--count-only", k], None, 1, future);
    agree_err(ep, &["get", ""], None, 1, "etcdserver: key is not provided");
}

#[test]
fn del_deletes_like_etcdctl() {
    let ep = &shared().endpoint();
    let c = client(ep);
    let p = unique_prefix("del");
    let setup = || reset(&c, &p, &[("a", "1"), ("b", "2"), ("c", "3")]);
    let (a, c_) = (&format!("{p}a"), &format!("{p}c"));
    assert_eq!(agree_ok(&setup, ep, &["del", a], None).stdout, "1\n");
    assert_eq!(agree_ok(&setup, ep, &["del", &format!("{p}none")], None).stdout, "0\n");
    assert_eq!(agree_ok(&setup, ep, &["del", a, c_], None).stdout, "2\n");
    agree_ok(&setup, ep, &["del", "--prefix", &p], None);
    let run = agree_ok(&setup, ep, &["del", "--prev-kv", "--prefix", &p], None);
    assert_eq!(run.stdout, format!("3\n{p}a\n1\n{p}b\n2\n{p}c\n3\n"));
    agree_ok(&setup, ep, &["del", "--prev-kv", a, c_], None);
    agree_ok(&setup, ep, &["-w", "json", "del", a], None);
    agree_ok(&setup, ep, &["-w", "json", "del", "--prev-kv", "--prefix", &p], None);
    agree_ok(&setup, ep, &["-w", "json", "del", &format!("{p}none")], None);

    let one_key = "del command needs one argument as key and an optional argument as range_end";
    agree_err(ep, &["del"], None, 128, one_key);
    agree_err(ep, &["del", a, c_, "x"], None, 128, one_key);
    let choose = "`--prefix` and `--from-key` cannot be set at the same time, choose one";
    agree_err(ep, &["del", "--prefix", "--from-key", a], None, 128, choose);
    let too_many =
        "too many arguments, only accept one argument when `--prefix` or `--from-key` is set";
    agree_err(ep, &["del", "--from-key", a, c_], None, 128, too_many);
    agree_err(ep, &["del", ""], None, 1, "etcdserver: key is not provided");
}

#[test]
fn from_key_ranges() {
    let ep = &shared().endpoint();
    let c = client(ep);
    let setup = || reset(&c, LAST_KEYS, &[("a", "1"), ("b", "2"), ("c", "3")]);
    let b = &format!("{LAST_KEYS}b");
    setup();
    let run = agree_ok(&|| {}, ep, &["get", "--from-key", b], None);
    assert_eq!(run.stdout, format!("{LAST_KEYS}b\n2\n{LAST_KEYS}c\n3\n"));
    agree_ok(&|| {}, ep, &["get", "--from-key", "--keys-only", "--limit=1", b], None);
    assert_eq!(agree_ok(&setup, ep, &["del", "--from-key", b], None).stdout, "2\n");
    agree_ok(&setup, ep, &["del", "--from-key", "--prev-kv", b], None);
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A txn script's sections, each line ended by a newline.
fn script(compares: &[&str], success: &[&str], failure: &[&str]) -> String {
    let section =
        |lines: &[&str]| lines.iter().map(|l| format!("{l}\n")).collect::<String>() + "\n";
    section(compares) + &section(success) + &section(failure)
}

#[test]
fn txn_runs_like_etcdctl() {
    let ep = &shared().endpoint();
    let c = client(ep);
    let p = unique_prefix("txn");
    // Compared keys, written once: a (created at r1, modified at r2), then b (r3).
    let (a, b, none) = (format!("{p}a"), format!("{p}b"), format!("{p}none"));
    let r1 = put_rev(&c, &a, "1");
    let r2 = put_rev(&c, &a, "1");
    put_rev(&c, &b, "2");
    // Each compare holds, and fails with the second form (which also tells create from mod).
    let compares = [
        (format!(r#"value("{a}") = "1""#), format!(r#"value("{a}") = "2""#)),
        (format!(r#"val("{b}") != "x""#), format!(r#"val("{b}") != "2""#)),
        (format!(r#"version("{a}") = "2""#), format!(r#"version("{a}") = "1""#)),
        (format!(r#"ver("{none}") < "1""#), format!(r#"ver("{none}") > "0""#)),
        (format!(r#"create("{a}") = "{r1}""#), format!(r#"create("{a}") = "{r2}""#)),
        (format!(r#"c("{b}") > "{r2}""#), format!(r#"c("{b}") < "{r2}""#)),
        (format!(r#"mod("{a}") = "{r2}""#), format!(r#"mod("{a}") = "{r1}""#)),
        (format!("m(\"{a}\")   >   `{r1}`"), format!("m(\"{a}\") > `{r2}`")),
    ];
    // The requests work on other keys, reset before each run.
    let q = format!("{p}ops/");
    let setup = || reset(&c, &q, &[("x", "1"), ("y", "2")]);
    // etcdctl 3.5.1 cuts a 'single-quoted' word to the number of words minus 2 characters:
    // five words keep "a b" whole.
    let success = [
        format!("put {q}new \"new value\""),
        format!("put --prev-kv --ignore-lease=false {q}x 'a b'"),
        format!("get --prefix {q}"),
        format!("get {q}x --keys-only"),
        format!("get --print-value-only {q}y"),
        format!("get --count-only --prefix {q}"),
        format!("del --prev-kv {q}y"),
        format!("del {q}none"),
    ];
    let failure = [format!("get {q}x"), format!("put --prev-kv {q}y failed")];
    let (then, or_else) = (strs(&success), strs(&failure));
    let holds: Vec<&str> = compares.iter().map(|(h, _)| h.as_str()).collect();
    let all_hold = script(&holds, &then, &or_else);
    let run = agree_ok(&setup, ep, &["txn"], Some(&all_hold));
    assert!(run.stdout.starts_with("SUCCESS\n\nOK\n\nOK\n"), "{}", run.stdout);
    assert_eq!(value_of(&c, &format!("{q}x")), b"a b");
    agree_ok(&setup, ep, &["-w", "json", "txn"], Some(&all_hold));
    for (_, fails) in &compares {
        let run = agree_ok(&setup, ep, &["txn"], Some(&script(&[fails], &then, &or_else)));
        assert!(run.stdout.starts_with("FAILURE\n\n"), "{fails}: {}", run.stdout);
    }
    let one_fails = script(&[&compares[0].1], &then, &or_else);
    agree_ok(&setup, ep, &["-w", "json", "txn"], Some(&one_fails));
    let run = agree_ok(&setup, ep, &["txn", "-i"], Some(&one_fails));
    let prompts =
        "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n";
    assert!(run.stdout.starts_with(prompts), "{}", run.stdout);
    agree_ok(&setup, ep, &["txn", "--interactive"], Some(&script(&[], &[], &[])));
    agree_ok(&setup, ep, &["txn"], Some(&script(&[], &[], &[])));
}

#[test]
fn txn_refuses_like_etcdctl() {
    let ep = &shared().endpoint();
    let k = &format!("{}k", unique_prefix("txn-err"));
    let bad = |compares: &[&str], ops: &[&str], code: i32, error: &str| {
        agree_err(ep, &["txn"], Some(&script(compares, ops, &[])), code, error);
    };
    let cmp = |s: &str| s.replace("K", k);
    // Input that ends before its last blank line.
    agree_err(ep, &["txn"], Some(""), 3, "EOF");
    agree_err(ep, &["txn"], Some("\n\n"), 3, "EOF");
    agree_err(ep, &["txn"], Some(&format!("\nput {k} v\n\nput {k} w")), 3, "EOF");
    agree_err(ep, &["txn", "-i"], Some("\n"), 3, "EOF");
    agree_err(ep, &["txn", "x"], Some("\n\n\n"), 128, "txn command does not accept argument");
    // Compares.
    bad(&["bad"], &[], 3, "malformed comparison: bad");
    bad(
        &[&cmp(r#"foo("K") = "1""#)],
        &[],
        3,
        &cmp(r#"malformed comparison: foo("K") = "1" (unknown target foo)"#),
    );
    bad(
        &[&cmp(r#"ver ("K") = "1""#)],
        &[],
        3,
        &cmp(r#"malformed comparison: ver ("K") = "1" (unknown target ver )"#),
    );
    bad(
        &[&cmp(r#"ver("K") = "x""#)],
        &[],
        3,
        &cmp(r#"invalid txn compare request: ver("K") = "x""#),
    );
    bad(
        &[&cmp(r#"mod("K") = "99999999999999999999""#)],
        &[],
        3,
        &cmp(r#"invalid txn compare request: mod("K") = "99999999999999999999""#),
    );
    for (line, got) in [
        (r#"ver(K) = "1""#, r#"ver("")  """#),
        (r#"ver("K" ) = "1""#, r#"ver("K")  """#),
        (r#"ver("K")="1""#, r#"ver("K")  """#),
        (r#"ver("K") ="#, r#"ver("K") = """#),
        (r#"val("K") = "open"#, r#"val("K") = """#),
        (r#"val("K\q") = "1""#, r#"val("")  """#),
        (r#"val("K\t") = v"#, r#"val("K\t") = """#),
        ("ver(", r#"ver("")  """#),
    ] {
        bad(
            &[&cmp(line)],
            &[],
            3,
            &format!("malformed comparison: {}; got {}", cmp(line), cmp(got)),
        );
    }
    // Requests.
    bad(&[], &["get"], 3, "invalid txn compare request: get");
    bad(&[], &[&format!("foo {k}")], 3, &format!("invalid txn request: foo {k}"));
    bad(
        &[],
        &[&format!("put {k} v --bogus")],
        3,
        &format!("invalid txn request: put {k} v --bogus"),
    );
    bad(
        &[],
        &[&format!("put {k} v --prefix")],
        3,
        &format!("invalid txn request: put {k} v --prefix"),
    );
    bad(
        &[],
        &[&format!("get {k} --limit=x")],
        3,
        &format!("invalid txn request: get {k} --limit=x"),
    );
    bad(&[], &[&format!("-w json get {k}")], 3, &format!("invalid txn request: -w json get {k}"));
    bad(&[], &[&format!("put {k} \"a\\qb\"")], 3, "invalid syntax");
    // A request's own checks fail as the command's do.
    let needs = "put command needs 1 argument and input from stdin or 2 arguments";
    bad(&[], &[&format!("put {k}")], 128, needs);
    let lease =
        "bad lease ID (strconv.ParseInt: parsing \"zz\": invalid syntax), expecting ID in Hex";
    bad(&[], &[&format!("put --lease=zz {k} v")], 128, lease);
    bad(&[], &[&format!("get --consistency=q {k}")], 4, "unknown consistency flag \"q\"");
    let too_many =
        "too many arguments, only accept one argument when `--prefix` or `--from-key` is set";
    bad(&[], &[&format!("get --prefix {k} z")], 128, too_many);
    let one_key = "del command needs one argument as key and an optional argument as range_end";
    bad(&[], &[&format!("del {k} a b")], 128, one_key);
    // The server's errors.
    let dup = "etcdserver: duplicate key given in txn request";
    bad(&[], &[&format!("put {k} 1"), &format!("put {k} 2")], 1, dup);
    bad(
        &[],
        &[&format!("get --rev=100000000 {k}")],
        1,
        "etcdserver: mvcc: required revision is a future revision",
    );
    bad(&[], &[&format!("put --lease=7 {k} v")], 1, "etcdserver: requested lease not found");
    // etcdctl panics (exit 2, no error line) on an unknown operator and on any lease compare.
    for line in [r#"ver("K") == "1""#, r#"val("K") =~ "1""#, r#"lease("K") = "0""#] {
        let run = same(ep, &["txn"], Some(&script(&[&cmp(line)], &[], &[])), exact);
        assert_eq!((run.code, run.errors.len()), (2, 0), "{line}");
    }
}

#[test]
fn compaction_like_etcdctl() {
    let etcd = Etcd::start();
    let ep = &etcd.endpoint();
    let c = client(ep);
    let revs: Vec<i64> = (0..5).map(|i| put_rev(&c, &format!("k{i}"), "v")).collect();
    // Each binary compacts a revision of its own: a compaction cannot be undone.
    let theirs = support::etcdctl::etcdctl_run(ep, &["compaction", &revs[1].to_string()], None);
    let ours = support::etcdctl::example_run(
        ep,
        &["compaction", "--physical", &revs[2].to_string()],
        None,
    );
    assert_eq!(theirs.stdout, format!("compacted revision {}\n", revs[1]));
    assert_eq!(ours.stdout, format!("compacted revision {}\n", revs[2]));
    let ours = support::etcdctl::example_run(
        ep,
        &["-w", "json", "compaction", &revs[3].to_string()],
        None,
    );
    assert_eq!((ours.code, ours.stdout), (0, format!("compacted revision {}\n", revs[3])));

    let compacted = "etcdserver: mvcc: required revision has been compacted";
    agree_err(ep, &["compaction", &revs[3].to_string()], None, 1, compacted);
    agree_err(ep, &["compaction", "--", "-1"], None, 1, compacted);
    agree_err(
        ep,
        &["compaction", "100000"],
        None,
        1,
        "etcdserver: mvcc: required revision is a future revision",
    );
    agree_err(ep, &["compaction"], None, 128, "compaction command needs 1 argument");
    agree_err(ep, &["compaction", "1", "2"], None, 128, "compaction command needs 1 argument");
    agree_err(ep, &["compaction", "x"], None, 1, "strconv.ParseInt: parsing \"x\": invalid syntax");
    let get_old = ["get", "--rev", &revs[0].to_string(), "k0"];
    agree_err(ep, &get_old, None, 1, compacted);

    // A watch from a compacted revision is cancelled by the server: exit 5.
    let cancelled = format!("watch was canceled ({compacted})");
    for args in
        [&["watch", "--rev=1", "k0"][..], &["-w", "json", "watch", "--prefix", "--rev=2", "k"]]
    {
        let run = same(ep, args, None, exact);
        assert_eq!(run.code, 5, "{args:?}: {run:?}");
        assert_eq!(run.errors, ["Error: watch is canceled by the server"]);
        let stderr = run_stderr(args, ep);
        assert!(stderr.contains(&cancelled), "{stderr}");
    }

    // This etcd holds only this test's keys: the whole keyspace is safe to read here.
    agree_ok(&|| {}, ep, &["get", "--prefix", ""], None);
    agree_ok(&|| {}, ep, &["get", "--from-key", "", "--keys-only"], None);
}

/// The example's stderr for `args`.
fn run_stderr(args: &[&str], ep: &str) -> String {
    let out = Command::new(example_bin())
        .arg(format!("--endpoints={ep}"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the example");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A watch process whose stdout is collected as it comes.
struct Watcher {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Watcher {
    fn start(bin: &std::path::Path, ep: &str, args: &[&str]) -> Watcher {
        let mut child = support::etcdctl::command(bin, ep, args)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a watch");
        let out = Arc::new(Mutex::new(Vec::new()));
        let (mut stdout, sink) = (child.stdout.take().expect("piped"), out.clone());
        thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Watcher { child, out }
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// Interrupts it (SIGINT, as Ctrl-C would) and returns the signal it died of.
    fn interrupt(mut self) -> Option<i32> {
        // SAFETY: plain syscall on our own unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        self.child.wait().expect("wait").signal()
    }
}

/// A failing test must not leave its watch processes running.
impl Drop for Watcher {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// etcdctl and the example watching with the same arguments.
struct Pair {
    args: Vec<String>,
    theirs: Watcher,
    ours: Watcher,
}

impl Pair {
    fn start(ep: &str, args: &[&str]) -> Pair {
        Pair {
            args: args.iter().map(|s| s.to_string()).collect(),
            theirs: Watcher::start(&etcd_bin_dir().join("etcdctl"), ep, args),
            ours: Watcher::start(&example_bin(), ep, args),
        }
    }

    /// Waits until both printed the same output, ending with the value `last` (or, in JSON,
    /// its base64 `last_json`), interrupts both and checks they died of the signal. Returns
    /// the output.
    fn finish(self, last: &str, last_json: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let done = |out: String| out.contains(last) || out.contains(last_json);
        let same =
            || header_revisions(&self.theirs.output()) == header_revisions(&self.ours.output());
        while !(done(self.theirs.output()) && same()) {
            if Instant::now() > deadline {
                panic!(
                    "watch {:?} differs\n--- etcdctl:\n{}--- example:\n{}",
                    self.args,
                    self.theirs.output(),
                    self.ours.output()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        let out = self.ours.output();
        let signals = (self.theirs.interrupt(), self.ours.interrupt());
        assert_eq!(signals, (Some(libc::SIGINT), Some(libc::SIGINT)), "{:?}", self.args);
        out
    }
}

/// JSON watch lines with the header's revision (the store's revision when the response was
/// sent, which other tests on the shared etcd move) replaced by `R`.
fn header_revisions(out: &str) -> String {
    out.lines()
        .map(|line| {
            match line.strip_prefix("{\"Header\":").and_then(|_| line.find("\"revision\":")) {
                Some(at) => {
                    let start = at + "\"revision\":".len();
                    let end = line[start..]
                        .find(|c: char| !c.is_ascii_digit())
                        .map_or(line.len(), |n| start + n);
                    format!("{}R{}\n", &line[..start], &line[end..])
                }
                None => format!("{line}\n"),
            }
        })
        .collect()
}

const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";

#[test]
fn watch_prints_like_etcdctl() {
    let ep = &shared().endpoint();
    let c = client(ep);
    let p = unique_prefix("watch");
    let (a, b, e) = (format!("{p}a"), format!("{p}b"), format!("{p}e"));
    let before = put_rev(&c, &a, "0");
    let from = format!("--rev={before}");
    let variants: Vec<Vec<&str>> = vec![
        vec!["watch", "--prefix", &p],
        vec!["watch", "--prefix", "--prev-kv", &p],
        vec!["-w", "json", "watch", "--prefix", "--prev-kv", &p],
        vec!["watch", &a, &e],
        vec!["watch", &a],
        vec!["watch", &a, &e, "ignored"],
        vec!["watch", &from, &a],
    ];
    let base = metric(ep, WATCHERS);
    let pairs: Vec<Pair> = variants.iter().map(|args| Pair::start(ep, args)).collect();
    // Every watch is in place before the first event.
    wait_for_metric(ep, WATCHERS, base + 2.0 * pairs.len() as f64, Duration::from_secs(10));
    let write = |args: &[&str], stdin: Option<&str>| {
        let run = support::etcdctl::etcdctl_run(ep, args, stdin);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
    };
    write(&["put", &a, "1"], None);
    write(&["put", &a, "2"], None);
    write(&["del", &a], None);
    write(&["put", &b, "x\ny"], None);
    write(
        &["txn"],
        Some(&script(
            &[],
            &[&format!("put {a} t"), &format!("put {e} u"), &format!("del {b}")],
            &[],
        )),
    );
    write(&["put", &a, "last"], None);
    for pair in pairs {
        pair.finish("last", "bGFzdA==");
    }
    // Replayed history comes in batches that depend on the server's timing while events
    // still arrive, so the JSON of a replay (which shows the batches) is compared once the
    // history is complete.
    let replay = Pair::start(ep, &["-w", "json", "watch", &from, "--prefix", &p]);
    replay.finish("last", "bGFzdA==");
}

#[test]
fn watch_refuses_like_etcdctl() {
    let ep = &shared().endpoint();
    agree_err(ep, &["watch"], None, 128, "bad number of arguments");
    let exclusive = "`range_end` and `--prefix` are mutually exclusive";
    agree_err(ep, &["watch", "--prefix", "a", "b"], None, 128, exclusive);
}

#[test]
fn watch_survives_an_etcd_restart() {
    let mut etcd = Etcd::start();
    let ep = &etcd.endpoint();
    let pair = Pair::start(ep, &["watch", "--prefix", "r/"]);
    wait_for_metric(ep, WATCHERS, 2.0, Duration::from_secs(10));
    support::etcdctl(ep, &["put", "r/1", "before"]);
    etcd.restart();
    support::etcdctl(ep, &["put", "r/2", "after"]);
    assert_eq!(pair.finish("after", "YWZ0ZXI="), "PUT\nr/1\nbefore\nPUT\nr/2\nafter\n");
}
