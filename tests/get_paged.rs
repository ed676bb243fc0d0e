//! `get_paged` against a real etcd: a range larger than a page read whole, in key order, at one
//! revision (writes made while it runs are not in it), through RangeStream on etcd 3.7+ and
//! through pages of Range before; a bad page size and a cancel reach the callback once. Then
//! its edges, each once a bug found in review: `count_only` refused, a filtered read that must
//! not turn RangeStream off, a client dropped mid-read freed, `close()` inside a page's
//! callback ending the read, a token expiry survived. Each runs against the etcd the harness
//! picks (3.5.1 by default; `EVETCD_ETCD_VERSION=3.7` for RangeStream).

mod support;

use evetcd::{Client, Code, Config, EtcdError, GetOptions, PutOptions, RangeResponse, Txn, TxnOp};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use support::client::{client, drive_until, ok};
use support::Etcd;

type Pages = Rc<RefCell<Vec<Result<RangeResponse, EtcdError>>>>;

/// Writes `n` keys `{prefix}k00000`.. in transactions of 100 puts.
fn fill(c: &Client, prefix: &str, n: usize) {
    for start in (0..n).step_by(100) {
        let puts = (start..(start + 100).min(n))
            .map(|i| TxnOp::put(format!("{prefix}k{i:05}"), format!("v{i}"), PutOptions::new()));
        ok(c, |cb| c.txn(Txn::new().and_then(puts), cb));
    }
}

/// The read delivered its terminal item (an error, or a page with `more == false`).
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

/// Runs one `get_paged` to its end and returns what the callback got.
fn read_all(c: &Client, prefix: &str, opts: GetOptions, page_size: i64) -> Vec<RangeResponse> {
    let pages: Pages = Rc::default();
    let p = pages.clone();
    c.get_paged(prefix.to_string(), opts, page_size, move |r| p.borrow_mut().push(r));
    drive_until(&[c], Duration::from_secs(20), || ended(&pages));
    let got = pages.borrow_mut().drain(..).map(|r| r.expect("page")).collect();
    got
}

/// `count_only` has no pages to give: refused on every version, never answered with a count
/// of 0 (the Range path once overwrote the server's count with the page's length).
#[test]
fn count_only_is_refused_and_counts_are_the_servers() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let prefix = support::unique_prefix("review_count");
    fill(&c, &prefix, 30);
    let pages: Pages = Rc::default();
    let p = pages.clone();
    let opts = GetOptions::new().prefix(true).count_only(true);
    c.get_paged(prefix.clone(), opts, 10, move |r| p.borrow_mut().push(r));
    drive_until(&[&c], Duration::from_secs(10), || !pages.borrow().is_empty());
    let err = pages.borrow_mut().pop().unwrap().unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    // The last page's count is never smaller than what it holds (the server's count).
    let got = read_all(&c, &prefix, GetOptions::new().prefix(true), 10);
    let last = got.last().unwrap();
    assert!(last.count >= last.kvs.len() as i64 && last.count > 0, "{last:?}");
}

/// etcd 3.7 answers UNIMPLEMENTED to a RangeStream with revision filters; that must not make
/// the client believe the server has no RangeStream. Its chunks (10, 20, 40, …) tell it apart
/// from pages of Range (one page of 100 here).
#[test]
fn one_filtered_read_does_not_turn_range_stream_off_for_the_client() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let prefix = support::unique_prefix("review_filtered");
    fill(&c, &prefix, 100);
    let filtered = GetOptions::new().prefix(true).min_mod_revision(1);
    let got = read_all(&c, &prefix, filtered, 1_000);
    assert_eq!(got.iter().map(|p| p.kvs.len()).sum::<usize>(), 100);
    let got = read_all(&c, &prefix, GetOptions::new().prefix(true), 1_000);
    let sizes: Vec<usize> = got.iter().map(|p| p.kvs.len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 100);
    match support::etcd_version() >= (3, 7, 0) {
        true => assert!(sizes.len() > 1, "RangeStream chunks expected: {sizes:?}"),
        false => assert_eq!(sizes, [100]),
    }
}

