//! watch-latency: `--streams` × `--watchers-per-stream` watchers on one key, puts to it at
//! `--put-rate`, and each event's latency from its put's due start to the event's arrival.
//!
//! etcd opens its watch streams over `--conns` connections; this crate multiplexes all of a
//! client's watches on one stream, so each stream here is a client (a connection) of its
//! own, and the puts go through one more client, as etcd's do. Puts are open loop: put `i`
//! is sent at `t0 + i / put-rate` whether or not the previous one was answered (etcd sends
//! them one after another through a rate limiter). Each event is matched to its put by
//! revision; etcd measures from the put's answer instead, which hides the write's own time.

use crate::args::Options;
use crate::driver::Conns;
use crate::report::{Recorder, Summary};
use crate::workloads::Rng;
use bytes::Bytes;
use evetcd::{Client, PutOptions, Watch, WatchOptions};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long to wait for events after the last put was answered.
const GRACE: Duration = Duration::from_secs(5);

/// What the callbacks collect.
#[derive(Default)]
struct State {
    created: Cell<usize>,
    /// (revision, arrival) of every event.
    events: RefCell<Vec<(i64, Instant)>>,
    watch_errors: RefCell<Vec<String>>,
    /// revision → put index, for the puts answered.
    put_revisions: RefCell<HashMap<i64, usize>>,
    puts_answered: Cell<usize>,
    last_put_answer: Cell<Option<Instant>>,
    put_recorder: RefCell<Option<Recorder>>,
}

/// The put summary and the watch-event summary, and the event count.
pub struct WatchResults {
    pub puts: Summary,
    pub events: Summary,
}

/// `conns.clients[0]` puts; the others each carry `watchers_per_stream` watchers.
pub fn run(conns: &mut Conns, o: &Options) -> Result<WatchResults, String> {
    let rng = Rng::new();
    // A printable random key of --key-size bytes (etcd's is random binary), so that
    // concurrent runs do not see each other's puts.
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let key: Bytes =
        (0..o.key_size.max(1)).map(|_| alphabet[rng.next() as usize % alphabet.len()]).collect();
    let value = Bytes::from(rng.bytes(o.val_size));
    let state = Rc::new(State::default());
    let watchers = o.streams * o.watchers_per_stream;

    let mut watches: Vec<Watch> = Vec::with_capacity(watchers);
    for c in &conns.clients[1..] {
        for _ in 0..o.watchers_per_stream {
            let st = state.clone();
            let w = c.watch(key.clone(), WatchOptions::new().prev_kv(o.prevkv), move |res| {
                let now = Instant::now();
                match res {
                    Ok(resp) => {
                        if resp.created {
                            st.created.set(st.created.get() + 1);
                        }
                        let mut events = st.events.borrow_mut();
                        for ev in &resp.events {
                            let rev = ev.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                            events.push((rev, now));
                        }
                    }
                    Err(e) => st.watch_errors.borrow_mut().push(e.to_string()),
                }
            });
            watches.push(w);
        }
    }
    let setup_deadline = Instant::now() + Duration::from_secs(30);
    conns.drive(|now| {
        let settled = state.created.get() + state.watch_errors.borrow().len() >= watchers;
        (!settled && now < setup_deadline).then_some(Some(setup_deadline))
    });
    if state.created.get() < watchers {
        let why = state.watch_errors.borrow().first().cloned().unwrap_or("timed out".into());
        return Err(format!("{} of {watchers} watchers created: {why}", state.created.get()));
    }

    *state.put_recorder.borrow_mut() = Some(Recorder::new());
    let put_client: Client = conns.clients[0].clone();
    let rate = o.put_rate as f64;
    let t0 = Instant::now();
    let due = |i: usize| t0 + Duration::from_secs_f64(i as f64 / rate);
    let mut next = 0;
    let total = o.put_total;
    conns.drive(|now| {
        while next < total && due(next) <= now {
            let (st, start, i) = (state.clone(), due(next), next);
            put_client.put(key.clone(), value.clone(), PutOptions::new(), move |res| {
                let end = Instant::now();
                let mut rec = st.put_recorder.borrow_mut();
                let rec = rec.as_mut().expect("recorder");
                match res {
                    Ok(p) => {
                        rec.ok(end.saturating_duration_since(start));
                        let rev = p.header.map_or(0, |h| h.revision);
                        st.put_revisions.borrow_mut().insert(rev, i);
                    }
                    Err(e) => rec.err(e.to_string()),
                }
                st.puts_answered.set(st.puts_answered.get() + 1);
                st.last_put_answer.set(Some(end));
            });
            next += 1;
        }
        if next < total {
            return Some(Some(due(next)));
        }
        if state.puts_answered.get() < total {
            return Some(None);
        }
        let expected = state.put_revisions.borrow().len() * watchers;
        let waited = state.last_put_answer.get().map_or(Duration::ZERO, |t| now - t);
        let stopped = state.watch_errors.borrow().len() >= watchers;
        if state.events.borrow().len() >= expected || waited >= GRACE || stopped {
            return None;
        }
        Some(state.last_put_answer.get().map(|t| t + GRACE))
    });
    let put_wall = state.last_put_answer.get().map_or(Duration::ZERO, |t| t - t0);

    // Each event's latency from its put's due start.
    let mut events = Recorder::new();
    let mut last_event = t0;
    let revisions = state.put_revisions.borrow();
    let mut matched = 0;
    for &(rev, at) in state.events.borrow().iter() {
        match revisions.get(&rev) {
            Some(&i) => {
                events.ok(at.saturating_duration_since(due(i)));
                matched += 1;
                last_event = last_event.max(at);
            }
            None => events.err("event of a revision no answered put wrote"),
        }
    }
    events.err_n("watch event missing", (revisions.len() * watchers).saturating_sub(matched));
    // Their missing events are counted above; the reasons go to stderr.
    for e in state.watch_errors.borrow().iter() {
        eprintln!("benchmark: a watcher ended: {e}");
    }
    for w in &watches {
        w.cancel(|_| ());
    }
    let puts = state.put_recorder.borrow_mut().take().expect("recorder").finish(put_wall);
    Ok(WatchResults { puts, events: events.finish(last_event - t0) })
}
