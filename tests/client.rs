//! The client's contract: errors for every failure, deadlines, the request size limit,
//! callbacks that start work or drop the client, connection loss, `stop()`, and driving the
//! client from a foreign poll(2) loop.

mod support;

use evetcd::{
    Client, Code, Config, DeleteOptions, GetOptions, PutOptions, DEFAULT_MAX_REQUEST_BYTES,
};
use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::client::{block, client, ok};
use support::{Etcd, SilentListener};

#[test]
fn a_dead_endpoint_fails_with_unavailable_retryable() {
    let c = client(&support::refused_endpoint());
    let err = block(&c, |cb| c.put("k", "v", PutOptions::new(), cb)).unwrap_err();
    assert_eq!(
        (err.code(), err.code_name(), err.operation()),
        (Code::Unavailable, "UNAVAILABLE", "put")
    );
    assert!(err.is_retryable());
    assert!(err.message().contains("refused"), "{err}");
    // The next call tries again (and fails the same way), rather than hanging.
    let err = block(&c, |cb| c.get("k", GetOptions::new(), cb)).unwrap_err();
    assert_eq!((err.code(), err.operation()), (Code::Unavailable, "get"));
}

#[test]
fn a_silent_server_gives_deadline_exceeded_after_the_timeout() {
    let silent = SilentListener::new();
    let c =
        Client::new(Config::new().endpoints([silent.endpoint()]).timeout(Duration::from_secs(1)))
            .unwrap();
    let start = Instant::now();
    let err = block(&c, |cb| c.get("k", GetOptions::new(), cb)).unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(err.is_retryable());
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn an_oversized_request_fails_locally_and_is_never_sent() {
    // Against a server that never answers: a request that was sent could only time out.
    let silent = SilentListener::new();
    let c = client(&silent.endpoint());
    let start = Instant::now();
    let big = vec![b'x'; DEFAULT_MAX_REQUEST_BYTES];
    let err = block(&c, |cb| c.put("k", big, PutOptions::new(), cb)).unwrap_err();
    assert_eq!((err.code(), err.operation()), (Code::InvalidArgument, "put"));
    assert!(err.message().contains("exceeds the limit"), "{err}");
    assert!(!err.is_retryable());
    assert!(start.elapsed() < Duration::from_millis(500));

    // Against etcd: a value well inside the limits is stored whole; a lower configured limit
    // rejects it locally.
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let value: Vec<u8> = (0..1_400_000u32).map(|i| (i % 251) as u8).collect();
    ok(&c, |cb| c.put("big", value.clone(), PutOptions::new(), cb));
    let got = ok(&c, |cb| c.get("big", GetOptions::new(), cb));
    assert!(got.kvs[0].value == value);
    let small =
        Client::new(Config::new().endpoints([etcd.endpoint()]).max_request_bytes(1000)).unwrap();
    let err = block(&small, |cb| small.put("big2", value, PutOptions::new(), cb)).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(ok(&c, |cb| c.get("big2", GetOptions::new(), cb)).count, 0, "never sent");
}

#[test]
fn server_errors_carry_code_message_and_operation() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    // etcd answers an empty key with a trailers-only response.
    let err = block(&c, |cb| c.get("", GetOptions::new(), cb)).unwrap_err();
    assert_eq!((err.code(), err.operation()), (Code::InvalidArgument, "get"));
    assert_eq!(err.message(), "etcdserver: key is not provided");
    assert!(!err.is_retryable());
    assert_eq!(err.to_string(), "get: INVALID_ARGUMENT: etcdserver: key is not provided");
    // The connection stays usable after an error.
    ok(&c, |cb| c.put("after", "error", PutOptions::new(), cb));
}

#[test]
fn callbacks_start_more_work_and_may_drop_their_client() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let log = Rc::new(RefCell::new(Vec::new()));
    let (c1, l1) = (c.clone(), log.clone());
    c.put("chain", "1", PutOptions::new(), move |r| {
        r.unwrap();
        l1.borrow_mut().push("put");
        let (c2, l2) = (c1.clone(), l1.clone());
        c1.get("chain", GetOptions::new(), move |r| {
            assert_eq!(&r.unwrap().kvs[0].value[..], b"1");
            l2.borrow_mut().push("get");
            let l3 = l2.clone();
            c2.delete("chain", DeleteOptions::new(), move |r| {
                assert_eq!(r.unwrap().deleted, 1);
                l3.borrow_mut().push("delete");
            });
            drop(c2); // the callback drops its clone; the delete still completes
        });
        drop(c1);
    });
    c.run();
    assert_eq!(*log.borrow(), ["put", "get", "delete"]);
    assert!(c.is_idle());
}

