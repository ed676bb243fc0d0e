//! TLS and mTLS against a real etcd 3.5.1 serving clients with certificates made at test
//! time: every kind of call over TLS, IPv4 and IPv6 SANs, Unix sockets, the failures users
//! meet (wrong CA, name mismatch, no client certificate, expired certificate, a server that
//! never answers the handshake, bad files), certificate rotation without a restart, and
//! etcd's certificate-CN authentication.
#![cfg(feature = "tls")]

mod support;

use evetcd::{
    Client, Code, Compare, CompareOp, Config, EtcdError, GetOptions, LeaseGrantOptions,
    PermissionType, PutOptions, Tls, Txn, TxnOp, WatchOptions,
};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use support::certs::TlsFiles;
use support::client::{block, drive_until, ok};
use support::{Etcd, SilentListener};

fn tls_client(endpoints: &[String], tls: Tls) -> Client {
    // The first failure is reported (a read would be retried until its deadline).
    let config = Config::new()
        .endpoints(endpoints)
        .tls(tls)
        .timeout(Duration::from_secs(10))
        .retry(0, Duration::ZERO);
    Client::new(config).expect("valid config")
}

fn ca(files: &TlsFiles) -> Tls {
    Tls::new().ca_file(&files.ca)
}

fn mtls(files: &TlsFiles) -> Tls {
    ca(files).identity_files(&files.client_cert, &files.client_key)
}

/// A get that must fail: its error.
fn get_error(c: &Client) -> EtcdError {
    block(c, |cb| c.get("any", GetOptions::new(), cb)).expect_err("the call succeeded")
}

/// Asserts `err` is UNAVAILABLE and its message has every one of `parts`.
fn assert_unavailable(err: &EtcdError, parts: &[&str]) {
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    for part in parts {
        assert!(err.message().contains(part), "{part:?} not in {err}");
    }
}

#[test]
fn kv_txn_watch_keepalive_and_lock_work_over_tls() {
    let files = TlsFiles::new();
    let etcd = Etcd::start_tls(&files, false, &[]);
    let c = tls_client(&[etcd.endpoint()], ca(&files));
    let p = support::unique_prefix("tls_all");

    ok(&c, |cb| c.put(format!("{p}a"), "1", PutOptions::new(), cb));
    let got = ok(&c, |cb| c.get(format!("{p}a"), GetOptions::new(), cb));
    assert_eq!(&got.kvs[0].value[..], b"1");

    let txn = Txn::new()
        .when([Compare::value(format!("{p}a"), CompareOp::Equal, "1")])
        .and_then([TxnOp::put(format!("{p}b"), "2", PutOptions::new())]);
    assert!(ok(&c, |cb| c.txn(txn, cb)).succeeded);

    // A watch sees a write made after it was created.
    let events = Rc::new(RefCell::new(Vec::new()));
    let e = events.clone();
    let (c2, key) = (c.clone(), format!("{p}w"));
    let watch = c.watch(key.clone(), WatchOptions::new(), move |r| {
        let resp = r.expect("watch");
        if resp.created {
            c2.put(key.clone(), "seen", PutOptions::new(), |r| assert!(r.is_ok()));
        }
        e.borrow_mut().extend(resp.events.into_iter().map(|ev| ev.kv.unwrap().value));
    });
    drive_until(&[&c], Duration::from_secs(10), || !events.borrow().is_empty());
    assert_eq!(&events.borrow()[0][..], b"seen");
    watch.cancel(|_| ());

    // A keepalive renews, and a lock on the lease is granted and released.
    let lease = ok(&c, |cb| c.lease_grant(5, LeaseGrantOptions::new(), cb)).id;
    let renewed = Rc::new(Cell::new(0));
    let r = renewed.clone();
    let keepalive = c.lease_keepalive(lease, move |res| {
        assert!(res.expect("keepalive").ttl > 0);
        r.set(r.get() + 1);
    });
    drive_until(&[&c], Duration::from_secs(10), || renewed.get() > 0);
    keepalive.cancel(|_| ());
    let held = Rc::new(RefCell::new(None));
    let h = held.clone();
    let _pending = c.lock(format!("{p}lock"), lease, move |r| *h.borrow_mut() = Some(r));
    drive_until(&[&c], Duration::from_secs(10), || held.borrow().is_some());
    let key = held.borrow_mut().take().unwrap().expect("lock").key;
    ok(&c, |cb| c.unlock(key, cb));
}

