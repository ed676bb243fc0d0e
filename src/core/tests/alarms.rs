//! Alarms (the recipes' delayed work): each runs once, `Due` at its time or `Closed` when the
//! core closes first; the core is busy until then; disarmed work is handed back uncalled.

use super::world::World;
use crate::core::alarms::Fired;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

type Log = Rc<RefCell<Vec<(&'static str, Fired)>>>;

fn record(log: &Log, name: &'static str) -> Box<dyn FnOnce(Fired)> {
    let log = log.clone();
    Box::new(move |fired| log.borrow_mut().push((name, fired)))
}

#[test]
fn an_alarm_runs_its_work_once_at_its_time_and_keeps_the_core_busy_until_then() {
    let mut w = World::new(&["127.0.0.1:2379"]);
    let log = Log::default();
    w.core.alarm(Duration::from_millis(1500), record(&log, "late"));
    w.core.alarm(Duration::from_millis(500), record(&log, "early"));
    assert!(!w.core.is_idle(), "an armed alarm is work: run() must keep turning");
    // The wheel may ask for an earlier turn (a cascade), never a later one.
    assert!(w.core.poll_timeout().is_some_and(|t| t <= w.at(500)));
    w.advance_to(499);
    w.run_events();
    assert!(log.borrow().is_empty());
    w.advance_to(500);
    w.run_events();
    assert_eq!(*log.borrow(), [("early", Fired::Due)]);
    assert!(!w.core.is_idle());
    w.advance_to(1500);
    w.run_events();
    assert_eq!(*log.borrow(), [("early", Fired::Due), ("late", Fired::Due)]);
    assert!(w.core.is_idle());
    assert!(w.connects().is_empty(), "an alarm needs no link");
}

#[test]
fn a_disarmed_alarm_is_handed_back_uncalled_and_close_runs_the_others_as_closed() {
    let mut w = World::new(&["127.0.0.1:2379"]);
    let log = Log::default();
    let key = w.core.alarm(Duration::from_secs(1), record(&log, "disarmed"));
    assert!(w.core.disarm(key).is_some(), "the work comes back, to be dropped by the caller");
    assert!(w.core.disarm(key).is_none(), "a spent key is harmless");
    assert!(w.core.is_idle());
    w.core.alarm(Duration::from_secs(3), record(&log, "b"));
    w.core.alarm(Duration::from_secs(2), record(&log, "a"));
    let events = w.core.close("closed by the test");
    assert!(w.core.is_idle());
    assert!(log.borrow().is_empty(), "run by whoever delivers close()'s events");
    w.run_all(events);
    assert_eq!(*log.borrow(), [("b", Fired::Closed), ("a", Fired::Closed)], "in the order armed");
    w.advance_to(5000);
    w.run_events();
    assert_eq!(log.borrow().len(), 2, "each alarm runs once");
}
