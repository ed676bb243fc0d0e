//! Go's text rules, which etcdctl's input and messages follow: `strconv.Quote` (`%q`) and
//! `Unquote`, `strconv.ParseInt`'s and `ParseUint`'s errors, `fmt.Sscanf` with etcdctl's compare format, and
//! etcdctl's `Argify` (how a txn request line splits into words).

use std::fmt::Write;
use std::num::IntErrorKind;

/// `strconv.Quote` (what `%q` prints): a Go string literal, bytes that are not UTF-8 as `\x`.
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        chunk.valid().chars().for_each(|c| quote_char(&mut out, c));
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

fn quote_char(out: &mut String, c: char) {
    let escaped = match c {
        '"' => "\\\"",
        '\\' => "\\\\",
        '\x07' => "\\a",
        '\x08' => "\\b",
        '\x0c' => "\\f",
        '\n' => "\\n",
        '\r' => "\\r",
        '\t' => "\\t",
        '\x0b' => "\\v",
        _ => "",
    };
    let n = c as u32;
    let _ = match () {
        _ if !escaped.is_empty() => write!(out, "{escaped}"),
        _ if is_print(c) => write!(out, "{c}"),
        _ if n < 0x20 || n == 0x7f => write!(out, "\\x{n:02x}"),
        _ if n < 0x10000 => write!(out, "\\u{n:04x}"),
        _ => write!(out, "\\U{n:08x}"),
    };
}

/// Go's `unicode.IsPrint`, close enough for messages: everything but controls, spaces other
/// than ' ', and the format and private-use characters.
fn is_print(c: char) -> bool {
    const NOT_PRINT: &[(u32, u32)] = &[
        (0x00ad, 0x00ad),
        (0x0600, 0x0605),
        (0x061c, 0x061c),
        (0x06dd, 0x06dd),
        (0x070f, 0x070f),
        (0x180e, 0x180e),
        (0x200b, 0x200f),
        (0x202a, 0x202e),
        (0x2060, 0x206f),
        (0xe000, 0xf8ff),
        (0xfeff, 0xfeff),
        (0xfff9, 0xfffb),
        (0xe0000, 0x10ffff),
    ];
    let n = c as u32;
    c == ' '
        || !(c.is_control()
            || c.is_whitespace()
            || NOT_PRINT.iter().any(|&(lo, hi)| (lo..=hi).contains(&n)))
}

/// `strconv.Unquote` of a double-quoted literal (quotes included). Bytes, since `\x` and octal
/// escapes may give bytes that are not UTF-8. `None`: Go's "invalid syntax".
pub fn unquote(literal: &str) -> Option<Vec<u8>> {
    let inner = literal.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\n') {
        return None;
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return None,
            '\\' => unescape(&mut chars, &mut out)?,
            c => push_char(&mut out, c),
        }
    }
    Some(out)
}

/// One escape after its backslash, as Go's `UnquoteChar` reads it in a `"` literal.
fn unescape(chars: &mut std::str::Chars, out: &mut Vec<u8>) -> Option<()> {
    let c = chars.next()?;
    let byte = match c {
        'a' => 7,
        'b' => 8,
        'f' => 0x0c,
        'n' => b'\n',
        'r' => b'\r',
        't' => b'\t',
        'v' => 0x0b,
        '\\' | '"' => c as u8,
        'x' => u8::try_from(digits(chars, 2, 16)?).ok()?,
        'u' | 'U' => {
            let len = if c == 'u' { 4 } else { 8 };
            push_char(out, char::from_u32(digits(chars, len, 16)?)?);
            return Some(());
        }
        '0'..='7' => {
            let rest = digits(chars, 2, 8)?;
            u8::try_from(c.to_digit(8)? * 64 + rest).ok()?
        }
        _ => return None,
    };
    out.push(byte);
    Some(())
}

/// The number in the next `n` characters, each a digit in `radix`.
fn digits(chars: &mut std::str::Chars, n: usize, radix: u32) -> Option<u32> {
    (0..n).try_fold(0, |acc, _| Some(acc * radix + chars.next()?.to_digit(radix)?))
}

fn push_char(out: &mut Vec<u8>, c: char) {
    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
}

