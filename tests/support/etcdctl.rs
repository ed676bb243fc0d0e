//! Runs etcdctl 3.5.1 and `examples/etcdctl` side by side, for the compatibility tests.
//!
//! `Both::run(args, stdin)` runs the same command line through each binary against the same
//! endpoints; tests compare stdout byte for byte (after normalising only what differs by
//! nature between two runs, such as lease ids or revisions), the `Error:` line on stderr
//! (etcdctl also logs JSON retry warnings there, which are dropped) and the exit status.

use super::etcd_bin_dir;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// What one run printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub stdout: String,
    /// The `Error: ...` lines of stderr (etcdctl's JSON log lines are left out).
    pub errors: Vec<String>,
    pub code: i32,
}

/// The example's binary, built once per test process.
pub fn example_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--example", "etcdctl"])
            .current_dir(&repo)
            .status()
            .expect("cargo build --example etcdctl");
        assert!(status.success(), "cargo build --example etcdctl failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join("target"));
        target.join("debug/examples/etcdctl")
    })
    .clone()
}

/// The command line `bin --endpoints=ENDPOINTS ARGS...` (either binary), stdout piped.
pub fn command(bin: &Path, endpoints: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    cmd
}

fn run_bin(bin: PathBuf, endpoints: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let child = command(&bin, endpoints, args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    finish(child, stdin).0
}

/// Feeds `stdin` to `child` and waits: what it printed, and the whole of its stderr.
fn finish(mut child: Child, stdin: Option<&str>) -> (Run, String) {
    if let Some(input) = stdin {
        // A command that fails before reading its input closes the pipe: not an error here.
        let written = child.stdin.take().expect("piped").write_all(input.as_bytes());
        if let Err(e) = written {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "writing stdin: {e}");
        }
    }
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let run = Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        errors: stderr.lines().filter(|l| l.starts_with("Error:")).map(String::from).collect(),
        code: out.status.code().unwrap_or(-1),
    };
    (run, stderr)
}

/// Variables that change how etcdctl secures its connections: etcdctl's own and Go's
/// system roots. [`run_env`] removes those of the test's environment.
pub const TLS_ENV: [&str; 7] = [
    "ETCDCTL_CACERT",
    "ETCDCTL_CERT",
    "ETCDCTL_KEY",
    "ETCDCTL_INSECURE_TRANSPORT",
    "ETCDCTL_INSECURE_SKIP_TLS_VERIFY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Runs `bin` (either binary) with `env` set and the rest of [`TLS_ENV`] removed: the run,
/// and the whole of stderr (etcdctl's log lines included).
pub fn run_env(bin: &Path, endpoints: &str, args: &[&str], env: &[(&str, &str)]) -> (Run, String) {
    let mut cmd = command(bin, endpoints, args);
    for name in TLS_ENV {
        cmd.env_remove(name);
    }
    let child = cmd
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    finish(child, None)
}

/// [`same`] with `env` for both runs (see [`run_env`]).
pub fn same_env(
    endpoints: &str,
    args: &[&str],
    env: &[(&str, &str)],
    normalise: fn(&str) -> String,
) -> Run {
    let (theirs, _) = run_env(&etcd_bin_dir().join("etcdctl"), endpoints, args, env);
    let (ours, _) = run_env(&example_bin(), endpoints, args, env);
    assert_same(args, &theirs, &ours, normalise);
    ours
}

/// Panics with both outputs unless, `normalise`d, they agree.
fn assert_same(args: &[&str], theirs: &Run, ours: &Run, normalise: fn(&str) -> String) {
    let (t, o) = (normalise(&theirs.stdout), normalise(&ours.stdout));
    assert!(
        t == o && theirs.errors == ours.errors && theirs.code == ours.code,
        "etcdctl {args:?} differs\n--- etcdctl (exit {}):\n{}{:?}\n--- example (exit {}):\n{}{:?}",
        theirs.code,
        theirs.stdout,
        theirs.errors,
        ours.code,
        ours.stdout,
        ours.errors
    );
}

/// Runs etcdctl 3.5.1.
pub fn etcdctl_run(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Run {
    run_bin(etcd_bin_dir().join("etcdctl"), endpoints, args, stdin)
}

/// Runs the example.
pub fn example_run(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Run {
    run_bin(example_bin(), endpoints, args, stdin)
}

/// Runs both on the same command line, etcdctl first, each right after `setup` (which puts
/// etcd in the state the command expects, so that a command that changes it sees the same
/// state both times); panics with both outputs unless, `normalise`d, they agree. Returns the
/// example's run.
pub fn same_after(
    setup: &dyn Fn(),
    endpoints: &str,
    args: &[&str],
    stdin: Option<&str>,
    normalise: fn(&str) -> String,
) -> Run {
    setup();
    let theirs = etcdctl_run(endpoints, args, stdin);
    setup();
    let ours = example_run(endpoints, args, stdin);
    assert_same(args, &theirs, &ours, normalise);
    ours
}

/// [`same_after`] with nothing to set up (a command that reads only).
pub fn same(
    endpoints: &str,
    args: &[&str],
    stdin: Option<&str>,
    normalise: fn(&str) -> String,
) -> Run {
    same_after(&|| {}, endpoints, args, stdin, normalise)
}

/// No normalisation.
pub fn exact(s: &str) -> String {
    s.to_string()
}
