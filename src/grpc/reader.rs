//! Reading a gRPC response from its h2 stream's events: the messages, then the status,
//! with framing errors and h2 failures mapped to gRPC codes.
//!
//! The status arrives in the trailers, or, for a call that failed before any message
//! ("trailers only"), in the response headers with END_STREAM. `grpc-message` is
//! percent-encoded. A response without `grpc-status` maps its HTTP status onto a code as
//! gRPC specifies.

use super::codec::{Decoder, FrameError};
use crate::error::Code;
use crate::h2io::StreamEvent;
use bytes::Bytes;
use http::{HeaderMap, HeaderName};

/// Turns a stream's events into the messages and status of a gRPC response.
///
/// `Reader::default()` accepts messages up to `DEFAULT_MAX_RESPONSE_BYTES`;
/// [`Reader::new`] takes the client's limit.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    decoder: Decoder,
    /// A framing error that followed whole messages in the same DATA chunk: those messages
    /// are handed out first (as they are when the chunk is cut before the bad frame), and
    /// this ends the call right after (see `take_failure`).
    failed: Option<FrameError>,
}

/// What one stream event meant.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing complete yet.
    Continue,
    /// Whole messages arrived (in order).
    Messages(Vec<Bytes>),
    /// The call is over: `Ok` for status OK, else the error.
    Finished(Result<(), (Code, String)>),
}

impl Reader {
    /// A reader that fails the call with `RESOURCE_EXHAUSTED` on a message whose prefix
    /// announces more than `max_message` bytes.
    pub(crate) fn new(max_message: usize) -> Reader {
        Reader { decoder: Decoder::new(max_message), failed: None }
    }

    /// Applies one event from the h2 stream.
    ///
    /// After `Step::Messages`, the caller asks `take_failure` before applying another event.
    pub(crate) fn apply(&mut self, event: StreamEvent) -> Step {
        if let Some(err) = self.take_failure() {
            return Step::Finished(Err(err));
        }
        match event {
            StreamEvent::Headers(parts, end) => self.headers(&parts, end),
            StreamEvent::Data(chunk) => {
                self.decoder.push(chunk);
                let mut msgs = Vec::new();
                loop {
                    match self.decoder.next() {
                        Ok(Some(m)) => msgs.push(m),
                        Ok(None) => break,
                        Err(e) if msgs.is_empty() => return Step::Finished(Err(frame_error(e))),
                        Err(e) => {
                            self.failed = Some(e);
                            break;
                        }
                    }
                }
                if msgs.is_empty() {
                    Step::Continue
                } else {
                    Step::Messages(msgs)
                }
            }
            StreamEvent::Trailers(t) => match Status::from_headers(&t) {
                Some(st) => self.finish(st),
                None => {
                    Step::Finished(Err((Code::Internal, "trailers without grpc-status".into())))
                }
            },
            StreamEvent::End => {
                Step::Finished(Err((Code::Internal, "stream ended without grpc-status".into())))
            }
            StreamEvent::Failed(e) => Step::Finished(Err(h2_error(&e))),
        }
    }

    /// The error that ends the call after the messages just handed out, if a framing error
    /// followed them in their chunk.
    pub(crate) fn take_failure(&mut self) -> Option<(Code, String)> {
        self.failed.take().map(frame_error)
    }

    fn headers(&mut self, parts: &http::response::Parts, end: bool) -> Step {
        if let Some(st) = Status::from_headers(&parts.headers) {
            // Trailers-only: the whole response is this HEADERS frame.
            return self.finish(st);
        }
        let status = parts.status.as_u16();
        if status != 200 {
            let code = code_for_http_status(status);
            return Step::Finished(Err((
                code,
                format!("HTTP status {status} without grpc-status"),
            )));
        }
        if end {
            return Step::Finished(Err((
                Code::Internal,
                "response ended without grpc-status".into(),
            )));
        }
        Step::Continue
    }

    fn finish(&mut self, st: Status) -> Step {
        if st.code != Code::Ok {
            return Step::Finished(Err((st.code, st.message)));
        }
        match self.decoder.finish() {
            Ok(()) => Step::Finished(Ok(())),
            Err(e) => Step::Finished(Err(frame_error(e))),
        }
    }
}

/// The status a framing error ends the call with. A message above the limit is
/// `RESOURCE_EXHAUSTED` in grpc-go's words (its `MaxCallRecvMsgSize` check), so the error
/// reads the same as from Go's clientv3; a broken framing is `INTERNAL`.
fn frame_error(e: FrameError) -> (Code, String) {
    let msg = match e {
        FrameError::Compressed => "compressed message received; compression was not negotiated",
        FrameError::Truncated => "response body ended inside a message",
        FrameError::TooLarge { len, max } => {
            let msg = format!("grpc: received message larger than max ({len} vs. {max})");
            return (Code::ResourceExhausted, msg);
        }
    };
    (Code::Internal, msg.into())
}

