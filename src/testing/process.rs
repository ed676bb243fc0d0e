//! Spawning etcd processes and signalling them, without unsafe code: SIGKILL through
//! [`Child::kill`], the other signals through the `kill` command, and the parent-death
//! signal through util-linux's `setpriv` where it is installed.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;

use super::{nanos, next_id, Error};

/// Starts `bin` with `args` in `cwd`, stderr piped (stdin and stdout closed).
///
/// Run through `setpriv --pdeathsig KILL` when available, so the kernel kills etcd when its
/// parent goes away and a test binary killed by a timeout leaks no servers. That signal
/// fires when the *thread* that forked exits, and libtest ends a test's thread when the test
/// returns, which would kill an etcd kept in a static and shared between tests: every spawn
/// therefore happens on one thread that lives as long as the process.
pub(super) fn spawn(bin: &Path, args: &[String], cwd: &Path) -> io::Result<Child> {
    let mut cmd = if has_setpriv() {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--"]).arg(bin);
        cmd
    } else {
        Command::new(bin)
    };
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    spawn_from_long_lived_thread(cmd)
}

/// Whether `setpriv` runs and knows `--pdeathsig` (util-linux 2.33 and later).
fn has_setpriv() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        Command::new("setpriv")
            .arg("--help")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--pdeathsig"))
    })
}

fn spawn_from_long_lived_thread(cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Option<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        let thread = thread::Builder::new().name("etcd-spawner".to_owned()).spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        thread.ok().map(|_| tx)
    });
    let gone = || io::Error::other("the etcd-spawner thread could not start or is gone");
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner.as_ref().ok_or_else(gone)?.send((cmd, reply_tx)).map_err(|_| gone())?;
    reply_rx.recv().map_err(|_| gone())?
}

/// Sends signal `name` (`TERM`, `STOP`, `CONT`) to `pid` with the `kill` command.
///
/// Safe from pid reuse as long as the caller has not reaped the child: until then the pid
/// cannot belong to another process.
pub(super) fn signal(pid: u32, name: &str) -> Result<(), Error> {
    let out = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Process(format!("running `kill -s {name} {pid}`: {e}")))?;
    if !out.status.success() {
        return Err(Error::Process(format!(
            "`kill -s {name} {pid}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Whether the kernel reports `pid` stopped (state `T` in `/proc/PID/stat`).
pub(super) fn is_stopped(pid: u32) -> bool {
    // Format: "pid (comm) S ..."; comm may contain spaces, so split after the last ')'.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('T')))
        .unwrap_or(false)
}

/// A fresh 0700 data dir in the temp dir (etcd warns about looser modes). `create` rather
/// than `create_dir_all` so a name clash fails instead of sharing.
pub(super) fn make_data_dir() -> Result<PathBuf, Error> {
    let dir = std::env::temp_dir().join(format!(
        "evetcd-etcd-{}-{}-{}",
        std::process::id(),
        next_id(),
        nanos()
    ));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    Ok(dir)
}
