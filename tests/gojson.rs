//! `evetcd::gojson` against Go's `encoding/json.Marshal` itself: the Go helper
//! (`tests/goclient`, command `json_marshal`) marshals each vector and returns the bytes as
//! hex, and evetcd must write the same bytes. A JSON text is decoded on both sides (Go into
//! `interface{}`: float64 numbers, or `json.Number` with `use_number`); a byte string is
//! marshalled as a Go `string` holding those bytes, valid UTF-8 or not.
//!
//! The helper needs an etcd to connect to, so each test starts one. Without Go (and without
//! `CI=true`) every test prints `SKIP: go not found: <test>`.

mod support;

use evetcd::gojson;
use serde_json::{json, Map, Value};
use support::goclient::{skip_without_go, GoClient};
use support::Etcd;

/// JSON texts both sides decode, then marshal. Numbers here stay below 2^53 in magnitude
/// or are meant as floats: Go decodes every number into a float64.
const VECTORS: &[&str] = &[
    // Literals and empties.
    "null",
    "true",
    "false",
    r#""""#,
    "{}",
    "[]",
    r#"[{}, [], {"": []}, null, [null]]"#,
    // Escapes: HTML characters, line separators, quotes, DEL, non-ASCII.
    r#""<script>alert('&amp;')</script>""#,
    r#""a\u2028b\u2029c""#,
    "\"raw \u{2028} and \u{2029}\"",
    r#""\u2027\u202a neighbours""#,
    r#""say \"hi\" \\ back\/slash /""#,
    r#""\u007f DEL \u0080 \u009f""#,
    r#""é ü ß Ω 日本語 \u00e9""#,
    r#""😀 \ud83d\ude00 🇪🇺""#,
    r#""\ufffd and � and \uffff and \ufeff""#,
    // Key order: bytes, not UTF-16, case or escaped form.
    r#"{"b":1,"a":2,"B":3,"A":4,"é":5,"e":6,"z":7,"Z":8,"_":9,"":10,"aa":11,"a\u0000":12,
        "日":13,"😀":14,"\uffff":15,"<":16,"&":17,"\u2028":18,"10":19,"9":20}"#,
    r#"{"key":"last wins","key":"second"}"#,
    // Nesting, and the service registry's value.
    r#"{"z":{"y":{"x":[1,{"b":[true,null],"a":"<"}]}},"a":[[[]]]}"#,
    r#"{"Op":0,"Addr":"127.0.0.1:2379","Metadata":{"zone":"<eu>","weight":1.5,"tags":["a&b"]}}"#,
    // Integers exact in a float64.
    "0",
    "-1",
    "123456789",
    "9007199254740991",
    "9007199254740992",
    "-9007199254740992",
    "100000000000000000000",
    "123456789012345678901234567890",
    // Floats on both sides of the 'f'/'e' boundaries, and the extremes.
    "1e21",
    "-1e21",
    "1e20",
    "999999999999999900000",
    "1e-7",
    "-1e-7",
    "0.000001",
    "0.0000009",
    "1.5e-10",
    "123456789.125",
    "-0",
    "-0.0",
    "1.0",
    "0.1",
    "0.30000000000000004",
    "5e-324",
    "2.2250738585072014e-308",
    "1.7976931348623157e308",
    "1e100",
    "[1e21, 1e-7, 1.5, -2.5e-8, 1E+2]",
];

/// Integers Go keeps as literals with `use_number` (`json.Number`), as a Go `int64` or
/// `uint64` writes them: beyond 2^53, where a float64 would round.
const INTEGER_VECTORS: &[&str] = &[
    "9007199254740993",
    "-9007199254740993",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    r#"{"max":18446744073709551615,"min":-9223372036854775808,"list":[9007199254740993]}"#,
];

/// Byte strings marshalled as a Go `string`: invalid UTF-8 of every kind, and neighbours.
const BYTE_VECTORS: &[&[u8]] = &[
    b"\xff",
    b"\xfe\xff",
    b"\x80",
    b"\xbf\x80",
    b"\xc2",
    b"\xc0\x80",
    b"\xc1\xbf",
    b"\xe0\x80\x80",
    b"\xe2\x82",
    b"a\xe2\x82",
    b"\xe2\x82A",
    b"\xe2\x82\xac",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xed\x9f\xbf",
    b"\xf0\x9f\x98",
    b"\xf0\x9f\x98\x80",
    b"\xf0\x80\x80\x80",
    b"\xf4\x8f\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xef\xbf\xbd",
    b"<\xff\xe2\x80\xa8\x01&\xe2\x80",
    b"",
];

/// etcd (the helper connects to one before it answers) and the Go helper; `None` (the test
/// is skipped, visibly) where Go is missing.
fn setup(test: &str) -> Option<(Etcd, GoClient)> {
    if skip_without_go(test) {
        return None;
    }
    let etcd = Etcd::start();
    let go = GoClient::start(&etcd.endpoint());
    Some((etcd, go))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("the helper writes hex"))
        .collect()
}

/// Go's `json.Marshal` of `text` decoded into an `interface{}`.
fn go_marshal(go: &GoClient, text: &str, use_number: bool) -> Vec<u8> {
    let r = go.ok(json!({"cmd": "json_marshal", "json": text, "use_number": use_number}));
    unhex(r.str("bytes_hex"))
}

/// Go's `json.Marshal` of a Go `string` holding `bytes`.
fn go_string(go: &GoClient, bytes: &[u8]) -> Vec<u8> {
    let r = go.ok(json!({"cmd": "json_marshal", "string_hex": hex(bytes)}));
    unhex(r.str("bytes_hex"))
}

