//! JSON bytes exactly as Go's `encoding/json.Marshal` writes them.
//!
//! Go programs write JSON into etcd that other Go programs compare, watch and parse: the
//! service registry of `go.etcd.io/etcd/client/v3/naming/endpoints` stores
//! `{"Op":0,"Addr":"host:port","Metadata":...}` under each endpoint's key. An evetcd
//! registration should be the value Go's `Manager` would have written, byte for byte, so that
//! a value compare in a transaction, a diff of two registries or a Go reader with strict
//! expectations cannot tell the two writers apart. serde_json's defaults differ from Go's in
//! five ways, each handled here (serde_json's way first, then Go's, which this module writes):
//!
//! - object keys: in the `Map`'s order (sorted, or insertion order once any crate in the
//!   build enables serde_json's `preserve_order`); Go: sorted by bytes, always;
//! - `<` `>` `&`: as they are; Go: `\u003c` `\u003e` `\u0026` (HTML escaping, which
//!   `json.Marshal` turns on);
//! - U+2028 and U+2029: as they are; Go: `\u2028` `\u2029`;
//! - floats: `1.0`, `-0.0`, `1e+20`; Go: `1`, `-0`, `100000000000000000000` (exponents only
//!   outside `1e-6 <= |f| < 1e21`);
//! - invalid UTF-8 (a `&str` cannot hold it; see [`string`]): Go writes one `\ufffd` per
//!   invalid byte.
//!
//! The key order is the subtle one: Cargo unifies features across the whole build, so one
//! unrelated dependency enabling `preserve_order` turns serde_json's `Map` into an insertion
//! ordered map and silently changes every registry value. [`to_vec`] therefore sorts each
//! object's entries itself and never relies on the `Map`'s iteration order.
//!
//! What stays the same as serde_json: the compact layout, `\"`, `\\`, the short escapes `\b`
//! `\f` `\n` `\r` `\t` (Go writes them since 1.22), `\u00XX` with lowercase hex for the other
//! control characters, DEL and all other characters as they are (a valid U+FFFD too), and
//! integers in decimal.
//!
//! # Numbers
//!
//! A [`Value`] number is written like the Go value it stands for:
//!
//! - an integer (serde_json's `u64` or `i64`) like a Go `int64`/`uint64`, or a `json.Number`
//!   holding that integer: exactly. Go's `json.Unmarshal` into `interface{}` turns every
//!   number into a `float64`, which rounds integers beyond 2^53; to reproduce such a Go value,
//!   put the `f64` in the `Value`.
//! - a float (`f64`) like a Go `float64`: `strconv.FormatFloat(f, 'f', -1, 64)` (the shortest
//!   digits that read back as `f`) when `1e-6 <= |f| < 1e21` or `f` is zero (`-0` for negative
//!   zero), else `'e'` format with Go's exponent clean-up (`1e-7`, `1e+21`, `5e-324`). An
//!   integral float is written without a fraction (`1`, like Go).
//!
//! Parsing is serde_json's, with its `float_roundtrip` feature (the crate enables it), so
//! that `serde_json::from_str` reads each float as Go's `strconv.ParseFloat` does: without it,
//! `999999999999999900000` would become `1e21`, one ulp off.
//!
//! # Limits
//!
//! Like serde_json's own writer, [`to_vec`] recurses once per level of nesting. A `Value` from
//! `serde_json::from_str` is at most 128 levels deep; one built by hand much deeper than
//! that may exhaust the stack (as dropping it would).

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::ser::{CharEscape, Formatter};
use serde_json::{Number, Value};
use std::io::{self, Write};

/// Go's `json.Marshal` of the Go `interface{}` value equivalent to `value` (see the module
/// docs for numbers): keys sorted by bytes, Go's string escapes, Go's floats.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    let written = Sorted(value).serialize(&mut ser);
    // Cannot fail: writing into a Vec does not, and `Sorted` only writes string keys.
    debug_assert!(written.is_ok(), "{written:?}");
    out
}

/// [`to_vec`] as a `String` (the same bytes: Go's escapes keep valid UTF-8 valid).
pub fn to_string(value: &Value) -> String {
    String::from_utf8(to_vec(value))
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Go's `json.Marshal` of a Go `string` holding `bytes`: quoted, escaped as [`to_vec`]
/// escapes strings, and each byte that does not start a valid UTF-8 sequence (as Go's
/// `utf8.DecodeRuneInString` decides: overlong forms, surrogates, truncated sequences, stray
/// continuation bytes, bytes above U+10FFFF) written as `\ufffd`, one per byte.
pub fn string(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 2);
    let written = write_go_string(&mut out, bytes);
    // Cannot fail: writing into a Vec does not.
    debug_assert!(written.is_ok(), "{written:?}");
    out
}

