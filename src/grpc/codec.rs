//! gRPC message framing: a 1-byte compression flag and a 4-byte big-endian length before
//! each protobuf message. Messages may span HTTP/2 DATA frames and frames may carry several
//! messages, so decoding is incremental. A length above the receive limit is refused from
//! the prefix alone, before any of the message is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of the length prefix.
pub(crate) const PREFIX_LEN: usize = 5;

/// Frames `msg` as one uncompressed gRPC message.
pub(crate) fn encode<M: prost::Message>(msg: &M) -> Bytes {
    let mut buf = BytesMut::with_capacity(PREFIX_LEN + msg.encoded_len());
    encode_into(&mut buf, msg);
    buf.freeze()
}

/// Appends `msg`, framed, to `buf` (several messages for one DATA frame, with no copy).
pub(crate) fn encode_into<M: prost::Message>(buf: &mut BytesMut, msg: &M) {
    let len = msg.encoded_len();
    buf.reserve(PREFIX_LEN + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    msg.encode(buf).expect("capacity reserved above");
}

/// A framing violation in the response body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The compression flag was set; we never negotiate compression.
    Compressed,
    /// The body ended inside a message.
    Truncated,
    /// The prefix announced a message of `len` bytes, above the limit of `max`.
    TooLarge {
        /// The length the prefix announced.
        len: usize,
        /// The receive limit.
        max: usize,
    },
}

/// Reassembles messages from DATA chunks.
///
/// ```text
///   push(chunk) ──► chunk ──whole messages──► next() → Some(message)   (no copy)
///                     └──a partial message──► buffer ──completed──► next()
/// ```
///
/// Most messages arrive whole in one chunk: they are handed out as slices of it, so keys and
/// values reach the caller without being copied. Only a message split across chunks is
/// assembled in the buffer, and only one within the limit: a prefix announcing more is an
/// error as soon as its 5 bytes are in (as gRPC's `MaxCallRecvMsgSize`).
#[derive(Debug)]
pub(crate) struct Decoder {
    /// What is left of the latest chunk, while the buffer is empty.
    chunk: Bytes,
    buf: BytesMut,
    /// The largest message accepted, in bytes (the prefix excluded).
    max: usize,
}

/// The default limit (`DEFAULT_MAX_RESPONSE_BYTES`).
impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(crate::config::DEFAULT_MAX_RESPONSE_BYTES)
    }
}

impl Decoder {
    /// A decoder that refuses messages above `max` bytes.
    pub(crate) fn new(max: usize) -> Decoder {
        Decoder { chunk: Bytes::new(), buf: BytesMut::new(), max }
    }

