//! evetcd: a callback-style etcd v3 client for event loops.
//!
//! One thread, one [`mio`] reactor, one HTTP/2 connection (the `h2` crate) carrying gRPC, and
//! no async runtime. Every operation takes a callback that receives
//! `Result<Response, EtcdError>`; callbacks run from [`Client::run`], or from a loop of your
//! own that drives the client.
//!
//! ```no_run
//! use evetcd::{Client, Config, GetOptions, PutOptions};
//!
//! let client = Client::new(Config::new().endpoints(["127.0.0.1:2379"])).unwrap();
//! let c = client.clone();
//! client.put("greeting", "hello", PutOptions::new(), move |res| {
//!     let put = res.expect("put");
//!     println!("written at revision {}", put.header.unwrap().revision);
//!     // A callback may start more work: it runs in the same loop.
//!     c.get("greeting", GetOptions::new(), |res| {
//!         let kv = &res.expect("get").kvs[0];
//!         println!("{} = {}", String::from_utf8_lossy(&kv.key), String::from_utf8_lossy(&kv.value));
//!     });
//! });
//! client.run(); // returns once nothing is pending
//! ```
//!
//! # Callbacks
//!
//! - Each callback runs exactly once (streams: once per message), on the thread that drives
//!   the client, from [`Client::run`] or [`Client::process`].
//! - A callback never runs inside the call that registered it. Bad arguments (a request above
//!   the size limit, say) are reported with `INVALID_ARGUMENT` on the next turn.
//! - A callback may start new operations (capture a clone of the [`Client`]) and may drop
//!   its clone. No internal borrow is held while it runs. Calling `run()` or `process()`
//!   from inside a callback returns at once.
//! - Every failure arrives as an [`EtcdError`]: the gRPC status and message, the operation
//!   that failed, and [`EtcdError::is_retryable`]. A connection that fails fails every
//!   pending call with `UNAVAILABLE`.
//!
//! # Embedding in a foreign loop
//!
//! Instead of [`Client::run`]:
//!
//! 1. watch [`as_raw_fd`](std::os::fd::AsRawFd::as_raw_fd) for readability (it is the
//!    client's epoll fd);
//! 2. wait at most [`Client::next_timeout`] (`None`: nothing pending; zero: call now);
//! 3. call [`Client::process`], which never blocks;
//! 4. re-read `next_timeout()` after every `process()` and after starting any operation.
//!
//! # TLS
//!
//! With the `tls` feature (on by default), `https://` and `unixs://` endpoints, and every
//! endpoint without a scheme once `Config::tls` is set, go through rustls: see `Tls` for
//! CAs, client certificates (mTLS) and server names.
//!
//! # Keys and values
//!
//! Keys and values are bytes ([`bytes::Bytes`]): any `&'static str`, `String`, `Vec<u8>` or
//! `Bytes` converts. Responses are the etcd protobuf messages in [`pb`], with `Bytes` fields.
//!
//! # Features
//!
//! - `tls` (default): TLS and mTLS endpoints through rustls with ring (`https://`,
//!   `unixs://`, or any endpoint once `Config::tls` is set); see `Tls`.
//! - `native-roots`: `Tls::native_roots(true)` trusts the operating system's CA certificates
//!   (implies `tls`).
//! - `futures`: `evetcd::future`, every operation as a future and every stream as a
//!   `Stream`, resolved from the callbacks (no executor; the loop is still driven as above).
//! - `testing`: `evetcd::testing`, real etcd members, clusters (TLS too) and a fault proxy on
//!   loopback for your own tests (etcd 3.5.1 is installed with pip when no binary is given).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]

mod call_options;
mod client;
pub mod concurrency;
mod config;
pub mod config_source;
mod core;
mod endpoint;
mod error;
#[cfg(feature = "futures")]
pub mod future;
pub mod gojson;
mod grpc;
mod h2io;
mod handle;
mod info;
mod member;
mod namespace;
pub mod ops;
pub mod pb;
mod reactor;
pub mod registry;
mod remote;
mod sockopt;
#[cfg(feature = "testing")]
pub mod testing;
mod timer;
#[cfg(feature = "tls")]
mod tls;

pub use call_options::{CallOptions, Cancel};
pub use client::Client;
pub use config::{
    Config, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_RETRY_ATTEMPTS,
    DEFAULT_RETRY_BACKOFF, MAX_TIMEOUT, MIN_TIMEOUT,
};
pub use error::{Code, EtcdError};
pub use handle::{Keepalive, Observe, Pending, StreamOptions, Watch};
pub use info::{AuthState, ClientInfo, ConnectFailure, LinkState};
pub use ops::auth::PermissionType;
pub use ops::kv::{
    prefix_range_end, CompactOptions, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget,
};
pub use ops::lease::LeaseGrantOptions;
pub use ops::paged::PagedRead;
pub use ops::txn::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
pub use ops::watch::WatchOptions;
pub use pb::etcdserverpb::alarm_request::AlarmAction;
pub use pb::etcdserverpb::downgrade_request::DowngradeAction;
pub use pb::etcdserverpb::{
    AlarmType, CompactionResponse, DeleteRangeResponse, DowngradeResponse, LeaseGrantResponse,
    LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse,
    PutResponse, RangeResponse, ResponseHeader, TxnResponse, WatchResponse,
};
pub use pb::mvccpb::{event::EventType, Event, KeyValue};
pub use pb::v3electionpb::{
    CampaignResponse, LeaderKey, LeaderResponse, ProclaimResponse, ResignResponse,
};
pub use pb::v3lockpb::{LockResponse, UnlockResponse};
pub use remote::{Remote, RemoteWatch};
#[cfg(feature = "tls")]
pub use tls::Tls;
