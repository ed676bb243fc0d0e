//! [`Remote`]: the one way into a client from another thread.
//!
//! A [`Client`] is `!Send` (it is built on `Rc`) and runs every callback on the thread that
//! drives it. A `Remote` is its `Send + Sync + Clone` mailbox: any thread queues work, and
//! the loop's thread runs it on its next turn. Posting wakes the loop through the reactor's
//! one `mio::Waker` (shared with the name resolver), so a foreign loop that watches
//! `as_raw_fd()` sees posted work at once.
//!
//! ```text
//!   thread A ─post(job)─► Mailbox { jobs, open } ──wake──► loop thread: turn
//!                                                            └─► job(&client) among the callbacks
//!   Client::close()  ─► every queued job: CANCELLED to its callback (posts are dropped)
//!   last Client gone ─► the mailbox closes: later posts fail, their callbacks dropped uncalled
//! ```

use crate::client::Client;
use crate::error::{Code, EtcdError};
use crate::handle::Watch;
use crate::ops::kv::{CompactOptions, DeleteOptions, GetOptions, PutOptions};
use crate::ops::lease::LeaseGrantOptions;
use crate::ops::txn::Txn;
use crate::ops::watch::WatchOptions;
use crate::pb::etcdserverpb as pb;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Work posted from another thread: run with the target client, or with `None` when the
/// client closed first (an operation's callback then gets `CANCELLED`).
type Job = Box<dyn FnOnce(Option<&Client>) + Send>;

/// How many handles (remotes, remote watches) and queued jobs name one target: at zero the
/// loop forgets the target (and a member view it held can go).
type Live = Arc<AtomicUsize>;

/// A queued job: its target, that target's count (the job is one of them), the work.
pub(crate) type Queued = (usize, Live, Job);

/// The shared half: a queue any thread may push to, and the loop's waker.
pub(crate) struct Mailbox {
    queue: Mutex<Queue>,
    /// Jobs are queued: the loop's next turn takes them (read without the lock).
    pending: AtomicBool,
    /// Live `Remote` handles: while any exists, `run()` keeps turning (work may come).
    handles: AtomicUsize,
    waker: Arc<mio::Waker>,
    /// Numbers the watches started through remotes.
    next_watch: AtomicU64,
}

struct Queue {
    jobs: VecDeque<Queued>,
    /// False once the client is gone: posts fail.
    open: bool,
}

impl Mailbox {
    pub(crate) fn new(waker: Arc<mio::Waker>) -> Mailbox {
        Mailbox {
            queue: Mutex::new(Queue { jobs: VecDeque::new(), open: true }),
            pending: AtomicBool::new(false),
            handles: AtomicUsize::new(0),
            waker,
            next_watch: AtomicU64::new(1),
        }
    }

    /// The queue, even if a thread panicked while holding it (a queue of boxed jobs stays
    /// consistent: a push or a take is one call).
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `job` for target `view`; wakes the loop when the queue was empty.
    fn push(&self, view: usize, live: &Live, job: Job) -> Result<(), EtcdError> {
        let mut queue = self.lock();
        if !queue.open {
            return Err(gone());
        }
        live.fetch_add(1, Ordering::AcqRel);
        queue.jobs.push_back((view, live.clone(), job));
        drop(queue);
        if !self.pending.swap(true, Ordering::AcqRel) {
            // A failed wake leaves the job queued for the next turn anyway.
            let _ = self.waker.wake();
        }
        Ok(())
    }

    /// Takes every queued job (the loop's thread).
    pub(crate) fn take(&self) -> Vec<Queued> {
        if !self.pending.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut queue = self.lock();
        self.pending.store(false, Ordering::Release);
        queue.jobs.drain(..).collect()
    }

    /// Whether jobs wait, or a `Remote` handle may still post some.
    pub(crate) fn is_busy(&self) -> bool {
        self.pending.load(Ordering::Acquire) || self.handles.load(Ordering::Acquire) > 0
    }

