//! Every connection on one thread: one `mio::Poll` watches each client's fd (the client's own
//! epoll fd, readable when it has news), the wait is the earliest of the clients'
//! `next_timeout()` and the benchmark's own next start, and each client whose fd fired or
//! whose timeout is due gets one `process()`. The request engine (closed or open loop) sits
//! on top.

use crate::report::Recorder;
use evetcd::Client;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The clients (one connection each) and the poll that drives them.
pub struct Conns {
    pub clients: Vec<Client>,
    poll: Poll,
    events: Events,
}

impl Conns {
    pub fn new(clients: Vec<Client>) -> io::Result<Conns> {
        let poll = Poll::new()?;
        for (i, c) in clients.iter().enumerate() {
            // mio is edge-triggered: fine, since `process()` drains the client's epoll.
            poll.registry().register(
                &mut SourceFd(&c.as_raw_fd()),
                Token(i),
                Interest::READABLE,
            )?;
        }
        let events = Events::with_capacity(clients.len().clamp(16, 1024));
        Ok(Conns { clients, poll, events })
    }

    /// Turns the clients until `step` says done. `step(now)` is called before every wait: it
    /// starts whatever is due and returns `None` when finished, else when it next wants to
    /// run (`Some(None)`: only when a client has news).
    pub fn drive(&mut self, mut step: impl FnMut(Instant) -> Option<Option<Instant>>) {
        let mut fired = vec![false; self.clients.len()];
        loop {
            let now = Instant::now();
            let Some(wake) = step(now) else { return };
            let mut timeout = self.clients.iter().filter_map(Client::next_timeout).min();
            if let Some(at) = wake {
                let until = at.saturating_duration_since(now);
                timeout = Some(timeout.map_or(until, |t| t.min(until)));
            }
            // mio rounds a timeout up to whole milliseconds: sleep the whole milliseconds
            // only, and spin through the last one, so that an open-loop start is not late.
            let timeout =
                timeout.map(|t| Duration::from_millis(t.as_millis().min(u64::MAX as u128) as u64));
            if let Err(e) = self.poll.poll(&mut self.events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    panic!("poll: {e}");
                }
            }
            for ev in &self.events {
                fired[ev.token().0] = true;
            }
            for (i, c) in self.clients.iter().enumerate() {
                if std::mem::take(&mut fired[i]) || c.next_timeout() == Some(Duration::ZERO) {
                    c.process();
                }
            }
        }
    }

    /// Ends every client's work (pending callbacks get `CANCELLED`), which also breaks the
    /// cycles of callbacks that hold the benchmark's state.
    pub fn close(&self) {
        for c in &self.clients {
            c.close();
        }
    }
}

/// What a request reports: `Err` carries the error's text, counted by message.
pub type Done = Box<dyn FnOnce(Result<(), String>)>;

/// One kind of request: `start` sends request `index` for `requester` on `client` and calls
/// `done` once with its outcome.
pub trait Requests {
    fn start(&self, client: &Client, requester: usize, index: usize, done: Done);
}

/// The request engine.
///
/// - Closed loop (no rate): each requester sends its next request as soon as its previous
///   one is answered; latency runs from that send.
/// - Open loop (`rate` per second): request `i` is due at `t0 + i / rate`, and its latency
///   runs from then, not from when a requester was free to send it, so a slow server's
///   queueing shows in the latencies (no coordinated omission).
struct Engine {
    clients: Vec<Client>,
    work: Rc<dyn Requests>,
    total: usize,
    rate: u64,
    t0: Instant,
    next: Cell<usize>,
    finished: Cell<usize>,
    last_end: Cell<Instant>,
    /// Requesters with nothing in flight, oldest first (so the load rotates over the
    /// connections even when one requester would do).
    idle: RefCell<VecDeque<usize>>,
    recorder: RefCell<Recorder>,
}

impl Engine {
    fn due(&self, i: usize) -> Instant {
        self.t0 + Duration::from_secs_f64(i as f64 / self.rate as f64)
    }

    /// Starts every request that is due while a requester is free.
    fn dispatch(self: &Rc<Self>, now: Instant) {
        loop {
            let i = self.next.get();
            if i >= self.total || (self.rate > 0 && self.due(i) > now) {
                return;
            }
            let Some(r) = self.idle.borrow_mut().pop_front() else { return };
            self.next.set(i + 1);
            let start = if self.rate > 0 { self.due(i) } else { Instant::now() };
            let me = self.clone();
            let client = &self.clients[r % self.clients.len()];
            self.work.start(client, r, i, Box::new(move |res| me.finish(r, start, res)));
        }
    }

    fn finish(self: &Rc<Self>, requester: usize, start: Instant, res: Result<(), String>) {
        let end = Instant::now();
        match res {
            Ok(()) => self.recorder.borrow_mut().ok(end.saturating_duration_since(start)),
            Err(e) => self.recorder.borrow_mut().err(e),
        }
        self.finished.set(self.finished.get() + 1);
        self.last_end.set(end);
        // The next request starts from the loop, not from here: see `run_requests`.
        self.idle.borrow_mut().push_back(requester);
    }
}

/// Runs `total` requests of `work` from `requesters` requesters spread round-robin over the
/// connections; returns the results and the run's wall time (first due start to last answer).
///
/// Requests start from the loop (`step`), right after the `process()` that ran the previous
/// one's callback, not from inside the callback: one place decides what starts when, for the
/// open-loop schedule and the closed-loop requesters alike. (Calls chained from callbacks
/// work too: tests/chained_calls.rs.) The cost is one more zero-timeout `poll` per batch of
/// answers.
pub fn run_requests(
    conns: &mut Conns,
    requesters: usize,
    total: usize,
    rate: u64,
    work: Rc<dyn Requests>,
) -> (Recorder, Duration) {
    let t0 = Instant::now();
    let engine = Rc::new(Engine {
        clients: conns.clients.clone(),
        work,
        total,
        rate,
        t0,
        next: Cell::new(0),
        finished: Cell::new(0),
        last_end: Cell::new(t0),
        idle: RefCell::new((0..requesters).collect()),
        recorder: RefCell::new(Recorder::new()),
    });
    conns.drive(|now| {
        engine.dispatch(now);
        if engine.finished.get() >= total {
            return None;
        }
        let waiting =
            engine.rate > 0 && engine.next.get() < total && !engine.idle.borrow().is_empty();
        Some(waiting.then(|| engine.due(engine.next.get())))
    });
    let wall = engine.last_end.get().saturating_duration_since(t0);
    let recorder = std::mem::replace(&mut *engine.recorder.borrow_mut(), Recorder::new());
    (recorder, wall)
}
