//! Cluster and maintenance commands: `member`, `endpoint`, `alarm`, `defrag`, `snapshot`
//! and `move-leader`, printed as etcdctl 3.5.1 prints them.
//!
//! etcdctl talks to each endpoint on its own for `endpoint`, `defrag` and `move-leader`
//! (and to every member's client URL with `--cluster`), so these commands use a member view
//! of the global client per endpoint (`Client::member`); the global client serves the rest.

use crate::args::Args;
use crate::gosyntax;
use crate::output::{header, quote, Obj};
use crate::{etcdctl_message, Ctx, Failure, EXIT_ERROR};
use evetcd::pb::etcdserverpb::{AlarmMember, Member, StatusResponse};
use evetcd::{AlarmAction, AlarmType, Code, GetOptions, ResponseHeader};
use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// etcdctl's exit status when `snapshot save` fails (cobrautl.ExitInterrupted).
const EXIT_INTERRUPTED: i32 = 5;

pub fn run(ctx: &Ctx, command: &str, mut args: Args) -> Result<(), Failure> {
    match command {
        "member" => member(ctx, args),
        "endpoint" => endpoint(ctx, args),
        "alarm" => alarm(ctx, args),
        "defrag" => defrag(ctx, args),
        "snapshot" => match args.next_word().as_deref() {
            Some("save") => snapshot_save(ctx, args),
            other => Err(unknown_subcommand("snapshot", other)),
        },
        "move-leader" => move_leader(ctx, args),
        other => Err(Failure::unknown_command(other)),
    }
}

/// A missing or unknown sub-command: the ones `command` has (see [`Failure::help`]).
fn unknown_subcommand(command: &str, _given: Option<&str>) -> Failure {
    let known: &[&str] = match command {
        "member" => &["add", "list", "promote", "remove", "update"],
        "endpoint" => &["health", "status"],
        "alarm" => &["disarm", "list"],
        _ => &["save"],
    };
    Failure::help(command, known)
}

// ---------------------------------------------------------------------------------------
// member

fn member(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    match args.next_word().as_deref() {
        Some("list") => member_list(ctx, args),
        Some("add") => member_add(ctx, args),
        Some("remove") => member_change(ctx, args, Change::Remove),
        Some("update") => member_change(ctx, args, Change::Update),
        Some("promote") => member_change(ctx, args, Change::Promote),
        other => Err(unknown_subcommand("member", other)),
    }
}

/// `member list`: one line per member, or the response as JSON. etcdctl 3.5 asks for a
/// linearizable list.
fn member_list(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    args.finish()?;
    let resp = ctx.wait(|cb| ctx.client.member_list(true, cb))?;
    if ctx.json {
        println!("{}", members_json(resp.header.as_ref(), None, &resp.members));
        return Ok(());
    }
    for m in &resp.members {
        let status = if m.name.is_empty() { "unstarted" } else { "started" };
        println!(
            "{:x}, {status}, {}, {}, {}, {}",
            m.id,
            m.name,
            m.peer_ur_ls.join(","),
            m.client_ur_ls.join(","),
            m.is_learner
        );
    }
    Ok(())
}

/// `member add NAME --peer-urls=URLS [--learner]`, followed (in simple output) by the
/// settings the new member must start with.
fn member_add(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let peer_urls = args.take_value("peer-urls").unwrap_or_default();
    let learner = args.take_bool("learner")?;
    args.finish()?;
    let words = args.rest();
    let name = match words.as_slice() {
        [] => return Err(Failure::usage("member name not provided")),
        [name] => name.clone(),
        _ => return Err(Failure::usage(too_many_add_args(&words))),
    };
    if peer_urls.is_empty() {
        return Err(Failure::usage("member peer urls not provided"));
    }
    let resp = ctx.wait(|cb| ctx.client.member_add(split_urls(&peer_urls), learner, cb))?;
    let new = resp.member.clone().unwrap_or_default();
    if ctx.json {
        println!("{}", members_json(resp.header.as_ref(), Some(&new), &resp.members));
        return Ok(());
    }
    // etcdctl 3.5.1 does not say "as learner" here (later versions do).
    println!("Member {:16x} added to cluster {:16x}", new.id, cluster_id(&resp.header));
    let initial_cluster: Vec<String> = resp
        .members
        .iter()
        .flat_map(|m| {
            let n = if m.id == new.id { name.as_str() } else { m.name.as_str() };
            m.peer_ur_ls.iter().map(move |u| format!("{n}={u}"))
        })
        .collect();
    println!();
    println!("ETCD_NAME={}", gosyntax::quote(name.as_bytes()));
    println!("ETCD_INITIAL_CLUSTER={}", gosyntax::quote(initial_cluster.join(",").as_bytes()));
    println!("ETCD_INITIAL_ADVERTISE_PEER_URLS={}", gosyntax::quote(peer_urls.as_bytes()));
    println!("ETCD_INITIAL_CLUSTER_STATE=\"existing\"");
    Ok(())
}