    /// Whether jobs wait for the next turn.
    pub(crate) fn has_jobs(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// The client is gone: later posts fail; the queued jobs, handed back, are cancelled.
    pub(crate) fn shut(&self) -> Vec<Queued> {
        let mut queue = self.lock();
        queue.open = false;
        self.pending.store(false, Ordering::Release);
        queue.jobs.drain(..).collect()
    }
}

fn gone() -> EtcdError {
    EtcdError::new(Code::Cancelled, "the client is gone", "remote")
}

/// What a job runs on: a view of the client (its call options and namespace) or a member
/// view. Kept on the loop's thread, in the client; a `Remote` names it by index.
pub(crate) enum Target {
    /// The client itself, or a `with` / `namespaced` view of it (its parts, not a `Client`:
    /// a `Client` here would keep its own client alive).
    View(Option<Rc<crate::call_options::CallOptions>>, Option<Rc<crate::namespace::Namespace>>),
    /// A member view (it holds its client weakly: no cycle).
    Member(Client),
}

impl Target {
    /// Whether `self` and `other` are the same view (so that remotes share one entry).
    pub(crate) fn same(&self, other: &Target) -> bool {
        match (self, other) {
            (Target::View(o1, n1), Target::View(o2, n2)) => same_rc(o1, o2) && same_rc(n1, n2),
            (Target::Member(a), Target::Member(b)) => a.same_view(b),
            _ => false,
        }
    }
}

/// Whether two optional view parts are the same one (or both absent).
pub(crate) fn same_rc<T>(a: &Option<Rc<T>>, b: &Option<Rc<T>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Rc::ptr_eq(a, b),
        _ => false,
    }
}

/// The loop side of the remotes of one client: the mailbox, the targets, the watches
/// started through remotes.
pub(crate) struct RemoteHost {
    pub(crate) mailbox: Arc<Mailbox>,
    /// The targets by index, each with its live count; `None`: a free slot.
    targets: Vec<Option<(Target, Live)>>,
    pub(crate) watches: HashMap<u64, Watch>,
}

impl RemoteHost {
    pub(crate) fn new(waker: Arc<mio::Waker>) -> RemoteHost {
        RemoteHost {
            mailbox: Arc::new(Mailbox::new(waker)),
            targets: Vec::new(),
            watches: HashMap::new(),
        }
    }

    /// A handle on `target`: its slot if it has one, else a free or new slot.
    pub(crate) fn remote(&mut self, target: Target) -> Remote {
        let same = |t: &Option<(Target, Live)>| t.as_ref().is_some_and(|(t, _)| t.same(&target));
        let index = match self.targets.iter().position(same) {
            Some(found) => found,
            None => {
                let slot = Some((target, Live::default()));
                match self.targets.iter().position(Option::is_none) {
                    Some(free) => {
                        self.targets[free] = slot;
                        free
                    }
                    None => {
                        self.targets.push(slot);
                        self.targets.len() - 1
                    }
                }
            }
        };
        let live = self.targets[index].as_ref().map(|(_, live)| live.clone()).unwrap_or_default();
        Remote::new(self.mailbox.clone(), index, live)
    }

    /// The target of a queued job (always there: the job counts as live).
    pub(crate) fn target(&self, index: usize) -> Option<&Target> {
        self.targets.get(index)?.as_ref().map(|(t, _)| t)
    }

    /// Frees the slots nothing names any more; what they held is handed back, to be dropped
    /// once no borrow is held (a member view's `Drop` uses its client).
    pub(crate) fn prune(&mut self) -> Vec<Target> {
        let mut freed = Vec::new();
        for slot in &mut self.targets {
            if slot.as_ref().is_some_and(|(_, live)| live.load(Ordering::Acquire) == 0) {
                freed.extend(slot.take().map(|(t, _)| t));
            }
        }
        freed
    }
}

/// A handle on a [`Client`] for other threads (`Send + Sync + Clone`), from
/// [`Client::remote`].
///
/// - [`post`](Remote::post) runs any closure on the loop's thread with the client, and the
///   operations here take `Send` callbacks, which also run on the loop's thread.
/// - Posting wakes the loop at once (the client's fd becomes readable); the work runs on
///   its next turn, in the order posted.
/// - Work still queued when the client is [closed](Client::close) is cancelled there: an
///   operation's callback receives `CANCELLED`, a posted closure is dropped uncalled.
/// - Once the last `Client` handle is dropped, posting fails with `CANCELLED` ("the client
///   is gone") and the callback is dropped uncalled.
/// - While any `Remote` exists, [`Client::run`] keeps turning even with nothing pending
///   (work may still be posted): drop every `Remote`, or call [`Client::stop`], to end it.
#[derive(Debug)]
pub struct Remote {
    mailbox: Arc<Mailbox>,
    target: usize,
    live: Live,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Clone for Remote {
    fn clone(&self) -> Remote {
        Remote::new(self.mailbox.clone(), self.target, self.live.clone())
    }
}

impl Drop for Remote {
    /// The last handle gone: wake the loop so that a `run()` with nothing else to do returns.
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
        if self.mailbox.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.mailbox.waker.wake();
        }
    }
}

