//! What the client tells a `tracing` subscriber: a failover and a retried read, step by step,
//! so that a user can see why a call took long.

mod support;

use evetcd::{Client, Config, GetOptions, PutOptions};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::client::{block, drive_until, ok};
use support::proxy::{Mode, Proxy};
use support::Etcd;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Keeps every event of target `evetcd` as one line: the message, then `field=value`s.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.0.insert_str(0, &format!("{value:?} ")),
            name => write!(self.0, "{name}={value:?} ").unwrap(),
        }
    }
}

impl Subscriber for Lines {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == "evetcd"
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = Line(String::new());
        event.record(&mut line);
        self.0.lock().unwrap().push(line.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Lines {
    fn find(&self, parts: &[&str]) -> Option<usize> {
        let lines = self.0.lock().unwrap();
        lines.iter().position(|l| parts.iter().all(|p| l.contains(p)))
    }

    fn dump(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

#[test]
fn a_failover_and_a_retried_read_are_told_in_order() {
    let etcd = Etcd::start();
    let addr: SocketAddr = etcd.endpoint().parse().unwrap();
    let proxy = Proxy::start(addr);
    let lines = Lines::default();
    tracing::subscriber::with_default(lines.clone(), || {
        let config = Config::new()
            .endpoints([proxy.endpoint(), etcd.endpoint()])
            .timeout(Duration::from_secs(10));
        let c = Client::new(config).unwrap();
        ok(&c, |cb| c.put("traced", "1", PutOptions::new(), cb));
        proxy.set_mode(Mode::Blackhole);
        let got: std::rc::Rc<std::cell::Cell<bool>> = Default::default();
        let g = got.clone();
        c.get("traced", GetOptions::new(), move |r| {
            r.expect("retried on the other endpoint");
            g.set(true);
        });
        let until = std::time::Instant::now() + Duration::from_millis(200);
        drive_until(&[&c], Duration::from_secs(5), || std::time::Instant::now() >= until);
        proxy.reset_all();
        proxy.set_mode(Mode::Refuse);
        drive_until(&[&c], Duration::from_secs(10), || got.get());
        block(&c, |cb| c.get("traced", GetOptions::new(), cb)).unwrap();
    });
    let (first, second) = (proxy.endpoint(), etcd.endpoint());
    let steps = [
        lines.find(&["connecting", &first]),
        lines.find(&["connected", &first]),
        lines.find(&["link lost", &first]),
        lines.find(&["call failed", "operation=\"get\"", "Retry"]),
        lines.find(&["connecting", &second]),
        lines.find(&["connected", &second]),
    ];
    let positions: Vec<usize> = steps
        .iter()
        .map(|s| s.unwrap_or_else(|| panic!("missing: {steps:?}\n{}", lines.dump())))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "out of order: {positions:?}\n{}",
        lines.dump()
    );
}