/// `--peer-urls` as etcdctl splits it (no trimming: the server judges each URL).
fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',').map(String::from).collect()
}

/// etcdctl's hint when `member add` gets URLs as words rather than `--peer-urls`.
fn too_many_add_args(words: &[String]) -> String {
    let mut message = String::from("too many arguments");
    for w in words.iter().filter(|w| w.to_lowercase().starts_with("http")) {
        message.push_str(&format!(", did you mean --peer-urls={w}"));
    }
    message
}

/// The member commands that take one member id.
#[derive(Clone, Copy)]
enum Change {
    Remove,
    Update,
    Promote,
}

/// `member remove|update|promote ID`: all answer with the header and the members.
fn member_change(ctx: &Ctx, mut args: Args, change: Change) -> Result<(), Failure> {
    let peer_urls = match change {
        Change::Update => args.take_value("peer-urls").unwrap_or_default(),
        _ => String::new(),
    };
    args.finish()?;
    let id = match args.rest().as_slice() {
        [id] => gosyntax::parse_uint(id, 16)
            .map_err(|e| Failure::usage(format!("bad member ID arg ({e}), expecting ID in Hex")))?,
        _ => return Err(Failure::usage("member ID is not provided")),
    };
    let c = &ctx.client;
    let (header, members, verb) = match change {
        Change::Remove => {
            let r = ctx.wait(|cb| c.member_remove(id, cb))?;
            (r.header, r.members, "removed from")
        }
        Change::Update => {
            if peer_urls.is_empty() {
                return Err(Failure::usage("member peer urls not provided"));
            }
            let r = ctx.wait(|cb| c.member_update(id, split_urls(&peer_urls), cb))?;
            (r.header, r.members, "updated in")
        }
        Change::Promote => {
            let r = ctx.wait(|cb| c.member_promote(id, cb))?;
            (r.header, r.members, "promoted in")
        }
    };
    if ctx.json {
        println!("{}", members_json(header.as_ref(), None, &members));
    } else {
        println!("Member {id:16x} {verb} cluster {:16x}", cluster_id(&header));
    }
    Ok(())
}

fn cluster_id(h: &Option<ResponseHeader>) -> u64 {
    h.as_ref().map_or(0, |h| h.cluster_id)
}

/// A member response as etcdctl's JSON: header, the member added (for `add`), members.
fn members_json(h: Option<&ResponseHeader>, added: Option<&Member>, members: &[Member]) -> String {
    Obj::new()
        .raw("header", header(h))
        .raw("member", added.map(member_json))
        .list("members", members.iter().map(member_json).collect())
        .end()
}

fn member_json(m: &Member) -> String {
    let strings = |v: &[String]| v.iter().map(|s| quote(s)).collect();
    Obj::new()
        .num("ID", m.id)
        .str("name", &m.name)
        .list("peerURLs", strings(&m.peer_ur_ls))
        .list("clientURLs", strings(&m.client_ur_ls))
        .flag("isLearner", m.is_learner)
        .end()
}

// ---------------------------------------------------------------------------------------
// endpoint

fn endpoint(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let sub = args.next_word();
    let cluster = args.take_bool("cluster")?;
    match sub.as_deref() {
        Some("status") => {
            args.finish()?;
            endpoint_status(ctx, cluster)
        }
        Some("health") => {
            args.finish()?;
            endpoint_health(ctx, cluster)
        }
        other => Err(unknown_subcommand("endpoint", other)),
    }
}