impl Remote {
    fn new(mailbox: Arc<Mailbox>, target: usize, live: Live) -> Remote {
        mailbox.handles.fetch_add(1, Ordering::AcqRel);
        live.fetch_add(1, Ordering::AcqRel);
        Remote { mailbox, target, live }
    }

    /// Runs `work` on the loop's thread with the client, on its next turn. Fails (and
    /// drops `work`) once the client is gone; `work` is dropped uncalled if the client is
    /// closed before it runs.
    pub fn post(&self, work: impl FnOnce(&Client) + Send + 'static) -> Result<(), EtcdError> {
        self.mailbox.push(
            self.target,
            &self.live,
            Box::new(move |client: Option<&Client>| {
                if let Some(client) = client {
                    work(client)
                }
            }),
        )
    }

    /// Starts any operation on the loop's thread: `start` receives the client and the
    /// callback to give the operation; `callback` (which must be `Send`) runs on the loop's
    /// thread with the result, or with `CANCELLED` if the client is closed first.
    ///
    /// ```no_run
    /// # let client = evetcd::Client::new(evetcd::Config::new()).unwrap();
    /// let remote = client.remote();
    /// std::thread::spawn(move || {
    ///     remote
    ///         .call(|c, cb| c.member_list(true, cb), |res| println!("{:?}", res.map(|r| r.members.len())))
    ///         .expect("the client is alive");
    /// });
    /// ```
    pub fn call<T: 'static>(
        &self,
        start: impl FnOnce(&Client, Box<dyn FnOnce(Result<T, EtcdError>)>) + Send + 'static,
        callback: impl FnOnce(Result<T, EtcdError>) + Send + 'static,
    ) -> Result<(), EtcdError> {
        self.mailbox.push(
            self.target,
            &self.live,
            Box::new(move |client: Option<&Client>| match client {
                Some(client) => start(client, Box::new(callback)),
                None => callback(Err(EtcdError::new(Code::Cancelled, "client closed", "remote"))),
            }),
        )
    }

    /// [`Client::get`] from another thread.
    pub fn get(
        &self,
        key: impl Into<Bytes>,
        options: GetOptions,
        callback: impl FnOnce(Result<pb::RangeResponse, EtcdError>) + Send + 'static,
    ) -> Result<(), EtcdError> {
        let key = key.into();
        self.call(move |c, cb| c.get(key, options, cb), callback)
    }

    /// [`Client::put`] from another thread.
    pub fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        options: PutOptions,
        callback: impl FnOnce(Result<pb::PutResponse, EtcdError>) + Send + 'static,
    ) -> Result<(), EtcdError> {
        let (key, value) = (key.into(), value.into());
        self.call(move |c, cb| c.put(key, value, options, cb), callback)
    }

    /// [`Client::delete`] from another thread.
    pub fn delete(
        &self,
        key: impl Into<Bytes>,
        options: DeleteOptions,
        callback: impl FnOnce(Result<pb::DeleteRangeResponse, EtcdError>) + Send + 'static,
    ) -> Result<(), EtcdError> {
        let key = key.into();
        self.call(move |c, cb| c.delete(key, options, cb), callback)
    }

    /// [`Client::txn`] from another thread.
    pub fn txn(
        &self,
        txn: Txn,
        callback: impl FnOnce(Result<pb::TxnResponse, EtcdError>) + Send + 'static,
    ) -> Result<(), EtcdError> {
        self.call(move |c, cb| c.txn(txn, cb), callback)
    }

    /// [`Client::compact`] from another thread.
    pub fn compact(
        &self,
        revision: i64,
        options: CompactOptions,
        callback: impl FnOnce(Result<pb::CompactionResponse, EtcdError>) + Send + 'static,
    ) -> Result<(), EtcdError> {
        self.call(move |c, cb| c.compact(revision, options, cb), callback)
    }

    /// [`Client::lease_grant`] from another thread.
    pub fn lease_grant(
        &self,
        ttl: i64,
        options: LeaseGrantOptions,
        callback: impl FnOnce(Result<pb::LeaseGrantResponse, EtcdError>) + Send + 'static,
    ) -> Result<(), EtcdError> {
        self.call(move |c, cb| c.lease_grant(ttl, options, cb), callback)
    }

    /// [`Client::lease_revoke`] from another thread.
    pub fn lease_revoke(
        &self,
        id: i64,
        callback: impl FnOnce(Result<pb::LeaseRevokeResponse, EtcdError>) + Send + 'static,
    ) -> Result<(), EtcdError> {
        self.call(move |c, cb| c.lease_revoke(id, cb), callback)
    }

    /// [`Client::lease_time_to_live`] from another thread.
    pub fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
        callback: impl FnOnce(Result<pb::LeaseTimeToLiveResponse, EtcdError>) + Send + 'static,
    ) -> Result<(), EtcdError> {
        self.call(move |c, cb| c.lease_time_to_live(id, keys, cb), callback)
    }

    /// [`Client::watch`] from another thread: `callback` runs on the loop's thread for
    /// each response, as with a watch started there. The returned handle cancels it from
    /// any thread. A watch posted to a client closed before it started gets one
    /// `CANCELLED`.
    pub fn watch(
        &self,
        key: impl Into<Bytes>,
        options: WatchOptions,
        mut callback: impl FnMut(Result<pb::WatchResponse, EtcdError>) + Send + 'static,
    ) -> Result<RemoteWatch, EtcdError> {
        let key = key.into();
        let id = self.mailbox.next_watch.fetch_add(1, Ordering::Relaxed);
        self.mailbox.push(
            self.target,
            &self.live,
            Box::new(move |client: Option<&Client>| {
                let Some(client) = client else {
                    return callback(Err(EtcdError::new(
                        Code::Cancelled,
                        "client closed",
                        "watch",
                    )));
                };
                // The handle is kept on the loop's side until cancelled or ended.
                let weak = client.weak();
                let watch = client.watch(key, options, move |res| {
                    let ended = res.is_err();
                    callback(res);
                    if ended {
                        if let Some(c) = Client::upgrade(&weak) {
                            c.forget_remote_watch(id);
                        }
                    }
                });
                client.keep_remote_watch(id, watch);
            }),
        )?;
        self.live.fetch_add(1, Ordering::AcqRel); // the RemoteWatch's
        Ok(RemoteWatch {
            mailbox: self.mailbox.clone(),
            target: self.target,
            live: self.live.clone(),
            id,
        })
    }
}

