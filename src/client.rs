//! [`Client`]: the handle users hold, the loop that runs callbacks, and the embedding calls.
//!
//! The operations themselves live beside their options in `ops/` (one file per service),
//! each as an `impl Client` block built on [`Client::call`].

use crate::call_options::CallOptions;
use crate::config::Config;
pub(crate) use crate::core::alarms::Fired;
use crate::core::{CallKey, Core, Deadline, Event, StreamItem, StreamKey, UnaryOptions};
use crate::error::{Code, EtcdError};
use crate::grpc::{codec, Rpc, RpcKind};
use crate::handle::Watch;
use crate::namespace::Namespace;
use crate::reactor::Reactor;
use crate::remote::{same_rc, Remote, RemoteHost, Target};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// An etcd v3 client driven by one thread's event loop.
///
/// Cheap to clone: clones share one connection, and a callback may capture a clone to start
/// more work. Every operation takes a callback that receives `Ok(response)` or
/// `Err(EtcdError)` exactly once, from [`run`](Client::run) or [`process`](Client::process),
/// never from inside the call that started the operation.
///
/// Dropping the last clone closes the connection; callbacks of operations still pending
/// then never run. A callback that captures a clone keeps the client alive until it has run.
#[derive(Clone)]
pub struct Client {
    inner: Rc<Inner>,
    /// Options for the unary calls started through this handle (see [`Client::with`]).
    opts: Option<Rc<CallOptions>>,
    /// The prefix of every key of this handle (see [`Client::namespaced`]).
    ns: Option<Rc<Namespace>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    core: RefCell<Driver>,
    /// Set by `stop()`; `run()` returns at the end of its turn and clears it.
    stopped: Cell<bool>,
    /// True while callbacks run, so that a nested `run()`/`process()` returns at once.
    pub(crate) in_callbacks: Cell<bool>,
    /// Hears of health changes (see `Config::health_interval`).
    on_health: RefCell<Option<HealthCallback>>,
    /// The server answered RangeStream with UNIMPLEMENTED (etcd before 3.7): `get_paged`
    /// pages with Range from then on.
    pub(crate) no_range_stream: Cell<bool>,
    /// Counts `close()` calls: a multi-step operation (`get_paged`) started before one ends.
    pub(crate) closes: Cell<u64>,
    /// Endpoints without a scheme use TLS (the configuration has a `Tls`).
    pub(crate) default_tls: bool,
    /// The configuration, from which member views are made (see `member.rs`).
    pub(crate) config: Config,
    /// A member view's client, whose loop drives this one (`None`: a client of its own).
    pub(crate) host: Option<Weak<Inner>>,
    /// The member views with work in progress, turned with this client's loop.
    pub(crate) members: RefCell<Vec<Rc<Inner>>>,
    /// This member view is in its host's `members` (its epoll fd watched by the host's).
    pub(crate) attached: Cell<bool>,
    /// The other threads' way in, once `remote()` was called (see `remote.rs`).
    remote: RefCell<Option<RemoteHost>>,
}

impl Drop for Inner {
    /// The client is gone: remotes can no longer post, and what they queued is cancelled
    /// here, on the loop's thread (an operation's callback gets `CANCELLED`).
    fn drop(&mut self) {
        if let Some(host) = self.remote.get_mut().take() {
            for (_, _, job) in host.mailbox.shut() {
                job(None);
            }
        }
    }
}

/// What `on_health_change` registers.
type HealthCallback = Box<dyn FnMut(bool, &str)>;

/// The sans-IO core and the reactor that drives it.
pub(crate) struct Driver {
    pub(crate) core: Core,
    pub(crate) reactor: Reactor,
}

impl Inner {
    pub(crate) fn new(driver: Driver, config: Config, host: Option<Weak<Inner>>) -> Inner {
        Inner {
            core: RefCell::new(driver),
            stopped: Cell::new(false),
            in_callbacks: Cell::new(false),
            on_health: RefCell::new(None),
            no_range_stream: Cell::new(false),
            closes: Cell::new(0),
            default_tls: config.has_tls(),
            config,
            host,
            members: RefCell::default(),
            attached: Cell::new(false),
            remote: RefCell::new(None),
        }
    }

