//! Property tests of the message framing: the decoder on random bytes, cut at every point and
//! into random chunks, never panics and yields what it yields when the bytes come whole; a
//! length prefix above the limit is refused, however it is cut, as soon as its fifth byte is
//! in. Case counts: see `grpc::proptest_config`.

use super::*;
use proptest::prelude::*;
use proptest::sample::Index;

/// What a body decodes to: its messages, then how it ended (a framing error stops it).
type Outcome = (Vec<Vec<u8>>, Result<(), FrameError>);

/// Pushes `chunks` in order. After a chunk whose flag is set, drains every whole message
/// (as `Reader` does after each DATA chunk); the last chunk is always drained, then
/// `finish()` tells whether the body ended on a message boundary.
fn decode<'a>(chunks: impl IntoIterator<Item = (&'a [u8], bool)>) -> Outcome {
    decode_limited(Decoder::default(), chunks)
}

/// [`decode`] with decoder `d` (a limit of one's choice).
fn decode_limited<'a>(
    mut d: Decoder,
    chunks: impl IntoIterator<Item = (&'a [u8], bool)>,
) -> Outcome {
    let mut msgs = Vec::new();
    let mut chunks = chunks.into_iter().peekable();
    while let Some((chunk, drain)) = chunks.next() {
        d.push(Bytes::copy_from_slice(chunk));
        if !drain && chunks.peek().is_some() {
            continue;
        }
        loop {
            match d.next() {
                Ok(Some(m)) => msgs.push(m.to_vec()),
                Ok(None) => break,
                Err(e) => return (msgs, Err(e)),
            }
        }
    }
    (msgs, d.finish())
}

fn whole(wire: &[u8]) -> Outcome {
    decode([(wire, true)])
}

/// Up to `messages` well-framed messages with up to `writes` bytes overwritten (a flag, a
/// length, a payload byte) and perhaps cut short: what a damaged response body looks like.
pub(crate) fn damaged_frames(messages: usize, writes: usize) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..messages),
        prop::collection::vec((any::<Index>(), any::<u8>()), 0..writes),
        any::<Option<Index>>(),
    )
        .prop_map(|(payloads, writes, cut)| {
            let mut wire = framed(&payloads);
            if !wire.is_empty() {
                for (at, byte) in writes {
                    let at = at.index(wire.len());
                    wire[at] = byte;
                }
            }
            if let Some(cut) = cut {
                wire.truncate(cut.index(wire.len() + 1));
            }
            wire
        })
}

/// A response body: random bytes, or damaged frames.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..64),
        4 => damaged_frames(6, 3),
    ]
}

/// Random cut points in `0..=len`, sorted, each with whether to drain after it.
fn chunked<'a>(wire: &'a [u8], cuts: &[(Index, bool)]) -> Vec<(&'a [u8], bool)> {
    let mut points: Vec<(usize, bool)> =
        cuts.iter().map(|(at, drain)| (at.index(wire.len() + 1), *drain)).collect();
    points.sort();
    let mut chunks = Vec::new();
    let mut from = 0;
    for (to, drain) in points {
        chunks.push((&wire[from..to], drain));
        from = to;
    }
    chunks.push((&wire[from..], true));
    chunks
}

/// A receive limit and a length above it: tiny limits, any limit a `u32` length can exceed,
/// and the default; lengths anywhere from just above the limit to `u32::MAX`.
fn limit_and_length() -> impl Strategy<Value = (usize, u32)> {
    let max = u32::MAX as usize;
    prop_oneof![
        2 => 0usize..64,
        2 => 0usize..max,
        1 => Just(crate::config::DEFAULT_MAX_RESPONSE_BYTES),
        1 => Just(max - 1),
    ]
    .prop_flat_map(|limit| {
        let above = prop_oneof![
            1 => Just(limit as u64 + 1),
            1 => Just(u32::MAX as u64),
            4 => (limit as u64 + 1)..=u32::MAX as u64,
        ];
        (Just(limit), above.prop_map(|len| len as u32))
    })
}

