//! Starting members: one, a static cluster of `n`, or one more joining a running cluster.

use std::fmt;
use std::sync::Arc;

use super::log::{Log, Stage};
use super::member::{deadline, wait_all};
use super::{free_port, nanos, next_id, process, tls, Error, Etcd, EtcdBinary, EtcdTls};
use crate::Config;

/// Raft timing (heartbeat ms, election timeout ms). A single member cannot lose leadership,
/// so it can tick fast, which shortens its first election. A cluster uses half of etcd's
/// defaults: quick elections in failover tests, yet enough slack that a busy 2-core machine
/// does not cause spurious leader changes. Both keep etcd's minimum lease TTL at 1 s.
/// Overridable with flags (the last occurrence wins).
const SINGLE_TIMING: (u32, u32) = (10, 100);
const CLUSTER_TIMING: (u32, u32) = (50, 500);
/// Bind-and-drop port picking can lose a race with other processes; a start that dies with
/// "address already in use" is retried on fresh ports.
const START_ATTEMPTS: usize = 3;

/// How to start members: the binary, extra flags, TLS. [`Etcd::start`] and
/// [`Cluster::start`] are shorthands for the defaults.
///
/// ```no_run
/// use evetcd::testing::{EtcdBinary, EtcdBuilder};
///
/// # fn main() -> Result<(), evetcd::testing::Error> {
/// let etcd = EtcdBuilder::new()
///     .binary(EtcdBinary::from_dir("/opt/etcd-v3.5.17")?)
///     .flag("--auth-token=simple")
///     .start()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct EtcdBuilder {
    binary: Option<EtcdBinary>,
    flags: Vec<String>,
    tls: Option<EtcdTls>,
}

impl EtcdBuilder {
    /// The defaults: [`EtcdBinary::find`], no extra flags, plain TCP.
    pub fn new() -> EtcdBuilder {
        EtcdBuilder::default()
    }

    /// Starts members with this etcd instead of [`EtcdBinary::find`]'s.
    pub fn binary(mut self, binary: EtcdBinary) -> EtcdBuilder {
        self.binary = Some(binary);
        self
    }

    /// An extra etcd flag (`--auth-token-ttl=1`), after the harness's own so it can override
    /// them (for etcd the last occurrence wins). `{client_port}` in it stands for the
    /// member's client port (for an extra listener, say). `--experimental-*` flags are
    /// spelt as the binary's version wants them (see [`EtcdBinary::versioned_flag`]).
    ///
    /// The harness's own flags: `--name`, `--data-dir`, the client and peer URLs on
    /// 127.0.0.1, `--initial-cluster*`, `--heartbeat-interval` and `--election-timeout`
    /// (10/100 ms for one member, 50/500 ms for a cluster), `--unsafe-no-fsync`, and the
    /// zap JSON logger on stderr at level info, which readiness is read from: keep it.
    pub fn flag(mut self, flag: impl Into<String>) -> EtcdBuilder {
        self.flags.push(flag.into());
        self
    }

