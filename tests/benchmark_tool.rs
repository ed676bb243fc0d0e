//! `examples/benchmark` (etcd's `benchmark` commands on evetcd) against a real etcd: every
//! command reports exactly the requests it was asked for, etcd really holds what the write
//! benchmarks wrote, `--rate` paces the run, and bad command lines exit 2.

mod support;

use evetcd::GetOptions;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support::client::{client, ok};
use support::Etcd;

/// Builds the example once per test process and returns its path.
fn benchmark_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| support::examples::build_example("benchmark", &[])).clone()
}

fn bench(args: &[&str]) -> Output {
    Command::new(benchmark_bin()).args(args).output().expect("run the benchmark")
}

/// Runs a benchmark that must succeed; its stdout.
fn bench_ok(args: &[&str]) -> String {
    let out = bench(args);
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{args:?}: {:?}\n{stdout}\n{stderr}", out.status);
    stdout.into_owned()
}

/// The one JSON line of a `--json` run.
fn bench_json(args: &[&str]) -> Value {
    let stdout = bench_ok(args);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The counts of each "Response time histogram:" in a text summary, summed per histogram.
fn histogram_sums(text: &str) -> Vec<u64> {
    let mut sums = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line != "Response time histogram:" {
            continue;
        }
        let mut sum = 0;
        for bucket in lines.by_ref().take_while(|l| !l.is_empty()) {
            let count = bucket.split('[').nth(1).and_then(|r| r.split(']').next());
            sum +=
                count.and_then(|c| c.parse::<u64>().ok()).unwrap_or_else(|| panic!("{bucket:?}"));
        }
        sums.push(sum);
    }
    sums
}

fn revision(endpoint: &str) -> i64 {
    let c = client(endpoint);
    ok(&c, |cb| c.get("x", GetOptions::new().count_only(true), cb)).header.unwrap().revision
}

fn count(endpoint: &str, prefix: &str) -> i64 {
    let c = client(endpoint);
    ok(&c, |cb| c.get(prefix.to_string(), GetOptions::new().prefix(true).count_only(true), cb))
        .count
}

#[test]
fn put_writes_every_request_and_reports_each_once() {
    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    let before = revision(&ep);
    let args = ["put", "--total", "200", "--clients", "4", "--conns", "2"];
    let keys = ["--key-space-size", "50", "--sequential-keys", "--prefix", "bt-put/"];
    let text = bench_ok(&[&[ep.as_str()], &args[..], &keys[..]].concat());
    assert_eq!(histogram_sums(&text), [200], "{text}");
    for line in ["\nSummary:\n", "  Requests/sec:\t", "\nLatency distribution:\n", "  p99.9\t"] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
    assert!(text.contains("\nErrors: 0 of 200 requests.\n"), "{text}");
    assert_eq!(revision(&ep), before + 200, "one revision per put");
    assert_eq!(count(&ep, "bt-put/"), 50, "sequential keys cover the key space");

    // The same through --endpoints and --json.
    let endpoints = format!("--endpoints={ep}");
    let json = bench_json(&[&[endpoints.as_str()], &args[..], &keys[..], &["--json"]].concat());
    assert_eq!((json["op"].as_str(), json["ops"].as_u64()), (Some("put"), Some(200)), "{json}");
    assert_eq!(json["errors"].as_u64(), Some(0), "{json}");
    assert!(json["p50_us"].as_u64().unwrap() > 0 && json["ops_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(revision(&ep), before + 400);
}

#[test]
fn range_and_txn_put_report_their_counts() {
    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    let before = revision(&ep);
    let txn = ["txn-put", "--total", "60", "--txn-ops", "3", "--key-space-size", "30"];
    let json = bench_json(&[&[ep.as_str()], &txn[..], &["--prefix", "bt-txn/", "--json"]].concat());
    assert_eq!((json["ops"].as_u64(), json["errors"].as_u64()), (Some(60), Some(0)), "{json}");
    assert_eq!(revision(&ep), before + 60, "one revision per transaction");
    assert_eq!(count(&ep, "bt-txn/"), 30);

    let text = bench_ok(&[&ep, "range", "bt-txn/", "--prefix", "--total", "100", "--clients", "3"]);
    assert!(text.starts_with("bench with linearizable range\n"), "{text}");
    assert_eq!(histogram_sums(&text), [100], "{text}");
    let range = [&ep, "range", "bt-txn/", "bt-txn0", "--consistency=s", "--limit", "5", "--json"];
    let json =
        bench_json(&[&range[..], &["--total", "100", "--conns", "2", "--clients", "2"]].concat());
    assert_eq!((json["ops"].as_u64(), json["errors"].as_u64()), (Some(100), Some(0)), "{json}");
}

#[test]
fn watch_latency_sees_every_put_on_every_watcher() {
    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    let args = ["watch-latency", "--put-total", "20", "--put-rate", "200", "--streams", "2"];
    let text = bench_ok(&[&[ep.as_str()], &args[..], &["--watchers-per-stream", "3"]].concat());
    assert!(text.contains("\nPut summary:\n") && text.contains("\nWatch events summary:\n"));
    assert_eq!(histogram_sums(&text), [20, 120], "puts, then events (20 puts x 6 watchers)");
    let json =
        bench_json(&[&[ep.as_str()], &args[..], &["--watchers-per-stream=3", "--json"]].concat());
    assert_eq!((json["ops"].as_u64(), json["errors"].as_u64()), (Some(120), Some(0)), "{json}");
    assert_eq!((json["put_ops"].as_u64(), json["watchers"].as_u64()), (Some(20), Some(6)));
}

#[test]
fn lease_keepalive_counts_round_trips_and_revokes_its_leases() {
    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    let args = ["lease-keepalive", "--total", "50", "--clients", "3", "--conns", "2", "--json"];
    let json = bench_json(&[&[ep.as_str()], &args[..]].concat());
    assert_eq!((json["ops"].as_u64(), json["errors"].as_u64()), (Some(50), Some(0)), "{json}");
    let c = client(&ep);
    assert!(ok(&c, |cb| c.lease_leases(cb)).leases.is_empty(), "every lease revoked");
}

#[test]
fn a_rate_paces_the_requests() {
    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    let started = Instant::now();
    let json =
        bench_json(&[&ep, "put", "--total", "100", "--rate", "500", "--clients", "2", "--json"]);
    // The last of 100 requests is due 99/500 s after the first.
    assert!(started.elapsed() >= Duration::from_millis(190), "{:?}", started.elapsed());
    assert!(json["total_s"].as_f64().unwrap() >= 0.19, "{json}");
    assert_eq!((json["ops"].as_u64(), json["rate"].as_u64()), (Some(100), Some(500)), "{json}");
}

#[test]
fn bad_command_lines_exit_2_and_an_unreachable_etcd_exits_1() {
    for args in [
        &["put", "--bogus"][..],
        &["put", "--total"],
        &["put", "--total=many"],
        &["range"],
        &["--total", "5", "put"],
        &["nothing-to-run"],
    ] {
        let out = bench(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("Usage: benchmark"), "{args:?}: {stderr}");
    }
    let help = bench(&["--help"]);
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("Usage:"));
    let refused = support::refused_endpoint();
    let out = bench(&[&refused, "put", "--total", "5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach etcd"), "{stderr}");
}