    /// The sans-IO core and its reactor.
    pub(crate) fn driver(&self) -> &RefCell<Driver> {
        &self.core
    }
}

impl Client {
    /// A client for `config`. No connection is made until the first operation.
    ///
    /// Fails with `INVALID_ARGUMENT` for a bad configuration, `INTERNAL` when the OS refuses
    /// an epoll instance.
    pub fn new(config: Config) -> Result<Client, EtcdError> {
        let cfg = config.validate()?;
        #[cfg(feature = "tls")]
        let connector = config.connector(&cfg.endpoints)?;
        #[cfg(not(feature = "tls"))]
        let connector = None;
        let reactor = Reactor::new(connector)
            .map_err(|e| EtcdError::new(Code::Internal, format!("epoll: {e}"), "new"))?;
        let core = Core::new(cfg, Instant::now());
        let driver = Driver { core, reactor };
        Ok(Client { inner: Rc::new(Inner::new(driver, config, None)), opts: None, ns: None })
    }

    /// A client on `inner` (a member view's own, to drive it).
    pub(crate) fn from_inner(inner: Rc<Inner>, opts: Option<Rc<CallOptions>>) -> Client {
        Client { inner, opts, ns: None }
    }

    /// A view on `inner` (a member view just made) with this view's call options and
    /// namespace.
    pub(crate) fn view_on(&self, inner: Rc<Inner>) -> Client {
        Client { inner, opts: self.opts.clone(), ns: self.ns.clone() }
    }

    /// The namespace of this view's keys, if it has one.
    pub(crate) fn namespace(&self) -> Option<&Rc<Namespace>> {
        self.ns.as_ref()
    }

    /// The client whose loop drives this member view; `None` for a client of its own (and
    /// for a member view whose host is gone: it then drives itself).
    pub(crate) fn host(&self) -> Option<Client> {
        let host = self.inner.host.as_ref()?.upgrade()?;
        Some(Client { inner: host, opts: None, ns: None })
    }

    /// Runs the loop until no operation is pending, or until [`stop`](Client::stop).
    ///
    /// Called from inside a callback it returns at once (the outer loop goes on).
    pub fn run(&self) {
        if let Some(host) = self.host() {
            return host.run();
        }
        if self.inner.in_callbacks.get() {
            return;
        }
        let _keep = self.inner.clone();
        self.inner.stopped.set(false);
        loop {
            if self.inner.stopped.replace(false) {
                return;
            }
            if self.is_idle() {
                return;
            }
            let timeout = self.next_timeout();
            self.turn(timeout);
        }
    }

    /// Makes a running [`run`](Client::run) return after the current turn (called from a
    /// callback, say). Pending operations stay pending; a later `run()` continues them.
    pub fn stop(&self) {
        if let Some(host) = self.host() {
            return host.stop();
        }
        self.inner.stopped.set(true);
    }

    /// One non-blocking turn, for a foreign event loop: does whatever IO is ready, fires due
    /// timers and runs finished callbacks. Afterwards re-read
    /// [`next_timeout`](Client::next_timeout).
    pub fn process(&self) {
        if let Some(host) = self.host() {
            return host.process();
        }
        if self.inner.in_callbacks.get() {
            return;
        }
        let _keep = self.inner.clone();
        self.turn(Some(Duration::ZERO));
    }

