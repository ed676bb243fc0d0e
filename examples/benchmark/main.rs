//! An etcd latency benchmark with the commands, flags and summary of etcd's own `benchmark`
//! tool (tools/benchmark), so the two can be run on one workload and read side by side, plus
//! HdrHistogram percentiles, an error count and `--json`.
//!
//! ```text
//! cargo run --release --example benchmark -- [ENDPOINT] COMMAND [flags]
//! ```
//!
//! Every connection (`--conns` clients) and every requester (`--clients`, spread round-robin
//! over the connections) runs on one thread: one `mio::Poll` drives all the clients.
//!
//! Timing: without `--rate` the run is closed loop (each requester sends its next request when
//! the previous one is answered) and a latency runs from the actual send. With `--rate N` it is
//! open loop: request `i` is due at `t0 + i/N` and its latency runs from then, whether or not a
//! requester was free at that moment, so queueing behind a slow server is counted (no
//! coordinated omission). etcd's tool instead rate-limits the sends and times from each send.
//!
//! `cargo run --example benchmark -- --help` lists the commands and flags.

mod args;
mod driver;
mod report;
mod watch;
mod workloads;

use args::{Command, Options, Parsed};
use driver::{run_requests, Conns, Requests};
use evetcd::{Client, Config, Tls};
use report::Summary;
use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

const USAGE: &str = "\
An etcd latency benchmark compatible with etcd's `benchmark` tool.

Usage: benchmark [ENDPOINT] COMMAND [flags]

Commands:
  put               puts (--total, --rate, --key-size 8, --val-size 8, --key-space-size 1,
                    --sequential-keys, --prefix STR)
  range KEY [END]   ranges (--total, --rate, --consistency l|s, --limit, --count-only,
                    --keys-only, --prefix: KEY is a prefix and may be left out)
  txn-put           transactions of puts (--total, --rate, --txn-ops 1, --key-size 8,
                    --val-size 8, --key-space-size 1, --prefix STR)
  watch-latency     puts to one key at --put-rate 100, --put-total 1000, watched by
                    --streams 10 x --watchers-per-stream 10 watchers (--key-size 32,
                    --val-size 32, --prevkv); each stream is a connection of its own
  lease-keepalive   one keepalive round trip per request on a lease per requester
                    (--total, --rate)

Global flags:
  --endpoints LIST    comma-separated endpoints (default 127.0.0.1:2379); a leading ENDPOINT
                      argument is shorthand for it
  --conns N           connections, one client each (default 1)
  --clients N         concurrent requesters, round-robin over the connections (default 1)
  --total N           requests (default 10000)
  --rate N            requests per second, 0 = unlimited (default 0). Unlimited is closed loop:
                      latency from each actual send. With a rate it is open loop: request i is
                      due at t0 + i/rate and its latency runs from then, free requester or not
                      (no coordinated omission)
  --cacert FILE       trust this CA (turns TLS on)
  --cert FILE --key FILE   client certificate for mTLS
  --insecure-skip-tls-verify   accept any server certificate
  --user USER:PASS    authenticate
  --dial-timeout D    connect timeout (5s, 500ms)
  --precise           full precision in the summary
  --json              print one JSON line instead of the summary
  -h, --help          this text

Output: etcd's summary (seconds, 4 decimals), then HdrHistogram percentiles in µs and the
error count. Exit status: 0 after a run (errors are counted, not fatal), 1 when etcd cannot be
reached, 2 for a bad command line.
";

fn main() -> ExitCode {
    let options = match args::parse(std::env::args().skip(1)) {
        Ok(Parsed::Run(o)) => *o,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("benchmark: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("benchmark: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Connect(e)) => {
            eprintln!("benchmark: cannot reach etcd at {}: {e}", options.endpoints.join(","));
            ExitCode::from(1)
        }
    }
}

enum Failure {
    /// A configuration the client refuses (a malformed endpoint, say).
    Usage(String),
    /// etcd did not answer the first call on a connection.
    Connect(String),
}

