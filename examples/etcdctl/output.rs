//! Output in etcdctl's formats: `simple` is written by each command; this holds the JSON
//! pieces (etcdctl marshals the protobuf structs with Go's encoding/json: snake_case names,
//! zero values omitted, bytes as base64, 64-bit numbers unquoted).

use evetcd::{KeyValue, ResponseHeader};
use std::fmt::Write;

/// Writes `bytes` to stdout at once (keys and values need not be UTF-8). A failed write is
/// not worth an error: the reader has gone, and etcdctl would die of SIGPIPE without a word.
pub fn print(bytes: &[u8]) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes).and_then(|()| out.flush());
}

/// Standard base64 with padding, as Go encodes `[]byte`.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A JSON object built field by field, leaving out zero values as `omitempty` does.
#[derive(Default)]
pub struct Obj(String);

impl Obj {
    pub fn new() -> Obj {
        Obj::default()
    }

    fn key(&mut self, name: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        let _ = write!(self.0, "\"{name}\":");
    }

    /// A number field, omitted when zero.
    pub fn num(mut self, name: &str, v: impl Into<i128>) -> Obj {
        let v = v.into();
        if v != 0 {
            self.key(name);
            let _ = write!(self.0, "{v}");
        }
        self
    }

    /// A bytes field (base64), omitted when empty.
    pub fn bytes(mut self, name: &str, v: &[u8]) -> Obj {
        if !v.is_empty() {
            self.key(name);
            let _ = write!(self.0, "\"{}\"", base64(v));
        }
        self
    }

    /// A string field, omitted when empty.
    pub fn str(mut self, name: &str, v: &str) -> Obj {
        if !v.is_empty() {
            self.key(name);
            self.0.push_str(&quote(v));
        }
        self
    }

    /// A boolean field, omitted when false.
    pub fn flag(mut self, name: &str, v: bool) -> Obj {
        if v {
            self.key(name);
            self.0.push_str("true");
        }
        self
    }

    /// A field whose value is already JSON, omitted when `None`.
    pub fn raw(mut self, name: &str, v: Option<String>) -> Obj {
        if let Some(v) = v {
            self.key(name);
            self.0.push_str(&v);
        }
        self
    }

    /// An array field of JSON values, omitted when empty.
    pub fn list(mut self, name: &str, items: Vec<String>) -> Obj {
        if !items.is_empty() {
            self.key(name);
            self.0.push('[');
            self.0.push_str(&items.join(","));
            self.0.push(']');
        }
        self
    }

    pub fn end(mut self) -> String {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        self.0
    }
}

/// A JSON string literal, escaped as Go's encoding/json does.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A response header.
pub fn header(h: Option<&ResponseHeader>) -> Option<String> {
    let h = h?;
    Some(
        Obj::new()
            .num("cluster_id", h.cluster_id)
            .num("member_id", h.member_id)
            .num("revision", h.revision)
            .num("raft_term", h.raft_term)
            .end(),
    )
}

/// A key-value.
pub fn kv(kv: &KeyValue) -> String {
    Obj::new()
        .bytes("key", &kv.key)
        .num("create_revision", kv.create_revision)
        .num("mod_revision", kv.mod_revision)
        .num("version", kv.version)
        .bytes("value", &kv.value)
        .num("lease", kv.lease)
        .end()
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_pads_like_go() {
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b""), "");
    }
}
