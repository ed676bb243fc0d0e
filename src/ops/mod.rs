//! The operations, one file per etcd service: options builders and the `impl Client` block
//! that sends them.

#[macro_use]
pub mod kv;
pub mod auth;
pub mod cluster;
pub mod election;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod paged;
pub mod txn;
pub mod watch;
