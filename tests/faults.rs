//! Fault tests against real etcd processes: connections that go silent (a blackholing proxy,
//! a frozen member), members killed one by one or all at once, endpoints that refuse, bursts
//! of failures on one connection, a member that loses its leader, health checks, and streams
//! that must not re-open.
//!
//! Every wait is for an event (a callback, a connection, a server metric), bounded by a
//! deadline so that a regression fails instead of hanging; the only timed runs are the ones
//! that check that nothing more happens.

mod support;

use evetcd::{
    Client, Code, Config, EtcdError, GetOptions, LeaseGrantOptions, PutOptions, StreamOptions,
    WatchOptions, WatchResponse,
};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::client::{block_busy, connections_to, drive_until, ok};
use support::failover::watch_through_a_fault;
use support::metrics::metric;
use support::proxy::{Mode, Proxy};
use support::{refused_endpoint, unique_prefix, Cluster, Etcd};

/// Puts etcd answered with OK (from any client).
const PUTS_HANDLED: &str = r#"grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}"#;
/// Maintenance Status calls (the health check) etcd answered with OK.
const STATUS_HANDLED: &str = r#"grpc_server_handled_total{grpc_code="OK",grpc_method="Status",grpc_service="etcdserverpb.Maintenance",grpc_type="unary"}"#;

/// One delivery to a stream's callback: when, and success or the error.
type Delivery = (Instant, Result<(), EtcdError>);

/// What a stream's callback received, in order.
#[derive(Clone, Default)]
struct Deliveries(Rc<RefCell<Vec<Delivery>>>);

impl Deliveries {
    /// A stream callback that records every delivery, handing each success to `f` first.
    fn record<T>(
        &self,
        mut f: impl FnMut(&T) + 'static,
    ) -> impl FnMut(Result<T, EtcdError>) + 'static {
        let log = self.0.clone();
        move |r| {
            let r = r.map(|v| f(&v));
            log.borrow_mut().push((Instant::now(), r));
        }
    }

    /// [`record`](Self::record) with nothing to do on success.
    fn any<T>(&self) -> impl FnMut(Result<T, EtcdError>) + 'static {
        self.record(|_| ())
    }

    fn oks_since(&self, t: Instant) -> usize {
        self.0.borrow().iter().filter(|(at, r)| *at >= t && r.is_ok()).count()
    }

    fn oks(&self) -> usize {
        self.0.borrow().iter().filter(|(_, r)| r.is_ok()).count()
    }

    fn errors(&self) -> Vec<(Instant, EtcdError)> {
        self.0.borrow().iter().filter_map(|(at, r)| Some((*at, r.clone().err()?))).collect()
    }

    /// Checks that the stream `operation` ended with exactly one error, a retryable
    /// UNAVAILABLE, and received nothing after it; returns when it came.
    #[track_caller]
    fn one_unavailable(&self, operation: &str) -> Instant {
        let log = self.0.borrow();
        let errors = self.errors();
        assert_eq!(errors.len(), 1, "{operation}: exactly one error, got {errors:?}");
        let (at, e) = &errors[0];
        assert_eq!((e.code(), e.operation()), (Code::Unavailable, operation), "{e}");
        assert!(e.is_retryable(), "{e}");
        assert!(
            log.last().is_some_and(|l| l.1.is_err()),
            "{operation}: a delivery after its error"
        );
        *at
    }
}

fn addr(endpoint: &str) -> SocketAddr {
    endpoint.parse().unwrap_or_else(|e| panic!("{endpoint}: {e}"))
}

/// Drives `c` until `done()`; fails after `limit`, saying what did not happen.
#[track_caller]
fn wait_for(c: &Client, limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    drive_until(&[c], limit + Duration::from_secs(1), || {
        let done = done();
        assert!(done || Instant::now() < deadline, "not within {limit:?}: {what}");
        done
    });
}

