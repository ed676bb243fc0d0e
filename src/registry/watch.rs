//! [`discover`] and [`watch_service`]: a service's instances, once or kept up to date (Go's
//! `endpoints.Manager.List` and `NewWatchChannel`).
//!
//! ```text
//!   List (serializable get of {name}/) ──► Initial, or after a re-list only the difference
//!        ▲                                      │
//!        │ compacted / watch ended              ▼
//!        └──────────────────────────── Watch({name}/ from revision + 1) ──► Added / Modified / Removed
//! ```

use super::{decode, prefix, Endpoint, Invalid};
use crate::client::Client;
use crate::error::{Code, EtcdError};
use crate::handle::Watch;
use crate::ops::kv::GetOptions;
use crate::ops::watch::WatchOptions;
use crate::pb::etcdserverpb::{RangeResponse, WatchResponse};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::KeyValue;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// A service's instances at one revision, as [`discover`] reads them.
#[derive(Clone, Debug, PartialEq)]
pub struct Services {
    /// The revision read.
    pub revision: i64,
    /// The instances, by key.
    pub endpoints: Vec<Endpoint>,
    /// Keys under the prefix whose value is not an endpoint (skipped).
    pub invalid: Vec<Invalid>,
}

/// What [`watch_service`]'s callback receives.
#[derive(Clone, Debug, PartialEq)]
pub enum ServiceEvent {
    /// The instances when the watch started (first event, once).
    Initial(Services),
    /// An instance appeared.
    Added(Endpoint),
    /// An instance's address or metadata changed (the new endpoint).
    Modified(Endpoint),
    /// An instance went: deleted, its lease expired or revoked, or its value replaced by
    /// one that is not an endpoint. The endpoint as last known.
    Removed(Endpoint),
    /// A key's value is not an endpoint: skipped (as Go's manager skips it).
    Invalid(Invalid),
    /// Listing or watching the service failed; it is listed again after a backoff (the set
    /// delivered so far stands until then). `CANCELLED` (the client was closed) is the last
    /// event.
    Error(EtcdError),
}

/// Reads the instances of service `name` (a serializable read, as Go's `Manager.List`: it
/// answers without a quorum, from the member in use).
pub fn discover(
    client: &Client,
    name: &str,
    callback: impl FnOnce(Result<Services, EtcdError>) + 'static,
) {
    let p = prefix(name);
    let options = GetOptions::new().prefix(true).serializable(true);
    client.get(p.clone(), options, move |res| callback(res.map(|resp| read(&p, &resp))));
}

/// The instances in a range response (by key, as etcd sorts them).
fn read(prefix: &[u8], resp: &RangeResponse) -> Services {
    let mut services = Services {
        revision: resp.header.as_ref().map_or(0, |h| h.revision),
        endpoints: Vec::with_capacity(resp.kvs.len()),
        invalid: Vec::new(),
    };
    for kv in &resp.kvs {
        match decode(prefix, kv) {
            Ok(e) => services.endpoints.push(e),
            Err(bad) => services.invalid.push(bad),
        }
    }
    services
}

/// Watches service `name`: first [`ServiceEvent::Initial`], then one event per change.
///
/// The watch resumes after a reconnect from the next revision it has not delivered, so
/// nothing is lost or told twice. When it cannot resume (its revision was compacted while
/// the client was cut off) the service is listed again and only the difference from what
/// was delivered is told. Rewriting an instance with the same address and metadata (a new
/// lease, say) is not an event.
pub fn watch_service(
    client: &Client,
    name: &str,
    callback: impl FnMut(ServiceEvent) + 'static,
) -> ServiceWatch {
    let inner = Rc::new(RefCell::new(State {
        client: client.clone(),
        prefix: prefix(name),
        callback: Some(Box::new(callback)),
        known: BTreeMap::new(),
        refused: BTreeMap::new(),
        listed: false,
        watch: None,
        alarm: None,
        failures: 0,
        cancelled: false,
    }));
    list(&inner);
    ServiceWatch(inner)
}

/// A running [`watch_service`]; [`cancel`](ServiceWatch::cancel) stops it. Dropping the
/// handle does not (as with [`Watch`]).
#[derive(Clone)]
pub struct ServiceWatch(Rc<RefCell<State>>);

impl std::fmt::Debug for ServiceWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.borrow();
        f.debug_struct("ServiceWatch")
            .field("prefix", &String::from_utf8_lossy(&s.prefix))
            .field("endpoints", &s.known.len())
            .field("cancelled", &s.cancelled)
            .finish_non_exhaustive()
    }
}

impl ServiceWatch {
    /// Stops watching: from now on the callback never runs again.
    pub fn cancel(&self) {
        let (watch, alarm, client) = {
            let mut s = self.0.borrow_mut();
            s.cancelled = true;
            s.callback = None;
            (s.watch.take(), s.alarm.take(), s.client.clone())
        };
        if let Some(w) = watch {
            w.cancel(|_| ());
        }
        if let Some(a) = alarm {
            client.disarm(a);
        }
    }