    /// Appends a DATA chunk.
    pub(crate) fn push(&mut self, chunk: Bytes) {
        if self.buf.is_empty() && self.chunk.is_empty() {
            self.chunk = chunk;
        } else {
            self.spill();
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// Moves what is left of the chunk into the buffer.
    fn spill(&mut self) {
        if !self.chunk.is_empty() {
            self.buf.extend_from_slice(&std::mem::take(&mut self.chunk));
        }
    }

    /// The next whole message, if one is buffered.
    pub(crate) fn next(&mut self) -> Result<Option<Bytes>, FrameError> {
        if !self.chunk.is_empty() {
            match whole_message(&self.chunk, self.max)? {
                Some(len) => {
                    self.chunk.advance(PREFIX_LEN);
                    return Ok(Some(self.chunk.split_to(len)));
                }
                None => self.spill(),
            }
        }
        // No reserve for the announced length: memory follows the bytes that arrive.
        let Some(len) = whole_message(&self.buf, self.max)? else {
            return Ok(None);
        };
        self.buf.advance(PREFIX_LEN);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Checks that the body ended on a message boundary.
    pub(crate) fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() && self.chunk.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

/// The length of the message at the start of `bytes`, if all of it is there. The limit is
/// checked first, as grpc-go does: an oversized message is refused whatever its flag says.
fn whole_message(bytes: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    if bytes.len() < PREFIX_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if bytes[0] != 0 {
        return Err(FrameError::Compressed);
    }
    Ok((bytes.len() >= PREFIX_LEN + len).then_some(len))
}

/// Frames raw `payloads` as a server does (uncompressed), for tests of the readers.
#[cfg(test)]
pub(crate) fn framed<P: AsRef<[u8]>>(payloads: &[P]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in payloads {
        let p = p.as_ref();
        out.push(0);
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::RangeRequest;

    #[test]
    fn encode_writes_flag_length_and_message() {
        let req = RangeRequest { key: Bytes::from_static(b"k"), ..Default::default() };
        let enc = encode(&req);
        assert_eq!(enc[0], 0);
        assert_eq!(u32::from_be_bytes(enc[1..5].try_into().unwrap()) as usize, enc.len() - 5);
        let mut d = Decoder::default();
        d.push(Bytes::from(enc.to_vec()));
        let msg = d.next().unwrap().unwrap();
        assert_eq!(<RangeRequest as prost::Message>::decode(msg).unwrap(), req);
    }

    #[test]
    fn messages_split_across_chunks_at_every_offset() {
        let wire = framed::<&[u8]>(&[b"hello", b"", b"world!"]);
        for cut in 0..=wire.len() {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                d.push(Bytes::copy_from_slice(part));
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
            d.push(Bytes::copy_from_slice(&[*b]));
            let m = d.next().unwrap();
            assert_eq!(m.is_some(), i == wire.len() - 1);
        }
    }

    #[test]
    fn compressed_flag_and_truncation_are_errors() {
        let mut d = Decoder::default();
        d.push(Bytes::from_static(&[1, 0, 0, 0, 1, 9]));
        assert_eq!(d.next(), Err(FrameError::Compressed));
        let mut d = Decoder::default();
        d.push(Bytes::from_static(&[0, 0, 0, 0, 4, 1, 2]));
        assert_eq!(d.next(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated));
    }

    #[test]
    fn a_length_above_the_limit_is_refused_from_the_prefix_alone() {
        let too_large = Err(FrameError::TooLarge { len: 11, max: 10 });
        // Only the prefix has come: nothing of the message is waited for.
        let mut d = Decoder::new(10);
        d.push(Bytes::from_static(&[0, 0, 0, 0, 11]));
        assert_eq!(d.next(), too_large);
        // A prefix split across chunks: refused once its fifth byte is in.
        let mut d = Decoder::new(10);
        for (i, b) in [0u8, 0, 0, 0, 11].iter().enumerate() {
            d.push(Bytes::copy_from_slice(&[*b]));
            let expected = if i == 4 { too_large.clone() } else { Ok(None) };
            assert_eq!(d.next(), expected, "after byte {i}");
        }
        // After a message within the limit, in the same chunk; the size is checked before
        // the compression flag, as in grpc-go.
        let mut wire = framed(&[[7u8; 10]]);
        wire.extend_from_slice(&[1, 0, 0, 0, 11]);
        let mut d = Decoder::new(10);
        d.push(Bytes::from(wire));
        assert_eq!(d.next(), Ok(Some(Bytes::from_static(&[7; 10]))));
        assert_eq!(d.next(), too_large);
        // Exactly the limit is accepted; so is an empty message under a zero limit.
        let mut d = Decoder::new(10);
        d.push(Bytes::from(framed(&[[7u8; 10]])));
        assert_eq!(d.next(), Ok(Some(Bytes::from_static(&[7; 10]))));
        let mut d = Decoder::new(0);
        d.push(Bytes::from(framed::<&[u8]>(&[b"", b"x"])));
        assert_eq!(d.next(), Ok(Some(Bytes::new())));
        assert_eq!(d.next(), Err(FrameError::TooLarge { len: 1, max: 0 }));
    }

    #[test]
    fn the_default_limit_is_go_s_and_refuses_the_largest_prefixes() {
        let max = crate::config::DEFAULT_MAX_RESPONSE_BYTES;
        assert_eq!(max, (1 << 31) - 1);
        let mut d = Decoder::default();
        d.push(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]));
        assert_eq!(d.next(), Err(FrameError::TooLarge { len: u32::MAX as usize, max }));
        let mut d = Decoder::default();
        d.push(Bytes::from_static(&[0, 0x80, 0, 0, 0]));
        assert_eq!(d.next(), Err(FrameError::TooLarge { len: 1 << 31, max }));
        let mut d = Decoder::default();
        d.push(Bytes::from_static(&[0, 0x7f, 0xff, 0xff, 0xff]));
        assert_eq!(d.next(), Ok(None), "the limit itself waits for the message");
    }

    #[test]
    fn a_message_whole_in_one_chunk_is_a_slice_of_it_not_a_copy() {
        let chunk = Bytes::from(framed::<&[u8]>(&[b"abc", b"de"]));
        let mut d = Decoder::default();
        d.push(chunk.clone());
        assert_eq!(d.next().unwrap().unwrap().as_ptr(), chunk[5..].as_ptr());
        assert_eq!(d.next().unwrap().unwrap().as_ptr(), chunk[13..].as_ptr());
        assert!(d.next().unwrap().is_none());
        d.finish().unwrap();
    }
}

#[cfg(test)]
#[path = "codec_props.rs"]
pub(crate) mod props;