/// Drives `c` for `d`: only to check that nothing more happens meanwhile.
fn drive_for(c: &Client, d: Duration) {
    let start = Instant::now();
    drive_until(&[c], d + Duration::from_secs(5), || start.elapsed() >= d);
}

/// Puts through a fresh client on `endpoints`, retrying retryable failures (a cluster that is
/// electing a leader) for at most 30 s.
fn put_eventually(endpoints: &[String], key: &str, value: &str) {
    let w = Client::new(Config::new().endpoints(endpoints).timeout(Duration::from_secs(5)))
        .expect("config");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = value.to_string();
        match support::client::block(&w, |cb| w.put(key.to_string(), value, PutOptions::new(), cb))
        {
            Ok(_) => return,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {}
            Err(e) => panic!("put {key}: {e}"),
        }
    }
}

#[test]
fn a_watch_behind_a_blackholed_connection_moves_on_and_delivers_every_event_once() {
    const PING_TIME: Duration = Duration::from_secs(5);
    const PING_TIMEOUT: Duration = Duration::from_secs(1);
    // The next PING is due within PING_TIME; it goes unanswered for PING_TIMEOUT. Nothing
    // else can notice: TCP still acknowledges everything and member 0 keeps its leader.
    const NOTICED_WITHIN: Duration = PING_TIME.saturating_add(PING_TIMEOUT).saturating_add(SLACK);
    const SLACK: Duration = Duration::from_secs(3);
    let cluster = Cluster::start(3);
    // The watching client reaches every member through a proxy, to see where it connects;
    // the writer (and the replay) use members 1 and 2 directly.
    let proxies: Vec<Proxy> = cluster.endpoints().iter().map(|e| Proxy::start(addr(e))).collect();
    let config = Config::new()
        .endpoints(proxies.iter().map(Proxy::endpoint))
        .keepalive(PING_TIME, PING_TIMEOUT);
    let c = Client::new(config).unwrap();
    let (silenced, moved) = (Cell::new(None), Cell::new(None));
    let created = watch_through_a_fault(
        &c,
        "blackhole",
        cluster.endpoints()[1..].to_vec(),
        || {
            assert_eq!(proxies[1].accepted(), 0, "the client left member 0 before the fault");
            proxies[0].set_mode(Mode::Blackhole);
            silenced.set(Some(Instant::now()));
        },
        || {
            let Some(at) = silenced.get().filter(|_| moved.get().is_none()) else { return };
            if proxies[1].accepted() > 0 {
                moved.set(Some(Instant::now()));
            }
            assert!(at.elapsed() < NOTICED_WITHIN, "the silent connection is still in use");
        },
    );
    let silenced = silenced.get().expect("set by the fault");
    let detected = moved.get().expect("every event came, so the client moved") - silenced;
    assert!(
        detected >= PING_TIMEOUT - Duration::from_millis(50),
        "the silent connection was given up {detected:?} after the fault, before a PING could \
         time out"
    );
    let accepted: Vec<usize> = proxies.iter().map(Proxy::accepted).collect();
    assert_eq!(accepted, [1, 1, 0], "one move, to the next endpoint");
    assert_eq!(connections_to(proxies[0].addr().port()), 0, "the silent connection is closed");
    assert!(created >= 2, "the watch was re-created on member 1");
}

