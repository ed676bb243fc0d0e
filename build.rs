//! Compiles `proto/` into prost types and a gRPC method table, with no system `protoc`.
//!
//! `protox` parses the `.proto` files in pure Rust; `prost-build` turns the descriptors into
//! Rust types (every `bytes` field as `bytes::Bytes`, so keys and values are never copied into
//! `Vec`s). A service generator emits, inside each package module, one zero-sized type per RPC
//! implementing `crate::grpc::Rpc`, so a method's path, request type, response type and
//! streaming kind all come from the proto service: no path string is typed by hand.

use std::fmt::Write as _;

const PROTOS: &[&str] = &["rpc.proto", "v3lock.proto", "v3election.proto", "health.proto"];

fn main() {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"]).unwrap_or_else(|e| panic!("proto: {e}"));
    prost_build::Config::new()
        .bytes(["."])
        .service_generator(Box::new(MethodTable))
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("prost-build: {e}"));
}

/// Emits `pub(crate) mod <service>_rpc { pub(crate) struct <Method>; impl Rpc for <Method> }`.
struct MethodTable;

impl prost_build::ServiceGenerator for MethodTable {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        let module = format!("{}_rpc", snake(&service.name));
        let _ = writeln!(buf, "/// The RPCs of `{}.{}`.", service.package, service.proto_name);
        // Later features use more of the table than the current code does.
        let _ = writeln!(buf, "#[allow(dead_code)]");
        let _ = writeln!(buf, "pub(crate) mod {module} {{");
        for m in &service.methods {
            let kind = match (m.client_streaming, m.server_streaming) {
                (false, false) => "Unary",
                (false, true) => "ServerStreaming",
                (true, false) => "ClientStreaming",
                (true, true) => "Bidi",
            };
            let path = format!("/{}.{}/{}", service.package, service.proto_name, m.proto_name);
            let _ = writeln!(buf, "    /// `{path}`");
            let _ = writeln!(buf, "    #[derive(Debug, Clone, Copy)]");
            let _ = writeln!(buf, "    pub(crate) struct {};", m.proto_name);
            let _ = writeln!(buf, "    impl crate::grpc::Rpc for {} {{", m.proto_name);
            let _ = writeln!(buf, "        type Request = super::{};", m.input_type);
            let _ = writeln!(buf, "        type Response = super::{};", m.output_type);
            let _ = writeln!(buf, "        const PATH: &'static str = \"{path}\";");
            let _ = writeln!(
                buf,
                "        const KIND: crate::grpc::RpcKind = crate::grpc::RpcKind::{kind};"
            );
            let _ = writeln!(buf, "    }}");
        }
        let _ = writeln!(buf, "}}");
    }
}

/// `KV` -> `kv`, `Maintenance` -> `maintenance`, `HealthCheck` -> `health_check`.
fn snake(name: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let prev_lower = i > 0 && chars[i - 1].is_lowercase();
        if c.is_uppercase() && prev_lower {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}