/// A watch started through a [`Remote`]; [`cancel`](RemoteWatch::cancel) works from any
/// thread. Dropping it does not cancel the watch (as with [`Watch`]).
///
/// It is not a [`Remote`]: a live watch keeps `run()` turning by itself, as any watch does.
#[derive(Debug)]
pub struct RemoteWatch {
    mailbox: Arc<Mailbox>,
    target: usize,
    /// Counts as a handle on its target (not as a `Remote`: it does not keep `run()` going).
    live: Live,
    id: u64,
}

impl Clone for RemoteWatch {
    fn clone(&self) -> RemoteWatch {
        self.live.fetch_add(1, Ordering::AcqRel);
        RemoteWatch {
            mailbox: self.mailbox.clone(),
            target: self.target,
            live: self.live.clone(),
            id: self.id,
        }
    }
}

impl Drop for RemoteWatch {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RemoteWatch {
    /// Cancels the watch (see [`Watch::cancel`]); `callback` runs on the loop's thread once
    /// it is done. Fails if the client is gone (then the watch is gone with it).
    pub fn cancel(
        &self,
        callback: impl FnOnce(Result<(), EtcdError>) + Send + 'static,
    ) -> Result<(), EtcdError> {
        let id = self.id;
        self.mailbox.push(
            self.target,
            &self.live,
            Box::new(move |client: Option<&Client>| {
                match client.and_then(|c| c.forget_remote_watch(id)) {
                    Some(watch) => watch.cancel(callback),
                    // Ended, already cancelled, or the client closed (which ended it).
                    None => callback(Ok(())),
                }
            }),
        )
    }
}