#[test]
fn with_every_member_stopped_each_stream_reports_one_unavailable_no_sooner_than_the_backoff_and_calls_work_after(
) {
    let mut cluster = Cluster::start(3);
    let config = Config::new()
        .endpoints(cluster.endpoints())
        .timeout(Duration::from_secs(10))
        .max_retries(2);
    let c = Client::new(config).unwrap();
    let prefix = unique_prefix("outage");
    let election = format!("{prefix}election");
    let lease = ok(&c, |cb| c.lease_grant(60, LeaseGrantOptions::new(), cb)).id;
    ok(&c, |cb| {
        c.election_campaign(election.clone(), lease, "leader", cb);
    });
    let streams: [Deliveries; 3] = Default::default();
    let [watch, keepalive, observe] = &streams;
    c.watch(format!("{prefix}w"), WatchOptions::new(), watch.any());
    c.lease_keepalive(lease, keepalive.any());
    c.election_observe(election, observe.any());
    // Created, renewed, the leader seen.
    drive_until(&[&c], Duration::from_secs(10), || streams.iter().all(|d| d.oks() > 0));

    for m in &mut cluster.members {
        m.kill();
    }
    let stopped = Instant::now();
    wait_for(&c, Duration::from_secs(20), "every stream gave up", || {
        streams.iter().all(|d| !d.errors().is_empty())
    });
    drive_for(&c, Duration::from_secs(1));
    for (d, operation) in streams.iter().zip(["watch", "keepalive", "election_observe"]) {
        let at = d.one_unavailable(operation);
        assert_eq!(d.oks_since(stopped), 0, "{operation} delivered after the stop");
        // Re-opened at once, then after 0.5 s ± 20 %: max_retries(2) is spent.
        let after = at - stopped;
        assert!(after >= Duration::from_millis(400), "{operation} gave up after {after:?}");
    }
    assert!(c.is_idle(), "nothing is left running");

    cluster.restart_all();
    ok(&c, |cb| c.put(format!("{prefix}after"), "outage", PutOptions::new(), cb));
    let got = ok(&c, |cb| c.get(format!("{prefix}after"), GetOptions::new(), cb));
    assert_eq!(&got.kvs[0].value[..], b"outage");
}

#[test]
fn endpoints_refused_then_live_every_call_succeeds_and_three_concurrent_calls_move_once() {
    let etcd = Etcd::start();
    let (a, b) = (Proxy::start(addr(&etcd.endpoint())), Proxy::start(addr(&etcd.endpoint())));
    let config = Config::new()
        .endpoints([refused_endpoint(), a.endpoint(), b.endpoint()])
        .timeout(Duration::from_secs(10));
    let c = Client::new(config).unwrap();
    let prefix = unique_prefix("refused");
    let results: Rc<RefCell<Vec<Result<(), EtcdError>>>> = Rc::default();
    for i in 0..3 {
        let r = results.clone();
        c.put(format!("{prefix}k{i}"), "v", PutOptions::new(), move |res| {
            r.borrow_mut().push(res.map(drop));
        });
    }
    wait_for(&c, Duration::from_secs(10), "the three puts ended", || results.borrow().len() == 3);
    for r in results.borrow().iter() {
        r.as_ref().unwrap_or_else(|e| panic!("a put failed: {e}"));
    }
    assert_eq!((a.accepted(), b.accepted()), (1, 0), "the refused endpoint, then the next one");

    // A watch behind a refused endpoint: created on the next one, never an error.
    let w = Client::new(Config::new().endpoints([refused_endpoint(), etcd.endpoint()])).unwrap();
    let deliveries = Deliveries::default();
    let (values, created): (Rc<RefCell<Vec<String>>>, Rc<Cell<bool>>) = Default::default();
    let (v, cr) = (values.clone(), created.clone());
    let watch = w.watch(
        format!("{prefix}w"),
        WatchOptions::new(),
        deliveries.record(move |resp: &WatchResponse| {
            cr.set(cr.get() || resp.created);
            let kvs = resp.events.iter().filter_map(|e| e.kv.as_ref());
            v.borrow_mut().extend(kvs.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()));
        }),
    );
    wait_for(&w, Duration::from_secs(10), "the watch was created", || created.get());
    ok(&c, |cb| c.put(format!("{prefix}w"), "later", PutOptions::new(), cb));
    wait_for(&w, Duration::from_secs(10), "the put was seen", || !values.borrow().is_empty());
    assert_eq!(*values.borrow(), ["later"]);
    assert!(deliveries.errors().is_empty(), "{:?}", deliveries.errors());
    watch.cancel(|_| ());
    w.run();
}

