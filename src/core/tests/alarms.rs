//! Alarms (the recipes' delayed work): fired on the timer wheel at their time, the core busy
//! until then, disarmed work and a closed core's alarms dropped uncalled.

use super::world::World;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

#[test]
fn an_alarm_runs_its_work_once_at_its_time_and_keeps_the_core_busy_until_then() {
    let mut w = World::new(&["127.0.0.1:2379"]);
    let ran = Rc::new(RefCell::new(Vec::new()));
    let r = ran.clone();
    w.core.alarm(Duration::from_millis(1500), Box::new(move || r.borrow_mut().push("late")));
    let r = ran.clone();
    w.core.alarm(Duration::from_millis(500), Box::new(move || r.borrow_mut().push("early")));
    assert!(!w.core.is_idle(), "an armed alarm is work: run() must keep turning");
    // The wheel may ask for an earlier turn (a cascade), never a later one.
    assert!(w.core.poll_timeout().is_some_and(|t| t <= w.at(500)));
    w.advance_to(499);
    w.run_events();
    assert!(ran.borrow().is_empty());
    w.advance_to(500);
    w.run_events();
    assert_eq!(*ran.borrow(), ["early"]);
    assert!(!w.core.is_idle());
    w.advance_to(1500);
    w.run_events();
    assert_eq!(*ran.borrow(), ["early", "late"]);
    assert!(w.core.is_idle());
    assert!(w.connects().is_empty(), "an alarm needs no link");
}

#[test]
fn a_disarmed_alarm_and_the_alarms_of_a_closed_core_are_dropped_uncalled() {
    let mut w = World::new(&["127.0.0.1:2379"]);
    let ran = Rc::new(RefCell::new(0));
    let r = ran.clone();
    let key = w.core.alarm(Duration::from_secs(1), Box::new(move || *r.borrow_mut() += 1));
    w.core.disarm(key);
    w.core.disarm(key); // a spent key is harmless
    assert!(w.core.is_idle());
    let r = ran.clone();
    w.core.alarm(Duration::from_secs(2), Box::new(move || *r.borrow_mut() += 1));
    for event in w.core.close("closed by the test") {
        drop(event);
    }
    assert!(w.core.is_idle());
    w.advance_to(5000);
    w.run_events();
    assert_eq!(*ran.borrow(), 0);
}