#[test]
fn dropping_the_last_client_with_calls_pending_is_harmless() {
    let silent = SilentListener::new();
    let ran = Rc::new(Cell::new(false));
    {
        let c = client(&silent.endpoint());
        let r = ran.clone();
        c.get("k", GetOptions::new(), move |_| r.set(true));
        c.process(); // connects and sends
    }
    assert!(!ran.get(), "a dropped client runs no callbacks");
}

#[test]
fn connection_loss_fails_every_pending_call_then_the_client_reconnects() {
    let mut etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    ok(&c, |cb| c.put("k", "v", PutOptions::new(), cb));
    etcd.pause(); // SIGSTOP: requests are written but never answered
    let errors = Rc::new(RefCell::new(Vec::new()));
    for _ in 0..20 {
        let e = errors.clone();
        c.get("k", GetOptions::new(), move |r| e.borrow_mut().push(r.unwrap_err()));
    }
    c.process(); // sends the 20 requests
    etcd.kill(); // the connection breaks with the calls in flight
    c.run();
    let errors = errors.borrow();
    assert_eq!(errors.len(), 20);
    for e in errors.iter() {
        assert_eq!(e.code(), Code::Unavailable, "{e}");
        assert!(e.is_retryable());
    }
    etcd.restart();
    let got = ok(&c, |cb| c.get("k", GetOptions::new(), cb));
    assert_eq!(&got.kvs[0].value[..], b"v");
}

#[test]
fn stop_returns_from_run_and_a_later_run_continues() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let second = Rc::new(Cell::new(false));
    let (c1, s) = (c.clone(), second.clone());
    c.put("s", "1", PutOptions::new(), move |r| {
        r.unwrap();
        c1.stop();
        c1.put("s", "2", PutOptions::new(), move |r| s.set(r.is_ok()));
    });
    c.run();
    assert!(!second.get() && !c.is_idle(), "run returned after stop with work pending");
    c.run();
    assert!(second.get() && c.is_idle());
}

/// Drives `client` with poll(2) on its fd and `next_timeout()`, as a foreign loop would,
/// until `done()` or a 20 s safety limit.
fn poll_loop(client: &Client, done: impl Fn() -> bool) {
    let limit = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < limit, "poll loop made no progress");
        let timeout_ms = match client.next_timeout() {
            None => 1000,
            Some(t) => t.as_millis().min(1000) as i32,
        };
        let mut pfd = libc::pollfd { fd: client.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        assert!(n >= 0, "poll failed");
        client.process();
    }
}

#[test]
fn a_foreign_poll_loop_drives_the_client() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    assert_eq!(c.next_timeout(), None, "nothing pending");
    let done = Rc::new(Cell::new(0));
    fn chain(c: Client, i: u32, done: Rc<Cell<u32>>) {
        let c2 = c.clone();
        c.put(format!("poll/{i}"), "v", PutOptions::new(), move |r| {
            r.unwrap();
            done.set(done.get() + 1);
            if i < 99 {
                chain(c2, i + 1, done);
            }
        });
    }
    chain(c.clone(), 0, done.clone());
    assert_eq!(c.next_timeout(), Some(Duration::ZERO), "queued work is due at once");
    for i in 0..50 {
        let d = done.clone();
        c.get(format!("poll/{i}"), GetOptions::new(), move |r| {
            r.unwrap();
            d.set(d.get() + 1);
        });
    }
    poll_loop(&c, || done.get() == 150);
    assert!(c.is_idle());
    assert_eq!(c.next_timeout(), None);
    let r = ok(&c, |cb| c.get("poll/", GetOptions::new().prefix(true).count_only(true), cb));
    assert_eq!(r.count, 100);
}

#[test]
fn bad_configurations_are_rejected() {
    let e = Client::new(Config::new().endpoints(["https://127.0.0.1:2379"])).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(Client::new(Config::new().endpoints(Vec::<String>::new())).is_err());
    assert!(Client::new(Config::new().endpoints(["host:notaport"])).is_err());
    assert!(Client::new(Config::new().auth_token("line\nbreak")).is_err());
}

#[test]
fn the_first_call_after_an_idle_connection_died_is_sent_on_a_new_one() {
    let mut etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    ok(&c, |cb| c.put("k", "v", PutOptions::new(), cb));
    etcd.restart(); // the idle connection's end of input waits unread
    let got = ok(&c, |cb| c.get("k", GetOptions::new(), cb));
    assert_eq!(&got.kvs[0].value[..], b"v", "never sent on the dead connection");
}

