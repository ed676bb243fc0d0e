//! [`Election`]: leader election with Go's key layout and algorithm (Go's
//! `concurrency.Election`), interoperable with Go programs and `etcdctl elect`.
//!
//! Each candidate puts `{prefix}/{lease:x}` with its proposal as the value; the candidate
//! whose key has the lowest create revision leads. The leader's value is what observers see;
//! `proclaim` changes it without a new election, `resign` deletes the key.

use super::error::Error;
use super::keys::{lease_key, range_of, with_slash};
use super::session::Session;
use super::wait::{first_created, later, wait_deletes, Wait, Waiting};
use crate::client::Client;
use crate::error::{Code, EtcdError};
use crate::handle::Watch;
use crate::ops::kv::{DeleteOptions, GetOptions, PutOptions};
use crate::ops::txn::{Compare, CompareOp, Txn, TxnOp};
use crate::ops::watch::WatchOptions;
use crate::pb::etcdserverpb::{RangeResponse, ResponseHeader};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::KeyValue;
use bytes::Bytes;
use std::cell::RefCell;
use std::rc::Rc;

type Done = Box<dyn FnOnce(Result<(), Error>)>;

/// A leader election on a prefix (Go's `concurrency.Election`). Cheap to clone; clones are
/// one candidate.
///
/// A session lost while campaigning fails the campaign with [`Error::SessionLost`]; lost
/// while leading, the key is gone with the lease and the next candidate leads (the
/// session's `on_lost` tells).
#[derive(Clone)]
pub struct Election(Rc<Inner>);

struct Inner {
    session: Session,
    /// `{prefix}/`.
    prefix: Bytes,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    /// This candidate's key, once it campaigned (empty otherwise).
    key: Bytes,
    /// The key's create revision.
    revision: i64,
    /// Go's `leaderSession != nil`: campaigning or leading.
    candidate: bool,
    /// The response header of the winning campaign, or the last proclaim or resign.
    header: Option<ResponseHeader>,
    attempt: Option<Attempt>,
    /// Numbers the attempts: a [`Wait`] cancels its own campaign only.
    attempts: u64,
}

struct Attempt {
    id: u64,
    done: Option<Done>,
    /// `resign` calls made while the campaign ran: they succeed once it has ended.
    resigned: Vec<Done>,
    wait: Option<Waiting>,
    listener: u64,
    cancelled: bool,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.state.borrow();
        f.debug_struct("Election")
            .field("prefix", &self.0.prefix)
            .field("key", &s.key)
            .field("candidate", &s.candidate)
            .finish_non_exhaustive()
    }
}

fn cancelled() -> Error {
    EtcdError::new(Code::Cancelled, "campaign cancelled", "campaign").into()
}

impl Election {
    /// An election named `prefix` for `session` (its key will be `{prefix}/{lease:x}`).
    pub fn new(session: &Session, prefix: impl AsRef<[u8]>) -> Election {
        Election(Rc::new(Inner {
            session: session.clone(),
            prefix: with_slash(prefix.as_ref()),
            state: RefCell::default(),
        }))
    }

    fn client(&self) -> &Client {
        self.0.session.client()
    }