/// The endpoints a per-endpoint command visits: `--endpoints`, or with `--cluster` every
/// member's client URLs.
fn target_endpoints(ctx: &Ctx, cluster: bool) -> Result<Vec<String>, Failure> {
    if !cluster {
        return Ok(ctx.endpoints.clone());
    }
    let resp = ctx.wait(|cb| ctx.client.member_list(true, cb)).map_err(|e| {
        Failure::error(format!(
            "failed to fetch endpoints from etcd cluster member list: {}",
            etcdctl_message(&e)
        ))
    })?;
    Ok(resp.members.into_iter().flat_map(|m| m.client_ur_ls).collect())
}

/// A context whose client is a member view of the global client: its calls go to
/// `endpoint` only, over a link of its own that closes once the call is done, with the
/// global settings (`--user`, timeouts).
fn ctx_for(ctx: &Ctx, endpoint: &str) -> Result<Ctx, Failure> {
    let client =
        ctx.client.member(endpoint).map_err(|e| Failure::error(e.message().to_string()))?;
    Ok(Ctx {
        client,
        config: ctx.config.clone().endpoints([endpoint]),
        json: ctx.json,
        endpoints: vec![endpoint.to_string()],
        command_timeout: ctx.command_timeout,
    })
}

/// Runs `op` on each endpoint the command visits, in turn, through a member view.
fn per_endpoint<T>(
    ctx: &Ctx,
    cluster: bool,
    op: impl Fn(&Ctx) -> T,
) -> Result<Vec<(String, T)>, Failure> {
    let mut out = Vec::new();
    for ep in target_endpoints(ctx, cluster)? {
        let one = ctx_for(ctx, &ep)?;
        out.push((ep, op(&one)));
    }
    Ok(out)
}

