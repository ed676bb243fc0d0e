//! What a member's log says: its startup milestones, whether it exited, its last lines.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// etcd logs this (zap JSON, info level) once the member has joined the cluster and its
/// client listener is about to be served; the listening socket is already bound then, so a
/// client connecting right after is only queued, never refused.
const READY_MSG: &str = r#""msg":"ready to serve client requests""#;
/// Logged once the peer listener is served (no quorum needed for that).
const PEER_SERVING_MSG: &str = r#""msg":"serving peer traffic""#;
/// Log lines kept per member for error messages.
const LOG_TAIL: usize = 50;

/// Startup milestones read from the log.
#[derive(Clone, Copy, Debug)]
pub(super) enum Stage {
    PeerServing,
    Ready,
}

impl Stage {
    pub(super) fn reached(self, s: &LogState) -> bool {
        match self {
            Stage::PeerServing => s.peer_serving,
            Stage::Ready => s.ready,
        }
    }
}

/// What the log thread learned from one process's stderr.
#[derive(Default)]
pub(super) struct LogState {
    pub(super) tail: VecDeque<String>,
    peer_serving: bool,
    ready: bool,
    /// Stderr hit EOF: the process exited.
    pub(super) closed: bool,
}

#[derive(Default)]
pub(super) struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

impl Log {
    pub(super) fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `done` holds or `deadline` passes; returns whether it holds.
    pub(super) fn wait_for(&self, deadline: Instant, done: impl Fn(&LogState) -> bool) -> bool {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let guard = self.lock();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |s| !done(s))
            .unwrap_or_else(|e| e.into_inner());
        done(&guard)
    }
}

/// Reads stderr to EOF for the process's whole life, so etcd never blocks on a full pipe,
/// recording readiness and the last lines; with `echo`, prints each line prefixed by
/// `label`.
pub(super) fn drain_log(stderr: impl Read, log: &Log, label: &str, echo: bool) {
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