/// Sets its flag when dropped: tells whether a callback was released.
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// Was a bug: `Read` holds a strong `Client` inside the callbacks the session stores, a cycle
/// (Inner → session → call → closure → Client). Dropping the last user handle mid-read does
/// not close the connection as `Client`'s docs say: the client, its socket, its epoll fd and
/// the user's callback are never freed. A plain `get` in the same situation is freed.
#[test]
fn dropping_the_client_mid_read_frees_it_as_for_any_other_call() {
    let etcd = Etcd::start();
    let prefix = support::unique_prefix("review_drop");
    {
        let c = client(&etcd.endpoint());
        fill(&c, &prefix, 50);
    }
    // The control: a pending get's callback is dropped with the client.
    let get_freed = Rc::new(Cell::new(false));
    {
        let c = client(&etcd.endpoint());
        let flag = DropFlag(get_freed.clone());
        c.get(prefix.clone(), GetOptions::new().prefix(true), move |_| drop(flag));
        c.process();
    }
    assert!(get_freed.get(), "control: a pending get is freed with its client");
    // The same for get_paged.
    let paged_freed = Rc::new(Cell::new(false));
    {
        let c = client(&etcd.endpoint());
        let flag = DropFlag(paged_freed.clone());
        c.get_paged(prefix.clone(), GetOptions::new().prefix(true), 10, move |_| {
            let _ = &flag;
        });
        c.process();
    }
    assert!(paged_freed.get(), "a read in progress keeps its dropped client alive (leak)");
}

/// Was a bug: `close()` from inside a page's callback (supported: `Delivery` nests for it) does not
/// end the read. With RangeStream (3.7) the sink's CANCELLED is delivered while its callback
/// is taken out and is lost; the sink entry then never goes, so the read never ends and the
/// client is never idle again (`run()` would block for ever). With Range pages (3.5/3.6) no
/// call is pending at that instant, and the page callback goes on to request the next page:
/// the read carries on through a new connection after `close()`.
#[test]
fn close_inside_a_page_callback_ends_the_read() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let prefix = support::unique_prefix("review_close");
    fill(&c, &prefix, 3_000);
    let pages: Pages = Rc::default();
    let (p, c2) = (pages.clone(), c.clone());
    c.get_paged(prefix.clone(), GetOptions::new().prefix(true), 100, move |r| {
        let first = p.borrow().is_empty();
        p.borrow_mut().push(r);
        if first {
            c2.close();
        }
    });
    drive_until(&[&c], Duration::from_secs(10), || pages.borrow().len() >= 2 || ended(&pages));
    // Let anything else queued arrive.
    let quiet = std::time::Instant::now() + Duration::from_millis(500);
    drive_until(&[&c], Duration::from_secs(5), || std::time::Instant::now() > quiet);
    let got = pages.borrow();
    let summary: Vec<String> = got
        .iter()
        .map(|r| match r {
            Ok(p) => format!("page({} keys, more={})", p.kvs.len(), p.more),
            Err(e) => format!("{:?}", e.code()),
        })
        .collect();
    assert!(got[0].as_ref().is_ok_and(|p| p.more), "{summary:?}");
    let cancelled = got.last().unwrap().as_ref().is_err_and(|e| e.code() == Code::Cancelled);
    let idle = c.is_idle();
    assert!(cancelled, "the read ends with CANCELLED: {summary:?}, client idle: {idle}");
    assert!(idle, "nothing left pending (run() would block): {summary:?}");
    assert_eq!(got.len(), 2, "one page, then CANCELLED, nothing after: {summary:?}");
}

/// Was a bug (3.7): the RangeStream is a sink, which the session never retries after a stale
/// token (only unary calls are), so once a simple token expired the first get_paged fails
/// with "invalid auth token" where `get`, and get_paged's Range fallback on 3.5/3.6, silently
/// authenticate again and succeed.
#[test]
fn get_paged_survives_a_token_expiry_like_get() {
    let etcd = Etcd::start_with(&["--auth-token-ttl=1"]);
    let ep = etcd.endpoint();
    let admin = Client::new(Config::new().endpoints([ep.as_str()])).unwrap();
    ok(&admin, |cb| admin.user_add("root", "rootpw", cb));
    ok(&admin, |cb| admin.role_add("root", cb));
    ok(&admin, |cb| admin.user_grant_role("root", "root", cb));
    ok(&admin, |cb| admin.auth_enable(cb));
    let config = Config::new().endpoints([ep.as_str()]).timeout(Duration::from_secs(10));
    let c = Client::new(config.user("root", "rootpw")).unwrap();
    let prefix = support::unique_prefix("review_reauth");
    fill(&c, &prefix, 20);
    // Waiting for time to pass is the condition under test: the simple token expires.
    std::thread::sleep(Duration::from_millis(2500));
    let pages: Pages = Rc::default();
    let p = pages.clone();
    c.get_paged(prefix.clone(), GetOptions::new().prefix(true), 100, move |r| {
        p.borrow_mut().push(r)
    });
    drive_until(&[&c], Duration::from_secs(20), || ended(&pages));
    let got = pages.borrow();
    let last = got.last().unwrap();
    assert!(last.is_ok(), "get_paged after a token expiry: {last:?}");
    let n: usize = got.iter().map(|p| p.as_ref().unwrap().kvs.len()).sum();
    assert_eq!(n, 20);
}
