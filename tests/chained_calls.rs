//! Calls started from inside other calls' callbacks, back to back, under every way of driving
//! a client: `run()`, a level-triggered poll(2) on `as_raw_fd()` then `process()`, and an
//! edge-triggered `mio::Poll` over several clients' fds (as examples/benchmark drives them).
//! A lost wake-up (a response read, or sitting unread, that no turn processes while the fd
//! stays quiet and `next_timeout()` says to wait) shows as a stall: every variant fails if no
//! callback ran for [`STALL`], without one more `process()` that could hide it.

mod support;

use evetcd::{Client, GetOptions, PutOptions};
use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::client::client;
use support::Etcd;

/// No callback for this long while calls are pending: a hang.
const STALL: Duration = Duration::from_secs(5);

/// Value sizes of the mixed workload: empty, small, around and above the reactor's 64 KiB
/// read buffer (responses that take several reads), and a few frames' worth.
const SIZES: [usize; 7] = [0, 7, 1000, 16 << 10, 64 << 10, 70 << 10, 200 << 10];

#[derive(Clone, Copy, Debug)]
enum Kind {
    Put,
    Get,
    /// Put a value of one of [`SIZES`], then get it back (and check its length).
    Mixed,
}

/// The calls of one client: `chains` chains of `per_chain` calls, each started from the
/// previous one's callback.
struct Chains {
    client: Client,
    prefix: String,
    kind: Kind,
    per_chain: u32,
    done: Vec<Cell<u32>>,
    errors: RefCell<Vec<String>>,
    /// Callbacks run, for the watchdog of `run()` (another thread).
    progress: Arc<AtomicU64>,
}

impl Chains {
    fn start(client: &Client, test: &str, kind: Kind, chains: usize, per_chain: u32) -> Rc<Chains> {
        let st = Rc::new(Chains {
            client: client.clone(),
            prefix: support::unique_prefix(test),
            kind,
            per_chain,
            done: (0..chains).map(|_| Cell::new(0)).collect(),
            errors: RefCell::default(),
            progress: Arc::default(),
        });
        for chain in 0..chains {
            step(&st, chain, 0);
        }
        st
    }

    fn total(&self) -> u64 {
        self.done.iter().map(|d| u64::from(d.get())).sum()
    }

    fn finished(&self) -> bool {
        self.done.iter().all(|d| d.get() == self.per_chain)
    }

    fn check(&self) {
        assert!(self.finished(), "unfinished: {}", self.describe());
        let errors = self.errors.borrow();
        assert!(errors.is_empty(), "{} calls failed, first: {}", errors.len(), errors[0]);
    }

    fn describe(&self) -> String {
        let done: Vec<u32> = self.done.iter().map(Cell::get).collect();
        let info = self.client.info();
        format!(
            "{:?} chains done {done:?} of {} each; next_timeout {:?}, idle {}, {} pending calls, \
             link {:?}",
            self.kind,
            self.per_chain,
            self.client.next_timeout(),
            self.client.is_idle(),
            info.pending_calls,
            info.state,
        )
    }
}

/// Starts call `i` of `chain`; its callback starts call `i + 1`.
fn step(st: &Rc<Chains>, chain: usize, i: u32) {
    if i == st.per_chain {
        return;
    }
    let key = format!("{}{chain}", st.prefix);
    let size = SIZES[(i as usize / 2 + chain) % SIZES.len()];
    let next = {
        let st = st.clone();
        move |r: Result<(), String>| {
            if let Err(e) = r {
                st.errors.borrow_mut().push(format!("chain {chain} call {i}: {e}"));
            }
            st.done[chain].set(i + 1);
            st.progress.fetch_add(1, Ordering::Relaxed);
            step(&st, chain, i + 1);
        }
    };
    let c = &st.client;
    let put = |value: Vec<u8>, next: Box<dyn FnOnce(Result<(), String>)>| {
        c.put(key.clone(), value, PutOptions::new(), move |r| {
            next(r.map(drop).map_err(|e| e.to_string()))
        })
    };
    match (st.kind, i % 2) {
        (Kind::Put, _) => put(vec![b'p'; 8], Box::new(next)),
        (Kind::Get, _) => c.get(key, GetOptions::new(), move |r| {
            next(r.map(drop).map_err(|e| e.to_string()));
        }),
        (Kind::Mixed, 0) => put(vec![b'm'; size], Box::new(next)),
        (Kind::Mixed, _) => c.get(key, GetOptions::new(), move |r| {
            let r = r.map_err(|e| e.to_string()).and_then(|got| match got.kvs.first() {
                Some(kv) if kv.value.len() == size => Ok(()),
                Some(kv) => Err(format!("value of {} bytes, not {size}", kv.value.len())),
                None => Err("no value".into()),
            });
            next(r);
        }),
    }
}

/// Fails the test (aborting the process: the loop thread is stuck in `run()`) when the
/// callbacks counted by `progress` stop for [`STALL`] before `finished` is set.
fn watchdog(what: String, progress: Arc<AtomicU64>, finished: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let (mut seen, mut since) = (progress.load(Ordering::Relaxed), Instant::now());
        while !finished.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
            let now = progress.load(Ordering::Relaxed);
            if now != seen {
                (seen, since) = (now, Instant::now());
            } else if since.elapsed() > STALL {
                eprintln!("HANG in run(): {what}: no callback for {STALL:?} after {seen} calls");
                std::process::abort();
            }
        }
    });
}

/// `run()` until every chain is done, under a watchdog.
fn drive_run(st: &Chains) {
    let finished = Arc::new(AtomicBool::new(false));
    watchdog(format!("{:?}", st.kind), st.progress.clone(), finished.clone());
    st.client.run();
    finished.store(true, Ordering::Relaxed);
    st.check();
}

