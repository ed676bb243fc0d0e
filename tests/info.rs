//! `Client::info()` against a real etcd: a fresh client is idle; a put connects it to its
//! endpoint; live watches, keepalives, observers and a call in flight are counted; a refused
//! first endpoint is recorded as a connect failure and the client ends on the second; a
//! reset link leaves `Connected`; with auth on, the state names the user and never holds the
//! password or the token; views report the client they share, a member view its own link.

mod support;

use evetcd::{
    AuthState, Client, ClientInfo, Config, GetOptions, LeaseGrantOptions, LinkState, PutOptions,
    WatchOptions,
};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::client::{block, client, drive_until, ok};
use support::proxy::Proxy;
use support::{refused_endpoint, Etcd};

const LIMIT: Duration = Duration::from_secs(15);

/// bcrypt at its lowest cost: every user add and authenticate hashes.
const FAST_BCRYPT: &str = "--bcrypt-cost=4";

/// (watches, keepalives, observers, pending calls).
fn counts(info: &ClientInfo) -> (usize, usize, usize, usize) {
    (info.watches, info.keepalives, info.observers, info.pending_calls)
}

#[test]
fn a_fresh_client_is_idle_and_a_put_connects_it_to_its_endpoint() {
    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    let created = Instant::now();
    let c = client(&ep);
    let info = c.info();
    assert_eq!((info.state, info.endpoint.as_deref()), (LinkState::Idle, None), "{info:?}");
    assert_eq!(info.endpoints, std::slice::from_ref(&ep));
    assert!(info.since >= created && info.since <= Instant::now(), "{info:?}");
    assert!(info.connect_failures.is_empty(), "{info:?}");
    assert_eq!(counts(&info), (0, 0, 0, 0));
    assert_eq!(info.auth, AuthState::None);

    c.put("k", "v", PutOptions::new(), |r| {
        r.expect("put");
    });
    assert_eq!(c.info().pending_calls, 1, "started, not yet answered");
    let before = Instant::now();
    c.run();
    let info = c.info();
    assert_eq!(info.state, LinkState::Connected, "{info:?}");
    assert_eq!(info.endpoint.as_deref(), Some(ep.as_str()));
    assert!(info.since >= before && info.since <= Instant::now(), "{info:?}");
    assert_eq!(counts(&info), (0, 0, 0, 0));

    // Views made with `with` and `namespaced` share the client: the same snapshot.
    assert_eq!(c.namespaced("app/").info(), info);
    assert_eq!(c.with(evetcd::CallOptions::new()).info(), info);
    // A member view has a link of its own: idle until it has work.
    let m = c.member(&ep).expect("member view");
    assert_eq!(m.info().state, LinkState::Idle);
    m.status(|r| {
        r.expect("status");
    });
    assert_eq!((m.info().pending_calls, c.info().pending_calls), (1, 0));
    c.run();
    assert_eq!(m.info().pending_calls, 0);
    assert_eq!(c.info().since, info.since, "the client's link did not change");
}

#[test]
fn watches_keepalives_observers_and_a_call_in_flight_are_counted() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let lease = ok(&c, |cb| c.lease_grant(30, LeaseGrantOptions::new(), cb)).id;
    let other = ok(&c, |cb| c.lease_grant(30, LeaseGrantOptions::new(), cb)).id;
    // The lock is held with `lease`: a second lock on it waits, in flight, without deadline.
    let held = ok(&c, |cb| {
        c.lock("info-lock", lease, cb);
    })
    .key;
    let created = Rc::new(Cell::new(0));
    let mut watches = Vec::new();
    for key in ["info/a", "info/b"] {
        let created = created.clone();
        watches.push(c.watch(key, WatchOptions::new(), move |r| {
            if r.expect("watch").created {
                created.set(created.get() + 1);
            }
        }));
    }
    let renewed = Rc::new(Cell::new(false));
    let r = renewed.clone();
    let keepalive = c.lease_keepalive(lease, move |res| r.set(res.expect("keepalive").ttl > 0));
    let observer = c.election_observe("info-election", |r| {
        r.expect("observe");
    });
    let waiting = c.lock("info-lock", other, |_| {});
    drive_until(&[&c], LIMIT, || created.get() == 2 && renewed.get());
    let info = c.info();
    assert_eq!(info.state, LinkState::Connected, "{info:?}");
    assert_eq!(counts(&info), (2, 1, 1, 1), "{info:?}");

    watches[0].cancel(|_| {});
    keepalive.cancel(|_| {});
    observer.cancel(|_| {});
    waiting.cancel();
    assert_eq!(counts(&c.info()), (1, 0, 0, 0));
    watches[1].cancel(|_| {});
    ok(&c, |cb| c.unlock(held, cb));
    assert_eq!(counts(&c.info()), (0, 0, 0, 0));
}