    /// Campaigns with `value` and waits until elected (Go's `Campaign`): `callback` gets
    /// `Ok(())` once this candidate leads. Campaigning again with the same session resumes
    /// the candidacy (proclaiming the new value). The returned [`Wait`] cancels the
    /// campaign, resigning the candidacy.
    pub fn campaign(
        &self,
        value: impl Into<Bytes>,
        callback: impl FnOnce(Result<(), Error>) + 'static,
    ) -> Wait {
        let id = match self.begin(Box::new(callback)) {
            Ok(id) => id,
            Err((done, e)) => {
                later(self.client(), move || done(Err(e)));
                return Wait::none();
            }
        };
        let this = self.clone();
        let wait = Wait::new(move || this.cancel(id));
        let value: Bytes = value.into();
        let lease = self.0.session.lease();
        let key = lease_key(&self.0.prefix, lease);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), value.clone(), PutOptions::new().lease(lease))])
            .or_else([TxnOp::get(key.clone(), GetOptions::new())]);
        let this = self.clone();
        self.client().txn(txn, move |res| {
            let resp = match res {
                Err(e) => return this.finish(Err(e.into())),
                Ok(resp) => resp,
            };
            let mut revision = resp.header.as_ref().map_or(0, |h| h.revision);
            let mut same = true;
            if !resp.succeeded {
                if let Some(kv) = range_of(&resp, 0).and_then(|r| r.kvs.first()) {
                    revision = kv.create_revision;
                    same = kv.value == value;
                }
            }
            {
                let mut s = this.0.state.borrow_mut();
                (s.key, s.revision, s.candidate) = (key, revision, true);
            }
            let header = resp.header;
            if same {
                return this.wait_turn(header);
            }
            // An earlier candidacy of this session with another value: take the new one.
            let t = this.clone();
            this.proclaim(value, move |res| match res {
                Ok(()) => t.wait_turn(header),
                Err(e) => {
                    let t2 = t.clone();
                    t.resign_key(move |_| t2.finish(Err(e)));
                }
            });
        });
        wait
    }

    /// Waits for the candidates ahead to go (Go's `waitDeletes`).
    fn wait_turn(&self, header: Option<ResponseHeader>) {
        let cancelled_now = self.0.state.borrow().attempt.as_ref().is_none_or(|a| a.cancelled);
        if cancelled_now {
            let this = self.clone();
            return self.resign_key(move |_| this.finish(Err(cancelled())));
        }
        let revision = self.0.state.borrow().revision;
        let this = self.clone();
        let waiting = wait_deletes(
            self.client(),
            self.0.prefix.clone(),
            revision - 1,
            move |res| match res {
                Ok(()) => {
                    this.0.state.borrow_mut().header = header;
                    this.finish(Ok(()))
                }
                Err(e) => {
                    let was_cancelled =
                        this.0.state.borrow().attempt.as_ref().is_some_and(|a| a.cancelled);
                    if was_cancelled {
                        let t = this.clone();
                        this.resign_key(move |_| t.finish(Err(cancelled())));
                    } else {
                        this.0.state.borrow_mut().candidate = false;
                        this.finish(Err(e.into()));
                    }
                }
            },
        );
        if let Some(a) = self.0.state.borrow_mut().attempt.as_mut() {
            a.wait = Some(waiting);
        }
    }

    /// Announces `value` as the leader's new value without a new election (Go's
    /// `Proclaim`). [`Error::NotLeader`] if this candidate is not campaigning or leading, or
    /// its key is gone.
    pub fn proclaim(
        &self,
        value: impl Into<Bytes>,
        callback: impl FnOnce(Result<(), Error>) + 'static,
    ) {
        let (key, revision) = {
            let s = self.0.state.borrow();
            if !s.candidate {
                drop(s);
                return later(self.client(), move || callback(Err(Error::NotLeader)));
            }
            (s.key.clone(), s.revision)
        };
        let lease = self.0.session.lease();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, revision)])
            .and_then([TxnOp::put(key, value.into(), PutOptions::new().lease(lease))]);
        let this = self.clone();
        self.client().txn(txn, move |res| match res {
            Err(e) => callback(Err(e.into())),
            Ok(resp) if !resp.succeeded => {
                let mut s = this.0.state.borrow_mut();
                (s.key, s.candidate) = (Bytes::new(), false);
                drop(s);
                callback(Err(Error::NotLeader))
            }
            Ok(resp) => {
                this.0.state.borrow_mut().header = resp.header;
                callback(Ok(()))
            }
        });
    }

    /// Gives up leadership (or the candidacy): deletes the key if it is still this
    /// candidate's (Go's `Resign`). Succeeds at once when not campaigning.
    ///
    /// During a campaign, `resign` ends it (as its [`Wait::cancel`] does: the campaign's
    /// callback gets `CANCELLED`) and succeeds once its key is gone.
    pub fn resign(&self, callback: impl FnOnce(Result<(), Error>) + 'static) {
        let running = self.0.state.borrow().attempt.as_ref().map(|a| a.id);
        if let Some(id) = running {
            if let Some(a) = self.0.state.borrow_mut().attempt.as_mut() {
                a.resigned.push(Box::new(callback));
            }
            return self.cancel(id);
        }
        self.resign_key(callback);
    }

    /// Go's `Resign`: deletes the key if it is still this candidate's.
    fn resign_key(&self, callback: impl FnOnce(Result<(), Error>) + 'static) {
        let (key, revision) = {
            let mut s = self.0.state.borrow_mut();
            if !s.candidate {
                drop(s);
                return later(self.client(), move || callback(Ok(())));
            }
            s.candidate = false;
            (std::mem::take(&mut s.key), s.revision)
        };
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, revision)])
            .and_then([TxnOp::delete(key, DeleteOptions::new())]);
        let this = self.clone();
        self.client().txn(txn, move |res| match res {
            Err(e) => callback(Err(e.into())),
            Ok(resp) => {
                this.0.state.borrow_mut().header = resp.header;
                callback(Ok(()))
            }
        });
    }

    /// The current leader (Go's `Leader`): a get response whose one key-value is the
    /// leader's key and value (`count` tells how many candidates there are);
    /// [`Error::NoLeader`] when nobody campaigns.
    pub fn leader(&self, callback: impl FnOnce(Result<RangeResponse, Error>) + 'static) {
        self.client().get(self.0.prefix.clone(), first_created(), move |res| match res {
            Err(e) => callback(Err(e.into())),
            Ok(resp) if resp.kvs.is_empty() => callback(Err(Error::NoLeader)),
            Ok(resp) => callback(Ok(resp)),
        });
    }

    /// This candidate's key while campaigning or leading (empty otherwise).
    pub fn key(&self) -> Bytes {
        self.0.state.borrow().key.clone()
    }

    /// The create revision of this candidate's key.
    pub fn revision(&self) -> i64 {
        self.0.state.borrow().revision
    }

    /// The header of the winning campaign, or of the last proclaim or resign.
    pub fn header(&self) -> Option<ResponseHeader> {
        self.0.state.borrow().header
    }

    /// Calls `callback` with each leader, and each value a leader proclaims, in order
    /// (Go's `Observe`, which also gives get responses whose one key-value is the leader's):
    /// the current leader first (or the first to campaign when there is none), then every
    /// change. It survives reconnects (its watches resume where they
    /// were); after a compaction it reads the current leader again. It ends with one error
    /// when a read fails for good, or on [`Observer::cancel`].
    pub fn observe(
        &self,
        callback: impl FnMut(Result<RangeResponse, Error>) + 'static,
    ) -> Observer {
        let observer = Observer(Rc::new(RefCell::new(Observing {
            client: self.client().clone(),
            prefix: self.0.prefix.clone(),
            callback: Some(Box::new(callback)),
            ended: false,
            watch: None,
            last: None,
        })));
        observer.read_leader();
        observer
    }

    // ----- the campaign's attempt, as the mutex's -----

    #[allow(clippy::type_complexity)]
    fn begin(&self, done: Done) -> Result<u64, (Done, Error)> {
        if self.0.state.borrow().attempt.is_some() {
            let e =
                EtcdError::new(Code::FailedPrecondition, "a campaign is in progress", "campaign");
            return Err((done, e.into()));
        }
        if let Some(lost) = self.0.session.lost() {
            return Err((done, Error::SessionLost(lost)));
        }
        let this = Rc::downgrade(&self.0);
        let listener = self.0.session.listen(Box::new(move |lost| {
            if let Some(inner) = this.upgrade() {
                let e = Election(inner);
                e.0.state.borrow_mut().candidate = false;
                e.finish(Err(Error::SessionLost(lost)));
            }
        }));
        let mut s = self.0.state.borrow_mut();
        s.attempts += 1;
        let id = s.attempts;
        let resigned = Vec::new();
        let attempt =
            Attempt { id, done: Some(done), resigned, wait: None, listener, cancelled: false };
        s.attempt = Some(attempt);
        Ok(id)
    }

    /// Cancels campaign `id`: its wait ends (which resigns and reports `CANCELLED`), or its
    /// Txn's answer finds the mark.
    fn cancel(&self, id: u64) {
        let wait = {
            let mut s = self.0.state.borrow_mut();
            let Some(a) = s.attempt.as_mut().filter(|a| a.id == id && !a.cancelled) else {
                return;
            };
            a.cancelled = true;
            a.wait.take()
        };
        // Still in the Txn, there is no wait yet: `wait_turn` sees the mark.
        if let Some(w) = wait {
            w.cancel();
        }
    }

    fn finish(&self, result: Result<(), Error>) {
        let attempt = self.0.state.borrow_mut().attempt.take();
        let Some(mut attempt) = attempt else { return };
        self.0.session.forget(attempt.listener);
        if let Some(w) = attempt.wait.take() {
            w.cancel();
        }
        if let Some(done) = attempt.done.take() {
            done(result);
        }
        for resigned in attempt.resigned {
            resigned(Ok(()));
        }
    }
}