    /// Several [`flag`](EtcdBuilder::flag)s.
    pub fn flags<I, S>(mut self, flags: I) -> EtcdBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.flags.extend(flags.into_iter().map(|f| f.as_ref().to_owned()));
        self
    }

    /// Serves clients over TLS with `tls`'s files (mTLS if it requires client certificates).
    pub fn tls(mut self, tls: EtcdTls) -> EtcdBuilder {
        self.tls = Some(tls);
        self
    }

    /// Starts a single-member cluster and waits until it serves clients.
    pub fn start(&self) -> Result<Etcd, Error> {
        let mut cluster = self.start_cluster(1)?;
        cluster.members.pop().ok_or_else(|| Error::Start("no member started".into()))
    }

    /// Starts `n` members (3, typically) and waits until each serves clients. They start
    /// one after another, each once the previous one serves peer traffic: started together,
    /// each new member's "already bootstrapped?" probe of its peers hits listeners that are
    /// bound but not yet served and waits out etcd's 1 s timeout per peer.
    pub fn start_cluster(&self, n: usize) -> Result<Cluster, Error> {
        if n == 0 {
            return Err(Error::Start("a cluster needs at least one member".into()));
        }
        let binary = match &self.binary {
            Some(binary) => binary.clone(),
            None => EtcdBinary::find()?,
        };
        let mut flags = self.tls.as_ref().map_or_else(Vec::new, EtcdTls::etcd_flags);
        flags.extend(self.flags.iter().cloned());
        let setup = Setup { binary, flags, tls: self.tls.clone() };
        let timing = if n == 1 { SINGLE_TIMING } else { CLUSTER_TIMING };
        let mut last_err = String::new();
        for _ in 0..START_ATTEMPTS {
            let token = format!("evetcd-{}-{}-{}", std::process::id(), next_id(), nanos());
            let mut members = Vec::with_capacity(n);
            match launch(&mut members, n, &setup, &token, timing) {
                Ok(()) => return Ok(Cluster { members, token, timing, setup }),
                // Another process took a port between our bind-and-drop and etcd's bind;
                // dropping `members` cleans up, then retry.
                Err(e) if e.to_string().contains("address already in use") => {
                    last_err = e.to_string()
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Start(format!(
            "etcd kept hitting port collisions ({START_ATTEMPTS} attempts): {last_err}"
        )))
    }
}

/// What every member of a cluster starts with, a member added later included.
#[derive(Clone, Debug)]
struct Setup {
    binary: EtcdBinary,
    /// TLS flags, then the caller's.
    flags: Vec<String>,
    tls: Option<EtcdTls>,
}

/// An etcd cluster on loopback: `members.len()` members, static or grown at run time with
/// [`Cluster::add_member`]. Dropping it kills every member and removes their data dirs.
pub struct Cluster {
    /// The members, in start order (named `m0`, `m1`, …).
    pub members: Vec<Etcd>,
    token: String,
    timing: (u32, u32),
    setup: Setup,
}

impl Cluster {
    /// Starts `n` members (typically 3) with the default binary and waits until each serves
    /// clients (see [`EtcdBuilder::start_cluster`]).
    pub fn start(n: usize) -> Result<Cluster, Error> {
        EtcdBuilder::new().start_cluster(n)
    }

    /// Like [`Cluster::start`] with extra etcd flags for every member.
    pub fn start_with(n: usize, extra: &[&str]) -> Result<Cluster, Error> {
        EtcdBuilder::new().flags(extra).start_cluster(n)
    }

    /// Like [`Cluster::start_with`], serving clients over TLS with `tls`'s files.
    pub fn start_tls(n: usize, tls: &EtcdTls, extra: &[&str]) -> Result<Cluster, Error> {
        EtcdBuilder::new().tls(tls.clone()).flags(extra).start_cluster(n)
    }

    /// Client endpoints of all members, in member order (see [`Etcd::endpoint`]).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Etcd::endpoint).collect()
    }

    /// A client configuration for the cluster: every member's endpoint, and TLS as in
    /// [`Etcd::config`].
    pub fn config(&self) -> Config {
        tls::client_config(Config::new().endpoints(self.endpoints()), self.setup.tls.as_ref())
    }

    /// Index of the member that currently leads, as seen by the leader itself (see
    /// [`Etcd::is_leader`]); `None` while there is none, or none answers. Members are asked
    /// in turn, up to a second each.
    pub fn leader_index(&self) -> Option<usize> {
        self.members.iter().position(Etcd::is_leader)
    }

    /// Grows the cluster by one voting member at run time, as an operator would: picks its
    /// name (`m<index>`) and free loopback ports, has `announce(name, peer_url)` add it to
    /// the cluster (a MemberAdd with that peer URL, through any client) and return the
    /// `--initial-cluster` to join with (every member's `name=peer_url`, the new one's
    /// included: see [`Cluster::initial_cluster`]), then starts it with
    /// `--initial-cluster-state existing`, the cluster's flags and its own data dir, and
    /// waits until it serves clients. Returns its index in `members`. Unlike
    /// [`Cluster::start`], a port collision is not retried: the member is announced by then.
    pub fn add_member(
        &mut self,
        announce: impl FnOnce(&str, &str) -> String,
    ) -> Result<usize, Error> {
        let index = self.members.len();
        let name = format!("m{index}");
        if self.members.iter().any(|m| m.name == name) {
            return Err(Error::Start(format!("member {name} exists")));
        }
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let initial_cluster = announce(&name, &format!("http://127.0.0.1:{peer_port}"));
        let joining = Joining {
            initial_cluster: &initial_cluster,
            state: "existing",
            token: &self.token,
            timing: self.timing,
        };
        let mut member = new_member(name, client_port, peer_port, &joining, &self.setup)?;
        member.spawn()?;
        self.members.push(member);
        wait_all(std::slice::from_mut(&mut self.members[index]), deadline(), Stage::Ready)?;
        Ok(index)
    }

    /// The `--initial-cluster` value for `members`, each a name and its peer URLs: `name=url`
    /// for every URL, comma-separated.
    pub fn initial_cluster(members: &[(String, Vec<String>)]) -> String {
        members
            .iter()
            .flat_map(|(name, urls)| urls.iter().map(move |u| format!("{name}={u}")))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Stops every running member gracefully, starts all together and waits for all: after
    /// a full outage no member can become ready alone.
    pub fn restart_all(&mut self) -> Result<(), Error> {
        for m in &mut self.members {
            if m.is_running() {
                m.stop()?;
            }
        }
        for m in &mut self.members {
            m.start_again()?;
        }
        wait_all(&mut self.members, deadline(), Stage::Ready)
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("members", &self.members)
            .field("token", &self.token)
            .field("binary", &self.setup.binary)
            .field("flags", &self.setup.flags)
            .finish()
    }
}

/// Spawns `n` members into `members` and waits until all serve clients; each but the last
/// once the one before serves peer traffic (see [`EtcdBuilder::start_cluster`]).
fn launch(
    members: &mut Vec<Etcd>,
    n: usize,
    setup: &Setup,
    token: &str,
    timing: (u32, u32),
) -> Result<(), Error> {
    let deadline = deadline();
    let mut ports = Vec::with_capacity(n);
    for i in 0..n {
        ports.push((format!("m{i}"), free_port()?, free_port()?));
    }
    let initial_cluster = ports
        .iter()
        .map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    for (name, client_port, peer_port) in ports {
        let joining = Joining { initial_cluster: &initial_cluster, state: "new", token, timing };
        let member = new_member(name, client_port, peer_port, &joining, setup)?;
        // Owned before spawning, so a failed spawn still cleans the data dir.
        members.push(member);
        let last = members.len() - 1;
        members[last].spawn()?;
        if n > 1 {
            wait_all(members, deadline, Stage::PeerServing)?;
        }
    }
    wait_all(members, deadline, Stage::Ready)
}

/// How a member joins: the `--initial-cluster*` flags and the raft timing.
struct Joining<'a> {
    initial_cluster: &'a str,
    /// `new` (bootstrapping together) or `existing` (added at run time).
    state: &'a str,
    token: &'a str,
    timing: (u32, u32),
}

