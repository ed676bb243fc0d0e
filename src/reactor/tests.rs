//! The reactor with a real `Poll` and loopback listeners, and a lookup the test controls:
//! it blocks until the test releases it, so what the loop does meanwhile is observable.
//!
//! A gated lookup waits at most [`GATE_LIMIT`] for its release: a reactor that looked names
//! up on the loop would block in `flush` until then, and the test fails on the elapsed time
//! instead of hanging.

use super::resolve::{self, LookupFn};
use super::Reactor;
use crate::config::Config;
use crate::core::{Core, Deadline, Event, UnaryOptions};
use crate::error::{Code, EtcdError};
use bytes::Bytes;
use std::cell::RefCell;
use std::io::{self, ErrorKind, Read};
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a gated lookup waits for its release before answering an error.
const GATE_LIMIT: Duration = Duration::from_secs(10);
/// What "at once" means here: far below every timeout involved, far above scheduling noise.
const PROMPTLY: Duration = Duration::from_secs(2);
/// A wait that must be cut short by the waker (a test that needs it fails rather than hangs).
const LONG_WAIT: Duration = Duration::from_secs(30);

/// Lookups that block until released, in the order they start.
struct Gate {
    /// The authority of each lookup, as it starts.
    asked: Receiver<String>,
    /// Releases lookup `i`, which then gives the `i`th answer.
    releases: Vec<Sender<()>>,
}

impl Gate {
    /// A gate for `answers.len()` lookups (an address, or the error's text), and the lookup
    /// function to install.
    fn new(answers: &[Result<SocketAddr, &'static str>]) -> (Gate, Arc<LookupFn>) {
        let (asked_tx, asked) = channel();
        let (releases, waits): (Vec<_>, Vec<_>) = answers
            .iter()
            .map(|answer| {
                let (tx, rx) = channel::<()>();
                (tx, (rx, *answer))
            })
            .unzip();
        let waits = Mutex::new(waits.into_iter());
        let asked_tx = Mutex::new(asked_tx);
        let lookup = move |authority: &str| -> io::Result<Vec<SocketAddr>> {
            let _ = asked_tx.lock().unwrap().send(authority.to_string());
            let (release, answer) =
                waits.lock().unwrap().next().expect("more lookups than planned");
            release.recv_timeout(GATE_LIMIT).map_err(|_| io::Error::other("never released"))?;
            answer.map(|addr| vec![addr]).map_err(io::Error::other)
        };
        (Gate { asked, releases }, Arc::new(lookup))
    }

    /// Waits until the next lookup has started; its authority.
    fn started(&self) -> String {
        self.asked.recv_timeout(GATE_LIMIT).expect("a lookup started")
    }
}

/// A core for `endpoints` with a 10 s call timeout and `connect_timeout`.
fn new_core(endpoints: &[&str], connect_timeout: Duration) -> Core {
    let cfg = Config::new()
        .endpoints(endpoints.iter().copied())
        .timeout(Duration::from_secs(10))
        .connect_timeout(connect_timeout)
        .validate()
        .expect("valid config");
    Core::new(cfg, Instant::now())
}

fn new_reactor(lookup: Arc<LookupFn>) -> Reactor {
    let mut reactor = Reactor::new(None).expect("epoll");
    reactor.resolver.set_lookup(lookup);
    reactor
}

fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().unwrap();
    (l, addr)
}

type Outcome = Rc<RefCell<Option<Result<Bytes, EtcdError>>>>;

/// Starts a unary call (a Range) with `deadline`; its outcome lands in the returned slot.
fn call(core: &mut Core, deadline: Deadline) -> Outcome {
    let slot: Outcome = Rc::default();
    let s = slot.clone();
    let done = Box::new(move |r| *s.borrow_mut() = Some(r));
    let body = Bytes::from_static(&[0, 0, 0, 0, 0]); // an empty RangeRequest, framed
    let opts = UnaryOptions { deadline, retryable: false };
    core.start_unary("/etcdserverpb.KV/Range", body, "get", done, Instant::now(), opts);
    slot
}

/// Runs the core's events as the client does.
fn deliver(core: &mut Core) {
    while let Some(event) = core.poll_event() {
        match event {
            Event::Call(done, result) => done(result),
            Event::Local(f) => f(),
            _ => {}
        }
    }
}

/// Turns as `Client::run` does (wait up to the core's next timeout, run the events, flush)
/// until `done` holds; panics after [`LONG_WAIT`].
fn drive_until(reactor: &mut Reactor, core: &mut Core, mut done: impl FnMut(&Reactor) -> bool) {
    let start = Instant::now();
    while !done(reactor) {
        assert!(start.elapsed() < LONG_WAIT, "gave up waiting");
        let timeout = reactor.next_timeout(core, Instant::now());
        reactor.turn(core, Some(timeout.unwrap_or(LONG_WAIT).min(LONG_WAIT)));
        deliver(core);
        reactor.flush(core);
    }
}

