//! The workloads of `shared/peer-bench/WORKLOADS.md`, printing the same JSON line as the peer
//! (`client` is `evetcd`), plus two scale workloads.
//!
//! ```text
//! cargo bench --bench workloads -- [ENDPOINT] [WORKLOAD|all] [options]
//!   WORKLOAD      seq-get seq-put pipe-get pipe-put watch-replay scale-watch scale-keepalive
//!   --in-flight N   calls outstanding in the pipe-* workloads (100)
//!   --duration S    seconds of each pipe-* workload (5)
//!   --value-size B  bytes of each value written or read (256)
//!   --keys N        keys the put workloads cycle through (1000)
//!   --events N      events of watch-replay (50000)
//!   --scale N       watches / keepalives of the scale workloads (10000)
//!   --ca FILE       TLS: trust this CA (PEM); default $PEER_BENCH_CA
//!   --cert FILE     TLS: client certificate (PEM) for mTLS; default $PEER_BENCH_CERT
//!   --key FILE      TLS: its private key (PEM); default $PEER_BENCH_KEY
//! ```
//!
//! stdout: one JSON line per workload. stderr: progress every second, and each workload's
//! p50 / p90 / p99 / p99.9. Start etcd with `--unsafe-no-fsync` (`scripts/bench` does).
//!
//! TLS as the peer takes it: give the endpoint as `https://host:port` and a CA, either with
//! `--ca` or in the peer's `PEER_BENCH_CA` variable (`--cert` and `--key`, or `PEER_BENCH_CERT`
//! and `PEER_BENCH_KEY`, add a client certificate). A CA or certificate given with a plain
//! `host:port` endpoint turns TLS on for it too (Go's rule); an `http://` endpoint stays plain.

use evetcd::{Client, Config, GetOptions, LeaseGrantOptions, PutOptions, WatchOptions};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

/// Counts live heap bytes, for the scale workloads' memory per item.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What the command line asked for.
#[derive(Debug, Clone)]
struct Options {
    endpoint: String,
    workload: String,
    in_flight: usize,
    duration: Duration,
    value_size: usize,
    keys: usize,
    events: usize,
    scale: usize,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut o = Options {
            endpoint: "127.0.0.1:2379".into(),
            workload: "all".into(),
            in_flight: 100,
            duration: Duration::from_secs(5),
            value_size: 256,
            keys: 1000,
            events: 50_000,
            scale: 10_000,
            ca: env_path("PEER_BENCH_CA"),
            cert: env_path("PEER_BENCH_CERT"),
            key: env_path("PEER_BENCH_KEY"),
        };
        let mut positional = 0;
        let mut args = args.filter(|a| a != "--bench");
        while let Some(arg) = args.next() {
            if !arg.starts_with("--") {
                match positional {
                    0 => o.endpoint = arg,
                    1 => o.workload = arg,
                    _ => return Err(format!("unexpected argument {arg:?}")),
                }
                positional += 1;
                continue;
            }
            let value = args.next().ok_or(format!("{arg} needs a value"))?;
            let number = || value.parse::<usize>().map_err(|_| format!("{arg}: not a number"));
            match arg.as_str() {
                "--in-flight" => o.in_flight = number()?.max(1),
                "--duration" => o.duration = Duration::from_secs_f64(number()? as f64),
                "--value-size" => o.value_size = number()?,
                "--keys" => o.keys = number()?.max(1),
                "--events" => o.events = number()?.max(1),
                "--scale" => o.scale = number()?.max(1),
                "--ca" => o.ca = Some(value),
                "--cert" => o.cert = Some(value),
                "--key" => o.key = Some(value),
                _ => return Err(format!("unknown option {arg}")),
            }
        }
        if o.cert.is_some() != o.key.is_some() {
            return Err("--cert and --key (PEER_BENCH_CERT, PEER_BENCH_KEY) go together".into());
        }
        Ok(o)
    }

    /// The client's configuration: the endpoint, and TLS when a CA or identity was given.
    fn config(&self) -> Result<Config, String> {
        let config = Config::new().endpoints([self.endpoint.clone()]);
        if self.ca.is_none() && self.cert.is_none() {
            return Ok(config);
        }
        #[cfg(feature = "tls")]
        {
            let mut tls = evetcd::Tls::new();
            if let Some(ca) = &self.ca {
                tls = tls.ca_file(ca);
            }
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                tls = tls.identity_files(cert, key);
            }
            Ok(config.tls(tls))
        }
        #[cfg(not(feature = "tls"))]
        Err("TLS options given, but this build leaves out the `tls` feature".into())
    }
}

