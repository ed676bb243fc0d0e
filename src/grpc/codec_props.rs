//! Property tests of the message framing: the decoder on random bytes, cut at every point and
//! into random chunks, never panics and yields what it yields when the bytes come whole.
//! Case counts: see `grpc::proptest_config`.

use super::*;
use proptest::prelude::*;
use proptest::sample::Index;

/// What a body decodes to: its messages, then how it ended (a framing error stops it).
type Outcome = (Vec<Vec<u8>>, Result<(), FrameError>);

/// Pushes `chunks` in order. After a chunk whose flag is set, drains every whole message
/// (as `Reader` does after each DATA chunk); the last chunk is always drained, then
/// `finish()` tells whether the body ended on a message boundary.
fn decode<'a>(chunks: impl IntoIterator<Item = (&'a [u8], bool)>) -> Outcome {
    let mut d = Decoder::default();
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

proptest! {
    #![proptest_config(super::super::proptest_config(256))]

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
        prop_assert_eq!(decode(chunks), whole(&wire));
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
