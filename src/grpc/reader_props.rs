//! Property tests of `Reader`: a response body cut at every point, or into random DATA chunks,
//! reads as it does whole (the same messages, the same end), and no sequence of stream events
//! makes it panic. Case counts: see `grpc::proptest_config`.

use super::*;
use http::HeaderMap;
use proptest::prelude::*;
use proptest::sample::Index;

/// The messages a response yields, then how it finished (`None`: not finished).
type Outcome = (Vec<Bytes>, Option<Result<(), (Code, String)>>);

fn response_headers(status: u16, extra: &[(&'static str, Vec<u8>)]) -> http::response::Parts {
    let mut parts = http::Response::builder().status(status).body(()).unwrap().into_parts().0;
    for (name, value) in extra {
        parts.headers.append(*name, http::HeaderValue::from_bytes(value).unwrap());
    }
    parts
}

fn trailers(status: &str, message: &str) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", status.parse().unwrap());
    t.insert("grpc-message", message.parse().unwrap());
    t
}

/// Applies `events` until the reader finishes.
fn read(events: impl IntoIterator<Item = StreamEvent>) -> Outcome {
    read_with(Reader::default(), events)
}

/// [`read`] with reader `r` (a limit of one's choice).
fn read_with(mut r: Reader, events: impl IntoIterator<Item = StreamEvent>) -> Outcome {
    let mut msgs = Vec::new();
    for ev in events {
        match r.apply(ev) {
            Step::Continue => {}
            Step::Messages(m) => {
                assert!(!m.is_empty(), "Messages is never empty");
                msgs.extend(m);
                // As the core does before the next event.
                if let Some(err) = r.take_failure() {
                    return (msgs, Some(Err(err)));
                }
            }
            Step::Finished(end) => return (msgs, Some(end)),
        }
    }
    (msgs, None)
}

/// A normal response: 200, the body in `chunks`, then the trailers.
fn response<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, status: &str) -> Outcome {
    let events = std::iter::once(StreamEvent::Headers(response_headers(200, &[]), false))
        .chain(chunks.into_iter().map(|c| StreamEvent::Data(Bytes::copy_from_slice(c))))
        .chain(std::iter::once(StreamEvent::Trailers(trailers(status, "m%20sg"))));
    read(events)
}

/// A body: well-framed messages, a few bytes overwritten, perhaps cut short.
fn body() -> impl Strategy<Value = Vec<u8>> {
    crate::grpc::codec::props::damaged_frames(5, 2)
}

