//! Leases, locks and elections: `lease grant|revoke|timetolive|list|keep-alive`, `lock` and
//! `elect`, with etcdctl 3.5.1's output (simple, and `-w json` as etcdctl marshals each
//! response), errors and exit codes.
//!
//! `lock` and `elect` use the recipes of `evetcd::concurrency` (a `Session`, a `Mutex`, an
//! `Election`), as etcdctl uses Go's concurrency package: the same keys, the same queue.
//!
//! The long-running commands (`lease keep-alive`, `lock`, `elect`) drive the client from
//! their own poll(2) loop ([`drive`]) instead of `Client::run`: they must also wake for
//! SIGINT and SIGTERM (etcdctl traps them to unlock or resign before it exits), for SIGCHLD
//! (the end of `lock`'s command) and for a lease's deadline.

use crate::args::Args;
use crate::gosyntax::parse_int;
use crate::output::{self, Obj};
use crate::{etcdctl_message, Ctx, Failure, EXIT_BAD_CONNECTION};
use bytes::Bytes;
use evetcd::concurrency::{self, Election, Mutex, Session, SessionOptions, Wait};
use evetcd::{
    Client, Code, EtcdError, GetOptions, KeyValue, LeaseGrantOptions, LeaseKeepAliveResponse,
    RangeResponse, ResponseHeader,
};
use std::cell::{Cell, RefCell};
use std::ffi::OsStr;
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The TTL of a concurrency session: `elect`'s, and `lock`'s when `--ttl` is not positive.
const SESSION_TTL: i64 = 60;
/// `lock --ttl`'s default.
const LOCK_TTL: i64 = 10;
/// How long clientv3 waits for a keepalive's first answer before it gives the lease up:
/// etcdctl's default dial timeout plus one second.
const FIRST_RENEWAL: Duration = Duration::from_secs(3);

pub fn run(ctx: &Ctx, command: &str, args: Args) -> Result<(), Failure> {
    match command {
        "lock" => lock(ctx, args),
        "elect" => elect(ctx, args),
        _ => lease(ctx, args),
    }
}

fn lease(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    match args.next_word().unwrap_or_default().as_str() {
        "grant" => grant(ctx, args),
        "revoke" => revoke(ctx, args),
        "timetolive" => time_to_live(ctx, args),
        "list" => list(ctx, args),
        "keep-alive" => keep_alive(ctx, args),
        _ => Err(Failure::help("lease", &["grant", "keep-alive", "list", "revoke", "timetolive"])),
    }
}

fn grant(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let [ttl] = words(&mut args, "lease grant command needs TTL argument")?;
    let ttl = parse_int(&ttl, 10).map_err(|e| Failure::usage(format!("bad TTL ({e})")))?;
    let granted = ctx
        .wait(|cb| ctx.client.lease_grant(ttl, LeaseGrantOptions::new(), cb))
        .map_err(|e| failed("grant", &e))?;
    if ctx.json {
        let obj =
            flat(granted.header.as_ref()).raw("ID", num(granted.id)).raw("TTL", num(granted.ttl));
        println!("{}", obj.raw("Error", Some("\"\"".into())).end());
    } else {
        println!("lease {} granted with TTL({}s)", hex16(granted.id), granted.ttl);
    }
    Ok(())
}

fn revoke(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let [id] = words(&mut args, "lease revoke command needs 1 argument")?;
    let id = lease_id(&id)?;
    let revoked =
        ctx.wait(|cb| ctx.client.lease_revoke(id, cb)).map_err(|e| failed("revoke", &e))?;
    if ctx.json {
        println!("{}", Obj::new().raw("header", output::header(revoked.header.as_ref())).end());
    } else {
        println!("lease {} revoked", hex16(id));
    }
    Ok(())
}

