//! The gRPC status of a finished call.
//!
//! It arrives in the trailers, or, for a call that failed before any message ("trailers
//! only"), in the response headers with END_STREAM. `grpc-message` is percent-encoded.
//! A response without `grpc-status` maps its HTTP status onto a code as gRPC specifies.

use crate::error::Code;
use http::HeaderMap;

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
        let raw = map.get("grpc-status")?;
        // `1*DIGIT` only: `parse` alone would also read a sign ("+0", "-0" as OK).
        let code = std::str::from_utf8(raw.as_bytes())
            .ok()
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<i32>().ok())
            .map_or(Code::Unknown, Code::from_i32);
        let message =
            map.get("grpc-message").map(|m| percent_decode(m.as_bytes())).unwrap_or_default();
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
mod tests {
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
mod props;
