//! Endpoints given by host name, against a real etcd: names are looked up on a helper thread
//! that wakes the client's loop (see `src/reactor/resolve.rs`); a name that does not resolve
//! fails its endpoint at once, as a refused connect does, and the next endpoint is tried.
//!
//! That the loop keeps turning while a lookup blocks is shown by the reactor's unit tests,
//! with a lookup the test holds; a real lookup is too quick to catch in the act. These tests
//! show that the threaded path ends where it must: at the server, or at a clear error.

mod support;

use evetcd::{Client, Code, Config, GetOptions, PutOptions};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use support::client::{block, ok};
use support::{unique_prefix, Etcd};

/// A name that never resolves (RFC 6761 reserves `.invalid`).
const NO_SUCH_HOST: &str = "nosuch.invalid:2379";

fn client(endpoints: &[&str]) -> Client {
    let config =
        Config::new().endpoints(endpoints.iter().copied()).timeout(Duration::from_secs(10));
    Client::new(config).expect("valid config")
}

#[test]
fn a_name_that_does_not_resolve_fails_over_to_the_next_endpoint() {
    let etcd = Etcd::start();
    let c = client(&[NO_SUCH_HOST, &etcd.endpoint()]);
    let key = format!("{}k", unique_prefix("resolve-failover"));
    ok(&c, |cb| c.put(key.clone(), "v", PutOptions::new(), cb));
    let got = ok(&c, |cb| c.get(key.clone(), GetOptions::new(), cb));
    assert_eq!(got.kvs[0].value, "v");
}

#[test]
fn a_name_that_does_not_resolve_alone_fails_with_unavailable() {
    let c = client(&[NO_SUCH_HOST]);
    let t = Instant::now();
    let err = block(&c, |cb| c.put("k", "v", PutOptions::new(), cb)).unwrap_err();
    assert_eq!((err.code(), err.operation()), (Code::Unavailable, "put"), "{err}");
    assert!(err.message().contains("resolve nosuch.invalid:2379: "), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5), "not at once: {:?}", t.elapsed());
}

#[test]
fn localhost_resolves_and_connects() {
    let etcd = Etcd::start();
    let c = client(&[&format!("localhost:{}", etcd.client_port())]);
    let key = format!("{}k", unique_prefix("resolve-localhost"));
    ok(&c, |cb| c.put(key.clone(), "v", PutOptions::new(), cb));
    let got = ok(&c, |cb| c.get(key.clone(), GetOptions::new(), cb));
    assert_eq!(got.kvs[0].value, "v");
}

/// A foreign loop that sleeps exactly as long as `next_timeout()` says, on the client's fd
/// only: the lookup's answer must make the fd readable (else the loop sleeps through the
/// long connect timeout and the call deadline), and the loop must not spin meanwhile.
#[test]
fn a_foreign_loop_sleeps_until_the_lookup_wakes_its_fd() {
    let etcd = Etcd::start();
    let config = Config::new()
        .endpoints([format!("localhost:{}", etcd.client_port())])
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(60));
    let c = Client::new(config).expect("valid config");
    let key = format!("{}k", unique_prefix("resolve-foreign-loop"));
    let done = std::rc::Rc::new(std::cell::Cell::new(false));
    let d = done.clone();
    c.put(key, "v", PutOptions::new(), move |r| {
        r.expect("put");
        d.set(true);
    });
    // Far below the 60 s timeouts, far above what a loopback lookup and connect take.
    let limit = Instant::now() + Duration::from_secs(20);
    let mut turns = 0;
    while !done.get() {
        turns += 1;
        assert!(turns < 1000, "the loop spins");
        let left =
            limit.checked_duration_since(Instant::now()).expect("the fd never woke the loop");
        let timeout = c.next_timeout().expect("a call is pending").min(left);
        let timeout_ms = timeout.as_millis() as i32;
        let mut fd = libc::pollfd { fd: c.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: `fd` is one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut fd, 1, timeout_ms) };
        assert!(n >= 0, "poll failed: {}", std::io::Error::last_os_error());
        c.process();
    }
}