/// `strconv.ParseInt(s, radix, 64)`, failing with Go's message.
pub fn parse_int(s: &str, radix: u32) -> Result<i64, String> {
    i64::from_str_radix(s, radix).map_err(|e| {
        let why = match e.kind() {
            IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => "value out of range",
            _ => "invalid syntax",
        };
        format!("strconv.ParseInt: parsing {}: {why}", quote(s.as_bytes()))
    })
}

/// `strconv.ParseUint(s, radix, 64)`, failing with Go's message (no sign is accepted).
pub fn parse_uint(s: &str, radix: u32) -> Result<u64, String> {
    let parsed = match s.starts_with('+') {
        true => None,
        false => Some(u64::from_str_radix(s, radix)),
    };
    let why = match parsed {
        Some(Ok(n)) => return Ok(n),
        Some(Err(e)) if e.kind() == &IntErrorKind::PosOverflow => "value out of range",
        _ => "invalid syntax",
    };
    Err(format!("strconv.ParseUint: parsing {}: {why}", quote(s.as_bytes())))
}

/// What `fmt.Sscanf(s, "%q) %s %q", &key, &op, &value)` fills in: the number of values
/// scanned (it stops at the first mismatch) and each value, empty when not reached.
#[derive(Debug, Default, PartialEq)]
pub struct CompareScan {
    pub n: usize,
    pub key: Vec<u8>,
    pub op: String,
    pub value: Vec<u8>,
}

/// Scans the part of a txn compare after its `(`, e.g. `"key") = "value"`.
pub fn scan_compare(s: &str) -> CompareScan {
    let mut out = CompareScan::default();
    let mut input = Scanner(s);
    let _ = (|| {
        out.key = input.quoted()?;
        out.n = 1;
        input.literal(')')?;
        input.space()?;
        out.op = input.word()?;
        out.n = 2;
        input.space()?;
        out.value = input.quoted()?;
        out.n = 3;
        Some(())
    })();
    out
}

/// The input left to `Sscanf`.
struct Scanner<'a>(&'a str);

impl Scanner<'_> {
    fn skip_space(&mut self) {
        self.0 = self.0.trim_start();
    }

    /// `%q`: a `"` literal (unquoted) or a `` ` `` raw string, after spaces.
    fn quoted(&mut self) -> Option<Vec<u8>> {
        self.skip_space();
        let end = match self.0.as_bytes().first()? {
            b'`' => 1 + self.0[1..].find('`')?,
            b'"' => double_quoted_end(self.0.as_bytes(), 0)? - 1,
            _ => return None,
        };
        let literal = &self.0[..=end];
        self.0 = &self.0[end + 1..];
        match literal.as_bytes()[0] {
            b'`' => Some(literal.as_bytes()[1..end].to_vec()),
            _ => unquote(literal),
        }
    }

    /// A character of the format other than a space or a verb: must come next.
    fn literal(&mut self, c: char) -> Option<()> {
        self.0 = self.0.strip_prefix(c)?;
        Some(())
    }

    /// A space of the format: one or more spaces, or the end of the input.
    fn space(&mut self) -> Option<()> {
        let at_space = self.0.is_empty() || self.0.starts_with(char::is_whitespace);
        at_space.then(|| self.skip_space())
    }

    /// `%s`: the next run of non-space characters.
    fn word(&mut self) -> Option<String> {
        self.skip_space();
        let end = self.0.find(char::is_whitespace).unwrap_or(self.0.len());
        let (word, rest) = self.0.split_at(end);
        self.0 = rest;
        (!word.is_empty()).then(|| word.to_string())
    }
}

/// Where a `"` literal starting at `start` ends (just past its closing quote): a backslash
/// protects the character after it. `None` if it is not closed.
fn double_quoted_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => {
                b.get(i + 1)?;
                i += 2;
            }
            _ => i += 1,
        }
    }
}

/// Whitespace as Go's regexp `\s` has it (ASCII only).
fn is_re_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

