//! `get_paged`: a large range read in pages at one revision, as Go's mirror syncer reads
//! one, through etcd 3.7's RangeStream where the server has it.
//!
//! ```text
//!   RangeStream ──chunks──► pages (one held back, so the last is known) ──end──► done
//!        │ UNIMPLEMENTED (etcd < 3.7; remembered by the client)
//!        ▼
//!   Range(limit = page) ──► page ──more──► Range(from last key + \0, same revision) ──► …
//! ```

use crate::client::{Client, Inner};
use crate::core::StreamCallback;
use crate::error::{Code, EtcdError};
use crate::grpc::{codec, Rpc};
use crate::handle::Pending;
use crate::namespace::Namespace;
use crate::ops::kv::GetOptions;
use crate::pb::etcdserverpb::{kv_rpc, RangeRequest, RangeResponse, RangeStreamResponse};
use bytes::Bytes;
use prost::Message;
use std::cell::RefCell;
use std::rc::{Rc, Weak};

/// What `get_paged`'s callback receives.
type OnPage = Box<dyn FnMut(Result<RangeResponse, EtcdError>)>;

/// A paged read in progress; [`cancel`](PagedRead::cancel) stops it.
#[derive(Debug, Clone)]
pub struct PagedRead {
    state: Rc<RefCell<PagedState>>,
}

#[derive(Debug, Default)]
struct PagedState {
    cancelled: bool,
    /// The callback had its last call (the last page, an error or `CANCELLED`).
    over: bool,
    /// The call in flight (a Range page or the RangeStream).
    current: Option<Pending>,
}

impl PagedRead {
    /// Stops the read: the call in flight is abandoned and the callback receives one
    /// `CANCELLED`, unless the read had already ended.
    pub fn cancel(&self) {
        let current = {
            let mut state = self.state.borrow_mut();
            state.cancelled = true;
            state.current.take()
        };
        if let Some(pending) = current {
            pending.cancel();
        }
    }
}

impl Client {
    /// Reads every key of `key` with `options` (prefix, range_end, from_key, revision,
    /// keys_only, serializable) in pages, all at one revision and in key order, as Go's
    /// mirror syncer does: `on_page` gets each page as it comes (the last has
    /// `more == false`), or one error, after which nothing more. The read is at the revision
    /// of the first header delivered (each page's header is the server's, as `get` returns
    /// it; with RangeStream only the last page has one). Against etcd 3.7+ the server's
    /// RangeStream is used (its chunks are the pages); older servers are read with Range
    /// calls of `page_size` keys (also on 3.7 when `options` filter by mod or create
    /// revision, which RangeStream refuses). A `limit`, sort order or `count_only` in
    /// `options` is refused (`INVALID_ARGUMENT`): paging is by key. Each page's `count` is
    /// the server's (on the Range path, the keys from that page on). `Client::close` ends a
    /// read in progress with `CANCELLED`.
    pub fn get_paged(
        &self,
        key: impl Into<Bytes>,
        options: GetOptions,
        page_size: i64,
        on_page: impl FnMut(Result<RangeResponse, EtcdError>) + 'static,
    ) -> PagedRead {
        let handle = PagedRead { state: Rc::default() };
        let mut req = options.request(key.into());
        let bad = if page_size <= 0 {
            Some("page_size must be > 0")
        } else if req.limit != 0 || req.sort_order != 0 || req.sort_target != 0 {
            Some("get_paged reads in key order: no limit or sort option")
        } else if req.count_only {
            Some("get_paged reads keys: for a count, use get with count_only")
        } else {
            None
        };
        if let Some(why) = bad {
            self.fail(EtcdError::invalid(why, "get_paged"), on_page);
            return handle;
        }
        let ns = self.namespace().cloned();
        if let Some(Err(e)) = ns.as_ref().map(|ns| ns.range(&mut req, "get_paged")) {
            self.fail(e, on_page);
            return handle;
        }
        let read = Read {
            client: self.weak(),
            state: handle.state.clone(),
            page_size,
            closes: self.inner().closes.get(),
            ns,
        };
        let on_page: Rc<RefCell<OnPage>> = Rc::new(RefCell::new(Box::new(on_page)));
        // RangeStream refuses revision filters with UNIMPLEMENTED, which must not read as
        // "this server has no RangeStream".
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        match filtered || self.inner().no_range_stream.get() {
            true => read.page(req, on_page),
            false => read.stream(req, on_page),
        }
        handle
    }
}

/// One paged read's moving parts, cloned into each step's callback. The client is held
/// weakly, as by the stream handles: a read in progress does not keep a dropped client alive.
#[derive(Clone)]
struct Read {
    client: Weak<Inner>,
    state: Rc<RefCell<PagedState>>,
    page_size: i64,
    /// `Client::close` calls when the read started: one more ends it.
    closes: u64,
    /// The namespace of the client that started the read: each page loses its prefix on
    /// its way to the callback (after the next page's key was taken from it).
    ns: Option<Rc<Namespace>>,
}