/// Whole messages within `limit`, then a prefix announcing `len` (with any flag byte) and a
/// few bytes of its message: the wire, the messages and where the prefix ends.
fn oversized_after(
    limit: usize,
    len: u32,
    flag: u8,
    mut before: Vec<Vec<u8>>,
    tail: &[u8],
) -> (Vec<u8>, Vec<Vec<u8>>, usize) {
    for p in &mut before {
        p.truncate(limit);
    }
    let mut wire = framed(&before);
    wire.push(flag);
    wire.extend_from_slice(&len.to_be_bytes());
    let prefix_end = wire.len();
    wire.extend_from_slice(tail);
    (wire, before, prefix_end)
}

proptest! {
    #![proptest_config(super::super::proptest_config(256))]

    /// A prefix announcing more than the limit ends the body with the limit error after the
    /// messages before it, whatever its flag byte, however the bytes are chunked, and
    /// whatever follows it.
    #[test]
    fn a_length_above_the_limit_is_always_the_limit_error(
        (limit, len) in limit_and_length(),
        flag in any::<u8>(),
        before in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..4),
        tail in prop::collection::vec(any::<u8>(), 0..64),
        cuts in prop::collection::vec((any::<Index>(), any::<bool>()), 0..8),
    ) {
        let (wire, before, _) = oversized_after(limit, len, flag, before, &tail);
        let expected = (before, Err(FrameError::TooLarge { len: len as usize, max: limit }));
        prop_assert_eq!(decode_limited(Decoder::new(limit), [(&wire[..], true)]), expected.clone());
        let chunks = chunked(&wire, &cuts);
        prop_assert_eq!(decode_limited(Decoder::new(limit), chunks), expected);
    }

    /// Fed a byte at a time, the decoder refuses the oversized message at the prefix's fifth
    /// byte: never earlier, and without waiting for a byte of the message.
    #[test]
    fn the_limit_error_comes_with_the_prefix_alone(
        (limit, len) in limit_and_length(),
        before in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 0..3),
    ) {
        let (wire, before, prefix_end) = oversized_after(limit, len, 0, before, &[]);
        let mut d = Decoder::new(limit);
        let mut msgs = Vec::new();
        for (i, b) in wire.iter().enumerate() {
            d.push(Bytes::copy_from_slice(&[*b]));
            loop {
                match d.next() {
                    Ok(Some(m)) => msgs.push(m.to_vec()),
                    Ok(None) => break,
                    Err(e) => {
                        prop_assert_eq!(i + 1, prefix_end, "refused at byte {}", i);
                        prop_assert_eq!(e, FrameError::TooLarge { len: len as usize, max: limit });
                        prop_assert_eq!(&msgs, &before);
                        return Ok(());
                    }
                }
            }
        }
        prop_assert!(false, "never refused");
    }

    /// Cut in two at every point, the body decodes as it does whole.
    #[test]
    fn every_split_decodes_as_whole(wire in body()) {
        let expected = whole(&wire);
        for cut in 0..=wire.len() {
            let (a, b) = wire.split_at(cut);
            prop_assert_eq!(&decode([(a, true), (b, true)]), &expected, "cut at {}", cut);
        }
    }

    /// Cut into random chunks, some pushed without draining in between, the body decodes as it
    /// does whole.
    #[test]
    fn any_chunking_decodes_as_whole(
        wire in body(),
        cuts in prop::collection::vec((any::<Index>(), any::<bool>()), 0..8),
    ) {
        prop_assert_eq!(decode(chunked(&wire, &cuts)), whole(&wire));
    }

    /// What `encode` frames comes back, message for message, however the body is cut.
    #[test]
    fn encoded_messages_come_back(
        messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..5),
        cut in any::<Index>(),
    ) {
        let wire: Vec<u8> = messages.iter().flat_map(|m| encode(m).to_vec()).collect();
        let cut = cut.index(wire.len() + 1);
        let (msgs, end) = decode([(&wire[..cut], true), (&wire[cut..], true)]);
        prop_assert_eq!(end, Ok(()));
        let decoded: Vec<Vec<u8>> = msgs
            .iter()
            .map(|m| <Vec<u8> as prost::Message>::decode(&m[..]).expect("a message we framed"))
            .collect();
        prop_assert_eq!(decoded, messages);
    }
}
