//! Txn against a real etcd: every compare target with every operator, range compares, both
//! branches with every op kind (nested txn included), and the typed per-op responses.

mod support;

use evetcd::{
    Client, Code, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};
use support::client::{block, client, ok};
use support::Etcd;

fn run(c: &Client, txn: Txn) -> TxnResponse {
    ok(c, |cb| c.txn(txn, cb))
}

fn holds(c: &Client, cmp: Compare) -> bool {
    run(c, Txn::new().when([cmp])).succeeded
}

#[test]
fn every_compare_target_with_every_operator() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    ok(&c, |cb| c.put("k", "m", PutOptions::new(), cb));
    let rev = ok(&c, |cb| c.put("k", "m", PutOptions::new(), cb)).header.unwrap().revision;
    let kv = ok(&c, |cb| c.get("k", GetOptions::new(), cb)).kvs.remove(0);
    assert_eq!(kv.version, 2);
    use CompareOp::*;

    for (op, below, same, above) in [
        (Equal, false, true, false),
        (NotEqual, true, false, true),
        (Less, false, false, true),
        (Greater, true, false, false),
    ] {
        // Each row: does "key's field OP x" hold for x below, equal to and above the field?
        let check = |f: &dyn Fn(i64) -> Compare, v: i64, what: &str| {
            assert_eq!(holds(&c, f(v - 1)), below, "{what} {op:?} below");
            assert_eq!(holds(&c, f(v)), same, "{what} {op:?} same");
            assert_eq!(holds(&c, f(v + 1)), above, "{what} {op:?} above");
        };
        check(&|x| Compare::version("k", op, x), kv.version, "version");
        check(&|x| Compare::create_revision("k", op, x), kv.create_revision, "create");
        check(&|x| Compare::mod_revision("k", op, x), rev, "mod");
        check(&|x| Compare::lease("k", op, x), 0, "lease"); // no lease: 0
        let value = |x: i64| Compare::value("k", op, ["l", "m", "n"][x as usize]);
        check(&value, 1, "value");
    }
    // A missing key has version 0: the "key absent" idiom.
    assert!(holds(&c, Compare::version("absent", Equal, 0)));
    assert!(!holds(&c, Compare::version("k", Equal, 0)));
}

#[test]
fn range_compares_hold_only_when_every_key_matches() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    for (k, v) in [("r/a", "1"), ("r/b", "1"), ("r/c", "2")] {
        ok(&c, |cb| c.put(k, v, PutOptions::new(), cb));
    }
    assert!(holds(&c, Compare::value("r/a", CompareOp::Equal, "1").with_range_end("r/c")));
    assert!(!holds(&c, Compare::value("r/", CompareOp::Equal, "1").with_prefix()));
    assert!(holds(&c, Compare::version("r/", CompareOp::Greater, 0).with_prefix()));
}

#[test]
fn branches_run_every_op_kind_with_typed_responses() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    ok(&c, |cb| c.put("t/old", "x", PutOptions::new(), cb));
    ok(&c, |cb| c.put("t/gone1", "x", PutOptions::new(), cb));
    ok(&c, |cb| c.put("t/gone2", "x", PutOptions::new(), cb));

    let nested = Txn::new()
        .when([Compare::version("t/new", CompareOp::Equal, 0)])
        .and_then([TxnOp::put("t/nested", "n", PutOptions::new())]);
    let txn = |cmp_value: &'static str| {
        Txn::new()
            .when([Compare::value("t/old", CompareOp::Equal, cmp_value)])
            .and_then([
                TxnOp::put("t/old", "y", PutOptions::new().prev_kv(true)),
                TxnOp::delete("t/gone", DeleteOptions::new().prefix(true).prev_kv(true)),
                TxnOp::get("t/", GetOptions::new().prefix(true).keys_only(true)),
                TxnOp::txn(nested.clone()),
            ])
            .or_else([TxnOp::get("t/old", GetOptions::new())])
    };

    // The failure branch: compare on the wrong value.
    let r = run(&c, txn("nope"));
    assert!(!r.succeeded);
    assert_eq!(r.responses.len(), 1);
    match &r.responses[0].response {
        Some(TxnOpResponse::ResponseRange(g)) => assert_eq!(&g.kvs[0].value[..], b"x"),
        other => panic!("expected a range response, got {other:?}"),
    }

    // The success branch: one typed response per op, in order.
    let r = run(&c, txn("x"));
    assert!(r.succeeded);
    let ops: Vec<_> = r.responses.into_iter().map(|o| o.response.expect("typed")).collect();
    let [TxnOpResponse::ResponsePut(put), TxnOpResponse::ResponseDeleteRange(del), TxnOpResponse::ResponseRange(range), TxnOpResponse::ResponseTxn(inner)] =
        &ops[..]
    else {
        panic!("unexpected responses {ops:?}")
    };
    assert_eq!(&put.prev_kv.as_ref().unwrap().value[..], b"x");
    assert_eq!((del.deleted, del.prev_kvs.len()), (2, 2));
    assert_eq!(range.kvs.iter().map(|kv| &kv.key[..]).collect::<Vec<_>>(), [&b"t/old"[..]]);
    assert!(inner.succeeded);
    assert!(matches!(inner.responses[0].response, Some(TxnOpResponse::ResponsePut(_))));
    let got = ok(&c, |cb| c.get("t/nested", GetOptions::new(), cb));
    assert_eq!(&got.kvs[0].value[..], b"n");
}

#[test]
fn an_invalid_txn_is_the_servers_clear_error() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    // etcd refuses two writes of one key in a transaction.
    let txn = Txn::new().and_then([
        TxnOp::put("dup", "1", PutOptions::new()),
        TxnOp::put("dup", "2", PutOptions::new()),
    ]);
    let err = block(&c, |cb| c.txn(txn, cb)).unwrap_err();
    assert_eq!((err.code(), err.operation()), (Code::InvalidArgument, "txn"));
    assert!(err.message().contains("duplicate key"), "{err}");
    assert!(!err.is_retryable());
}
