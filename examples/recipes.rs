//! The coordination recipes of `evetcd::concurrency`, each step started from the previous
//! step's callback on one thread: a session, a mutex with a fenced write, an election seen
//! by an observer, an STM transfer, and the session closed (which deletes its keys).
//!
//! `cargo run --example recipes -- [ENDPOINT]` (default `127.0.0.1:2379`). The keys are Go's:
//! `etcdctl lock recipes/lock` or a Go program using `concurrency.NewMutex` would wait for
//! this one.

use evetcd::concurrency::{
    self, Election, Isolation, Mutex, Observer, Session, SessionOptions, Stop,
};
use evetcd::{Client, Config, PutOptions, Txn, TxnOp};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

fn main() {
    let endpoint = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:2379".into());
    let client = Client::new(Config::new().endpoints([endpoint.clone()])).expect("config");
    println!("evetcd recipes against {endpoint}");
    let options = SessionOptions::new().ttl(Duration::from_secs(10));
    let c = client.clone();
    Session::new(&client, options, move |res| match res {
        Ok(session) => {
            println!("session: lease {:x}, TTL {} s", session.lease(), session.ttl());
            session.on_lost(|why| eprintln!("session lost: {why}"));
            lock_and_write(c, session);
        }
        Err(e) => eprintln!("no session: {e} (is etcd running at that endpoint?)"),
    });
    // Returns once nothing is pending: after the session is closed.
    client.run();
}

/// Takes the lock, writes under it with a Txn fenced by `is_owner`, and unlocks.
fn lock_and_write(client: Client, session: Session) {
    let mutex = Mutex::new(&session, "recipes/lock");
    let m = mutex.clone();
    mutex.lock(move |res| {
        if let Err(e) = res {
            return eprintln!("lock failed: {e}");
        }
        println!("locked: key {}", String::from_utf8_lossy(&m.key()));
        // Written only while the lock is still held.
        let fenced = Txn::new().when([m.is_owner()]).and_then([TxnOp::put(
            "recipes/guarded",
            "written under the lock",
            PutOptions::new(),
        )]);
        let (c, m2) = (client.clone(), m.clone());
        client.txn(fenced, move |res| {
            let held = res.map(|r| r.succeeded).unwrap_or(false);
            println!("fenced write {}", if held { "applied" } else { "refused" });
            m2.unlock(move |res| {
                if let Err(e) = res {
                    eprintln!("unlock failed: {e}");
                }
                println!("unlocked");
                elect(c, session);
            });
        });
    });
}

/// Campaigns, proclaims a second value and resigns, with an observer printing each leader
/// value (it stops itself after the second: its events may arrive after the resignation,
/// since etcd replays a watch that starts in the past from a loop of its own).
fn elect(client: Client, session: Session) {
    let election = Election::new(&session, "recipes/election");
    let observer: Rc<RefCell<Option<Observer>>> = Rc::default();
    let me = observer.clone();
    *observer.borrow_mut() = Some(election.observe(move |res| match res {
        Ok(leader) => {
            let value = String::from_utf8_lossy(&leader.kvs[0].value).into_owned();
            println!("  observer: leader value {value}");
            if value == "second" {
                if let Some(o) = me.borrow_mut().take() {
                    o.cancel();
                }
            }
        }
        Err(e) => eprintln!("  observer ended: {e}"),
    }));
    let e = election.clone();
    election.campaign("first", move |res| {
        if let Err(e) = res {
            return eprintln!("campaign failed: {e}");
        }
        println!("elected as {}", String::from_utf8_lossy(&e.key()));
        let e2 = e.clone();
        e.proclaim("second", move |res| {
            if let Err(e) = res {
                return eprintln!("proclaim failed: {e}");
            }
            e2.resign(move |_| {
                println!("resigned");
                transfer(client, session);
            });
        });
    });
}

/// Moves 30 from one account to another in an STM transaction, then closes the session.
fn transfer(client: Client, session: Session) {
    let (c, c2) = (client.clone(), client.clone());
    let accounts = Txn::new().and_then([
        TxnOp::put("recipes/accounts/a", "100", PutOptions::new()),
        TxnOp::put("recipes/accounts/b", "0", PutOptions::new()),
    ]);
    client.txn(accounts, move |res| {
        if let Err(e) = res {
            return eprintln!("setup failed: {e}");
        }
        let runs = Rc::new(RefCell::new(0));
        let r = runs.clone();
        let apply = move |stm: &mut concurrency::Stm| {
            *r.borrow_mut() += 1;
            let a = balance(stm.get("recipes/accounts/a")?);
            let b = balance(stm.get("recipes/accounts/b")?);
            if a < 30 {
                return Err(Stop::abort(format!("a holds {a}, 30 needed")));
            }
            stm.put("recipes/accounts/a", (a - 30).to_string(), PutOptions::new());
            stm.put("recipes/accounts/b", (b + 30).to_string(), PutOptions::new());
            Ok(())
        };
        concurrency::stm(&c, Isolation::SerializableSnapshot, apply, move |res| {
            match res {
                Ok(txn) => println!(
                    "transferred 30 from a to b at revision {} ({} runs of apply)",
                    txn.header.map_or(0, |h| h.revision),
                    runs.borrow()
                ),
                Err(e) => eprintln!("transfer failed: {e}"),
            }
            session.close(move |res| {
                match res {
                    Ok(()) => println!("session closed: its keys are gone"),
                    Err(e) => eprintln!("close failed: {e}"),
                }
                drop(c2);
            });
        });
    });
}

/// A balance as stored (a missing key holds 0).
fn balance(value: Option<bytes::Bytes>) -> i64 {
    value.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()).unwrap_or(0)
}