/// etcdctl's `Argify`: the words of a txn request line as its regular expression
/// `"(?:[^"\\]|\\.)*"|'[^']*'|[^'"\s]\S*[^'"\s]?` finds them (a quote that is not closed
/// is skipped), quoted words unquoted. `None`: a `"` word with a bad escape.
///
/// Unlike etcdctl 3.5.1, a `'single-quoted'` word is its text between the quotes: 3.5.1
/// slices it with the number of words instead of the word's length (a bug: `put k 'abc'`
/// writes "a").
pub fn argify(line: &str) -> Option<Vec<String>> {
    let b = line.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let end = match b[i] {
            b'"' => double_quoted_end(b, i),
            b'\'' => b[i + 1..].iter().position(|&c| c == b'\'').map(|p| i + p + 2),
            c if is_re_space(c) => None,
            _ => Some(b[i..].iter().position(|&c| is_re_space(c)).map_or(b.len(), |p| i + p)),
        };
        let Some(end) = end else {
            i += 1; // a space or an unclosed quote: ASCII, so i stays on a char boundary
            continue;
        };
        let word = &line[i..end];
        words.push(match b[i] {
            b'"' => String::from_utf8_lossy(&unquote(word)?).into_owned(),
            b'\'' => word[1..word.len() - 1].to_string(),
            _ => word.to_string(),
        });
        i = end;
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_like_go() {
        assert_eq!(quote(b"a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quote(b"\x07\n\x01\x7f"), r#""\a\n\x01\x7f""#);
        assert_eq!(quote("é\u{a0}\u{200b}".as_bytes()), r#""é\u00a0\u200b""#);
        assert_eq!(quote(b"\xff"), r#""\xff""#);
    }

    #[test]
    fn unquote_reads_go_escapes() {
        assert_eq!(unquote(r#""a\x41\101\u00e9\"""#).unwrap(), "aAAé\"".as_bytes());
        assert_eq!(unquote(r#""\xff""#).unwrap(), b"\xff");
        assert_eq!(unquote(r#""\q""#), None);
        assert_eq!(unquote(r#""\'""#), None);
        assert_eq!(unquote(r#""\400""#), None);
        assert_eq!(unquote(r#""\ud800""#), None);
    }

    #[test]
    fn parse_int_fails_with_go_messages() {
        assert_eq!(parse_int("+ff", 16), Ok(255));
        assert_eq!(
            parse_int("zz", 16),
            Err(r#"strconv.ParseInt: parsing "zz": invalid syntax"#.into())
        );
        assert_eq!(
            parse_int("99999999999999999999", 10),
            Err(r#"strconv.ParseInt: parsing "99999999999999999999": value out of range"#.into())
        );
    }

    #[test]
    fn parse_uint_takes_no_sign_and_fails_with_go_messages() {
        assert_eq!(parse_uint("ff", 16), Ok(255));
        assert!(parse_uint("+1", 16).is_err());
        assert_eq!(
            parse_uint("1ffffffffffffffff", 16),
            Err("strconv.ParseUint: parsing \"1ffffffffffffffff\": value out of range".into())
        );
        assert_eq!(quote(b"a\"b\n"), "\"a\\\"b\\n\"");
    }

    #[test]
    fn compares_scan_as_sscanf_does() {
        let scan = |s| {
            let c = scan_compare(s);
            (c.n, String::from_utf8(c.key).unwrap(), c.op, String::from_utf8(c.value).unwrap())
        };
        let s = |x: &str| x.to_string();
        assert_eq!(scan(r#""k") = "v""#), (3, s("k"), s("="), s("v")));
        assert_eq!(scan(r#" "k")   !=   `v` junk"#), (3, s("k"), s("!="), s("v")));
        assert_eq!(scan(r#""k" ) = "v""#), (1, s("k"), s(""), s("")));
        assert_eq!(scan(r#""k")="v""#), (1, s("k"), s(""), s("")));
        assert_eq!(scan(r#""k") ="#), (2, s("k"), s("="), s("")));
        assert_eq!(scan(r#""k") = "v"#), (2, s("k"), s("="), s("")));
        assert_eq!(scan(r#"k) = "v""#), (0, s(""), s(""), s("")));
    }

    #[test]
    fn argify_splits_like_etcdctl() {
        let words = |s| argify(s).unwrap();
        assert_eq!(words(r#"put k "a b\"c""#), ["put", "k", "a b\"c"]);
        assert_eq!(words("put k 'a b'"), ["put", "k", "a b"]);
        assert_eq!(words(r#"put k "abc"#), ["put", "k", "abc"]);
        assert_eq!(words(r#"put k2 ab"c"#), ["put", "k2", "ab\"c"]);
        assert_eq!(words(r#"put "" x"#), ["put", "", "x"]);
        assert_eq!(words("  get\tk  "), ["get", "k"]);
        assert_eq!(argify(r#"put k "a\qb""#), None);
    }
}