/// How a foreign loop waits for the clients' fds.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// poll(2) on every fd (level-triggered).
    Level,
    /// One `mio::Poll` with every fd registered edge-triggered.
    Edge,
}

/// Waits as a foreign loop does (up to the least `next_timeout()`), then `process()`es
/// the clients (every one after a level-triggered wait; after an edge-triggered one, those
/// whose fd fired or whose `next_timeout()` is zero), until every chain is done. Fails when
/// no callback ran for [`STALL`] (the wait is cut short only to notice that, and then
/// nothing more is processed).
fn drive_foreign(all: &[Rc<Chains>], wait: Wait) {
    let mut poll = mio::Poll::new().expect("mio poll");
    let mut events = mio::Events::with_capacity(16);
    if let Wait::Edge = wait {
        for (i, st) in all.iter().enumerate() {
            let fd = st.client.as_raw_fd();
            let (source, token) = (&mut mio::unix::SourceFd(&fd), mio::Token(i));
            poll.registry().register(source, token, mio::Interest::READABLE).expect("register");
        }
    }
    let total = || all.iter().map(|st| st.total()).sum::<u64>();
    let (mut seen, mut since) = (total(), Instant::now());
    while !all.iter().all(|st| st.finished()) {
        let left = STALL.saturating_sub(since.elapsed());
        let timeout = all.iter().filter_map(|st| st.client.next_timeout()).min();
        let timeout = timeout.map_or(left, |t| t.min(left));
        match wait {
            Wait::Level => {
                let mut fds: Vec<libc::pollfd> = all
                    .iter()
                    .map(|st| libc::pollfd {
                        fd: st.client.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                let ms = timeout.as_nanos().div_ceil(1_000_000) as i32;
                // SAFETY: `fds` is a valid array of `fds.len()` pollfds for the whole call.
                let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
                assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
            }
            Wait::Edge => match poll.poll(&mut events, Some(timeout)) {
                Err(e) if e.kind() != std::io::ErrorKind::Interrupted => panic!("poll: {e}"),
                _ => {}
            },
        }
        let now = total();
        if now != seen {
            (seen, since) = (now, Instant::now());
        } else if since.elapsed() >= STALL {
            let states: Vec<String> = all.iter().map(|st| st.describe()).collect();
            panic!("HANG ({wait:?} wait): no callback for {STALL:?}:\n{}", states.join("\n"));
        }
        // As a careful foreign loop does (examples/benchmark's): only the clients whose fd
        // fired, or whose timeout is due, are processed; the edge-triggered wait must not
        // lean on another client's wake-up to turn this one.
        let mut fired = vec![matches!(wait, Wait::Level); all.len()];
        for ev in &events {
            fired[ev.token().0] = true;
        }
        for (st, fired) in all.iter().zip(fired) {
            if fired || st.client.next_timeout() == Some(Duration::ZERO) {
                st.client.process();
            }
        }
        let now = total();
        if now != seen {
            (seen, since) = (now, Instant::now());
        }
    }
    for st in all {
        st.check();
    }
}

/// `clients` clients of `etcd`, each with `chains` chains of `per_chain` calls of `kind`
/// (`EVETCD_CHAIN_SCALE=n` makes every chain `n` times longer: a soak).
fn start(
    etcd: &Etcd,
    test: &str,
    kind: Kind,
    clients: usize,
    chains: usize,
    per_chain: u32,
) -> Vec<Rc<Chains>> {
    let scale = std::env::var("EVETCD_CHAIN_SCALE").ok().and_then(|s| s.parse().ok());
    let per_chain = per_chain * scale.unwrap_or(1);
    (0..clients)
        .map(|_| Chains::start(&client(&etcd.endpoint()), test, kind, chains, per_chain))
        .collect()
}

#[test]
fn chained_puts_and_gets_under_run() {
    let etcd = Etcd::start();
    for kind in [Kind::Put, Kind::Get, Kind::Mixed] {
        let st = start(&etcd, "chain-run", kind, 1, 1, 500).remove(0);
        drive_run(&st);
        // Pipelined: several chains on one connection.
        let st = start(&etcd, "chain-run-pipelined", kind, 1, 10, 100).remove(0);
        drive_run(&st);
    }
}

#[test]
fn chained_calls_under_a_level_triggered_foreign_loop() {
    let etcd = Etcd::start();
    for kind in [Kind::Put, Kind::Get, Kind::Mixed] {
        drive_foreign(&start(&etcd, "chain-level", kind, 1, 1, 500), Wait::Level);
        drive_foreign(&start(&etcd, "chain-level-multi", kind, 3, 10, 30), Wait::Level);
    }
}

#[test]
fn chained_calls_of_several_clients_under_one_edge_triggered_poll() {
    let etcd = Etcd::start();
    for kind in [Kind::Put, Kind::Get, Kind::Mixed] {
        drive_foreign(&start(&etcd, "chain-edge", kind, 1, 1, 500), Wait::Edge);
        drive_foreign(&start(&etcd, "chain-edge-multi", kind, 4, 10, 30), Wait::Edge);
    }
}

/// The colleague's probe, many times: a fresh client whose first put, sent while it
/// connects, chains a second and a third from its callbacks (the second call is the first
/// on an established link, started while the server's SETTINGS, WINDOW_UPDATE and PING of
/// the first response are being answered).
#[test]
fn short_chains_on_fresh_connections() {
    let etcd = Etcd::start();
    for round in 0..45 {
        let kind = [Kind::Put, Kind::Get, Kind::Mixed][round % 3];
        let st = start(&etcd, "chain-fresh", kind, 1, 1, 3);
        if round % 2 == 0 {
            drive_run(&st[0]);
        } else {
            drive_foreign(&st, Wait::Edge);
        }
    }
}
