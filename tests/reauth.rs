//! Re-authentication against a real etcd with auth enabled and short-lived tokens: calls
//! keep working across a token expiry and an auth-store change, a watch resumes on a fresh
//! connection, and a wrong password is reported once and never retried.

mod support;

use evetcd::{Client, Code, Config, GetOptions, PermissionType, PutOptions, WatchOptions};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use support::client::{block, ok};
use support::metrics::metric;
use support::Etcd;

const AUTHENTICATE_STARTED: &str = "grpc_server_started_total{grpc_method=\"Authenticate\",grpc_service=\"etcdserverpb.Auth\",grpc_type=\"unary\"}";

/// Simple tokens expire after this many seconds without use.
const TOKEN_TTL: &str = "--auth-token-ttl=1";

/// Creates root (password "rootpw") and turns auth on.
fn enable_auth(endpoint: &str) {
    let c = Client::new(Config::new().endpoints([endpoint])).unwrap();
    ok(&c, |cb| c.user_add("root", "rootpw", cb));
    ok(&c, |cb| c.role_add("root", cb));
    ok(&c, |cb| c.user_grant_role("root", "root", cb));
    ok(&c, |cb| c.auth_enable(cb));
}

fn root_client(endpoint: &str) -> Client {
    let config = Config::new().endpoints([endpoint]).timeout(Duration::from_secs(10));
    Client::new(config.user("root", "rootpw")).unwrap()
}

fn authentications(endpoint: &str) -> f64 {
    metric(endpoint, AUTHENTICATE_STARTED)
}

/// Lets a simple token expire: etcd drops it after the TTL without use. Waiting for time to
/// pass is the condition under test here, not a synchronisation.
fn let_the_token_expire() {
    std::thread::sleep(Duration::from_millis(2500));
}

#[test]
fn calls_keep_working_across_a_token_expiry() {
    let etcd = Etcd::start_with(&[TOKEN_TTL]);
    let ep = etcd.endpoint();
    enable_auth(&ep);
    let c = root_client(&ep);
    ok(&c, |cb| c.put("k", "1", PutOptions::new(), cb));
    let before = authentications(&ep);
    let_the_token_expire();
    // The expired token is refused; the client authenticates again and retries, once.
    let got = ok(&c, |cb| c.get("k", GetOptions::new(), cb));
    assert_eq!(&got.kvs[0].value[..], b"1");
    assert_eq!(authentications(&ep), before + 1.0, "exactly one new Authenticate");
}

