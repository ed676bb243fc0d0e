//! The fault schedule: a seeded sequence of faults, one at a time, each on one member, and
//! the record of when the cluster had no working quorum.
//!
//! One fault at a time is how "never more than one member down" is kept: a member that was
//! killed is restarted and serving again, a paused one resumed, a proxy back to passing,
//! before the next fault is drawn. Member faults (kill -9 and restart, SIGSTOP and SIGCONT)
//! hit the cluster; proxy faults (blackhole, delay, reset, refuse) hit only the clients'
//! path to one member, the peers still talk directly.
//!
//! Every fault is drawn with the same number of PRNG draws, whatever it is, so a seed always
//! gives the same sequence of faults; only how many of them fit in the run depends on time.
//!
//! With two of three members up there is always a quorum, except while the cluster elects a
//! new leader after its leader was killed or paused. The injector asks etcd (with etcdctl,
//! not the client under test) whether the victim leads before hitting it, and if so polls
//! the others until one leads: that window is recorded as "no quorum", and the lease check
//! only counts an expiry if a quorum was there for a whole TTL without such a window.

use super::rng::Rng;
use crate::support::proxy::{Mode, Proxy};
use crate::support::{etcdctl_with, Cluster};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread::sleep;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// SIGKILL, then restart with the same data and wait until it serves.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// The member's proxy forwards nothing (connections stay open).
    Blackhole,
    /// The member's proxy holds each chunk this many milliseconds.
    Delay(u64),
    /// The member's proxy resets every connection (instant).
    Reset,
    /// The member's proxy resets every connection and refuses new ones.
    Refuse,
}

/// One drawn fault.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    /// Quiet time before it.
    pub gap: Duration,
    pub member: usize,
    pub kind: Kind,
    /// How long it lasts (not for `Reset`).
    pub hold: Duration,
}

/// Draws the next fault: always five draws.
pub fn draw(rng: &mut Rng) -> Fault {
    let gap = Duration::from_millis(rng.range(500, 3000));
    let member = rng.below(3) as usize;
    let which = rng.below(100);
    let hold = Duration::from_millis(rng.range(1000, 9000));
    let delay = rng.range(20, 400);
    let kind = match which {
        0..=19 => Kind::Kill,
        20..=34 => Kind::Pause,
        35..=54 => Kind::Blackhole,
        55..=69 => Kind::Delay(delay),
        70..=84 => Kind::Reset,
        _ => Kind::Refuse,
    };
    Fault { gap, member, kind, hold }
}

/// A fault as it happened (times in seconds since the soak started).
#[derive(Clone, Debug)]
pub struct Applied {
    pub at: f64,
    pub end: f64,
    pub member: usize,
    pub kind: Kind,
    /// The member's process was down (killed or paused) from `at` to `end`.
    pub down: bool,
    pub was_leader: bool,
}

/// What happened to the cluster over the run.
#[derive(Debug, Default)]
pub struct Timeline {
    pub faults: Vec<Applied>,
    /// Windows without a working quorum: (from, to, why).
    pub no_quorum: Vec<(f64, f64, String)>,
    /// Windows in which two members were down at once (among `no_quorum`).
    pub two_down: usize,
    /// The harness itself failed (a member that did not come back): reported as violations.
    pub harness_errors: Vec<String>,
}

impl Timeline {
    /// The longest stretch of `[from, to]` without a no-quorum window, in seconds.
    pub fn longest_quorum_stretch(&self, from: f64, to: f64) -> f64 {
        let mut windows: Vec<(f64, f64)> = self
            .no_quorum
            .iter()
            .filter(|(a, b, _)| *a < to && *b > from)
            .map(|(a, b, _)| (*a, *b))
            .collect();
        windows.sort_by(|x, y| x.0.total_cmp(&y.0));
        let (mut longest, mut start) = (0.0f64, from);
        for (a, b) in windows {
            longest = longest.max(a - start);
            start = start.max(b);
        }
        longest.max(to - start)
    }

    /// Adds a window for every moment two or more members were down at once (never, while
    /// faults come one at a time; computed from the record rather than assumed).
    fn add_overlaps(&mut self) {
        let downs: Vec<&Applied> = self.faults.iter().filter(|f| f.down).collect();
        let mut windows = Vec::new();
        for (i, a) in downs.iter().enumerate() {
            for b in &downs[i + 1..] {
                let (from, to) = (a.at.max(b.at), a.end.min(b.end));
                if from < to && a.member != b.member {
                    windows.push((from, to, format!("m{} and m{} down", a.member, b.member)));
                }
            }
        }
        self.two_down = windows.len();
        self.no_quorum.extend(windows);
    }
}