impl Read {
    /// The one way to the callback: nothing after its last call; once cancelled (or the
    /// client closed), whatever comes is one `CANCELLED` (pages may already be queued).
    fn emit(
        &self,
        on_page: &Rc<RefCell<OnPage>>,
        item: Result<RangeResponse, EtcdError>,
        last: bool,
    ) {
        let item = {
            let mut state = self.state.borrow_mut();
            if state.over {
                return;
            }
            // `Client::close` since the read started ends it as a cancel does.
            let closed = Client::upgrade(&self.client)
                .is_some_and(|c| c.inner().closes.get() != self.closes);
            let item = match state.cancelled || closed {
                true => {
                    Err(EtcdError::new(Code::Cancelled, "cancelled by the caller", "get_paged"))
                }
                false => item,
            };
            state.over = last || item.is_err();
            item
        };
        let item = match &self.ns {
            None => item,
            Some(ns) => item.map(|mut page| {
                ns.strip_range(&mut page);
                page
            }),
        };
        (on_page.borrow_mut())(item);
    }

    fn over(&self) -> bool {
        self.state.borrow().over
    }

    /// Remembers `pending` as the call in flight, or abandons it if cancelled meanwhile.
    fn track(&self, pending: Pending) {
        let mut state = self.state.borrow_mut();
        match state.cancelled {
            true => pending.cancel(),
            false => state.current = Some(pending),
        }
    }

    /// The next Range page: `req.key` onwards, `page_size` keys, at `req.revision`.
    fn page(&self, mut req: RangeRequest, on_page: Rc<RefCell<OnPage>>) {
        let Some(client) = Client::upgrade(&self.client) else {
            return; // the client is gone: its callbacks never run
        };
        if client.inner().closes.get() != self.closes {
            // Closed since the read started (from a page's callback, between two pages).
            return self.emit(&on_page, Ok(RangeResponse::default()), true);
        }
        req.limit = self.page_size;
        let this = self.clone();
        let next_req = req.clone();
        let pending = client.call_handle::<kv_rpc::Range>("get_paged", &req, true, move |r| {
            let page = match r {
                Ok(page) => page,
                Err(e) => return this.emit(&on_page, Err(e), true),
            };
            // Pinned by the first page (or the caller's revision): the header of a later
            // page is the store's revision when that page was served.
            let revision = match next_req.revision {
                0 => page.header.as_ref().map_or(0, |h| h.revision),
                pinned => pinned,
            };
            let last = page.kvs.last().map(|kv| kv.key.clone()).filter(|_| page.more);
            this.emit(&on_page, Ok(page), last.is_none());
            let Some(last) = last.filter(|_| !this.over()) else {
                return; // the last page, or the read is over
            };
            if this.state.borrow().cancelled {
                // Cancelled from this callback, between two calls.
                return this.emit(&on_page, Ok(RangeResponse::default()), true);
            }
            let mut key = last.to_vec();
            key.push(0);
            let req = RangeRequest { key: key.into(), revision, ..next_req };
            this.page(req, on_page);
        });
        self.track(pending);
    }

    /// The whole range as one RangeStream; each chunk is delivered once the next one (or
    /// the end) shows whether more follow.
    fn stream(&self, req: RangeRequest, on_page: Rc<RefCell<OnPage>>) {
        let this = self.clone();
        let mut held: Option<RangeResponse> = None;
        let retry_req = req.clone();
        let sink = Box::new(move |item: Result<Option<Bytes>, EtcdError>| match item {
            Ok(Some(bytes)) => match RangeStreamResponse::decode(bytes) {
                Ok(chunk) => {
                    let chunk = chunk.range_response.unwrap_or_default();
                    if let Some(mut earlier) = held.replace(chunk) {
                        earlier.more = true;
                        this.emit(&on_page, Ok(earlier), false);
                    }
                }
                Err(e) => {
                    let msg = format!("cannot decode a RangeStream chunk: {e}");
                    let err = EtcdError::new(Code::Internal, msg, "get_paged");
                    this.emit(&on_page, Err(err), true);
                }
            },
            Ok(None) => {
                let mut last = held.take().unwrap_or_default();
                last.more = false;
                this.emit(&on_page, Ok(last), true);
            }
            // etcd before 3.7: page with Range, from now on for this client.
            Err(e) if e.code() == Code::Unimplemented && held.is_none() && !this.over() => {
                if let Some(client) = Client::upgrade(&this.client) {
                    client.inner().no_range_stream.set(true);
                }
                this.page(retry_req.clone(), on_page.clone());
            }
            // A stale token refused the stream before any chunk: this read goes by Range,
            // whose calls re-authenticate and are retried.
            Err(e) if stale_token(&e) && held.is_none() && !this.over() => {
                this.page(retry_req.clone(), on_page.clone());
            }
            Err(e) => this.emit(&on_page, Err(e), true),
        });
        let Some(client) = Client::upgrade(&self.client) else {
            return;
        };
        let body = codec::encode(&req);
        let path = <kv_rpc::RangeStream as Rpc>::PATH;
        let sink = StreamCallback::Sink(sink);
        let key = client.with_core(|c| c.start_sink(path, "get_paged", body, sink));
        self.track(Pending::new(&client, Some(key)));
    }
}

/// Whether `e` says the auth token was stale (etcd's words differ by version).
fn stale_token(e: &EtcdError) -> bool {
    let m = e.message();
    e.code() == Code::Unauthenticated
        || m.contains("invalid auth token")
        || m.contains("auth store is old")
        || m.contains("revision in header is old")
}
