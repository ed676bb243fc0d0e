//! Property tests of the status parser on arbitrary headers: it never panics, finds a status
//! exactly when `grpc-status` is there, reads a code only from a decimal number, and decodes
//! whatever gRPC's percent-encoding produced. Case counts: see `grpc::proptest_config`.

use super::*;
use http::header::{HeaderName, HeaderValue};
use proptest::prelude::*;

/// Bytes `HeaderValue` accepts: visible ASCII, space, tab and obs-text (0x80..=0xFF).
fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => prop::sample::select(b"0123456789 \t+-%aF".to_vec()),
        1 => 0x20u8..0x7f,
        1 => Just(b'\t'),
        1 => 0x80u8..=0xff,
    ];
    prop::collection::vec(byte, 0..12)
}

/// gRPC's encoding of `grpc-message`: every byte outside 0x20..=0x7E, and `%`, as `%XX`.
fn grpc_percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if (0x20..=0x7e).contains(&b) && b != b'%' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The code gRPC's spec gives `value` (`1*DIGIT`, outer whitespace tolerated): a number
/// beyond the known codes, or anything that is not a number, is UNKNOWN.
fn spec_code(value: &[u8]) -> Code {
    let Ok(s) = std::str::from_utf8(value) else { return Code::Unknown };
    let digits = s.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Code::Unknown;
    }
    let significant = digits.trim_start_matches('0');
    if significant.len() > 2 {
        return Code::Unknown;
    }
    Code::from_i32(significant.parse().unwrap_or(0))
}

proptest! {
    #![proptest_config(super::super::proptest_config(256))]

    /// Any headers: a status exactly when `grpc-status` is there; its code as the spec reads
    /// the value (never OK unless the value is a zero); the message percent-decoded.
    #[test]
    fn arbitrary_headers(
        status in prop::option::of(value_bytes()),
        message in prop::option::of(value_bytes()),
        others in prop::collection::vec(
            (prop::sample::select(vec!["content-type", "grpc-status-details-bin", "x-a"]), value_bytes()),
            0..3,
        ),
        repeat_status in prop::option::of(value_bytes()),
    ) {
        let mut map = HeaderMap::new();
        for (name, v) in &others {
            map.append(*name, HeaderValue::from_bytes(v).unwrap());
        }
        if let Some(v) = &status {
            map.append("grpc-status", HeaderValue::from_bytes(v).unwrap());
            if let Some(again) = &repeat_status {
                // A second value: the first one counts.
                map.append(HeaderName::from_static("grpc-status"), HeaderValue::from_bytes(again).unwrap());
            }
        }
        if let Some(v) = &message {
            map.append("grpc-message", HeaderValue::from_bytes(v).unwrap());
        }
        let got = Status::from_headers(&map);
        match &status {
            None => prop_assert_eq!(got, None),
            Some(v) => {
                let st = got.expect("grpc-status is there");
                prop_assert_eq!(st.code, spec_code(v), "grpc-status {:?}", String::from_utf8_lossy(v));
                let expected_msg = message.as_deref().map(percent_decode).unwrap_or_default();
                prop_assert_eq!(st.message, expected_msg);
            }
        }
    }

    /// Every code, however padded, reads back.
    #[test]
    fn every_code_reads_back(n in 0i32..=16, zeros in 0usize..3, pad in "[ \t]{0,2}") {
        let mut map = HeaderMap::new();
        let v = format!("{pad}{}{n}{pad}", "0".repeat(zeros));
        map.insert("grpc-status", v.parse().unwrap());
        prop_assert_eq!(Status::from_headers(&map).unwrap().code.as_i32(), n);
    }

    /// Whatever gRPC's percent-encoding makes of a message, the parser gives back.
    #[test]
    fn percent_encoded_messages_round_trip(msg in any::<String>()) {
        let mut map = HeaderMap::new();
        map.insert("grpc-status", HeaderValue::from_static("13"));
        map.insert("grpc-message", grpc_percent_encode(&msg).parse().unwrap());
        prop_assert_eq!(Status::from_headers(&map).unwrap().message, msg);
    }

    /// Arbitrary bytes never panic; without `%` they are only UTF-8-decoded.
    #[test]
    fn percent_decode_arbitrary_bytes(raw in prop::collection::vec(any::<u8>(), 0..32)) {
        let decoded = percent_decode(&raw);
        if !raw.contains(&b'%') {
            prop_assert_eq!(decoded, String::from_utf8_lossy(&raw));
        }
    }
}
