//! Client-side helpers for the end-to-end tests.

use evetcd::{Client, Config, EtcdError};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// A client for `endpoint` with a deadline short enough for tests.
pub fn client(endpoint: &str) -> Client {
    Client::new(
        Config::new()
            .endpoints([endpoint])
            .timeout(Duration::from_secs(10)),
    )
    .expect("valid config")
}

/// A callback boxed for [`block`].
pub type Cb<T> = Box<dyn FnOnce(Result<T, EtcdError>)>;

/// Starts one operation with `start`, runs the client until nothing is pending, and returns
/// the operation's result. Panics if the callback did not run exactly once.
pub fn block<T: 'static>(client: &Client, start: impl FnOnce(Cb<T>)) -> Result<T, EtcdError> {
    let slot: Rc<RefCell<Option<Result<T, EtcdError>>>> = Rc::new(RefCell::new(None));
    let s = slot.clone();
    start(Box::new(move |r| {
        assert!(s.borrow_mut().replace(r).is_none(), "callback ran twice");
    }));
    assert!(
        slot.borrow().is_none(),
        "callback ran inside the call that registered it"
    );
    client.run();
    let r = slot.borrow_mut().take();
    r.expect("run() returned before the callback ran")
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
            s.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let remote_port = f[2]
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok());
            f[3] == "01" && remote_port == Some(port) && ours.contains(f[9])
        })
        .count()
}