    /// How long a foreign loop may wait for [`as_raw_fd`](Client::as_raw_fd) to become
    /// readable before calling [`process`](Client::process) anyway: `Some(ZERO)` when work
    /// is queued, `None` when nothing is pending at all (with health checks on, the time to
    /// the next check instead; see [`Config::health_interval`]). Re-read it after every
    /// `process()` and after every operation started.
    pub fn next_timeout(&self) -> Option<Duration> {
        if let Some(host) = self.host() {
            return host.next_timeout();
        }
        if self.inner.remote.borrow().as_ref().is_some_and(|r| r.mailbox.has_jobs()) {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let own = {
            let driver = self.inner.core.borrow();
            driver.reactor.next_timeout(&driver.core, now)
        };
        self.members_next_timeout(now).map_or(own, |m| Some(own.map_or(m, |own| own.min(m))))
    }

    /// Registers `callback(healthy, endpoint)`, called from the loop each time the periodic
    /// health check (see [`Config::health_interval`]) changes its verdict: the endpoint is
    /// the one checked, as configured (`host:port`). Health starts out as healthy, so the
    /// first call says an endpoint failed. Replaces any earlier callback.
    pub fn on_health_change(&self, callback: impl FnMut(bool, &str) + 'static) {
        if let Some(host) = self.host() {
            return host.on_health_change(callback);
        }
        *self.inner.on_health.borrow_mut() = Some(Box::new(callback));
    }

    /// Ends every pending operation and closes the connection. Each pending call's and live
    /// watch's callback receives `CANCELLED` before `close` returns (after any result that
    /// had already arrived). The client stays usable: a new operation connects again (and
    /// restarts the health checks, which `close` stops).
    ///
    /// A callback that captures its own client keeps the client alive while it is pending;
    /// `close` is how a program ends such cycles before dropping its last handle.
    pub fn close(&self) {
        if let Some(host) = self.host() {
            return host.close();
        }
        self.close_own();
        self.close_members();
        // Work other threads queued before the close: cancelled here, on the loop's thread.
        let jobs = self.inner.remote.borrow().as_ref().map(|r| r.mailbox.take());
        let cancelled: Vec<Event> = jobs
            .into_iter()
            .flatten()
            .map(|(_, live, job)| {
                live.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                Event::Local(Box::new(move || job(None)))
            })
            .collect();
        let mut delivery = Delivery::new(&self.inner, cancelled);
        for event in delivery.rest.by_ref() {
            self.deliver(event);
        }
    }

    /// Ends this core's work and closes its link (see [`close`](Client::close)).
    pub(crate) fn close_own(&self) {
        self.inner.closes.set(self.inner.closes.get() + 1);
        self.close_core("client closed");
    }

    /// Ends this core's work with `reason` and closes its link.
    pub(crate) fn close_core(&self, reason: &str) {
        let events = {
            let mut driver = self.inner.core.borrow_mut();
            let Driver { core, reactor } = &mut *driver;
            let events = core.close(reason);
            reactor.flush(core); // drops the socket
            events
        };
        let mut delivery = Delivery::new(&self.inner, events);
        for event in delivery.rest.by_ref() {
            self.deliver(event);
        }
    }

    /// A snapshot of this client: the endpoint in use and the link's state since when, the
    /// latest connect failures, the live watches, keepalives and observers, the unary calls
    /// pending, and the authentication state (never the password or the token). See
    /// [`ClientInfo`](crate::ClientInfo).
    ///
    /// Views made with [`with`](Client::with) and [`namespaced`](Client::namespaced) report
    /// the client they share; a [`member`](Client::member) view reports its own link to its
    /// member (idle when it has no work). Cheap enough for a status page; it never touches
    /// the connection, and may be called from inside a callback.
    ///
    /// ```no_run
    /// # let client = evetcd::Client::new(evetcd::Config::new()).unwrap();
    /// let info = client.info();
    /// println!("{:?} to {:?} for {:?}", info.state, info.endpoint, info.since.elapsed());
    /// for f in &info.connect_failures {
    ///     println!("{} failed {:?} ago: {}", f.endpoint, f.at.elapsed(), f.error);
    /// }
    /// ```
    pub fn info(&self) -> crate::ClientInfo {
        self.inner.core.borrow().core.info()
    }

    /// Whether no operation is pending (member views' included).
    pub fn is_idle(&self) -> bool {
        if let Some(host) = self.host() {
            return host.is_idle();
        }
        self.inner.members.borrow().is_empty()
            && self.inner.core.borrow().core.is_idle()
            && !self.inner.remote.borrow().as_ref().is_some_and(|r| r.mailbox.is_busy())
    }

    /// One turn of this client, then one of each member view with work in progress (and a
    /// flush of what their callbacks started here).
    fn turn(&self, timeout: Option<Duration>) {
        self.turn_own(timeout);
        if !self.inner.members.borrow().is_empty() {
            self.turn_members();
            let mut driver = self.inner.core.borrow_mut();
            let Driver { core, reactor } = &mut *driver;
            reactor.flush(core);
        }
    }

    /// One turn: input and timers with the core borrowed, then callbacks with nothing
    /// borrowed, then one flush that sends what h2 and the callbacks produced.
    pub(crate) fn turn_own(&self, timeout: Option<Duration>) {
        let mut batch: Vec<Event> = {
            let mut driver = self.inner.core.borrow_mut();
            let Driver { core, reactor } = &mut *driver;
            reactor.turn(core, timeout);
            std::iter::from_fn(|| core.poll_event()).collect()
        };
        self.take_remote_jobs(&mut batch);
        if !batch.is_empty() {
            let mut delivery = Delivery::new(&self.inner, batch);
            for event in delivery.rest.by_ref() {
                self.deliver(event);
            }
        }
        let mut driver = self.inner.core.borrow_mut();
        let Driver { core, reactor } = &mut *driver;
        reactor.flush(core);
    }

    /// Runs one event's callback with no borrow held: the one delivery path.
    fn deliver(&self, event: Event) {
        match event {
            Event::Call(done, result) => done(result),
            Event::Local(work) => work(),
            Event::Health(healthy, endpoint) => {
                // Taken out while it runs, so that it may replace itself; put back even if it
                // panics (unless it registered another).
                let taken = self.inner.on_health.borrow_mut().take();
                if let Some(callback) = taken {
                    let on_health = &self.inner.on_health;
                    let mut guard = PutBack::new(callback, |callback| {
                        if let Ok(mut slot) = on_health.try_borrow_mut() {
                            slot.get_or_insert(callback);
                        }
                    });
                    guard.callback()(healthy, &endpoint);
                }
            }
            Event::Stream(key, item) => {
                // A final item for a callback that is out running (it closed the client)
                // waits for it to come back, then goes to it.
                let item = match item.is_final() {
                    true => match self.with_core(|c| c.defer_final(key, item)) {
                        None => return,
                        Some(item) => item,
                    },
                    false => item,
                };
                self.run_stream_callback(key, item);
                if let Some(item) = self.with_core(|c| c.take_deferred(key)) {
                    self.run_stream_callback(key, item);
                }
            }
        }
    }

    /// Take, call, put back: the core is borrowed only to take and to restore. The callback
    /// is put back even if it panics, so that a loop that catches the panic still hears from
    /// the stream (and the stream still ends after its final delivery). A callback that is
    /// not put back is dropped only after the borrow is released: what it captured may run
    /// code (a `Drop`) that uses the client.
    fn run_stream_callback(&self, key: StreamKey, item: StreamItem) {
        let last = item.is_final();
        let Some(callback) = self.with_core(|c| c.take_callback(key)) else { return };
        let driver = &self.inner.core;
        let mut guard = PutBack::new(callback, |callback| {
            // No borrow is held while a callback runs, panicking or not.
            if let Ok(mut driver) = driver.try_borrow_mut() {
                let leftover = driver.core.restore_callback(key, callback, last);
                drop(driver);
                drop(leftover);
            }
        });
        guard.callback().call(item);
    }

    /// A handle that does not keep the client alive (for stream handles).
    pub(crate) fn weak(&self) -> Weak<Inner> {
        Rc::downgrade(&self.inner)
    }

    /// Whether `other` is the same view of the same client (options and namespace too).
    pub(crate) fn same_view(&self, other: &Client) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
            && same_rc(&self.opts, &other.opts)
            && same_rc(&self.ns, &other.ns)
    }