#[test]
fn a_burst_of_failures_on_one_connection_moves_the_client_once() {
    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    let proxies: Vec<Proxy> = (0..3).map(|_| Proxy::start(addr(&ep))).collect();
    let config = Config::new()
        .endpoints(proxies.iter().map(Proxy::endpoint))
        .timeout(Duration::from_secs(10));
    let c = Client::new(config).unwrap();
    let prefix = unique_prefix("burst");
    ok(&c, |cb| c.put(format!("{prefix}warm-up"), "", PutOptions::new(), cb));
    let handled = metric(&ep, PUTS_HANDLED);

    // Three puts in flight through proxy A: etcd applies them, their answers are held back.
    proxies[0].set_mode(Mode::Delay(Duration::from_secs(1)));
    let results: Rc<RefCell<Vec<Result<(), EtcdError>>>> = Rc::default();
    for i in 0..3 {
        let r = results.clone();
        c.put(format!("{prefix}k{i}"), "v", PutOptions::new(), move |res| {
            r.borrow_mut().push(res.map(drop));
        });
    }
    wait_for(&c, Duration::from_secs(10), "etcd applied the three puts", || {
        metric(&ep, PUTS_HANDLED) >= handled + 3.0
    });
    assert!(results.borrow().is_empty(), "the answers are still in the proxy");
    proxies[0].reset_all();
    wait_for(&c, Duration::from_secs(10), "the three puts ended", || results.borrow().len() == 3);
    for r in results.borrow().iter() {
        let e = r.as_ref().expect_err("the connection died under the put");
        assert_eq!((e.code(), e.operation()), (Code::Unavailable, "put"), "{e}");
        assert!(e.is_retryable(), "{e}");
    }

    // They were applied once each (written, so not sent again), and the client moved once.
    for i in 0..3 {
        let got = ok(&c, |cb| c.get(format!("{prefix}k{i}"), GetOptions::new(), cb));
        assert_eq!(got.kvs[0].version, 1, "k{i} was put once");
    }
    let accepted: Vec<usize> = proxies.iter().map(Proxy::accepted).collect();
    assert_eq!(accepted, [1, 1, 0], "one move, to the next endpoint");
}

#[test]
fn a_keepalive_survives_a_kill_of_its_member_and_its_lease_never_expires() {
    const TTL: i64 = 2;
    let ttl = Duration::from_secs(TTL as u64);
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader_index().expect("a leader");
    // The client starts on a follower: killing it costs no election.
    let order = [1, 2, 3].map(|i| (leader + i) % 3);
    let endpoints = order.map(|i| cluster.members[i].endpoint());
    let c =
        Client::new(Config::new().endpoints(endpoints).timeout(Duration::from_secs(10))).unwrap();
    let prefix = unique_prefix("keepalive-kill");
    let key = format!("{prefix}owned");
    let lease = ok(&c, |cb| c.lease_grant(TTL, LeaseGrantOptions::new(), cb));
    assert_eq!(lease.ttl, TTL);
    ok(&c, |cb| c.put(key.clone(), "v", PutOptions::new().lease(lease.id), cb));
    let deliveries = Deliveries::default();
    let ttls: Rc<RefCell<Vec<i64>>> = Rc::default();
    let t = ttls.clone();
    let ka = c.lease_keepalive(
        lease.id,
        deliveries.record(move |r: &evetcd::LeaseKeepAliveResponse| t.borrow_mut().push(r.ttl)),
    );
    drive_until(&[&c], Duration::from_secs(10), || deliveries.oks() > 0);

    cluster.members[order[0]].kill();
    let killed = Instant::now();
    drive_until(&[&c], 3 * ttl + Duration::from_secs(5), || {
        !deliveries.errors().is_empty() || killed.elapsed() >= 3 * ttl
    });
    assert!(deliveries.errors().is_empty(), "{:?}", deliveries.errors());
    // Renewed every third of the TTL, the kill included: no gap near the TTL.
    let times: Vec<Instant> = deliveries.0.borrow().iter().map(|d| d.0).collect();
    let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    assert!(gap < ttl, "{gap:?} without a renewal");
    let renewed = deliveries.oks_since(killed);
    assert!(renewed >= 6, "{renewed} renewals in {:?} after the kill", 3 * ttl);
    assert!(ttls.borrow().iter().all(|&t| t == TTL), "{:?}", ttls.borrow());
    assert_eq!(
        connections_to(cluster.members[order[1]].client_port()),
        1,
        "the client moved to its next endpoint"
    );

    let other = support::client::client(&cluster.members[order[2]].endpoint());
    let alive = ok(&other, |cb| other.lease_time_to_live(lease.id, true, cb));
    assert!(alive.ttl > 0, "the lease expired: {alive:?}");
    assert_eq!(alive.keys, [key.as_bytes()]);
    let got = ok(&other, |cb| other.get(key.clone(), GetOptions::new(), cb));
    assert_eq!(got.kvs.len(), 1, "the lease's key still exists");
    ka.cancel(|_| ());
    c.run();
}