/// Injects faults drawn from `seed` until `until`, then heals everything and waits until
/// every member serves and knows a leader. `secs` converts an instant to soak seconds.
pub fn run(
    cluster: &mut Cluster,
    proxies: &[Proxy],
    seed: u64,
    until: Instant,
    secs: &dyn Fn() -> f64,
) -> Timeline {
    let mut rng = Rng::fork(seed, 0);
    let mut timeline = Timeline::default();
    loop {
        let fault = draw(&mut rng);
        if Instant::now() + fault.gap >= until {
            break;
        }
        sleep(fault.gap);
        // A fault never outlasts the load phase.
        let hold = fault.hold.min(until.saturating_duration_since(Instant::now()));
        let n = timeline.faults.len() + 1;
        match apply(cluster, proxies, fault, hold, secs, &mut timeline) {
            Ok(applied) => {
                println!(
                    "fault {n} @{:.1}s-{:.1}s: {:?} m{}{}",
                    applied.at,
                    applied.end,
                    applied.kind,
                    applied.member,
                    if applied.was_leader { " (the leader)" } else { "" }
                );
                timeline.faults.push(applied);
            }
            Err(e) => {
                // A member that did not come back: stop injecting, a second fault could
                // take the quorum away for good.
                timeline.harness_errors.push(format!("fault {n} ({fault:?}): {e}"));
                break;
            }
        }
    }
    heal(cluster, proxies, &mut timeline);
    timeline.add_overlaps();
    timeline
}

fn apply(
    cluster: &mut Cluster,
    proxies: &[Proxy],
    fault: Fault,
    hold: Duration,
    secs: &dyn Fn() -> f64,
    timeline: &mut Timeline,
) -> Result<Applied, String> {
    let m = fault.member;
    let proxy = &proxies[m];
    let down = matches!(fault.kind, Kind::Kill | Kind::Pause);
    let was_leader = down && leads(cluster, m);
    let at = secs();
    match fault.kind {
        Kind::Kill => {
            cluster.members[m].kill();
            note_election(cluster, m, was_leader, at, secs, timeline);
            sleep(hold.saturating_sub(Duration::from_secs_f64(secs() - at)));
            let member = &mut cluster.members[m];
            catch_unwind(AssertUnwindSafe(|| {
                member.start_again();
                member.wait_ready();
            }))
            .map_err(|e| format!("m{m} did not restart: {}", panic_text(&e)))?;
        }
        Kind::Pause => {
            cluster.members[m].pause();
            note_election(cluster, m, was_leader, at, secs, timeline);
            sleep(hold.saturating_sub(Duration::from_secs_f64(secs() - at)));
            cluster.members[m].resume();
        }
        Kind::Blackhole | Kind::Delay(_) | Kind::Refuse => {
            let mode = match fault.kind {
                Kind::Blackhole => Mode::Blackhole,
                Kind::Delay(ms) => Mode::Delay(Duration::from_millis(ms)),
                _ => Mode::Refuse,
            };
            proxy.set_mode(mode);
            if fault.kind == Kind::Refuse {
                proxy.reset_all();
            }
            sleep(hold);
            proxy.set_mode(Mode::Pass);
        }
        Kind::Reset => proxy.reset_all(),
    }
    Ok(Applied { at, end: secs(), member: m, kind: fault.kind, down, was_leader })
}

/// After member `m` went down: if it led, waits until another member leads and records the
/// window without a leader (at most 15 s, then the window stays open until the fault ends).
fn note_election(
    cluster: &Cluster,
    m: usize,
    was_leader: bool,
    at: f64,
    secs: &dyn Fn() -> f64,
    timeline: &mut Timeline,
) {
    if !was_leader {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if (0..3).filter(|&i| i != m).any(|i| leads(cluster, i)) {
            break;
        }
        sleep(Duration::from_millis(50));
    }
    timeline.no_quorum.push((at, secs(), format!("m{m} (the leader) went down")));
}

/// Whether member `i` answers a status call naming itself leader (1 s timeouts).
pub fn leads(cluster: &Cluster, i: usize) -> bool {
    let m = &cluster.members[i];
    let out = etcdctl_with(
        &m.endpoint(),
        m.etcdctl_flags(),
        &["--dial-timeout=1s", "--command-timeout=1s", "endpoint", "status", "-w", "fields"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        let prefix = format!("\"{name}\" : ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).map(str::to_owned)
    };
    let id = field("MemberID");
    out.status.success() && id.is_some() && id == field("Leader")
}

/// Every proxy passing, every member running, and a leader known to all three (at most
/// 30 s); what does not come back is a harness error.
fn heal(cluster: &mut Cluster, proxies: &[Proxy], timeline: &mut Timeline) {
    for p in proxies {
        p.set_mode(Mode::Pass);
    }
    for (i, member) in cluster.members.iter_mut().enumerate() {
        if !member.is_running() {
            let restarted = catch_unwind(AssertUnwindSafe(|| {
                member.start_again();
                member.wait_ready();
            }));
            if let Err(e) = restarted {
                timeline
                    .harness_errors
                    .push(format!("heal: m{i} did not restart: {}", panic_text(&e)));
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(0..3).all(|i| knows_leader(cluster, i)) {
        if Instant::now() >= deadline {
            timeline.harness_errors.push("heal: the cluster has no leader after 30 s".into());
            return;
        }
        sleep(Duration::from_millis(200));
    }
}

/// Whether member `i` answers a status call and names a leader.
fn knows_leader(cluster: &Cluster, i: usize) -> bool {
    let m = &cluster.members[i];
    let out = etcdctl_with(
        &m.endpoint(),
        m.etcdctl_flags(),
        &["--dial-timeout=1s", "--command-timeout=1s", "endpoint", "status", "-w", "fields"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success()
        && text.lines().any(|l| l.strip_prefix("\"Leader\" : ").is_some_and(|v| v.trim() != "0"))
}

fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(panic)".into())
}