/// Writes `bytes` as a quoted Go string (see [`string`]).
fn write_go_string<W: ?Sized + Write>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    let mut f = GoFormatter;
    f.begin_string(w)?;
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                f.write_string_fragment(w, valid)?;
                break;
            }
            Err(e) => {
                let (valid, invalid) = rest.split_at(e.valid_up_to());
                f.write_string_fragment(w, std::str::from_utf8(valid).unwrap_or_default())?;
                // The invalid sequence is a lead byte and the continuation bytes that fit it
                // (`None`: all that is left). Go rejects each of these bytes on its own: none
                // after the first can start a sequence.
                let bad = e.error_len().unwrap_or(invalid.len());
                for _ in 0..bad {
                    w.write_all(b"\\ufffd")?;
                }
                rest = invalid.get(bad..).unwrap_or_default();
            }
        }
    }
    f.end_string(w)
}

// ===== Go's escapes =====

/// An escape sequence Go writes in a string: `\n` or `\u003c`.
#[derive(Debug, Clone, Copy)]
struct Escape {
    bytes: [u8; 6],
    len: usize,
}

impl Escape {
    const fn short(c: u8) -> Escape {
        Escape { bytes: [b'\\', c, 0, 0, 0, 0], len: 2 }
    }

    const fn unicode(hex: [u8; 4]) -> Escape {
        Escape { bytes: [b'\\', b'u', hex[0], hex[1], hex[2], hex[3]], len: 6 }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The escape Go writes for an ASCII byte, `None` for one written as it is (and for any
/// byte above ASCII): Go's `appendString` with HTML escaping on, as `json.Marshal` uses it.
fn ascii_escape(b: u8) -> Option<Escape> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' | b'\\' => Some(Escape::short(b)),
        0x08 => Some(Escape::short(b'b')),
        0x0c => Some(Escape::short(b'f')),
        b'\n' => Some(Escape::short(b'n')),
        b'\r' => Some(Escape::short(b'r')),
        b'\t' => Some(Escape::short(b't')),
        0x00..=0x1f | b'<' | b'>' | b'&' => {
            Some(Escape::unicode([b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]))
        }
        _ => None,
    }
}

/// Writes `s` (no quotes) with every escape Go writes.
fn write_escaped<W: ?Sized + Write>(w: &mut W, s: &str) -> io::Result<()> {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let (escape, len) = match &bytes[i..] {
            // U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR: valid in JSON, not in
            // JavaScript strings, so Go escapes them.
            [0xe2, 0x80, 0xa8, ..] => (Escape::unicode(*b"2028"), 3),
            [0xe2, 0x80, 0xa9, ..] => (Escape::unicode(*b"2029"), 3),
            [b, ..] => match ascii_escape(*b) {
                Some(escape) => (escape, 1),
                None => {
                    i += 1;
                    continue;
                }
            },
            [] => break,
        };
        w.write_all(&bytes[start..i])?;
        w.write_all(escape.as_bytes())?;
        i += len;
        start = i;
    }
    w.write_all(&bytes[start..])
}

// ===== Go's floats =====

/// A finite `f64` as Go's `json.Marshal` writes a `float64` (see the module docs).
fn go_float(f: f64) -> String {
    let abs = f.abs();
    if abs == 0.0 || (1e-6..1e21).contains(&abs) {
        // Rust's `Display` writes the shortest digits that read back as `f`, without an
        // exponent: strconv's 'f' format with precision -1.
        return format!("{f}");
    }
    // `LowerExp` writes the shortest digits too, as `1e21`, `1.5e-7`; Go writes the
    // exponent's sign always and, after json's clean-up of `e-07`, no leading zero.
    let exp = format!("{f:e}");
    match exp.split_once('e') {
        Some((mantissa, power)) if !power.starts_with('-') => format!("{mantissa}e+{power}"),
        _ => exp,
    }
}

// ===== GoFormatter =====

