//! A hostile server (`support/hostile_server.rs`) answers the first call with what etcd will
//! not send on demand: broken HTTP/2 framing, a DATA frame cut short, a gRPC message above
//! the client's limit, a message that does not decode, a trailers-only error. Each test
//! points one client at [hostile, real etcd]: the call in flight fails exactly once with the
//! code gRPC gives that failure, nothing panics, and a put and a get then succeed on the next
//! connection (the real etcd). A last test meets the response limit on a real etcd.
//!
//! The codes, and why:
//!
//! - broken framing and a truncated frame: `UNAVAILABLE`. The connection is unusable (h2
//!   ends it), and a call written on a connection that broke may or may not have been
//!   processed: as grpc-go, the client reports the transport's loss, retryable.
//! - a message above the limit: `RESOURCE_EXHAUSTED`, "grpc: received message larger than
//!   max (N vs. M)" in grpc-go's words, decided from the 5-byte prefix; the stream is reset
//!   (RST_STREAM CANCEL) and the connection stays up.
//! - a message that does not decode: `INTERNAL` (grpc-go: "grpc: failed to unmarshal the
//!   received message"); the bytes arrived intact, the server sent the wrong thing.
//! - trailers-only: the status it carries (`UNAVAILABLE` for "no leader"); without a
//!   `grpc-status`, `INTERNAL` (a 200 response that ends without a status) or the code for
//!   its HTTP status (`UNAVAILABLE` for a proxy's 502), as gRPC's HTTP mapping says.
//!
//! Every wait is for an event (a callback, the server seeing a frame), bounded by a deadline.

mod support;

#[path = "support/hostile_server.rs"]
mod hostile_server;

use evetcd::{Client, Code, Config, EtcdError, GetOptions, PutOptions, WatchOptions};
use hostile_server::{Hostile, HostileServer, Seen};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use support::client::{block, drive_until, ok};
use support::proxy::Proxy;
use support::{unique_prefix, Etcd};

/// RST_STREAM's CANCEL error code.
const CANCEL: u32 = 0x8;

/// The call sent to the hostile server.
#[derive(Clone, Copy, Debug)]
enum Op {
    Put,
    Get,
    /// A watch that ends with its stream's first failure (`auto_reconnect(false)`).
    Watch,
}

/// Runs `op` through a client on [hostile (`mode`), `etcd`] (with `tweak` applied to its
/// config): returns the call's one error and the server, after checking that a put and a
/// get then succeed on the next connection, that the call's callback ran exactly once, and
/// that the server answered one call on one connection.
fn hostile_then_etcd(
    etcd: &Etcd,
    mode: Hostile,
    tweak: impl FnOnce(Config) -> Config,
    op: Op,
) -> (EtcdError, HostileServer) {
    let server = HostileServer::start(mode.clone());
    let config = Config::new()
        .endpoints([server.endpoint(), etcd.endpoint()])
        .timeout(Duration::from_secs(10));
    let c = Client::new(tweak(config)).expect("config");
    let key = unique_prefix("hostile");
    let results: Rc<RefCell<Vec<Result<(), EtcdError>>>> = Rc::default();
    let r = results.clone();
    let record = move |res: Result<(), EtcdError>| r.borrow_mut().push(res);
    let mut watch = None;
    match op {
        Op::Put => c.put(key.clone(), "lost", PutOptions::new(), move |res| record(res.map(drop))),
        Op::Get => c.get(key.clone(), GetOptions::new(), move |res| record(res.map(drop))),
        Op::Watch => {
            let options = WatchOptions::new().auto_reconnect(false);
            watch = Some(c.watch(key.clone(), options, move |res| record(res.map(drop))));
        }
    }
    drive_until(&[&c], Duration::from_secs(20), || !results.borrow().is_empty());
    let err = results.borrow()[0].clone().expect_err("the hostile answer fails the call");
    let op_name = match op {
        Op::Put => "put",
        Op::Get => "get",
        Op::Watch => "watch",
    };
    assert_eq!(err.operation(), op_name, "{mode:?}: {err}");

    // Works again, on the real etcd.
    ok(&c, |cb| c.put(key.clone(), "v", PutOptions::new(), cb));
    let got = ok(&c, |cb| c.get(key.clone(), GetOptions::new(), cb));
    assert_eq!(got.kvs.len(), 1, "{mode:?}: the put reached etcd");
    assert_eq!(&got.kvs[0].value[..], b"v");
    assert_eq!(results.borrow().len(), 1, "{mode:?}: the call's callback ran once");
    assert!(c.is_idle(), "{mode:?}: nothing left pending (a watch that ended is over)");
    drop(watch);

    let seen = server.seen();
    assert_eq!(seen.connections, 1, "{mode:?}: the client moved on to etcd: {seen:?}");
    assert_eq!(seen.answered, [(1, 1)], "{mode:?}: one call answered: {seen:?}");
    assert_eq!(seen.protocol_errors, Vec::<String>::new(), "{mode:?}");
    (err, server)
}