/// The gRPC code for an h2 failure, as gRPC maps HTTP/2 errors.
pub(crate) fn h2_error(e: &h2::Error) -> (Code, String) {
    use h2::Reason;
    let code = if e.is_io() || e.is_go_away() {
        Code::Unavailable
    } else {
        match e.reason() {
            Some(Reason::REFUSED_STREAM) => Code::Unavailable,
            Some(Reason::CANCEL) => Code::Cancelled,
            Some(Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
            Some(Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
            Some(_) => Code::Internal,
            // A library or user error (a header h2 refused, a closed send stream).
            None => Code::Internal,
        }
    };
    (code, format!("http2: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::codec;

    fn parts(status: u16, headers: &[(&'static str, &'static str)]) -> http::response::Parts {
        let mut b = http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn trailers(code: &'static str, msg: &'static str) -> StreamEvent {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", code.parse().unwrap());
        t.insert("grpc-message", msg.parse().unwrap());
        StreamEvent::Trailers(t)
    }

    #[test]
    fn a_normal_response_yields_its_message_then_ok() {
        let mut r = Reader::default();
        assert_eq!(r.apply(StreamEvent::Headers(parts(200, &[]), false)), Step::Continue);
        assert_eq!(
            r.apply(StreamEvent::Data(Bytes::from_static(&[0, 0, 0, 0, 2, 8]))),
            Step::Continue
        );
        assert_eq!(
            r.apply(StreamEvent::Data(Bytes::from_static(&[1]))),
            Step::Messages(vec![Bytes::from_static(&[8, 1])])
        );
        assert_eq!(r.apply(trailers("0", "")), Step::Finished(Ok(())));
    }

    #[test]
    fn trailers_only_carries_the_status_in_headers() {
        let mut r = Reader::default();
        let h = parts(
            200,
            &[("grpc-status", "3"), ("grpc-message", "etcdserver%3A key is not provided")],
        );
        assert_eq!(
            r.apply(StreamEvent::Headers(h, true)),
            Step::Finished(Err((Code::InvalidArgument, "etcdserver: key is not provided".into())))
        );
    }

    /// Found by `props::every_split_reads_as_whole`: a message followed, in the same chunk, by
    /// a frame with the compression flag set was dropped, while the same bytes cut between
    /// the two handed the message out. Now it is handed out either way, then the call fails.
    #[test]
    fn messages_before_a_framing_error_in_the_same_chunk_are_handed_out() {
        let mut wire = vec![0, 0, 0, 0, 9];
        wire.extend_from_slice(&[0; 9]);
        wire.extend_from_slice(&[1, 0, 0, 0, 0]);
        let mut r = Reader::default();
        r.apply(StreamEvent::Headers(parts(200, &[]), false));
        assert_eq!(
            r.apply(StreamEvent::Data(Bytes::from(wire))),
            Step::Messages(vec![Bytes::from_static(&[0; 9])])
        );
        let compressed = (
            Code::Internal,
            "compressed message received; compression was not negotiated".to_string(),
        );
        assert_eq!(r.take_failure(), Some(compressed.clone()));
        assert_eq!(r.take_failure(), None);
        // A caller that applies the next event without asking still gets the error first.
        let mut r = Reader::default();
        r.apply(StreamEvent::Data(Bytes::from_static(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0])));
        assert_eq!(r.apply(trailers("0", "")), Step::Finished(Err(compressed)));
    }

    #[test]
    fn a_message_above_the_limit_is_resource_exhausted_from_its_prefix() {
        let exhausted = (
            Code::ResourceExhausted,
            "grpc: received message larger than max (1048576 vs. 1024)".to_string(),
        );
        let mut r = Reader::new(1024);
        assert_eq!(r.apply(StreamEvent::Headers(parts(200, &[]), false)), Step::Continue);
        // The prefix alone (1 MiB announced): the call ends without waiting for the message.
        assert_eq!(
            r.apply(StreamEvent::Data(Bytes::from_static(&[0, 0, 0x10, 0, 0]))),
            Step::Finished(Err(exhausted.clone()))
        );
        // After a message within the limit in the same chunk: that one first, then the error.
        let mut wire = codec::framed(&[[1u8; 3]]);
        wire.extend_from_slice(&[0, 0, 0x10, 0, 0, 9, 9]);
        let mut r = Reader::new(1024);
        assert_eq!(
            r.apply(StreamEvent::Data(Bytes::from(wire))),
            Step::Messages(vec![Bytes::from_static(&[1; 3])])
        );
        assert_eq!(r.take_failure(), Some(exhausted));
        // The default limit: Go's 2^31 - 1.
        let mut r = Reader::default();
        assert_eq!(
            r.apply(StreamEvent::Data(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]))),
            Step::Finished(Err((
                Code::ResourceExhausted,
                "grpc: received message larger than max (4294967295 vs. 2147483647)".into()
            )))
        );
    }

    #[test]
    fn errors_in_trailers_http_status_and_truncation() {
        let mut r = Reader::default();
        assert_eq!(
            r.apply(trailers("14", "etcdserver: no leader")),
            Step::Finished(Err((Code::Unavailable, "etcdserver: no leader".into())))
        );
        let mut r = Reader::default();
        assert!(matches!(
            r.apply(StreamEvent::Headers(parts(503, &[]), true)),
            Step::Finished(Err((Code::Unavailable, _)))
        ));
        let mut r = Reader::default();
        r.apply(StreamEvent::Data(Bytes::from_static(&[0, 0, 0, 0, 9, 1])));
        assert!(matches!(r.apply(trailers("0", "")), Step::Finished(Err((Code::Internal, _)))));
        let mut r = Reader::default();
        assert!(matches!(r.apply(StreamEvent::End), Step::Finished(Err((Code::Internal, _)))));
    }
}

#[cfg(test)]
#[path = "reader_props.rs"]
mod props;

// ===== the status =====

/// A status read from headers or trailers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Status {
    /// The gRPC code.
    pub(crate) code: Code,
    /// The decoded `grpc-message`, empty when absent.
    pub(crate) message: String,
}

impl Status {
    /// The status in `map`, if it carries `grpc-status`.
    pub(crate) fn from_headers(map: &HeaderMap) -> Option<Status> {
        // Names made once, at compile time: a `&str` key is parsed on every lookup.
        const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
        const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
        let raw = map.get(&GRPC_STATUS)?;
        // `1*DIGIT` only: `parse` alone would also read a sign ("+0", "-0" as OK).
        let code = std::str::from_utf8(raw.as_bytes())
            .ok()
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<i32>().ok())
            .map_or(Code::Unknown, Code::from_i32);
        let message =
            map.get(&GRPC_MESSAGE).map(|m| percent_decode(m.as_bytes())).unwrap_or_default();
        Some(Status { code, message })
    }
}