#[test]
fn a_host_name_tries_each_address() {
    // "localhost" may resolve to ::1 first while etcd listens on 127.0.0.1 only.
    let etcd = Etcd::start();
    let c = client(&format!("localhost:{}", etcd.client_port()));
    ok(&c, |cb| c.put("k", "v", PutOptions::new(), cb));
}

#[test]
fn a_panicking_callback_loses_no_other_callback() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let ran = Rc::new(Cell::new(0));
    // One turn completes all three (pipelined); the second callback panics.
    for i in 0..3 {
        let r = ran.clone();
        c.put(format!("p{i}"), "v", PutOptions::new(), move |res| {
            res.unwrap();
            r.set(r.get() + 1);
            if i == 1 {
                panic!("callback panics");
            }
        });
    }
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.run()));
    assert!(caught.is_err());
    c.run(); // the loop still works, and the callback that did not run yet runs now
    assert_eq!(ran.get(), 3);
    assert!(c.is_idle());
}

/// Drives `c` until `done()`, as a loop that survives panicking callbacks would: each panic
/// "callback panics" is caught and the loop goes on; any other panic (the time limit) is not.
/// Returns how many were caught.
fn drive_catching(c: &Client, done: impl Fn() -> bool) -> usize {
    let mut caught = 0;
    loop {
        let limit = Duration::from_secs(10);
        let run = || support::client::drive_until(&[c], limit, &done);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
            Ok(()) => return caught,
            Err(p) if p.downcast_ref::<&str>() == Some(&"callback panics") => caught += 1,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

#[test]
fn a_panicking_stream_callback_still_hears_from_its_stream() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let rev = ok(&c, |cb| c.put("pw", "1", PutOptions::new(), cb)).header.unwrap().revision;
    let values = Rc::new(RefCell::new(Vec::new()));
    let v = values.clone();
    let options = evetcd::WatchOptions::new().start_revision(rev);
    let watch = c.watch("pw", options, move |r| {
        for ev in r.unwrap().events {
            v.borrow_mut().push(ev.kv.unwrap().value);
        }
        if !v.borrow().is_empty() {
            panic!("callback panics");
        }
    });
    assert_eq!(drive_catching(&c, || values.borrow().len() == 1), 1);
    // The watch goes on: the next event still reaches the callback that panicked.
    c.put("pw", "2", PutOptions::new(), |r| {
        r.unwrap();
    });
    assert_eq!(drive_catching(&c, || values.borrow().len() == 2), 1);
    assert_eq!(*values.borrow(), ["1", "2"]);
    watch.cancel(|r| r.unwrap());
    c.run();
    assert!(c.is_idle());
}

#[test]
fn a_stream_whose_final_delivery_panicked_still_ends() {
    // A watch create above the size limit ends the watch on the next turn, without a server.
    let endpoint = support::refused_endpoint();
    let small = Client::new(Config::new().endpoints([endpoint]).max_request_bytes(100)).unwrap();
    let failed = Rc::new(Cell::new(false));
    let f = failed.clone();
    small.watch(vec![b'k'; 200], evetcd::WatchOptions::new(), move |r| {
        assert_eq!(r.unwrap_err().code(), Code::InvalidArgument);
        f.set(true);
        panic!("callback panics");
    });
    // Its entry goes once the final delivery ran, panic or not: the client becomes idle.
    assert_eq!(drive_catching(&small, || small.is_idle()), 1);
    assert!(failed.get());
    small.run(); // returns at once
}

#[test]
fn close_cancels_every_pending_operation_at_once_and_the_client_stays_usable() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let got = Rc::new(RefCell::new(Vec::new()));
    let (g1, g2) = (got.clone(), got.clone());
    let c2 = c.clone(); // captured by the watch: a cycle that close() must break
    c.watch("w", evetcd::WatchOptions::new(), move |r| {
        let _keep = &c2;
        if let Err(e) = r {
            g1.borrow_mut().push((e.operation(), e.code()));
        }
    });
    c.get("k", GetOptions::new(), move |r| {
        g2.borrow_mut().push((r.unwrap_err().operation(), Code::Cancelled))
    });
    c.process(); // connect and send; nothing has answered yet
    c.close();
    let mut seen = got.borrow().clone();
    seen.sort_by_key(|s| s.0);
    assert_eq!(
        seen,
        [("get", Code::Cancelled), ("watch", Code::Cancelled)],
        "before close returned"
    );
    assert!(c.is_idle());
    c.run(); // returns at once: nothing pending
    ok(&c, |cb| c.put("after", "close", PutOptions::new(), cb));
}