    /// The client behind a handle's weak reference, if it still exists.
    pub(crate) fn upgrade(inner: &Weak<Inner>) -> Option<Client> {
        inner.upgrade().map(|inner| Client { inner, opts: None, ns: None })
    }

    /// Cancels stream `key`; `callback` gets `Ok(())` on the next turn. The stream's
    /// callback is dropped once no borrow is held.
    pub(crate) fn cancel_stream(
        &self,
        key: StreamKey,
        callback: impl FnOnce(Result<(), EtcdError>) + 'static,
    ) {
        let dropped = self.with_core(|c| {
            let dropped = c.cancel_stream(key);
            c.defer(Box::new(move || callback(Ok(()))));
            dropped
        });
        drop(dropped); // outside the borrow: what it captured may use the client
    }

    /// Shared state of the client (flags the operations in `ops/` keep).
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The shared state itself, to keep or compare.
    pub(crate) fn inner_rc(&self) -> Rc<Inner> {
        self.inner.clone()
    }

    /// The core, for the operations in `ops/` that are not plain unary calls. A member
    /// view given work joins its host's loop first.
    pub(crate) fn with_core<T>(&self, f: impl FnOnce(&mut Core) -> T) -> T {
        if self.inner.host.is_some() && !self.inner.attached.get() {
            self.attach();
        }
        f(&mut self.inner.core.borrow_mut().core)
    }