/// A stream event, as plain data (`StreamEvent` is not `Clone`, which strategies need).
#[derive(Clone, Debug)]
enum Ev {
    Headers(u16, Vec<(&'static str, Vec<u8>)>, bool),
    Data(Vec<u8>),
    Trailers(Vec<(&'static str, Vec<u8>)>),
    End,
    Failed(u32),
}

impl Ev {
    fn event(self) -> StreamEvent {
        match self {
            Ev::Headers(status, extra, end) => {
                StreamEvent::Headers(response_headers(status, &extra), end)
            }
            Ev::Data(b) => StreamEvent::Data(Bytes::from(b)),
            Ev::Trailers(extra) => StreamEvent::Trailers(response_headers(200, &extra).headers),
            Ev::End => StreamEvent::End,
            Ev::Failed(r) => StreamEvent::Failed(h2::Error::from(h2::Reason::from(r))),
        }
    }
}

/// Any stream event, the odd ones included.
fn event() -> impl Strategy<Value = Ev> {
    let header_value = prop::collection::vec(
        prop_oneof![prop::sample::select(b"0123456789% +".to_vec()), 0x20u8..0x7f],
        0..6,
    );
    let grpc_headers = prop::collection::vec(
        (prop::sample::select(vec!["grpc-status", "grpc-message", "content-type"]), header_value),
        0..3,
    );
    let status = prop::sample::select(vec![200u16, 200, 204, 400, 404, 429, 500, 503]);
    prop_oneof![
        1 => (status, grpc_headers.clone(), any::<bool>())
            .prop_map(|(status, extra, end)| Ev::Headers(status, extra, end)),
        4 => body().prop_map(Ev::Data),
        1 => grpc_headers.prop_map(Ev::Trailers),
        1 => Just(Ev::End),
        1 => (0u32..16).prop_map(Ev::Failed),
    ]
}

proptest! {
    #![proptest_config(crate::grpc::proptest_config(256))]

    /// Cut in two at every point, the response reads as it does whole.
    #[test]
    fn every_split_reads_as_whole(wire in body(), status in 0u8..=16) {
        let status = status.to_string();
        let expected = response([&wire[..]], &status);
        prop_assert!(expected.1.is_some(), "trailers always finish the call");
        for cut in 0..=wire.len() {
            let (a, b) = wire.split_at(cut);
            prop_assert_eq!(&response([a, b], &status), &expected, "cut at {}", cut);
        }
    }

    /// Cut into random DATA chunks (empty ones too), the response reads as it does whole.
    #[test]
    fn any_chunking_reads_as_whole(
        wire in body(),
        cuts in prop::collection::vec(any::<Index>(), 0..8),
        status in prop::sample::select(vec!["0", "0", "14"]),
    ) {
        let mut points: Vec<usize> = cuts.iter().map(|at| at.index(wire.len() + 1)).collect();
        points.sort();
        let mut chunks = Vec::new();
        let mut from = 0;
        for to in points {
            chunks.push(&wire[from..to]);
            from = to;
        }
        chunks.push(&wire[from..]);
        prop_assert_eq!(response(chunks, status), response([&wire[..]], status));
    }

    /// A message announced above the limit ends the call with `RESOURCE_EXHAUSTED` in Go's
    /// words, right after the messages before it, however the body is cut and whatever
    /// status the trailers would have carried.
    #[test]
    fn a_message_above_the_limit_is_resource_exhausted(
        limit in prop_oneof![0usize..100, Just(crate::config::DEFAULT_MAX_RESPONSE_BYTES)],
        excess in prop_oneof![1u64..10, 1u64..(1 << 32)],
        before in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..100), 0..3),
        cuts in prop::collection::vec(any::<Index>(), 0..6),
        status in prop::sample::select(vec!["0", "14"]),
    ) {
        let len = (limit as u64 + excess).min(u32::MAX as u64);
        let before: Vec<Vec<u8>> =
            before.into_iter().map(|p| p[..p.len().min(limit)].to_vec()).collect();
        let mut wire = crate::grpc::codec::framed(&before);
        wire.push(0);
        wire.extend_from_slice(&(len as u32).to_be_bytes());
        let mut points: Vec<usize> = cuts.iter().map(|at| at.index(wire.len() + 1)).collect();
        points.sort();
        let mut from = 0;
        let mut events = vec![StreamEvent::Headers(response_headers(200, &[]), false)];
        for to in points.into_iter().chain([wire.len()]) {
            events.push(StreamEvent::Data(Bytes::copy_from_slice(&wire[from..to])));
            from = to;
        }
        events.push(StreamEvent::Trailers(trailers(status, "")));
        let (msgs, end) = read_with(Reader::new(limit), events);
        let message = format!("grpc: received message larger than max ({len} vs. {limit})");
        prop_assert_eq!(end, Some(Err((Code::ResourceExhausted, message))));
        prop_assert_eq!(msgs, before);
    }

    /// No sequence of events panics (even after the call finished), and OK only ever comes
    /// from a `grpc-status` of 0.
    #[test]
    fn arbitrary_events_never_panic(events in prop::collection::vec(event(), 0..8)) {
        let mut r = Reader::default();
        for ev in events {
            let ev = ev.event();
            let ok_status = match &ev {
                StreamEvent::Headers(p, _) => Status::from_headers(&p.headers),
                StreamEvent::Trailers(t) => Status::from_headers(t),
                _ => None,
            }
            .is_some_and(|st| st.code == Code::Ok);
            match r.apply(ev) {
                Step::Messages(m) => {
                    prop_assert!(!m.is_empty());
                    prop_assert!(!matches!(r.take_failure(), Some((Code::Ok, _))));
                }
                Step::Finished(Ok(())) => prop_assert!(ok_status),
                _ => {}
            }
        }
    }
}
