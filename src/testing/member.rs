//! One etcd member process: its ports, data dir, log, and the faults it can be put through.

use std::cell::Cell;
use std::fmt;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::rc::Rc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::log::{drain_log, Log, Stage};
use super::{process, tls, Error, EtcdBinary, EtcdBuilder, EtcdTls, LOG_ENV};
use crate::{Client, Config};

/// Generous: a loaded 2-core CI box starting several clusters at once.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Etcd::is_leader`] waits for the member's answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// One etcd member process on loopback, with its own ports and data dir.
///
/// Start one with [`Etcd::start`] (a single-member cluster) or [`Etcd::builder`]; members of
/// a [`Cluster`](super::Cluster) are `Etcd`s too. Dropping it kills the process with SIGKILL
/// (also when a test panics) and removes the data dir.
pub struct Etcd {
    pub(super) name: String,
    pub(super) client_port: u16,
    pub(super) peer_port: u16,
    pub(super) data_dir: PathBuf,
    /// Full command line, reused verbatim by restarts.
    pub(super) args: Vec<String>,
    pub(super) binary: EtcdBinary,
    pub(super) child: Option<Child>,
    pub(super) log: Arc<Log>,
    pub(super) paused: bool,
    /// Serves clients over TLS (`--cert-file` given): endpoints are `https://`.
    pub(super) https: bool,
    /// The files it was started with, for [`Etcd::config`].
    pub(super) tls: Option<EtcdTls>,
}

impl Etcd {
    /// Starts a single-member cluster with the default binary ([`EtcdBinary::find`]) and
    /// waits until it serves clients.
    pub fn start() -> Result<Etcd, Error> {
        EtcdBuilder::new().start()
    }

    /// Like [`Etcd::start`] with extra etcd flags (`--auth-token-ttl=1`, say): see
    /// [`EtcdBuilder::flag`].
    pub fn start_with(extra: &[&str]) -> Result<Etcd, Error> {
        EtcdBuilder::new().flags(extra).start()
    }

    /// Like [`Etcd::start_with`], serving clients over TLS with `tls`'s files.
    pub fn start_tls(tls: &EtcdTls, extra: &[&str]) -> Result<Etcd, Error> {
        EtcdBuilder::new().tls(tls.clone()).flags(extra).start()
    }

    /// Every setting: the binary, flags, TLS.
    pub fn builder() -> EtcdBuilder {
        EtcdBuilder::new()
    }

    /// The client listener: `127.0.0.1:PORT`, or `https://127.0.0.1:PORT` over TLS.
    pub fn endpoint(&self) -> String {
        match self.https {
            true => format!("https://127.0.0.1:{}", self.client_port),
            false => format!("127.0.0.1:{}", self.client_port),
        }
    }