/// Waits until the client reset stream 1 of the first connection with CANCEL (it gave up
/// the oversized message rather than reading it).
fn assert_reset(server: &HostileServer) {
    let reset = |s: &Seen| s.resets.contains(&(1, 1, CANCEL));
    server.wait_for(Duration::from_secs(10), "RST_STREAM(CANCEL) on stream 1", reset);
}

/// The message of an oversized response, as grpc-go words it.
fn too_large(announced: u64, max: u64) -> String {
    format!("grpc: received message larger than max ({announced} vs. {max})")
}

/// (a) An HTTP/1.1 error page where frames should be: the connection is lost, the call was
/// sent on it, so `UNAVAILABLE` (retryable: the caller decides whether to send it again).
#[test]
fn garbage_after_the_preface_is_unavailable() {
    let etcd = Etcd::start();
    let (err, _) = hostile_then_etcd(&etcd, Hostile::Garbage, |c| c, Op::Put);
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.is_retryable(), "{err}");
    assert!(err.message().starts_with("http2:"), "h2 noticed the framing: {err}");
}

/// (b) A DATA frame cut short, then EOF: h2 never hands out the partial frame; the link's
/// end fails the call with `UNAVAILABLE`.
#[test]
fn a_truncated_frame_then_eof_is_unavailable() {
    let etcd = Etcd::start();
    let (err, _) = hostile_then_etcd(&etcd, Hostile::TruncatedFrame, |c| c, Op::Put);
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.is_retryable(), "{err}");
}

/// (c) A prefix announcing more than `max_response_bytes`: `RESOURCE_EXHAUSTED` from the
/// prefix alone (the server never sends the rest, so waiting for it would end in the
/// deadline), and the stream is reset with CANCEL.
#[test]
fn a_message_above_the_limit_is_resource_exhausted_from_its_prefix() {
    let etcd = Etcd::start();
    let announced = (1 << 20) + 1;
    let mode = Hostile::Oversized { announced };
    let (err, server) = hostile_then_etcd(&etcd, mode, |c| c.max_response_bytes(1024), Op::Get);
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert_eq!(err.message(), too_large(announced as u64, 1024));
    assert!(!err.is_retryable(), "{err}");
    assert_reset(&server);
}

/// (c) with the default limit, Go's 2^31 − 1: the largest prefix a server can send.
#[test]
fn the_largest_prefix_is_above_the_default_limit() {
    let etcd = Etcd::start();
    let mode = Hostile::Oversized { announced: u32::MAX };
    let (err, server) = hostile_then_etcd(&etcd, mode, |c| c, Op::Get);
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    let max = evetcd::DEFAULT_MAX_RESPONSE_BYTES as u64;
    assert_eq!(max, (1 << 31) - 1);
    assert_eq!(err.message(), too_large(u32::MAX as u64, max));
    assert_reset(&server);
}

/// (d) A well-framed OK response whose message is not a RangeResponse: a valid (empty)
/// header, then `kvs` (field 2, a message) sent as a varint. `INTERNAL`, not retryable.
#[test]
fn a_response_that_does_not_decode_is_internal() {
    let etcd = Etcd::start();
    let message = vec![0x0a, 0x00, 0x10, 0x01];
    let (err, _) = hostile_then_etcd(&etcd, Hostile::Undecodable { message }, |c| c, Op::Get);
    assert_eq!(err.code(), Code::Internal, "{err}");
    assert!(err.message().contains("cannot decode response"), "{err}");
    assert!(err.message().contains("kvs"), "{err}");
    assert!(!err.is_retryable(), "{err}");
}

/// (e) Trailers-only responses, no DATA: the status they carry, or, without one, the code
/// for the response they are.
#[test]
fn trailers_only_errors_are_reported_as_their_status() {
    let etcd = Etcd::start();
    let grpc = |code: &str, msg: &str| {
        vec![("grpc-status", code.to_string()), ("grpc-message", msg.to_string())]
    };
    // etcd's words for a member without a leader, percent-encoded as gRPC sends them.
    let mode =
        Hostile::TrailersOnly { status: 200, headers: grpc("14", "etcdserver:%20no%20leader") };
    let (err, _) = hostile_then_etcd(&etcd, mode, |c| c, Op::Put);
    assert_eq!((err.code(), err.message()), (Code::Unavailable, "etcdserver: no leader"));
    assert!(err.is_retryable(), "{err}");
    // A 200 that ends with its headers but says no status: broken, INTERNAL.
    let mode = Hostile::TrailersOnly { status: 200, headers: Vec::new() };
    let (err, _) = hostile_then_etcd(&etcd, mode, |c| c, Op::Put);
    assert_eq!(err.code(), Code::Internal, "{err}");
    assert!(err.message().contains("without grpc-status"), "{err}");
    // A proxy's 502 with no gRPC status: UNAVAILABLE, as gRPC maps HTTP statuses.
    let mode = Hostile::TrailersOnly { status: 502, headers: Vec::new() };
    let (err, _) = hostile_then_etcd(&etcd, mode, |c| c, Op::Put);
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("502"), "{err}");
}

