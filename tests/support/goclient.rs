//! Go's etcd client (`go.etcd.io/etcd/client/v3`, the reference client) as a test peer.
//!
//! `tests/goclient/` is a small Go module whose one binary drives clientv3: it reads
//! commands as JSON lines on stdin and writes one result line per command, plus event lines
//! for background commands (watch, observe, lock, campaign, ...), each tagged with the
//! command's id. Its `main.go` documents every command. [`GoClient`] builds it (once per
//! test process, with Go's build cache), starts it against an endpoint and talks to it, so
//! that a test can interleave Go and evetcd operations step by step:
//!
//! ```ignore
//! if goclient::skip_without_go("go_put_evetcd_get") {
//!     return;
//! }
//! let etcd = Etcd::start();
//! let go = GoClient::start(&etcd.endpoint());
//! go.ok(json!({"cmd": "put", "key": "/k", "value": "v"}));
//! let s = go.ok(json!({"cmd": "session", "ttl": 10}));           // a background command
//! let m = go.ok(json!({"cmd": "mutex", "session": s.id(), "name": "/lock"}));
//! let held = go.run(json!({"cmd": "lock", "mutex": m.id()})).unwrap(); // its "done" event
//! assert_eq!(held["key"], format!("/lock/{}", s["lease_hex"].as_str().unwrap()));
//! ```
//!
//! Every wait has a deadline: a result or event that never comes, or a helper that exits,
//! fails the test with the helper's last stderr lines instead of hanging. Dropping the
//! client kills the helper (which also exits by itself once its stdin closes).
//!
//! Where `go` is missing, [`skip_without_go`] prints `SKIP: go not found: <test>` and the
//! test returns; with `CI=true` a missing Go fails the test instead. `EVETCD_GO` names the
//! `go` command to use (`EVETCD_GO=none` simulates a machine without Go).

use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a result or an event may take. The helper bounds each of its plain commands
/// by 15 s, so a result always comes before this unless the helper is stuck.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// The helper's stderr lines kept for failure messages.
const STDERR_TAIL: usize = 40;

/// Whether the test should return without running: `go` is missing. Prints a visible
/// `SKIP: go not found: <test>` line (straight to stderr, past libtest's capture), except
/// with `CI=true`, where a missing Go fails the test.
pub fn skip_without_go(test: &str) -> bool {
    if go_command().is_some() {
        return false;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("go not found, and CI=true requires it (test {test}); install Go or put it on PATH");
    }
    // One write of the whole line, so that it does not interleave with other output.
    let line = format!("SKIP: go not found: {test}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    true
}

/// Env var naming the `go` command to use instead of looking for one; a path that is not
/// an executable (say `none`) makes Go count as missing.
pub const GO_ENV: &str = "EVETCD_GO";

/// The `go` command: `$EVETCD_GO`; else the first on `PATH`, else `/usr/local/go/bin/go`
/// (Go's default install, often not on `PATH`).
pub fn go_command() -> Option<PathBuf> {
    if let Some(go) = std::env::var_os(GO_ENV) {
        let go = PathBuf::from(go);
        return is_executable(&go).then_some(go);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("go")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path.into_iter().chain([PathBuf::from("/usr/local/go/bin/go")]).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// The helper binary, built once per test process; panics with Go's output if the build
/// fails.
pub fn helper_binary() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(build) {
        Ok(bin) => bin.clone(),
        Err(e) => panic!("cannot build the Go clientv3 helper: {e}"),
    }
}

/// `go build` in `tests/goclient` into `<CARGO_TARGET_TMPDIR>/goclient/goclient`. Go's
/// build cache makes this a second or so after the first time; `-mod=readonly` makes a
/// go.mod or go.sum that does not match the code an error instead of an edit. A file lock
/// keeps test processes that run at the same time from writing the binary together.
fn build() -> Result<PathBuf, String> {
    let go = go_command().ok_or("go not found (on PATH or /usr/local/go/bin)")?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = repo.join("tests/goclient");
    let out_dir = match option_env!("CARGO_TARGET_TMPDIR") {
        Some(tmp) => PathBuf::from(tmp).join("goclient"),
        None => repo.join("target/goclient"),
    };
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let bin = out_dir.join("goclient");
    let _lock = BuildLock::take(&out_dir.join("build.lock"))?;
    let started = Instant::now();
    let out = Command::new(&go)
        .args(["build", "-mod=readonly", "-buildvcs=false", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", go.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`go build` in {} failed ({}):\n{}{}",
            src.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let took = started.elapsed();
    if took > Duration::from_secs(10) {
        eprintln!("goclient: built {} in {took:.1?}", bin.display());
    }
    Ok(bin)
}

/// An exclusive `flock` on a file, released when dropped (the file closes).
struct BuildLock(std::fs::File);

impl BuildLock {
    fn take(path: &Path) -> Result<BuildLock, String> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        // SAFETY: flock on a file descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!("locking {}: {}", path.display(), std::io::Error::last_os_error()));
        }
        Ok(BuildLock(file))
    }
}

/// A result or event line from the helper: a JSON object whose fields are reached through
/// `Deref` (`reply["lease"]`), plus the id of its command.
#[derive(Clone, PartialEq)]
pub struct Reply(pub Value);

impl Reply {
    /// The id of the command this line answers (for `session`, `mutex`, `election`, `ref`).
    pub fn id(&self) -> u64 {
        self.0["id"].as_u64().expect("every line has an id")
    }

    /// Field `name` as an i64 (revisions, leases, counts); panics if it is not one.
    pub fn i64(&self, name: &str) -> i64 {
        self.0[name].as_i64().unwrap_or_else(|| panic!("no integer {name:?} in {}", self.0))
    }

    /// Field `name` as a string; panics if it is not one.
    pub fn str(&self, name: &str) -> &str {
        self.0[name].as_str().unwrap_or_else(|| panic!("no string {name:?} in {}", self.0))
    }
}

impl Deref for Reply {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A command that clientv3 failed (`"ok": false`): its error message and gRPC code name.
#[derive(Clone, PartialEq)]
pub struct GoError {
    pub message: String,
    /// The gRPC code name (`"Canceled"`, `"NotFound"`, ...), when the error has one.
    pub code: Option<String>,
    /// The whole line (extra fields such as `compact_revision` or `attempts`).
    pub line: Value,
}

impl fmt::Display for GoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{} ({code})", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl fmt::Debug for GoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GoError({})", self.line)
    }
}