fn time_to_live(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let keys = args.take_bool("keys")?;
    let [id] = words(&mut args, "lease timetolive command needs lease ID as argument")?;
    let id = lease_id(&id)?;
    let r = ctx.wait(|cb| ctx.client.lease_time_to_live(id, keys, cb)).map_err(bad_connection)?;
    if ctx.json {
        let names = r.keys.iter().map(|k| format!("\"{}\"", output::base64(k))).collect();
        let obj = flat(r.header.as_ref()).raw("id", num(r.id)).raw("ttl", num(r.ttl));
        println!("{}", obj.raw("granted-ttl", num(r.granted_ttl)).raw("keys", array(names)).end());
        return Ok(());
    }
    if r.granted_ttl == 0 && r.ttl == -1 {
        println!("lease {} already expired", hex16(r.id));
        return Ok(());
    }
    let mut line = format!(
        "lease {} granted with TTL({}s), remaining({}s)",
        hex16(r.id),
        r.granted_ttl,
        r.ttl
    )
    .into_bytes();
    if keys {
        line.extend_from_slice(b", attached keys([");
        line.extend_from_slice(&r.keys.join(&b' '));
        line.extend_from_slice(b"])");
    }
    line.push(b'\n');
    output::print(&line);
    Ok(())
}

fn list(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    args.finish()?;
    let r = ctx.wait(|cb| ctx.client.lease_leases(cb)).map_err(bad_connection)?;
    if ctx.json {
        // clientv3 makes this slice: `[]`, never `null`.
        let leases: Vec<String> =
            r.leases.iter().map(|l| Obj::new().raw("id", num(l.id)).end()).collect();
        let leases = format!("[{}]", leases.join(","));
        println!("{}", flat(r.header.as_ref()).raw("leases", Some(leases)).end());
    } else {
        println!("found {} leases", r.leases.len());
        for lease in &r.leases {
            println!("{}", hex16(lease.id));
        }
    }
    Ok(())
}

/// `--once`: one renewal, whose failure exits with 2. Otherwise renewals until the lease is
/// gone (or no renewal came in time), then etcdctl's closing line and exit 0; SIGINT kills
/// the process, as it does etcdctl.
fn keep_alive(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let once = args.take_bool("once")?;
    let [id] = words(&mut args, "lease keep-alive command needs lease ID as argument")?;
    let id = lease_id(&id)?;
    let json = ctx.json;
    if once {
        let renewed = ctx
            .wait(|cb| {
                let mut cb = Some(cb);
                ctx.client.lease_keepalive(id, move |r| {
                    if let Some(cb) = cb.take() {
                        cb(r);
                    }
                });
            })
            .map_err(|e| match e.code() {
                Code::NotFound => {
                    Failure::new(EXIT_BAD_CONNECTION, "etcdserver: requested lease not found")
                }
                _ => bad_connection(e),
            })?;
        print_renewal(json, &renewed);
        return Ok(());
    }
    let lease = Keeper::start(&ctx.client, id, move |r| print_renewal(json, r));
    drive(ctx, None, Some(&lease), &mut || false);
    if !json {
        println!("lease {} expired or revoked.", hex16(id));
    }
    Ok(())
}

fn print_renewal(json: bool, r: &LeaseKeepAliveResponse) {
    if json {
        println!("{}", flat(r.header.as_ref()).raw("ID", num(r.id)).raw("TTL", num(r.ttl)).end());
    } else {
        println!("lease {} keepalived with TTL({})", hex16(r.id), r.ttl);
    }
}

/// `lock NAME [COMMAND ARGS...]`: holds the lock until SIGINT or SIGTERM, or while the
/// command runs.
fn lock(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let ttl = args.take_i64("ttl")?.unwrap_or(LOCK_TTL);
    args.finish()?;
    let mut words = args.rest();
    if words.is_empty() {
        let usage = "lock takes a lock name argument and an optional command to execute";
        return Err(Failure::usage(usage));
    }
    let name = words.remove(0);
    let signals = Signals::trap()?;
    let session = session(ctx, if ttl > 0 { ttl } else { SESSION_TTL })?;
    let mutex = Mutex::new(&session, name);
    wait_cancellable(ctx, &signals, |cb| mutex.lock(cb))?;
    let key = mutex.key();
    if !words.is_empty() {
        let revision = mutex.header().map_or(0, |h| h.revision);
        let ran = run_locked(ctx, &signals, &words, &key, revision);
        return ran.and(unlock(ctx, &mutex));
    }
    let got = get(ctx, &key)?;
    if got.kvs.is_empty() {
        return Err(Failure::error("lock lost on init"));
    }
    print_get(ctx.json, got.header.as_ref(), &got.kvs, got.count);
    hold(ctx, &signals, &session, "session expired")?;
    unlock(ctx, &mutex)
}

