//! A service registry with Go's `naming/endpoints` layout (the go-core wrapper's registry,
//! and what Go programs resolve through etcd's gRPC resolver).
//!
//! A service `name` has one key per instance, `{name}/{id}`, attached to a lease that the
//! instance keeps alive, holding the JSON that Go's `endpoints.Manager` writes for an
//! `Update`: `{"Op":0,"Addr":"host:port","Metadata":…}`, byte for byte (see
//! [`gojson`](crate::gojson)). So a Go program's `endpoints.NewManager(client, name)` lists
//! and watches our instances, and ours see Go's.
//!
//! - [`register`] puts an instance and keeps it there: when its lease is lost (a partition
//!   longer than the TTL), it registers again with a new lease by itself.
//! - [`discover`] reads the instances once; [`watch_service`] delivers them, then every
//!   change, resuming after reconnects and listing again after a compaction (only the
//!   difference is delivered).
//!
//! A value under the prefix that is not such a JSON object is reported as
//! [`Invalid`] for its key and skipped, as Go's manager skips it.

mod register;
mod watch;

pub use register::{register, Registration, RegistrationEvent};
pub use watch::{discover, watch_service, ServiceEvent, ServiceWatch, Services};

use bytes::{Bytes, BytesMut};
use serde_json::Value;

/// One instance of a service, as [`register`] writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceInfo {
    /// The service's name: Go's resolver target (the keys live under `{name}/`).
    pub name: String,
    /// The instance's id, unique within the service: the key is `{name}/{id}`.
    pub id: String,
    /// Where clients reach it, `host:port` (Go's `Endpoint.Addr`).
    pub addr: String,
    /// Anything the clients should know (Go's `Endpoint.Metadata`); `Value::Null` for none.
    pub metadata: Value,
}

/// An instance found under a service's prefix.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// Its key, `{name}/{id}`.
    pub key: String,
    /// Its id: the key without `{name}/`.
    pub id: String,
    /// Go's `Endpoint.Addr`.
    pub addr: String,
    /// Go's `Endpoint.Metadata` (`Null` when absent).
    pub metadata: Value,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
    /// The revision of the key's last write.
    pub mod_revision: i64,
}

impl Endpoint {
    /// Whether `other` is the same instance as far as its clients care: same key, address
    /// and metadata (a new lease or a rewrite of the same value is not a change).
    fn same_as(&self, other: &Endpoint) -> bool {
        self.key == other.key && self.addr == other.addr && self.metadata == other.metadata
    }
}

/// A key under a service's prefix whose value is not an endpoint update: skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The key.
    pub key: String,
    /// The revision of the key's last write.
    pub mod_revision: i64,
    /// Why its value was refused.
    pub error: String,
}

/// `{name}/`: the prefix of a service's keys.
pub(crate) fn prefix(name: &str) -> Bytes {
    let mut p = BytesMut::with_capacity(name.len() + 1);
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(b"/");
    p.freeze()
}

/// The value Go's `endpoints.Manager.AddEndpoint` writes: `json.Marshal` of its internal
/// `Update{Op: Add, Addr, Metadata}` (field order as declared, Go's escaping).
pub(crate) fn encode(addr: &str, metadata: &Value) -> Bytes {
    let mut v = Vec::with_capacity(32 + addr.len());
    v.extend_from_slice(b"{\"Op\":0,\"Addr\":");
    v.extend_from_slice(&crate::gojson::to_vec(&Value::String(addr.to_owned())));
    v.extend_from_slice(b",\"Metadata\":");
    v.extend_from_slice(&crate::gojson::to_vec(metadata));
    v.push(b'}');
    v.into()
}