fn config(o: &Options) -> Config {
    let mut config = Config::new().endpoints(o.endpoints.clone());
    if let Some(t) = o.dial_timeout {
        config = config.connect_timeout(t);
    }
    if let Some((user, password)) = &o.user {
        config = config.user(user.clone(), password.clone());
    }
    if o.cacert.is_some() || o.cert.is_some() || o.insecure_skip_verify {
        let mut tls = Tls::new();
        if let Some(ca) = &o.cacert {
            tls = tls.ca_file(ca);
        }
        if let (Some(cert), Some(key)) = (&o.cert, &o.key) {
            tls = tls.identity_files(cert, key);
        }
        if o.insecure_skip_verify {
            tls = tls.danger_accept_invalid_certs();
        }
        config = config.tls(tls);
    }
    config
}

/// `n` clients, each connected (a Status call answered) before any measurement, so that no
/// request pays for a connect or a TLS handshake.
fn connect(o: &Options, n: usize) -> Result<Conns, Failure> {
    let clients = (0..n)
        .map(|_| Client::new(config(o)).map_err(|e| Failure::Usage(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut conns = Conns::new(clients).map_err(|e| Failure::Connect(format!("poll: {e}")))?;
    let failure: Rc<RefCell<Option<String>>> = Rc::default();
    let pending = Rc::new(std::cell::Cell::new(n));
    let timeout = o.dial_timeout.unwrap_or(Duration::from_secs(5)).max(Duration::from_secs(1));
    for c in &conns.clients {
        let (failure, pending) = (failure.clone(), pending.clone());
        c.with(evetcd::CallOptions::new().timeout(timeout)).status(move |res| {
            if let Err(e) = res {
                failure.borrow_mut().get_or_insert(e.to_string());
            }
            pending.set(pending.get() - 1);
        });
    }
    conns.drive(|_| (pending.get() > 0).then_some(None));
    match failure.take() {
        Some(e) => Err(Failure::Connect(e)),
        None => Ok(conns),
    }
}

fn run(o: &Options) -> Result<(), Failure> {
    if o.command == Command::WatchLatency {
        let mut conns = connect(o, 1 + o.streams)?;
        let results = watch::run(&mut conns, o).map_err(Failure::Connect)?;
        conns.close();
        if o.json {
            println!(
                "{{\"op\":\"watch-latency\",\"watchers\":{},{},{}}}",
                o.streams * o.watchers_per_stream,
                results.events.json_fields(""),
                results.puts.json_fields("put_"),
            );
        } else {
            print!("\nPut summary:\n{}", results.puts.text(o.precise));
            print!("\nWatch events summary:\n{}", results.events.text(o.precise));
        }
        return Ok(());
    }
    let mut conns = connect(o, o.conns)?;
    let mut lease = None;
    let work: Rc<dyn Requests> = match o.command {
        Command::Put => Rc::new(workloads::Put::new(o)),
        Command::TxnPut => Rc::new(workloads::TxnPut::new(o)),
        Command::Range => {
            if !o.json {
                let kind = if o.serializable { "serializable" } else { "linearizable" };
                println!("bench with {kind} range");
            }
            Rc::new(workloads::Range::new(o))
        }
        Command::LeaseKeepalive => {
            let setup = workloads::lease_setup(&mut conns, o.clients).map_err(Failure::Connect)?;
            let work = Rc::new(setup.work.clone());
            lease = Some(setup);
            work
        }
        Command::WatchLatency => unreachable!("handled above"),
    };
    let (recorder, wall) = run_requests(&mut conns, o.clients, o.total, o.rate, work);
    if let Some(setup) = &lease {
        setup.clean_up(&mut conns);
    }
    conns.close();
    print_summary(o, &recorder.finish(wall));
    Ok(())
}

fn print_summary(o: &Options, s: &Summary) {
    if o.json {
        println!(
            "{{\"op\":\"{}\",\"requests\":{},\"conns\":{},\"clients\":{},\"rate\":{},{}}}",
            o.command.name(),
            o.total,
            o.conns,
            o.clients,
            o.rate,
            s.json_fields("")
        );
    } else {
        print!("{}", s.text(o.precise));
    }
}
