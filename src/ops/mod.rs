//! The operations, one file per etcd service: options builders and the `impl Client` block
//! that sends them.

pub mod kv;
pub mod txn;