#[test]
fn a_member_that_loses_its_leader_ends_the_streams_and_the_client_moves_on() {
    let mut cluster = Cluster::start(3);
    // Member 0 stays up while 1 and 2 are frozen: it loses its leader (a leader steps down
    // without a quorum), yet still answers PINGs, so only etcd ending the streams (for
    // `hasleader`) makes the client move, to member 1. A frozen member's listening socket
    // still completes TCP handshakes, which shows the move while it is paused.
    let next_port = cluster.members[1].client_port();
    let endpoints = [cluster.members[0].endpoint(), cluster.members[1].endpoint()];
    let c =
        Client::new(Config::new().endpoints(endpoints).timeout(Duration::from_secs(10))).unwrap();
    let prefix = unique_prefix("no-leader");
    let key = format!("{prefix}w");
    let lease = ok(&c, |cb| c.lease_grant(60, LeaseGrantOptions::new(), cb)).id;
    let (watch, keepalive) = (Deliveries::default(), Deliveries::default());
    let (values, created): (Rc<RefCell<Vec<String>>>, Rc<Cell<u32>>) = Default::default();
    let (v, cr) = (values.clone(), created.clone());
    let w = c.watch(
        key.clone(),
        WatchOptions::new(),
        watch.record(move |resp: &WatchResponse| {
            cr.set(cr.get() + u32::from(resp.created));
            let kvs = resp.events.iter().filter_map(|e| e.kv.as_ref());
            v.borrow_mut().extend(kvs.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()));
        }),
    );
    let ka = c.lease_keepalive(lease, keepalive.any());
    drive_until(&[&c], Duration::from_secs(10), || created.get() == 1 && keepalive.oks() > 0);
    assert_eq!(connections_to(next_port), 0);

    cluster.members[1].pause();
    cluster.members[2].pause();
    let paused = Instant::now();
    let what = "the client left the member without a leader for the next endpoint";
    wait_for(&c, Duration::from_secs(20), what, || connections_to(next_port) > 0);
    let moved = paused.elapsed();
    cluster.members[1].resume();
    cluster.members[2].resume();

    // Re-created once a member with a leader takes the stream; then it sees a new write.
    wait_for(&c, Duration::from_secs(20), "the watch was re-created", || created.get() >= 2);
    put_eventually(&cluster.endpoints(), &key, "after");
    wait_for(&c, Duration::from_secs(20), "the watch saw the put", || !values.borrow().is_empty());
    drive_for(&c, Duration::from_millis(300));
    assert_eq!(*values.borrow(), ["after"], "moved after {moved:?}");
    assert!(watch.errors().is_empty(), "{:?}", watch.errors());
    assert!(keepalive.errors().is_empty(), "{:?}", keepalive.errors());
    w.cancel(|_| ());
    ka.cancel(|_| ());
    c.run();
}