    /// Runs `work` on a turn `delay` from now (the recipes' backoffs) with [`Fired::Due`], or
    /// with [`Fired::Closed`] from `close()` if that comes first; until then the client is not
    /// idle, so `run()` keeps turning. Returns the key for [`disarm`](Self::disarm).
    pub(crate) fn after(&self, delay: Duration, work: impl FnOnce(Fired) + 'static) -> u64 {
        self.with_core(|c| c.alarm(delay, Box::new(work)))
    }

    /// Disarms an alarm of [`after`](Self::after): its work is dropped uncalled (after the
    /// core's borrow ends: it may own handles whose `Drop` calls back into the client).
    pub(crate) fn disarm(&self, key: u64) {
        let work = self.with_core(|c| c.disarm(key));
        drop(work);
    }

    /// Appends the work other threads posted (see `remote.rs`) to this turn's callbacks.
    fn take_remote_jobs(&self, batch: &mut Vec<Event>) {
        let freed = {
            let mut remote = self.inner.remote.borrow_mut();
            let Some(host) = remote.as_mut() else { return };
            // A job taken now but run after a `close()` in this same batch is cancelled, as
            // it would have been had it still been queued.
            let closes = self.inner.closes.get();
            for (target, live, job) in host.mailbox.take() {
                let client = match host.target(target) {
                    Some(Target::View(opts, ns)) => {
                        Client { inner: self.inner.clone(), opts: opts.clone(), ns: ns.clone() }
                    }
                    Some(Target::Member(view)) => view.clone(),
                    None => self.clone(), // never: a queued job keeps its target
                };
                live.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                batch.push(Event::Local(Box::new(move || {
                    let open = client.inner.closes.get() == closes;
                    job(open.then_some(&client))
                })));
            }
            host.prune()
        };
        drop(freed); // member views no remote names any more, outside the borrow
    }

    /// Keeps the handle of watch `id`, started through a remote, for its `RemoteWatch`.
    pub(crate) fn keep_remote_watch(&self, id: u64, watch: Watch) {
        let host = self.host().unwrap_or_else(|| self.clone());
        let mut remote = host.inner.remote.borrow_mut();
        if let Some(r) = remote.as_mut() {
            r.watches.insert(id, watch);
        }
    }

