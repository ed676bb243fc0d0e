//! Real etcd member processes on loopback, single or as a static cluster.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::net::free_port;
use super::{etcd_bin_dir, next_id};

/// etcd 3.5 logs this (zap JSON, info level) once the member has joined the
/// cluster and its client listener is about to be served; the listening
/// socket is already bound then, so a client connecting right after is only
/// queued, never refused.
const READY_MSG: &str = r#""msg":"ready to serve client requests""#;
/// Logged once the peer listener is served (no quorum needed for that).
const PEER_SERVING_MSG: &str = r#""msg":"serving peer traffic""#;
/// Generous: a loaded 2-core CI box starting several clusters at once.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Log lines kept per member for failure messages.
const LOG_TAIL: usize = 50;
/// Bind-and-drop port picking can lose a race with other processes; a member
/// that dies with "address already in use" is retried on fresh ports.
const START_ATTEMPTS: usize = 3;
/// Set to echo every etcd log line to the test's stderr (captured by libtest
/// and shown for failing tests, or always with `--nocapture`).
pub const LOG_ENV: &str = "EVETCD_TEST_ETCD_LOGS";

/// Raft timing (heartbeat ms, election timeout ms). A single member cannot
/// lose leadership, so it can tick fast, which shortens its first election.
/// A cluster uses half of etcd's defaults: quick elections in failover tests,
/// yet enough slack that a busy 2-core machine does not cause spurious
/// leader changes. Both keep etcd's minimum lease TTL at 1 s. Overridable by
/// passing the flags as extra args (the last occurrence wins).
const SINGLE_TIMING: (u32, u32) = (10, 100);
const CLUSTER_TIMING: (u32, u32) = (50, 500);

/// One etcd member process with its own ports and data dir.
///
/// Dropping it SIGKILLs the process (also on panic unwinding) and removes the
/// data dir. The process additionally gets `PR_SET_PDEATHSIG`, so even a test
/// binary killed outright does not leave etcd running.
pub struct Etcd {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    /// Full command line, reused verbatim by restarts.
    args: Vec<String>,
    child: Option<Child>,
    log: Arc<Log>,
    paused: bool,
    /// Serves clients over TLS (`--cert-file` given): endpoints are `https://`.
    tls: bool,
    /// etcdctl's flags for this member (its CA and a client certificate, with TLS).
    etcdctl_flags: Vec<String>,
}

impl Etcd {
    /// Starts a single-member cluster and waits until it serves clients.
    pub fn start() -> Etcd {
        Etcd::start_with(&[])
    }

    /// Like [`Etcd::start`] with extra etcd flags (e.g. `--auth-token-ttl=1`),
    /// appended after the harness's own so they can override them. `{client_port}` in a
    /// flag stands for the member's client port.
    pub fn start_with(extra: &[&str]) -> Etcd {
        let mut cluster = Cluster::start_with(1, extra);
        cluster.members.pop().expect("one member")
    }

    /// The client listener: `127.0.0.1:PORT`, or `https://127.0.0.1:PORT` over TLS.
    pub fn endpoint(&self) -> String {
        match self.tls {
            true => format!("https://127.0.0.1:{}", self.client_port),
            false => format!("127.0.0.1:{}", self.client_port),
        }
    }

    /// Starts a single member serving clients over TLS with `files` (requiring client
    /// certificates with `mtls`), plus `extra` flags.
    pub fn start_tls(files: &super::certs::TlsFiles, mtls: bool, extra: &[&str]) -> Etcd {
        let mut cluster = Cluster::start_tls(1, files, mtls, extra);
        cluster.members.pop().expect("one member")
    }

    /// etcdctl's global flags for this member (TLS files, or none).
    pub fn etcdctl_flags(&self) -> &[String] {
        &self.etcdctl_flags
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    /// Pid of the running process; panics if it is not running.
    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Member name (`m0`, `m1`, ...), as shown by `etcdctl member list`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last log lines of the current (or last) process, for diagnostics.
    pub fn logs(&self) -> Vec<String> {
        self.log.lock().tail.iter().cloned().collect()
    }

    /// Whether the process is alive (paused counts as alive).
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

    /// Crash it: SIGKILL and reap. Panics if it is not running.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let mut child = self.child.take().expect("checked by signal");
        child.wait().unwrap_or_else(|e| panic!("waiting for etcd {}: {e}", self.name));
        self.paused = false;
    }