/// Every health report: healthy or not, and the endpoint.
type Reports = Rc<RefCell<Vec<(bool, String)>>>;

/// A client checking health every [`HEALTH_INTERVAL`] that records each report.
fn health_client(endpoints: &[String]) -> (Client, Reports) {
    const HEALTH_INTERVAL: Duration = Duration::from_millis(300);
    let c =
        Client::new(Config::new().endpoints(endpoints).health_interval(HEALTH_INTERVAL)).unwrap();
    let reports: Reports = Rc::default();
    let r = reports.clone();
    c.on_health_change(move |healthy, endpoint| r.borrow_mut().push((healthy, endpoint.into())));
    (c, reports)
}

/// Drives `c` until etcd at `endpoint` answered `n` more health checks (made while `c` has
/// nothing else to do).
fn health_checks(c: &Client, endpoint: &str, n: f64) {
    let before = metric(endpoint, STATUS_HANDLED);
    wait_for(c, Duration::from_secs(10), "health checks were answered", || {
        metric(endpoint, STATUS_HANDLED) >= before + n
    });
}

#[test]
fn health_changes_are_reported_once_each_way() {
    let mut etcd = Etcd::start();
    let ep = etcd.endpoint();
    let (c, reports) = health_client(std::slice::from_ref(&ep));
    // Healthy from the start: checks run, nothing is reported.
    health_checks(&c, &ep, 3.0);
    assert_eq!(*reports.borrow(), []);

    etcd.pause();
    wait_for(&c, Duration::from_secs(10), "a report", || !reports.borrow().is_empty());
    drive_for(&c, Duration::from_secs(1)); // three more checks fail
    assert_eq!(*reports.borrow(), [(false, ep.clone())]);

    etcd.resume();
    wait_for(&c, Duration::from_secs(10), "a second report", || reports.borrow().len() > 1);
    health_checks(&c, &ep, 3.0);
    assert_eq!(*reports.borrow(), [(false, ep.clone()), (true, ep)]);
}

#[test]
fn a_health_callback_that_panicked_still_hears_the_next_change() {
    let mut etcd = Etcd::start();
    let ep = etcd.endpoint();
    let (c, reports) = health_client(std::slice::from_ref(&ep));
    let r = reports.clone();
    c.on_health_change(move |healthy, endpoint| {
        r.borrow_mut().push((healthy, endpoint.into()));
        if !healthy {
            panic!("callback panics");
        }
    });
    etcd.pause();
    // The loop catches the panic and goes on.
    let wait =
        || wait_for(&c, Duration::from_secs(10), "a report", || !reports.borrow().is_empty());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(wait)).unwrap_err();
    assert_eq!(caught.downcast_ref::<&str>(), Some(&"callback panics"));
    etcd.resume();
    wait_for(&c, Duration::from_secs(10), "a second report", || reports.borrow().len() > 1);
    assert_eq!(*reports.borrow(), [(false, ep.clone()), (true, ep)]);
}

#[test]
fn an_unhealthy_endpoint_is_left_for_the_next_one() {
    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    let proxy = Proxy::start(addr(&ep));
    let (c, reports) = health_client(&[proxy.endpoint(), ep.clone()]);
    health_checks(&c, &ep, 2.0);
    assert_eq!(proxy.accepted(), 1, "the checks go through the first endpoint");

    proxy.set_mode(Mode::Blackhole);
    wait_for(&c, Duration::from_secs(10), "a second report", || reports.borrow().len() > 1);
    health_checks(&c, &ep, 3.0);
    assert_eq!(*reports.borrow(), [(false, proxy.endpoint()), (true, ep)]);
    assert_eq!(connections_to(proxy.addr().port()), 0, "the unhealthy connection is closed");
    ok(&c, |cb| c.put("healthy", "again", PutOptions::new(), cb));
}