/// serde_json's compact layout with Go's string escapes and Go's floats.
///
/// serde_json's writer splits a string into runs it leaves alone (handed to
/// `write_string_fragment`) and the bytes it escapes itself (`"`, `\` and control characters,
/// handed to `write_char_escape`); Go escapes more, so the runs are escaped again here.
#[derive(Debug, Clone, Copy)]
struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_f64<W: ?Sized + Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        // serde_json writes `null` for NaN and infinities before it gets here (Go's Marshal
        // refuses them; a `Value` cannot hold them).
        w.write_all(go_float(value).as_bytes())
    }

    fn write_string_fragment<W: ?Sized + Write>(&mut self, w: &mut W, s: &str) -> io::Result<()> {
        write_escaped(w, s)
    }

    fn write_char_escape<W: ?Sized + Write>(&mut self, w: &mut W, c: CharEscape) -> io::Result<()> {
        let byte = match c {
            CharEscape::Quote => b'"',
            CharEscape::ReverseSolidus => b'\\',
            CharEscape::Solidus => b'/',
            CharEscape::Backspace => 0x08,
            CharEscape::FormFeed => 0x0c,
            CharEscape::LineFeed => b'\n',
            CharEscape::CarriageReturn => b'\r',
            CharEscape::Tab => b'\t',
            CharEscape::AsciiControl(b) => b,
        };
        match ascii_escape(byte) {
            Some(escape) => w.write_all(escape.as_bytes()),
            // `/` (Go does not escape it); serde_json never asks for anything else.
            None if byte.is_ascii() => w.write_all(&[byte]),
            None => write!(w, "\\u00{byte:02x}"),
        }
    }
}

// ===== Sorted =====

/// A `Value` that serializes each object's entries sorted by key bytes, like Go's map
/// encoder, whatever order serde_json's `Map` iterates in.
struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(n) => serialize_number(n, s),
            Value::String(v) => s.serialize_str(v),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Sorted(item))?;
                }
                seq.end()
            }
            Value::Object(map) => {
                let entries = sorted_entries(map.iter());
                let mut out = s.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    out.serialize_entry(key, &Sorted(value))?;
                }
                out.end()
            }
        }
    }
}

/// `entries` sorted by key bytes (Go's `strings.Compare`).
fn sorted_entries<'a>(
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
) -> Vec<(&'a str, &'a Value)> {
    let mut sorted: Vec<(&str, &Value)> = entries.map(|(k, v)| (k.as_str(), v)).collect();
    // A map's keys are unique, so an unstable sort is deterministic.
    sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    sorted
}