/// A member with its command line and a fresh data dir, not started yet.
fn new_member(
    name: String,
    client_port: u16,
    peer_port: u16,
    joining: &Joining,
    setup: &Setup,
) -> Result<Etcd, Error> {
    let data_dir = process::make_data_dir()?;
    let https = setup.flags.iter().any(|a| a.starts_with("--cert-file"));
    let scheme = if https { "https" } else { "http" };
    let client_url = format!("{scheme}://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let (heartbeat, election) = joining.timing;
    let mut args: Vec<String> = [
        "--name",
        &name,
        "--data-dir",
        &data_dir.to_string_lossy(),
        "--listen-client-urls",
        &client_url,
        "--advertise-client-urls",
        &client_url,
        "--listen-peer-urls",
        &peer_url,
        "--initial-advertise-peer-urls",
        &peer_url,
        "--initial-cluster",
        joining.initial_cluster,
        "--initial-cluster-state",
        joining.state,
        "--initial-cluster-token",
        joining.token,
        "--heartbeat-interval",
        &heartbeat.to_string(),
        "--election-timeout",
        &election.to_string(),
        // Tests never need durability across machine crashes.
        "--unsafe-no-fsync",
        // Readiness detection depends on zap JSON on stderr.
        "--logger",
        "zap",
        "--log-outputs",
        "stderr",
        "--log-level",
        "info",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // `{client_port}` in a flag is this member's client port (extra listeners on ::1 or a
    // Unix socket, which etcd creates in its working directory, the data dir).
    let port = client_port.to_string();
    args.extend(
        setup.flags.iter().map(|s| setup.binary.versioned_flag(&s.replace("{client_port}", &port))),
    );
    Ok(Etcd {
        name,
        client_port,
        peer_port,
        data_dir,
        args,
        binary: setup.binary.clone(),
        child: None,
        log: Arc::new(Log::default()),
        paused: false,
        https,
        tls: setup.tls.clone(),
    })
}
