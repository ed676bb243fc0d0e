//! gRPC over HTTP/2, the parts that are pure functions: the 5-byte message framing, the
//! status carried by trailers (or by trailers-only response headers), and the method table
//! generated from the proto services by `build.rs`.

pub(crate) mod codec;
pub(crate) mod status;

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
