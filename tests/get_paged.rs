//! `get_paged` against a real etcd: a range larger than a page read whole, in key order, at one
//! revision (writes made while it runs are not in it), through RangeStream on etcd 3.7+ and
//! through pages of Range before; a bad page size and a cancel reach the callback once.

mod support;

use evetcd::{Code, EtcdError, GetOptions, PutOptions, RangeResponse, Txn, TxnOp};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use support::client::{client, drive_until, ok};
use support::Etcd;

type Pages = Rc<RefCell<Vec<Result<RangeResponse, EtcdError>>>>;

/// Writes `n` keys `{prefix}k00000`.. in transactions of 100 puts.
fn fill(c: &evetcd::Client, prefix: &str, n: usize) {
    for start in (0..n).step_by(100) {
        let puts = (start..(start + 100).min(n))
            .map(|i| TxnOp::put(format!("{prefix}k{i:05}"), format!("v{i}"), PutOptions::new()));
        ok(c, |cb| c.txn(Txn::new().and_then(puts), cb));
    }
}

fn ended(pages: &Pages) -> bool {
    pages.borrow().last().is_some_and(|p| p.as_ref().map_or(true, |p| !p.more))
}

#[test]
fn a_large_range_is_read_whole_in_key_order_at_one_revision() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let prefix = support::unique_prefix("paged");
    fill(&c, &prefix, 2_500);
    let pages: Pages = Rc::default();
    // A second client, run to completion inside the first page's callback: the late key is
    // committed before the next page is asked for, yet is past the revision being read.
    let writer = client(&etcd.endpoint());
    let (p, late) = (pages.clone(), format!("{prefix}k99999"));
    let opts = GetOptions::new().prefix(true);
    c.get_paged(prefix.clone(), opts, 1_000, move |page| {
        if p.borrow().is_empty() {
            ok(&writer, |cb| writer.put(late.clone(), "late", PutOptions::new(), cb));
        }
        p.borrow_mut().push(page);
    });
    drive_until(&[&c], Duration::from_secs(30), || ended(&pages));
    let pages: Vec<RangeResponse> =
        pages.borrow_mut().drain(..).map(|p| p.expect("page")).collect();
    let keys: Vec<String> = pages
        .iter()
        .flat_map(|p| p.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()))
        .collect();
    let expected: Vec<String> = (0..2_500).map(|i| format!("{prefix}k{i:05}")).collect();
    assert_eq!(keys, expected, "every key once, in order, none written later");
    let last = pages.last().unwrap();
    assert!(!last.more && pages[..pages.len() - 1].iter().all(|p| p.more));
    assert!(last.header.as_ref().is_some_and(|h| h.revision > 0));
    if support::etcd_version() < (3, 7, 0) {
        // Pages of Range: 1,000 + 1,000 + 500, all at the revision of the first.
        assert_eq!(pages.iter().map(|p| p.kvs.len()).collect::<Vec<_>>(), [1000, 1000, 500]);
        // The header is the store's revision when each page was served: later pages see
        // the late put, yet do not contain it.
        let revs: Vec<i64> = pages.iter().map(|p| p.header.as_ref().unwrap().revision).collect();
        assert!(revs[2] > revs[0], "{revs:?}");
    }
    // The client remembers what the server lacks: a second read goes straight to paging.
    let again: Pages = Rc::default();
    let a = again.clone();
    c.get_paged(prefix, GetOptions::new().prefix(true), 2_000, move |p| a.borrow_mut().push(p));
    drive_until(&[&c], Duration::from_secs(30), || ended(&again));
    let n: usize = again.borrow().iter().map(|p| p.as_ref().unwrap().kvs.len()).sum();
    assert_eq!(n, 2_501, "the late key is there now");
}

#[test]
fn a_bad_page_size_or_option_and_a_cancel_reach_the_callback_once() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let prefix = support::unique_prefix("paged_cancel");
    fill(&c, &prefix, 300);
    for (opts, size) in [(GetOptions::new(), 0), (GetOptions::new().limit(5), 10)] {
        let got: Pages = Rc::default();
        let g = got.clone();
        c.get_paged(prefix.clone(), opts, size, move |p| g.borrow_mut().push(p));
        assert!(got.borrow().is_empty(), "never from inside the call");
        drive_until(&[&c], Duration::from_secs(10), || !got.borrow().is_empty());
        let err = got.borrow_mut().pop().unwrap().unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    }
    // Cancelled after the first page: one CANCELLED, nothing after it.
    let got: Pages = Rc::default();
    let g = got.clone();
    let handle: Rc<RefCell<Option<evetcd::PagedRead>>> = Rc::default();
    let h = handle.clone();
    let read = c.get_paged(prefix, GetOptions::new().prefix(true), 100, move |p| {
        let first = g.borrow().is_empty();
        g.borrow_mut().push(p);
        if first {
            h.borrow().as_ref().expect("handle").cancel();
        }
    });
    *handle.borrow_mut() = Some(read);
    drive_until(&[&c], Duration::from_secs(10), || got.borrow().len() >= 2 || ended(&got));
    c.run();
    let got = got.borrow();
    if got.len() == 1 {
        // RangeStream sent everything in one chunk: the read was over before the cancel.
        assert!(!got[0].as_ref().unwrap().more);
    } else {
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[1].as_ref().unwrap_err().code(), Code::Cancelled);
    }
}
