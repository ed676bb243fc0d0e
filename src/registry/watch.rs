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
use crate::client::{Client, Fired};
use crate::error::{Code, EtcdError};
use crate::handle::Watch;
use crate::ops::kv::GetOptions;
use crate::ops::watch::WatchOptions;
use crate::pb::etcdserverpb::{RangeResponse, WatchResponse};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::KeyValue;
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
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
    /// A key's value is not an endpoint: skipped (as Go's manager skips it). Keys refused
    /// when the watch starts are listed in `Initial`'s `invalid` instead.
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

/// Each key of a range response with what it holds (by key, as etcd sorts them): the raw
/// key, so that keys that are not UTF-8 stay apart.
type Entries = Vec<(Bytes, Result<Endpoint, Invalid>)>;

fn entries(prefix: &[u8], resp: &RangeResponse) -> Entries {
    resp.kvs.iter().map(|kv| (kv.key.clone(), decode(prefix, kv))).collect()
}

/// The instances in a range response.
fn read(prefix: &[u8], resp: &RangeResponse) -> Services {
    services(resp.header.as_ref().map_or(0, |h| h.revision), entries(prefix, resp))
}

fn services(revision: i64, entries: Entries) -> Services {
    let mut services = Services { revision, endpoints: Vec::new(), invalid: Vec::new() };
    for (_, entry) in entries {
        match entry {
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
        queue: VecDeque::new(),
        delivering: false,
        closes: client.inner().closes.get(),
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
        let (watch, alarm, client, callback) = {
            let mut s = self.0.borrow_mut();
            s.cancelled = true;
            s.queue.clear();
            (s.watch.take(), s.alarm.take(), s.client.clone(), s.callback.take())
        };
        drop(callback); // outside the borrow: what it owns may call back in
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
    prefix: Bytes,
    /// Taken while it runs, so that it may call back into the handle.
    callback: Option<Callback>,
    /// Events for the callback, delivered in order by the outermost `tell`.
    queue: VecDeque<ServiceEvent>,
    delivering: bool,
    /// The client's `close()` count at the start: a `CANCELLED` means the client closed only
    /// if it moved.
    closes: u64,
    /// The instances delivered, by raw key.
    known: BTreeMap<Bytes, Endpoint>,
    /// Keys whose value was refused, with that value's revision (told once per value).
    refused: BTreeMap<Bytes, i64>,
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
        let entries = entries(&s.prefix, &resp);
        let events = if s.listed {
            s.difference(entries)
        } else {
            s.listed = true;
            for (key, entry) in &entries {
                match entry {
                    Ok(e) => s.known.insert(key.clone(), e.clone()).map(drop),
                    Err(bad) => s.refused.insert(key.clone(), bad.mod_revision).map(drop),
                };
            }
            // The keys refused at the start are in `Initial`'s `invalid`, not told again.
            vec![ServiceEvent::Initial(services(revision, entries))]
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
    fn difference(&mut self, now: Entries) -> Vec<ServiceEvent> {
        let mut events = Vec::new();
        let mut current = BTreeMap::new();
        let mut refused = BTreeMap::new();
        let mut invalid = Vec::new();
        for (key, entry) in now {
            match entry {
                Ok(e) => drop(current.insert(key, e)),
                Err(bad) => {
                    if self.refused.get(&key) != Some(&bad.mod_revision) {
                        invalid.push(bad.clone());
                    }
                    refused.insert(key, bad.mod_revision);
                }
            }
        }
        let gone: Vec<_> =
            self.known.keys().filter(|k| !current.contains_key(*k)).cloned().collect();
        for key in gone {
            if let Some(old) = self.known.remove(&key) {
                events.push(ServiceEvent::Removed(old));
            }
        }
        for (key, e) in current {
            match self.known.get(&key) {
                None => events.push(ServiceEvent::Added(e.clone())),
                Some(old) if !old.same_as(&e) => events.push(ServiceEvent::Modified(e.clone())),
                Some(_) => {}
            }
            self.known.insert(key, e);
        }
        events.extend(invalid.into_iter().map(ServiceEvent::Invalid));
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
/// was closed: then `CANCELLED` is the last event.
fn retry(state: &Rc<RefCell<State>>, error: EtcdError) {
    let closed = {
        let s = state.borrow();
        error.code() == Code::Cancelled && s.client.inner().closes.get() != s.closes
    };
    if closed {
        return end(state, error);
    }
    let (client, delay) = {
        let mut s = state.borrow_mut();
        s.failures += 1;
        (s.client.clone(), backoff(s.failures))
    };
    let st = state.clone();
    let alarm = client.after(delay, move |fired| {
        st.borrow_mut().alarm = None;
        match fired {
            Fired::Due => list(&st),
            Fired::Closed => {
                end(&st, EtcdError::new(Code::Cancelled, "client closed", "watch_service"))
            }
        }
    });
    state.borrow_mut().alarm = Some(alarm);
    tell(state, vec![ServiceEvent::Error(error)]);
}

/// The client closed: `error` is the last event.
fn end(state: &Rc<RefCell<State>>, error: EtcdError) {
    tell(state, vec![ServiceEvent::Error(error)]);
    let mut s = state.borrow_mut();
    s.cancelled = true;
    s.callback = None;
    s.queue.clear();
}

/// Queues `events` and, unless a delivery further up the stack is under way, delivers the
/// queue in order with nothing borrowed (the callback may cancel, or close the client, whose
/// own events then queue behind). Nothing is told once cancelled.
fn tell(state: &Rc<RefCell<State>>, events: Vec<ServiceEvent>) {
    {
        let mut s = state.borrow_mut();
        if s.cancelled || events.is_empty() {
            return;
        }
        s.queue.extend(events);
        if std::mem::replace(&mut s.delivering, true) {
            return;
        }
    }
    loop {
        let (event, mut callback) = {
            let mut s = state.borrow_mut();
            let ready = !s.cancelled && !s.queue.is_empty() && s.callback.is_some();
            if !ready {
                s.delivering = false;
                return;
            }
            (s.queue.pop_front().expect("queued"), s.callback.take().expect("present"))
        };
        callback(event);
        let mut s = state.borrow_mut();
        if !s.cancelled && s.callback.is_none() {
            s.callback = Some(callback);
        }
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

    fn entry(e: &Endpoint) -> (Bytes, Result<Endpoint, Invalid>) {
        (Bytes::from(e.key.clone()), Ok(e.clone()))
    }

    fn bad(key: &[u8], rev: i64) -> (Bytes, Result<Endpoint, Invalid>) {
        let key = Bytes::copy_from_slice(key);
        let invalid = Invalid {
            key: String::from_utf8_lossy(&key).into_owned(),
            mod_revision: rev,
            error: "bad".into(),
        };
        (key, Err(invalid))
    }

    fn state_with(known: &[Endpoint]) -> State {
        let client = Client::new(crate::Config::new().endpoints(["127.0.0.1:1"])).unwrap();
        State {
            closes: 0,
            client,
            prefix: prefix("s"),
            callback: None,
            queue: VecDeque::new(),
            delivering: false,
            known: known.iter().map(|e| (Bytes::from(e.key.clone()), e.clone())).collect(),
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
        // a: rewritten with a new lease, same value; b: gone; c: moved; d: new; x: refused.
        let (a, c, d) = (ep("s/a", "h:1", 10), ep("s/c", "h:9", 11), ep("s/d", "h:4", 12));
        let now = || vec![entry(&a), entry(&c), entry(&d), bad(b"s/x", 13)];
        let events = s.difference(now());
        let Err(x) = bad(b"s/x", 13).1 else { unreachable!() };
        assert_eq!(
            events,
            [
                ServiceEvent::Removed(ep("s/b", "h:2", 3)),
                ServiceEvent::Modified(c.clone()),
                ServiceEvent::Added(d.clone()),
                ServiceEvent::Invalid(x),
            ]
        );
        assert_eq!(s.known.len(), 3);
        assert_eq!(s.known[&b"s/a"[..]].lease, 10, "the set holds the latest write");
        assert!(s.difference(now()).is_empty(), "the same list again: nothing to tell");
    }

    #[test]
    fn keys_that_are_not_utf8_stay_apart_and_are_removed_by_their_own_key() {
        let mut s = state_with(&[]);
        let mut e1 = ep("s/\u{fffd}", "h:1", 2);
        e1.key = "s/\u{fffd}".into();
        let e2 = e1.clone();
        let raw1 = Bytes::from_static(b"s/\xff");
        let raw2 = Bytes::from_static(b"s/\xfe");
        let events = s.difference(vec![(raw1.clone(), Ok(e1)), (raw2.clone(), Ok(e2))]);
        assert_eq!(events.len(), 2, "two instances, though their lossy keys are equal");
        let kv = KeyValue { key: raw1, mod_revision: 3, ..Default::default() };
        let mut events = Vec::new();
        s.changed(EventType::Delete, &kv, &mut events);
        assert!(matches!(&events[..], [ServiceEvent::Removed(_)]), "{events:?}");
        assert_eq!(s.known.keys().collect::<Vec<_>>(), [&raw2]);
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
        assert!(s.difference(vec![bad(b"s/a", 5)]).is_empty(), "already told for that value");
    }

    #[test]
    fn backoff_doubles_up_to_five_seconds() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(30), Duration::from_secs(5));
    }
}