/// Integers exactly, floats as Go's `float64`. Asks `Number` what it holds rather than
/// serializing it, so that the result does not depend on serde_json's `arbitrary_precision`.
fn serialize_number<S: Serializer>(n: &Number, s: S) -> Result<S::Ok, S::Error> {
    if let Some(u) = n.as_u64() {
        s.serialize_u64(u)
    } else if let Some(i) = n.as_i64() {
        s.serialize_i64(i)
    } else if let Some(f) = n.as_f64() {
        s.serialize_f64(f)
    } else {
        // Only with `arbitrary_precision`: a literal no f64 holds. Written as it is, as Go
        // writes a `json.Number`.
        n.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    fn go(value: Value) -> String {
        to_string(&value)
    }

    fn quoted(bytes: &[u8]) -> String {
        String::from_utf8(string(bytes)).expect("Go's quoting writes UTF-8")
    }

    #[test]
    fn control_characters_get_go_escapes_with_lowercase_hex() {
        let all: String = (0u8..0x20).map(char::from).collect();
        assert_eq!(
            go(json!(all)),
            concat!(
                r#""\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000b\f\r\u000e\u000f"#,
                r#"\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001a\u001b"#,
                r#"\u001c\u001d\u001e\u001f""#
            )
        );
        assert_eq!(go(json!("a\u{7f}b")), "\"a\u{7f}b\"", "DEL is not escaped");
    }

    #[test]
    fn html_characters_and_line_separators_are_escaped() {
        assert_eq!(
            go(json!("<a href=\"x\">&</a>")),
            r#""\u003ca href=\"x\"\u003e\u0026\u003c/a\u003e""#
        );
        assert_eq!(go(json!("a\u{2028}b\u{2029}c")), r#""a\u2028b\u2029c""#);
        assert_eq!(go(json!("\u{2027}\u{202a}")), "\"\u{2027}\u{202a}\"", "neighbours stay");
    }

    #[test]
    fn quotes_backslashes_and_non_ascii_are_written_as_go_writes_them() {
        assert_eq!(go(json!("say \"hi\" \\ / ok")), r#""say \"hi\" \\ / ok""#);
        assert_eq!(go(json!("é日本😀\u{fffd}")), "\"é日本😀\u{fffd}\"");
        assert_eq!(go(json!("")), r#""""#);
    }

    #[test]
    fn object_keys_are_sorted_by_bytes_and_escaped() {
        let v =
            json!({"b": 1, "a": 2, "B": 3, "é": 4, "z": 5, "": 6, "😀": 7, "\u{ffff}": 8, "<": 9});
        assert_eq!(
            go(v),
            "{\"\":6,\"\\u003c\":9,\"B\":3,\"a\":2,\"b\":1,\"z\":5,\"é\":4,\"\u{ffff}\":8,\"😀\":7}"
        );
    }

    #[test]
    fn entries_are_sorted_whatever_order_the_map_yields() {
        // The Map's own order (sorted without `preserve_order`) cannot be trusted; feed the
        // sort a reversed order directly.
        let map: Map<String, Value> =
            ["c", "a", "B", "b"].map(|k| (k.to_string(), json!(k))).into_iter().collect();
        let reversed: Vec<_> = map.iter().rev().collect();
        let keys: Vec<&str> = sorted_entries(reversed.into_iter()).iter().map(|e| e.0).collect();
        assert_eq!(keys, ["B", "a", "b", "c"]);
    }

    #[test]
    fn floats_are_written_as_go_writes_a_float64() {
        let cases: &[(f64, &str)] = &[
            (1e21, "1e+21"),
            (-1e21, "-1e+21"),
            (1e20, "100000000000000000000"),
            (999999999999999900000.0, "999999999999999900000"),
            (1e-7, "1e-7"),
            (1.5e-10, "1.5e-10"),
            (0.000001, "0.000001"),
            (123456789.125, "123456789.125"),
            (-0.0, "-0"),
            (0.0, "0"),
            (1.0, "1"),
            (0.1, "0.1"),
            (0.30000000000000004, "0.30000000000000004"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (1e100, "1e+100"),
            (-2.5e-8, "-2.5e-8"),
        ];
        for &(f, want) in cases {
            assert_eq!(go(json!(f)), want, "{f:?}");
        }
    }

    #[test]
    fn integers_are_written_exactly() {
        assert_eq!(go(json!(u64::MAX)), "18446744073709551615");
        assert_eq!(go(json!(i64::MIN)), "-9223372036854775808");
        assert_eq!(go(json!(9007199254740993u64)), "9007199254740993");
        assert_eq!(go(json!(0)), "0");
    }

    #[test]
    fn nested_values_keep_go_layout_and_sort_at_every_level() {
        let v = json!({"z": {"y": [1, {"b": [true, null], "a": "<"}], "x": {}}, "a": []});
        assert_eq!(go(v), r#"{"a":[],"z":{"x":{},"y":[1,{"a":"\u003c","b":[true,null]}]}}"#);
        assert_eq!(
            to_vec(&json!({"Op": 0, "Addr": "h:1", "Metadata": null})),
            br#"{"Addr":"h:1","Metadata":null,"Op":0}"#
        );
    }

    #[test]
    fn invalid_utf8_becomes_one_replacement_per_byte() {
        assert_eq!(quoted(b"\xff"), r#""\ufffd""#);
        assert_eq!(quoted(b"a\xe2\x82"), r#""a\ufffd\ufffd""#, "truncated at the end");
        assert_eq!(quoted(b"\xe2\x82A"), r#""\ufffd\ufffdA""#, "truncated in the middle");
        assert_eq!(quoted(b"\xed\xa0\x80"), r#""\ufffd\ufffd\ufffd""#, "a surrogate");
        assert_eq!(quoted(b"\xc0\x80"), r#""\ufffd\ufffd""#, "overlong NUL");
        assert_eq!(quoted(b"\xf4\x90\x80\x80"), r#""\ufffd\ufffd\ufffd\ufffd""#, "above U+10FFFF");
        assert_eq!(quoted(b"\xef\xbf\xbd"), "\"\u{fffd}\"", "a valid U+FFFD stays");
        assert_eq!(quoted(b"<\xff\xe2\x80\xa8\x01"), r#""\u003c\ufffd\u2028\u0001""#);
        assert_eq!(quoted(b""), r#""""#);
    }

    #[test]
    fn valid_strings_quote_alike_through_string_and_to_vec() {
        let s = "x<\u{2028}\n\"é😀\u{7f}";
        assert_eq!(string(s.as_bytes()), to_vec(&json!(s)));
    }
}