fn unlock(ctx: &Ctx, mutex: &Mutex) -> Result<(), Failure> {
    recipe_wait(ctx, |cb| mutex.unlock(cb))
}

/// Runs `lock`'s command with the lock held and etcdctl's two variables. etcdctl waits for
/// it whatever happens meanwhile (signals, the session's end); a command that fails is
/// etcdctl's error and gives the exit code.
fn run_locked(
    ctx: &Ctx,
    signals: &Signals,
    argv: &[String],
    key: &[u8],
    revision: i64,
) -> Result<(), Failure> {
    let program = &argv[0];
    let mut child = Command::new(program)
        .args(&argv[1..])
        .env("ETCD_LOCK_KEY", OsStr::from_bytes(key))
        .env("ETCD_LOCK_REV", revision.to_string())
        .spawn()
        .map_err(|e| spawn_failure(program, &e))?;
    loop {
        let mut exited = None;
        drive(ctx, Some(signals), None, &mut || {
            exited = child.try_wait().transpose();
            exited.is_some()
        });
        if let Some(status) = exited {
            return exit_failure(status.map_err(|e| Failure::error(e.to_string()))?);
        }
    }
}

/// Go's error for a command that could not start.
fn spawn_failure(program: &str, e: &std::io::Error) -> Failure {
    let searched = !program.is_empty() && !program.contains('/');
    if searched && matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied) {
        return Failure::error(format!("exec: {program:?}: executable file not found in $PATH"));
    }
    // "No such file or directory (os error 2)" -> Go's "no such file or directory".
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    let mut chars = text.chars();
    let lower = chars.next().map(|c| c.to_lowercase().chain(chars).collect::<String>());
    Failure::error(format!("fork/exec {program}: {}", lower.unwrap_or_default()))
}

/// Go's `*exec.ExitError` for a command that failed, with the exit code etcdctl derives from
/// it (255 for a signal: Go's `ExitStatus()` is -1 then).
fn exit_failure(status: ExitStatus) -> Result<(), Failure> {
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(Failure::new(code, format!("exit status {code}"))),
        (None, signal) => {
            let core = if status.core_dumped() { " (core dumped)" } else { "" };
            let name = signal_name(signal.unwrap_or(0));
            Err(Failure::new(255, format!("signal: {name}{core}")))
        }
    }
}

/// Go's names of the signals (its `syscall.Signal.String()` on Linux).
fn signal_name(signal: i32) -> String {
    const NAMES: [&str; 15] = [
        "hangup",
        "interrupt",
        "quit",
        "illegal instruction",
        "trace/breakpoint trap",
        "aborted",
        "bus error",
        "floating point exception",
        "killed",
        "user defined signal 1",
        "segmentation fault",
        "user defined signal 2",
        "broken pipe",
        "alarm clock",
        "terminated",
    ];
    let known = usize::try_from(signal).ok().and_then(|s| NAMES.get(s.wrapping_sub(1)));
    known.map_or_else(|| format!("signal {signal}"), |n| n.to_string())
}

/// `elect NAME PROPOSAL` campaigns; `elect -l NAME` observes.
fn elect(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let listen = args.take_bool("listen")?;
    args.finish()?;
    match (args.rest().as_slice(), listen) {
        ([name], true) => observe(ctx, name),
        ([_], false) => Err(Failure::usage("no proposal argument but -l not set")),
        ([name, proposal], false) => campaign(ctx, name, proposal),
        ([_, _], true) => Err(Failure::usage("proposal given but -l is set")),
        _ => Err(Failure::usage(
            "elect takes one election name argument and an optional proposal argument",
        )),
    }
}