/// Reads key-value `kv` found under `prefix` as Go's manager does (`json.Unmarshal` into
/// its `Update`: field names matched exactly, else ignoring case; unknown fields ignored;
/// `Op` is not looked at, as Go's `List` and watch do not).
pub(crate) fn decode(prefix: &[u8], kv: &crate::pb::mvccpb::KeyValue) -> Result<Endpoint, Invalid> {
    let key = String::from_utf8_lossy(&kv.key).into_owned();
    let id = String::from_utf8_lossy(kv.key.strip_prefix(prefix).unwrap_or(&kv.key)).into_owned();
    let invalid =
        |error: String| Invalid { key: key.clone(), mod_revision: kv.mod_revision, error };
    // Go replaces invalid UTF-8 inside strings where serde_json refuses it.
    let value: Value = match serde_json::from_slice(&kv.value) {
        Err(_) if std::str::from_utf8(&kv.value).is_err() => {
            serde_json::from_str(&String::from_utf8_lossy(&kv.value))
        }
        parsed => parsed,
    }
    .map_err(|e| invalid(format!("not JSON: {e}")))?;
    let fields = match value {
        Value::Object(fields) => fields,
        // Go's Unmarshal of `null` leaves the zero Update: an endpoint with no address.
        Value::Null => serde_json::Map::new(),
        _ => return Err(invalid("not a JSON object".into())),
    };
    let field = |name: &str| {
        fields
            .get(name)
            .or_else(|| fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
    };
    match field("Op") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|op| op <= u64::from(u8::MAX)) => {}
        Some(other) => return Err(invalid(format!("Op is not an operation: {other}"))),
    }
    let addr = match field("Addr") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(invalid(format!("Addr is not a string: {other}"))),
    };
    let metadata = field("Metadata").cloned().unwrap_or(Value::Null);
    Ok(Endpoint { key, id, addr, metadata, lease: kv.lease, mod_revision: kv.mod_revision })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::mvccpb::KeyValue;
    use serde_json::json;

    fn kv(key: &str, value: &[u8]) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value),
            mod_revision: 7,
            lease: 5,
            ..Default::default()
        }
    }

    #[test]
    fn the_value_is_gos_update_with_its_field_order_and_escaping() {
        let v = encode("10.0.0.1:80", &json!({"zone": "b<1>", "a": 1}));
        assert_eq!(
            &v[..],
            br#"{"Op":0,"Addr":"10.0.0.1:80","Metadata":{"a":1,"zone":"b\u003c1\u003e"}}"#
        );
        assert_eq!(&encode("h:1", &Value::Null)[..], br#"{"Op":0,"Addr":"h:1","Metadata":null}"#);
    }

    #[test]
    fn what_is_written_reads_back() {
        let meta = json!({"weight": 3, "tags": ["x"]});
        let e = decode(b"svc/", &kv("svc/i1", &encode("h:1", &meta))).unwrap();
        assert_eq!((e.id.as_str(), e.addr.as_str(), &e.metadata), ("i1", "h:1", &meta));
        assert_eq!((e.key.as_str(), e.lease, e.mod_revision), ("svc/i1", 5, 7));
    }

    #[test]
    fn field_names_match_as_go_matches_them() {
        let e = decode(b"s/", &kv("s/a", br#"{"addr":"h:2","METADATA":true,"x":1}"#)).unwrap();
        assert_eq!((e.addr.as_str(), &e.metadata), ("h:2", &json!(true)));
        let e = decode(b"s/", &kv("s/a", br#"{"Op":1}"#)).unwrap();
        assert_eq!((e.addr.as_str(), &e.metadata), ("", &Value::Null), "Go ignores Op");
    }

    #[test]
    fn null_and_invalid_utf8_read_as_go_reads_them() {
        let e = decode(b"s/", &kv("s/a", b"null")).unwrap();
        assert_eq!((e.addr.as_str(), &e.metadata), ("", &Value::Null));
        let e = decode(b"s/", &kv("s/a", b"{\"Addr\":\"h\xff:1\"}")).unwrap();
        assert_eq!(e.addr, "h\u{fffd}:1");
    }

    #[test]
    fn values_that_are_not_updates_are_refused_with_their_key() {
        for bad in
            [&b"not json"[..], b"[1,2]", b"\"s\"", br#"{"Addr":5}"#, br#"{"Op":-1}"#, b"\xff"]
        {
            let err = decode(b"s/", &kv("s/bad", bad)).unwrap_err();
            assert_eq!((err.key.as_str(), err.mod_revision), ("s/bad", 7), "{bad:?}");
            assert!(!err.error.is_empty());
        }
    }

    #[test]
    fn the_prefix_ends_with_a_slash() {
        assert_eq!(&prefix("svc")[..], b"svc/");
    }
}
