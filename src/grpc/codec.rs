//! gRPC message framing: a 1-byte compression flag and a 4-byte big-endian length before
//! each protobuf message. Messages may span HTTP/2 DATA frames and frames may carry several
//! messages, so decoding is incremental.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of the length prefix.
pub(crate) const PREFIX_LEN: usize = 5;

/// Frames `msg` as one uncompressed gRPC message.
pub(crate) fn encode<M: prost::Message>(msg: &M) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX_LEN + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    msg.encode(&mut buf).expect("capacity reserved above");
    buf.freeze()
}

/// A framing violation in the response body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The compression flag was set; we never negotiate compression.
    Compressed,
    /// The body ended inside a message.
    Truncated,
}

/// Reassembles messages from DATA chunks.
///
/// ```text
///   push(chunk) ──► buffer ──► next() → Some(message) while a whole message is buffered
/// ```
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    /// Appends a DATA chunk.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole message, if one is buffered.
    pub(crate) fn next(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < PREFIX_LEN {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err(FrameError::Compressed);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if self.buf.len() < PREFIX_LEN + len {
            // No reserve for the announced length: memory follows the bytes that arrive.
            return Ok(None);
        }
        self.buf.advance(PREFIX_LEN);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Checks that the body ended on a message boundary.
    pub(crate) fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::RangeRequest;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            out.push(0);
            out.extend_from_slice(&(p.len() as u32).to_be_bytes());
            out.extend_from_slice(p);
        }
        out
    }

    #[test]
    fn encode_writes_flag_length_and_message() {
        let req = RangeRequest { key: Bytes::from_static(b"k"), ..Default::default() };
        let enc = encode(&req);
        assert_eq!(enc[0], 0);
        assert_eq!(u32::from_be_bytes(enc[1..5].try_into().unwrap()) as usize, enc.len() - 5);
        let mut d = Decoder::default();
        d.push(&enc);
        let msg = d.next().unwrap().unwrap();
        assert_eq!(<RangeRequest as prost::Message>::decode(msg).unwrap(), req);
    }

    #[test]
    fn messages_split_across_chunks_at_every_offset() {
        let wire = framed(&[b"hello", b"", b"world!"]);
        for cut in 0..=wire.len() {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                d.push(part);
                while let Some(m) = d.next().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, vec![&b"hello"[..], b"", b"world!"], "cut at {cut}");
            d.finish().unwrap();
        }
    }

    #[test]
    fn byte_at_a_time() {
        let wire = framed(&[&[7u8; 300]]);
        let mut d = Decoder::default();
        for (i, b) in wire.iter().enumerate() {
            d.push(&[*b]);
            let m = d.next().unwrap();
            assert_eq!(m.is_some(), i == wire.len() - 1);
        }
    }

    #[test]
    fn compressed_flag_and_truncation_are_errors() {
        let mut d = Decoder::default();
        d.push(&[1, 0, 0, 0, 1, 9]);
        assert_eq!(d.next(), Err(FrameError::Compressed));
        let mut d = Decoder::default();
        d.push(&[0, 0, 0, 0, 4, 1, 2]);
        assert_eq!(d.next(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated));
    }
}