/// Ends with `code` without an `Error:` line, as etcdctl does after it reported each
/// endpoint's failure on its own line.
fn exit_quietly(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

/// `endpoint status`: one line (or JSON object) per endpoint that answered; the others are
/// reported on stderr and make the exit status 1.
fn endpoint_status(ctx: &Ctx, cluster: bool) -> Result<(), Failure> {
    let mut answered = Vec::new();
    let mut failed = false;
    for (ep, got) in per_endpoint(ctx, cluster, |one| one.wait(|cb| one.client.status(cb)))? {
        match got {
            Ok(status) => answered.push((ep, status)),
            Err(e) => {
                failed = true;
                eprintln!("Failed to get the status of endpoint {ep} ({})", etcdctl_message(&e));
            }
        }
    }
    if ctx.json {
        let items = answered.iter().map(|(ep, s)| status_json(ep, s)).collect::<Vec<_>>();
        println!("[{}]", items.join(","));
    } else {
        for (ep, s) in &answered {
            println!("{}", status_line(ep, s));
        }
    }
    if failed {
        exit_quietly(EXIT_ERROR);
    }
    Ok(())
}

/// endpoint, ID, version, db size, is leader, is learner, raft term, raft index, raft
/// applied index, errors.
fn status_line(ep: &str, s: &StatusResponse) -> String {
    let id = s.header.as_ref().map_or(0, |h| h.member_id);
    format!(
        "{ep}, {id:x}, {}, {}, {}, {}, {}, {}, {}, {}",
        s.version,
        human_bytes(s.db_size.max(0) as u64),
        s.leader == id,
        s.is_learner,
        s.raft_term,
        s.raft_index,
        s.raft_applied_index,
        s.errors.join(", ")
    )
}

fn status_json(ep: &str, s: &StatusResponse) -> String {
    let status = Obj::new()
        .raw("header", header(s.header.as_ref()))
        .str("version", &s.version)
        .num("dbSize", s.db_size)
        .num("leader", s.leader)
        .num("raftIndex", s.raft_index)
        .num("raftTerm", s.raft_term)
        .num("raftAppliedIndex", s.raft_applied_index)
        .list("errors", s.errors.iter().map(|e| quote(e)).collect())
        .num("dbSizeInUse", s.db_size_in_use)
        .flag("isLearner", s.is_learner)
        .end();
    Obj::new().str("Endpoint", ep).raw("Status", Some(status)).end()
}

/// One endpoint's health, as etcdctl reports it.
struct Health {
    took: Duration,
    /// Why it is unhealthy.
    error: Option<String>,
}

/// `endpoint health`: a linearizable read through each endpoint (permission denied counts
/// as healthy: the read went through consensus), then no alarm may be raised.
fn endpoint_health(ctx: &Ctx, cluster: bool) -> Result<(), Failure> {
    let all = per_endpoint(ctx, cluster, check_health)?;
    if ctx.json {
        let items: Vec<String> = all.iter().map(|(ep, h)| health_json(ep, h)).collect();
        println!("[{}]", items.join(","));
    } else {
        for (ep, h) in &all {
            match &h.error {
                None => println!(
                    "{ep} is healthy: successfully committed proposal: took = {}",
                    go_duration(h.took)
                ),
                Some(e) => eprintln!("{ep} is unhealthy: failed to commit proposal: {e}"),
            }
        }
    }
    if all.iter().any(|(_, h)| h.error.is_some()) {
        return Err(Failure::error("unhealthy cluster"));
    }
    Ok(())
}

fn check_health(one: &Ctx) -> Health {
    let start = Instant::now();
    let got = one.wait(|cb| one.client.get("health", GetOptions::new(), cb));
    let took = start.elapsed();
    let error = match got {
        Ok(_) => None,
        Err(e) if e.code() == Code::PermissionDenied => None,
        Err(e) => Some(etcdctl_message(&e)),
    };
    let error = error.or_else(|| {
        match one.wait(|cb| one.client.alarm(AlarmAction::Get, 0, AlarmType::None, cb)) {
            Ok(r) if r.alarms.is_empty() => None,
            Ok(r) => Some(r.alarms.iter().fold("Active Alarm(s): ".to_string(), |s, a| {
                let name = match AlarmType::try_from(a.alarm) {
                    Ok(AlarmType::Nospace) => "NOSPACE",
                    Ok(AlarmType::Corrupt) => "CORRUPT",
                    _ => "UNKNOWN",
                };
                s + name + " "
            })),
            Err(_) => Some("Unable to fetch the alarm list".to_string()),
        }
    });
    Health { took, error }
}

fn health_json(ep: &str, h: &Health) -> String {
    Obj::new()
        .str("endpoint", ep)
        .raw("health", Some(h.error.is_none().to_string()))
        .raw("took", Some(quote(&go_duration(h.took))))
        .str("error", h.error.as_deref().unwrap_or(""))
        .end()
}

// ---------------------------------------------------------------------------------------
// alarm

/// `alarm list` and `alarm disarm` (which, like etcdctl's client, lists the alarms and
/// clears each one, printing those it cleared).
fn alarm(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let sub = args.next_word();
    args.finish()?;
    let disarm = match sub.as_deref() {
        Some("list") => false,
        Some("disarm") => true,
        other => return Err(unknown_subcommand("alarm", other)),
    };
    if !args.rest().is_empty() {
        let name = if disarm { "disarm" } else { "list" };
        return Err(Failure::usage(format!("alarm {name} command accepts no arguments")));
    }
    let c = &ctx.client;
    let listed = ctx.wait(|cb| c.alarm(AlarmAction::Get, 0, AlarmType::None, cb))?;
    let (h, alarms) = if disarm {
        let mut cleared = Vec::new();
        for a in &listed.alarms {
            let alarm = AlarmType::try_from(a.alarm).unwrap_or(AlarmType::None);
            let r = ctx.wait(|cb| c.alarm(AlarmAction::Deactivate, a.member_id, alarm, cb))?;
            cleared.extend(r.alarms);
        }
        (None, cleared) // etcdctl's client builds this answer itself: no header
    } else {
        (listed.header, listed.alarms)
    };
    if ctx.json {
        let items = alarms
            .iter()
            .map(|a| Obj::new().num("memberID", a.member_id).num("alarm", a.alarm).end())
            .collect();
        println!("{}", Obj::new().raw("header", header(h.as_ref())).list("alarms", items).end());
    } else {
        for a in &alarms {
            println!("{}", alarm_text(a));
        }
    }
    Ok(())
}

/// An alarm in protobuf's compact text form, as Go's `%+v` prints it: non-zero fields,
/// each followed by a space.
fn alarm_text(a: &AlarmMember) -> String {
    let mut s = String::new();
    if a.member_id != 0 {
        s.push_str(&format!("memberID:{} ", a.member_id));
    }
    if a.alarm != 0 {
        match AlarmType::try_from(a.alarm) {
            Ok(t) => s.push_str(&format!("alarm:{} ", t.as_str_name())),
            Err(_) => s.push_str(&format!("alarm:{} ", a.alarm)),
        }
    }
    s
}

// ---------------------------------------------------------------------------------------
// defrag

/// `defrag [--cluster]`: each endpoint in turn; failures are reported per endpoint.
fn defrag(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let cluster = args.take_bool("cluster")?;
    if args.take_value("data-dir").is_some() {
        return Err(Failure::error("defrag --data-dir (offline) is not supported; use etcdutl"));
    }
    args.finish()?;
    let mut failed = false;
    for (ep, done) in per_endpoint(ctx, cluster, |one| one.wait(|cb| one.client.defragment(cb)))? {
        match done {
            Ok(_) => println!("Finished defragmenting etcd member[{ep}]"),
            Err(e) => {
                failed = true;
                eprintln!("Failed to defragment etcd member[{ep}] ({})", etcdctl_message(&e));
            }
        }
    }
    if failed {
        exit_quietly(EXIT_ERROR);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// snapshot

/// `snapshot save FILE`: streams the backend into `FILE.part`, checks that it ends with
/// the checksum, syncs it and renames it to `FILE`.
fn snapshot_save(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    args.finish()?;
    let path = match args.rest().as_slice() {
        [path] => path.clone(),
        _ => return Err(Failure::usage("snapshot save expects one argument")),
    };
    let fail = |message: String| Failure::new(EXIT_INTERRUPTED, message);
    if ctx.endpoints.len() != 1 {
        return Err(fail(format!(
            "snapshot must be requested to one selected node, not multiple {}",
            go_list(&ctx.endpoints)
        )));
    }
    let part = format!("{path}.part");
    let result = save_part(ctx, &part).and_then(|()| {
        go_rename(&part, &path).map_err(|e| format!("could not rename {part} to {path} ({e})"))
    });
    let _ = std::fs::remove_file(&part);
    result.map_err(fail)?;
    println!("Snapshot saved at {path}");
    Ok(())
}

/// What the snapshot stream has done so far.
struct Download {
    file: File,
    size: u64,
    done: bool,
    error: Option<String>,
}

/// Downloads the snapshot into `part`, synced.
fn save_part(ctx: &Ctx, part: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(part)
        .map_err(|e| format!("could not open {part} (open {part}: {})", go_io_error(&e)))?;
    let state = Rc::new(RefCell::new(Download { file, size: 0, done: false, error: None }));
    let (s, client) = (state.clone(), ctx.client.clone());
    let _pending = ctx.client.snapshot(move |chunk| {
        let mut d = s.borrow_mut();
        match chunk {
            Ok(c) => {
                if let Err(e) = d.file.write_all(&c.blob) {
                    d.error = Some(go_io_error(&e));
                }
                d.size += c.blob.len() as u64;
                d.done |= c.remaining_bytes == 0;
            }
            Err(e) => d.error = Some(etcdctl_message(&e)),
        }
        if d.done || d.error.is_some() {
            client.stop();
        }
    });
    loop {
        {
            let d = state.borrow();
            if let Some(e) = &d.error {
                return Err(e.clone());
            }
            if d.done {
                break;
            }
        }
        if ctx.client.is_idle() {
            return Err("the snapshot stream ended early".to_string());
        }
        ctx.client.run();
    }
    let d = state.borrow();
    // The database is whole pages; the stream appends its 32-byte SHA-256.
    if d.size % 512 != 32 {
        return Err(format!("sha256 checksum not found [bytes: {}]", d.size));
    }
    d.file.sync_all().map_err(|e| go_io_error(&e))
}

// ---------------------------------------------------------------------------------------
// move-leader

/// `move-leader TRANSFEREE`: finds the leader among `--endpoints` (asking each for its
/// status) and asks it to hand over.
fn move_leader(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    args.finish()?;
    let target = match args.rest().as_slice() {
        [id] => gosyntax::parse_uint(id, 16).map_err(Failure::usage)?,
        _ => return Err(Failure::usage("move-leader command needs 1 argument")),
    };
    let mut leader = None;
    for ep in &ctx.endpoints {
        let one = ctx_for(ctx, ep)?;
        let status = one.wait(|cb| one.client.status(cb))?;
        if status.header.as_ref().is_some_and(|h| h.member_id == status.leader) {
            leader = Some((one, status.leader));
            break;
        }
    }
    let Some((one, leader_id)) = leader else {
        return Err(Failure::usage(format!(
            "no leader endpoint given at {}",
            go_list(&ctx.endpoints)
        )));
    };
    let resp = one.wait(|cb| one.client.move_leader(target, cb))?;
    if ctx.json {
        println!("{}", Obj::new().raw("header", header(resp.header.as_ref())).end());
    } else {
        println!("Leadership transferred from {leader_id:x} to {target:x}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Go formatting

/// Go's `%v` of a string slice: `[a b]`.
fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `os.Rename`, which refuses to replace a directory ("file exists").
fn go_rename(from: &str, to: &str) -> Result<(), String> {
    let why = if std::fs::symlink_metadata(to).is_ok_and(|m| m.is_dir()) {
        "file exists".to_string()
    } else {
        match std::fs::rename(from, to) {
            Ok(()) => return Ok(()),
            Err(e) => go_io_error(&e),
        }
    };
    Err(format!("rename {from} {to}: {why}"))
}

/// An OS error as Go words it: the same strerror text as Rust's, in lower case and
/// without the errno.
fn go_io_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// go-humanize's `Bytes`: SI units, one decimal below 10.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let e = ((n as f64).ln() / 1000f64.ln()).floor();
    let unit = UNITS[(e as usize).min(UNITS.len() - 1)];
    let value = ((n as f64) / 1000f64.powf(e) * 10.0 + 0.5).floor() / 10.0;
    if value < 10.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.0} {unit}")
    }
}

/// Go's `time.Duration.String()`: `850ns`, `1.5µs`, `2.738445ms`, `5.000590265s`,
/// `1m2.5s`, `1h0m0s`.
fn go_duration(d: Duration) -> String {
    let n = d.as_nanos();
    match n {
        0 => "0s".to_string(),
        1..=999 => format!("{n}ns"),
        1_000..=999_999 => format!("{}µs", decimal(n, 3)),
        1_000_000..=999_999_999 => format!("{}ms", decimal(n, 6)),
        _ => {
            let (hours, minutes) = (n / 3_600_000_000_000, n / 60_000_000_000 % 60);
            let seconds = format!("{}s", decimal(n % 60_000_000_000, 9));
            match (hours, minutes) {
                (0, 0) => seconds,
                (0, m) => format!("{m}m{seconds}"),
                (h, m) => format!("{h}h{m}m{seconds}"),
            }
        }
    }
}

/// `n / 10^places` with the fraction's trailing zeros (and a bare point) dropped.
fn decimal(n: u128, places: u32) -> String {
    let scale = 10u128.pow(places);
    let fraction = format!("{:0width$}", n % scale, width = places as usize);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{}", n / scale)
    } else {
        format!("{}.{fraction}", n / scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        assert_eq!(go_duration(Duration::from_nanos(2_738_445)), "2.738445ms");
        assert_eq!(go_duration(Duration::from_nanos(5_000_590_265)), "5.000590265s");
        assert_eq!(go_duration(Duration::from_micros(850)), "850µs");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(62_500)), "1m2.5s");
        assert_eq!(human_bytes(20480), "20 kB");
        assert_eq!(human_bytes(1_839_104), "1.8 MB");
        assert_eq!(human_bytes(573_000), "573 kB");
        assert_eq!(human_bytes(7), "7 B");
    }
}