/// A line describing where evetcd and Go differ for `what`, `None` when they agree.
fn differs(what: &str, evetcd: &[u8], go: &[u8]) -> Option<String> {
    (evetcd != go).then(|| {
        let show = |b: &[u8]| format!("{:?}", String::from_utf8_lossy(b));
        format!("{what}:\n  evetcd {}\n  go     {}", show(evetcd), show(go))
    })
}

/// Compares evetcd with Go for each text, decoding it with serde_json on our side.
fn compare_texts<'a>(
    go: &GoClient,
    texts: impl IntoIterator<Item = &'a str>,
    use_number: bool,
) -> Vec<String> {
    let mut mismatches = Vec::new();
    for text in texts {
        let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let ours = gojson::to_vec(&value);
        assert_eq!(gojson::to_string(&value).as_bytes(), ours, "to_string of {text}");
        mismatches.extend(differs(text, &ours, &go_marshal(go, text, use_number)));
    }
    mismatches
}

fn assert_none(mismatches: Vec<String>) {
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}

#[test]
fn go_and_evetcd_write_the_same_bytes_for_every_vector() {
    let Some((_etcd, go)) = setup("go_and_evetcd_write_the_same_bytes_for_every_vector") else {
        return;
    };
    let mut texts: Vec<String> = VECTORS.iter().map(|t| t.to_string()).collect();
    // Every ASCII control character and DEL, alone between letters, then all ASCII at once.
    for b in (0u8..0x20).chain([0x7f]) {
        texts.push(json!(format!("a{}b", char::from(b))).to_string());
    }
    texts.push(json!((0u8..0x80).map(char::from).collect::<String>()).to_string());
    // Deep nesting (serde_json's parser stops at 128 levels).
    texts.push(format!("{}{}", "[".repeat(100), "]".repeat(100)));
    texts.push(format!("{}{}{}", r#"{"k<":"#.repeat(100), "null", "}".repeat(100)));
    assert_none(compare_texts(&go, texts.iter().map(String::as_str), false));
}

#[test]
fn go_and_evetcd_write_integers_beyond_2_pow_53_exactly_when_go_keeps_the_literal() {
    let test = "go_and_evetcd_write_integers_beyond_2_pow_53_exactly_when_go_keeps_the_literal";
    let Some((_etcd, go)) = setup(test) else {
        return;
    };
    assert_none(compare_texts(&go, INTEGER_VECTORS.iter().copied(), true));
}

#[test]
fn go_and_evetcd_write_the_same_shortest_digits_for_random_floats() {
    let test = "go_and_evetcd_write_the_same_shortest_digits_for_random_floats";
    let Some((_etcd, go)) = setup(test) else {
        return;
    };
    // xorshift64*: a fixed sequence, so a failure repeats.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut floats = Vec::new();
    for _ in 0..200 {
        floats.push(f64::from_bits(next()));
    }
    for exp in -30..=30 {
        let mantissa = (next() >> 11) as f64 / (1u64 << 53) as f64;
        floats.push((1.0 + mantissa) * 10f64.powi(exp));
    }
    // The 'f'/'e' boundaries and their neighbours.
    for edge in [1e-6f64, 1e21] {
        let bits = edge.to_bits();
        floats.extend([f64::from_bits(bits - 1), edge, f64::from_bits(bits + 1)]);
    }
    let mut mismatches = Vec::new();
    for f in floats.into_iter().filter(|f| f.is_finite()) {
        let value = json!(f);
        // serde_json writes the shortest digits that read back as f; Go's parser reads them
        // back exactly. The Value holds f itself, so serde_json's parser plays no part.
        let text = value.to_string();
        mismatches.extend(differs(&text, &gojson::to_vec(&value), &go_marshal(&go, &text, false)));
    }
    assert_none(mismatches);
}

#[test]
fn go_and_evetcd_replace_invalid_utf8_the_same_way() {
    let Some((_etcd, go)) = setup("go_and_evetcd_replace_invalid_utf8_the_same_way") else {
        return;
    };
    let mut vectors: Vec<Vec<u8>> = BYTE_VECTORS.iter().map(|b| b.to_vec()).collect();
    vectors.extend((0u8..=0xff).map(|b| vec![b'x', b, b'y']));
    vectors.push((0u8..=0xff).collect());
    let mut mismatches = Vec::new();
    for bytes in &vectors {
        let what = format!("bytes {}", hex(bytes));
        mismatches.extend(differs(&what, &gojson::string(bytes), &go_string(&go, bytes)));
    }
    assert_none(mismatches);
}

#[test]
fn key_order_does_not_depend_on_insertion_order() {
    let Some((_etcd, go)) = setup("key_order_does_not_depend_on_insertion_order") else {
        return;
    };
    let keys = ["zeta", "Alpha", "alpha", "é", "e", "😀", "\u{ffff}", "_", "1", "10", "9", ""];
    // The same entries, inserted in opposite orders, at the top level and one level down.
    let build = |reversed: bool| {
        let order = || {
            let all: Vec<(usize, &str)> = keys.iter().copied().enumerate().collect();
            if reversed {
                all.into_iter().rev().collect()
            } else {
                all
            }
        };
        let mut map = Map::new();
        for (i, key) in order() {
            let mut inner = Map::new();
            for (j, inner_key) in order() {
                inner.insert(inner_key.to_string(), json!(i * 100 + j));
            }
            map.insert(key.to_string(), Value::Object(inner));
        }
        Value::Object(map)
    };
    let forward = build(false);
    let reverse = build(true);
    assert_eq!(forward, reverse, "the same entries");
    let ours = gojson::to_vec(&forward);
    assert_eq!(gojson::to_vec(&reverse), ours);
    let text = reverse.to_string();
    assert_none(differs(&text, &ours, &go_marshal(&go, &text, false)).into_iter().collect());
}