    /// The instances as delivered so far, by key.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.0.borrow().known.values().cloned().collect()
    }
}

type Callback = Box<dyn FnMut(ServiceEvent)>;

struct State {
    client: Client,
    prefix: bytes::Bytes,
    /// Taken while it runs, so that it may call back into the handle.
    callback: Option<Callback>,
    /// The instances delivered, by key.
    known: BTreeMap<bytes::Bytes, Endpoint>,
    /// Keys whose value was refused, with that value's revision (told once per value).
    refused: BTreeMap<bytes::Bytes, i64>,
    /// `Initial` was delivered.
    listed: bool,
    watch: Option<Watch>,
    /// A re-list waiting out its backoff.
    alarm: Option<u64>,
    /// Failed lists in a row.
    failures: u32,
    cancelled: bool,
}

/// Backoff of a failed list: 100 ms doubling up to 5 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(5))
}

/// Lists the service and goes on to watch it.
fn list(state: &Rc<RefCell<State>>) {
    let (client, p) = {
        let s = state.borrow();
        (s.client.clone(), s.prefix.clone())
    };
    let st = state.clone();
    let options = GetOptions::new().prefix(true).serializable(true);
    client.get(p, options, move |res| listed(&st, res));
}

fn listed(state: &Rc<RefCell<State>>, res: Result<RangeResponse, EtcdError>) {
    if state.borrow().cancelled {
        return;
    }
    let resp = match res {
        Ok(resp) => resp,
        Err(e) => return retry(state, e),
    };
    let revision = resp.header.as_ref().map_or(0, |h| h.revision);
    let events = {
        let mut s = state.borrow_mut();
        s.failures = 0;
        let services = read(&s.prefix, &resp);
        let events = if s.listed {
            s.difference(services)
        } else {
            s.listed = true;
            let mut events = Vec::with_capacity(1 + services.invalid.len());
            for e in &services.endpoints {
                s.known.insert(e.key.clone().into(), e.clone());
            }
            for bad in &services.invalid {
                s.refused.insert(bad.key.clone().into(), bad.mod_revision);
            }
            let invalid = services.invalid.clone();
            events.push(ServiceEvent::Initial(services));
            events.extend(invalid.into_iter().map(ServiceEvent::Invalid));
            events
        };
        let st = state.clone();
        let options = WatchOptions::new().prefix(true).start_revision(revision + 1);
        let watch = s.client.watch(s.prefix.clone(), options, move |res| watched(&st, res));
        s.watch = Some(watch);
        events
    };
    tell(state, events);
}

impl State {
    /// After a re-list: the events that take the delivered set to `now`'s.
    fn difference(&mut self, now: Services) -> Vec<ServiceEvent> {
        let mut events = Vec::new();
        let mut current: BTreeMap<bytes::Bytes, Endpoint> =
            now.endpoints.into_iter().map(|e| (e.key.clone().into(), e)).collect();
        let gone: Vec<_> =
            self.known.keys().filter(|k| !current.contains_key(*k)).cloned().collect();
        for key in gone {
            if let Some(old) = self.known.remove(&key) {
                events.push(ServiceEvent::Removed(old));
            }
        }
        for (key, e) in std::mem::take(&mut current) {
            match self.known.get(&key) {
                None => events.push(ServiceEvent::Added(e.clone())),
                Some(old) if !old.same_as(&e) => events.push(ServiceEvent::Modified(e.clone())),
                Some(_) => {}
            }
            self.known.insert(key, e);
        }
        let refused: BTreeMap<bytes::Bytes, i64> =
            now.invalid.iter().map(|b| (b.key.clone().into(), b.mod_revision)).collect();
        for bad in now.invalid {
            if self.refused.get(bad.key.as_bytes()) != Some(&bad.mod_revision) {
                events.push(ServiceEvent::Invalid(bad));
            }
        }
        self.refused = refused;
        events
    }

    /// A watched event on `kv`.
    fn changed(&mut self, kind: EventType, kv: &KeyValue, events: &mut Vec<ServiceEvent>) {
        let key = kv.key.clone();
        if kind == EventType::Delete {
            self.refused.remove(&key);
            if let Some(old) = self.known.remove(&key) {
                events.push(ServiceEvent::Removed(old));
            }
            return;
        }
        match decode(&self.prefix, kv) {
            Ok(e) => {
                self.refused.remove(&key);
                match self.known.insert(key, e.clone()) {
                    None => events.push(ServiceEvent::Added(e)),
                    Some(old) if !old.same_as(&e) => events.push(ServiceEvent::Modified(e)),
                    Some(_) => {}
                }
            }
            Err(bad) => {
                if let Some(old) = self.known.remove(&key) {
                    events.push(ServiceEvent::Removed(old));
                }
                self.refused.insert(key, bad.mod_revision);
                events.push(ServiceEvent::Invalid(bad));
            }
        }
    }
}