#[test]
fn a_refused_first_endpoint_is_recorded_and_a_reset_link_leaves_connected() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(format!("127.0.0.1:{}", etcd.client_port()).parse().unwrap());
    let refused = refused_endpoint();
    let config = Config::new().endpoints([refused.clone(), proxy.endpoint()]);
    let c = Client::new(config.timeout(Duration::from_secs(10))).unwrap();
    let before = Instant::now();
    ok(&c, |cb| c.get("k", GetOptions::new(), cb));
    let info = c.info();
    assert_eq!(info.state, LinkState::Connected, "{info:?}");
    assert_eq!(info.endpoint, Some(proxy.endpoint()), "ends on the second endpoint");
    assert_eq!(info.connect_failures.len(), 1, "{info:?}");
    let failure = &info.connect_failures[0];
    assert_eq!(failure.endpoint, refused);
    assert!(failure.error.contains("refused"), "{failure:?}");
    assert!(failure.at >= before && failure.at <= info.since, "{info:?}");

    // The proxy resets the connection: the client notices on its next turn.
    let connected_since = info.since;
    proxy.reset_all();
    drive_until(&[&c], LIMIT, || c.info().state != LinkState::Connected);
    let info = c.info();
    assert_eq!((info.state, info.endpoint.as_deref()), (LinkState::Idle, None), "{info:?}");
    assert!(info.since > connected_since && info.since <= Instant::now(), "{info:?}");
    assert_eq!(info.connect_failures.len(), 1, "a broken link is no connect failure");
    // And the next call connects again, to the next endpoint in turn and then the proxy.
    ok(&c, |cb| c.get("k", GetOptions::new(), cb));
    let info = c.info();
    assert_eq!(info.state, LinkState::Connected, "{info:?}");
    assert_eq!(info.connect_failures.len(), 2, "the refused endpoint again: {info:?}");
}

#[test]
fn with_auth_on_the_state_names_the_user_and_never_holds_the_password() {
    let etcd = Etcd::start_with(&[FAST_BCRYPT]);
    let ep = etcd.endpoint();
    let admin = client(&ep);
    ok(&admin, |cb| admin.user_add("root", "root-secret", cb));
    ok(&admin, |cb| admin.user_grant_role("root", "root", cb));
    ok(&admin, |cb| admin.auth_enable(cb));

    let config = Config::new().endpoints([ep.clone()]).timeout(Duration::from_secs(10));
    let c = Client::new(config.clone().user("root", "root-secret")).unwrap();
    assert_eq!(c.info().auth, AuthState::Unauthenticated { user: "root".into() });
    ok(&c, |cb| c.put("k", "v", PutOptions::new(), cb));
    let info = c.info();
    assert_eq!(info.auth, AuthState::Authenticated { user: Some("root".into()) });
    assert!(!format!("{info:?}").contains("root-secret"), "{info:?}");

    // Authenticated by the user's own call: the token is kept, never shown.
    let token = ok(&admin, |cb| admin.authenticate("root", "root-secret", cb)).token;
    let info = admin.info();
    assert_eq!(info.auth, AuthState::Authenticated { user: Some("root".into()) });
    let shown = format!("{info:?}");
    assert!(!shown.contains("root-secret") && !shown.contains(&token), "{shown}");

    let wrong = Client::new(config.user("root", "not-the-password")).unwrap();
    let err = block(&wrong, |cb| wrong.get("k", GetOptions::new(), cb)).unwrap_err();
    let AuthState::Failed { user, message } = wrong.info().auth else {
        panic!("{:?}", wrong.info())
    };
    assert_eq!((user.as_str(), message.as_str()), ("root", err.message()));
    assert!(message.contains("authentication failed"), "{message}");
    assert!(!format!("{:?}", wrong.info()).contains("not-the-password"));
}
