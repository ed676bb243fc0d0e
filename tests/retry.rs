//! Retries of unary calls (`Config::retry`), per-call deadlines and cancel tokens
//! (`Client::with(CallOptions)`), against real etcd. A TCP proxy in front of etcd holds a
//! request (blackhole) and then resets the connection: the request reached nobody or
//! somebody, the client cannot tell, so only a call that may be applied twice is retried.

mod support;

use evetcd::{
    CallOptions, Cancel, Client, Code, Config, GetOptions, LeaseGrantOptions, PutOptions,
};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::client::{block, drive_until, ok};
use support::proxy::{Mode, Proxy};
use support::{unique_prefix, Etcd};

fn addr(endpoint: &str) -> SocketAddr {
    endpoint.parse().unwrap_or_else(|e| panic!("{endpoint}: {e}"))
}

/// A client for [proxy, etcd]: the proxy first.
fn client(proxy: &Proxy, etcd: &Etcd, cfg: impl FnOnce(Config) -> Config) -> Client {
    let config = Config::new()
        .endpoints([proxy.endpoint(), etcd.endpoint()])
        .timeout(Duration::from_secs(10));
    Client::new(cfg(config)).expect("valid config")
}

type Slot<T> = Rc<RefCell<Vec<Result<T, evetcd::EtcdError>>>>;

/// Starts an operation through the proxy while it holds every byte, waits until the
/// request reached the proxy's connection, then resets it: the call failed after it was
/// sent. Returns what the callback received.
fn through_a_reset<T: 'static>(
    c: &Client,
    proxy: &Proxy,
    start: impl FnOnce(Box<dyn FnOnce(Result<T, evetcd::EtcdError>)>),
) -> Vec<Result<T, evetcd::EtcdError>> {
    let slot: Slot<T> = Rc::default();
    let s = slot.clone();
    proxy.set_mode(Mode::Blackhole);
    start(Box::new(move |r| s.borrow_mut().push(r)));
    drive_until(&[c], Duration::from_secs(10), || proxy.open() == 1);
    // Let the request's bytes reach the proxy (they are written in the turn that connects).
    let until = Instant::now() + Duration::from_millis(200);
    drive_until(&[c], Duration::from_secs(10), || Instant::now() >= until);
    assert!(slot.borrow().is_empty(), "held by the proxy");
    proxy.reset_all();
    proxy.set_mode(Mode::Refuse);
    drive_until(&[c], Duration::from_secs(10), || !slot.borrow().is_empty());
    // Nothing more arrives later.
    let until = Instant::now() + Duration::from_millis(300);
    drive_until(&[c], Duration::from_secs(5), || Instant::now() >= until);
    slot.take()
}

#[test]
fn a_read_whose_connection_broke_is_retried_on_the_next_endpoint() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(addr(&etcd.endpoint()));
    let key = unique_prefix("retry-read");
    let c = client(&proxy, &etcd, |c| c);
    let got = through_a_reset(&c, &proxy, |cb| c.get(key.clone(), GetOptions::new(), cb));
    assert_eq!(got.len(), 1, "one result");
    assert!(got[0].is_ok(), "retried on the second endpoint: {:?}", got[0]);

    // With retries off (EV::Etcd's behaviour) the same failure is reported.
    let proxy = Proxy::start(addr(&etcd.endpoint()));
    let c = client(&proxy, &etcd, |c| c.retry(0, Duration::ZERO));
    let got = through_a_reset(&c, &proxy, |cb| c.get(key.clone(), GetOptions::new(), cb));
    assert_eq!(got.len(), 1, "one result");
    assert_eq!(got[0].as_ref().unwrap_err().code(), Code::Unavailable, "{:?}", got[0]);
}

#[test]
fn a_write_is_retried_only_when_the_call_opts_in() {
    let etcd = Etcd::start();
    let key = unique_prefix("retry-write");
    let proxy = Proxy::start(addr(&etcd.endpoint()));
    let c = client(&proxy, &etcd, |c| c);
    let got = through_a_reset(&c, &proxy, |cb| c.put(key.clone(), "1", PutOptions::new(), cb));
    assert_eq!(got.len(), 1, "one result");
    assert_eq!(got[0].as_ref().unwrap_err().code(), Code::Unavailable, "{:?}", got[0]);

    let proxy = Proxy::start(addr(&etcd.endpoint()));
    let c = client(&proxy, &etcd, |c| c);
    let idempotent = c.with(CallOptions::new().retry_writes(true));
    let got =
        through_a_reset(&c, &proxy, |cb| idempotent.put(key.clone(), "2", PutOptions::new(), cb));
    assert_eq!(got.len(), 1, "one result");
    assert!(got[0].is_ok(), "{:?}", got[0]);
    let kvs = ok(&c, |cb| c.get(key.clone(), GetOptions::new(), cb)).kvs;
    assert_eq!(&kvs[0].value[..], b"2");
}

#[test]
fn a_per_call_deadline_below_the_configured_floor_is_kept() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(addr(&etcd.endpoint()));
    proxy.set_mode(Mode::Blackhole);
    let c =
        Client::new(Config::new().endpoints([proxy.endpoint()]).timeout(Duration::from_secs(10)))
            .expect("valid config");
    let quick = c.with(CallOptions::new().timeout(Duration::from_millis(250)));
    let started = Instant::now();
    let e = block(&c, |cb| quick.get("k", GetOptions::new(), cb)).unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert!(took >= Duration::from_millis(250) && took < Duration::from_millis(900), "{took:?}");
}

#[test]
fn a_lock_with_its_own_deadline_and_a_cancelled_lock_end_once_each() {
    let etcd = Etcd::start();
    let c = support::client::client(&etcd.endpoint());
    let name = unique_prefix("retry-lock");
    let holder = ok(&c, |cb| c.lease_grant(60, LeaseGrantOptions::new(), cb)).id;
    let waiter = ok(&c, |cb| c.lease_grant(60, LeaseGrantOptions::new(), cb)).id;
    ok(&c, |cb| {
        c.lock(name.clone(), holder, cb);
    });

    // Held: a lock with its own deadline gives up with DEADLINE_EXCEEDED.
    let bounded = c.with(CallOptions::new().timeout(Duration::from_millis(300)));
    let started = Instant::now();
    let e = block(&c, |cb| {
        bounded.lock(name.clone(), waiter, cb);
    })
    .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // A cancel token: CANCELLED once, and a call started after the cancel fails at once.
    let cancel = Cancel::new();
    let cancellable = c.with(CallOptions::new().cancel(&cancel));
    let seen: Slot<evetcd::LockResponse> = Rc::default();
    let s = seen.clone();
    cancellable.lock(name.clone(), waiter, move |r| s.borrow_mut().push(r));
    let until = Instant::now() + Duration::from_millis(200);
    drive_until(&[&c], Duration::from_secs(5), || Instant::now() >= until);
    assert!(seen.borrow().is_empty(), "waiting for the lock");
    cancel.cancel();
    drive_until(&[&c], Duration::from_secs(5), || !seen.borrow().is_empty());
    let e = block(&c, |cb| cancellable.get("k", GetOptions::new(), cb)).unwrap_err();
    assert_eq!(e.code(), Code::Cancelled);
    let until = Instant::now() + Duration::from_millis(300);
    drive_until(&[&c], Duration::from_secs(5), || Instant::now() >= until);
    let seen = seen.borrow();
    assert_eq!(seen.len(), 1, "exactly once");
    assert_eq!(seen[0].as_ref().unwrap_err().code(), Code::Cancelled);
    assert!(cancel.is_cancelled());
}