/// A watch (the shared bidi stream) meets each hostile answer: it ends once, with the code a
/// unary call gets (`auto_reconnect(false)`: the stream's first failure ends it; a watch
/// that re-opens would go through the same decision as for any other error of its stream).
#[test]
fn a_watch_ends_once_with_each_hostile_answer() {
    let etcd = Etcd::start();
    let cases = [
        (Hostile::Garbage, Code::Unavailable),
        (Hostile::TruncatedFrame, Code::Unavailable),
        (Hostile::Oversized { announced: 2048 }, Code::ResourceExhausted),
        // `header` (field 1, a message) as a varint: no etcd response decodes it.
        (Hostile::Undecodable { message: vec![0x08, 0x01] }, Code::Internal),
        (Hostile::TrailersOnly { status: 200, headers: Vec::new() }, Code::Internal),
    ];
    for (mode, code) in cases {
        let (err, server) =
            hostile_then_etcd(&etcd, mode.clone(), |c| c.max_response_bytes(1024), Op::Watch);
        assert_eq!(err.code(), code, "{mode:?}: {err}");
        if code == Code::ResourceExhausted {
            assert_eq!(err.message(), too_large(2048, 1024));
            assert_reset(&server);
        }
    }
}

/// The limit against a real etcd: a get and watches whose responses are above it fail with
/// `RESOURCE_EXHAUSTED` (each watch once, as for any other error of its stream: one with
/// `auto_reconnect(false)` at once, one after its one re-open), while small calls keep
/// working on the same connection.
#[test]
fn a_real_etcd_response_above_the_limit_fails_only_its_call_and_watches() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.endpoint().parse().expect("address"));
    let writer = support::client::client(&etcd.endpoint());
    let p = unique_prefix("limit");
    let big = format!("{p}big");
    let value = "x".repeat(4096);
    let rev = ok(&writer, |cb| writer.put(big.clone(), value, PutOptions::new(), cb))
        .header
        .expect("header")
        .revision;
    let config = Config::new()
        .endpoints([proxy.endpoint()])
        .timeout(Duration::from_secs(10))
        .max_response_bytes(1024)
        .max_retries(1);
    let c = Client::new(config).expect("config");
    let small = |c: &Client| ok(c, |cb| c.get(format!("{p}small"), GetOptions::new(), cb));
    small(&c);

    let err = block(&c, |cb| c.get(big.clone(), GetOptions::new(), cb)).expect_err("too large");
    assert_eq!((err.code(), err.operation()), (Code::ResourceExhausted, "get"), "{err}");
    assert_announced_above(err.message(), 4096, 1024);
    assert!(!err.is_retryable(), "{err}");
    small(&c);

    type Log = Rc<RefCell<Vec<Result<(), EtcdError>>>>;
    let (once, reopening): (Log, Log) = (Rc::default(), Rc::default());
    let (a, b) = (once.clone(), reopening.clone());
    let _w1 = c.watch(
        big.clone(),
        WatchOptions::new().start_revision(rev).auto_reconnect(false),
        move |r| a.borrow_mut().push(r.map(drop)),
    );
    let _w2 = c.watch(big.clone(), WatchOptions::new().start_revision(rev), move |r| {
        b.borrow_mut().push(r.map(drop))
    });
    // Both end, so the client becomes idle; each then holds exactly one error, its last.
    drive_until(&[&c], Duration::from_secs(20), || c.is_idle());
    for (name, log) in [("no reconnect", &once), ("re-opening", &reopening)] {
        let log = log.borrow();
        let errors: Vec<&EtcdError> = log.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(errors.len(), 1, "{name}: one error: {log:?}");
        assert!(log.last().is_some_and(Result::is_err), "{name}: nothing after the error");
        let e = errors[0];
        assert_eq!((e.code(), e.operation()), (Code::ResourceExhausted, "watch"), "{name}: {e}");
        assert_announced_above(e.message(), 4096, 1024);
    }
    small(&c);
    assert_eq!(proxy.accepted(), 1, "every call and watch stayed on the first connection");
}

/// Checks `message` is grpc-go's "larger than max (N vs. max)" with N above `at_least`.
#[track_caller]
fn assert_announced_above(message: &str, at_least: u64, max: u64) {
    let n = message
        .strip_prefix("grpc: received message larger than max (")
        .and_then(|rest| rest.strip_suffix(&format!(" vs. {max})")))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("not the limit error: {message:?}"));
    assert!(n > at_least, "{message}");
}