/// Runs `f` on drop: a stand-in for a guard whose `Drop` uses the client.
struct OnDrop<F: FnMut()>(F);
impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

#[test]
fn a_callback_whose_drop_uses_the_client_may_be_cancelled_or_end() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let dropped = Rc::new(Cell::new(0));
    // Cancelled: the callback (and its guard) is dropped by cancel().
    let (c1, d1) = (c.clone(), dropped.clone());
    let guard = OnDrop(move || {
        let _ = c1.is_idle();
        d1.set(d1.get() + 1);
    });
    let w = c.watch("a", evetcd::WatchOptions::new(), move |_| {
        let _ = &guard;
    });
    w.cancel(|r| r.unwrap());
    // Ended by the server: a compacted start revision.
    let r1 = ok(&c, |cb| c.put("b", "1", PutOptions::new(), cb)).header.unwrap().revision;
    let r2 = ok(&c, |cb| c.put("b", "2", PutOptions::new(), cb)).header.unwrap().revision;
    ok(&c, |cb| c.compact(r2, evetcd::CompactOptions::new(), cb));
    let (c2, d2) = (c.clone(), dropped.clone());
    let guard = OnDrop(move || {
        let _ = c2.is_idle();
        d2.set(d2.get() + 1);
    });
    let errors = Rc::new(Cell::new(0));
    let e = errors.clone();
    c.watch("b", evetcd::WatchOptions::new().start_revision(r1), move |r| {
        let _ = &guard;
        if r.is_err() {
            e.set(e.get() + 1);
        }
    });
    c.run();
    assert_eq!((dropped.get(), errors.get()), (2, 1));
}

#[test]
fn close_inside_a_callback_keeps_nested_run_a_no_op() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let order = Rc::new(RefCell::new(Vec::new()));
    let (c1, o1, o2) = (c.clone(), order.clone(), order.clone());
    c.put("a", "1", PutOptions::new(), move |_| {
        o1.borrow_mut().push("a start");
        c1.close();
        c1.put("b", "1", PutOptions::new(), move |_| o2.borrow_mut().push("b"));
        c1.run(); // inside a callback: must return at once
        o1.borrow_mut().push("a end");
    });
    c.run();
    assert_eq!(*order.borrow(), ["a start", "a end", "b"]);
}

#[test]
fn an_oversized_watch_create_fails_alone_and_other_watches_work() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let big_key = vec![b'k'; DEFAULT_MAX_REQUEST_BYTES + 1];
    let big_err = Rc::new(RefCell::new(None));
    let b = big_err.clone();
    c.watch(big_key, evetcd::WatchOptions::new(), move |r| *b.borrow_mut() = Some(r.unwrap_err()));
    let events = Rc::new(Cell::new(0));
    let (c1, ev) = (c.clone(), events.clone());
    let handle: Rc<RefCell<Option<evetcd::Watch>>> = Rc::default();
    let h = handle.clone();
    *handle.borrow_mut() = Some(c.watch("small", evetcd::WatchOptions::new(), move |r| {
        let resp = r.expect("the normal watch is unaffected");
        if resp.created {
            c1.put("small", "v", PutOptions::new(), |r| {
                r.unwrap();
            });
        } else {
            ev.set(ev.get() + resp.events.len());
            h.borrow().as_ref().unwrap().cancel(|_| ());
        }
    }));
    c.run();
    assert_eq!(events.get(), 1);
    let err = big_err.borrow().clone().expect("one error");
    assert_eq!((err.code(), err.operation()), (Code::InvalidArgument, "watch"));
}

#[test]
fn a_frozen_server_is_detected_by_keepalive_pings_not_by_deadlines() {
    let mut etcd = Etcd::start();
    let config = Config::new()
        .endpoints([etcd.endpoint()])
        .timeout(Duration::from_secs(30))
        .keepalive(Duration::from_secs(5), Duration::from_secs(2))
        // The first failure is reported (a read would be retried until the deadline).
        .retry(0, Duration::ZERO);
    let c = Client::new(config).unwrap();
    ok(&c, |cb| c.put("k", "v", PutOptions::new(), cb));
    etcd.pause(); // SIGSTOP: the TCP connection stays up, nothing answers
    let start = Instant::now();
    let err = block(&c, |cb| c.get("k", GetOptions::new(), cb)).unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("keepalive PING"), "{err}");
    assert!(took < Duration::from_secs(10), "detected after {took:?}; the deadline is 30 s");
    etcd.resume();
    let got = ok(&c, |cb| c.get("k", GetOptions::new(), cb));
    assert_eq!(&got.kvs[0].value[..], b"v");
}

