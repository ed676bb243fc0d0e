//! Certificates for TLS tests, made at test time (see `src/tls/testcerts.rs`, shared with
//! the unit tests), and written to a private temporary directory for etcd and the client.
//! `evetcd::testing` takes certificate files rather than making them, so rcgen stays a
//! dev-dependency: these files become its [`EtcdTls`].

#[path = "../../src/tls/testcerts.rs"]
mod testcerts;

pub use testcerts::{Authority, Issued, Pki};

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use evetcd::testing::EtcdTls;

/// A [`Pki`] on disk: `ca.crt`, `server.crt`/`.key`, `client.crt`/`.key` (CN `root`) and
/// `other-ca.crt`. The directory is removed on drop.
pub struct TlsFiles {
    pub pki: Pki,
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
}

impl TlsFiles {
    pub fn new() -> TlsFiles {
        let pki = Pki::new();
        let dir = std::env::temp_dir().join(format!(
            "evetcd-tls-{}-{}",
            std::process::id(),
            super::next_id()
        ));
        fs::DirBuilder::new().mode(0o700).recursive(true).create(&dir).expect("tls dir");
        let ca = write(&dir, "ca.crt", &pki.ca.cert_pem);
        let other_ca = write(&dir, "other-ca.crt", &pki.other_ca.cert_pem);
        let (server_cert, server_key) = pki.server.write(&dir, "server");
        let (client_cert, client_key) = pki.client.write(&dir, "client");
        TlsFiles { pki, dir, ca, server_cert, server_key, client_cert, client_key, other_ca }
    }

    /// The harness's TLS for a member served with these files: the server certificate, the
    /// CA, and the client certificate for its own clients; with `mtls`, client certificates
    /// signed by the CA are required (`--client-cert-auth`).
    pub fn etcd_tls(&self, mtls: bool) -> EtcdTls {
        EtcdTls::new(&self.ca, &self.server_cert, &self.server_key)
            .client_identity(&self.client_cert, &self.client_key)
            .require_client_certs(mtls)
    }

    /// etcdctl's flags for a member served with these files (it always shows the client
    /// certificate: accepted whether or not the member asks for one).
    pub fn etcdctl_flags(&self) -> Vec<String> {
        vec![
            format!("--cacert={}", self.ca.display()),
            format!("--cert={}", self.client_cert.display()),
            format!("--key={}", self.client_key.display()),
        ]
    }

    /// Writes `contents` as `name` in this directory.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        write(&self.dir, name, contents)
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, contents).expect("write pem");
    path
}
