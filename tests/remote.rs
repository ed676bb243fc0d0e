//! `Client::remote()` against a real etcd: other threads post work and operations whose
//! `Send` callbacks run on the loop's thread, exactly once each; posting wakes a foreign
//! loop blocked on the client's fd; work queued at `close()` or when the client is dropped
//! gets `CANCELLED`; a post after the client is gone fails and drops its callback uncalled.

mod support;

use evetcd::{Client, Code, GetOptions, PutOptions, Remote, Txn, TxnOp, WatchOptions};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};
use support::client::{client, ok};
use support::Etcd;

#[test]
fn remote_is_send_sync_and_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Remote>();
    check::<evetcd::RemoteWatch>();
}

/// Runs `client` in a loop on this thread until `done`, with a 30 s limit.
fn run_until(client: &Client, done: impl Fn() -> bool) {
    let limit = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < limit, "timed out");
        let wait = client.next_timeout().unwrap_or(Duration::from_millis(100));
        poll_fd(client, wait.min(Duration::from_millis(100)));
        client.process();
    }
}

/// poll(2) on the client's fd for at most `wait`; whether it became readable.
fn poll_fd(client: &Client, wait: Duration) -> bool {
    let mut pfd = libc::pollfd { fd: client.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as i32) > 0 }
}

#[test]
fn ten_thousand_operations_from_four_threads_each_call_back_exactly_once_on_the_loop_thread() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 2_500;
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let prefix = support::unique_prefix("remote");
    let loop_thread = thread::current().id();
    let calls: Arc<Vec<AtomicUsize>> =
        Arc::new((0..THREADS * PER_THREAD).map(|_| AtomicUsize::new(0)).collect());
    let wrong_thread = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for t in 0..THREADS {
        let remote = c.remote();
        let (calls, wrong_thread, failed, prefix) =
            (calls.clone(), wrong_thread.clone(), failed.clone(), prefix.clone());
        workers.push(thread::spawn(move || {
            for i in 0..PER_THREAD {
                let n = t * PER_THREAD + i;
                let (calls, wrong_thread, failed) =
                    (calls.clone(), wrong_thread.clone(), failed.clone());
                let seen = move |ok: Result<(), String>| {
                    calls[n].fetch_add(1, Ordering::SeqCst);
                    if thread::current().id() != loop_thread {
                        wrong_thread.fetch_add(1, Ordering::SeqCst);
                    }
                    if let Err(e) = ok {
                        failed.lock().unwrap().push(format!("{n}: {e}"));
                    }
                };
                let key = format!("{prefix}{t}/{}", i % 50);
                let posted = match i % 4 {
                    0 => remote.put(key, format!("v{n}"), PutOptions::new(), move |r| {
                        seen(r.map(drop).map_err(|e| e.to_string()))
                    }),
                    1 => remote.get(key, GetOptions::new(), move |r| {
                        seen(r.map(drop).map_err(|e| e.to_string()))
                    }),
                    2 => {
                        let txn = Txn::new().and_then([TxnOp::put(key, "t", PutOptions::new())]);
                        remote.txn(txn, move |r| seen(r.map(drop).map_err(|e| e.to_string())))
                    }
                    _ => remote.post(move |client| {
                        // A closure on the loop's thread may use the client directly.
                        client.get(key, GetOptions::new().count_only(true), move |r| {
                            seen(r.map(drop).map_err(|e| e.to_string()))
                        })
                    }),
                };
                posted.expect("the client is alive");
            }
            // The worker's Remote is dropped here: once all are, run() may return.
        }));
    }
    // Plain run(): it keeps turning while a Remote exists or work is pending, and returns
    // once every worker dropped its Remote and every call answered.
    c.run();
    for w in workers {
        w.join().expect("worker");
    }
    assert!(failed.lock().unwrap().is_empty(), "failed: {:?}", &failed.lock().unwrap()[..5]);
    let counts: Vec<usize> = calls.iter().map(|n| n.load(Ordering::SeqCst)).collect();
    let wrong: Vec<usize> = (0..counts.len()).filter(|&i| counts[i] != 1).collect();
    assert!(
        wrong.is_empty(),
        "{} callbacks ran other than once, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(wrong_thread.load(Ordering::SeqCst), 0, "a callback ran off the loop's thread");
    assert!(c.is_idle());
}

#[test]
fn posting_wakes_a_foreign_loop_blocked_on_the_clients_fd() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let remote = c.remote();
    assert_eq!(c.next_timeout(), None, "nothing pending: a foreign loop would block");
    let ran: Arc<Mutex<Option<ThreadId>>> = Arc::default();
    let r = ran.clone();
    let poster = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200)); // the loop is blocked by then
        remote.post(move |_| *r.lock().unwrap() = Some(thread::current().id())).unwrap();
    });
    let start = Instant::now();
    assert!(poll_fd(&c, Duration::from_secs(10)), "the post made the fd readable");
    assert!(start.elapsed() < Duration::from_secs(5));
    c.process();
    assert_eq!(*ran.lock().unwrap(), Some(thread::current().id()), "ran on the loop's thread");
    poster.join().unwrap();
}