impl std::error::Error for GoError {}

/// What the stdout reader thread hands over.
enum Line {
    Json(Value),
    /// A line that is not a JSON object (a bug in the helper).
    Garbage(String),
    /// Stdout closed: the helper exited.
    Closed,
}

/// A running helper process connected to one etcd (see the module docs).
pub struct GoClient {
    child: RefCell<Child>,
    stdin: RefCell<ChildStdin>,
    lines: Receiver<Line>,
    /// Lines received but not yet asked for, in arrival order.
    backlog: RefCell<VecDeque<Value>>,
    next_id: Cell<u64>,
    timeout: Cell<Duration>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    version: String,
}

impl GoClient {
    /// Builds the helper if needed, starts it against `endpoints` (comma-separated, as
    /// `Etcd::endpoint()` or a joined `Cluster::endpoints()`) and waits until it is
    /// connected. Panics if it cannot.
    pub fn start(endpoints: &str) -> GoClient {
        let bin = helper_binary();
        let mut child = Command::new(&bin)
            .arg("--endpoints")
            .arg(endpoints)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parsed = match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v.is_object() => Line::Json(v),
                    _ => Line::Garbage(line),
                };
                if tx.send(parsed).is_err() {
                    return;
                }
            }
            let _ = tx.send(Line::Closed);
        });
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let t = tail.clone();
        // Spawned from the test's thread, so libtest captures the echo like the test's own
        // output: shown when the test fails.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("goclient: {line}");
                let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        let mut go = GoClient {
            child: RefCell::new(child),
            stdin: RefCell::new(stdin),
            lines,
            backlog: RefCell::new(VecDeque::new()),
            next_id: Cell::new(1),
            timeout: Cell::new(DEFAULT_TIMEOUT),
            stderr: tail,
            version: String::new(),
        };
        let ready = go.wait_for("the helper's ready line", |v| v["event"] == "ready");
        go.version = ready["client"].as_str().unwrap_or("unknown").to_string();
        go
    }

    /// The clientv3 version built in, e.g. `v3.6.17`.
    pub fn client_version(&self) -> &str {
        &self.version
    }

    /// How long each later wait for a result or event may take (default 20 s).
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout.set(timeout);
    }

    /// Sends `cmd` (a JSON object; an `"id"` is added unless it has one) without waiting,
    /// and returns its id, for [`GoClient::result`], [`GoClient::event`] and
    /// [`GoClient::done`].
    pub fn send(&self, mut cmd: Value) -> u64 {
        assert!(cmd.is_object(), "a command is a JSON object: {cmd}");
        let obj = cmd.as_object_mut().expect("checked");
        let id = match obj.get("id").and_then(Value::as_u64) {
            Some(id) => id,
            None => {
                let id = self.next_id.get();
                obj.insert("id".into(), json!(id));
                id
            }
        };
        self.next_id.set(self.next_id.get().max(id + 1));
        let mut line = cmd.to_string();
        line.push('\n');
        let mut stdin = self.stdin.borrow_mut();
        if let Err(e) = stdin.write_all(line.as_bytes()).and_then(|()| stdin.flush()) {
            panic!("sending {cmd} to the helper: {e}{}", self.diagnostics());
        }
        id
    }

    /// Sends `cmd` and waits for its result: `Ok` with the result's fields, or the error
    /// clientv3 returned. For a background command the result only says it started.
    pub fn call(&self, cmd: Value) -> Result<Reply, GoError> {
        let id = self.send(cmd);
        self.result(id)
    }

    /// [`GoClient::call`] for a command that must succeed.
    pub fn ok(&self, cmd: Value) -> Reply {
        let shown = cmd.to_string();
        self.call(cmd).unwrap_or_else(|e| panic!("Go command {shown} failed: {e}"))
    }

    /// Starts a background command, which must start, and waits for its "done" event: the
    /// outcome of a lock, a campaign or an STM transfer.
    pub fn run(&self, cmd: Value) -> Result<Reply, GoError> {
        let id = self.ok(cmd).id();
        self.done(id)
    }

    /// Waits for the result of command `id`.
    pub fn result(&self, id: u64) -> Result<Reply, GoError> {
        let line = self.wait_for(&format!("the result of command {id}"), |v| {
            v["id"] == id && v.get("event").is_none()
        });
        outcome(line)
    }

    /// Waits for the next event of background command `id` (its "done" event included).
    pub fn event(&self, id: u64) -> Reply {
        Reply(self.wait_for(&format!("an event of command {id}"), |v| is_event_of(v, id)))
    }

    /// The next event of command `id` if it has already arrived, without waiting.
    pub fn try_event(&self, id: u64) -> Option<Reply> {
        self.drain();
        let mut backlog = self.backlog.borrow_mut();
        let pos = backlog.iter().position(|v| is_event_of(v, id))?;
        backlog.remove(pos).map(Reply)
    }

    /// Waits for the "done" event of background command `id`, which must be its next event.
    pub fn done(&self, id: u64) -> Result<Reply, GoError> {
        let ev = self.event(id);
        assert_eq!(ev["event"], "done", "expected command {id} to be done, got {ev:?}");
        outcome(ev.0)
    }

    /// Cancels background command `id` and returns its "done" event's outcome (usually a
    /// `Canceled` error), which the helper writes before answering the cancel.
    pub fn cancel(&self, id: u64) -> Result<Reply, GoError> {
        self.ok(json!({"cmd": "cancel", "ref": id}));
        self.done(id)
    }

    /// Moves every line that has arrived into the backlog.
    fn drain(&self) {
        while let Ok(line) = self.lines.try_recv() {
            match line {
                Line::Json(v) => self.keep(v),
                Line::Garbage(line) => {
                    panic!("the helper wrote a line that is not a JSON object: {line:?}")
                }
                // The channel is disconnected from now on: the next wait reports the exit.
                Line::Closed => return,
            }
        }
    }

    /// Waits (up to the timeout) for the first line, oldest first, that `want` picks.
    fn wait_for(&self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        {
            let mut backlog = self.backlog.borrow_mut();
            if let Some(pos) = backlog.iter().position(&want) {
                return backlog.remove(pos).expect("position is in range");
            }
        }
        let timeout = self.timeout.get();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(Line::Json(v)) if want(&v) => return v,
                Ok(Line::Json(v)) => self.keep(v),
                Ok(Line::Garbage(line)) => {
                    panic!("the helper wrote a line that is not a JSON object: {line:?}")
                }
                Ok(Line::Closed) | Err(RecvTimeoutError::Disconnected) => {
                    panic!("the helper exited while waiting for {what}{}", self.diagnostics())
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {what} from the helper within {timeout:?}{}", self.diagnostics())
                }
            }
        }
    }

    /// Keeps a line for later, failing at once on a command the helper could not even
    /// read (answered under id 0).
    fn keep(&self, v: Value) {
        if v["id"] == 0 && v["ok"] == false {
            panic!("the helper rejected a command: {v}");
        }
        self.backlog.borrow_mut().push_back(v);
    }

    /// The exit status, lines not yet asked for and stderr tail, for failure messages.
    fn diagnostics(&self) -> String {
        let status = match self.child.borrow_mut().try_wait() {
            Ok(Some(status)) => format!("exited: {status}"),
            Ok(None) => "still running".to_string(),
            Err(e) => format!("status unknown: {e}"),
        };
        let backlog: Vec<String> = self.backlog.borrow().iter().map(Value::to_string).collect();
        let stderr = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        let stderr: Vec<&str> = stderr.iter().map(String::as_str).collect();
        format!(
            "\nhelper {status}\nlines not asked for:\n  {}\nlast stderr lines:\n  {}",
            backlog.join("\n  "),
            stderr.join("\n  ")
        )
    }
}

impl Drop for GoClient {
    fn drop(&mut self) {
        let child = self.child.get_mut();
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn is_event_of(v: &Value, id: u64) -> bool {
    v["id"] == id && v.get("event").is_some()
}

/// A result or done line as `Ok` or [`GoError`].
fn outcome(line: Value) -> Result<Reply, GoError> {
    if line["ok"] == true {
        return Ok(Reply(line));
    }
    Err(GoError {
        message: line["error"].as_str().unwrap_or("(no message)").to_string(),
        code: line["code"].as_str().map(str::to_string),
        line,
    })
}