/// Becomes the leader, prints the leader key, and resigns on SIGINT or SIGTERM.
fn campaign(ctx: &Ctx, name: &str, proposal: &str) -> Result<(), Failure> {
    let signals = Signals::trap()?;
    let session = session(ctx, SESSION_TTL)?;
    let election = Election::new(&session, name);
    let proposal = proposal.to_string();
    wait_cancellable(ctx, &signals, |cb| election.campaign(proposal, cb))?;
    let got = get(ctx, &election.key())?;
    print_get(ctx.json, got.header.as_ref(), &got.kvs, got.count);
    hold(ctx, &signals, &session, "elect: session expired")?;
    recipe_wait(ctx, |cb| election.resign(cb))
}

/// Prints each leader (and each value it proclaims) until SIGINT or SIGTERM.
fn observe(ctx: &Ctx, name: &str) -> Result<(), Failure> {
    let signals = Signals::trap()?;
    // etcdctl opens a session here too, although nothing uses it.
    let session = session(ctx, SESSION_TTL)?;
    let lost = Rc::new(Cell::new(false));
    let (l, json) = (lost.clone(), ctx.json);
    let _observer = Election::new(&session, name).observe(move |r| match r {
        Ok(leader) => print_get(json, leader.header.as_ref(), &leader.kvs, leader.count),
        Err(_) => l.set(true),
    });
    loop {
        match drive(ctx, Some(&signals), None, &mut || lost.get()) {
            Wake::Done => return Err(Failure::error("elect: observer lost")),
            Wake::Signal(libc::SIGINT | libc::SIGTERM) => return Ok(()),
            _ => {}
        }
    }
}

/// Holds a lock or leadership until SIGINT or SIGTERM; fails with `lost` if the session
/// is lost first.
fn hold(ctx: &Ctx, signals: &Signals, session: &Session, lost: &str) -> Result<(), Failure> {
    loop {
        match drive(ctx, Some(signals), None, &mut || !session.is_alive()) {
            Wake::Signal(libc::SIGINT | libc::SIGTERM) => return Ok(()),
            Wake::Done => return Err(Failure::error(lost)),
            _ => {}
        }
    }
}

/// etcdctl's concurrency session: a lease of `ttl` seconds kept alive.
fn session(ctx: &Ctx, ttl: i64) -> Result<Session, Failure> {
    let options = SessionOptions::new().ttl(Duration::from_secs(ttl.max(1).unsigned_abs()));
    recipe_wait(ctx, |cb| Session::new(&ctx.client, options, cb))
}

/// Starts a recipe's step and runs the client until it answers.
fn recipe_wait<T: 'static>(
    ctx: &Ctx,
    start: impl FnOnce(Box<dyn FnOnce(Result<T, concurrency::Error>)>),
) -> Result<T, Failure> {
    let slot: Rc<RefCell<Option<Result<T, concurrency::Error>>>> = Rc::default();
    let s = slot.clone();
    start(Box::new(move |r| *s.borrow_mut() = Some(r)));
    drive(ctx, None, None, &mut || slot.borrow().is_some());
    let answer = slot.borrow_mut().take();
    answer.ok_or_else(|| Failure::error("no answer"))?.map_err(recipe_failure)
}

