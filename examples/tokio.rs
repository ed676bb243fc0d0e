//! evetcd's futures adapter on tokio: one current-thread runtime, a local task that drives
//! the client (its fd through `AsyncFd`, a sleep until `next_timeout()`, then `process()`),
//! and plain async code on top — put, get, a txn, a lease, and a watch read as a `Stream`
//! while another task writes.
//!
//! `cargo run --example tokio --features futures -- [ENDPOINT]` (default `127.0.0.1:2379`).

use evetcd::future::AsyncClient;
use evetcd::{
    Client, Compare, CompareOp, Config, DeleteOptions, EtcdError, EventType, GetOptions,
    LeaseGrantOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use futures_core::Stream;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;
use tokio::task::LocalSet;

const PREFIX: &str = "tokio-example/";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let endpoint = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:2379".into());
    println!("evetcd on tokio against {endpoint}");
    let client = Client::new(Config::new().endpoints([endpoint])).expect("config");
    // The client and its futures are not Send: everything runs on this thread's LocalSet.
    let local = LocalSet::new();
    let result = local
        .run_until(async {
            let stop = Rc::new(Notify::new());
            let driver = tokio::task::spawn_local(drive(client.clone(), stop.clone()));
            let result = tour(client.asynchronous()).await;
            // Closing ends whatever is still pending; then the driver is told to return.
            client.close();
            stop.notify_one();
            match driver.await {
                Ok(Ok(())) => println!("client closed, driver ended"),
                Ok(Err(e)) => eprintln!("driver failed: {e}"),
                Err(e) => eprintln!("driver panicked: {e}"),
            }
            result
        })
        .await;
    if let Err(e) = result {
        eprintln!("failed: {e} (is etcd running at that endpoint?)");
        std::process::exit(1);
    }
}

/// Drives `client` until `stop` is notified: waits until its fd is readable or its next
/// timeout is due, then runs one non-blocking `process()` turn, which runs the callbacks
/// that resolve the futures. Async methods make the fd readable when they start an
/// operation, so the timeout read here is never stale for long.
async fn drive(client: Client, stop: Rc<Notify>) -> std::io::Result<()> {
    // SAFETY: the fd is the client's epoll fd, which lives (and stays the same fd) as long
    // as the client does, and the AsyncFd owns a clone of the client.
    let fd = unsafe { AsyncFd::register_with_interest(client.clone(), Interest::READABLE)? };
    loop {
        let timeout = client.next_timeout();
        tokio::select! {
            biased;
            () = stop.notified() => return Ok(()),
            ready = fd.readable() => ready?.clear_ready(),
            () = sleep_for(timeout) => {}
        }
        client.process();
    }
}

/// Sleeps for `timeout`, or forever for `None` (nothing pending: only the fd can wake us).
async fn sleep_for(timeout: Option<Duration>) {
    match timeout {
        Some(t) => tokio::time::sleep(t).await,
        None => std::future::pending().await,
    }
}

/// The next item of a stream (what `StreamExt::next` of futures-util or tokio-stream does).
async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

async fn tour(etcd: AsyncClient) -> Result<(), EtcdError> {
    let key = format!("{PREFIX}greeting");
    let put = etcd.put(key.clone(), "hello", PutOptions::new()).await?;
    println!("put {key} at revision {}", put.header.map_or(0, |h| h.revision));

    let got = etcd.get(key.clone(), GetOptions::new()).await?;
    let value = got.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
    println!("get {key} = {}", value.as_deref().unwrap_or("(none)"));

    let swap = Txn::new()
        .when([Compare::value(key.clone(), CompareOp::Equal, "hello")])
        .and_then([TxnOp::put(key.clone(), "bonjour", PutOptions::new())]);
    let txn = etcd.txn(swap).await?;
    println!("txn succeeded: {} (hello swapped for bonjour)", txn.succeeded);

    let lease = etcd.lease_grant(30, LeaseGrantOptions::new()).await?;
    println!("lease {:x} granted for {} s", lease.id, lease.ttl);
    etcd.put(format!("{PREFIX}leased"), "x", PutOptions::new().lease(lease.id)).await?;
    let ttl = etcd.lease_time_to_live(lease.id, true).await?;
    println!("lease {:x} holds {} key(s)", ttl.id, ttl.keys.len());

    watch_while_writing(&etcd).await?;

    etcd.lease_revoke(lease.id).await?;
    println!("lease {:x} revoked", lease.id);
    let deleted = etcd.delete(PREFIX, DeleteOptions::new().prefix(true)).await?;
    println!("cleanup: {} key(s) deleted", deleted.deleted);
    Ok(())
}

/// A watch read as a stream while another task writes three keys.
async fn watch_while_writing(etcd: &AsyncClient) -> Result<(), EtcdError> {
    let events = format!("{PREFIX}events/");
    let mut watch = etcd.watch(events.clone(), WatchOptions::new().prefix(true));
    let created = next(&mut watch).await.expect("a watch ends only after an error")?;
    println!("watching {events} from revision {}", created.header.map_or(0, |h| h.revision) + 1);

    let writer = etcd.clone();
    let writes = tokio::task::spawn_local(async move {
        for n in 1..=3 {
            writer.put(format!("{PREFIX}events/{n}"), n.to_string(), PutOptions::new()).await?;
        }
        Ok::<_, EtcdError>(())
    });

    let mut seen = 0;
    while seen < 3 {
        let response = next(&mut watch).await.expect("a watch ends only after an error")?;
        for event in &response.events {
            let kind = match event.r#type() {
                EventType::Put => "PUT",
                EventType::Delete => "DELETE",
            };
            let key = event.kv.as_ref().map(|kv| String::from_utf8_lossy(&kv.key).into_owned());
            println!("watch: {kind} {}", key.unwrap_or_default());
            seen += 1;
        }
    }
    writes.await.expect("the writer task")?;
    println!("writer task done");
    drop(watch); // cancels the watch
    println!("watch cancelled by dropping its stream");
    Ok(())
}
