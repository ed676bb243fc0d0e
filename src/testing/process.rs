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

/// The prefix of every data dir, followed by the owning process's id.
const DATA_DIR_PREFIX: &str = "evetcd-etcd-";

/// A fresh 0700 data dir in the temp dir (etcd warns about looser modes). `create` rather
/// than `create_dir_all` so a name clash fails instead of sharing. The first one a process
/// makes also sweeps the data dirs of processes that are gone (see [`sweep_orphans`]).
pub(super) fn make_data_dir() -> Result<PathBuf, Error> {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| sweep_orphans(&std::env::temp_dir()));
    let dir = std::env::temp_dir().join(format!(
        "{DATA_DIR_PREFIX}{}-{}-{}",
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

/// Removes the data dirs in `tmp` whose owning process no longer runs. A dir outlives its
/// `Etcd` when the process never drops it: one kept in a `static` (shared by a binary's
/// tests; statics are not dropped at exit), or a test process killed outright. Its etcd is
/// gone with the process (parent-death signal); this takes the disk space back. A dir whose
/// process id is alive (this process, or a reused id) is left alone. Linux only (`/proc`).
pub(super) fn sweep_orphans(tmp: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DATA_DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_dirs_of_processes_that_are_gone_are_swept_and_live_ones_kept() {
        let tmp = std::env::temp_dir().join(format!("evetcd-sweep-test-{}", nanos()));
        fs::create_dir(&tmp).unwrap();
        // A process that has exited (and been reaped): its id is free.
        let mut child = Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let orphan = tmp.join(format!("{DATA_DIR_PREFIX}{gone}-1-5"));
        let mine = tmp.join(format!("{DATA_DIR_PREFIX}{}-1-5", std::process::id()));
        let other = tmp.join("evetcd-other-1");
        for d in [&orphan, &mine, &other] {
            fs::create_dir_all(d.join("member")).unwrap();
        }
        sweep_orphans(&tmp);
        let orphan_left = orphan.exists() && Path::new(&format!("/proc/{gone}")).exists();
        assert_eq!(orphan.exists(), orphan_left, "removed unless the id was reused");
        assert!(mine.exists(), "a live process's dir stays");
        assert!(other.exists(), "not a data dir");
        fs::remove_dir_all(&tmp).unwrap();
    }
}