fn watched(state: &Rc<RefCell<State>>, res: Result<WatchResponse, EtcdError>) {
    let events = {
        let mut s = state.borrow_mut();
        if s.cancelled {
            return;
        }
        match res {
            Ok(resp) => {
                let mut events = Vec::new();
                for ev in &resp.events {
                    if let Some(kv) = &ev.kv {
                        s.changed(ev.r#type(), kv, &mut events);
                    }
                }
                events
            }
            Err(e) => {
                // The watch ended: compacted past its resume revision (list again, telling
                // only the difference), or it gave up (say so, then list again).
                s.watch = None;
                drop(s);
                let compacted = e.compact_revision().is_some() || e.code() == Code::OutOfRange;
                if compacted {
                    list(state);
                    return;
                }
                return retry(state, e);
            }
        }
    };
    tell(state, events);
}

/// Listing or watching failed: tell, then list again after a backoff, unless the client
/// was closed (`CANCELLED`): then that error is the last event.
fn retry(state: &Rc<RefCell<State>>, error: EtcdError) {
    let closed = error.code() == Code::Cancelled;
    if !closed {
        let (client, delay) = {
            let mut s = state.borrow_mut();
            s.failures += 1;
            (s.client.clone(), backoff(s.failures))
        };
        let st = state.clone();
        let alarm = client.after(delay, move || {
            st.borrow_mut().alarm = None;
            list(&st);
        });
        state.borrow_mut().alarm = Some(alarm);
    }
    tell(state, vec![ServiceEvent::Error(error)]);
    if closed {
        let mut s = state.borrow_mut();
        s.cancelled = true;
        s.callback = None;
    }
}

/// Delivers `events` with nothing borrowed; stops if the callback cancels the watch.
fn tell(state: &Rc<RefCell<State>>, events: Vec<ServiceEvent>) {
    if events.is_empty() {
        return;
    }
    let Some(mut callback) = state.borrow_mut().callback.take() else {
        return;
    };
    for event in events {
        callback(event);
        if state.borrow().cancelled {
            return;
        }
    }
    let mut s = state.borrow_mut();
    if !s.cancelled && s.callback.is_none() {
        s.callback = Some(callback);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ep(key: &str, addr: &str, rev: i64) -> Endpoint {
        Endpoint {
            key: key.into(),
            id: key.trim_start_matches("s/").into(),
            addr: addr.into(),
            metadata: json!(null),
            lease: rev,
            mod_revision: rev,
        }
    }

    fn state_with(known: &[Endpoint]) -> State {
        let client = Client::new(crate::Config::new().endpoints(["127.0.0.1:1"])).unwrap();
        State {
            client,
            prefix: prefix("s"),
            callback: None,
            known: known.iter().map(|e| (e.key.clone().into(), e.clone())).collect(),
            refused: BTreeMap::new(),
            listed: true,
            watch: None,
            alarm: None,
            failures: 0,
            cancelled: false,
        }
    }

    #[test]
    fn a_re_list_tells_only_what_changed_and_nothing_for_a_rewrite_of_the_same_value() {
        let mut s = state_with(&[ep("s/a", "h:1", 2), ep("s/b", "h:2", 3), ep("s/c", "h:3", 4)]);
        let now = Services {
            revision: 20,
            // a: rewritten with a new lease, same value; b: gone; c: moved; d: new.
            endpoints: vec![ep("s/a", "h:1", 10), ep("s/c", "h:9", 11), ep("s/d", "h:4", 12)],
            invalid: vec![Invalid { key: "s/x".into(), mod_revision: 13, error: "bad".into() }],
        };
        let events = s.difference(now.clone());
        assert_eq!(
            events,
            [
                ServiceEvent::Removed(ep("s/b", "h:2", 3)),
                ServiceEvent::Modified(ep("s/c", "h:9", 11)),
                ServiceEvent::Added(ep("s/d", "h:4", 12)),
                ServiceEvent::Invalid(now.invalid[0].clone()),
            ]
        );
        assert_eq!(s.known.len(), 3);
        assert_eq!(s.known[&b"s/a"[..]].lease, 10, "the set holds the latest write");
        assert!(s.difference(now).is_empty(), "the same list again: nothing to tell");
    }

    #[test]
    fn an_invalid_value_replacing_an_instance_removes_it_and_is_told_once() {
        let mut s = state_with(&[ep("s/a", "h:1", 2)]);
        let kv = KeyValue {
            key: "s/a".into(),
            value: "oops".into(),
            mod_revision: 5,
            ..Default::default()
        };
        let mut events = Vec::new();
        s.changed(EventType::Put, &kv, &mut events);
        assert!(
            matches!(&events[..], [ServiceEvent::Removed(_), ServiceEvent::Invalid(b)] if b.key == "s/a")
        );
        assert!(s.known.is_empty());
        let again = Services {
            revision: 6,
            endpoints: vec![],
            invalid: vec![Invalid { key: "s/a".into(), mod_revision: 5, error: "x".into() }],
        };
        assert!(s.difference(again).is_empty(), "already told for that value");
    }

    #[test]
    fn backoff_doubles_up_to_five_seconds() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(30), Duration::from_secs(5));
    }
}
