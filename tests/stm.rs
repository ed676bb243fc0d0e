//! STM (`evetcd::concurrency::stm`, Go's `concurrency.NewSTM`) against a real etcd: what
//! each isolation level lets a transaction see and when its commit fails, retries after a
//! conflicting write with a correct result, aborts that write nothing, and the bank test:
//! concurrent random transfers among 10 accounts by 5 evetcd clients (then with Go STM
//! clients among them) conserve the total and never overdraw, checked by replaying every
//! committed transfer in revision order against what etcd holds.
//!
//! A conflicting write lands between a transaction's reads and its commit because `apply`
//! itself makes it, through a second client that it drives to completion (or the Go helper,
//! which it waits for): no sleeps. Without Go (and without `CI=true`) the Go tests print
//! `SKIP: go not found: <test>`.

mod support;

use bytes::Bytes;
use evetcd::concurrency::{stm, stm_with, Error, Isolation, Stm, StmOptions, Stop};
use evetcd::{
    CallOptions, Cancel, Client, Code, GetOptions, LeaseGrantOptions, PutOptions, TxnOpResponse,
    TxnResponse,
};
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::client::{client, drive_until, ok};
use support::goclient::{skip_without_go, GoClient};
use support::{unique_prefix, Etcd};

const LEVELS: [Isolation; 4] = [
    Isolation::SerializableSnapshot,
    Isolation::Serializable,
    Isolation::RepeatableReads,
    Isolation::ReadCommitted,
];

type Log = Rc<RefCell<Vec<String>>>;

/// Runs one transaction on `c` to its end; checks that `done` ran once and not inside
/// `stm_with()`.
fn transact(
    c: &Client,
    options: StmOptions,
    apply: impl FnMut(&mut Stm) -> Result<(), Stop> + 'static,
) -> Result<TxnResponse, Error> {
    let slot: Rc<RefCell<Option<Result<TxnResponse, Error>>>> = Rc::default();
    let s = slot.clone();
    stm_with(c, options, apply, move |r| {
        assert!(s.borrow_mut().replace(r).is_none(), "done ran twice");
    });
    assert!(slot.borrow().is_none(), "done ran inside stm_with()");
    c.run();
    let result = slot.borrow_mut().take();
    result.expect("run() returned before done ran")
}

fn at(level: Isolation) -> StmOptions {
    StmOptions::new().isolation(level)
}

fn text(v: &Option<Bytes>) -> String {
    v.as_ref().map_or("<none>".into(), |v| String::from_utf8_lossy(v).into_owned())
}

fn num(v: &Option<Bytes>) -> i64 {
    v.as_ref().map_or(0, |v| std::str::from_utf8(v).unwrap().parse().expect("a number"))
}

fn put(c: &Client, key: &str, value: &str) -> i64 {
    let r = ok(c, |cb| c.put(key.to_string(), value.to_string(), PutOptions::new(), cb));
    r.header.expect("header").revision
}

