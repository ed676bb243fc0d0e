//! The service registry (`evetcd::registry`, issue 19) end to end, against real etcd and Go's
//! `naming/endpoints` (through the Go helper, `tests/goclient`):
//!
//! - what `register` writes is byte for byte what Go's `endpoints.Manager` writes, Go's
//!   endpoint watch sees our instances come and go, and our `watch_service` sees Go's;
//! - a lost lease (expired while the client was cut off, revoked by someone else) is a
//!   `Removed` for watchers, and the registration comes back on a new lease by itself;
//! - a registration survives kill -9 of the member in use, and after a blackhole longer than
//!   its TTL it is back within one TTL of the network returning;
//! - `watch_service` ends with etcd's set under 100 registrations coming and going, and
//!   after a compaction while it was cut off it lists again and tells only the difference;
//! - bad values under the prefix and bad `register` input (refused by `register` or by etcd)
//!   are errors, never panics, and what etcd refuses is not retried;
//! - `deregister` (twice, or before the lease is even granted, or while retrying) leaves no
//!   key, no lease and nothing running; closing the client ends registrations and watches
//!   with a last event that says so.
//!
//! Clients with a live registration or watch never go idle, so every wait drives all the
//! clients of a test until a condition holds (`drive_until`); plain reads go through
//! `support::registry::call`, which drives them all too. No sleep synchronises anything; the
//! two fault tests measure time (how long a blackhole lasts, how soon the instance is back).
//!
//! Without Go (and without `CI=true`) the Go tests print `SKIP: go not found: <test>`.

mod support;

use evetcd::concurrency::Lost;
use evetcd::registry::{RegistrationEvent, ServiceEvent};
use evetcd::{
    Client, Code, CompactOptions, Config, GetOptions, LeaseTimeToLiveResponse, PutOptions,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::client::{client, drive_until};
use support::goclient::{skip_without_go, GoClient};
use support::proxy::{Mode, Proxy};
use support::registry::*;
use support::{unique_prefix, Cluster, Etcd};

fn service(test: &str) -> String {
    format!("{}svc", unique_prefix(test))
}

fn put(drive: &[&Client], c: &Client, key: &str, value: &[u8]) -> i64 {
    let value = value.to_vec();
    ok_on(drive, |cb| c.put(key.to_owned(), value, PutOptions::new(), cb))
        .header
        .expect("header")
        .revision
}

fn time_to_live(drive: &[&Client], c: &Client, lease: i64) -> LeaseTimeToLiveResponse {
    ok_on(drive, |cb| c.lease_time_to_live(lease, false, cb))
}

fn registration_events(heard: &Heard<RegistrationEvent>) -> Vec<&'static str> {
    heard
        .all()
        .iter()
        .map(|e| match e {
            RegistrationEvent::Registered { .. } => "Registered",
            RegistrationEvent::Reregistered { .. } => "Reregistered",
            RegistrationEvent::Lost(Lost::Expired) => "Lost(Expired)",
            RegistrationEvent::Lost(Lost::Revoked) => "Lost(Revoked)",
            RegistrationEvent::Lost(_) => "Lost(other)",
            RegistrationEvent::Failed { .. } => "Failed",
        })
        .collect()
}

/// Metadata that exercises every difference between serde_json's and Go's output: `<`, `>`,
/// `&`, U+2028/9, control characters, keys out of order at every level, integers beyond
/// 2^53, and floats (written as Go's float64 formatting writes them, since the helper passes
/// numbers through as written).
const TRICKY: &str = r#"{"zone":"eu<1>&b","weights":{"z":3,"a":0.5,"m":[1e-7,123.25,-2,9007199254740993,-2.5]},
    "html":"<a href=\"x\">&amp;</a>","sep":"\u2028 \u2029","ctl":"\u0000\u0001\b\f\n\r\t\u007f\"\\/",
    "text":"😀 é ☃","empty":{},"list":[],"deep":{"y":{"b":[{"d":1,"c":null}],"a":true}},"f":false,"nil":null}"#;