#[test]
fn ipv4_and_ipv6_endpoints_are_checked_against_ip_sans_and_unix_sockets_work() {
    let files = TlsFiles::new();
    let listen =
        "--listen-client-urls=https://127.0.0.1:{client_port},https://[::1]:{client_port},\
                  unixs://localhost:{client_port}";
    let etcd = Etcd::start_tls(&files, false, &[listen]);
    let port = etcd.client_port();
    let unix = format!("unixs://{}/localhost:{port}", etcd.data_dir().display());
    for endpoint in [format!("https://127.0.0.1:{port}"), format!("https://[::1]:{port}"), unix] {
        let c = tls_client(std::slice::from_ref(&endpoint), ca(&files));
        let put = block(&c, |cb| c.put("/tls/ip", endpoint.clone(), PutOptions::new(), cb));
        assert!(put.is_ok(), "{endpoint}: {put:?}");
    }
    // The same name checks apply to a name: `localhost` is in the certificate.
    let c = tls_client(&[format!("https://localhost:{port}")], ca(&files));
    ok(&c, |cb| c.get("/tls/ip", GetOptions::new(), cb));
}

#[test]
fn a_plain_unix_socket_endpoint_works() {
    let etcd = Etcd::start_with(&[
        "--listen-client-urls=http://127.0.0.1:{client_port},unix://localhost:{client_port}",
    ]);
    let endpoint = format!("unix://{}/localhost:{}", etcd.data_dir().display(), etcd.client_port());
    let c = Client::new(Config::new().endpoints([endpoint])).unwrap();
    ok(&c, |cb| c.put("/unix", "1", PutOptions::new(), cb));
}

#[test]
fn mtls_is_accepted_with_a_client_certificate_and_refused_without() {
    let files = TlsFiles::new();
    let etcd = Etcd::start_tls(&files, true, &[]);
    let c = tls_client(&[etcd.endpoint()], mtls(&files));
    ok(&c, |cb| c.put("/mtls", "1", PutOptions::new(), cb));

    // Without a certificate: a failed handshake, named as such, never a hang.
    let c = tls_client(&[etcd.endpoint()], ca(&files));
    let err = get_error(&c);
    assert_unavailable(&err, &["TLS handshake with", "no client certificate"]);
    // A certificate from a CA the member does not trust.
    let stranger = files.pki.other_ca.issue("root", &[], false);
    let tls = ca(&files).identity_pem(&stranger.cert_pem, &stranger.key_pem);
    let err = get_error(&tls_client(&[etcd.endpoint()], tls));
    assert_unavailable(&err, &["TLS handshake with", "refused the client certificate"]);
}

#[test]
fn a_wrong_ca_fails_with_unknown_issuer_and_moves_to_the_next_endpoint() {
    let files = TlsFiles::new();
    let etcd = Etcd::start_tls(&files, false, &[]);
    let port = etcd.client_port();
    let c = tls_client(&[etcd.endpoint()], Tls::new().ca_file(&files.other_ca));
    let err = get_error(&c);
    assert_unavailable(
        &err,
        &[&format!("TLS handshake with 127.0.0.1:{port} failed"), "unknown issuer"],
    );

    // A failed handshake is left for the next endpoint, as a refused connect is: the second
    // endpoint is the same member reached by name, with the right CA for both.
    let named = format!("https://localhost:{port}");
    let both = Tls::new().ca_file(&files.ca).server_name_for(etcd.endpoint(), "wrong.example");
    let c = tls_client(&[etcd.endpoint(), named], both);
    ok(&c, |cb| c.put("/moved", "1", PutOptions::new(), cb));

    // Not verifying at all connects (and is named dangerous for a reason).
    let c = tls_client(&[etcd.endpoint()], Tls::new().danger_accept_invalid_certs());
    ok(&c, |cb| c.get("/moved", GetOptions::new(), cb));
}