fn value(c: &Client, key: &str) -> Option<String> {
    let r = ok(c, |cb| c.get(key.to_string(), GetOptions::new(), cb));
    r.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

/// Every key under `prefix`, without it, with its value.
fn contents(c: &Client, prefix: &str) -> BTreeMap<String, String> {
    let r = ok(c, |cb| c.get(prefix.to_string(), GetOptions::new().prefix(true), cb));
    r.kvs
        .iter()
        .map(|kv| {
            let k = String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned();
            (k, String::from_utf8_lossy(&kv.value).into_owned())
        })
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn revision(c: &Client) -> i64 {
    ok(c, |cb| c.get("/", GetOptions::new().count_only(true), cb)).header.unwrap().revision
}

/// A counter incremented by our transaction, and by 10 through another client between our
/// read and our commit. The levels that check their reads at commit retry and keep both
/// increments; the serializable ones start the retry from the failed commit's else branch
/// (no fetch: the run after the conflict already sees 10), repeatable reads fetches again;
/// read committed commits on the stale read and loses the other increment.
#[test]
fn a_write_between_read_and_commit_forces_a_retry() {
    let etcd = Etcd::start();
    let (c, other) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let p = unique_prefix("stm_retry");
    for level in LEVELS {
        let key = format!("{p}{level:?}");
        put(&c, &key, "0");
        let log: Log = Rc::default();
        let (l, k, o, interfered) =
            (log.clone(), key.clone(), other.clone(), Rc::new(Cell::new(false)));
        let resp = transact(&c, at(level), move |s| {
            let v = s.get(&k);
            l.borrow_mut().push(v.as_ref().map_or("miss".into(), text));
            let n = num(&v?);
            if !interfered.replace(true) {
                let bumped = (n + 10).to_string();
                ok(&o, |cb| o.put(k.clone(), bumped, PutOptions::new(), cb));
            }
            s.put(&k, (n + 1).to_string(), PutOptions::new());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{level:?}: {e}"));
        let (runs, end): (&[&str], &str) = match level {
            Isolation::SerializableSnapshot | Isolation::Serializable => {
                (&["miss", "0", "10"], "11")
            }
            Isolation::RepeatableReads => (&["miss", "0", "miss", "10"], "11"),
            Isolation::ReadCommitted => (&["miss", "0"], "1"),
        };
        assert_eq!(*log.borrow(), runs, "{level:?}: what the runs of apply saw");
        assert_eq!(value(&c, &key).as_deref(), Some(end), "{level:?}");
        let kv = ok(&c, |cb| c.get(key.clone(), GetOptions::new(), cb)).kvs.remove(0);
        assert_eq!(
            kv.mod_revision,
            resp.header.unwrap().revision,
            "{level:?}: done has the commit"
        );
    }
    let levels = LEVELS.map(|l| format!("{l:?}"));
    let expected: Vec<(&str, &str)> =
        levels.iter().zip(["11", "11", "11", "1"]).map(|(l, v)| (l.as_str(), v)).collect();
    assert_eq!(contents(&c, &p), map(&expected));
}

/// a and b start at 0; once our transaction has read a, another client sets b to 1. The
/// serializable levels read b at a's revision (b = 0), so the commit's check of b fails and
/// the retry sees b = 1; the other levels read b as it is now (1) and commit at once.
#[test]
fn serializable_levels_read_at_the_first_reads_revision() {
    let etcd = Etcd::start();
    let (c, other) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let p = unique_prefix("stm_pin");
    for level in LEVELS {
        let (a, b, sum) =
            (format!("{p}{level:?}/a"), format!("{p}{level:?}/b"), format!("{p}{level:?}/sum"));
        put(&c, &a, "0");
        put(&c, &b, "0");
        let log: Log = Rc::default();
        let (l, o, interfered) = (log.clone(), other.clone(), Rc::new(Cell::new(false)));
        let (ka, kb, ks) = (a.clone(), b.clone(), sum.clone());
        transact(&c, at(level), move |s| {
            let x = num(&s.get(&ka)?);
            if !interfered.replace(true) {
                ok(&o, |cb| o.put(kb.clone(), "1", PutOptions::new(), cb));
            }
            let y = num(&s.get(&kb)?);
            l.borrow_mut().push(format!("a={x} b={y}"));
            s.put(&ks, (x + y).to_string(), PutOptions::new());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{level:?}: {e}"));
        let seen: &[&str] = match level {
            Isolation::SerializableSnapshot | Isolation::Serializable => &["a=0 b=0", "a=0 b=1"],
            Isolation::RepeatableReads | Isolation::ReadCommitted => &["a=0 b=1"],
        };
        assert_eq!(*log.borrow(), seen, "{level:?}");
        assert_eq!(value(&c, &sum).as_deref(), Some("1"), "{level:?}");
        let prefix = format!("{p}{level:?}/");
        assert_eq!(contents(&c, &prefix), map(&[("a", "0"), ("b", "1"), ("sum", "1")]));
    }
}

/// The transaction reads a and writes w without reading it; another client writes w after
/// our read. Only serializable snapshot checks the keys it writes (mod revision below the
/// first read's + 1), so only it retries; every level ends with its own value in w.
#[test]
fn serializable_snapshot_also_checks_the_keys_it_writes() {
    let etcd = Etcd::start();
    let (c, other) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let p = unique_prefix("stm_wset");
    for level in LEVELS {
        let (a, w) = (format!("{p}{level:?}/a"), format!("{p}{level:?}/w"));
        put(&c, &a, "1");
        let complete_runs = Rc::new(Cell::new(0));
        let (runs, o, interfered) =
            (complete_runs.clone(), other.clone(), Rc::new(Cell::new(false)));
        let (ka, kw) = (a.clone(), w.clone());
        transact(&c, at(level), move |s| {
            let x = text(&s.get(&ka)?);
            if !interfered.replace(true) {
                ok(&o, |cb| o.put(kw.clone(), "theirs", PutOptions::new(), cb));
            }
            runs.set(runs.get() + 1);
            s.put(&kw, format!("mine after {x}"), PutOptions::new());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{level:?}: {e}"));
        let expected = if level == Isolation::SerializableSnapshot { 2 } else { 1 };
        assert_eq!(complete_runs.get(), expected, "{level:?}: attempts");
        assert_eq!(value(&c, &w).as_deref(), Some("mine after 1"), "{level:?}");
    }
}

/// An abort ends the transaction with `Error::Aborted` and writes nothing, also when it is
/// decided on a value that first had to be fetched, and when `apply` aborts at once.
#[test]
fn an_abort_writes_nothing() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p = unique_prefix("stm_abort");
    let (flag, doomed, kept) = (format!("{p}flag"), format!("{p}doomed"), format!("{p}kept"));
    put(&c, &flag, "stop");
    put(&c, &kept, "v");
    for level in LEVELS {
        let before = revision(&c);
        let runs = Rc::new(Cell::new(0));
        let (r, f, d, k) = (runs.clone(), flag.clone(), doomed.clone(), kept.clone());
        let res = transact(&c, at(level), move |s| {
            r.set(r.get() + 1);
            s.put(&d, "written?", PutOptions::new());
            s.del(&k);
            if s.get(&f)?.as_deref() == Some(&b"stop"[..]) {
                return Err(Stop::abort("the flag says stop"));
            }
            Ok(())
        });
        assert_eq!(res.unwrap_err(), Error::Aborted("the flag says stop".into()), "{level:?}");
        assert_eq!(runs.get(), 2, "{level:?}: one run to learn the flag, one to decide");
        assert_eq!(revision(&c), before, "{level:?}: nothing written");

        let res = transact(&c, at(level), |s| {
            s.put("/elsewhere", "x", PutOptions::new());
            Err(Stop::abort("at once"))
        });
        assert_eq!(res.unwrap_err(), Error::Aborted("at once".into()));
        assert_eq!(revision(&c), before, "{level:?}: nothing written");

        // Go's WithAbortContext: a cancel token on the client view ends it with CANCELLED.
        let cancel = Cancel::new();
        let view = c.with(CallOptions::new().cancel(&cancel));
        let (token, f, d) = (cancel.clone(), flag.clone(), doomed.clone());
        let res = transact(&view, at(level), move |s| {
            s.put(&d, "written?", PutOptions::new());
            s.get(&f)?;
            token.cancel();
            Ok(())
        });
        let Err(Error::Etcd(e)) = res else { panic!("{level:?}: {res:?}") };
        assert_eq!(e.code(), Code::Cancelled, "{level:?}: {e}");
        assert_eq!(revision(&c), before, "{level:?}: nothing written");
    }
    assert_eq!(contents(&c, &p), map(&[("flag", "stop"), ("kept", "v")]));
    assert_eq!(value(&c, "/elsewhere"), None);
}

/// rev, del, put options and the committed Txn's responses; the prefetch option reads every
/// key in one round trip before apply first runs; a transaction that reads nothing commits
/// its writes unconditionally.
#[test]
fn rev_del_put_options_and_prefetch() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p = unique_prefix("stm_ops");
    let (a, b, gone, leased) =
        (format!("{p}a"), format!("{p}b"), format!("{p}gone"), format!("{p}leased"));
    let rev_a = put(&c, &a, "1");
    put(&c, &gone, "x");
    let lease = ok(&c, |cb| c.lease_grant(60, LeaseGrantOptions::new(), cb)).id;
    for level in LEVELS {
        put(&c, &gone, "x");
        let runs = Rc::new(Cell::new(0));
        let seen: Log = Rc::default();
        let (r, l) = (runs.clone(), seen.clone());
        let (ka, kb, kg, kl) = (a.clone(), b.clone(), gone.clone(), leased.clone());
        let options = at(level).prefetch([&a, &b, &gone]);
        let resp = transact(&c, options, move |s| {
            r.set(r.get() + 1);
            let (ra, rb) = (s.rev(&ka)?, s.rev(&kb)?);
            s.del(&kg);
            let after_del = s.get(&kg)?;
            s.put(&kl, "on a lease", PutOptions::new().lease(lease).prev_kv(true));
            let written = s.get(&kl)?;
            l.borrow_mut().push(format!("{ra} {rb} {} {}", text(&after_del), text(&written)));
            assert_eq!(s.isolation(), level);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{level:?}: {e}"));
        assert_eq!(runs.get(), 1, "{level:?}: the prefetch fetched a, b and gone at once");
        assert_eq!(*seen.borrow(), [format!("{rev_a} 0 <none> on a lease")], "{level:?}");
        assert!(resp.succeeded);
        let Some(TxnOpResponse::ResponseDeleteRange(del)) = &resp.responses[0].response else {
            panic!("{level:?}: {:?}", resp.responses)
        };
        assert_eq!(del.deleted, 1, "{level:?}");
        let Some(TxnOpResponse::ResponsePut(put_resp)) = &resp.responses[1].response else {
            panic!("{level:?}: {:?}", resp.responses)
        };
        let again = level != LEVELS[0];
        assert_eq!(put_resp.prev_kv.is_some(), again, "{level:?}: prev_kv once the key exists");
        let kv = ok(&c, |cb| c.get(leased.clone(), GetOptions::new(), cb)).kvs.remove(0);
        assert_eq!((&kv.value[..], kv.lease), (&b"on a lease"[..], lease));
        assert_eq!(value(&c, &gone), None, "{level:?}");

        // Writes only: nothing to check, it commits (Go's empty read set).
        let kb = b.clone();
        transact(&c, at(level), move |s| {
            s.put(&kb, "blind", PutOptions::new());
            Ok(())
        })
        .unwrap();
        assert_eq!(value(&c, &b).as_deref(), Some("blind"));
        ok(&c, |cb| c.delete(b.clone(), Default::default(), cb));
    }
    assert_eq!(contents(&c, &p), map(&[("a", "1"), ("leased", "on a lease")]));
}

// ===== the bank =====

const ACCOUNTS: usize = 10;
const OPENING: i64 = 100;

/// SplitMix64: the same transfers on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `n` transfers between two different accounts, of 1 to 60.
    fn transfers(&mut self, n: usize) -> Vec<Transfer> {
        (0..n)
            .map(|_| {
                let from = (self.next() % ACCOUNTS as u64) as usize;
                let to = (from + 1 + (self.next() % (ACCOUNTS as u64 - 1)) as usize) % ACCOUNTS;
                Transfer { from, to, amount: 1 + (self.next() % 60) as i64 }
            })
            .collect()
    }
}

#[derive(Clone, Copy, Debug)]
struct Transfer {
    from: usize,
    to: usize,
    amount: i64,
}

/// What the clients report: each committed transfer with its commit revision, and how many
/// were refused for lack of funds.
#[derive(Default)]
struct Ledger {
    committed: Vec<(i64, Transfer)>,
    refused: usize,
    finished: usize,
    /// Runs of `apply` that had both balances: commits tried, and refusals.
    attempts: usize,
}

fn account(p: &str, i: usize) -> String {
    format!("{p}acct{i:02}")
}

fn open_accounts(c: &Client, p: &str) {
    for i in 0..ACCOUNTS {
        put(c, &account(p, i), &OPENING.to_string());
    }
}

/// Starts transfer `plan[next]` of one evetcd client, and the next once it is done.
fn transfer_from(
    c: Client,
    p: Rc<str>,
    level: Isolation,
    plan: Rc<Vec<Transfer>>,
    next: usize,
    ledger: Rc<RefCell<Ledger>>,
) {
    let Some(&t) = plan.get(next) else { return };
    let (from, to) = (account(&p, t.from), account(&p, t.to));
    let counted = ledger.clone();
    let apply = move |s: &mut Stm| {
        // Both reads before the first `?`: one round trip fetches both.
        let (f, g) = (s.get(&from), s.get(&to));
        let (f, g) = (num(&f?), num(&g?));
        counted.borrow_mut().attempts += 1;
        if f < t.amount {
            return Err(Stop::abort(format!("insufficient funds: {f} < {}", t.amount)));
        }
        s.put(&from, (f - t.amount).to_string(), PutOptions::new());
        s.put(&to, (g + t.amount).to_string(), PutOptions::new());
        Ok(())
    };
    let c2 = c.clone();
    stm(&c2, level, apply, move |res| {
        {
            let mut l = ledger.borrow_mut();
            match res {
                Ok(resp) => l.committed.push((resp.header.unwrap().revision, t)),
                Err(Error::Aborted(why)) if why.starts_with("insufficient funds") => l.refused += 1,
                Err(e) => panic!("transfer {t:?} failed: {e}"),
            }
            l.finished += 1;
        }
        transfer_from(c, p, level, plan, next + 1, ledger);
    });
}

/// Replays the committed transfers in commit order from the opening balances: none may
/// overdraw, and the result must be what etcd holds (so no transfer was lost or applied
/// twice), which conserves the total.
fn check_books(c: &Client, p: &str, ledger: &Ledger, total: usize) {
    assert_eq!(ledger.committed.len() + ledger.refused, total, "every transfer ended once");
    let mut committed = ledger.committed.clone();
    committed.sort_by_key(|(rev, _)| *rev);
    assert!(committed.windows(2).all(|w| w[0].0 < w[1].0), "one commit per revision");
    let mut books = [OPENING; ACCOUNTS];
    for (rev, t) in &committed {
        assert!(books[t.from] >= t.amount, "transfer {t:?} at revision {rev} overdraws: {books:?}");
        books[t.from] -= t.amount;
        books[t.to] += t.amount;
    }
    let held = contents(c, p);
    let expected: BTreeMap<String, String> =
        (0..ACCOUNTS).map(|i| (account("", i), books[i].to_string())).collect();
    assert_eq!(held, expected, "etcd's balances (and only the accounts) vs the replayed ledger");
    let sum: i64 = held.values().map(|v| v.parse::<i64>().unwrap()).sum();
    assert_eq!(sum, OPENING * ACCOUNTS as i64, "total conserved");
    assert!(held.values().all(|v| !v.starts_with('-')), "no balance negative");
    assert!(
        ledger.refused > 0 && committed.len() > total / 2,
        "a mix of transfers: {} refused",
        ledger.refused
    );
    assert!(ledger.attempts > total, "no transfer conflicted: the test tested nothing");
}

/// `clients` evetcd clients, each running its transfers one after another, all at once;
/// returns once every one ended.
fn run_bank(
    etcd: &Etcd,
    p: &str,
    level: Isolation,
    plans: Vec<Vec<Transfer>>,
    ledger: &Rc<RefCell<Ledger>>,
) {
    let clients: Vec<Client> = plans.iter().map(|_| client(&etcd.endpoint())).collect();
    let total: usize = plans.iter().map(Vec::len).sum();
    let p: Rc<str> = p.into();
    for (c, plan) in clients.iter().zip(plans) {
        transfer_from(c.clone(), p.clone(), level, Rc::new(plan), 0, ledger.clone());
    }
    let refs: Vec<&Client> = clients.iter().collect();
    drive_until(&refs, Duration::from_secs(30), || ledger.borrow().finished == total);
}

fn bank(test: &str, level: Isolation, seed: u64) {
    let started = Instant::now();
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p = unique_prefix(test);
    open_accounts(&c, &p);
    let mut rng = Rng(seed);
    let plans: Vec<Vec<Transfer>> = (0..5).map(|_| rng.transfers(200)).collect();
    let ledger = Rc::new(RefCell::new(Ledger::default()));
    run_bank(&etcd, &p, level, plans, &ledger);
    check_books(&c, &p, &ledger.borrow(), 1000);
    let l = ledger.borrow();
    eprintln!(
        "{test}: 1000 transfers ({} refused, {} retries) in {:.1?}",
        l.refused,
        l.attempts - 1000,
        started.elapsed()
    );
}

#[test]
fn bank_serializable_snapshot() {
    bank("bank_serializable_snapshot", Isolation::SerializableSnapshot, 1);
}

#[test]
fn bank_serializable() {
    bank("bank_serializable", Isolation::Serializable, 2);
}

/// Go's isolation name in the helper's `stm_transfer`.
fn go_isolation(level: Isolation) -> &'static str {
    match level {
        Isolation::SerializableSnapshot => "serializable_snapshot",
        Isolation::Serializable => "serializable",
        Isolation::RepeatableReads => "repeatable_reads",
        Isolation::ReadCommitted => "read_committed",
    }
}

/// Runs `plan` through one Go helper (a clientv3 client of its own), one transfer at a time,
/// on a thread of its own: (revision, transfer) of each commit, and the refused count.
fn go_transfers(
    endpoint: String,
    p: String,
    level: Isolation,
    plan: Vec<Transfer>,
) -> std::thread::JoinHandle<Ledger> {
    std::thread::spawn(move || {
        let go = GoClient::start(&endpoint);
        let mut ledger = Ledger::default();
        for t in plan {
            let cmd = json!({
                "cmd": "stm_transfer", "from": account(&p, t.from), "to": account(&p, t.to),
                "amount": t.amount, "isolation": go_isolation(level),
            });
            match go.run(cmd) {
                Ok(done) => {
                    ledger.committed.push((done.i64("revision"), t));
                    ledger.attempts += done.i64("attempts") as usize;
                }
                Err(e) if e.message.starts_with("insufficient funds") => {
                    ledger.refused += 1;
                    ledger.attempts += e.line["attempts"].as_u64().expect("attempts") as usize;
                }
                Err(e) => panic!("Go transfer {t:?} failed: {e}"),
            }
            ledger.finished += 1;
        }
        ledger
    })
}

/// The bank with 3 evetcd clients and 2 Go STM clients (`concurrency.NewSTM` at the same
/// level) moving money among the same accounts at once, for both serializable levels.
#[test]
fn bank_with_go_stm_clients() {
    let test = "bank_with_go_stm_clients";
    if skip_without_go(test) {
        return;
    }
    support::goclient::helper_binary(); // built before the clock starts
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    for (level, seed) in [(Isolation::SerializableSnapshot, 3), (Isolation::Serializable, 4)] {
        let started = Instant::now();
        let p = unique_prefix(test);
        open_accounts(&c, &p);
        let mut rng = Rng(seed);
        let ours: Vec<Vec<Transfer>> = (0..3).map(|_| rng.transfers(150)).collect();
        let go: Vec<_> = (0..2)
            .map(|_| go_transfers(etcd.endpoint(), p.clone(), level, rng.transfers(150)))
            .collect();
        let ledger = Rc::new(RefCell::new(Ledger::default()));
        run_bank(&etcd, &p, level, ours, &ledger);
        let ours_retried = ledger.borrow().attempts - 450;
        let (mut go_revs, mut go_retried) = (std::collections::HashSet::new(), 0);
        for handle in go {
            let theirs = handle.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            go_revs.extend(theirs.committed.iter().map(|(rev, _)| *rev));
            go_retried += theirs.attempts - theirs.finished;
            let mut l = ledger.borrow_mut();
            l.committed.extend(theirs.committed);
            l.refused += theirs.refused;
            l.attempts += theirs.attempts;
        }
        check_books(&c, &p, &ledger.borrow(), 750);
        // They ran at once: in commit order, Go's and ours alternate, and both had commits
        // fail and retried.
        let mut order = ledger.borrow().committed.clone();
        order.sort_by_key(|(rev, _)| *rev);
        let switches = order
            .windows(2)
            .filter(|w| go_revs.contains(&w[0].0) != go_revs.contains(&w[1].0))
            .count();
        assert!(
            switches >= 20,
            "Go's and evetcd's commits barely interleave ({switches} switches)"
        );
        assert!(
            go_retried > 0 && ours_retried > 0,
            "retries: Go {go_retried}, evetcd {ours_retried}"
        );
        eprintln!(
            "{test} {level:?}: 750 transfers in {:.1?}; Go committed {}, retried {go_retried}; \
             evetcd retried {ours_retried}; {switches} switches between Go and evetcd commits",
            started.elapsed(),
            go_revs.len()
        );
    }
}

/// A Go STM commit between our reads and our commit makes ours retry, and ours between Go's
/// read and its commit makes Go's retry: both read and check the same keys the same way.
#[test]
fn go_and_evetcd_stm_transactions_conflict_both_ways() {
    let test = "go_and_evetcd_stm_transactions_conflict_both_ways";
    if skip_without_go(test) {
        return;
    }
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let go = Rc::new(GoClient::start(&etcd.endpoint()));
    let p = unique_prefix("stm_go_conflict");
    for level in [Isolation::SerializableSnapshot, Isolation::Serializable] {
        let (x, y) = (format!("{p}{level:?}/x"), format!("{p}{level:?}/y"));
        put(&c, &x, "100");
        put(&c, &y, "100");

        // Go moves 30 from x to y after our transaction read both; ours (x += 1) retries.
        let log: Log = Rc::default();
        let (l, g, kx, ky, iso) =
            (log.clone(), go.clone(), x.clone(), y.clone(), go_isolation(level));
        let interfered = Rc::new(Cell::new(false));
        transact(&c, at(level), move |s| {
            let (a, b) = (s.get(&kx), s.get(&ky));
            let (a, b) = (num(&a?), num(&b?));
            l.borrow_mut().push(format!("{a} {b}"));
            if !interfered.replace(true) {
                let cmd = json!({
                    "cmd": "stm_transfer", "from": kx, "to": ky, "amount": 30, "isolation": iso,
                });
                let done = g.run(cmd).expect("Go's transfer");
                assert_eq!(done.i64("attempts"), 1);
            }
            s.put(&kx, (a + 1).to_string(), PutOptions::new());
            Ok(())
        })
        .unwrap();
        assert_eq!(*log.borrow(), ["100 100", "70 130"], "{level:?}");
        assert_eq!((value(&c, &x), value(&c, &y)), (Some("71".into()), Some("130".into())));

        // Go reads (and pauses); our transfer of 5 from y to x commits; Go's commit fails
        // and its second attempt sees ours.
        let t = go.ok(json!({
            "cmd": "stm_transfer", "from": x, "to": y, "amount": 50,
            "isolation": go_isolation(level), "pause": true,
        }));
        let read = go.event(t.id());
        assert_eq!((read.i64("attempt"), read.i64("from"), read.i64("to")), (1, 71, 130));
        let (kx, ky) = (x.clone(), y.clone());
        transact(&c, at(level), move |s| {
            let (a, b) = (s.get(&kx), s.get(&ky));
            let (a, b) = (num(&a?), num(&b?));
            s.put(&ky, (b - 5).to_string(), PutOptions::new());
            s.put(&kx, (a + 5).to_string(), PutOptions::new());
            Ok(())
        })
        .unwrap();
        go.ok(json!({"cmd": "resume", "ref": t.id()}));
        let read = go.event(t.id());
        assert_eq!(
            (read.i64("attempt"), read.i64("from"), read.i64("to")),
            (2, 76, 125),
            "{level:?}"
        );
        go.ok(json!({"cmd": "resume", "ref": t.id()}));
        let done = go.done(t.id()).expect("Go's transfer");
        assert_eq!(
            (done.i64("attempts"), done.i64("from_balance"), done.i64("to_balance")),
            (2, 26, 175)
        );
        let prefix = format!("{p}{level:?}/");
        assert_eq!(contents(&c, &prefix), map(&[("x", "26"), ("y", "175")]));
    }
}
