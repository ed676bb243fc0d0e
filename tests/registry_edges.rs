//! Edges of `evetcd::registry` and `evetcd::config_source` found in review: a client closed
//! while a recipe waits out a backoff or has a put in flight (the recipe ends with CANCELLED,
//! no reconnect, no panic when an alarm owns the last handle of a source), and instance keys
//! that are not UTF-8.

mod support;

use evetcd::config_source::{ConfigEvent, ConfigSource};
use evetcd::registry::{register, watch_service, RegistrationEvent, ServiceEvent, ServiceInfo};
use evetcd::{Client, Code, Config, DeleteOptions, PutOptions};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::client::{client, drive_until, ok};
use support::proxy::Proxy;
use support::{refused_endpoint, unique_prefix, Etcd};

const STEP: Duration = Duration::from_secs(20);

fn recorder<T: 'static>() -> (Rc<RefCell<Vec<T>>>, impl FnMut(T) + 'static) {
    let heard = Rc::new(RefCell::new(Vec::new()));
    let h = heard.clone();
    (heard, move |t| h.borrow_mut().push(t))
}

const VALUE: &[u8] = br#"{"Op":0,"Addr":"h:1","Metadata":null}"#;

/// Keys are bytes: an instance under `{name}/` whose id is not UTF-8 must be tracked like
/// any other. `known` is filled from `Endpoint::key` (a lossy `String`) by the list, but
/// looked up by the raw key bytes by the watch, so its delete is never a `Removed`.
#[test]
fn watch_service_tells_removed_for_an_instance_whose_key_is_not_utf8() {
    let etcd = Etcd::start();
    let (w, writer) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let name = format!("{}svc", unique_prefix("non_utf8"));
    let mut odd = format!("{name}/").into_bytes();
    odd.push(0xff);
    let k = odd.clone();
    ok(&writer, |cb| writer.put(k, VALUE.to_vec(), PutOptions::new(), cb));

    let (heard, cb) = recorder::<ServiceEvent>();
    let sw = watch_service(&w, &name, cb);
    drive_until(&[&w], STEP, || !heard.borrow().is_empty());
    match &heard.borrow()[0] {
        ServiceEvent::Initial(s) => assert_eq!(s.endpoints.len(), 1, "{s:?}"),
        other => panic!("{other:?}"),
    }

    let k = odd.clone();
    ok(&writer, |cb| writer.delete(k, DeleteOptions::new(), cb));
    // A marker written after the delete: once it is told, the delete was processed.
    let marker = format!("{name}/marker");
    ok(&writer, |cb| writer.put(marker.clone(), VALUE.to_vec(), PutOptions::new(), cb));
    drive_until(&[&w], STEP, || {
        heard.borrow().iter().any(|e| matches!(e, ServiceEvent::Added(e) if e.key == marker))
    });
    let events = heard.borrow().clone();
    let left: Vec<String> = sw.endpoints().into_iter().map(|e| e.key).collect();
    sw.cancel();
    assert!(
        events.iter().any(|e| matches!(e, ServiceEvent::Removed(_))),
        "the non-UTF-8 instance was deleted but no Removed was told: {events:#?}"
    );
    assert_eq!(left, vec![marker], "watch_service's set diverged from etcd's");
}

/// `Client::close` ends the watch with CANCELLED; `watch_service` takes that as a failure to
/// retry, arms a backoff (after `close` already cleared the alarms) and lists again, so the
/// closed client reconnects and `run()` never returns.
#[test]
fn watch_service_stops_following_etcd_once_the_client_is_closed() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.endpoint().parse().unwrap());
    let w = client(&proxy.endpoint());
    let name = format!("{}svc", unique_prefix("closed"));
    let (heard, cb) = recorder::<ServiceEvent>();
    let _sw = watch_service(&w, &name, cb);
    drive_until(&[&w], STEP, || !heard.borrow().is_empty());
    let accepted = proxy.accepted();

    w.close();
    let until = Instant::now() + Duration::from_secs(3);
    drive_until(&[&w], Duration::from_secs(10), || Instant::now() > until);
    let events = heard.borrow().clone();
    assert!(
        w.is_idle() && proxy.accepted() == accepted,
        "after Client::close: idle {}, connections {accepted} -> {}, events {events:#?}",
        w.is_idle(),
        proxy.accepted()
    );
}

/// A client whose every call fails fast: nothing listens at its endpoint.
fn unreachable() -> Client {
    Client::new(
        Config::new()
            .endpoints([refused_endpoint()])
            .timeout(Duration::from_millis(500))
            .connect_timeout(Duration::from_millis(200)),
    )
    .expect("valid config")
}

/// Drives `c` until it is idle (at most 10 s); returns whether it got there.
fn settle(c: &Client) -> bool {
    let until = Instant::now() + Duration::from_secs(10);
    drive_until(&[c], Duration::from_secs(15), || c.is_idle() || Instant::now() > until);
    c.is_idle()
}