#[test]
fn register_writes_byte_for_byte_what_gos_endpoints_manager_writes() {
    let test = "register_writes_byte_for_byte_what_gos_endpoints_manager_writes";
    if skip_without_go(test) {
        return;
    }
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let go = GoClient::start(&etcd.endpoint());
    let name = service("bytes");
    let tricky: Value = serde_json::from_str(TRICKY).expect("valid JSON");
    let cases: Vec<(&str, Option<Value>)> = vec![
        ("10.0.0.1:8080", Some(tricky)),
        ("host<&>:1", Some(json!("a string <with> & \u{2028}"))),
        ("[::1]:2379", None),
        ("h:2", Some(json!(null))),
        ("h:3", Some(json!(42))),
        ("h:4", Some(json!([0.5, {"b": 1, "a": 2}, "x"]))),
        ("", Some(json!({}))),
    ];
    let mut registrations = Vec::new();
    for (i, (addr, metadata)) in cases.iter().enumerate() {
        let mut add =
            json!({"cmd": "endpoints_add", "target": name, "name": format!("go{i}"), "addr": addr});
        if let Some(m) = metadata {
            add["metadata"] = m.clone();
        }
        go.ok(add);
        let meta = metadata.clone().unwrap_or(Value::Null);
        let info = svc(&name, &format!("rs{i}"), addr, meta);
        registrations.push(reg(&c, info, Duration::from_secs(30)));
    }
    drive_until(&[&c], STEP, || registrations.iter().all(|(_, h)| up(h)));

    let kvs = raw(&[&c], &c, &name);
    assert_eq!(kvs.len(), 2 * cases.len(), "{kvs:?}");
    for i in 0..cases.len() {
        let value = |id: String| {
            let key = format!("{name}/{id}");
            let kv =
                kvs.iter().find(|kv| kv.key == key.as_bytes()).unwrap_or_else(|| panic!("{key}"));
            kv.value.clone()
        };
        let (ours, gos) = (value(format!("rs{i}")), value(format!("go{i}")));
        assert_eq!(text(&ours), text(&gos), "case {i}: ours, then Go's");
        assert_eq!(ours, gos, "case {i}: the bytes");
    }
    // Go escapes what HTML would misread; so must we (not just agree with a helper gone wrong).
    let first = text(&kvs.iter().find(|kv| kv.key.ends_with(b"/rs0")).unwrap().value);
    assert!(first.starts_with(
        r#"{"Op":0,"Addr":"10.0.0.1:8080","Metadata":{"ctl":"\u0000\u0001\b\f\n\r\t"#
    ));
    assert!(first.contains(r#""zone":"eu\u003c1\u003e\u0026b""#), "{first}");
    assert!(first.contains(r#""sep":"\u2028 \u2029""#), "{first}");
    assert!(first.contains(r#"[1e-7,123.25,-2,9007199254740993,-2.5]"#), "{first}");

    let done = Heard::new();
    for (r, _) in &registrations {
        r.deregister(done.callback());
    }
    drive_until(&[&c], STEP, || done.len() == registrations.len());
    assert!(done.all().iter().all(Result::is_ok), "{:?}", done.all());
}

#[test]
fn go_and_evetcd_see_each_others_registrations_come_and_go() {
    let test = "go_and_evetcd_see_each_others_registrations_come_and_go";
    if skip_without_go(test) {
        return;
    }
    let etcd = Etcd::start();
    let (r, w) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let go = GoClient::start(&etcd.endpoint());
    let name = service("interop");
    let (ours, gos) = (format!("{name}/rs1"), format!("{name}/go1"));
    let gw = go.ok(json!({"cmd": "endpoints_watch", "target": name})).id();

    // Ours, seen by Go's watch.
    let meta = json!({"zone": "a<b>", "weight": 0.5});
    let (registration, heard) =
        reg(&r, svc(&name, "rs1", "10.0.0.1:80", meta.clone()), Duration::from_secs(10));
    drive_until(&[&r], STEP, || up(&heard));
    let ev = go.event(gw);
    assert_eq!((ev.str("event"), ev.str("op"), ev.str("key")), ("update", "add", &*ours), "{ev:?}");
    assert_eq!((ev.str("addr"), &ev["metadata"]), ("10.0.0.1:80", &meta));

    // Go's, seen by ours.
    let (_watch, seen) = watch(&w, &name);
    drive_until(&[&r, &w], STEP, || initial(&seen).is_some());
    let first = initial(&seen).unwrap();
    assert_eq!(
        set_of(&first.endpoints),
        Set::from([(ours.clone(), ("10.0.0.1:80".into(), meta.clone()))])
    );
    let go_meta = json!({"version": "1.2", "tags": ["x", "y"]});
    go.ok(json!({"cmd": "endpoints_add", "target": name, "name": "go1", "addr": "10.0.0.2:80", "metadata": go_meta}));
    let ev = go.event(gw);
    assert_eq!((ev.str("op"), ev.str("key")), ("add", &*gos), "Go's own, to its watch");
    drive_until(&[&r, &w], STEP, || seen.len() >= 2);
    match &seen.all()[1] {
        ServiceEvent::Added(e) => {
            assert_eq!(
                (e.key.as_str(), e.id.as_str(), e.addr.as_str()),
                (&*gos, "go1", "10.0.0.2:80")
            );
            assert_eq!(e.metadata, go_meta);
        }
        other => panic!("expected Go's endpoint Added, got {other:?}"),
    }
    let listed = discovered(&[&r, &w], &w, &name);
    assert_eq!(
        listed.endpoints.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        [&*gos, &*ours]
    );
    assert!(listed.invalid.is_empty());
    let go_list = go.ok(json!({"cmd": "endpoints_list", "target": name}));
    let go_keys: Vec<&String> = go_list["endpoints"].as_object().unwrap().keys().collect();
    assert_eq!(go_keys, [&gos, &ours], "Go lists ours too");

    // Both go.
    let done = Heard::new();
    registration.deregister(done.callback());
    drive_until(&[&r, &w], STEP, || done.len() == 1 && seen.len() >= 3);
    assert!(done.all()[0].is_ok());
    let ev = go.event(gw);
    assert_eq!((ev.str("op"), ev.str("key")), ("delete", &*ours), "{ev:?}");
    go.ok(json!({"cmd": "endpoints_delete", "target": name, "name": "go1"}));
    drive_until(&[&r, &w], STEP, || seen.len() >= 4);
    let events: Vec<_> = seen.all().iter().map(brief).collect();
    let b = |k: &str, key: &str, addr: &str| (k.to_owned(), key.to_owned(), addr.to_owned());
    assert_eq!(
        events,
        [
            b("Initial", "1 endpoints", ""),
            b("Added", &gos, "10.0.0.2:80"),
            b("Removed", &ours, "10.0.0.1:80"),
            b("Removed", &gos, "10.0.0.2:80"),
        ]
    );
    assert_eq!(registration_events(&heard), ["Registered"], "nothing after deregister");
    let ev = go.event(gw);
    assert_eq!((ev.str("op"), ev.str("key")), ("delete", &*gos), "{ev:?}");
    go.cancel(gw).expect_err("cancelled");
}

#[test]
fn an_instance_whose_process_stops_is_removed_once_its_lease_expires() {
    let etcd = Etcd::start();
    let (frozen, w) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let name = service("expiry");
    // The watcher lists first, so that the instance arrives as `Added`.
    let (_watch, seen) = watch(&w, &name);
    drive_until(&[&w], STEP, || seen.len() >= 1);
    let (_registration, heard) =
        reg(&frozen, svc(&name, "a", "h:1", json!(null)), Duration::from_secs(1));
    drive_until(&[&frozen, &w], STEP, || up(&heard) && seen.any(|e| added(e).is_some()));
    let lease = lease_of(&heard);

    // The registering process stops running its loop: nobody renews the lease.
    let stopped = Instant::now();
    drive_until(&[&w], STEP, || seen.any(|e| removed(e).is_some()));
    let after = stopped.elapsed();
    assert!(after >= Duration::from_millis(500), "removed after {after:?}: not by the lease");
    let events: Vec<_> = seen.all().iter().map(brief).collect();
    assert_eq!(events[1..].iter().map(|b| b.0.as_str()).collect::<Vec<_>>(), ["Added", "Removed"]);
    assert_eq!(time_to_live(&[&w], &w, lease).ttl, -1, "the lease expired");
    assert!(raw(&[&w], &w, &name).is_empty());
}

#[test]
fn a_revoked_lease_is_lost_then_registered_again_on_a_new_lease_and_watchers_see_it_return() {
    let etcd = Etcd::start();
    let (r, w) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let name = service("revoked");
    let key = format!("{name}/b");
    let (registration, heard) =
        reg(&r, svc(&name, "b", "h:2", json!({"w": 1})), Duration::from_secs(3));
    drive_until(&[&r], STEP, || up(&heard));
    let (_watch, seen) = watch(&w, &name);
    drive_until(&[&r, &w], STEP, || initial(&seen).is_some());
    let first = lease_of(&heard);

    ok_on(&[&r, &w], |cb| w.lease_revoke(first, cb));
    drive_until(&[&r, &w], STEP, || registration_events(&heard).len() >= 3 && seen.len() >= 3);
    assert_eq!(registration_events(&heard), ["Registered", "Lost(Revoked)", "Reregistered"]);
    let second = lease_of(&heard);
    assert_ne!(second, first, "a new lease");
    assert_eq!(registration.lease(), Some(second));
    assert!(registration.is_registered());
    let events: Vec<_> = seen.all().iter().map(brief).collect();
    let b = |k: &str| (k.to_owned(), key.clone(), "h:2".to_owned());
    assert_eq!(events[1..], [b("Removed"), b("Added")]);
    let ServiceEvent::Added(back) = &seen.all()[2] else { unreachable!() };
    assert_eq!((back.lease, &back.metadata), (second, &json!({"w": 1})));
    let kv = raw(&[&r, &w], &w, &name);
    assert_eq!((kv.len(), kv[0].lease), (1, second));
}

#[test]
fn a_registration_survives_kill_9_of_the_member_it_is_connected_to() {
    let mut cluster = Cluster::start(3);
    // The harshest member to lose: the leader. The registering client is configured with
    // all three, the leader first, so it connects there.
    let lost = (0..50).find_map(|_| cluster.leader_index()).expect("a leader");
    let mut endpoints = cluster.endpoints();
    endpoints.rotate_left(lost);
    let r = Client::new(Config::new().endpoints(endpoints.clone()).timeout(Duration::from_secs(5)))
        .expect("config");
    let survivor = cluster.endpoints()[(lost + 1) % 3].clone();
    let w = client(&survivor);
    let name = service("kill9");
    let ttl = Duration::from_secs(3);
    // The watcher lists first, so that the instance arrives as `Added` (registered before
    // the list, it would be in `Initial`).
    let (_watch, seen) = watch(&w, &name);
    drive_until(&[&w], STEP, || seen.len() >= 1);
    let (registration, heard) = reg(&r, svc(&name, "i", "h:1", json!("m")), ttl);
    drive_until(&[&r, &w], STEP, || up(&heard) && seen.any(|e| added(e).is_some()));
    assert_eq!(
        r.info().endpoint.as_deref(),
        Some(endpoints[0].as_str()),
        "connected to the leader"
    );
    let lease = lease_of(&heard);

    cluster.members[lost].kill();
    let killed = Instant::now();
    drive_until(&[&r, &w], STEP, || killed.elapsed() > 2 * ttl + Duration::from_secs(1));
    assert_ne!(r.info().endpoint.as_deref(), Some(endpoints[0].as_str()), "moved on");
    assert_eq!(registration_events(&heard), ["Registered"], "never lost: {:?}", heard.all());
    assert!(registration.is_registered());
    let after: Vec<_> = seen.all().iter().map(brief).collect();
    assert_eq!(after.len(), 2, "no Removed (nor anything else): {after:?}");
    let listed = discovered(&[&r, &w], &w, &name);
    assert_eq!(listed.endpoints.len(), 1);
    assert_eq!(listed.endpoints[0].lease, lease, "the same lease all along");
    assert!(time_to_live(&[&r, &w], &w, lease).ttl > 0);
}

#[test]
fn after_a_blackhole_longer_than_the_ttl_the_instance_is_back_within_one_ttl_of_the_network_returning(
) {
    // The link itself survives the cut (its PINGs are answered once the network returns).
    blackhole("blackhole", Mode::Blackhole, |_, _, cut| cut.elapsed() >= 3 * BLACKHOLE_TTL);
}

#[test]
fn after_a_blackhole_long_enough_to_drop_the_link_the_instance_is_back_within_one_ttl_too() {
    // The cut lasts until an unanswered PING ended the link and the client made a new one
    // (through the proxy, which accepts it and forwards nothing), so the network returns
    // under a fresh link and streams re-opened during the cut.
    blackhole("blackhole_relink", Mode::Blackhole, |r, _, cut| {
        let since = r.info().since;
        cut.elapsed() >= 3 * BLACKHOLE_TTL && since > cut && since.elapsed() >= BLACKHOLE_TTL / 2
    });
}

#[test]
fn after_a_partition_that_refuses_reconnects_the_instance_is_back_within_one_ttl_too() {
    // The link goes silent, and once a PING ended it every reconnect is refused (the host is
    // unreachable rather than silent) until the network returns.
    blackhole("blackhole_refused", Mode::Refuse, |_, refused, cut| {
        cut.elapsed() >= 3 * BLACKHOLE_TTL && refused >= 3
    });
}

const BLACKHOLE_TTL: Duration = Duration::from_secs(2);

/// A registration with a TTL of 2 s through a proxy whose link goes silent, and whose new
/// connections get `new` (silence too, or refused), until
/// `over(client, connections accepted since the cut, cut)`; meanwhile a
/// direct watcher sees the instance removed, and once the network returns it must be back
/// within one TTL.
fn blackhole(test: &str, new: Mode, over: impl Fn(&Client, usize, Instant) -> bool) {
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.endpoint().parse().expect("an address"));
    // A production setting for a link that may silently die: PINGs every 5 s (the most often
    // etcd allows), dead after 2 s without an answer; 5 s call deadline, 2 s to connect.
    let config = Config::new()
        .endpoints([proxy.endpoint()])
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .keepalive(Duration::from_secs(5), Duration::from_secs(2));
    let r = Client::new(config).expect("config");
    let w = client(&etcd.endpoint());
    let name = service(test);
    let ttl = BLACKHOLE_TTL;
    let (_watch, seen) = watch(&w, &name);
    drive_until(&[&w], STEP, || initial(&seen).is_some());
    let (registration, heard) = reg(&r, svc(&name, "i", "h:1", json!(null)), ttl);
    drive_until(&[&r, &w], STEP, || up(&heard) && seen.len() == 2);
    let first = lease_of(&heard);

    proxy.set_mode(Mode::Blackhole);
    proxy.set_mode(new); // Refuse keeps the existing link silent
    let (cut, before) = (Instant::now(), proxy.accepted());
    drive_until(&[&r, &w], STEP, || over(&r, proxy.accepted() - before, cut));
    let gone = seen.when_since(1, |e| removed(e).is_some()).expect("the key went with the lease");
    assert!(gone - cut >= ttl / 2, "removed {:?} into the cut", gone - cut);
    assert_eq!(registration_events(&heard), ["Registered"], "nothing to hear while cut off");

    proxy.set_mode(Mode::Pass);
    let healed = Instant::now();
    drive_until(&[&r, &w], STEP, || seen.len() >= 4 && registration.is_registered());
    let back = seen.when_since(3, |e| added(e).is_some()).expect("Added again") - healed;
    let info = r.info();
    eprintln!(
        "{test}: removed {:?} into a cut of {:?}, back {back:?} after it healed; link {:?} since {:?} into the cut",
        gone - cut,
        healed - cut,
        info.state,
        info.since.checked_duration_since(cut),
    );
    assert!(back <= ttl, "back {back:?} after the network returned (TTL {ttl:?})");
    assert_eq!(registration_events(&heard), ["Registered", "Lost(Expired)", "Reregistered"]);
    assert_ne!(lease_of(&heard), first);
    let events: Vec<_> = seen.all().iter().map(|e| brief(e).0).collect();
    assert_eq!(events, ["Initial", "Added", "Removed", "Added"]);
}

#[test]
fn watch_service_ends_with_etcds_set_after_100_registrations_come_and_go() {
    let etcd = Etcd::start();
    // The watcher goes through a proxy that resets its link twice during the churn: it must
    // resume with nothing lost or told twice (`applied` checks every event).
    let proxy = Proxy::start(etcd.endpoint().parse().expect("an address"));
    let mut clients: Vec<Client> = (0..3).map(|_| client(&etcd.endpoint())).collect();
    clients.push(client(&proxy.endpoint()));
    let (a, b, checker, w) = (&clients[0], &clients[1], &clients[2], &clients[3]);
    let all = [a, b, w, checker];
    let name = service("hundred");
    let ttl = Duration::from_secs(3);
    let (service_watch, seen) = watch(w, &name);
    drive_until(&all, STEP, || initial(&seen).is_some());
    let on = |i: usize| if i % 2 == 0 { a } else { b };
    let regs: Vec<_> = (0..100)
        .map(|i| {
            reg(
                on(i),
                svc(&name, &format!("{i:02}"), &format!("10.0.0.{i}:80"), json!({"i": i})),
                ttl,
            )
        })
        .collect();
    drive_until(&all, STEP, || regs.iter().all(|(_, h)| up(h)));
    let revoked: Vec<i64> = regs[20..30].iter().map(|(_, h)| lease_of(h)).collect();

    // At once: 0..19 deregistered (0..9 registered again elsewhere with a new address, racing
    // their own deregistration), the leases of 20..29 revoked by another client.
    let deregistered = Heard::new();
    for (r, _) in &regs[..20] {
        r.deregister(deregistered.callback());
    }
    let again: Vec<_> = (0..10)
        .map(|i| {
            reg(
                on(i + 1),
                svc(&name, &format!("{i:02}"), &format!("10.1.0.{i}:80"), json!({"i": i})),
                ttl,
            )
        })
        .collect();
    let revokes = Heard::new();
    for &lease in &revoked {
        let h = revokes.clone();
        checker.lease_revoke(lease, move |res| h.push(res.map(|_| ())));
    }
    drive_until(&all, STEP, || deregistered.len() >= 5 && seen.any(|e| removed(e).is_some()));
    proxy.reset_all();
    let told = seen.len();
    drive_until(&all, STEP, || revokes.len() == 10 && proxy.accepted() == 2 && seen.len() > told);
    proxy.reset_all();
    drive_until(&all, STEP, || {
        deregistered.len() == 20
            && revokes.len() == 10
            && again.iter().all(|(_, h)| up(h))
            && regs[20..30].iter().all(|(_, h)| up(h) && h.len() == 3)
    });
    assert!(deregistered.all().iter().all(Result::is_ok), "{:?}", deregistered.all());
    assert!(revokes.all().iter().all(Result::is_ok), "{:?}", revokes.all());
    for (i, (_, h)) in regs[20..30].iter().enumerate() {
        assert_eq!(registration_events(h), ["Registered", "Lost(Revoked)", "Reregistered"], "{i}");
    }

    // Settled: etcd holds 0..9 (new addresses) and 20..99.
    let etcd_set = discovered(&all, checker, &name);
    let expected: Set = (0..10)
        .map(|i| (i, format!("10.1.0.{i}:80")))
        .chain((20..100).map(|i| (i, format!("10.0.0.{i}:80"))))
        .map(|(i, addr)| (format!("{name}/{i:02}"), (addr, json!({"i": i}))))
        .collect();
    assert_eq!(set_of(&etcd_set.endpoints), expected);
    drive_until(&all, STEP, || set_of(&service_watch.endpoints()) == expected);
    assert_eq!(service_watch.endpoints(), etcd_set.endpoints, "leases and revisions too");
    assert_eq!(applied(&seen.all()), expected, "the events told add up to etcd's set");
    let kvs = raw(&all, checker, &name);
    let raw_keys: Vec<String> = kvs.iter().map(|kv| text(&kv.key)).collect();
    assert_eq!(raw_keys, expected.keys().cloned().collect::<Vec<_>>());
    assert!(seen
        .all()
        .iter()
        .all(|e| !matches!(e, ServiceEvent::Error(_) | ServiceEvent::Invalid(_))));
    let links = proxy.accepted();
    assert!(links >= 3, "the watcher reconnected after each reset ({links} connections)");
}

#[test]
fn after_a_compaction_while_cut_off_watch_service_lists_again_and_tells_only_the_difference() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.endpoint().parse().expect("an address"));
    let w = client(&proxy.endpoint());
    let (r, checker) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let name = service("compacted");
    let ttl = Duration::from_secs(30);
    let meta = json!({"v": 1});
    let mut regs: std::collections::BTreeMap<&str, _> = ["a", "b", "c", "d"]
        .into_iter()
        .map(|id| (id, reg(&r, svc(&name, id, &format!("{id}:1"), meta.clone()), ttl)))
        .collect();
    drive_until(&[&r], STEP, || regs.values().all(|(_, h)| up(h)));
    let (watch, seen) = watch(&w, &name);
    drive_until(&[&r, &w], STEP, || initial(&seen).is_some());
    assert_eq!(initial(&seen).unwrap().endpoints.len(), 4);

    // Cut off: its connection is reset while its loop is not running, so it only notices
    // once everything below is done.
    proxy.reset_all();
    let cut = [&r, &checker];
    let deregister = |id: &str| {
        let (registration, _) = &regs[id];
        ok_on(&cut, |cb| registration.deregister(cb))
    };
    deregister("b");
    deregister("c");
    deregister("d");
    let again = |id: &str, addr: &str| {
        let (registration, heard) = reg(&r, svc(&name, id, addr, meta.clone()), ttl);
        drive_until(&cut, STEP, || up(&heard));
        (registration, heard)
    };
    regs.insert("c", again("c", "c:2")); // moved
    regs.insert("d", again("d", "d:1")); // the same again, on a new lease
    regs.insert("e", again("e", "e:1")); // new
    let (f, _) = again("f", "f:1"); // came and went
    ok_on(&cut, |cb| f.deregister(cb));
    let revision = put(&cut, &checker, &format!("{name}/g"), b"not json");
    ok_on(&cut, |cb| checker.compact(revision, CompactOptions::new().physical(true), cb));

    let from = seen.len();
    let target = discovered(&cut, &checker, &name);
    let all = [&r, &w, &checker];
    drive_until(&all, STEP, || watch.endpoints() == target.endpoints && seen.len() >= from + 4);
    let events: Vec<_> = seen.since(from).iter().map(brief).collect();
    let k = |id: &str| format!("{name}/{id}");
    let b = |kind: &str, id: &str, addr: &str| (kind.to_owned(), k(id), addr.to_owned());
    assert_eq!(
        events,
        [
            b("Removed", "b", "b:1"),
            b("Modified", "c", "c:2"),
            b("Added", "e", "e:1"),
            b("Invalid", "g", "")
        ],
        "only the difference, none of the steps between"
    );
    assert_eq!(applied(&seen.all()), set_of(&target.endpoints));
    let d = watch.endpoints().into_iter().find(|e| e.key == k("d")).unwrap();
    assert_eq!(d.lease, lease_of(&regs["d"].1), "the set holds d's new lease");
    assert_eq!(target.invalid.len(), 1);
}

#[test]
fn values_that_are_not_endpoints_are_reported_as_invalid_for_their_key_and_skipped() {
    let etcd = Etcd::start();
    let (c, w) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let name = service("invalid");
    let k = |id: &str| format!("{name}/{id}");
    let valid = |addr: &str| format!(r#"{{"Op":0,"Addr":"{addr}","Metadata":null}}"#).into_bytes();
    put(&[&c], &c, &k("ok1"), &valid("h:1"));
    put(&[&c], &c, &k("bad1"), b"not json");
    put(&[&c], &c, &k("bad2"), b"[1,2]");
    put(&[&c], &c, &k("bad3"), br#"{"Op":0,"Addr":5}"#);

    let listed = discovered(&[&c], &c, &name);
    assert_eq!(listed.endpoints.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["ok1"]);
    let bad: Vec<&str> = listed.invalid.iter().map(|b| b.key.as_str()).collect();
    assert_eq!(bad, [k("bad1"), k("bad2"), k("bad3")]);
    assert!(listed.invalid.iter().all(|b| b.mod_revision > 0 && !b.error.is_empty()));

    let (watch, seen) = watch(&w, &name);
    drive_until(&[&w], STEP, || seen.len() >= 1);
    let first = initial(&seen).expect("Initial first");
    // The keys refused at the start are told once, in Initial's `invalid`.
    assert_eq!((first.endpoints, first.invalid), (listed.endpoints, listed.invalid));

    // Live changes: a new bad key, a valid instance turned bad (gone from the set), a bad
    // one turned valid, a bad one still bad, and a valid one last as a fence.
    put(&[&c, &w], &c, &k("bad4"), b"{");
    put(&[&c, &w], &c, &k("ok1"), b"\xff\xfe");
    put(&[&c, &w], &c, &k("bad1"), &valid("h:5"));
    put(&[&c, &w], &c, &k("bad2"), br#""just a string""#);
    put(&[&c, &w], &c, &k("fence"), &valid("h:9"));
    drive_until(&[&w], STEP, || seen.any(|e| added(e) == Some(&k("fence"))));
    let events: Vec<_> = seen.since(1).iter().map(brief).collect();
    let b = |kind: &str, id: &str, addr: &str| (kind.to_owned(), k(id), addr.to_owned());
    assert_eq!(
        events,
        [
            b("Invalid", "bad4", ""),
            b("Removed", "ok1", "h:1"),
            b("Invalid", "ok1", ""),
            b("Added", "bad1", "h:5"),
            b("Invalid", "bad2", ""),
            b("Added", "fence", "h:9"),
        ]
    );
    let ids: Vec<String> = watch.endpoints().into_iter().map(|e| e.id).collect();
    assert_eq!(ids, ["bad1", "fence"]);
    let listed = discovered(&[&c, &w], &c, &name);
    assert_eq!(listed.endpoints, watch.endpoints());
    let bad: Vec<&str> = listed.invalid.iter().map(|b| b.key.as_str()).collect();
    assert_eq!(bad, [k("bad2"), k("bad3"), k("bad4"), k("ok1")]);
}

#[test]
fn register_refuses_bad_input_through_the_callback_with_invalid_argument() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let name = service("badinput");
    let cases = [
        ("ttl 0", svc(&name, "a", "h:1", json!(null)), Duration::ZERO),
        ("ttl 1.5 s", svc(&name, "b", "h:1", json!(null)), Duration::from_millis(1500)),
        ("empty id", svc(&name, "", "h:1", json!(null)), Duration::from_secs(5)),
        ("empty name", svc("", "d", "h:1", json!(null)), Duration::from_secs(5)),
    ];
    let regs: Vec<_> = cases.iter().map(|(_, info, ttl)| reg(&c, info.clone(), *ttl)).collect();
    assert!(regs.iter().all(|(_, h)| h.len() == 0), "told from inside register()");
    drive_until(&[&c], STEP, || regs.iter().all(|(_, h)| h.len() == 1) && c.is_idle());
    for ((what, _, _), (registration, heard)) in cases.iter().zip(&regs) {
        match &heard.all()[..] {
            [RegistrationEvent::Failed { error, retry_in: None }] => {
                assert_eq!(error.code(), Code::InvalidArgument, "{what}: {error}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert!(!registration.is_registered(), "{what}");
        let done = Heard::new();
        registration.deregister(done.callback());
        drive_until(&[&c], STEP, || done.len() == 1);
        assert!(done.all()[0].is_ok(), "{what}: deregistering a refused registration");
    }
    c.run();
    assert!(regs.iter().all(|(_, h)| h.len() == 1), "nothing more told");
    let count =
        ok_on(&[&c], |cb| c.get(vec![0u8], GetOptions::new().from_key(true).count_only(true), cb));
    assert_eq!(count.count, 0, "nothing written");
}

#[test]
fn deregister_twice_deletes_the_key_revokes_the_lease_and_silences_the_callback() {
    let etcd = Etcd::start();
    let (r, checker) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let name = service("deregister");
    let (registration, heard) =
        reg(&r, svc(&name, "i", "h:1", json!(null)), Duration::from_secs(3));
    drive_until(&[&r], STEP, || up(&heard));
    let lease = lease_of(&heard);
    assert_eq!(raw(&[&r, &checker], &checker, &name).len(), 1);

    let done = Heard::new();
    registration.deregister(done.callback());
    registration.deregister(done.callback());
    drive_until(&[&r, &checker], STEP, || done.len() == 2);
    registration.deregister(done.callback());
    drive_until(&[&r, &checker], STEP, || done.len() == 3);
    assert!(done.all().iter().all(Result::is_ok), "{:?}", done.all());
    assert!(raw(&[&r, &checker], &checker, &name).is_empty(), "the key is gone");
    assert_eq!(time_to_live(&[&r, &checker], &checker, lease).ttl, -1, "the lease is revoked");
    assert!(!registration.is_registered());
    // Nothing keeps running for it: no keepalive, no attempt, no alarm.
    drive_until(&[&r], STEP, || r.is_idle());
    r.run();
    assert_eq!(registration_events(&heard), ["Registered"], "nothing told after deregister");
}

#[test]
fn a_registration_retries_while_etcd_is_unreachable_and_deregister_stops_the_retries() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.endpoint().parse().expect("an address"));
    proxy.set_mode(Mode::Refuse);
    let config = Config::new().endpoints([proxy.endpoint()]).timeout(Duration::from_secs(5));
    let r = Client::new(config).expect("config");
    let checker = client(&etcd.endpoint());
    let name = service("unreachable");
    let ttl = Duration::from_secs(3);
    let (late, heard) = reg(&r, svc(&name, "late", "h:1", json!(null)), ttl);
    let (never, unheard) = reg(&r, svc(&name, "never", "h:2", json!(null)), ttl);
    let failures = |h: &Heard<RegistrationEvent>| {
        h.all()
            .iter()
            .map(|e| match e {
                RegistrationEvent::Failed { error, retry_in: Some(wait) } => {
                    assert!(error.is_retryable(), "{error}");
                    *wait
                }
                other => panic!("expected a failure to retry: {other:?}"),
            })
            .collect::<Vec<_>>()
    };
    drive_until(&[&r], STEP, || heard.len() >= 4 && unheard.len() >= 2);
    let waits = failures(&heard);
    assert!(waits.windows(2).all(|w| w[0] <= w[1]), "backing off: {waits:?}");
    assert!(waits.iter().all(|w| *w <= ttl / 3), "at most a third of the TTL: {waits:?}");
    failures(&unheard);

    // Deregistered while waiting to retry: nothing more, and nothing left armed.
    let told = unheard.len();
    let done = Heard::new();
    never.deregister(done.callback());
    drive_until(&[&r], STEP, || done.len() == 1);
    assert!(done.all()[0].is_ok());

    proxy.set_mode(Mode::Pass);
    drive_until(&[&r, &checker], STEP, || up(&heard));
    assert_eq!(registration_events(&heard).last(), Some(&"Registered"), "the first success");
    assert!(late.is_registered());
    late.deregister(done.callback());
    drive_until(&[&r, &checker], STEP, || done.len() == 2 && r.is_idle());
    assert!(done.all()[1].is_ok());
    assert_eq!(unheard.len(), told, "nothing told after deregister");
    let leases = ok_on(&[&checker], |cb| checker.lease_leases(cb));
    assert!(leases.leases.is_empty(), "no lease left behind: {leases:?}");
    assert!(raw(&[&checker], &checker, &name).is_empty());
}

#[test]
fn closing_the_client_ends_a_registration_with_failed_and_no_retry() {
    let etcd = Etcd::start();
    let r = client(&etcd.endpoint());
    let name = service("closed");
    let (registration, heard) =
        reg(&r, svc(&name, "i", "h:1", json!(null)), Duration::from_secs(5));
    drive_until(&[&r], STEP, || up(&heard));
    r.close();
    drive_until(&[&r], STEP, || r.is_idle());
    r.run();
    assert!(!registration.is_registered());
    // `Failed { retry_in: None }`: "the registration ended (bad input, permission denied, the
    // client closed)"; a `Lost` alone promises that "registering again starts at once".
    match heard.all().last() {
        Some(RegistrationEvent::Failed { error, retry_in: None }) => {
            assert_eq!(error.code(), Code::Cancelled, "{error}")
        }
        _ => panic!("the registration ended without saying so: {:?}", heard.all()),
    }
}

#[test]
fn a_ttl_etcd_refuses_ends_the_registration_instead_of_retrying_forever() {
    let etcd = Etcd::start();
    let r = client(&etcd.endpoint());
    let name = service("ttl_too_large");
    // etcd's largest lease TTL is 9,000,000,000 s; beyond it every grant fails with
    // OUT_OF_RANGE "etcdserver: too large lease TTL", so retrying cannot help.
    let ttl = Duration::from_secs(9_000_000_001);
    let (_registration, heard) = reg(&r, svc(&name, "i", "h:1", json!(null)), ttl);
    drive_until(&[&r], STEP, || heard.len() >= 1);
    match &heard.all()[0] {
        RegistrationEvent::Failed { error, retry_in } => {
            assert_eq!(error.code(), Code::OutOfRange, "{error}");
            assert_eq!(*retry_in, None, "retrying a grant etcd refuses: {error}");
        }
        other => panic!("{other:?}"),
    }
    drive_until(&[&r], STEP, || r.is_idle());
    assert_eq!(heard.len(), 1);
}

#[test]
fn a_value_too_large_for_etcd_ends_the_registration_and_leaves_no_lease_behind() {
    let etcd = Etcd::start();
    let (r, checker) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let name = service("too_large");
    // Above etcd's --max-request-bytes (1.5 MiB), below the client's own limit: etcd refuses
    // the put with INVALID_ARGUMENT "etcdserver: request is too large".
    let big = json!({"blob": "x".repeat(1_600_000)});
    let (_registration, heard) = reg(&r, svc(&name, "i", "h:1", big), Duration::from_secs(5));
    drive_until(&[&r], STEP, || heard.len() >= 1 && r.is_idle());
    match &heard.all()[..] {
        [RegistrationEvent::Failed { error, retry_in: None }] => {
            assert_eq!(error.code(), Code::InvalidArgument, "{error}")
        }
        other => panic!("{other:?}"),
    }
    let leases = ok_on(&[&checker], |cb| checker.lease_leases(cb));
    assert!(leases.leases.is_empty(), "the lease granted for it was revoked: {leases:?}");
    assert!(raw(&[&checker], &checker, &name).is_empty());
}

#[test]
fn deregister_right_after_register_leaves_no_key_and_no_lease() {
    let etcd = Etcd::start();
    let (r, checker) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let name = service("early");
    // Before the lease is even granted: the grant that comes back must be revoked.
    let (registration, heard) =
        reg(&r, svc(&name, "i", "h:1", json!(null)), Duration::from_secs(30));
    let done = Heard::new();
    registration.deregister(done.callback());
    drive_until(&[&r], STEP, || done.len() == 1 && r.is_idle());
    assert!(done.all()[0].is_ok());
    assert_eq!(heard.len(), 0, "nothing told: {:?}", heard.all());
    assert!(raw(&[&checker], &checker, &name).is_empty());
    let leases = ok_on(&[&checker], |cb| checker.lease_leases(cb));
    assert!(leases.leases.is_empty(), "the lease granted meanwhile was revoked: {leases:?}");
}

#[test]
fn a_cancelled_service_watch_tells_nothing_more_and_lets_its_client_go_idle() {
    let etcd = Etcd::start();
    let (c, w) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let name = service("cancelled");
    let (outside, seen) = watch(&w, &name);
    let inside_seen = Heard::new();
    let slot: support::client::Slot<evetcd::registry::ServiceWatch> = support::client::Slot::new();
    let (h, s) = (inside_seen.clone(), slot.clone());
    let inside = evetcd::registry::watch_service(&w, &name, move |e| {
        if added(&e).is_some() {
            s.get().cancel(); // from its own callback, on the first instance
        }
        h.push(e);
    });
    slot.set(inside.clone());
    drive_until(&[&w], STEP, || initial(&seen).is_some() && initial(&inside_seen).is_some());
    let valid = br#"{"Op":0,"Addr":"h:1","Metadata":null}"#;
    put(&[&c, &w], &c, &format!("{name}/a"), valid);
    drive_until(&[&w], STEP, || seen.len() == 2 && inside_seen.len() == 2);
    outside.cancel();
    put(&[&c, &w], &c, &format!("{name}/b"), valid);
    put(&[&c, &w], &c, &format!("{name}/a"), b"bad");
    drive_until(&[&w], STEP, || w.is_idle());
    w.run();
    assert_eq!((seen.len(), inside_seen.len()), (2, 2), "{:?} {:?}", seen.all(), inside_seen.all());
}

#[test]
fn closing_the_client_ends_a_service_watch_with_cancelled_as_its_last_event() {
    let etcd = Etcd::start();
    let (c, w) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let name = service("watch_closed");
    let (watch, seen) = watch(&w, &name);
    drive_until(&[&w], STEP, || initial(&seen).is_some());
    w.close();
    drive_until(&[&w], STEP, || w.is_idle());
    w.run();
    match &seen.all()[..] {
        [ServiceEvent::Initial(_), ServiceEvent::Error(e)] => assert_eq!(e.code(), Code::Cancelled),
        other => panic!("{other:?}"),
    }
    // Nothing re-lists (which would connect the closed client again).
    put(&[&c], &c, &format!("{name}/a"), br#"{"Op":0,"Addr":"h:1","Metadata":null}"#);
    assert!(w.is_idle() && w.info().endpoint.is_none(), "{:?}", w.info());
    assert_eq!(seen.len(), 2);
    assert!(watch.endpoints().is_empty());
}
