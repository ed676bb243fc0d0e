//! `watch KEY [RANGE_END]`: prints each event as etcdctl does until interrupted. SIGINT and
//! SIGTERM keep their default action, so the process dies of the signal as etcdctl's does.
//!
//! The library re-creates the watch after a broken stream; should it give up (a long outage
//! uses up its retries), the watch starts over from the first revision not printed, since
//! etcdctl waits for as long as it takes. Only a cancel by the server (a compacted start
//! revision, say) ends the command, with etcdctl's exit status 5.

use super::{failure, flags, kv_simple, EXIT_INTERRUPTED};
use crate::args::Args;
use crate::output::{self, Obj};
use crate::{etcdctl_message, Ctx, Failure};
use evetcd::{EtcdError, Event, EventType, ResponseHeader, WatchOptions, WatchResponse};
use std::cell::RefCell;
use std::rc::Rc;

/// The flags of `watch`.
struct WatchFlags {
    prefix: bool,
    rev: i64,
    prev_kv: bool,
    progress_notify: bool,
}

impl WatchFlags {
    fn take(args: &mut Args) -> Result<WatchFlags, Failure> {
        Ok(WatchFlags {
            prefix: args.take_bool("prefix")?,
            rev: args.take_i64("rev")?.unwrap_or(0),
            prev_kv: args.take_bool("prev-kv")?,
            progress_notify: args.take_bool("progress-notify")?,
        })
    }

    /// The options for a watch that starts at `rev`. etcdctl takes a second word as the
    /// range end only when there are exactly two.
    fn options(&self, words: &[String], rev: i64) -> Result<WatchOptions, Failure> {
        let mut options = WatchOptions::new()
            .prefix(self.prefix)
            .start_revision(rev)
            .prev_kv(self.prev_kv)
            .progress_notify(self.progress_notify);
        if let [_, end] = words {
            if self.prefix {
                return Err(Failure::usage("`range_end` and `--prefix` are mutually exclusive"));
            }
            options = options.range_end(end.clone());
        }
        Ok(options)
    }
}

/// What the watch's callback leaves for the command.
#[derive(Default)]
struct State {
    /// The first revision not printed yet (0: not known, the watch starts from "now").
    next_rev: i64,
    /// The last header received: a cancel carries none, yet its JSON has one.
    header: Option<ResponseHeader>,
    ended: Option<Ended>,
}

enum Ended {
    /// The library gave up on a broken stream: start over.
    Broken,
    /// The server cancelled the watch.
    Cancelled,
}

pub fn run(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let flags = flags(&mut args, WatchFlags::take)?;
    let words = args.rest();
    let Some(key) = words.first() else {
        return Err(Failure::usage("bad number of arguments"));
    };
    let state = Rc::new(RefCell::new(State { next_rev: flags.rev, ..State::default() }));
    loop {
        let options = flags.options(&words, state.borrow().next_rev)?;
        start(ctx, key, options, &state);
        while state.borrow().ended.is_none() {
            ctx.client.run();
        }
        if let Some(Ended::Cancelled) = state.borrow_mut().ended.take() {
            return Err(failure(EXIT_INTERRUPTED, "watch is canceled by the server"));
        }
    }
}

/// Starts the watch; its callback prints what arrives and records the outcome in `state`.
fn start(ctx: &Ctx, key: &str, options: WatchOptions, state: &Rc<RefCell<State>>) {
    let (state, client, json) = (state.clone(), ctx.client.clone(), ctx.json);
    ctx.client.watch(key.to_string(), options, move |res| {
        let mut state = state.borrow_mut();
        match res {
            Ok(resp) => state.on_response(&resp, json),
            Err(e) => {
                state.ended = Some(state.on_error(&e, json));
                client.stop();
            }
        }
    });
}

impl State {
    fn on_response(&mut self, resp: &WatchResponse, json: bool) {
        if let Some(h) = &resp.header {
            self.header = Some(*h);
        }
        if resp.created {
            // etcdctl's client does not pass the creation on; it tells where "now" was.
            if self.next_rev == 0 {
                self.next_rev = resp.header.as_ref().map_or(0, |h| h.revision) + 1;
            }
            return;
        }
        if let Some(kv) = resp.events.last().and_then(|e| e.kv.as_ref()) {
            self.next_rev = kv.mod_revision + 1;
        }
        let mut out = Vec::new();
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        if resp.events.is_empty() && revision != 0 {
            out.extend_from_slice(format!("progress notify: {revision}\n").as_bytes());
        }
        if json {
            let json = watch_json(resp.header.as_ref(), &resp.events, 0, false);
            out.extend_from_slice(format!("{json}\n").as_bytes());
        } else {
            resp.events.iter().for_each(|e| event_simple(&mut out, e));
        }
        output::print(&out);
    }

    /// A transient failure (the library ran out of retries) starts the watch over; anything
    /// else is the server's cancel, reported with etcdctl's words.
    fn on_error(&self, e: &EtcdError, json: bool) -> Ended {
        let compacted = e.compact_revision();
        if e.is_retryable() && compacted.is_none() {
            return Ended::Broken;
        }
        let reason = match compacted {
            Some(_) => "etcdserver: mvcc: required revision has been compacted".to_string(),
            // The library's words for a cancel without a reason, which etcdctl's client
            // reports as a start revision in the future.
            None if e.message() == "watch canceled by the server" => {
                "etcdserver: mvcc: required revision is a future revision".to_string()
            }
            None => etcdctl_message(e),
        };
        eprintln!("watch was canceled ({reason})");
        if json {
            // The cancel's header has no revision; the rest is the stream's.
            let header = self.header.map(|h| ResponseHeader { revision: 0, ..h });
            let json = watch_json(header.as_ref(), &[], compacted.unwrap_or(0), true);
            output::print(format!("{json}\n").as_bytes());
        }
        Ended::Cancelled
    }
}

/// The event type's name, then the previous key-value pair (if asked for), then the new one.
fn event_simple(out: &mut Vec<u8>, e: &Event) {
    let kind = EventType::try_from(e.r#type).map_or("PUT", |t| t.as_str_name());
    out.extend_from_slice(format!("{kind}\n").as_bytes());
    for kv in [&e.prev_kv, &e.kv].into_iter().flatten() {
        kv_simple(out, kv, false);
    }
}

/// etcdctl marshals its client's `WatchResponse`, whose fields have no JSON names: each is
/// there, capitalised, the header always an object, the events an array.
fn watch_json(
    header: Option<&ResponseHeader>,
    events: &[Event],
    compact_revision: i64,
    canceled: bool,
) -> String {
    let header = output::header(header).unwrap_or_else(|| "{}".into());
    let events: Vec<String> = events.iter().map(event_json).collect();
    format!(
        "{{\"Header\":{header},\"Events\":[{}],\"CompactRevision\":{compact_revision},\"Canceled\":{canceled},\"Created\":false}}",
        events.join(",")
    )
}

fn event_json(e: &Event) -> String {
    Obj::new()
        .num("type", e.r#type)
        .raw("kv", e.kv.as_ref().map(output::kv))
        .raw("prev_kv", e.prev_kv.as_ref().map(output::kv))
        .end()
}