/// Starts a step that waits as long as it takes (a lock, a campaign) and drives the client
/// until it answers. SIGINT or SIGTERM cancels it (its key is deleted) with the error of
/// etcdctl's cancelled context.
fn wait_cancellable<T: 'static>(
    ctx: &Ctx,
    signals: &Signals,
    start: impl FnOnce(Box<dyn FnOnce(Result<T, concurrency::Error>)>) -> Wait,
) -> Result<T, Failure> {
    let slot: Rc<RefCell<Option<Result<T, concurrency::Error>>>> = Rc::default();
    let s = slot.clone();
    let waiting = start(Box::new(move |r| *s.borrow_mut() = Some(r)));
    let mut answered = || slot.borrow().is_some();
    loop {
        match drive(ctx, Some(signals), None, &mut answered) {
            Wake::Done => break,
            Wake::Signal(libc::SIGINT | libc::SIGTERM) => {
                waiting.cancel();
                drive(ctx, None, None, &mut answered); // until the key is deleted
                return Err(Failure::error("context canceled"));
            }
            _ => {}
        }
    }
    let answer = slot.borrow_mut().take();
    answer.ok_or_else(|| Failure::error("no answer"))?.map_err(recipe_failure)
}

/// A recipe's error as etcdctl reports it.
fn recipe_failure(e: concurrency::Error) -> Failure {
    match e {
        concurrency::Error::Etcd(e) => Failure::from(e),
        other => Failure::error(other.to_string()),
    }
}

fn get(ctx: &Ctx, key: &Bytes) -> Result<RangeResponse, Failure> {
    Ok(ctx.wait(|cb| ctx.client.get(key.clone(), GetOptions::new(), cb))?)
}

/// Key-value pairs as etcdctl's `display.Get` prints a get response.
fn print_get(json: bool, header: Option<&ResponseHeader>, kvs: &[KeyValue], count: i64) {
    if json {
        let obj = Obj::new().raw("header", output::header(header));
        println!(
            "{}",
            obj.list("kvs", kvs.iter().map(output::kv).collect()).num("count", count).end()
        );
        return;
    }
    let mut out = Vec::new();
    for kv in kvs {
        for part in [&kv.key, &kv.value] {
            out.extend_from_slice(part);
            out.push(b'\n');
        }
    }
    output::print(&out);
}

/// A lease kept alive the way clientv3 keeps one: renewed until the server says it is gone,
/// or until its deadline passes without a renewal (the last TTL granted, [`FIRST_RENEWAL`]
/// at first). A keepalive the client gave up on after its retries is started again
/// meanwhile; after a permanent error the deadline decides, as clientv3's retries would be
/// in vain.
struct Keeper {
    state: Rc<KeeperState>,
}

struct KeeperState {
    deadline: Cell<Instant>,
    gone: Cell<bool>,
    on_renew: Box<dyn Fn(&LeaseKeepAliveResponse)>,
}

impl Keeper {
    fn start(
        client: &Client,
        id: i64,
        on_renew: impl Fn(&LeaseKeepAliveResponse) + 'static,
    ) -> Keeper {
        let state = Rc::new(KeeperState {
            deadline: Cell::new(Instant::now() + FIRST_RENEWAL),
            gone: Cell::new(false),
            on_renew: Box::new(on_renew),
        });
        keep(client, id, state.clone());
        Keeper { state }
    }

    fn deadline(&self) -> Instant {
        self.state.deadline.get()
    }

    fn expired(&self) -> bool {
        self.state.gone.get() || Instant::now() >= self.deadline()
    }
}

fn keep(client: &Client, id: i64, state: Rc<KeeperState>) {
    let again = client.clone();
    client.lease_keepalive(id, move |r| match r {
        Ok(renewed) => {
            let ttl = Duration::from_secs(renewed.ttl.max(0).unsigned_abs());
            state.deadline.set(Instant::now() + ttl);
            (state.on_renew)(&renewed);
        }
        Err(e) if e.code() == Code::NotFound => state.gone.set(true),
        Err(e) if e.is_retryable() => keep(&again, id, state.clone()),
        Err(_) => {}
    });
}

/// What ended a [`drive`].
enum Wake {
    Done,
    Signal(i32),
    Expired,
}