/// etcd's flag for JWT tokens, with a fresh RSA key pair made by openssl. JWT tokens carry
/// the auth revision they were issued at, so a change of the auth store makes them "old";
/// simple tokens are checked against the current revision and never are.
fn jwt_flag() -> String {
    let dir = std::env::temp_dir().join(format!(
        "evetcd-jwt-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (private, public) = (dir.join("key.pem"), dir.join("key.pub"));
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    run(&["genrsa", "-out", private.to_str().unwrap(), "2048"]);
    run(&["rsa", "-in", private.to_str().unwrap(), "-pubout", "-out", public.to_str().unwrap()]);
    format!(
        "--auth-token=jwt,pub-key={},priv-key={},sign-method=RS256",
        public.display(),
        private.display()
    )
}

#[test]
fn calls_keep_working_across_an_auth_store_change() {
    let etcd = Etcd::start_with(&[&jwt_flag()]);
    let ep = etcd.endpoint();
    enable_auth(&ep);
    let c = root_client(&ep);
    ok(&c, |cb| c.put("k", "1", PutOptions::new(), cb));
    // Another client changes the auth store: every older token is now "old".
    let other = root_client(&ep);
    ok(&other, |cb| other.role_add("reader", cb));
    let before = authentications(&ep);
    // Several calls fail at once with the old token: one Authenticate serves them all.
    let done = Rc::new(Cell::new(0));
    for i in 0..5 {
        let d = done.clone();
        c.put(format!("k{i}"), "v", PutOptions::new(), move |r| {
            r.unwrap();
            d.set(d.get() + 1);
        });
    }
    c.run();
    assert_eq!(done.get(), 5);
    assert_eq!(authentications(&ep), before + 1.0, "one Authenticate for five calls");
}

#[test]
fn a_watch_resumes_with_a_fresh_token_after_the_connection_is_lost() {
    let mut etcd = Etcd::start_with(&[TOKEN_TTL]);
    let ep = etcd.endpoint();
    enable_auth(&ep);
    let c = root_client(&ep);
    let start = ok(&c, |cb| c.put("w/0", "0", PutOptions::new(), cb)).header.unwrap().revision;
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let watch = c.watch("w/", WatchOptions::new().prefix(true).start_revision(start), move |r| {
        let resp = r.expect("the watch never fails");
        for ev in resp.events {
            s.borrow_mut().push(String::from_utf8_lossy(&ev.kv.unwrap().value).into_owned());
        }
    });
    // Let the first event arrive, then restart etcd (simple tokens do not survive it) and
    // let the token the stream was opened with expire as well.
    support::client::drive_until(&[&c], Duration::from_secs(10), || seen.borrow().len() == 1);
    etcd.restart();
    let_the_token_expire();
    let writer = root_client(&ep);
    ok(&writer, |cb| writer.put("w/1", "1", PutOptions::new(), cb));
    support::client::drive_until(&[&c], Duration::from_secs(20), || seen.borrow().len() == 2);
    watch.cancel(|_| ());
    c.run();
    assert_eq!(*seen.borrow(), ["0", "1"], "every event once, in order");
}

#[test]
fn a_wrong_password_fails_once_and_is_never_retried() {
    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    enable_auth(&ep);
    let before = authentications(&ep);
    let config = Config::new().endpoints([ep.clone()]).user("root", "wrong");
    let c = Client::new(config).unwrap();
    let err = block(&c, |cb| c.get("k", GetOptions::new(), cb)).unwrap_err();
    assert!(err.message().contains("authentication failed"), "{err}");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(!err.is_retryable());
    assert_eq!(authentications(&ep), before + 1.0, "one attempt, no loop");
}

#[test]
fn authenticate_keeps_its_credentials_for_later_reauthentication() {
    let etcd = Etcd::start_with(&[TOKEN_TTL]);
    let ep = etcd.endpoint();
    enable_auth(&ep);
    let c = Client::new(Config::new().endpoints([ep.clone()])).unwrap();
    ok(&c, |cb| c.authenticate("root", "rootpw", cb));
    ok(&c, |cb| c.role_grant_permission("root", PermissionType::Readwrite, "a", "", cb));
    let_the_token_expire();
    ok(&c, |cb| c.put("a", "1", PutOptions::new(), cb));
}

#[test]
fn a_watch_created_after_an_auth_store_change_gets_a_fresh_stream() {
    let etcd = Etcd::start_with(&[&jwt_flag()]);
    let ep = etcd.endpoint();
    enable_auth(&ep);
    let c = root_client(&ep);
    let seen = Rc::new(RefCell::new(Vec::new()));
    let created = Rc::new(Cell::new(0));
    let watch = |key: &'static str| {
        let (s, cr) = (seen.clone(), created.clone());
        c.watch(key, WatchOptions::new(), move |r| {
            let resp = r.unwrap_or_else(|e| panic!("watch {key}: {e}"));
            if resp.created {
                cr.set(cr.get() + 1);
            }
            for ev in resp.events {
                s.borrow_mut().push(String::from_utf8_lossy(&ev.kv.unwrap().key).into_owned());
            }
        })
    };
    let a = watch("a");
    support::client::drive_until(&[&c], Duration::from_secs(10), || created.get() == 1);
    // The stream's token is now from an older auth revision: etcd refuses new creates on it.
    let other = root_client(&ep);
    ok(&other, |cb| other.role_add("reader", cb));
    let b = watch("b");
    // b's first create is refused; it is created on a fresh stream with a fresh token, and
    // a is re-created there too (3 created replies in all). Then both see their writes.
    support::client::drive_until(&[&c], Duration::from_secs(10), || created.get() == 3);
    ok(&other, |cb| other.put("a", "1", PutOptions::new(), cb));
    ok(&other, |cb| other.put("b", "1", PutOptions::new(), cb));
    support::client::drive_until(&[&c], Duration::from_secs(10), || seen.borrow().len() == 2);
    a.cancel(|_| ());
    b.cancel(|_| ());
    c.run();
    let mut keys = seen.borrow().clone();
    keys.sort();
    assert_eq!(keys, ["a", "b"], "both watches, each event once");
}

#[test]
fn credentials_work_against_an_etcd_without_auth() {
    let etcd = Etcd::start();
    let c = root_client(&etcd.endpoint());
    ok(&c, |cb| c.put("k", "v", PutOptions::new(), cb));
    let got = ok(&c, |cb| c.get("k", GetOptions::new(), cb));
    assert_eq!(&got.kvs[0].value[..], b"v");
}

#[test]
fn a_real_permission_problem_ends_each_watch_with_at_most_one_extra_authenticate() {
    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    enable_auth(&ep);
    let root = root_client(&ep);
    ok(&root, |cb| root.user_add("u", "upw", cb));
    ok(&root, |cb| root.role_add("reader", cb));
    ok(&root, |cb| root.role_grant_permission("reader", PermissionType::Read, "a", "", cb));
    ok(&root, |cb| root.user_grant_role("u", "reader", cb));
    let before = authentications(&ep);
    let c = Client::new(Config::new().endpoints([ep.clone()]).user("u", "upw")).unwrap();
    let denied = Rc::new(RefCell::new(Vec::new()));
    for key in ["x", "y", "z"] {
        let d = denied.clone();
        c.watch(key, WatchOptions::new(), move |r| {
            if let Err(e) = r {
                d.borrow_mut().push(e.code());
            }
        });
    }
    support::client::drive_until(&[&c], Duration::from_secs(10), || denied.borrow().len() == 3);
    assert_eq!(*denied.borrow(), [Code::PermissionDenied; 3]);
    let used = authentications(&ep) - before;
    assert!(used <= 2.0, "{used} Authenticate calls: one on connect, at most one more");
}
