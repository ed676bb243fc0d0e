//! Endpoint auto-sync (`Config::auto_sync_interval`, as Go's clientv3 and eetcd): every
//! interval, a MemberList call; the client URLs of its voting members (learners serve no
//! client traffic) become the endpoints, schemes and all. A member added after start is used
//! once the original ones are gone; one removed stops being tried.
//!
//! ```text
//!   timer ──► MemberList queued ──answer──► endpoints replaced (if they differ)
//!     ▲            │           ──error──► endpoints kept
//!     └─ re-armed at every tick; a tick while a sync runs starts none
//! ```

use super::cx::{Cx, Timer};
use crate::endpoint::{self, Endpoint};
use crate::grpc::codec;
use crate::pb::etcdserverpb::{MemberListRequest, MemberListResponse};
use crate::timer::TimerKey;
use bytes::Bytes;
use prost::Message;
use std::time::Duration;

/// The auto-sync's state.
#[derive(Debug)]
pub(crate) struct Sync {
    /// Time between syncs (`None`: off).
    every: Option<Duration>,
    timer: Option<TimerKey>,
    /// A MemberList call is in flight.
    running: bool,
    /// Scheme-less URLs use TLS (the client has a TLS configuration).
    default_tls: bool,
}

impl Sync {
    /// Syncs every `every` (`None`: never); the first tick is one interval from now.
    pub(crate) fn new(every: Option<Duration>, default_tls: bool, cx: &mut Cx) -> Sync {
        let mut sync = Sync { every, timer: None, running: false, default_tls };
        sync.schedule(cx);
        sync
    }

    fn schedule(&mut self, cx: &mut Cx) {
        if let Some(every) = self.every {
            self.timer = Some(cx.after(every, Timer::Sync));
        }
    }

    /// A tick: re-arm, and return the framed MemberList request to send, unless one runs.
    pub(crate) fn tick(&mut self, cx: &mut Cx) -> Option<Bytes> {
        self.timer = None;
        self.schedule(cx);
        if self.running {
            return None;
        }
        self.running = true;
        Some(codec::encode(&MemberListRequest { linearizable: true }))
    }

    /// The sync ended with `response` (`None`: it failed): the endpoints to use, if the
    /// answer names any.
    pub(crate) fn finished(&mut self, response: Option<Bytes>) -> Option<Vec<Endpoint>> {
        self.running = false;
        let members = MemberListResponse::decode(response?).ok()?.members;
        let urls = members.iter().filter(|m| !m.is_learner).flat_map(|m| &m.client_ur_ls);
        let endpoints: Vec<Endpoint> = urls
            .filter_map(|url| endpoint::endpoint(url, self.default_tls, "auto_sync").ok())
            .collect();
        (!endpoints.is_empty()).then_some(endpoints)
    }

    /// Stops syncing (the client closed); the next operation resumes it.
    pub(crate) fn stop(&mut self, cx: &mut Cx) {
        if let Some(timer) = self.timer.take() {
            cx.cancel(timer);
        }
        self.running = false;
    }

    /// Arms the syncs again if they were stopped.
    pub(crate) fn resume(&mut self, cx: &mut Cx) {
        if self.timer.is_none() {
            self.schedule(cx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::Member;
    use std::time::Instant;

    fn member(urls: &[&str], learner: bool) -> Member {
        Member {
            client_ur_ls: urls.iter().map(|u| u.to_string()).collect(),
            is_learner: learner,
            ..Default::default()
        }
    }

    fn answer(members: Vec<Member>) -> Option<Bytes> {
        Some(MemberListResponse { members, ..Default::default() }.encode_to_vec().into())
    }

    #[test]
    fn voting_members_client_urls_become_the_endpoints_with_their_schemes() {
        let mut cx = Cx::new(Instant::now(), 1);
        let mut sync = Sync::new(Some(Duration::from_secs(1)), false, &mut cx);
        assert!(sync.tick(&mut cx).is_some());
        assert!(sync.tick(&mut cx).is_none(), "one at a time");
        let got = sync.finished(answer(vec![
            member(&["http://127.0.0.1:2379", "https://10.0.0.1:2379"], false),
            member(&["http://127.0.0.1:32379"], true),
            member(&["unix:///tmp/etcd.sock", "not a url"], false),
        ]));
        let names: Vec<(String, bool)> =
            got.unwrap().iter().map(|e| (e.to_string(), e.tls)).collect();
        // Without the `tls` feature an https:// member cannot be used: it is left out.
        let want: &[(&str, bool)] = match cfg!(feature = "tls") {
            true => &[
                ("127.0.0.1:2379", false),
                ("10.0.0.1:2379", true),
                ("unix:///tmp/etcd.sock", false),
            ],
            false => &[("127.0.0.1:2379", false), ("unix:///tmp/etcd.sock", false)],
        };
        let want: Vec<(String, bool)> = want.iter().map(|(n, t)| (n.to_string(), *t)).collect();
        assert_eq!(names, want);
        assert!(sync.tick(&mut cx).is_some(), "the next tick syncs again");
        assert_eq!(sync.finished(None), None, "a failed sync keeps the endpoints");
        assert_eq!(sync.finished(answer(vec![member(&["http://1.2.3.4:1"], true)])), None);
    }

    #[test]
    fn off_never_ticks() {
        let mut cx = Cx::new(Instant::now(), 1);
        Sync::new(None, false, &mut cx);
        assert_eq!(cx.timers.next_deadline(), None);
    }
}