#[test]
fn a_name_mismatch_is_reported_and_the_override_fixes_it() {
    let files = TlsFiles::new();
    let elsewhere = files.pki.ca.issue("etcd", &["etcd.example"], false);
    let (cert, key) = elsewhere.write(&files.dir, "elsewhere");
    let cert_flag = format!("--cert-file={}", cert.display());
    let key_flag = format!("--key-file={}", key.display());
    let etcd = Etcd::start_tls(&files, false, &[&cert_flag, &key_flag]);
    let err = get_error(&tls_client(&[etcd.endpoint()], ca(&files)));
    assert_unavailable(&err, &["name mismatch", "etcd.example"]);
    for tls in [
        ca(&files).server_name("etcd.example"),
        ca(&files).server_name_for(etcd.endpoint(), "etcd.example"),
    ] {
        let c = tls_client(&[etcd.endpoint()], tls);
        ok(&c, |cb| c.put("/named", "1", PutOptions::new(), cb));
    }
}

#[test]
fn an_expired_server_certificate_is_refused() {
    let files = TlsFiles::new();
    let expired = files.pki.ca.issue("etcd", &["127.0.0.1"], true);
    let (cert, key) = expired.write(&files.dir, "expired");
    let cert_flag = format!("--cert-file={}", cert.display());
    let key_flag = format!("--key-file={}", key.display());
    let etcd = Etcd::start_tls(&files, false, &[&cert_flag, &key_flag]);
    let err = get_error(&tls_client(&[etcd.endpoint()], ca(&files)));
    assert_unavailable(&err, &["TLS handshake with", "expired"]);
}

#[test]
fn a_server_that_never_answers_the_handshake_times_out_naming_it() {
    let silent = SilentListener::new();
    let config = Config::new()
        .endpoints([format!("https://{}", silent.endpoint())])
        .tls(Tls::new().danger_accept_invalid_certs())
        .connect_timeout(Duration::from_millis(300))
        .retry(0, Duration::ZERO);
    let c = Client::new(config).unwrap();
    let err = get_error(&c);
    assert_unavailable(&err, &["TLS handshake with", "timed out"]);
}