    /// The handle of watch `id`, started through a remote, forgotten (cancelled or ended).
    pub(crate) fn forget_remote_watch(&self, id: u64) -> Option<Watch> {
        let host = self.host().unwrap_or_else(|| self.clone());
        let watch = host.inner.remote.borrow_mut().as_mut()?.watches.remove(&id);
        watch
    }

    /// Starts unary call `R` with `request`; `callback` gets the decoded response.
    pub(crate) fn call<R: Rpc>(
        &self,
        operation: &'static str,
        request: &R::Request,
        callback: impl FnOnce(Result<R::Response, EtcdError>) + 'static,
    ) where
        R::Response: 'static,
    {
        self.start::<R>(operation, request, true, callback);
    }

    /// A view of this client whose unary calls (every operation that takes a callback of
    /// one result: get, put, txn, lease grant, lock, status, …) use `opts`: their own
    /// deadline, a cancel token, retries for writes. It shares the connection, the loop and
    /// the streams of this client; `run`, `close` and the stream operations are the same.
    /// Streams (watch, keepalive, observe, snapshot) ignore the options. A namespaced view
    /// stays in its namespace.
    pub fn with(&self, opts: CallOptions) -> Client {
        Client { inner: self.inner.clone(), opts: Some(Rc::new(opts)), ns: self.ns.clone() }
    }

    /// A handle for other threads: [`Remote`] is `Send + Sync + Clone`; its work and its
    /// operations' callbacks run on this client's loop thread, on the next turn after they
    /// are posted (posting wakes the loop through the client's fd). Remotes of a view
    /// (`with`, `namespaced`, `member`) work through that view. See [`Remote`] for what
    /// happens on `close()` and once the client is gone.
    pub fn remote(&self) -> Remote {
        // A member view posts through its client's mailbox; one whose client is gone drives
        // itself, so it keeps its own.
        let (host, target) = match self.host() {
            Some(host) => (host, Target::Member(self.clone())),
            None => {
                let own = Client { inner: self.inner.clone(), opts: None, ns: None };
                (own, Target::View(self.opts.clone(), self.ns.clone()))
            }
        };
        let (remote, freed) = {
            let mut slot = host.inner.remote.borrow_mut();
            let r = slot
                .get_or_insert_with(|| RemoteHost::new(host.inner.core.borrow().reactor.waker()));
            let freed = r.prune(); // targets no remote names any more
            (r.remote(target), freed)
        };
        drop(freed); // outside the borrow (a member view's `Drop` uses its client)
        remote
    }

    /// A view of this client whose every key lives under `prefix`, as through Go's
    /// `namespace.NewKV`, `NewWatcher` and `NewLease`: keys sent get the prefix, keys
    /// received lose it, and a range never leaves it. A key written as `k` through
    /// `client.namespaced("app/")` is the key `app/k` to every other client (Go's included),
    /// and Go's `namespace.NewKV(kv, "app/")` reads it as `k`.
    ///
    /// - KV: `get`, `put`, `delete`, `get_paged` and `txn` (compares, operations, nested
    ///   transactions; their results at every depth). Range ends follow Go's
    ///   `prefixInterval`: a from-key read (or a prefix with no end of its own) ends where
    ///   the namespace does; a prefix read of `""` is the whole namespace.
    /// - `watch`: its range under the prefix; each event's key and previous key without it,
    ///   also after the watch re-opens on a new connection.
    /// - `lease_time_to_live` with keys: only the lease's keys in the namespace, stripped.
    /// - `lock` (the name; the returned key, which `unlock` takes back), and the election
    ///   calls (the name, the leader key both ways, the leader and observed values).
    ///   So the recipes of [`concurrency`](crate::concurrency) work in a namespace too.
    ///
    /// An empty key fails with `INVALID_ARGUMENT` ("etcdserver: key is not provided", as
    /// etcd refuses it without a namespace, where here it would name the prefix itself),
    /// unless the request is a prefix or from-key one; so does a `txn` with such an
    /// operation anywhere in it, and an `unlock` of `""`. A watch of `""` is allowed, as in
    /// Go (it watches the key that is the prefix).
    ///
    /// The view shares everything else with this client: connection, loop (`run`, `close`),
    /// handles, call options (`with` on either side keeps the other). Views nest:
    /// `namespaced("a/").namespaced("b/")` is `namespaced("a/b/")`. Every other call is as
    /// on the client: leases (but for the keys above), cluster, maintenance (`compact` and
    /// `snapshot` cover the whole keyspace), and auth (role permissions take raw keys).
    pub fn namespaced(&self, prefix: impl Into<Bytes>) -> Client {
        let prefix = prefix.into();
        let ns = match &self.ns {
            Some(outer) => outer.nest(&prefix),
            None => Namespace::new(prefix),
        };
        Client { inner: self.inner.clone(), opts: self.opts.clone(), ns: Some(Rc::new(ns)) }
    }

