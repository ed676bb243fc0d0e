//! Helpers for the service-registry tests (`tests/registry.rs`): callbacks that record what
//! they hear (with when), operations driven beside clients whose live registrations and
//! watches never let them go idle, and the registry's sets in comparable forms.

use super::client::{drive_until, Cb};
use evetcd::registry::{
    discover, register, watch_service, Endpoint, Registration, RegistrationEvent, ServiceEvent,
    ServiceInfo, ServiceWatch, Services,
};
use evetcd::{Client, EtcdError, GetOptions, KeyValue};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long one step of a registry test may take.
pub const STEP: Duration = Duration::from_secs(20);

/// Everything a callback heard, in order, each with the time it heard it.
pub struct Heard<T>(Rc<RefCell<Vec<(Instant, T)>>>);

impl<T> Clone for Heard<T> {
    fn clone(&self) -> Self {
        Heard(self.0.clone())
    }
}

impl<T: Clone + std::fmt::Debug + 'static> Heard<T> {
    pub fn new() -> Self {
        Heard(Rc::new(RefCell::new(Vec::new())))
    }

    pub fn push(&self, t: T) {
        self.0.borrow_mut().push((Instant::now(), t));
    }

    /// A callback that records into this.
    pub fn callback(&self) -> impl FnMut(T) + 'static {
        let h = self.clone();
        move |t| h.push(t)
    }

    pub fn all(&self) -> Vec<T> {
        self.0.borrow().iter().map(|(_, t)| t.clone()).collect()
    }

    /// What was heard from index `from` on.
    pub fn since(&self, from: usize) -> Vec<T> {
        self.0.borrow().iter().skip(from).map(|(_, t)| t.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }

    /// Whether anything heard from index `from` on matches.
    pub fn any_since(&self, from: usize, f: impl Fn(&T) -> bool) -> bool {
        self.0.borrow().iter().skip(from).any(|(_, t)| f(t))
    }

    pub fn any(&self, f: impl Fn(&T) -> bool) -> bool {
        self.any_since(0, f)
    }

    /// When the first match from index `from` on was heard.
    pub fn when_since(&self, from: usize, f: impl Fn(&T) -> bool) -> Option<Instant> {
        self.0.borrow().iter().skip(from).find(|(_, t)| f(t)).map(|(at, _)| *at)
    }
}

/// A service instance.
pub fn svc(name: &str, id: &str, addr: &str, metadata: Value) -> ServiceInfo {
    ServiceInfo { name: name.into(), id: id.into(), addr: addr.into(), metadata }
}

/// `register` with a recording callback.
pub fn reg(
    c: &Client,
    info: ServiceInfo,
    ttl: Duration,
) -> (Registration, Heard<RegistrationEvent>) {
    let heard = Heard::new();
    let r = register(c, info, ttl, heard.callback());
    (r, heard)
}

/// Whether a registration is up: the last `Registered`/`Reregistered`/`Lost`/`Failed` it
/// heard is a success.
pub fn up(heard: &Heard<RegistrationEvent>) -> bool {
    matches!(
        heard.all().last(),
        Some(RegistrationEvent::Registered { .. } | RegistrationEvent::Reregistered { .. })
    )
}

/// The lease of the latest (re)registration heard.
pub fn lease_of(heard: &Heard<RegistrationEvent>) -> i64 {
    heard
        .all()
        .iter()
        .rev()
        .find_map(|e| match e {
            RegistrationEvent::Registered { lease, .. }
            | RegistrationEvent::Reregistered { lease, .. } => Some(*lease),
            _ => None,
        })
        .unwrap_or_else(|| panic!("never registered: {:?}", heard.all()))
}

/// `watch_service` with a recording callback.
pub fn watch(c: &Client, name: &str) -> (ServiceWatch, Heard<ServiceEvent>) {
    let heard = Heard::new();
    let w = watch_service(c, name, heard.callback());
    (w, heard)
}

/// The `Initial` set, once heard.
pub fn initial(heard: &Heard<ServiceEvent>) -> Option<Services> {
    heard.all().into_iter().find_map(|e| match e {
        ServiceEvent::Initial(s) => Some(s),
        _ => None,
    })
}

