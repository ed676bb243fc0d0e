//! A tour of evetcd against a running etcd: writes, reads, a transaction and a cleanup,
//! each step started from the previous step's callback, all on one thread.
//!
//! `cargo run --example demo -- [ENDPOINT]` (default `127.0.0.1:2379`); `scripts/demo`
//! starts a local etcd first when none is running.

use evetcd::{
    Client, Compare, CompareOp, Config, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
};
use std::time::Instant;

fn main() {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:2379".into());
    let client = Client::new(Config::new().endpoints([endpoint.clone()])).expect("config");
    println!("evetcd demo against {endpoint}");
    let started = Instant::now();

    let c = client.clone();
    client.put(
        "demo/greeting",
        "hello",
        PutOptions::new().prev_kv(true),
        move |res| {
            let put = match res {
                Ok(put) => put,
                Err(e) => return eprintln!("put failed: {e} (is etcd running at that endpoint?)"),
            };
            println!(
                "put demo/greeting = hello at revision {}",
                put.header.unwrap().revision
            );
            write_many(c);
        },
    );
    client.run();
    println!("done in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
}

/// 100 puts in flight at once on one connection, then a prefix read.
fn write_many(c: Client) {
    let left = std::rc::Rc::new(std::cell::Cell::new(100));
    for i in 0..100 {
        let (c2, left) = (c.clone(), left.clone());
        c.put(
            format!("demo/items/{i:03}"),
            format!("value {i}"),
            PutOptions::new(),
            move |res| {
                res.expect("put");
                left.set(left.get() - 1);
                if left.get() == 0 {
                    println!("100 pipelined puts done");
                    read_back(c2);
                }
            },
        );
    }
}

fn read_back(c: Client) {
    let c2 = c.clone();
    let opts = GetOptions::new()
        .prefix(true)
        .limit(3)
        .sort_order(evetcd::SortOrder::Descend);
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
        .and_then([TxnOp::put(
            "demo/greeting",
            "hello, again",
            PutOptions::new(),
        )])
        .or_else([TxnOp::get("demo/greeting", GetOptions::new())]);
    c.txn(txn, move |res| {
        println!(
            "txn compare-and-swap succeeded: {}",
            res.expect("txn").succeeded
        );
        c2.delete("demo/", DeleteOptions::new().prefix(true), |res| {
            println!("cleaned up {} keys", res.expect("delete").deleted);
        });
    });
}