    /// Graceful shutdown: SIGTERM and wait for exit (resuming it first if
    /// paused, or it could never handle the signal). Panics if it is not
    /// running or does not exit within 15 s.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        if self.paused {
            self.signal(libc::SIGCONT);
        }
        // Stderr reaching EOF is the exit event; no polling of the pid.
        let exited = self.log.wait_for(Instant::now() + STOP_TIMEOUT, |s| s.closed);
        if !exited {
            self.kill();
            panic!(
                "etcd {} did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed it{}",
                self.name,
                self.log_excerpt()
            );
        }
        let mut child = self.child.take().expect("checked by signal");
        child.wait().unwrap_or_else(|e| panic!("waiting for etcd {}: {e}", self.name));
        self.paused = false;
    }

    /// Starts the member again with the same name, ports, data dir and flags
    /// and waits until it serves clients; a cluster member rejoins with its
    /// existing data (etcd ignores `--initial-cluster*` then). Stops it
    /// gracefully first if it is still running; call [`Etcd::kill`] before
    /// for a crash-restart. The rest of its cluster must have quorum, or it
    /// never becomes ready: use [`Cluster::restart_all`] after a full outage.
    pub fn restart(&mut self) {
        if self.is_running() {
            self.stop();
        }
        self.start_again();
        if let Err(e) = wait_all_ready(std::slice::from_mut(self), deadline()) {
            panic!("{e}");
        }
    }

    /// Like [`Etcd::restart`] without waiting for readiness; panics if the
    /// process is still running. Pair with [`Etcd::wait_ready`].
    pub fn start_again(&mut self) {
        assert!(!self.is_running(), "etcd {} is still running; stop or kill it first", self.name);
        self.child = None;
        self.spawn();
    }

    /// Waits (up to 30 s) until the current process logs that it serves
    /// clients; panics with its last log lines otherwise.
    pub fn wait_ready(&mut self) {
        if let Err(e) = wait_all_ready(std::slice::from_mut(self), deadline()) {
            panic!("{e}");
        }
    }

    /// Freezes the process (SIGSTOP): its sockets stay open but nothing is
    /// answered, like a hung server. Returns once the kernel reports it
    /// stopped.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
        let stat = format!("/proc/{}/stat", self.pid());
        let deadline = Instant::now() + Duration::from_secs(5);
        // Delivery is asynchronous; callers want "paused" to be true on return.
        while !proc_state_is_stopped(&stat) {
            assert!(Instant::now() < deadline, "etcd {} did not stop on SIGSTOP", self.name);
            thread::yield_now();
        }
    }

    /// Undoes [`Etcd::pause`] (SIGCONT).
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    fn child(&self) -> &Child {
        self.child.as_ref().unwrap_or_else(|| panic!("etcd {} is not running", self.name))
    }

    /// Signals by pid. Safe from pid reuse: the child is not reaped until we
    /// `wait` for it, so the pid cannot belong to another process.
    fn signal(&self, sig: libc::c_int) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: plain syscall on a pid we own.
        if unsafe { libc::kill(pid, sig) } != 0 {
            panic!("kill({pid}, {sig}) for etcd {}: {}", self.name, io::Error::last_os_error());
        }
    }

    fn spawn(&mut self) {
        let bin = etcd_bin_dir().join("etcd");
        let mut cmd = Command::new(&bin);
        cmd.args(&self.args)
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = spawn_from_long_lived_thread(cmd)
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let stderr = child.stderr.take().expect("stderr is piped");
        self.child = Some(child);
        self.paused = false;
        self.log = Arc::new(Log::default());
        let log = Arc::clone(&self.log);
        let label = format!("etcd {} {}", self.name, self.endpoint());
        let echo = std::env::var_os(LOG_ENV).is_some();
        thread::Builder::new()
            .name(format!("etcd-log-{}", self.name))
            .spawn(move || drain_log(stderr, &log, &label, echo))
            .unwrap_or_else(|e| panic!("spawning log thread: {e}"));
    }

    fn log_excerpt(&self) -> String {
        let lines = self.logs();
        if lines.is_empty() {
            return "; it logged nothing".to_owned();
        }
        format!("; last {} log lines:\n{}", lines.len(), lines.join("\n"))
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

/// An etcd cluster of `members.len()` members on loopback: static, or grown at run time
/// with [`Cluster::add_member`].
pub struct Cluster {
    pub members: Vec<Etcd>,
    /// What a member added later starts with, as the first ones did.
    token: String,
    timing: (u32, u32),
    extra: Vec<String>,
}

impl Cluster {
    /// Starts `n` members (typically 3) and waits until each serves clients.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// Like [`Cluster::start`] with extra etcd flags for every member.
    pub fn start_with(n: usize, extra: &[&str]) -> Cluster {
        assert!(n >= 1, "a cluster needs at least one member");
        let mut last_err = String::new();
        let timing = if n == 1 { SINGLE_TIMING } else { CLUSTER_TIMING };
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for _ in 0..START_ATTEMPTS {
            let mut members = Vec::with_capacity(n);
            let token = format!("evetcd-{}-{}-{}", std::process::id(), next_id(), nanos());
            match launch(&mut members, n, &extra, &token, timing) {
                Ok(()) => return Cluster { members, token, timing, extra },
                // Another process grabbed a port between our bind-and-drop
                // and etcd's bind; dropping `members` cleans up, then retry.
                Err(e) if e.contains("address already in use") => last_err = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("etcd kept hitting port collisions ({START_ATTEMPTS} attempts): {last_err}");
    }

    /// Like [`Cluster::start_with`], serving clients over TLS with `files` (see
    /// [`Etcd::start_tls`]).
    pub fn start_tls(
        n: usize,
        files: &super::certs::TlsFiles,
        mtls: bool,
        extra: &[&str],
    ) -> Cluster {
        let mut flags = files.etcd_flags(mtls);
        flags.extend(extra.iter().map(|s| s.to_string()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut cluster = Cluster::start_with(n, &flags);
        for m in &mut cluster.members {
            m.etcdctl_flags = files.etcdctl_flags();
        }
        cluster
    }

    /// Client endpoints of all members, in member order (see [`Etcd::endpoint`]).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Etcd::endpoint).collect()
    }

    /// Index of the member that currently leads, as seen by the leader
    /// itself; `None` while there is none (or no member answers within 1 s).
    /// Fault tests use it to hit the leader or to spare it: a write sent
    /// through a follower whose leader just died can hang until timeout.
    pub fn leader_index(&self) -> Option<usize> {
        self.members.iter().position(|m| {
            if m.child.is_none() {
                return false;
            }
            let out = super::etcdctl_with(
                &m.endpoint(),
                &m.etcdctl_flags,
                &[
                    "--dial-timeout=1s",
                    "--command-timeout=1s",
                    "endpoint",
                    "status",
                    "-w",
                    "fields",
                ],
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let field = |name: &str| {
                let prefix = format!("\"{name}\" : ");
                text.lines().find_map(|l| l.strip_prefix(&prefix)).map(str::to_owned)
            };
            let id = field("MemberID");
            out.status.success() && id.is_some() && id == field("Leader")
        })
    }

    /// Grows the cluster by one voting member at run time, as an operator would: picks its
    /// name (`m<index>`) and free loopback ports, has `announce(name, peer_url)` add it to
    /// the cluster (a MemberAdd with that peer URL, through any client) and return the
    /// `--initial-cluster` to join with (every member's `name=peer_url`, the new one's
    /// included: see [`Cluster::initial_cluster`]), then starts it with
    /// `--initial-cluster-state existing`, the cluster's flags and its own data dir, and
    /// waits until it serves clients. Returns its index in `members`. Unlike
    /// [`Cluster::start`], a port collision is not retried: the member is announced by then.
    pub fn add_member(&mut self, announce: impl FnOnce(&str, &str) -> String) -> usize {
        let index = self.members.len();
        let name = format!("m{index}");
        assert!(self.members.iter().all(|m| m.name != name), "member {name} exists");
        let (client_port, peer_port) = (free_port(), free_port());
        let initial_cluster = announce(&name, &format!("http://127.0.0.1:{peer_port}"));
        let joining = Joining {
            initial_cluster: &initial_cluster,
            state: "existing",
            token: &self.token,
            timing: self.timing,
        };
        let mut member = new_member(name, client_port, peer_port, &joining, &self.extra);
        member.etcdctl_flags =
            self.members.first().map_or_else(Vec::new, |m| m.etcdctl_flags.clone());
        member.spawn();
        self.members.push(member);
        let new = std::slice::from_mut(&mut self.members[index]);
        if let Err(e) = wait_all_ready(new, deadline()) {
            panic!("{e}");
        }
        index
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

    /// Stops every running member gracefully, starts all together and waits
    /// for all: after a full outage no member can become ready alone.
    pub fn restart_all(&mut self) {
        for m in &mut self.members {
            if m.is_running() {
                m.stop();
            }
        }
        for m in &mut self.members {
            m.start_again();
        }
        if let Err(e) = wait_all_ready(&mut self.members, deadline()) {
            panic!("{e}");
        }
    }
}

fn deadline() -> Instant {
    Instant::now() + READY_TIMEOUT
}

/// Spawns `n` members into `members` and waits until all serve clients.
///
/// Members of a new cluster are started one after another, each once the
/// previous one serves peer traffic. Started together, each new member's
/// "already bootstrapped?" probe of its peers hits listeners that are bound
/// but not yet served and waits out etcd's 1 s timeout per peer (observed:
/// 0.2 s vs 2.2 s for 3 members); a port nobody listens on yet, or a served
/// one, answers at once.
fn launch(
    members: &mut Vec<Etcd>,
    n: usize,
    extra: &[String],
    token: &str,
    timing: (u32, u32),
) -> Result<(), String> {
    let deadline = deadline();
    let ports: Vec<(String, u16, u16)> =
        (0..n).map(|i| (format!("m{i}"), free_port(), free_port())).collect();
    let initial_cluster = ports
        .iter()
        .map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    for (name, client_port, peer_port) in ports {
        let joining = Joining { initial_cluster: &initial_cluster, state: "new", token, timing };
        let mut member = new_member(name, client_port, peer_port, &joining, extra);
        member.spawn();
        members.push(member);
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
    extra: &[String],
) -> Etcd {
    let data_dir = make_data_dir();
    let tls = extra.iter().any(|a| a.starts_with("--cert-file"));
    let scheme = if tls { "https" } else { "http" };
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
    // `{client_port}` in a flag is this member's client port (extra listeners on ::1 or
    // a Unix socket, which etcd creates in its working directory, the data dir).
    args.extend(
        extra.iter().map(|s| versioned_flag(&s.replace("{client_port}", &client_port.to_string()))),
    );
    // Owned before spawning, so a failed spawn still cleans the data dir.
    Etcd {
        name,
        client_port,
        peer_port,
        data_dir,
        args,
        child: None,
        log: Arc::new(Log::default()),
        paused: false,
        tls,
        etcdctl_flags: Vec::new(),
    }
}

/// A flag as the etcd under test spells it: 3.6 renamed the `--experimental-*` flags the
/// tests use (`--experimental-watch-progress-notify-interval` is
/// `--watch-progress-notify-interval`, deprecated in 3.6) and 3.7 removed the old names.
fn versioned_flag(flag: &str) -> String {
    match flag.strip_prefix("--experimental-") {
        Some(rest) if super::etcd_version() >= (3, 6, 0) => format!("--{rest}"),
        _ => flag.to_string(),
    }
}

/// Startup milestones read from the log.
#[derive(Clone, Copy, Debug)]
enum Stage {
    PeerServing,
    Ready,
}

impl Stage {
    fn reached(self, s: &LogState) -> bool {
        match self {
            Stage::PeerServing => s.peer_serving,
            Stage::Ready => s.ready,
        }
    }
}

fn wait_all_ready(members: &mut [Etcd], deadline: Instant) -> Result<(), String> {
    wait_all(members, deadline, Stage::Ready)
}

/// Waits until every member's log reached `stage`. Fails early when any
/// member's process exits, so a broken member does not cost the full timeout.
fn wait_all(members: &mut [Etcd], deadline: Instant, stage: Stage) -> Result<(), String> {
    loop {
        if let Some(dead) = members.iter_mut().find(|m| m.log.lock().closed) {
            let status = dead
                .child
                .take()
                .and_then(|mut c| c.wait().ok())
                .map_or_else(|| "unknown".to_owned(), |s| s.to_string());
            return Err(format!(
                "etcd {} ({}) exited before {stage:?} (status {status}){}",
                dead.name,
                dead.endpoint(),
                dead.log_excerpt()
            ));
        }
        let Some(waiting) = members.iter().find(|m| !stage.reached(&m.log.lock())) else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "etcd {} ({}) not {stage:?} within {READY_TIMEOUT:?}{}",
                waiting.name,
                waiting.endpoint(),
                waiting.log_excerpt()
            ));
        }
        // Woken by this member's log event; the short cap re-checks the
        // others for an early exit.
        let slice = deadline.min(Instant::now() + Duration::from_millis(100));
        waiting.log.wait_for(slice, |s| stage.reached(s) || s.closed);
    }
}

/// What the log thread learned from one process's stderr.
#[derive(Default)]
struct LogState {
    tail: VecDeque<String>,
    peer_serving: bool,
    ready: bool,
    /// Stderr hit EOF: the process exited.
    closed: bool,
}

#[derive(Default)]
struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

impl Log {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `done` holds or `deadline` passes; returns whether it holds.
    fn wait_for(&self, deadline: Instant, done: impl Fn(&LogState) -> bool) -> bool {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let guard = self.lock();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |s| !done(s))
            .unwrap_or_else(|e| e.into_inner());
        done(&guard)
    }
}

/// Reads stderr to EOF for the process's whole life, so etcd never blocks on
/// a full pipe, recording readiness and the last lines.
fn drain_log(stderr: impl Read, log: &Log, label: &str, echo: bool) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
        if echo {
            eprintln!("[{label}] {line}");
        }
        let mut state = log.lock();
        if line.contains(READY_MSG) {
            state.ready = true;
            log.changed.notify_all();
        } else if line.contains(PEER_SERVING_MSG) {
            state.peer_serving = true;
            log.changed.notify_all();
        }
        if state.tail.len() == LOG_TAIL {
            state.tail.pop_front();
        }
        state.tail.push_back(line);
    }
    log.lock().closed = true;
    log.changed.notify_all();
}

fn proc_state_is_stopped(stat_path: &str) -> bool {
    // Format: "pid (comm) S ..."; comm may contain spaces, so split after ')'.
    fs::read_to_string(stat_path)
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('T')))
        .unwrap_or(false)
}

/// Asks the kernel to SIGKILL etcd when its parent goes away, so a test
/// binary killed by a timeout cannot leak servers.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: getpid is always safe.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the hook only makes async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Spawns on a thread that lives as long as the process. PR_SET_PDEATHSIG
/// fires when the *thread* that forked exits, and libtest ends a test's
/// thread when the test returns, which would kill an etcd kept in a static
/// and shared between tests.
fn spawn_from_long_lived_thread(cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("etcd-spawner".to_owned())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .unwrap_or_else(|e| panic!("spawning etcd-spawner thread: {e}"));
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner.send((cmd, reply_tx)).map_err(|_| io::Error::other("etcd-spawner thread is gone"))?;
    reply_rx.recv().map_err(|_| io::Error::other("etcd-spawner thread is gone"))?
}

/// A fresh 0700 data dir (etcd warns about looser modes). `create_dir`
/// rather than `create_dir_all` so a name clash fails instead of sharing.
fn make_data_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "evetcd-etcd-{}-{}-{}",
        std::process::id(),
        next_id(),
        nanos()
    ));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

fn nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}