#[test]
fn an_observer_and_a_keepalive_without_auto_reconnect_end_with_the_first_failure() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(addr(&etcd.endpoint()));
    let c = support::client::client(&proxy.endpoint());
    let prefix = unique_prefix("no-reconnect");
    let election = format!("{prefix}election");
    let leases = [(); 3].map(|_| ok(&c, |cb| c.lease_grant(60, LeaseGrantOptions::new(), cb)).id);
    let leader = ok(&c, |cb| {
        c.election_campaign(election.clone(), leases[0], "first", cb);
    })
    .leader
    .expect("leader key");
    let once = StreamOptions::new().auto_reconnect(false);
    let streams: [Deliveries; 5] = Default::default();
    let [observe_once, keepalive_once, observe, keepalive, watch] = &streams;
    let (proclaimed, events): (Rc<RefCell<Vec<String>>>, Rc<Cell<usize>>) = Default::default();
    let (p, ev) = (proclaimed.clone(), events.clone());
    c.election_observe_with(election.clone(), once, observe_once.any());
    c.lease_keepalive_with(leases[1], once, keepalive_once.any());
    c.election_observe(
        election,
        observe.record(move |r: &evetcd::LeaderResponse| {
            let value = r.kv.as_ref().map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
            p.borrow_mut().extend(value);
        }),
    );
    c.lease_keepalive(leases[2], keepalive.any());
    c.watch(
        format!("{prefix}w"),
        WatchOptions::new(),
        watch.record(move |r: &WatchResponse| ev.set(ev.get() + r.events.len())),
    );
    drive_until(&[&c], Duration::from_secs(10), || streams.iter().all(|d| d.oks() > 0));

    proxy.reset_all();
    let cut = Instant::now();
    let what = "each stream without auto_reconnect ended, the other keepalive renewed";
    wait_for(&c, Duration::from_secs(10), what, || {
        observe_once.errors().len() == 1
            && keepalive_once.errors().len() == 1
            && keepalive.oks_since(cut) > 0
    });
    // The streams with the default options carry on, on a new connection.
    block_busy(&c, |cb| c.election_proclaim(leader, "second", cb)).expect("proclaim");
    block_busy(&c, |cb| c.put(format!("{prefix}w"), "v", PutOptions::new(), cb)).expect("put");
    wait_for(&c, Duration::from_secs(10), "the value and the put were seen", || {
        proclaimed.borrow().len() == 2 && events.get() == 1
    });
    drive_for(&c, Duration::from_millis(500));
    observe_once.one_unavailable("election_observe");
    keepalive_once.one_unavailable("keepalive");
    for d in [observe, keepalive, watch] {
        assert!(d.errors().is_empty(), "{:?}", d.errors());
    }
    assert_eq!(*proclaimed.borrow(), ["first", "second"], "each value once");
    assert_eq!(proxy.accepted(), 2, "one new connection");
    c.close();
}

#[test]
fn with_one_endpoint_an_unhealthy_verdict_keeps_the_connection() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(addr(&etcd.endpoint()));
    let (c, reports) = health_client(&[proxy.endpoint()]);
    let created = Rc::new(Cell::new(0u32));
    let cr = created.clone();
    c.watch("probe", WatchOptions::new(), move |r: Result<WatchResponse, EtcdError>| match r {
        Ok(resp) => cr.set(cr.get() + u32::from(resp.created)),
        Err(e) => assert_eq!(e.code(), Code::Cancelled, "only close() ends it: {e}"),
    });
    wait_for(&c, Duration::from_secs(10), "created", || created.get() == 1);
    // Alive, but answering after the 300 ms interval: unhealthy.
    proxy.set_mode(Mode::Delay(Duration::from_millis(500)));
    wait_for(&c, Duration::from_secs(10), "a report", || !reports.borrow().is_empty());
    drive_for(&c, Duration::from_secs(2));
    assert_eq!(proxy.accepted(), 1, "with one endpoint there is no next one: the link is kept");
    assert_eq!(created.get(), 1, "the watch was not re-created");
    c.close();
}