/// The code for a non-200 HTTP response without `grpc-status` (gRPC's HTTP mapping).
pub(crate) fn code_for_http_status(status: u16) -> Code {
    match status {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// Decodes `%XX` escapes; a malformed escape is kept as written. Invalid UTF-8 is replaced.
pub(crate) fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod status_tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn reads_code_and_decoded_message() {
        let st = Status::from_headers(&headers(&[
            ("grpc-status", "3"),
            ("grpc-message", "etcdserver: key is not provided"),
        ]))
        .unwrap();
        assert_eq!(st.code, Code::InvalidArgument);
        assert_eq!(st.message, "etcdserver: key is not provided");

        let st = Status::from_headers(&headers(&[
            ("grpc-status", "14"),
            ("grpc-message", "no%20leader%3A%20100%25%E2%9C%93"),
        ]))
        .unwrap();
        assert_eq!(st.code, Code::Unavailable);
        assert_eq!(st.message, "no leader: 100%\u{2713}");
    }

    #[test]
    fn missing_or_odd_status() {
        assert_eq!(Status::from_headers(&headers(&[("content-type", "application/grpc")])), None);
        let st = Status::from_headers(&headers(&[("grpc-status", "0")])).unwrap();
        assert_eq!((st.code, st.message.as_str()), (Code::Ok, ""));
        let st = Status::from_headers(&headers(&[("grpc-status", "x")])).unwrap();
        assert_eq!(st.code, Code::Unknown);
    }

    /// Found by `props::arbitrary_headers`: a signed number is not a `grpc-status`, so "+0"
    /// and "-0" must not read as OK (nor "+14" as UNAVAILABLE).
    #[test]
    fn a_signed_status_is_unknown_not_ok() {
        for v in ["+0", "-0", "+14", "-1"] {
            let st = Status::from_headers(&headers(&[("grpc-status", v)])).unwrap();
            assert_eq!(st.code, Code::Unknown, "grpc-status {v}");
        }
    }

    #[test]
    fn malformed_escapes_are_kept() {
        assert_eq!(percent_decode(b"50%"), "50%");
        assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
        assert_eq!(percent_decode(b"%41%42"), "AB");
        assert_eq!(percent_decode(b"%ff"), "\u{fffd}");
    }

    #[test]
    fn http_statuses_map_as_grpc_specifies() {
        assert_eq!(code_for_http_status(404), Code::Unimplemented);
        assert_eq!(code_for_http_status(503), Code::Unavailable);
        assert_eq!(code_for_http_status(500), Code::Unknown);
    }
}

#[cfg(test)]
#[path = "status_props.rs"]
mod status_props;