/// A file named by an environment variable, unless it is unset or empty.
fn env_path(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Measures the library as its users build it. The benches share the dev-dependencies, and
/// one of them (calloop) turns on `tracing`'s `log` feature: with it and no dispatcher set,
/// every span h2 makes goes through `log`'s checks (a fifth of a call's instructions, as
/// callgrind counts). A program without that feature, or with a subscriber, never pays it;
/// setting the no-op dispatcher here takes the same path as theirs.
fn quiet_tracing() {
    let _ = tracing::dispatcher::set_global_default(tracing::Dispatch::none());
}

/// Prints the workload's JSON line (stdout) and its percentiles (stderr).
fn report(workload: &str, ops: usize, wall: Duration, cpu: Duration, mut lat: Vec<Duration>) {
    lat.sort_unstable();
    let pct = |p: f64| {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1e6
    };
    println!(
        "{{\"client\":\"evetcd\",\"workload\":\"{workload}\",\"ops\":{ops},\"ops_per_s\":{:.0},\"p50_us\":{:.1},\"p99_us\":{:.1},\"cpu_us_per_op\":{:.2}}}",
        ops as f64 / wall.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        cpu.as_secs_f64() * 1e6 / ops as f64,
    );
    if !lat.is_empty() {
        eprintln!(
            "# {workload}: p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} µs",
            pct(0.5),
            pct(0.9),
            pct(0.99),
            pct(0.999)
        );
    }
}

/// Prints "[workload] n/total" at most once a second.
struct Progress {
    name: &'static str,
    last: Cell<Instant>,
}

impl Progress {
    fn new(name: &'static str) -> Progress {
        Progress { name, last: Cell::new(Instant::now()) }
    }

    fn tick(&self, done: usize, total: Option<usize>) {
        if self.last.get().elapsed() >= Duration::from_secs(1) {
            self.last.set(Instant::now());
            match total {
                Some(t) => eprintln!("[{}] {done}/{t}", self.name),
                None => eprintln!("[{}] {done}", self.name),
            }
        }
    }
}

/// Issues one operation (the i-th); `done` must be called from its callback.
type Op = Rc<dyn Fn(&Client, usize, Box<dyn FnOnce()>)>;

fn get_op() -> Op {
    Rc::new(|c, _, done| {
        c.get("bench/k0", GetOptions::new().serializable(true), move |r| {
            r.expect("get");
            done();
        })
    })
}

fn put_op(prefix: &'static str, value: bytes::Bytes, keys: usize) -> Op {
    Rc::new(move |c, i, done| {
        c.put(format!("{prefix}{}", i % keys), value.clone(), PutOptions::new(), move |r| {
            r.expect("put");
            done();
        })
    })
}

/// Runs `op` with `in_flight` operations outstanding until `count` have been issued or
/// `duration` has passed; the latency of each.
fn drive(
    client: &Client,
    op: Op,
    in_flight: usize,
    count: usize,
    duration: Duration,
    progress: Progress,
) -> Vec<Duration> {
    struct Run {
        latencies: Vec<Duration>,
        issued: usize,
        count: usize,
        until: Option<Instant>,
        progress: Progress,
    }
    let run = Rc::new(RefCell::new(Run {
        latencies: Vec::with_capacity(count.min(1 << 20)),
        issued: 0,
        count,
        until: Instant::now().checked_add(duration),
        progress,
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
                {
                    let mut r = run2.borrow_mut();
                    r.latencies.push(start.elapsed());
                    let total = (r.count != usize::MAX).then_some(r.count);
                    r.progress.tick(r.latencies.len(), total);
                }
                issue(&c, &op2, &run2);
            }),
        );
    }
    for _ in 0..in_flight {
        issue(client, &op, &run);
    }
    client.run();
    Rc::try_unwrap(run).ok().expect("no callback left").into_inner().latencies
}