#[test]
fn with_the_server_gone_each_stream_reports_exactly_one_error_when_retries_run_out() {
    let mut etcd = Etcd::start();
    let config = Config::new().endpoints([etcd.endpoint()]).max_retries(2);
    let c = Client::new(config).unwrap();
    let lease = ok(&c, |cb| c.lease_grant(60, evetcd::LeaseGrantOptions::new(), cb)).id;
    type Failures = Vec<(&'static str, Code, Instant)>;
    let errors: Rc<RefCell<Failures>> = Rc::default();
    let created = Rc::new(Cell::new(false));
    let (e1, cr) = (errors.clone(), created.clone());
    c.watch("w", evetcd::WatchOptions::new(), move |r| match r {
        Ok(resp) => cr.set(cr.get() || resp.created),
        Err(e) => e1.borrow_mut().push(("watch", e.code(), Instant::now())),
    });
    let (e2, renewed) = (errors.clone(), Rc::new(Cell::new(false)));
    let rn = renewed.clone();
    c.lease_keepalive(lease, move |r| match r {
        Ok(_) => rn.set(true),
        Err(e) => e2.borrow_mut().push(("keepalive", e.code(), Instant::now())),
    });
    support::client::drive_until(&[&c], Duration::from_secs(10), || created.get() && renewed.get());
    etcd.kill();
    let killed = Instant::now();
    // Both streams give up (a deadline, not run(): a regression must fail, not hang).
    support::client::drive_until(&[&c], Duration::from_secs(20), || errors.borrow().len() == 2);
    assert!(c.is_idle(), "nothing is left running");
    let errors = errors.borrow();
    let mut kinds: Vec<_> = errors.iter().map(|e| (e.0, e.1)).collect();
    kinds.sort_by_key(|k| k.0);
    assert_eq!(kinds, [("keepalive", Code::Unavailable), ("watch", Code::Unavailable)]);
    for (what, _, at) in errors.iter() {
        // Two re-opens: one at once, one after 0.5 s ± 20 % of backoff.
        assert!(
            *at - killed >= Duration::from_millis(400),
            "{what} gave up after {:?}",
            *at - killed
        );
    }
    etcd.restart();
    ok(&c, |cb| c.put("after", "outage", PutOptions::new(), cb));
}

/// A fake server, since etcd cannot be made to put its last bytes and its FIN in one segment:
/// the client must still see the end of input that arrived with the data (the socket is
/// edge-triggered, and a short read alone would say "drained").
#[test]
fn an_end_of_input_that_arrives_with_the_last_data_is_seen() {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{Shutdown, TcpListener};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // The first failure is reported (a read would be retried until the deadline).
    let config =
        Config::new().endpoints([addr]).timeout(Duration::from_secs(5)).retry(0, Duration::ZERO);
    let c = Client::new(config).unwrap();
    type Ended = Rc<RefCell<Option<(Instant, Result<(), evetcd::EtcdError>)>>>;
    let got: Ended = Rc::default();
    let g = got.clone();
    c.get("k", GetOptions::new(), move |r| *g.borrow_mut() = Some((Instant::now(), r.map(|_| ()))));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut server = loop {
        c.process();
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("no connection: {e}"),
        }
    };
    // Read the client's preface, SETTINGS and request (all in its first writes).
    server.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 4096];
    let mut seen = 0;
    while seen <= 24 {
        c.process();
        match server.read(&mut buf) {
            Ok(n) => seen += n,
            Err(e) if Instant::now() < deadline => {
                assert!(e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut, "{e}")
            }
            Err(e) => panic!("no request: {e}"),
        }
    }
    // An empty SETTINGS frame and the FIN, both queued before the client's next turn.
    server.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    server.shutdown(Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let closed = Instant::now();
    server.set_nonblocking(true).unwrap();
    while got.borrow().is_none() && closed.elapsed() < Duration::from_secs(2) {
        c.process();
        let _ = server.read(&mut buf); // keep reading: an unread receive buffer means an RST
        std::thread::sleep(Duration::from_millis(10));
    }
    let (at, r) = got.borrow_mut().take().expect("the call ended within 2 s of the close");
    let e = r.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(
        at - closed < Duration::from_millis(500),
        "ended {:?} after the close: {e}",
        at - closed
    );
}