/// Starts one operation on a client among `drive` and drives them all (a registering
/// client keeps renewing meanwhile) until its callback ran.
pub fn call<T: 'static>(drive: &[&Client], start: impl FnOnce(Cb<T>)) -> Result<T, EtcdError> {
    let slot: Rc<RefCell<Option<Result<T, EtcdError>>>> = Rc::new(RefCell::new(None));
    let s = slot.clone();
    start(Box::new(move |r| assert!(s.borrow_mut().replace(r).is_none(), "callback ran twice")));
    drive_until(drive, STEP, || slot.borrow().is_some());
    let r = slot.borrow_mut().take();
    r.expect("checked by drive_until")
}

/// [`call`] for an operation that must succeed.
pub fn ok_on<T: 'static>(drive: &[&Client], start: impl FnOnce(Cb<T>)) -> T {
    call(drive, start).unwrap_or_else(|e| panic!("operation failed: {e}"))
}

/// `discover(c, name)`, driving `drive` (which must include `c`).
pub fn discovered(drive: &[&Client], c: &Client, name: &str) -> Services {
    ok_on(drive, |cb| discover(c, name, cb))
}

/// Every key-value under `{name}/`, read with a plain `get`.
pub fn raw(drive: &[&Client], c: &Client, name: &str) -> Vec<KeyValue> {
    let prefix = format!("{name}/");
    ok_on(drive, |cb| c.get(prefix, GetOptions::new().prefix(true), cb)).kvs
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What a service's clients care about, by key: (address, metadata).
pub type Set = BTreeMap<String, (String, Value)>;

pub fn set_of(endpoints: &[Endpoint]) -> Set {
    endpoints.iter().map(|e| (e.key.clone(), (e.addr.clone(), e.metadata.clone()))).collect()
}

/// The set a watcher's events build, checking that they are consistent on the way: an
/// `Added` for a key not in the set, a `Modified` or `Removed` only for one in it (so
/// nothing was lost or told twice), and a `Modified` that changes something.
pub fn applied(events: &[ServiceEvent]) -> Set {
    let mut set = Set::new();
    let mut initial = false;
    for e in events {
        match e {
            ServiceEvent::Initial(s) => {
                assert!(!initial, "Initial told twice: {events:#?}");
                initial = true;
                set = set_of(&s.endpoints);
            }
            ServiceEvent::Added(ep) => {
                let value = (ep.addr.clone(), ep.metadata.clone());
                let old = set.insert(ep.key.clone(), value);
                assert!(old.is_none(), "Added {} while in the set ({old:?})", ep.key);
            }
            ServiceEvent::Modified(ep) => {
                let value = (ep.addr.clone(), ep.metadata.clone());
                let old = set.insert(ep.key.clone(), value.clone());
                assert!(old.is_some(), "Modified {} while not in the set", ep.key);
                assert_ne!(old, Some(value), "Modified {} without a change", ep.key);
            }
            ServiceEvent::Removed(ep) => {
                assert!(set.remove(&ep.key).is_some(), "Removed {} while not in the set", ep.key);
            }
            ServiceEvent::Invalid(_) | ServiceEvent::Error(_) => {}
        }
        assert!(initial, "an event before Initial: {e:?}");
    }
    set
}

/// The keys of `events` of one kind, in order (for short assertions).
pub fn keys_of(events: &[ServiceEvent], kind: fn(&ServiceEvent) -> Option<&str>) -> Vec<String> {
    events.iter().filter_map(kind).map(str::to_owned).collect()
}

pub fn added(e: &ServiceEvent) -> Option<&str> {
    match e {
        ServiceEvent::Added(ep) => Some(&ep.key),
        _ => None,
    }
}

pub fn removed(e: &ServiceEvent) -> Option<&str> {
    match e {
        ServiceEvent::Removed(ep) => Some(&ep.key),
        _ => None,
    }
}

/// A short form of an event for exact comparisons: kind, key and address.
pub fn brief(e: &ServiceEvent) -> (String, String, String) {
    let (kind, key, addr) = match e {
        ServiceEvent::Initial(s) => ("Initial", format!("{} endpoints", s.endpoints.len()), ""),
        ServiceEvent::Added(ep) => ("Added", ep.key.clone(), ep.addr.as_str()),
        ServiceEvent::Modified(ep) => ("Modified", ep.key.clone(), ep.addr.as_str()),
        ServiceEvent::Removed(ep) => ("Removed", ep.key.clone(), ep.addr.as_str()),
        ServiceEvent::Invalid(bad) => ("Invalid", bad.key.clone(), ""),
        ServiceEvent::Error(e) => ("Error", e.to_string(), ""),
    };
    (kind.to_owned(), key, addr.to_owned())
}
