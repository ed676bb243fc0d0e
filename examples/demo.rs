//! A tour of evetcd against a running etcd: a watch that sees everything below, writes,
//! reads, a transaction and a cleanup, each step started from the previous step's callback,
//! all on one thread.
//!
//! `cargo run --example demo -- [ENDPOINT]` (default `127.0.0.1:2379`); `scripts/demo`
//! starts a local etcd first when none is running.

use evetcd::{
    Client, Compare, CompareOp, Config, DeleteOptions, EventType, GetOptions, PutOptions, Txn,
    TxnOp, Watch, WatchOptions,
};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

fn main() {
    let endpoint = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:2379".into());
    let client = Client::new(Config::new().endpoints([endpoint.clone()])).expect("config");
    println!("evetcd demo against {endpoint}");
    let started = Instant::now();

    // The watch starts first; once it is created, the writes begin. It cancels itself when
    // it has seen the cleanup's deletes, and then nothing is pending, so run() returns.
    let handle: Rc<RefCell<Option<Watch>>> = Rc::default();
    let (h, c) = (handle.clone(), client.clone());
    let (puts, deletes) = (Cell::new(0), Cell::new(0));
    let watch = client.watch("demo/", WatchOptions::new().prefix(true), move |res| {
        let resp = match res {
            Ok(resp) => resp,
            Err(e) => return eprintln!("watch failed: {e} (is etcd running at that endpoint?)"),
        };
        if resp.created {
            let from = resp.header.map_or(0, |h| h.revision) + 1;
            println!("watching demo/ from revision {from}");
            return start_writing(c.clone());
        }
        for ev in &resp.events {
            match ev.r#type() {
                EventType::Put => puts.set(puts.get() + 1),
                EventType::Delete => deletes.set(deletes.get() + 1),
            }
        }
        if deletes.get() == 101 {
            println!("the watch saw {} puts and {} deletes", puts.get(), deletes.get());
            h.borrow().as_ref().expect("handle").cancel(|_| println!("watch cancelled"));
        }
    });
    *handle.borrow_mut() = Some(watch);
    client.run();
    println!("done in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
}

fn start_writing(c: Client) {
    let c2 = c.clone();
    c.put("demo/greeting", "hello", PutOptions::new().prev_kv(true), move |res| {
        let put = match res {
            Ok(put) => put,
            Err(e) => return eprintln!("put failed: {e}"),
        };
        println!("put demo/greeting = hello at revision {}", put.header.unwrap().revision);
        write_many(c2);
    });
}

/// 100 puts in flight at once on one connection, then a prefix read.
fn write_many(c: Client) {
    let left = std::rc::Rc::new(std::cell::Cell::new(100));
    for i in 0..100 {
        let (c2, left) = (c.clone(), left.clone());
        c.put(format!("demo/items/{i:03}"), format!("value {i}"), PutOptions::new(), move |res| {
            res.expect("put");
            left.set(left.get() - 1);
            if left.get() == 0 {
                println!("100 pipelined puts done");
                read_back(c2);
            }
        });
    }
}

fn read_back(c: Client) {
    let c2 = c.clone();
    let opts = GetOptions::new().prefix(true).limit(3).sort_order(evetcd::SortOrder::Descend);
    c.get("demo/items/", opts, move |res| {
        let got = res.expect("get");
        println!("demo/items/ holds {} keys; the last three:", got.count);
        for kv in &got.kvs {
            println!(
                "  {} = {}",
                String::from_utf8_lossy(&kv.key),
                String::from_utf8_lossy(&kv.value)
            );
        }
        transaction(c2);
    });
}

/// Compare-and-swap: only replaces the greeting if it still says "hello".
fn transaction(c: Client) {
    let c2 = c.clone();
    let txn = Txn::new()
        .when([Compare::value("demo/greeting", CompareOp::Equal, "hello")])
        .and_then([TxnOp::put("demo/greeting", "hello, again", PutOptions::new())])
        .or_else([TxnOp::get("demo/greeting", GetOptions::new())]);
    c.txn(txn, move |res| {
        println!("txn compare-and-swap succeeded: {}", res.expect("txn").succeeded);
        c2.delete("demo/", DeleteOptions::new().prefix(true), |res| {
            println!("cleaned up {} keys", res.expect("delete").deleted);
        });
    });
}