/// Times `f` (wall and CPU) and reports its latencies under `name`.
fn measured(name: &str, f: impl FnOnce() -> Vec<Duration>) {
    let (t0, cpu0) = (Instant::now(), cpu_time());
    let lat = f();
    let (wall, cpu) = (t0.elapsed(), cpu_time() - cpu0);
    report(name, lat.len(), wall, cpu, lat);
}

/// The current revision.
fn head(client: &Client) -> i64 {
    let rev = Rc::new(Cell::new(0));
    let r = rev.clone();
    client.get("bench/k0", GetOptions::new(), move |res| {
        r.set(res.expect("get").header.expect("header").revision)
    });
    client.run();
    rev.get()
}

/// Writes `events` keys under `wreplay/`, then replays them with one prefix watch from the
/// revision after the start: time and CPU from the watch's creation to the last event.
fn watch_replay(client: &Client, o: &Options) {
    let start = head(client);
    let value = bytes::Bytes::from_static(b"v");
    let writes = put_op("wreplay/", value, usize::MAX);
    drive(client, writes, o.in_flight, o.events, Duration::MAX, Progress::new("watch-replay"));
    let (t0, cpu0) = (Instant::now(), cpu_time());
    let got = Rc::new(Cell::new(0usize));
    let (g, want, c) = (got.clone(), o.events, client.clone());
    let progress = Progress::new("watch-replay");
    let handle: Rc<RefCell<Option<evetcd::Watch>>> = Rc::default();
    let h = handle.clone();
    let opts = WatchOptions::new().prefix(true).start_revision(start + 1);
    let watch = client.watch("wreplay/", opts, move |r| {
        g.set(g.get() + r.expect("watch").events.len());
        progress.tick(g.get(), Some(want));
        if g.get() >= want {
            if let Some(w) = h.borrow_mut().take() {
                w.cancel(|_| ());
            }
            c.stop();
        }
    });
    *handle.borrow_mut() = Some(watch);
    client.run();
    let (wall, cpu) = (t0.elapsed(), cpu_time() - cpu0);
    report("watch-replay", got.get(), wall, cpu, Vec::new());
    client.run(); // the cancel's callback
}

/// Heap bytes live now.
fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Resident set size now (Linux `/proc/self/statm`; 0 elsewhere): what the process really
/// holds, the allocator's free lists and fragmentation included.
fn rss() -> isize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: isize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as isize;
    pages * page
}

/// The scale line: heap bytes per item (live allocations, counted by `Counting`) and RSS
/// bytes per item (the growth of the resident set over the same span).
fn report_scale(workload: &str, count: usize, took: Duration, bytes: isize, rss_bytes: isize) {
    let count = count.max(1) as isize;
    println!(
        "{{\"client\":\"evetcd\",\"workload\":\"{workload}\",\"count\":{count},\"create_ms\":{:.1},\"bytes_per_item\":{},\"rss_bytes_per_item\":{}}}",
        took.as_secs_f64() * 1e3,
        bytes / count,
        rss_bytes / count,
    );
}

/// `n` watches on distinct keys, all on the client's one watch stream: time until every
/// one is created, and heap bytes per watch while they live.
fn scale_watch(client: &Client, n: usize) {
    let (before, rss_before) = (live(), rss());
    let t0 = Instant::now();
    let created = Rc::new(Cell::new(0usize));
    let mut watches = Vec::with_capacity(n);
    for i in 0..n {
        let (cr, c) = (created.clone(), client.clone());
        watches.push(client.watch(format!("scale/w{i}"), WatchOptions::new(), move |r| {
            if r.expect("watch").created {
                cr.set(cr.get() + 1);
                if cr.get() == n {
                    c.stop();
                }
            }
        }));
    }
    client.run();
    let (took, bytes, rss_bytes) = (t0.elapsed(), live() - before, rss() - rss_before);
    let handles = vec_bytes::<evetcd::Watch>(n);
    report_scale("scale-watch", created.get(), took, bytes - handles, rss_bytes - handles);
    for w in watches {
        w.cancel(|_| ());
    }
    client.run();
}

