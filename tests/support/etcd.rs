//! Real etcd members on loopback, single or as a cluster: `evetcd::testing`'s, with the
//! binary [`super::etcd_binary`] picks, each member's etcdctl flags, and panics instead of
//! errors (the harness's errors carry the member's last log lines).

use std::ops::{Deref, DerefMut};

use evetcd::testing;

use super::certs::TlsFiles;

/// A harness result, or a panic with its error.
#[track_caller]
fn or_panic<T>(result: Result<T, testing::Error>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// The tests' binary and `extra` flags.
fn builder(extra: &[&str]) -> testing::EtcdBuilder {
    testing::EtcdBuilder::new().binary(super::etcd_binary()).flags(extra)
}

/// One etcd member process ([`testing::Etcd`], which it derefs to) and the etcdctl flags
/// that reach it.
pub struct Etcd {
    inner: testing::Etcd,
    etcdctl_flags: Vec<String>,
}

impl Etcd {
    /// Starts a single-member cluster and waits until it serves clients.
    pub fn start() -> Etcd {
        Etcd::start_with(&[])
    }

    /// Like [`Etcd::start`] with extra etcd flags (e.g. `--auth-token-ttl=1`), appended
    /// after the harness's own so they can override them. `{client_port}` in a flag stands
    /// for the member's client port.
    pub fn start_with(extra: &[&str]) -> Etcd {
        Etcd { inner: or_panic(builder(extra).start()), etcdctl_flags: Vec::new() }
    }

    /// Starts a single member serving clients over TLS with `files` (requiring client
    /// certificates with `mtls`), plus `extra` flags.
    pub fn start_tls(files: &TlsFiles, mtls: bool, extra: &[&str]) -> Etcd {
        let etcd = or_panic(builder(extra).tls(files.etcd_tls(mtls)).start());
        Etcd { inner: etcd, etcdctl_flags: files.etcdctl_flags() }
    }

    /// See [`testing::Etcd::endpoint`] (here too for `Etcd::endpoint` paths).
    pub fn endpoint(&self) -> String {
        self.inner.endpoint()
    }

    /// etcdctl's global flags for this member (TLS files, or none).
    pub fn etcdctl_flags(&self) -> &[String] {
        &self.etcdctl_flags
    }

    /// Pid of the running process; panics if it is not running.
    pub fn pid(&self) -> u32 {
        self.inner.pid().unwrap_or_else(|| panic!("etcd {} is not running", self.name()))
    }

    /// See [`testing::Etcd::kill`].
    pub fn kill(&mut self) {
        or_panic(self.inner.kill())
    }

    /// See [`testing::Etcd::stop`].
    pub fn stop(&mut self) {
        or_panic(self.inner.stop())
    }

    /// See [`testing::Etcd::restart`].
    pub fn restart(&mut self) {
        or_panic(self.inner.restart())
    }

    /// See [`testing::Etcd::start_again`].
    pub fn start_again(&mut self) {
        or_panic(self.inner.start_again())
    }

    /// See [`testing::Etcd::wait_ready`].
    pub fn wait_ready(&mut self) {
        or_panic(self.inner.wait_ready())
    }

    /// See [`testing::Etcd::pause`].
    pub fn pause(&mut self) {
        or_panic(self.inner.pause())
    }

    /// See [`testing::Etcd::resume`].
    pub fn resume(&mut self) {
        or_panic(self.inner.resume())
    }
}

impl Deref for Etcd {
    type Target = testing::Etcd;

    fn deref(&self) -> &testing::Etcd {
        &self.inner
    }
}

impl DerefMut for Etcd {
    fn deref_mut(&mut self) -> &mut testing::Etcd {
        &mut self.inner
    }
}

/// An etcd cluster on loopback ([`testing::Cluster`]), its members wrapped as [`Etcd`].
pub struct Cluster {
    pub members: Vec<Etcd>,
    /// The harness's cluster, its members moved into `members` (and back for the calls
    /// that need them all).
    inner: testing::Cluster,
    etcdctl_flags: Vec<String>,
}

impl Cluster {
    /// Starts `n` members (typically 3) and waits until each serves clients.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// Like [`Cluster::start`] with extra etcd flags for every member.
    pub fn start_with(n: usize, extra: &[&str]) -> Cluster {
        Cluster::wrap(or_panic(builder(extra).start_cluster(n)), Vec::new())
    }

    /// Like [`Cluster::start_with`], serving clients over TLS with `files` (see
    /// [`Etcd::start_tls`]).
    pub fn start_tls(n: usize, files: &TlsFiles, mtls: bool, extra: &[&str]) -> Cluster {
        let cluster = or_panic(builder(extra).tls(files.etcd_tls(mtls)).start_cluster(n));
        Cluster::wrap(cluster, files.etcdctl_flags())
    }

    fn wrap(inner: testing::Cluster, etcdctl_flags: Vec<String>) -> Cluster {
        let mut cluster = Cluster { members: Vec::new(), inner, etcdctl_flags };
        cluster.take_members();
        cluster
    }

    /// Client endpoints of all members, in member order (see [`Etcd::endpoint`]).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Etcd::endpoint).collect()
    }

    /// See [`testing::Cluster::leader_index`].
    pub fn leader_index(&self) -> Option<usize> {
        self.members.iter().position(|m| m.is_leader())
    }

    /// See [`testing::Cluster::add_member`]; the new member gets the cluster's etcdctl flags.
    pub fn add_member(&mut self, announce: impl FnOnce(&str, &str) -> String) -> usize {
        self.with_inner(|c| c.add_member(announce))
    }

    /// See [`testing::Cluster::initial_cluster`].
    pub fn initial_cluster(members: &[(String, Vec<String>)]) -> String {
        testing::Cluster::initial_cluster(members)
    }

    /// See [`testing::Cluster::restart_all`].
    pub fn restart_all(&mut self) {
        self.with_inner(testing::Cluster::restart_all)
    }

    /// Runs `f` on the harness's cluster holding the members, then takes them back.
    fn with_inner<T>(
        &mut self,
        f: impl FnOnce(&mut testing::Cluster) -> Result<T, testing::Error>,
    ) -> T {
        self.inner.members = self.members.drain(..).map(|m| m.inner).collect();
        let result = f(&mut self.inner);
        self.take_members();
        or_panic(result)
    }

    /// Moves the harness cluster's members into `members`.
    fn take_members(&mut self) {
        let flags = &self.etcdctl_flags;
        let members = self.inner.members.drain(..);
        self.members = members.map(|inner| Etcd { inner, etcdctl_flags: flags.clone() }).collect();
    }
}
