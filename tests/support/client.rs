//! Client-side helpers for the end-to-end tests.

use evetcd::{Client, Config, EtcdError};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// A client for `endpoint` with a deadline short enough for tests.
pub fn client(endpoint: &str) -> Client {
    Client::new(Config::new().endpoints([endpoint]).timeout(Duration::from_secs(10)))
        .expect("valid config")
}

/// A callback boxed for [`block`].
pub type Cb<T> = Box<dyn FnOnce(Result<T, EtcdError>)>;

/// Starts one operation with `start`, runs the client until nothing is pending, and returns
/// the operation's result. Panics if the callback did not run exactly once.
pub fn block<T: 'static>(client: &Client, start: impl FnOnce(Cb<T>)) -> Result<T, EtcdError> {
    let slot = started(start);
    client.run();
    let r = slot.borrow_mut().take();
    r.expect("run() returned before the callback ran")
}

/// [`block`] for a client that live streams keep busy, so that `run()` would not return:
/// drives it until the operation's callback ran, and panics after 15 s instead of hanging.
pub fn block_busy<T: 'static>(client: &Client, start: impl FnOnce(Cb<T>)) -> Result<T, EtcdError> {
    let slot = started(start);
    drive_until(&[client], Duration::from_secs(15), || slot.borrow().is_some());
    let r = slot.borrow_mut().take();
    r.expect("checked by drive_until")
}

/// Starts one operation with `start`; its result lands in the returned slot.
fn started<T: 'static>(start: impl FnOnce(Cb<T>)) -> Rc<RefCell<Option<Result<T, EtcdError>>>> {
    let slot: Rc<RefCell<Option<Result<T, EtcdError>>>> = Rc::new(RefCell::new(None));
    let s = slot.clone();
    start(Box::new(move |r| {
        assert!(s.borrow_mut().replace(r).is_none(), "callback ran twice");
    }));
    assert!(slot.borrow().is_none(), "callback ran inside the call that registered it");
    slot
}

/// [`block`] for an operation that must succeed.
pub fn ok<T: 'static>(client: &Client, start: impl FnOnce(Cb<T>)) -> T {
    block(client, start).unwrap_or_else(|e| panic!("operation failed: {e}"))
}

/// How many established TCP connections this process has to loopback `port` (read from
/// `/proc`: our socket inodes, matched against the kernel's TCP table).
pub fn connections_to(port: u16) -> usize {
    let ours: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let s = l.to_string_lossy().into_owned();
            s.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string)
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let remote_port = f[2].rsplit(':').next().and_then(|h| u16::from_str_radix(h, 16).ok());
            f[3] == "01" && remote_port == Some(port) && ours.contains(f[9])
        })
        .count()
}

/// Drives every client in `clients` from one poll(2) loop (all their fds, the earliest
/// `next_timeout`, capped at 100 ms, then `process()` on each) until `done()`, which is
/// checked before every turn. Panics after `limit` instead of hanging, so a response that
/// never comes fails the test. For tests in which several clients wait on each other (a lock
/// holder and a waiter) and so cannot each run their own `run()`.
pub fn drive_until(clients: &[&Client], limit: Duration, mut done: impl FnMut() -> bool) {
    use std::os::fd::AsRawFd;
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "still waiting after {limit:?} (a callback never got what it waited for)"
        );
        let timeout_ms = clients
            .iter()
            .filter_map(|c| c.next_timeout())
            .min()
            .map_or(100, |t| t.as_millis().min(100) as i32);
        let mut fds: Vec<libc::pollfd> = clients
            .iter()
            .map(|c| libc::pollfd { fd: c.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        assert!(n >= 0, "poll failed: {}", std::io::Error::last_os_error());
        for c in clients {
            c.process();
        }
    }
}

/// [`drive_until`] every client is idle (no call pending, no live watch, keepalive or
/// observer), which is when `run()` returns; then checks that `run()` agrees.
pub fn drive_all(clients: &[&Client], limit: Duration) {
    drive_all_explained(clients, limit, String::new);
}

/// [`drive_all`], with `explain()` (what the test saw so far) in the panic message when
/// `limit` passes.
pub fn drive_all_explained(clients: &[&Client], limit: Duration, explain: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + limit;
    // The inner limit is a backstop: the check below fails first, with the explanation.
    drive_until(clients, limit + Duration::from_secs(1), || {
        assert!(
            std::time::Instant::now() < deadline,
            "still waiting after {limit:?} (a callback never got what it waited for) {}",
            explain()
        );
        clients.iter().all(|c| c.is_idle())
    });
    for c in clients {
        c.run(); // nothing pending: returns at once
    }
}

/// A handle a callback needs (to cancel its own call or stream). The call that returns the
/// handle never runs the callback, so the slot is filled before the callback can look.
pub struct Slot<T>(Rc<RefCell<Option<T>>>);

impl<T: Clone> Slot<T> {
    pub fn new() -> Self {
        Slot(Rc::new(RefCell::new(None)))
    }

    pub fn set(&self, value: T) {
        *self.0.borrow_mut() = Some(value);
    }

    pub fn get(&self) -> T {
        self.0.borrow().clone().expect("handle set before any callback")
    }
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        Slot(self.0.clone())
    }
}

/// A result slot filled by a callback; panics if it is filled twice.
pub struct Got<T>(pub Rc<RefCell<Option<T>>>);

impl<T> Clone for Got<T> {
    fn clone(&self) -> Self {
        Got(self.0.clone())
    }
}

impl<T: 'static> Got<T> {
    pub fn new() -> Self {
        Got(Rc::new(RefCell::new(None)))
    }
    pub fn cb(&self) -> impl FnOnce(T) + 'static {
        let s = self.0.clone();
        move |v| assert!(s.borrow_mut().replace(v).is_none(), "a callback ran twice")
    }
    pub fn is_set(&self) -> bool {
        self.0.borrow().is_some()
    }
    pub fn take(&self) -> T {
        self.0.borrow_mut().take().expect("the callback ran")
    }
}
