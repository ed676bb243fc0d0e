//! Member views: [`Client::member`] sends calls to one chosen member over a short-lived
//! second link, as Go's maintenance API does for `Status(ctx, endpoint)` and friends.
//!
//! A member view is a second core and reactor (the link's whole machinery: TLS, auth,
//! deadlines, retries on that one endpoint) driven by its host's loop, the way any foreign
//! loop drives a client: the host's `Poll` watches the view's epoll fd, the host's
//! `next_timeout` includes the view's, and each host turn gives the view one non-blocking
//! turn. So the host's `run`, `process` and `as_raw_fd` cover its views, and a view's own
//! loop calls are its host's.
//!
//! ```text
//!   idle ──work started (with_core)──► attached ──its work done, after a turn──► idle
//!                                       (watched,                 (link closed,
//!                                        turned by the host)       unwatched)
//! ```

use crate::client::{Client, Driver, Inner};
use crate::core::Core;
use crate::error::{Code, EtcdError};
use crate::reactor::Reactor;
use std::rc::Rc;
use std::time::{Duration, Instant};

impl Client {
    /// A view of this client whose calls all go to the member at `endpoint` (parsed as
    /// [`Config::endpoints`](crate::Config::endpoints) parses it), whichever member the
    /// client itself uses: for maintenance aimed at one member (`status`, `defragment`,
    /// `hash_kv`, `alarm`, `snapshot`, `move_leader`, which etcd requires the leader to
    /// receive) and for reads from a chosen member.
    ///
    /// The view opens its own connection when it is given work and closes it once that
    /// work is done, so that a member is not left with a connection nobody uses. It has the
    /// client's settings (TLS, timeouts, retries on that endpoint alone) and the
    /// authentication the client has when the view is made (a later `authenticate` through
    /// either one is its own), and never fails over to another member; the revision-ordering guard
    /// is off, since a member chosen on purpose may be behind. Its loop is the client's: the
    /// client's [`run`](Client::run), [`process`](Client::process) and fd drive it, and the
    /// view's own loop calls (`run`, `close`, `set_endpoints`, …) are the client's. Call
    /// options and the namespace of this view carry over.
    ///
    /// Fails with `INVALID_ARGUMENT` for a bad endpoint.
    pub fn member(&self, endpoint: &str) -> Result<Client, EtcdError> {
        let host = self.host().unwrap_or_else(|| self.clone());
        let inner = host.inner();
        let config = &inner.config;
        let ep = crate::endpoint::endpoint(endpoint, inner.default_tls, "member")?;
        let mut cfg = config.validate().map_err(|e| e.with_operation("member"))?;
        #[cfg(feature = "tls")]
        let connector = {
            // Every configured endpoint too: the server names given for them are checked.
            let mut all = cfg.endpoints.clone();
            all.push(ep.clone());
            config.connector(&all).map_err(|e| e.with_operation("member"))?
        };
        #[cfg(not(feature = "tls"))]
        let connector = None;
        let (token, credentials) = host.with_core(|c| c.auth_state());
        cfg.endpoints = vec![ep];
        cfg.token = token;
        cfg.credentials = credentials;
        cfg.auto_sync = None;
        cfg.health_interval = None;
        cfg.ordering = false;
        let reactor = Reactor::new(connector)
            .map_err(|e| EtcdError::new(Code::Internal, format!("epoll: {e}"), "member"))?;
        let driver = Driver { core: Core::new(cfg, Instant::now()), reactor };
        let view = Inner::new(driver, config.clone(), Some(Rc::downgrade(&host.inner_rc())));
        view.no_range_stream.set(inner.no_range_stream.get());
        Ok(self.view_on(Rc::new(view)))
    }

    /// Joins the host's loop: this view has work.
    pub(crate) fn attach(&self) {
        let Some(host) = self.host() else { return };
        let fd = self.inner().driver().borrow().reactor.as_raw_fd();
        if let Err(e) = host.inner().driver().borrow().reactor.watch(fd) {
            // Only when the OS refuses an epoll_ctl: the view is still turned with every
            // turn of the client, but its answers no longer wake the client's loop.
            tracing::warn!(target: "evetcd", error = %e, "cannot watch a member view's fd");
        }
        host.inner().members.borrow_mut().push(self.inner_rc());
        self.inner().attached.set(true);
    }

    /// Leaves the host's loop: the view's work is done and its link closed. A view given
    /// new work meanwhile (by a callback its close ran) stays.
    fn detach(&self, view: &Client) {
        if !view.inner().driver().borrow().core.is_idle() {
            return;
        }
        let fd = view.inner().driver().borrow().reactor.as_raw_fd();
        self.inner().driver().borrow().reactor.unwatch(fd);
        self.inner().members.borrow_mut().retain(|m| !Rc::ptr_eq(m, &view.inner_rc()));
        view.inner().attached.set(false);
    }

    /// One non-blocking turn of each member view with work, detaching those left idle. A
    /// view's callback that calls `run()` or `process()` returns at once, as from any
    /// callback.
    pub(crate) fn turn_members(&self) {
        let was = self.inner().in_callbacks.replace(true);
        let _restore = Restore(self.inner(), was);
        let views: Vec<Rc<Inner>> = self.inner().members.borrow().clone();
        for view in views {
            let view = Client::from_inner(view, None);
            view.turn_own(Some(Duration::ZERO));
            if view.inner().driver().borrow().core.is_idle() {
                view.close_core("the member view's work is done");
                self.detach(&view);
            }
        }
    }

    /// The earliest time a member view needs a turn (see [`Client::next_timeout`]): now
    /// for one left idle (joined only to cancel a finished call, say), to be detached.
    pub(crate) fn members_next_timeout(&self, now: Instant) -> Option<Duration> {
        let views = self.inner().members.borrow();
        views
            .iter()
            .filter_map(|v| {
                let driver = v.driver().borrow();
                match driver.core.is_idle() {
                    true => Some(Duration::ZERO),
                    false => driver.reactor.next_timeout(&driver.core, now),
                }
            })
            .min()
    }

    /// Ends every member view's work (their callbacks get `CANCELLED`, as the client's: a
    /// `run()` in one returns at once) and closes their links. Each view is closed while
    /// still attached, so that what its callbacks leave (a panic's undelivered rest, new
    /// work) is turned later.
    pub(crate) fn close_members(&self) {
        let was = self.inner().in_callbacks.replace(true);
        let _restore = Restore(self.inner(), was);
        let views: Vec<Rc<Inner>> = self.inner().members.borrow().clone();
        for view in views {
            let view = Client::from_inner(view, None);
            view.close_own();
            self.detach(&view);
        }
    }
}

/// Puts the in-callbacks flag back, also when a callback panicked.
struct Restore<'a>(&'a Inner, bool);

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        self.0.in_callbacks.set(self.1);
    }
}
