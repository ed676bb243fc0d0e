//! KV workloads of `shared/peer-bench/WORKLOADS.md`, printing the same JSON line as the peer.
//!
//! `cargo bench --bench kv -- [ENDPOINT] [WORKLOAD|all]` with WORKLOAD one of seq-get,
//! seq-put, pipe-get, pipe-put. Start etcd with `--unsafe-no-fsync` for benchmarks.

use evetcd::{Client, Config, GetOptions, PutOptions};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

const VALUE_SIZE: usize = 256;
const IN_FLIGHT: usize = 100;
const PIPE_DURATION: Duration = Duration::from_secs(5);

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Latencies and totals of one workload.
#[derive(Default)]
struct Stats {
    latencies: Vec<Duration>,
}

impl Stats {
    fn report(mut self, workload: &str, wall: Duration, cpu: Duration) {
        self.latencies.sort_unstable();
        let ops = self.latencies.len();
        let pct = |p: f64| {
            let i = ((ops as f64 * p).ceil() as usize).clamp(1, ops) - 1;
            self.latencies[i].as_secs_f64() * 1e6
        };
        println!(
            "{{\"client\":\"evetcd\",\"workload\":\"{workload}\",\"ops\":{ops},\"ops_per_s\":{:.0},\"p50_us\":{:.1},\"p99_us\":{:.1},\"cpu_us_per_op\":{:.2}}}",
            ops as f64 / wall.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            cpu.as_secs_f64() * 1e6 / ops as f64,
        );
    }
}

/// Issues one operation; `done` must be called from its callback.
type Op = Rc<dyn Fn(&Client, usize, Box<dyn FnOnce()>)>;

fn get_op() -> Op {
    Rc::new(|c, _, done| {
        c.get("bench/k0", GetOptions::new().serializable(true), move |r| {
            r.expect("get");
            done();
        })
    })
}

fn put_op() -> Op {
    let value = bytes::Bytes::from(vec![b'v'; VALUE_SIZE]);
    Rc::new(move |c, i, done| {
        c.put(format!("bench/k{}", i % 1000), value.clone(), PutOptions::new(), move |r| {
            r.expect("put");
            done();
        })
    })
}

/// Runs `op` with `in_flight` operations outstanding until `count` have been issued or
/// `duration` has passed, recording each latency.
fn drive(client: &Client, op: Op, in_flight: usize, count: usize, duration: Duration) -> Stats {
    struct Run {
        stats: Stats,
        issued: usize,
        count: usize,
        until: Option<Instant>,
    }
    let run = Rc::new(RefCell::new(Run {
        stats: Stats::default(),
        issued: 0,
        count,
        until: Instant::now().checked_add(duration),
    }));
    fn issue(client: &Client, op: &Op, run: &Rc<RefCell<Run>>) {
        let i = {
            let mut r = run.borrow_mut();
            if r.issued >= r.count || r.until.is_some_and(|u| Instant::now() >= u) {
                return;
            }
            r.issued += 1;
            r.issued
        };
        let (c, op2, run2, start) = (client.clone(), op.clone(), run.clone(), Instant::now());
        op(
            client,
            i,
            Box::new(move || {
                run2.borrow_mut().stats.latencies.push(start.elapsed());
                issue(&c, &op2, &run2);
            }),
        );
    }
    for _ in 0..in_flight {
        issue(client, &op, &run);
    }
    client.run();
    Rc::try_unwrap(run).ok().expect("no callback left").into_inner().stats
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let endpoint = args.first().cloned().unwrap_or_else(|| "127.0.0.1:2379".into());
    let which = args.get(1).cloned().unwrap_or_else(|| "all".into());
    let client = Client::new(Config::new().endpoints([endpoint])).expect("config");
    client.put("bench/k0", vec![b'v'; VALUE_SIZE], PutOptions::new(), |r| {
        r.expect("cannot reach etcd");
    });
    client.run();

    let workloads: [(&str, Op, usize, usize, Duration); 4] = [
        ("seq-get", get_op(), 1, 20_000, Duration::MAX),
        ("seq-put", put_op(), 1, 5_000, Duration::MAX),
        ("pipe-get", get_op(), IN_FLIGHT, usize::MAX, PIPE_DURATION),
        ("pipe-put", put_op(), IN_FLIGHT, usize::MAX, PIPE_DURATION),
    ];
    for (name, op, in_flight, count, duration) in workloads {
        if which != "all" && which != name {
            continue;
        }
        let (t0, cpu0) = (Instant::now(), cpu_time());
        let stats = drive(&client, op, in_flight, count, duration);
        stats.report(name, t0.elapsed(), cpu_time() - cpu0);
    }
}
