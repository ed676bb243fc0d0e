//! Virtual-time tests of the core against in-process h2 servers: no socket, no clock.
//!
//! [`world::World`] holds a [`Core`](super::Core), one scripted etcd per link and a virtual
//! clock; `run_until` plays the IO layer's part (link commands, bytes both ways, events) and
//! jumps the clock to `poll_timeout` whenever nothing else can happen. Tests that need a
//! precise interleaving (input and a timer in one turn, bytes read with the end of input)
//! call the contract methods by hand through the same world.
//!
//! The files split by behaviour: [`calls`] (unary round trips, deadlines, statuses, size
//! limits), [`links`] (link loss, re-sends, GOAWAY, endpoint rotation, connect timeouts,
//! PINGs), [`auth`], [`streams`] (watch, keepalive, observe: re-open and give-up; close),
//! [`health`], [`retry`] (the retry policy of unary calls and their own deadlines).

mod alarms;
mod auth;
mod calls;
mod health;
mod info;
mod links;
mod retry;
mod streams;
pub(crate) mod world;

use crate::error::EtcdError;
use crate::grpc::codec;
use crate::h2io::test_server::ServerCall;
use crate::pb::etcdserverpb::{
    watch_request, AuthenticateResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    RangeRequest, RangeResponse, ResponseHeader, StatusResponse, WatchCreateRequest, WatchRequest,
    WatchResponse,
};
use crate::pb::mvccpb::{Event as MvccEvent, KeyValue};
use bytes::Bytes;
use prost::Message;

pub(super) const RANGE: &str = "/etcdserverpb.KV/Range";
pub(super) const AUTHENTICATE: &str = "/etcdserverpb.Auth/Authenticate";
pub(super) const WATCH: &str = "/etcdserverpb.Watch/Watch";
pub(super) const LEASE_KEEPALIVE: &str = "/etcdserverpb.Lease/LeaseKeepAlive";
pub(super) const STATUS: &str = "/etcdserverpb.Maintenance/Status";

// ===== what the scripted etcd says =====

/// A Range response at `revision`.
fn response(revision: i64) -> Bytes {
    let header = ResponseHeader { revision, ..Default::default() };
    codec::encode(&RangeResponse { header: Some(header), count: 1, ..Default::default() })
}

/// The Range response a call completed with.
fn decoded(r: &Result<Bytes, EtcdError>) -> RangeResponse {
    RangeResponse::decode(r.clone().unwrap()).unwrap()
}

/// The key of the Range request a call carries.
fn request_key(call: &mut ServerCall) -> Bytes {
    let (bytes, _) = call.read();
    RangeRequest::decode(&bytes[5..]).unwrap().key
}

/// The framed messages the server has received on a call so far, decoded as `M`.
fn requests<M: Message + Default>(call: &mut ServerCall) -> Vec<M> {
    let (mut bytes, _) = call.read();
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        out.push(M::decode(&bytes[5..5 + len]).unwrap());
        bytes = &bytes[5 + len..];
    }
    out
}

/// The lease ids of the keepalive requests the server has received so far.
fn renewals(call: &mut ServerCall) -> Vec<i64> {
    requests::<LeaseKeepAliveRequest>(call).iter().map(|r| r.id).collect()
}

fn ka_response(id: i64, ttl: i64) -> Bytes {
    codec::encode(&LeaseKeepAliveResponse { id, ttl, ..Default::default() })
}

/// The watch creates the server has received on a Watch call so far.
fn creates(call: &mut ServerCall) -> Vec<WatchCreateRequest> {
    requests::<WatchRequest>(call)
        .into_iter()
        .filter_map(|r| match r.request_union {
            Some(watch_request::RequestUnion::CreateRequest(c)) => Some(c),
            _ => None,
        })
        .collect()
}

/// The reply to a watch create: watch `id` created at `revision`.
fn watch_created(id: i64, revision: i64) -> Bytes {
    let header = ResponseHeader { revision, ..Default::default() };
    codec::encode(&WatchResponse {
        header: Some(header),
        watch_id: id,
        created: true,
        ..Default::default()
    })
}

/// Events of watch `id`: one put of `key` per revision.
fn watch_events(id: i64, key: &'static str, revisions: &[i64]) -> Bytes {
    let events = revisions
        .iter()
        .map(|&rev| MvccEvent {
            kv: Some(KeyValue { key: key.into(), mod_revision: rev, ..Default::default() }),
            ..Default::default()
        })
        .collect();
    let header = ResponseHeader { revision: *revisions.last().unwrap(), ..Default::default() };
    codec::encode(&WatchResponse {
        header: Some(header),
        watch_id: id,
        events,
        ..Default::default()
    })
}

fn token(t: &str) -> Bytes {
    codec::encode(&AuthenticateResponse { token: t.into(), ..Default::default() })
}

/// A Status response naming `leader` (0: none).
fn status(leader: u64) -> Bytes {
    codec::encode(&StatusResponse { leader, ..Default::default() })
}