/// An election observed (see [`Election::observe`]); [`cancel`](Observer::cancel) ends it.
#[derive(Clone)]
pub struct Observer(Rc<RefCell<Observing>>);

type ObserveCallback = Box<dyn FnMut(Result<RangeResponse, Error>)>;

struct Observing {
    client: Client,
    prefix: Bytes,
    /// Out while it runs.
    callback: Option<ObserveCallback>,
    /// Cancelled, or ended by an error.
    ended: bool,
    watch: Option<Watch>,
    /// The key and mod revision last delivered: a leader read again (after a compaction
    /// ended the watch on its key) is not delivered twice.
    last: Option<(Bytes, i64)>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").finish_non_exhaustive()
    }
}

impl Observer {
    /// Stops observing: the callback never runs again.
    pub fn cancel(&self) {
        let watch = {
            let mut o = self.0.borrow_mut();
            o.ended = true;
            o.callback = None;
            o.watch.take()
        };
        if let Some(w) = watch {
            w.cancel(|_| ());
        }
    }

    fn live(&self) -> bool {
        !self.0.borrow().ended
    }

    /// Delivers `item`; an error ends the observation.
    fn deliver(&self, item: Result<RangeResponse, Error>) {
        if let Ok(resp) = &item {
            let kv = &resp.kvs[0];
            let seen = Some((kv.key.clone(), kv.mod_revision));
            let mut o = self.0.borrow_mut();
            if o.last == seen {
                return;
            }
            o.last = seen;
        }
        let last = item.is_err();
        let callback = self.0.borrow_mut().callback.take();
        let Some(mut callback) = callback else { return };
        callback(item);
        if last {
            return self.cancel();
        }
        let mut o = self.0.borrow_mut();
        if !o.ended {
            o.callback = Some(callback); // not cancelled from inside the callback
        }
    }