/// `RegistrationEvent::Failed`: "`None`: the registration ended (bad input, permission
/// denied, the client closed)". Closed while an attempt waits out its backoff, the alarm is
/// dropped by `close` and the registration stops without a word: no final `Failed`, and it
/// never tries again although the client stays usable.
#[test]
fn a_registration_closed_during_its_backoff_says_it_ended() {
    let c = unreachable();
    let info = ServiceInfo {
        name: format!("{}svc", unique_prefix("reg_backoff")),
        id: "i".into(),
        addr: "h:1".into(),
        metadata: serde_json::Value::Null,
    };
    let (heard, cb) = recorder::<RegistrationEvent>();
    let _r = register(&c, info, Duration::from_secs(30), cb);
    drive_until(&[&c], STEP, || {
        heard
            .borrow()
            .iter()
            .any(|e| matches!(e, RegistrationEvent::Failed { retry_in: Some(_), .. }))
    });
    c.close();
    assert!(settle(&c), "the closed client went idle");
    let events = heard.borrow().clone();
    assert!(
        matches!(
            events.last(),
            Some(RegistrationEvent::Failed { error, retry_in: None }) if error.code() == Code::Cancelled
        ),
        "closed during the backoff, the registration ended without saying so: {events:#?}"
    );
}

/// a82c296: "`CANCELLED` (the client was closed) is the last event". Not when the close
/// comes while a failed list waits out its backoff: the alarm is dropped, nothing is told.
#[test]
fn watch_service_closed_during_its_backoff_tells_cancelled() {
    let c = unreachable();
    let name = format!("{}svc", unique_prefix("ws_backoff"));
    let (heard, cb) = recorder::<ServiceEvent>();
    let _sw = watch_service(&c, &name, cb);
    drive_until(&[&c], STEP, || !heard.borrow().is_empty());
    c.close();
    assert!(settle(&c), "the closed client went idle");
    let events = heard.borrow().clone();
    assert!(
        matches!(events.last(), Some(ServiceEvent::Error(e)) if e.code() == Code::Cancelled),
        "closed during the backoff, watch_service stopped without CANCELLED: {events:#?}"
    );
}

/// config_source/mod.rs: "Client::close ──► one Error (CANCELLED), then the source no longer
/// follows etcd". Closed during the backoff after a failed read, the source hears nothing and
/// stays in `Backoff` with a dead alarm.
#[test]
fn a_config_source_closed_during_its_backoff_tells_cancelled() {
    let c = unreachable();
    let heard = Rc::new(RefCell::new(Vec::new()));
    let h = heard.clone();
    let source = ConfigSource::open(&c, "cfg/", move |_, e| h.borrow_mut().push(e));
    drive_until(&[&c], STEP, || !heard.borrow().is_empty());
    c.close();
    assert!(settle(&c), "the closed client went idle");
    let events: Vec<ConfigEvent> = heard.borrow().clone();
    assert!(
        matches!(events.last(), Some(ConfigEvent::Error(e)) if e.code() == Code::Cancelled),
        "closed during the backoff, the source stopped without CANCELLED: {events:#?} {source:?}"
    );
}

/// `Client::close` clears the alarms with the core borrowed (core/mod.rs `close`), dropping
/// each alarm's work there. watch_service's retry alarm owns its state, and so the user's
/// callback; when that callback holds the last handle of a `ConfigSource` (its handle was
/// dropped: "Dropping the handle does not [stop it]"), the source's `Drop` disarms its own
/// alarm through the core, which is still borrowed: a panic inside `Client::close`.
#[test]
fn closing_the_client_does_not_panic_when_an_alarm_owns_the_last_handle_of_a_source() {
    let c = unreachable();
    let source = ConfigSource::open(&c, "cfg/", |_, _| {});
    let errors = Rc::new(RefCell::new(0));
    let e = errors.clone();
    let sw = watch_service(&c, "svc", move |_| {
        let _keep = &source; // the program's config, used when the service changes
        *e.borrow_mut() += 1;
    });
    drop(sw);
    drive_until(&[&c], STEP, || *errors.borrow() > 0); // the list failed: its retry is armed
    let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.close()));
    assert!(closed.is_ok(), "Client::close panicked");
}

/// Closed while the registration's put is in flight, the put's CANCELLED makes
/// `session_ready` call `session.close`, a lease revoke on the closed client: it connects
/// again (register.rs, the put's error arm).
#[test]
fn a_registration_does_not_reconnect_a_client_closed_while_its_put_is_in_flight() {
    use support::proxy::Mode;
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.endpoint().parse().unwrap());
    let c = client(&proxy.endpoint());
    ok(&c, |cb| c.get("x", evetcd::GetOptions::new(), cb)); // connected
    proxy.set_mode(Mode::Delay(Duration::from_millis(700)));
    let info = ServiceInfo {
        name: format!("{}svc", unique_prefix("put_in_flight")),
        id: "i".into(),
        addr: "h:1".into(),
        metadata: serde_json::Value::Null,
    };
    let (heard, cb) = recorder::<RegistrationEvent>();
    let r = register(&c, info, Duration::from_secs(30), cb);
    drive_until(&[&c], STEP, || r.lease().is_some()); // granted: the put is sent
    let accepted = proxy.accepted();
    c.close();
    assert!(settle(&c), "the closed client went idle");
    let events = heard.borrow().clone();
    assert_eq!(
        proxy.accepted(),
        accepted,
        "the closed client connected again (events {events:#?})"
    );
}
