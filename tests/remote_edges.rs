//! Edges of `Client::remote()` and the futures adapter found in review: a member view's
//! remote keeps its namespace, dropped member remotes free their view, an orphaned member
//! view's remote fails once the view is gone, jobs taken in the turn that closes the client
//! are cancelled, and a dropped lock future wakes the driver to send its cancel. Run the last
//! with `--features futures`.

mod support;

use evetcd::{Client, Code, Config, GetOptions, PutOptions};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use support::client::{client, ok};
use support::Etcd;

/// poll(2) on the client's fd for at most `wait`; whether it became readable.
fn poll_fd(client: &Client, wait: Duration) -> bool {
    let mut pfd = libc::pollfd { fd: client.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as i32) > 0 }
}

/// Runs `client` as a foreign loop on this thread until `done`, with a 20 s limit.
fn run_until(client: &Client, done: impl Fn() -> bool) {
    let limit = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < limit, "timed out");
        let wait = client.next_timeout().unwrap_or(Duration::from_millis(100));
        poll_fd(client, wait.min(Duration::from_millis(100)));
        client.process();
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// Remotes of two views of one member view (plain and namespaced) share one target
/// (`Target::same` compares only the member's `Inner`), so the namespaced remote writes
/// outside its namespace.
#[test]
fn member_namespaced_remote_keeps_its_namespace() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let checker = client(&etcd.endpoint());
    let prefix = support::unique_prefix("review_member_ns");
    let member = c.member(&etcd.endpoint()).expect("member view");
    let plain = member.remote();
    let namespaced = member.namespaced(prefix.clone()).remote();
    let key = format!("{prefix}-k");
    let (tx, rx) = mpsc::channel();
    namespaced
        .put(key.clone(), "v", PutOptions::new(), move |r| tx.send(r.is_ok()).unwrap())
        .unwrap();
    let got = std::cell::Cell::new(None);
    run_until(&c, || {
        if let Ok(v) = rx.try_recv() {
            got.set(Some(v));
        }
        got.get().is_some()
    });
    assert_eq!(got.get(), Some(true));
    drop((plain, namespaced));
    let under = ok(&checker, |cb| checker.get(format!("{prefix}{key}"), GetOptions::new(), cb));
    let bare = ok(&checker, |cb| checker.get(key.clone(), GetOptions::new(), cb));
    assert_eq!(
        (under.kvs.len(), bare.kvs.len()),
        (1, 0),
        "the namespaced member view's remote wrote {key:?} outside its namespace"
    );
}

/// Every `member(ep).remote()` stores the member view in the host's `targets` for good
/// (never pruned, even once the `Remote` is dropped): each leaks the view's reactor (an
/// epoll fd and an eventfd) until the client itself goes.
#[test]
fn member_remote_does_not_leak_the_member_view() {
    let c = Client::new(Config::new().endpoints(["127.0.0.1:1"])).unwrap();
    let before = open_fds();
    for _ in 0..200 {
        let member = c.member("127.0.0.1:2").unwrap();
        drop(member.remote());
        drop(member);
    }
    let after = open_fds();
    assert!(
        after < before + 100,
        "200 dropped member remotes left {} more fds open ({before} -> {after})",
        after.saturating_sub(before)
    );
}

/// A member view whose host is gone drives itself; its `remote()` then stores the view in
/// its own `RemoteHost` (`Target::Member(self.clone())`): an `Rc` cycle, so once the user
/// drops the view its `Inner` never goes, posts keep succeeding and their work is never run
/// nor cancelled.
#[test]
fn remote_of_orphan_member_view_fails_once_the_view_is_gone() {
    let c = Client::new(Config::new().endpoints(["127.0.0.1:1"])).unwrap();
    let member = c.member("127.0.0.1:2").unwrap();
    drop(c);
    let remote = member.remote();
    drop(member);
    let called = Arc::new(AtomicUsize::new(0));
    let cl = called.clone();
    let posted = remote.get("k", GetOptions::new(), move |_| _ = cl.fetch_add(1, Ordering::SeqCst));
    assert!(
        posted.is_err() || called.load(Ordering::SeqCst) == 1,
        "every handle on the view is gone, yet the post was accepted and its callback never runs"
    );
}