#[test]
fn work_queued_when_the_client_closes_gets_cancelled_once_on_the_loop_thread() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let remote = c.remote();
    let (tx, rx) = mpsc::channel();
    let posted_ran = Arc::new(AtomicUsize::new(0));
    let p = posted_ran.clone();
    thread::spawn(move || {
        for i in 0..3 {
            let tx = tx.clone();
            remote
                .get(format!("k{i}"), GetOptions::new(), move |r| {
                    tx.send((r.map(drop).map_err(|e| e.code()), thread::current().id())).unwrap()
                })
                .unwrap();
        }
        remote.post(move |_| _ = p.fetch_add(1, Ordering::SeqCst)).unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(c.next_timeout(), Some(Duration::ZERO), "queued work is due at once");
    c.close(); // before any turn took the work
    let got: Vec<_> = rx.try_iter().collect();
    assert_eq!(got.len(), 3, "each callback once, during close()");
    for (res, thread) in got {
        assert_eq!(res, Err(Code::Cancelled));
        assert_eq!(thread, thread::current().id());
    }
    assert_eq!(posted_ran.load(Ordering::SeqCst), 0, "a posted closure is dropped uncalled");
    // The client stays usable: work posted after the close runs.
    let remote = c.remote();
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    remote
        .put("after-close", "v", PutOptions::new(), move |r| {
            assert!(r.is_ok(), "{r:?}");
            d.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    run_until(&c, || done.load(Ordering::SeqCst) == 1);
    drop(remote);
}

/// Counts its drops, to tell a callback dropped uncalled from one leaked.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn jobs_queued_when_the_client_is_dropped_are_cancelled_and_later_posts_fail() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let remote = c.remote();
    let (tx, rx) = mpsc::channel();
    remote
        .get("k", GetOptions::new(), move |r| tx.send(r.map(drop).map_err(|e| e.code())).unwrap())
        .unwrap();
    drop(c);
    assert_eq!(rx.try_recv(), Ok(Err(Code::Cancelled)), "cancelled when the client went");

    let (drops, called) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (guard, cl) = (DropCount(drops.clone()), called.clone());
    let err = remote
        .put("k", "v", PutOptions::new(), move |_| {
            let _keep = &guard;
            cl.fetch_add(1, Ordering::SeqCst);
        })
        .expect_err("the client is gone");
    assert_eq!(err.code(), Code::Cancelled);
    assert_eq!(
        (called.load(Ordering::SeqCst), drops.load(Ordering::SeqCst)),
        (0, 1),
        "dropped uncalled, not leaked"
    );
    let guard = DropCount(drops.clone());
    assert!(remote.post(move |_| drop(guard)).is_err());
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    assert!(remote.watch("k", WatchOptions::new(), |_| ()).is_err());
}

#[test]
fn run_returns_once_the_last_remote_is_dropped_from_another_thread() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let remote = c.remote();
    let second = remote.clone();
    drop(remote);
    let dropper = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        drop(second);
    });
    let start = Instant::now();
    c.run(); // blocks: a Remote may still post
    assert!(start.elapsed() >= Duration::from_millis(150), "run() waited for the remote");
    assert!(c.is_idle());
    dropper.join().unwrap();
}

#[test]
fn a_remote_of_a_namespaced_view_works_in_its_namespace_and_watches_cancel_from_any_thread() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let prefix = support::unique_prefix("remote_ns");
    let view = c.namespaced(prefix.clone());
    let remote = view.remote();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (e, (tx, rx)) = (events.clone(), mpsc::channel());
    // From the next revision: the put below may reach etcd before the watch's create.
    // `ok` runs a client until idle, which `c` is not while a Remote lives: a second client.
    let checker = client(&etcd.endpoint());
    let rev = ok(&checker, |cb| checker.get("any", GetOptions::new(), cb)).header.unwrap().revision;
    let watch = remote
        .watch("k", WatchOptions::new().start_revision(rev + 1), move |r| {
            for ev in r.expect("watch").events {
                e.lock().unwrap().push(String::from_utf8_lossy(&ev.kv.unwrap().key).into_owned());
            }
        })
        .unwrap();
    let r2 = remote.clone();
    thread::spawn(move || {
        r2.put("k", "v", PutOptions::new(), move |r| tx.send(r.is_ok()).unwrap()).unwrap();
    })
    .join()
    .unwrap();
    // The event and the put's answer may come in either order.
    let put_ok = Mutex::new(None);
    run_until(&c, || {
        if let Ok(ok) = rx.try_recv() {
            *put_ok.lock().unwrap() = Some(ok);
        }
        !events.lock().unwrap().is_empty() && put_ok.lock().unwrap().is_some()
    });
    assert_eq!(*put_ok.lock().unwrap(), Some(true));
    assert_eq!(*events.lock().unwrap(), ["k"], "the key as seen in the namespace");
    let got = ok(&checker, |cb| checker.get(format!("{prefix}k"), GetOptions::new(), cb));
    assert_eq!(got.kvs.len(), 1, "written under the prefix");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || watch.cancel(move |r| tx.send(r.is_ok()).unwrap()).unwrap())
        .join()
        .unwrap();
    drop(remote);
    run_until(&c, || rx.try_recv().map(|ok| assert!(ok)).is_ok());
    c.run(); // the watch is gone and no Remote is left: returns
    assert!(c.is_idle());
}