    /// Starts unary call `R`, with the configured deadline when `timed` (else none) unless
    /// this view sets one; its key, unless it failed at once.
    pub(crate) fn start<R: Rpc>(
        &self,
        operation: &'static str,
        request: &R::Request,
        timed: bool,
        callback: impl FnOnce(Result<R::Response, EtcdError>) + 'static,
    ) -> Option<CallKey>
    where
        R::Response: 'static,
    {
        const { assert!(matches!(R::KIND, RpcKind::Unary), "Client::call is for unary RPCs") };
        let body = codec::encode(request);
        let done = Box::new(move |res: Result<Bytes, EtcdError>| {
            callback(res.and_then(|bytes| decode::<R::Response>(bytes, operation)));
        });
        let opts = self.opts.as_deref();
        let deadline = match (opts.and_then(CallOptions::deadline), timed) {
            (Some(d), _) => Deadline::After(d),
            (None, true) => Deadline::Default,
            (None, false) => Deadline::None,
        };
        let retryable = is_read_only(R::PATH) || opts.is_some_and(CallOptions::retries_writes);
        let options = UnaryOptions { deadline, retryable };
        let now = Instant::now();
        let key = self.with_core(|c| c.start_unary(R::PATH, body, operation, done, now, options));
        if let (Some(key), Some(cancel)) = (key, opts.and_then(CallOptions::canceller)) {
            cancel.track(self, key);
        }
        key
    }

    /// Replaces the endpoints (Go's `SetEndpoints`), parsed as
    /// [`Config::endpoints`](crate::Config::endpoints) parses them. The link in use carries
    /// on if its endpoint is still listed; otherwise its calls with a deadline finish there
    /// and the next connection goes to the first new endpoint. Fails with
    /// `INVALID_ARGUMENT` (and changes nothing) for an empty list or a bad endpoint.
    pub fn set_endpoints<S: AsRef<str>>(
        &self,
        endpoints: impl IntoIterator<Item = S>,
    ) -> Result<(), EtcdError> {
        if let Some(host) = self.host() {
            return host.set_endpoints(endpoints);
        }
        let default_tls = self.inner.default_tls;
        let parsed = endpoints
            .into_iter()
            .map(|e| crate::endpoint::endpoint(e.as_ref(), default_tls, "set_endpoints"))
            .collect::<Result<Vec<_>, _>>()?;
        if parsed.is_empty() {
            return Err(EtcdError::invalid("no endpoints given", "set_endpoints"));
        }
        self.with_core(|c| c.set_endpoints(parsed));
        Ok(())
    }

    /// Whether call `key` is still pending.
    pub(crate) fn is_pending(&self, key: CallKey) -> bool {
        self.with_core(|c| c.is_pending(key))
    }

    /// Reports `err` to `callback` on the next turn: a bad argument never calls back from
    /// inside the operation that received it.
    pub(crate) fn fail<T: 'static>(
        &self,
        err: EtcdError,
        callback: impl FnOnce(Result<T, EtcdError>) + 'static,
    ) {
        self.with_core(|c| c.defer(Box::new(move || callback(Err(err)))));
    }

    /// Abandons pending call `key` (see `Pending::cancel`).
    pub(crate) fn cancel_call(&self, key: CallKey) {
        self.with_core(|c| c.cancel_call(key));
    }
}