/// `close()` called by posted work (or any callback) in a turn that also took other jobs:
/// those jobs, queued before the close, then run against the closed client (which connects
/// again) instead of getting `CANCELLED` as the `Remote` docs promise.
#[test]
fn jobs_posted_before_close_in_same_turn_are_cancelled() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let checker = client(&etcd.endpoint());
    let key = support::unique_prefix("review_close_batch");
    let remote = c.remote();
    remote.post(|client| client.close()).unwrap();
    let (tx, rx) = mpsc::channel();
    remote
        .put(key.clone(), "v", PutOptions::new(), move |r| {
            tx.send(r.map(drop).map_err(|e| e.code())).unwrap()
        })
        .unwrap();
    drop(remote);
    let got = std::cell::Cell::new(None);
    run_until(&c, || {
        if let Ok(v) = rx.try_recv() {
            got.set(Some(v));
        }
        got.get().is_some()
    });
    let written = ok(&checker, |cb| checker.get(key.clone(), GetOptions::new(), cb)).kvs.len();
    assert_eq!(
        (got.get(), written),
        (Some(Err(Code::Cancelled)), 0),
        "a put queued before close() ran after it"
    );
}

#[cfg(feature = "futures")]
mod futures {
    use super::*;
    use evetcd::LeaseGrantOptions;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    /// Dropping a `lock` future abandons the call (module docs), but nothing wakes a driver
    /// asleep on the client's fd: the cancel is never sent while the lock waits, so the
    /// server later grants the lock to nobody (held until the lease expires).
    #[test]
    fn dropped_lock_future_wakes_the_driver_to_send_the_cancel() {
        let etcd = Etcd::start();
        let holder = client(&etcd.endpoint());
        let b = client(&etcd.endpoint());
        let name = support::unique_prefix("review_lock_drop");
        let la = ok(&holder, |cb| holder.lease_grant(60, LeaseGrantOptions::new(), cb)).id;
        let lb = ok(&holder, |cb| holder.lease_grant(60, LeaseGrantOptions::new(), cb)).id;
        let held = ok(&holder, |cb| {
            holder.lock(name.clone(), la, cb);
        });
        let mut fut = b.asynchronous().lock(name.clone(), lb);
        // Drive `b` as a foreign loop would until the waiter's key is on the server.
        let limit = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < limit, "the lock request never reached etcd");
            let t = b.next_timeout().unwrap_or(Duration::from_millis(50));
            poll_fd(&b, t.min(Duration::from_millis(50)));
            b.process();
            let n = Pin::new(&mut fut).poll(&mut Context::from_waker(Waker::noop()));
            assert!(matches!(n, Poll::Pending));
            let keys = ok(&holder, |cb| {
                holder.get(name.clone(), GetOptions::new().prefix(true).count_only(true), cb)
            });
            if keys.count == 2 {
                break;
            }
        }
        // A foreign driver (the tokio example's) now sleeps until the fd is readable or the
        // timeout it read before the task dropped the future: it re-reads `next_timeout()`
        // only after its next `process()`.
        let stale = b.next_timeout();
        let forever = Duration::from_secs(3600);
        let mut deadline = Instant::now() + stale.unwrap_or(forever);
        drop(fut); // from a task: not inside a callback
        let after_drop = b.next_timeout();
        let woken = poll_fd(&b, Duration::from_millis(300));
        if woken {
            b.process();
            deadline = Instant::now() + b.next_timeout().unwrap_or(forever);
        }
        // The cancel reaches etcd, which then deletes the waiter's key (asynchronously: the
        // holder unlocking before that would race it, and etcd may grant the lock to the
        // cancelled call). Without the wake-up the cancel is never sent and the key stays.
        let end = Instant::now() + Duration::from_secs(5);
        let mut waiter_gone = false;
        while Instant::now() < end && !waiter_gone {
            let slice = Duration::from_millis(50);
            let wait = deadline.saturating_duration_since(Instant::now()).min(slice);
            if poll_fd(&b, wait) || Instant::now() >= deadline {
                b.process();
                deadline = Instant::now() + b.next_timeout().unwrap_or(forever);
            }
            let keys = ok(&holder, |cb| {
                holder.get(name.clone(), GetOptions::new().prefix(true).count_only(true), cb)
            });
            waiter_gone = keys.count == 1;
        }
        // Then the holder unlocks: nobody is waiting, so nobody holds the lock after.
        ok(&holder, |cb| holder.unlock(held.key.clone(), cb));
        let keys = ok(&holder, |cb| holder.get(name.clone(), GetOptions::new().prefix(true), cb));
        assert_eq!(
            keys.kvs.len(),
            0,
            "driver asleep on {stale:?}, fd woken by the drop: {woken} (next_timeout() after \
             the drop: {after_drop:?}): the lock abandoned by dropping its future was granted \
             anyway and is held"
        );
    }
}