#[test]
fn bad_files_fail_client_new_naming_the_file() {
    let files = TlsFiles::new();
    let endpoints = ["https://127.0.0.1:2379"];
    let new = |tls: Tls| Client::new(Config::new().endpoints(endpoints).tls(tls)).map(|_| ());
    let missing = files.dir.join("missing.crt");
    let not_pem = files.write("not-pem.crt", "hello");
    let encrypted = files.write(
        "encrypted.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let other_key = files.write("other.key", &files.pki.other_ca.issue("x", &[], false).key_pem);
    let cases = [
        (Tls::new().ca_file(&missing), missing.clone(), "cannot read"),
        (Tls::new().ca_file(&not_pem), not_pem.clone(), "no certificate found"),
        (ca(&files).identity_files(&files.client_cert, &encrypted), encrypted.clone(), "encrypted"),
        (
            ca(&files).identity_files(&files.client_cert, &other_key),
            other_key.clone(),
            "does not match",
        ),
        (
            ca(&files).identity_files(&files.client_cert, &files.client_cert),
            files.client_cert.clone(),
            "no private key",
        ),
    ];
    for (tls, file, why) in cases {
        let err = new(tls).expect_err("accepted");
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        let named = err.message().contains(&file.display().to_string());
        assert!(named && err.message().contains(why), "{why:?} / {}: {err}", file.display());
    }
    // PKCS#1 and SEC1 keys are taken as well as PKCS#8.
    for issued in [files.pki.rsa_pkcs1_client("root"), files.pki.ec_sec1_client("root")] {
        new(ca(&files).identity_pem(&issued.cert_pem, &issued.key_pem)).expect("key format");
    }
}

#[test]
fn rotated_files_are_read_for_the_next_connection() {
    let files = TlsFiles::new();
    let etcd_ca = files.write("etcd-trusts.crt", &files.pki.ca.cert_pem);
    let (cert, key) = files.pki.client.write(&files.dir, "rotating");
    let trusted = format!("--trusted-ca-file={}", etcd_ca.display());
    let mut etcd = Etcd::start_tls(&files, true, &[&trusted]);
    let c = tls_client(&[etcd.endpoint()], ca(&files).identity_files(&cert, &key));
    ok(&c, |cb| c.put("/rotate", "old", PutOptions::new(), cb));

    // A new client CA: the member trusts only it from its restart on, and the client's
    // files now hold a certificate it signed.
    let new_ca = support::certs::Authority::new("rotated CA");
    let rotated = new_ca.issue("root", &[], false);
    std::fs::write(&etcd_ca, &new_ca.cert_pem).unwrap();
    etcd.restart();
    // While a file is broken, that attempt fails naming it; the next one reads it again.
    std::fs::write(&cert, "garbage").unwrap();
    let err = get_error(&c);
    assert_unavailable(&err, &[&cert.display().to_string(), "no certificate found"]);
    rotated.write(&files.dir, "rotating");
    ok(&c, |cb| c.put("/rotate", "new", PutOptions::new(), cb));

    // An unchanged client would have been refused.
    let (old_cert, old_key) = files.pki.client.write(&files.dir, "old");
    let stale = tls_client(&[etcd.endpoint()], ca(&files).identity_files(&old_cert, &old_key));
    assert_unavailable(&get_error(&stale), &["refused the client certificate"]);
}

#[test]
fn the_certificate_cn_is_the_user_when_no_token_is_sent() {
    let files = TlsFiles::new();
    let etcd = Etcd::start_tls(&files, true, &[]);
    // Set up as root (the CN of the harness's client certificate), then turn auth on.
    let root = tls_client(&[etcd.endpoint()], mtls(&files));
    ok(&root, |cb| root.user_add("root", "rootpw", cb));
    ok(&root, |cb| root.role_add("alice-rw", cb));
    let (from, to) = ("/alice/", "/alice0");
    ok(&root, |cb| root.role_grant_permission("alice-rw", PermissionType::Readwrite, from, to, cb));
    ok(&root, |cb| root.user_add_no_password("alice", cb));
    ok(&root, |cb| root.user_grant_role("alice", "alice-rw", cb));
    ok(&root, |cb| root.user_grant_role("root", "root", cb));
    ok(&root, |cb| root.auth_enable(cb));

    let alice_cert = files.pki.ca.issue("alice", &[], false);
    let alice = tls_client(
        &[etcd.endpoint()],
        ca(&files).identity_pem(&alice_cert.cert_pem, &alice_cert.key_pem),
    );
    ok(&alice, |cb| alice.put("/alice/x", "mine", PutOptions::new(), cb));
    let denied = block(&alice, |cb| alice.put("/bob/x", "no", PutOptions::new(), cb));
    assert_eq!(denied.expect_err("wrote outside its prefix").code(), Code::PermissionDenied);
    // root's certificate still administers, with no password sent.
    ok(&root, |cb| root.get("/alice/x", GetOptions::new(), cb));
}

#[test]
fn a_watch_over_tls_survives_a_kill_of_its_member_and_delivers_every_event_once() {
    let files = TlsFiles::new();
    let mut cluster = support::Cluster::start_tls(3, &files, true, &[]);
    let (victim, watch_endpoints, others) = support::failover::victim_first(&cluster);
    let c = tls_client(&watch_endpoints, mtls(&files));
    let writer = Config::new().endpoints(others).tls(mtls(&files));
    let created = support::failover::watch_through_a_fault_with(
        &c,
        "tls_failover",
        writer,
        || cluster.members[victim].kill(),
        || {},
    );
    assert!(created >= 2, "the watch was re-created on another member after the kill");
}

/// How a client leaves is invisible through etcd, so a rustls server on loopback (a thread)
/// records it: closing the client ends the TLS session with close_notify, which makes the
/// server's read end cleanly instead of with "unexpected EOF".
#[test]
fn closing_the_client_sends_close_notify() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{Read, Write};

    let files = TlsFiles::new();
    let certs = vec![CertificateDer::from_pem_file(&files.server_cert).unwrap()];
    let key = PrivateKeyDer::from_pem_file(&files.server_key).unwrap();
    #[allow(deprecated)] // ring's provider, as the client uses
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let conn = rustls::ServerConnection::new(std::sync::Arc::new(config)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, socket);
        tls.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap(); // SETTINGS, empty
        let mut preface = [0u8; 24];
        tls.read_exact(&mut preface).unwrap();
        tx.send(()).unwrap();
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).map(|_| ()).map_err(|e| e.to_string())
    });
    let c = tls_client(&[format!("https://127.0.0.1:{port}")], ca(&files));
    let result = Rc::new(RefCell::new(None));
    let r = result.clone();
    c.get("k", GetOptions::new(), move |res| *r.borrow_mut() = Some(res));
    drive_until(&[&c], Duration::from_secs(10), || rx.try_recv().is_ok());
    c.close();
    let cancelled = result.borrow_mut().take().expect("close ends the call").unwrap_err();
    assert_eq!(cancelled.code(), Code::Cancelled);
    assert_eq!(server.join().unwrap(), Ok(()), "the server saw close_notify");
}