    /// The client listener's address (for a [`Proxy`](super::Proxy) in front of it).
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port))
    }

    /// A client configuration for this member: its endpoint, and with TLS (and the `tls`
    /// feature) the CA and client certificate of its [`EtcdTls`].
    pub fn config(&self) -> Config {
        tls::client_config(Config::new().endpoints([self.endpoint()]), self.tls.as_ref())
    }

    /// The client port on 127.0.0.1.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The peer port on 127.0.0.1.
    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    /// The process id while it runs (paused counts as running).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its data dir (in the temp dir, removed on drop).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The member name (`m0`, `m1`, …), as `member list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The etcd it runs.
    pub fn binary(&self) -> &EtcdBinary {
        &self.binary
    }

    /// The last 50 log lines of the current (or last) process.
    pub fn logs(&self) -> Vec<String> {
        self.log.lock().tail.iter().cloned().collect()
    }

    /// Whether the process is alive (paused counts as alive). A process found exited is
    /// reaped.
    pub fn is_running(&mut self) -> bool {
        let running = match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        };
        if !running {
            // Reaped (or gone): forget the pid so it is never signalled again.
            self.child = None;
            self.paused = false;
        }
        running
    }

    /// Whether it is paused ([`Etcd::pause`]).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether this member leads its cluster, by its own account (Maintenance Status over
    /// a client of this crate). False when it does not answer within a second, is paused
    /// or not running, or serves TLS without the `tls` feature.
    pub fn is_leader(&self) -> bool {
        if self.child.is_none() || self.paused {
            return false;
        }
        let config = self
            .config()
            .timeout(STATUS_TIMEOUT)
            .connect_timeout(STATUS_TIMEOUT)
            .retry(0, Duration::ZERO);
        let Ok(client) = Client::new(config) else { return false };
        let leads = Rc::new(Cell::new(false));
        let answer = Rc::clone(&leads);
        client.status(move |res| {
            if let Ok(status) = res {
                let id = status.header.map_or(0, |h| h.member_id);
                answer.set(id != 0 && id == status.leader);
            }
        });
        client.run();
        leads.get()
    }

    /// Crashes it: SIGKILL, then reaps it. Fails if it is not running.
    pub fn kill(&mut self) -> Result<(), Error> {
        let child = self.running_child()?;
        child.kill().map_err(|e| Error::io(format!("killing etcd {}", self.name), e))?;
        self.reap()
    }

    /// Graceful shutdown: SIGTERM (and SIGCONT if paused, or it could never handle it),
    /// then waits for the exit. Fails if it is not running; one that does not exit within
    /// 15 s is killed and reported.
    pub fn stop(&mut self) -> Result<(), Error> {
        let pid = self.running_pid()?;
        process::signal(pid, "TERM")?;
        if self.paused {
            process::signal(pid, "CONT")?;
        }
        // Stderr reaching EOF is the exit event; no polling of the pid.
        if !self.log.wait_for(Instant::now() + STOP_TIMEOUT, |s| s.closed) {
            self.kill()?;
            return Err(Error::Process(format!(
                "etcd {} did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed it{}",
                self.name,
                self.log_excerpt()
            )));
        }
        self.reap()
    }

    /// Starts the member again with the same name, ports, data dir and flags and waits until
    /// it serves clients; a cluster member rejoins with its data (etcd ignores
    /// `--initial-cluster*` then). Stops it gracefully first if it is running: call
    /// [`Etcd::kill`] before for a crash-restart. The rest of its cluster must have quorum,
    /// or it never becomes ready: use [`Cluster::restart_all`](super::Cluster::restart_all)
    /// after a full outage.
    pub fn restart(&mut self) -> Result<(), Error> {
        if self.is_running() {
            self.stop()?;
        }
        self.start_again()?;
        self.wait_ready()
    }

    /// Like [`Etcd::restart`] without waiting for readiness; fails if the process is still
    /// running. Pair with [`Etcd::wait_ready`].
    pub fn start_again(&mut self) -> Result<(), Error> {
        if self.is_running() {
            return Err(Error::Process(format!(
                "etcd {} is still running; stop or kill it first",
                self.name
            )));
        }
        self.spawn()
    }

    /// Waits (up to 30 s) until the current process logs that it serves clients; the error
    /// carries its last log lines.
    pub fn wait_ready(&mut self) -> Result<(), Error> {
        wait_all(std::slice::from_mut(self), deadline(), Stage::Ready)
    }

    /// Freezes the process (SIGSTOP): its sockets stay open but nothing is answered, like a
    /// hung server. Returns once the kernel reports it stopped.
    pub fn pause(&mut self) -> Result<(), Error> {
        let pid = self.running_pid()?;
        process::signal(pid, "STOP")?;
        self.paused = true;
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        // Delivery is asynchronous; callers want "paused" to be true on return.
        while !process::is_stopped(pid) {
            if Instant::now() >= deadline {
                return Err(Error::Process(format!(
                    "etcd {} did not stop within {PAUSE_TIMEOUT:?} of SIGSTOP",
                    self.name
                )));
            }
            thread::yield_now();
        }
        Ok(())
    }

    /// Undoes [`Etcd::pause`] (SIGCONT).
    pub fn resume(&mut self) -> Result<(), Error> {
        process::signal(self.running_pid()?, "CONT")?;
        self.paused = false;
        Ok(())
    }

    fn running_child(&mut self) -> Result<&mut Child, Error> {
        let name = &self.name;
        self.child.as_mut().ok_or_else(|| Error::Process(format!("etcd {name} is not running")))
    }

    fn running_pid(&mut self) -> Result<u32, Error> {
        self.running_child().map(|c| c.id())
    }

    /// Waits for the exited (or killed) process, forgetting its pid.
    fn reap(&mut self) -> Result<(), Error> {
        self.paused = false;
        match self.child.take() {
            Some(mut child) => child
                .wait()
                .map(drop)
                .map_err(|e| Error::io(format!("waiting for etcd {}", self.name), e)),
            None => Ok(()),
        }
    }

    /// Starts the process with its command line, and a thread reading its log.
    pub(super) fn spawn(&mut self) -> Result<(), Error> {
        let bin = self.binary.etcd();
        let child = process::spawn(&bin, &self.args, &self.data_dir)
            .map_err(|e| Error::io(format!("spawning {}", bin.display()), e))?;
        self.child = Some(child);
        self.paused = false;
        self.log = Arc::new(Log::default());
        let stderr = self.child.as_mut().and_then(|c| c.stderr.take());
        let stderr = stderr.ok_or_else(|| Error::Process("etcd's stderr is not piped".into()))?;
        let log = Arc::clone(&self.log);
        let label = format!("etcd {} {}", self.name, self.endpoint());
        let echo = std::env::var_os(LOG_ENV).is_some();
        thread::Builder::new()
            .name(format!("etcd-log-{}", self.name))
            .spawn(move || drain_log(stderr, &log, &label, echo))
            .map(drop)
            .map_err(|e| Error::io("spawning the log thread", e))
    }

    fn log_excerpt(&self) -> String {
        let lines = self.logs();
        if lines.is_empty() {
            return "; it logged nothing".to_owned();
        }
        format!("; last {} log lines:\n{}", lines.len(), lines.join("\n"))
    }
}

impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint())
            .field("peer_port", &self.peer_port)
            .field("pid", &self.pid())
            .field("paused", &self.paused)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL also ends a paused (SIGSTOPped) process.
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.data_dir);
    }
}

/// When a start begun now must be done.
pub(super) fn deadline() -> Instant {
    Instant::now() + READY_TIMEOUT
}

/// Waits until every member's log reached `stage`. Fails early when any member's process
/// exits, so a broken member does not cost the full timeout.
pub(super) fn wait_all(members: &mut [Etcd], deadline: Instant, stage: Stage) -> Result<(), Error> {
    loop {
        if let Some(dead) = members.iter_mut().find(|m| m.log.lock().closed) {
            let status = dead
                .child
                .take()
                .and_then(|mut c| c.wait().ok())
                .map_or_else(|| "unknown".to_owned(), |s| s.to_string());
            dead.paused = false;
            return Err(Error::Start(format!(
                "etcd {} ({}) exited before {stage:?} (status {status}){}",
                dead.name,
                dead.endpoint(),
                dead.log_excerpt()
            )));
        }
        let Some(waiting) = members.iter().find(|m| !stage.reached(&m.log.lock())) else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(Error::Start(format!(
                "etcd {} ({}) not {stage:?} within {READY_TIMEOUT:?}{}",
                waiting.name,
                waiting.endpoint(),
                waiting.log_excerpt()
            )));
        }
        // Woken by this member's log event; the short cap re-checks the others for an early
        // exit.
        let slice = deadline.min(Instant::now() + Duration::from_millis(100));
        waiting.log.wait_for(slice, |s| stage.reached(s) || s.closed);
    }
}