/// Runs the client as `Client::run` would (`process` and poll(2) on its fd) until `done()`,
/// a trapped signal, or the end of `lease`.
fn drive(
    ctx: &Ctx,
    signals: Option<&Signals>,
    lease: Option<&Keeper>,
    done: &mut dyn FnMut() -> bool,
) -> Wake {
    let client = &ctx.client;
    loop {
        client.process();
        if done() {
            return Wake::Done;
        }
        if let Some(signal) = signals.and_then(Signals::next) {
            return Wake::Signal(signal);
        }
        if lease.is_some_and(Keeper::expired) {
            return Wake::Expired;
        }
        let until_deadline = lease.map(|l| l.deadline().saturating_duration_since(Instant::now()));
        let timeout = match (client.next_timeout(), until_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut fds = vec![client.as_raw_fd()];
        fds.extend(signals.map(|s| s.0.as_raw_fd()));
        poll(&fds, timeout);
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (an interruption counts as a
/// wake-up: the caller looks again anyway).
fn poll(fds: &[RawFd], timeout: Option<Duration>) {
    let mut polled: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    let ms = timeout.map_or(-1, |t| t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32);
    // SAFETY: `polled` is an array of `polled.len()` pollfd structs that outlives the call.
    unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
}

/// SIGINT, SIGTERM and SIGCHLD, blocked and read from a signalfd, so that [`drive`]'s poll
/// wakes for them. Commands started later begin with no signal blocked (std's `Command`
/// clears the mask).
struct Signals(OwnedFd);

impl Signals {
    fn trap() -> Result<Signals, Failure> {
        // SAFETY: libc calls on a local signal set; the fd signalfd returns is owned here.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGCHLD] {
                libc::sigaddset(&mut set, signal);
            }
            let fd = match libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) {
                0 => libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC),
                _ => -1,
            };
            if fd < 0 {
                return Err(Failure::error(std::io::Error::last_os_error().to_string()));
            }
            Ok(Signals(OwnedFd::from_raw_fd(fd)))
        }
    }

    /// The next pending signal, if any.
    fn next(&self) -> Option<i32> {
        // SAFETY: signalfd_siginfo is plain data, and read writes at most its size into it.
        unsafe {
            let mut info: libc::signalfd_siginfo = std::mem::zeroed();
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            let n = libc::read(
                self.0.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            );
            (n == size as isize).then_some(info.ssi_signo as i32)
        }
    }
}

/// The command's words, which must be exactly `N` (checked after the flags, as cobra does).
fn words<const N: usize>(args: &mut Args, usage: &str) -> Result<[String; N], Failure> {
    args.finish()?;
    args.rest().try_into().map_err(|_| Failure::usage(usage))
}

/// A lease id argument: hexadecimal, as etcdctl reads it.
fn lease_id(arg: &str) -> Result<i64, Failure> {
    parse_int(arg, 16)
        .map_err(|e| Failure::usage(format!("bad lease ID arg ({e}), expecting ID in Hex")))
}

/// A lease id as Go's `%016x` prints an int64.
fn hex16(id: i64) -> String {
    if id < 0 {
        format!("-{:015x}", id.unsigned_abs())
    } else {
        format!("{id:016x}")
    }
}

fn failed(what: &str, e: &EtcdError) -> Failure {
    Failure::error(format!("failed to {what} lease ({})", etcdctl_message(e)))
}

fn bad_connection(e: EtcdError) -> Failure {
    Failure::new(EXIT_BAD_CONNECTION, etcdctl_message(&e))
}

/// A JSON object starting with a header's fields, as Go flattens the `*ResponseHeader`
/// that clientv3's lease responses embed.
fn flat(header: Option<&ResponseHeader>) -> Obj {
    let h = header.cloned().unwrap_or_default();
    Obj::new()
        .num("cluster_id", h.cluster_id)
        .num("member_id", h.member_id)
        .num("revision", h.revision)
        .num("raft_term", h.raft_term)
}

/// A number field that is never left out (no `omitempty`).
fn num(v: i64) -> Option<String> {
    Some(v.to_string())
}

/// A JSON array, or Go's `null` for an empty (nil) slice.
fn array(items: Vec<String>) -> Option<String> {
    Some(if items.is_empty() { "null".into() } else { format!("[{}]", items.join(",")) })
}