#[test]
fn mixing_up_the_scheme_says_which_one_to_use() {
    let files = TlsFiles::new();
    let tls_etcd = Etcd::start_tls(&files, false, &[]);
    let plain_etcd = Etcd::start();
    // http:// to a TLS port: etcd closes without a word.
    let port = tls_etcd.client_port();
    let config =
        Config::new().endpoints([format!("http://127.0.0.1:{port}")]).retry(0, Duration::ZERO);
    let c = Client::new(config).unwrap();
    assert_unavailable(&get_error(&c), &["before it sent anything", "use https://"]);
    // https:// to a plaintext port: the handshake is cut short.
    let c = tls_client(&[format!("https://{}", plain_etcd.endpoint())], ca(&files));
    assert_unavailable(&get_error(&c), &["TLS handshake with", "use http://"]);
    // https:// with no CA at all (and no system roots compiled in) is refused up front.
    #[cfg(not(feature = "native-roots"))]
    {
        let err = Client::new(Config::new().endpoints([tls_etcd.endpoint()])).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("no CA configured"), "{err}");
        let asked = Tls::new().ca_file(&files.ca).native_roots(true);
        let err =
            Client::new(Config::new().endpoints([tls_etcd.endpoint()]).tls(asked)).unwrap_err();
        assert!(err.message().contains("needs the feature native-roots"), "{err}");
    }
}

/// With the `native-roots` feature, an `https://` endpoint with no `Tls` trusts the system's
/// CAs, as Go does; `SSL_CERT_FILE` (honoured by the system store's loader) stands in for
/// the system store here.
#[cfg(feature = "native-roots")]
#[test]
fn system_roots_are_trusted_when_no_ca_is_given() {
    let files = TlsFiles::new();
    let etcd = Etcd::start_tls(&files, false, &[]);
    std::env::set_var("SSL_CERT_FILE", &files.ca);
    let c = Client::new(Config::new().endpoints([etcd.endpoint()])).expect("system roots");
    ok(&c, |cb| c.put("/native", "1", PutOptions::new(), cb));
    let c = tls_client(&[etcd.endpoint()], Tls::new().native_roots(true));
    ok(&c, |cb| c.get("/native", GetOptions::new(), cb));
}