fn error(outcome: &Outcome) -> EtcdError {
    match outcome.borrow_mut().take() {
        Some(Err(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The HTTP/2 client preface: the bytes a connect that proceeded sends first.
fn read_preface(listener: &TcpListener) -> Vec<u8> {
    let (mut conn, _) = listener.accept().expect("accept");
    conn.set_read_timeout(Some(LONG_WAIT)).unwrap();
    let mut preface = vec![0; 24];
    conn.read_exact(&mut preface).expect("the preface");
    preface
}

fn has_no_connection(listener: &TcpListener) -> bool {
    listener.set_nonblocking(true).unwrap();
    matches!(listener.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

fn connected(r: &Reactor) -> bool {
    r.socket.as_ref().is_some_and(|s| s.established)
}

#[test]
fn a_lookup_runs_off_the_loop_and_its_answer_wakes_the_poll() {
    let (server, addr) = listener();
    let (gate, lookup) = Gate::new(&[Ok(addr)]);
    let endpoint = format!("etcd.test:{}", addr.port());
    let mut core = new_core(&[&endpoint], LONG_WAIT);
    let mut reactor = new_reactor(lookup);
    let waiting = call(&mut core, Deadline::Default);
    let quick = call(&mut core, Deadline::After(Duration::from_millis(50)));

    let t = Instant::now();
    reactor.flush(&mut core); // takes the Connect: the lookup starts
    assert!(t.elapsed() < PROMPTLY, "the loop waited for the lookup: {:?}", t.elapsed());
    assert_eq!(gate.started(), endpoint);
    assert!(reactor.resolver.is_pending() && reactor.socket.is_none());

    // While the lookup blocks, the loop turns: a zero wait returns at once, and a timer of the
    // core (the quick call's deadline) fires.
    let t = Instant::now();
    reactor.turn(&mut core, Some(Duration::ZERO));
    assert!(t.elapsed() < PROMPTLY, "{:?}", t.elapsed());
    drive_until(&mut reactor, &mut core, |_| quick.borrow().is_some());
    assert_eq!(error(&quick).code(), Code::DeadlineExceeded);
    assert!(waiting.borrow().is_none() && reactor.resolver.is_pending());
    assert!(reactor.next_timeout(&core, Instant::now()).unwrap() > PROMPTLY, "no spinning");

    // The answer wakes a long wait, and the connect proceeds to the address it gave.
    gate.releases[0].send(()).unwrap();
    let t = Instant::now();
    reactor.turn(&mut core, Some(LONG_WAIT));
    assert!(t.elapsed() < PROMPTLY, "the answer did not wake the poll: {:?}", t.elapsed());
    assert!(reactor.socket.is_some() && !reactor.resolver.is_pending());
    drive_until(&mut reactor, &mut core, connected);
    reactor.flush(&mut core);
    assert_eq!(read_preface(&server), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    assert!(waiting.borrow().is_none(), "still waiting for its answer");
}

#[test]
fn the_connect_timeout_bounds_a_lookup_and_its_late_answer_is_dropped() {
    let (server, addr) = listener();
    let (gate, lookup) = Gate::new(&[Ok(addr)]);
    let endpoint = format!("etcd.test:{}", addr.port());
    let mut core = new_core(&[&endpoint], Duration::from_millis(100));
    let mut reactor = new_reactor(lookup);
    let waiting = call(&mut core, Deadline::Default);
    let t = Instant::now();
    reactor.flush(&mut core);
    assert!(t.elapsed() < PROMPTLY, "the loop waited for the lookup: {:?}", t.elapsed());
    assert_eq!(gate.started(), endpoint);

    drive_until(&mut reactor, &mut core, |_| waiting.borrow().is_some());
    let err = error(&waiting);
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    let timed_out = format!("connect to {endpoint} timed out after 100ms");
    assert!(err.message().contains(&timed_out), "{err}");
    assert!(!reactor.resolver.is_pending(), "the core gave up on the attempt: nothing waits");

    // The answer comes after all: it wakes the loop and is dropped.
    gate.releases[0].send(()).unwrap();
    let t = Instant::now();
    reactor.turn(&mut core, Some(LONG_WAIT));
    assert!(t.elapsed() < PROMPTLY, "the answer did not wake the poll: {:?}", t.elapsed());
    reactor.flush(&mut core);
    assert!(reactor.socket.is_none(), "connected for an attempt the core gave up");
    assert!(has_no_connection(&server));
}

#[test]
fn the_answer_of_an_abandoned_lookup_never_serves_the_next_attempt() {
    let (stale, stale_addr) = listener();
    let (fresh, fresh_addr) = listener();
    let (gate, lookup) = Gate::new(&[Ok(stale_addr), Ok(fresh_addr)]);
    let mut core = new_core(&["etcd.test:2379"], LONG_WAIT);
    let mut reactor = new_reactor(lookup);

    // Attempt 1 is abandoned (the client closes) while its lookup runs; attempt 2 starts its
    // own lookup of the same name.
    call(&mut core, Deadline::Default);
    let t = Instant::now();
    reactor.flush(&mut core);
    assert!(t.elapsed() < PROMPTLY, "the loop waited for the lookup: {:?}", t.elapsed());
    gate.started();
    let _ = core.close("closed by the test");
    reactor.flush(&mut core);
    let waiting = call(&mut core, Deadline::Default);
    reactor.flush(&mut core);
    gate.started();

    // Lookup 1 answers first: attempt 2 goes on waiting for its own.
    gate.releases[0].send(()).unwrap();
    let t = Instant::now();
    reactor.turn(&mut core, Some(LONG_WAIT));
    assert!(t.elapsed() < PROMPTLY, "the answer did not wake the poll: {:?}", t.elapsed());
    reactor.flush(&mut core);
    assert!(reactor.socket.is_none() && reactor.resolver.is_pending(), "a stale answer used");

    gate.releases[1].send(()).unwrap();
    drive_until(&mut reactor, &mut core, connected);
    reactor.flush(&mut core);
    assert_eq!(read_preface(&fresh), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    assert!(has_no_connection(&stale));
    assert!(waiting.borrow().is_none());
}

#[test]
fn a_name_that_does_not_resolve_fails_its_endpoint_and_the_next_is_tried() {
    let (server, addr) = listener();
    let (gate, lookup) = Gate::new(&[Err("no such host")]);
    let mut core = new_core(&["nosuch.test:2379", &addr.to_string()], LONG_WAIT);
    let mut reactor = new_reactor(lookup);
    let waiting = call(&mut core, Deadline::Default);
    let t = Instant::now();
    reactor.flush(&mut core);
    assert!(t.elapsed() < PROMPTLY, "the loop waited for the lookup: {:?}", t.elapsed());
    assert_eq!(gate.started(), "nosuch.test:2379");

    // The failure fails the endpoint as a refused connect does: on to the next one.
    gate.releases[0].send(()).unwrap();
    drive_until(&mut reactor, &mut core, connected);
    reactor.flush(&mut core);
    assert_eq!(read_preface(&server), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    assert!(waiting.borrow().is_none());

    // Alone, the endpoint fails the call, naming the endpoint and the resolver's reason.
    let (gate, lookup) = Gate::new(&[Err("no such host")]);
    let mut core = new_core(&["nosuch.test:2379"], LONG_WAIT);
    let mut reactor = new_reactor(lookup);
    let waiting = call(&mut core, Deadline::Default);
    reactor.flush(&mut core);
    gate.releases[0].send(()).unwrap();
    drive_until(&mut reactor, &mut core, |_| waiting.borrow().is_some());
    let err = error(&waiting);
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("resolve nosuch.test:2379: no such host"), "{err}");
}

#[test]
fn an_ip_literal_is_connected_to_at_once_without_a_lookup() {
    assert_eq!(resolve::literal("[::1]:2379"), Some("[::1]:2379".parse().unwrap()));
    assert_eq!(resolve::literal("localhost:2379"), None);
    let (server, addr) = listener();
    let (gate, lookup) = Gate::new(&[]);
    let mut core = new_core(&[&addr.to_string()], LONG_WAIT);
    let mut reactor = new_reactor(lookup);
    call(&mut core, Deadline::Default);
    reactor.flush(&mut core);
    assert!(reactor.socket.is_some(), "connecting from the flush that took the Connect");
    assert!(!reactor.resolver.is_pending());
    drive_until(&mut reactor, &mut core, connected);
    reactor.flush(&mut core);
    assert_eq!(read_preface(&server), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    assert!(gate.asked.try_recv().is_err(), "no lookup");
}

#[test]
fn the_waker_wakes_a_waiting_turn_from_another_thread() {
    let mut core = new_core(&["127.0.0.1:2379"], LONG_WAIT);
    let mut reactor = new_reactor(Gate::new(&[]).1);
    let waker = reactor.waker();
    let t = Instant::now();
    let thread = std::thread::spawn(move || waker.wake().unwrap());
    reactor.turn(&mut core, Some(LONG_WAIT));
    assert!(t.elapsed() < PROMPTLY, "{:?}", t.elapsed());
    thread.join().unwrap();
}