    fn replace_watch(&self, watch: Option<Watch>) {
        let old = std::mem::replace(&mut self.0.borrow_mut().watch, watch);
        if let Some(w) = old {
            w.cancel(|_| ());
        }
    }

    /// Reads the leader; without one, waits for the first candidate.
    fn read_leader(&self) {
        let (client, prefix) = {
            let o = self.0.borrow();
            (o.client.clone(), o.prefix.clone())
        };
        let this = self.clone();
        client.get(prefix.clone(), first_created(), move |res| {
            if !this.live() {
                return;
            }
            let resp = match res {
                Err(e) => return this.deliver(Err(e.into())),
                Ok(resp) => resp,
            };
            let revision = resp.header.as_ref().map_or(0, |h| h.revision);
            match resp.kvs.is_empty() {
                false => this.leader_found(resp, revision),
                true => this.await_first(prefix, revision),
            }
        });
    }

    /// No leader at `revision`: the first key put under the prefix from then on leads.
    fn await_first(&self, prefix: Bytes, revision: i64) {
        let client = self.0.borrow().client.clone();
        let this = self.clone();
        let options = WatchOptions::new().prefix(true).start_revision(revision);
        let watch = client.watch(prefix, options, move |res| {
            if !this.live() {
                return;
            }
            match res {
                Err(e) => this.restart_or_end(e),
                Ok(resp) => {
                    let put = resp.events.into_iter().find(|e| e.r#type() == EventType::Put);
                    if let Some(kv) = put.and_then(|e| e.kv) {
                        // Go reports it at the put's revision.
                        let at = kv.mod_revision;
                        let header = resp.header.map(|h| ResponseHeader { revision: at, ..h });
                        this.leader_found(one(header, kv), at);
                    }
                }
            }
        });
        self.replace_watch(Some(watch));
    }

    /// The leader in `found` leads as of `revision`: delivers it, then follows its key until
    /// it is deleted.
    fn leader_found(&self, found: RangeResponse, revision: i64) {
        let key = found.kvs[0].key.clone();
        self.replace_watch(None);
        self.deliver(Ok(found));
        if !self.live() {
            return;
        }
        let client = self.0.borrow().client.clone();
        let this = self.clone();
        let options = WatchOptions::new().start_revision(revision + 1);
        let watch = client.watch(key, options, move |res| {
            if !this.live() {
                return;
            }
            match res {
                Err(e) => this.restart_or_end(e),
                Ok(resp) => {
                    for ev in resp.events {
                        if ev.r#type() == EventType::Delete {
                            this.replace_watch(None);
                            this.read_leader();
                            return;
                        }
                        if let Some(kv) = ev.kv {
                            this.deliver(Ok(one(resp.header, kv))); // a proclaimed value
                        }
                    }
                }
            }
        });
        self.replace_watch(Some(watch));
    }

    /// A watch ended: after a compaction, reads the leader again; otherwise the error ends
    /// the observation.
    fn restart_or_end(&self, e: EtcdError) {
        self.replace_watch(None);
        match e.compact_revision().is_some() {
            true => self.read_leader(),
            false => self.deliver(Err(e.into())),
        }
    }
}

/// A get response holding `kv` alone (what Go's `Observe` makes of a watch event).
fn one(header: Option<ResponseHeader>, kv: KeyValue) -> RangeResponse {
    RangeResponse { header, kvs: vec![kv], ..RangeResponse::default() }
}
