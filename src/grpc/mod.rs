//! gRPC over HTTP/2, the parts that are pure functions: the 5-byte message framing, the
//! status carried by trailers (or by trailers-only response headers), and the method table
//! generated from the proto services by `build.rs`.

pub(crate) mod codec;
pub(crate) mod reader;

/// How many messages each side of an RPC sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RpcKind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses (snapshot, election observe).
    ServerStreaming,
    /// A stream of requests, one response (etcd has none; kept for completeness).
    #[allow(dead_code)]
    ClientStreaming,
    /// Streams both ways (watch, lease keepalive).
    Bidi,
}

/// One gRPC method: its path and message types. Implemented by the zero-sized types that
/// `build.rs` generates from the proto services (e.g. `pb::etcdserverpb::kv_rpc::Range`).
pub(crate) trait Rpc {
    /// The request message.
    type Request: prost::Message;
    /// The response message.
    type Response: prost::Message + Default;
    /// `/package.Service/Method`.
    const PATH: &'static str;
    /// Unary or streaming.
    const KIND: RpcKind;
}

/// Settings for the crate's property tests (`*_props.rs` beside the code they test).
///
/// The case count is fixed so that a CI run takes a known time: `default_cases` per property,
/// or `EVETCD_PROPTEST_CASES` when set, for a longer search on demand
/// (`EVETCD_PROPTEST_CASES=20000 cargo test --lib props`). Seeds are random per run, so runs
/// explore different inputs; a failure prints its shrunk input. No regression files are
/// written: a shrunk failure is kept as a named unit test instead.
#[cfg(test)]
pub(crate) fn proptest_config(default_cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("EVETCD_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default_cases);
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}
