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
        let Some(revision) = header_revision(response) else {
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

/// The revision in a response's header. etcd writes the header first: read in place, its
/// other fields skipped, instead of a decode that walks the whole message (every response
/// passes here). Anything else goes through prost.
fn header_revision(response: &[u8]) -> Option<i64> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        prost::encoding::decode_varint(buf).ok()
    }
    let fast = || {
        let mut buf = response;
        if buf.first() != Some(&0x0a) {
            return None;
        }
        buf = &buf[1..];
        let len = usize::try_from(varint(&mut buf)?).ok()?;
        let mut header = buf.get(..len)?;
        let mut revision = 0;
        while !header.is_empty() {
            let key = varint(&mut header)?;
            match (key >> 3, key & 7) {
                (3, 0) => revision = varint(&mut header)? as i64,
                (_, 0) => _ = varint(&mut header)?,
                (_, 2) => {
                    let n = usize::try_from(varint(&mut header)?).ok()?;
                    header = header.get(n..)?;
                }
                (_, 1) => header = header.get(8..)?,
                (_, 5) => header = header.get(4..)?,
                _ => return None,
            }
        }
        // (A second header field later in the message, which prost would merge into this
        // one, is not looked for: etcd writes one.)
        Some(revision)
    };
    fast().or_else(|| HeaderOnly::decode(response).ok()?.header.map(|h| h.revision))
}

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
    fn the_header_revision_read_in_place_is_prosts() {
        let header = |revision| ResponseHeader {
            cluster_id: 14841639068965178418,
            member_id: 10276657743932975437,
            revision,
            raft_term: 7,
        };
        let kv = crate::pb::mvccpb::KeyValue {
            key: b"k".to_vec().into(),
            value: vec![0x0a; 300].into(),
            ..Default::default()
        };
        let cases = [
            range(0),
            range(1),
            range(i64::MAX),
            put(42),
            RangeResponse {
                header: Some(header(77)),
                kvs: vec![kv],
                count: 1,
                ..Default::default()
            }
            .encode_to_vec(),
            PutResponse { header: Some(header(-1)), ..Default::default() }.encode_to_vec(),
            PutResponse::default().encode_to_vec(),
            b"\xff\xff".to_vec(),
            b"\x0a\x05\x18".to_vec(),
        ];
        for bytes in cases {
            let prost =
                HeaderOnly::decode(&bytes[..]).ok().and_then(|h| h.header).map(|h| h.revision);
            assert_eq!(header_revision(&bytes), prost, "{bytes:?}");
        }
    }

    #[test]
    fn off_lets_everything_through() {
        let mut o = Ordering::new(false);
        o.check(RANGE, 0, &range(9)).unwrap();
        assert!(o.check(RANGE, 9, &range(1)).is_ok());
    }
}
