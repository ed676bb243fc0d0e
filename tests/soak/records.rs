//! What the client threads record during the run and hand to the checker: plain data
//! (`Send`), with times in seconds since the soak started so that they line up with the fault
//! schedule.

use std::collections::BTreeMap;

/// One watch event, as delivered (or as etcd's own history has it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ev {
    /// The event's revision (the key's mod revision; for a delete, the deletion's).
    pub rev: i64,
    pub put: bool,
    pub key: String,
    pub value: String,
    pub create: i64,
    pub version: i64,
    pub lease: i64,
    /// The previous value and its mod revision, when the watch asked for `prev_kv`.
    pub prev: Option<(String, i64)>,
}

impl Ev {
    pub fn of(e: &evetcd::Event) -> Ev {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let kv = e.kv.clone().unwrap_or_default();
        Ev {
            rev: kv.mod_revision,
            put: e.r#type() == evetcd::EventType::Put,
            key: text(&kv.key),
            value: text(&kv.value),
            create: kv.create_revision,
            version: kv.version,
            lease: kv.lease,
            prev: e.prev_kv.as_ref().map(|p| (text(&p.value), p.mod_revision)),
        }
    }

    /// `rev key` and what happened, for violation lines.
    pub fn short(&self) -> String {
        let what = if self.put { format!("put {:?}", self.value) } else { "delete".to_string() };
        format!("rev {} {} {what}", self.rev, self.key)
    }
}

/// What one logical watcher delivered. A churned watcher is cancelled and re-created from
/// the revision after the last one it delivered, so its incarnations form one stream and are
/// checked as one.
#[derive(Debug, Default)]
pub struct WatchLog {
    pub name: String,
    pub client: String,
    pub prefix: String,
    /// The revision the first incarnation started from.
    pub start_rev: i64,
    pub prev_kv: bool,
    pub no_delete: bool,
    /// Every response that carried events, in delivery order.
    pub responses: Vec<Vec<Ev>>,
    /// Indexes in `responses` of the first response after each `created` one.
    pub first_after_create: Vec<usize>,
    /// Responses with `created` set: one per (re)creation of the watch on a stream.
    pub created: u32,
    /// Times the test cancelled and re-created it.
    pub churned: u32,
    /// Errors delivered to its callback (a watch here must never end).
    pub errors: Vec<String>,
    /// Callbacks that ran after the watch was cancelled or had ended.
    pub late: Vec<String>,
}

/// One lease the test kept alive, from its grant until the test stopped renewing it.
#[derive(Debug, Clone)]
pub struct LeaseLog {
    pub id: i64,
    pub client: String,
    pub ttl: i64,
    pub granted_at: f64,
    /// When its last successful renewal (or the grant) was answered.
    pub last_ok: f64,
    pub renewals: u64,
    /// When the client heard that the lease was gone while still keeping it alive, and how.
    pub expired: Option<(f64, String)>,
    /// When the test stopped keeping it alive (cancelled its keepalive), if it did.
    pub released_at: Option<f64>,
}

/// Heap bytes the client library held (see `heap`), at four moments of the client's life.
#[derive(Debug, Default, Clone, Copy)]
pub struct HeapMarks {
    /// Before `Client::new`.
    pub before_client: i64,
    /// After `Client::new`: no connection yet.
    pub created: i64,
    /// After the first call completed, before any load.
    pub baseline: i64,
    /// After the run, every stream cancelled and every call completed, the client still open.
    pub end: i64,
    /// After `close()`: the client without its connection.
    pub closed: i64,
    /// After `close()` and dropping the client.
    pub dropped: i64,
}

/// Everything one client thread hands back.
#[derive(Debug, Default)]
pub struct ClientReport {
    pub name: String,
    /// Unary calls started (cancels of streams included) and callbacks that ran.
    pub issued: u64,
    pub completed: u64,
    /// Calls whose callback never ran: operation and when it was started.
    pub outstanding: Vec<String>,
    /// Failed calls by `operation code`: how many, and the first one's message.
    pub errors: BTreeMap<String, (u64, String)>,
    pub watches: Vec<WatchLog>,
    pub leases: Vec<LeaseLog>,
    /// Violations seen live (a guarded txn that failed, a callback after cancel, ...).
    pub violations: Vec<String>,
    pub heap: HeapMarks,
    /// (seconds, live bytes) of the library every 30 s during the load.
    pub heap_samples: Vec<(f64, i64)>,
    /// Locks acquired and guarded txns that succeeded (lock holders only).
    pub locks: u64,
    pub guarded: u64,
}
