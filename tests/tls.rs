//! TLS and mTLS against a real etcd 3.5.1 serving clients with certificates made at test
//! time: every kind of call, the failures users meet (wrong CA, name mismatch, no client
//! certificate, expired certificate), certificate rotation and CN authentication.

mod support;

use evetcd::{Client, Code, Config, GetOptions, PutOptions, Tls};
use std::time::Duration;
use support::certs::TlsFiles;
use support::client::ok;
use support::Etcd;

fn tls_client(endpoints: &[String], tls: Tls) -> Client {
    let config = Config::new().endpoints(endpoints).tls(tls).timeout(Duration::from_secs(10));
    Client::new(config).expect("valid config")
}

fn ca(files: &TlsFiles) -> Tls {
    Tls::new().ca_file(&files.ca)
}

#[test]
fn put_and_get_over_tls() {
    let files = TlsFiles::new();
    let etcd = Etcd::start_tls(&files, false, &[]);
    let c = tls_client(&[etcd.endpoint()], ca(&files));
    let p = support::unique_prefix("tls_kv");
    ok(&c, |cb| c.put(format!("{p}a"), "1", PutOptions::new(), cb));
    let got = ok(&c, |cb| c.get(format!("{p}a"), GetOptions::new(), cb));
    assert_eq!(&got.kvs[0].value[..], b"1");
}