/// `n` leases kept alive on the client's one keepalive stream: time from the first
/// keepalive to every lease's first renewal, and heap bytes per keepalive.
fn scale_keepalive(client: &Client, n: usize, in_flight: usize) {
    let ids = Rc::new(RefCell::new(Vec::with_capacity(n)));
    let i2 = ids.clone();
    let grant: Op = Rc::new(move |c, _, done| {
        let ids = i2.clone();
        c.lease_grant(600, LeaseGrantOptions::new(), move |r| {
            ids.borrow_mut().push(r.expect("grant").id);
            done();
        })
    });
    drive(client, grant, in_flight, n, Duration::MAX, Progress::new("scale-keepalive"));
    let ids = ids.take();
    let (before, rss_before) = (live(), rss());
    let t0 = Instant::now();
    let renewed = Rc::new(Cell::new(0usize));
    let mut keepalives = Vec::with_capacity(n);
    for &id in &ids {
        let (rn, c, first) = (renewed.clone(), client.clone(), Cell::new(true));
        keepalives.push(client.lease_keepalive(id, move |r| {
            r.expect("keepalive");
            if first.replace(false) {
                rn.set(rn.get() + 1);
                if rn.get() == n {
                    c.stop();
                }
            }
        }));
    }
    client.run();
    let (took, bytes, rss_bytes) = (t0.elapsed(), live() - before, rss() - rss_before);
    let handles = vec_bytes::<evetcd::Keepalive>(n);
    report_scale("scale-keepalive", renewed.get(), took, bytes - handles, rss_bytes - handles);
    for k in keepalives {
        k.cancel(|_| ());
    }
    let revoke: Op = Rc::new(move |c, i, done| {
        c.lease_revoke(ids[i - 1], move |r| {
            r.expect("revoke");
            done();
        })
    });
    drive(client, revoke, in_flight, n, Duration::MAX, Progress::new("scale-keepalive"));
}

/// The bench's own vector of handles, not counted as the client's memory.
fn vec_bytes<T>(n: usize) -> isize {
    (n * std::mem::size_of::<T>()) as isize
}

fn main() {
    quiet_tracing();
    let o = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}\nusage: workloads [ENDPOINT] [WORKLOAD|all] [--in-flight N] [--duration S] [--value-size B] [--keys N] [--events N] [--scale N] [--ca FILE] [--cert FILE --key FILE]");
            std::process::exit(2);
        }
    };
    let config = o.config().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let client = Client::new(config).expect("config");
    let value = bytes::Bytes::from(vec![b'x'; o.value_size]);
    client.put("bench/k0", value.clone(), PutOptions::new(), |r| {
        r.expect("cannot reach etcd");
    });
    client.run();
    let run = |w: &str| o.workload == "all" || o.workload == w;
    let known = [
        "all",
        "seq-get",
        "seq-put",
        "pipe-get",
        "pipe-put",
        "watch-replay",
        "scale-watch",
        "scale-keepalive",
    ];
    if !known.contains(&o.workload.as_str()) {
        eprintln!("unknown workload {:?}; one of {known:?}", o.workload);
        std::process::exit(2);
    }
    let forever = Duration::MAX;
    if run("seq-get") {
        let p = Progress::new("seq-get");
        measured("seq-get", || drive(&client, get_op(), 1, 20_000, forever, p));
    }
    if run("seq-put") {
        let (op, p) = (put_op("bench/k", value.clone(), o.keys), Progress::new("seq-put"));
        measured("seq-put", || drive(&client, op, 1, 5_000, forever, p));
    }
    if run("pipe-get") {
        let p = Progress::new("pipe-get");
        measured("pipe-get", || drive(&client, get_op(), o.in_flight, usize::MAX, o.duration, p));
    }
    if run("pipe-put") {
        let (op, p) = (put_op("bench/k", value.clone(), o.keys), Progress::new("pipe-put"));
        measured("pipe-put", || drive(&client, op, o.in_flight, usize::MAX, o.duration, p));
    }
    if run("watch-replay") {
        watch_replay(&client, &o);
    }
    if run("scale-watch") {
        scale_watch(&client, o.scale);
    }
    if run("scale-keepalive") {
        scale_keepalive(&client, o.scale, o.in_flight);
    }
}
