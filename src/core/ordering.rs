//! The revision-ordering guard (Go's `clientv3/ordering`): the client remembers the highest
//! revision any response showed it, and a read answered by a member behind the highest
//! revision seen *before the read started* (as Go compares: concurrent calls may be answered
//! in any order) (a failover to
//! a lagging member, a serializable read on a follower that has not caught up) is not
//! delivered: it is treated as `UNAVAILABLE` from that member, so the retry policy sends it
//! elsewhere (the member is left when there is another) or again once the member caught up,
//! within the call's deadline. A read never goes back in time.

use crate::pb::etcdserverpb::ResponseHeader;
use prost::Message;

/// Every etcd response carries its header as field 1: decoding this skips the rest.
#[derive(Clone, PartialEq, Message)]
struct HeaderOnly {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
}

/// The guard's state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ordering {
    on: bool,
    /// The highest revision seen in a response.
    seen: i64,
}

impl Ordering {
    pub(crate) fn new(on: bool) -> Ordering {
        Ordering { on, seen: 0 }
    }

    /// The highest revision seen so far: a read started now must not be answered below it.
    pub(crate) fn floor(&self) -> i64 {
        self.seen
    }

    /// Looks at the response of a call of `path` started when [`floor`](Self::floor) was
    /// `floor`: `Err` with the reason when it is a read answered below it; otherwise the
    /// highest revision moves.
    pub(crate) fn check(&mut self, path: &str, floor: i64, response: &[u8]) -> Result<(), String> {
        if !self.on {
            return Ok(());
        }
        let Some(revision) =
            HeaderOnly::decode(response).ok().and_then(|h| h.header).map(|h| h.revision)
        else {
            return Ok(());
        };
        if path == RANGE && revision < floor {
            return Err(format!(
                "stale read: the member answered at revision {revision}, behind revision {floor} seen before"
            ));
        }
        self.seen = self.seen.max(revision);
        Ok(())
    }
}

const RANGE: &str = "/etcdserverpb.KV/Range";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::{PutResponse, RangeResponse};

    fn range(revision: i64) -> Vec<u8> {
        let header = Some(ResponseHeader { revision, ..Default::default() });
        RangeResponse { header, count: 1, ..Default::default() }.encode_to_vec()
    }

    fn put(revision: i64) -> Vec<u8> {
        let header = Some(ResponseHeader { revision, ..Default::default() });
        PutResponse { header, ..Default::default() }.encode_to_vec()
    }

    #[test]
    fn a_read_behind_a_revision_seen_is_refused_and_any_response_moves_the_mark() {
        let mut o = Ordering::new(true);
        let early = o.floor();
        assert!(o.check(RANGE, o.floor(), &range(5)).is_ok());
        assert!(o.check("/etcdserverpb.KV/Put", o.floor(), &put(9)).is_ok());
        let err = o.check(RANGE, o.floor(), &range(8)).unwrap_err();
        assert!(err.contains("revision 8, behind revision 9"), "{err}");
        assert!(o.check(RANGE, early, &range(8)).is_ok(), "started before 9 was seen");
        assert!(o.check(RANGE, o.floor(), &range(9)).is_ok(), "caught up");
        assert!(o.check("/etcdserverpb.KV/Put", o.floor(), &put(3)).is_ok(), "only reads");
        assert!(o.check(RANGE, o.floor(), b"\xff\xff").is_ok(), "no header: nothing to say");
    }

    #[test]
    fn off_lets_everything_through() {
        let mut o = Ordering::new(false);
        o.check(RANGE, 0, &range(9)).unwrap();
        assert!(o.check(RANGE, 9, &range(1)).is_ok());
    }
}
