//! The recipes' keys, as Go lays them out, and reading a Txn's results.

use crate::ops::txn::TxnOpResponse;
use crate::pb::etcdserverpb::{RangeResponse, TxnResponse};
use bytes::{Bytes, BytesMut};

/// `prefix` + `/` (Go's `NewMutex` and `NewElection` add it).
pub(crate) fn with_slash(prefix: &[u8]) -> Bytes {
    let mut p = BytesMut::with_capacity(prefix.len() + 1);
    p.extend_from_slice(prefix);
    p.extend_from_slice(b"/");
    p.freeze()
}

/// `{prefix}{lease:x}`: a session's key under a recipe's prefix (with its slash).
pub(crate) fn lease_key(prefix: &Bytes, lease: i64) -> Bytes {
    let mut k = BytesMut::from(&prefix[..]);
    k.extend_from_slice(format!("{lease:x}").as_bytes());
    k.freeze()
}

/// The range response of a Txn's `i`th operation.
pub(crate) fn range_of(resp: &TxnResponse, i: usize) -> Option<&RangeResponse> {
    match resp.responses.get(i)?.response.as_ref()? {
        TxnOpResponse::ResponseRange(r) => Some(r),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_gos() {
        let p = with_slash(b"locks/a");
        assert_eq!(&p[..], b"locks/a/");
        assert_eq!(&lease_key(&p, 0x694d_77aa_9e63_5a07)[..], b"locks/a/694d77aa9e635a07");
        assert_eq!(&lease_key(&p, 10)[..], b"locks/a/a", "lowercase, no padding");
    }
}