/// Hands a callback taken out of its slot back to `put_back` when dropped: after it ran, and
/// also when it panicked.
struct PutBack<C, F: FnOnce(C)> {
    callback: Option<C>,
    put_back: Option<F>,
}

impl<C, F: FnOnce(C)> PutBack<C, F> {
    fn new(callback: C, put_back: F) -> Self {
        PutBack { callback: Some(callback), put_back: Some(put_back) }
    }

    fn callback(&mut self) -> &mut C {
        self.callback.as_mut().expect("taken only on drop")
    }
}

impl<C, F: FnOnce(C)> Drop for PutBack<C, F> {
    fn drop(&mut self) {
        if let (Some(callback), Some(put_back)) = (self.callback.take(), self.put_back.take()) {
            put_back(callback);
        }
    }
}

/// Runs a batch of callbacks. If one panics, the guard's drop clears the in-callback flag
/// and puts the callbacks that did not run back at the front of the queue; the one that
/// panicked, if it was a stream's or the health callback, was put back in its slot (see
/// [`PutBack`]). So a loop that catches the panic loses nothing but that one delivery.
struct Delivery<'a> {
    inner: &'a Inner,
    rest: std::vec::IntoIter<Event>,
    /// The flag as it was: `close()` from inside a callback nests a delivery, and must not
    /// clear the outer one's flag.
    was_in_callbacks: bool,
}

impl<'a> Delivery<'a> {
    fn new(inner: &'a Inner, batch: Vec<Event>) -> Self {
        let was_in_callbacks = inner.in_callbacks.replace(true);
        Delivery { inner, rest: batch.into_iter(), was_in_callbacks }
    }
}

impl Drop for Delivery<'_> {
    fn drop(&mut self) {
        self.inner.in_callbacks.set(self.was_in_callbacks);
        let rest: Vec<Event> = self.rest.by_ref().collect();
        if !rest.is_empty() {
            if let Ok(mut driver) = self.inner.core.try_borrow_mut() {
                driver.core.requeue(rest);
            }
        }
    }
}

/// Whether the RPC at `path` only reads, so that it is safe to send again after it was
/// processed (Go's clientv3 retries the same ones).
fn is_read_only(path: &str) -> bool {
    matches!(
        path,
        "/etcdserverpb.KV/Range"
            | "/etcdserverpb.Lease/LeaseTimeToLive"
            | "/etcdserverpb.Lease/LeaseLeases"
            | "/etcdserverpb.Maintenance/Status"
            | "/etcdserverpb.Maintenance/Hash"
            | "/etcdserverpb.Maintenance/HashKV"
            | "/etcdserverpb.Cluster/MemberList"
            | "/etcdserverpb.Auth/AuthStatus"
            | "/etcdserverpb.Auth/UserGet"
            | "/etcdserverpb.Auth/UserList"
            | "/etcdserverpb.Auth/RoleGet"
            | "/etcdserverpb.Auth/RoleList"
            | "/v3electionpb.Election/Leader"
    )
}

/// Decodes a response message, mapping a malformed one to `INTERNAL`.
fn decode<M: prost::Message + Default>(
    bytes: Bytes,
    operation: &'static str,
) -> Result<M, EtcdError> {
    M::decode(bytes).map_err(|e| {
        EtcdError::new(Code::Internal, format!("cannot decode response: {e}"), operation)
    })
}

impl AsRawFd for Client {
    /// The client's epoll fd, for a foreign loop: readable when the connection has news. See
    /// [`next_timeout`](Client::next_timeout) for work that needs no readiness.
    fn as_raw_fd(&self) -> RawFd {
        if let Some(host) = self.host() {
            return host.as_raw_fd();
        }
        self.inner.core.borrow().reactor.as_raw_fd()
    }
}
