//! Cluster and maintenance RPCs against a real 3-member etcd cluster: member list, add,
//! update, promote (refused while the learner is not in sync) and remove; status; alarms
//! (get, activate, deactivate); defragment; hash and hash_kv agreeing across members; a
//! snapshot streamed chunk by chunk into a file that `etcdutl` accepts; and moving the
//! leadership.

mod support;

use evetcd::pb::etcdserverpb::{Member, SnapshotResponse, StatusResponse};
use evetcd::{
    AlarmAction, AlarmType, Client, Code, DowngradeAction, EtcdError, GetOptions, PutOptions,
};
use std::cell::RefCell;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::rc::Rc;
use std::time::Duration;
use support::client::{block, client, drive_all, ok};
use support::{Cluster, Etcd};

/// One client per member, in member order.
fn clients(cluster: &Cluster) -> Vec<Client> {
    cluster.endpoints().iter().map(|e| client(e)).collect()
}

/// Each harness member's etcd id, in member order (from the status each member reports
/// about itself).
fn member_ids(clients: &[Client]) -> Vec<u64> {
    clients.iter().map(|c| ok(c, |cb| c.status(cb)).header.expect("header").member_id).collect()
}

/// `http://127.0.0.1:PORT`.
fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// A peer URL on a loopback port nothing listens on: a member that is never started.
fn unserved_peer_url() -> String {
    format!("http://{}", support::refused_endpoint())
}

fn find(members: &[Member], id: u64) -> Option<&Member> {
    members.iter().find(|m| m.id == id)
}

/// A file or directory under the temp dir, removed when dropped.
struct TempPath(PathBuf);

impl TempPath {
    fn new(what: &str) -> TempPath {
        let name = format!("evetcd-{what}-{}-{}", std::process::id(), support::next_id());
        TempPath(std::env::temp_dir().join(name))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `etcdutl` with `args`; panics with its output unless it succeeds. Returns stdout.
fn etcdutl(args: &[&str]) -> String {
    let bin = support::etcd_bin_dir().join("etcdutl");
    let out = Command::new(&bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "etcdutl {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The integer value of `"field":N` in a flat JSON object.
fn json_int(json: &str, field: &str) -> i64 {
    let key = format!("\"{field}\":");
    let rest =
        &json[json.find(&key).unwrap_or_else(|| panic!("no {field} in {json}")) + key.len()..];
    let digits: String =
        rest.trim_start().chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
    digits.parse().unwrap_or_else(|_| panic!("{field} is not an integer in {json}"))
}

#[test]
fn member_list_and_status_describe_the_cluster() {
    let cluster = Cluster::start(3);
    let cs = clients(&cluster);
    let ids = member_ids(&cs);
    let c = &cs[0];

    for linearizable in [true, false] {
        let list = ok(c, |cb| c.member_list(linearizable, cb));
        let header = list.header.as_ref().expect("header");
        assert_eq!(header.member_id, ids[0], "answered by the member the client is connected to");
        assert_ne!(header.cluster_id, 0);
        assert_eq!(list.members.len(), 3, "linearizable={linearizable}: {:?}", list.members);
        for (m, &id) in cluster.members.iter().zip(&ids) {
            let member =
                find(&list.members, id).unwrap_or_else(|| panic!("{id:x} not in {list:?}"));
            assert_eq!(member.name, m.name());
            assert_eq!(member.peer_ur_ls, [url(m.peer_port())]);
            assert_eq!(member.client_ur_ls, [url(m.client_port())]);
            assert!(!member.is_learner);
        }
    }

    let status: Vec<StatusResponse> = cs.iter().map(|c| ok(c, |cb| c.status(cb))).collect();
    let s = &status[0];
    let (a, b, c) = support::etcd_version();
    assert_eq!(s.version, format!("{a}.{b}.{c}"));
    if (a, b) >= (3, 6) {
        // Fields 3.6 added to the status, decoded.
        assert_eq!(s.storage_version, format!("{a}.{b}.0"), "{s:?}");
        assert!(s.db_size_quota > 0, "{s:?}");
        assert!(s.downgrade_info.as_ref().is_some_and(|d| !d.enabled), "{s:?}");
    }
    assert!(ids.contains(&s.leader), "leader {:x} is not one of {ids:x?}", s.leader);
    assert!(s.raft_index > 0 && s.raft_term > 0 && s.raft_applied_index > 0, "{s:?}");
    assert!(s.db_size > 0 && s.db_size_in_use > 0 && s.db_size_in_use <= s.db_size, "{s:?}");
    assert!(!s.is_learner);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    for (i, other) in status.iter().enumerate() {
        assert_eq!(other.header.as_ref().unwrap().member_id, ids[i]);
        assert_eq!(other.leader, s.leader, "member {i} disagrees about the leader");
        assert_eq!(other.version, s.version);
    }
}

#[test]
fn a_learner_is_added_refused_promotion_updated_and_removed() {
    // With etcd's default strict reconfiguration check, a member is only added once every
    // peer has been connected for 5 s ("etcdserver: unhealthy cluster" before that); the
    // learner's promotion is refused for not being in sync either way.
    let cluster = Cluster::start_with(3, &["--strict-reconfig-check=false"]);
    let c = client(&cluster.members[0].endpoint());
    let peer = unserved_peer_url();

    let added = ok(&c, |cb| c.member_add([peer.clone()], true, cb));
    let learner = added.member.expect("the added member");
    assert!(learner.id != 0 && learner.is_learner, "{learner:?}");
    assert_eq!(learner.peer_ur_ls, std::slice::from_ref(&peer));
    assert!(learner.name.is_empty(), "never started, so it has no name yet: {learner:?}");
    assert_eq!(added.members.len(), 4, "{:?}", added.members);
    let id = learner.id;

    let list = ok(&c, |cb| c.member_list(true, cb));
    assert_eq!(list.members.len(), 4);
    let m = find(&list.members, id).expect("the learner is listed");
    assert!(m.is_learner && m.peer_ur_ls == [peer.clone()] && m.client_ur_ls.is_empty(), "{m:?}");
    assert_eq!(list.members.iter().filter(|m| m.is_learner).count(), 1);

    // It never ran, so it cannot have caught up with the leader.
    let err = block(&c, |cb| c.member_promote(id, cb)).unwrap_err();
    assert_eq!(
        (err.code(), err.operation(), err.message()),
        (
            Code::FailedPrecondition,
            "member_promote",
            "etcdserver: can only promote a learner member which is in sync with leader"
        ),
        "{err}"
    );
    assert!(!err.is_retryable());
    let list = ok(&c, |cb| c.member_list(true, cb));
    assert!(find(&list.members, id).expect("still listed").is_learner, "still a learner");

    let moved = unserved_peer_url();
    let updated = ok(&c, |cb| c.member_update(id, [moved.clone()], cb));
    let m = find(&updated.members, id).expect("listed in the update response");
    assert_eq!(m.peer_ur_ls, std::slice::from_ref(&moved));
    let list = ok(&c, |cb| c.member_list(true, cb));
    let m = find(&list.members, id).expect("still listed");
    // Not `is_learner`: etcd 3.5's MemberUpdate drops the flag from its member list (raft
    // still treats the member as a learner), etcd-io/etcd#21694.
    assert!(m.peer_ur_ls == [moved] && m.client_ur_ls.is_empty(), "{m:?}");

    let removed = ok(&c, |cb| c.member_remove(id, cb));
    assert_eq!(removed.members.len(), 3);
    assert!(find(&removed.members, id).is_none());
    let list = ok(&c, |cb| c.member_list(true, cb));
    assert_eq!(list.members.len(), 3, "{:?}", list.members);
    assert!(list.members.iter().all(|m| !m.is_learner && !m.name.is_empty()));

    // A member that is not there (any more).
    let err = block(&c, |cb| c.member_remove(id, cb)).unwrap_err();
    assert_eq!(
        (err.code(), err.operation(), err.message()),
        (Code::NotFound, "member_remove", "etcdserver: member not found"),
        "{err}"
    );
    assert!(!err.is_retryable());
    // The cluster still serves writes.
    ok(&c, |cb| c.put("after-learner", "v", PutOptions::new(), cb));
}

#[test]
fn alarms_defragment_and_hashes() {
    let cluster = Cluster::start(3);
    let cs = clients(&cluster);
    let ids = member_ids(&cs);
    let c = &cs[0];
    let p = support::unique_prefix("hash");

    let alarms = ok(c, |cb| c.alarm(AlarmAction::Get, 0, AlarmType::None, cb));
    assert!(alarms.alarms.is_empty(), "{:?}", alarms.alarms);

    // A raised NOSPACE alarm makes the cluster refuse writes until it is cleared.
    let raised = ok(c, |cb| c.alarm(AlarmAction::Activate, ids[1], AlarmType::Nospace, cb));
    assert_eq!(raised.alarms.len(), 1, "{:?}", raised.alarms);
    assert_eq!(
        (raised.alarms[0].member_id, raised.alarms[0].alarm),
        (ids[1], AlarmType::Nospace as i32)
    );
    let got = ok(c, |cb| c.alarm(AlarmAction::Get, 0, AlarmType::None, cb));
    assert_eq!(got.alarms, raised.alarms);
    let err = block(c, |cb| c.put(format!("{p}refused"), "v", PutOptions::new(), cb)).unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded"),
        "{err}"
    );
    assert!(!err.is_retryable(), "only an operator can clear the alarm");
    let cleared = ok(c, |cb| c.alarm(AlarmAction::Deactivate, ids[1], AlarmType::Nospace, cb));
    assert_eq!(cleared.alarms, raised.alarms, "the response names the alarm cleared");
    let got = ok(c, |cb| c.alarm(AlarmAction::Get, 0, AlarmType::None, cb));
    assert!(got.alarms.is_empty(), "{:?}", got.alarms);

    let mut rev = 0;
    for i in 0..20 {
        let put = ok(c, |cb| c.put(format!("{p}{i}"), format!("value {i}"), PutOptions::new(), cb));
        rev = put.header.unwrap().revision;
    }
    ok(c, |cb| c.defragment(cb));
    let whole = ok(c, |cb| c.hash(cb));
    assert_ne!(whole.hash, 0);
    let newest = ok(c, |cb| c.hash_kv(0, cb));
    assert_ne!(newest.hash, 0);
    assert_eq!(newest.header.unwrap().revision, rev);
    // Later writes do not change the hash up to `rev`, on any member.
    ok(c, |cb| c.put(format!("{p}later"), "v", PutOptions::new(), cb));
    let mut hashes = Vec::new();
    for member in &cs {
        // A linearizable read makes the member catch up with every write before it.
        ok(member, |cb| member.get(format!("{p}later"), GetOptions::new(), cb));
        let h = ok(member, |cb| member.hash_kv(rev, cb));
        assert_eq!(h.compact_revision, -1, "nothing compacted");
        hashes.push(h.hash);
    }
    assert_eq!(hashes, [newest.hash; 3], "hash_kv({rev}) differs between members");
    let after = ok(c, |cb| c.hash_kv(0, cb));
    assert_ne!(after.hash, newest.hash, "a write changes the newest hash");

    // A revision not yet written.
    let err = block(c, |cb| c.hash_kv(rev + 100, cb)).unwrap_err();
    assert_eq!(
        (err.code(), err.operation(), err.message()),
        (Code::OutOfRange, "hash_kv", "etcdserver: mvcc: required revision is a future revision"),
        "{err}"
    );
}

#[test]
fn a_snapshot_streams_into_a_file_that_etcdutl_accepts() {
    let cluster = Cluster::start(3);
    let c = client(&cluster.members[1].endpoint());
    let p = support::unique_prefix("snapshot");
    // About 400 KiB of values, so the snapshot takes many chunks.
    let mut last_rev = 0;
    for i in 0..100 {
        let value = vec![b'a' + (i % 26) as u8; 4096];
        last_rev = ok(&c, |cb| c.put(format!("{p}{i:03}"), value, PutOptions::new(), cb))
            .header
            .unwrap()
            .revision;
    }

    let file = TempPath::new("snapshot");
    let mut out = std::fs::File::create(&file.0).expect("create the snapshot file");
    // (chunks, bytes written, remaining_bytes of each chunk, the error if any)
    type Seen = (usize, u64, Vec<u64>, Option<EtcdError>);
    let seen: Rc<RefCell<Seen>> = Rc::default();
    let done = Rc::new(RefCell::new(false));
    let (s, d) = (seen.clone(), done.clone());
    let _pending = c.snapshot(move |r: Result<SnapshotResponse, EtcdError>| {
        assert!(!*d.borrow(), "a callback after the last chunk or the error: {r:?}");
        let mut s = s.borrow_mut();
        match r {
            Ok(chunk) => {
                out.write_all(&chunk.blob).expect("write a chunk");
                s.0 += 1;
                s.1 += chunk.blob.len() as u64;
                s.2.push(chunk.remaining_bytes);
                if chunk.remaining_bytes == 0 {
                    out.flush().expect("flush");
                    *d.borrow_mut() = true;
                }
            }
            Err(e) => {
                s.3 = Some(e);
                *d.borrow_mut() = true;
            }
        }
    });
    // Runs until the client is idle (a limit instead of a hang if the stream never ends).
    drive_all(&[&c], Duration::from_secs(20));
    assert!(*done.borrow(), "the client went idle before the snapshot ended");
    assert!(c.is_idle());
    let (chunks, bytes, remaining, err) = seen.take();
    assert!(err.is_none(), "snapshot failed: {err:?}");
    assert!(chunks > 1, "{bytes} bytes came in {chunks} chunk(s)");
    assert!(remaining.windows(2).all(|w| w[0] > w[1]), "remaining_bytes must fall: {remaining:?}");
    assert_eq!(std::fs::metadata(&file.0).unwrap().len(), bytes);

    let path = file.0.to_str().unwrap();
    let status = etcdutl(&["snapshot", "status", path, "-w", "json"]);
    let revision = json_int(&status, "revision");
    assert!(revision >= last_rev, "snapshot revision {revision} < last put {last_rev}: {status}");
    assert!(json_int(&status, "totalKey") >= 100, "{status}");
    let db_size = json_int(&status, "totalSize") as u64;
    assert_eq!(
        bytes,
        db_size + 32,
        "etcd sends the database ({db_size} bytes) and then its sha256 (32 bytes)"
    );
    // Restoring checks the sha256 etcd appends to the stream: every byte arrived, in order.
    let restored = TempPath::new("restored");
    etcdutl(&["snapshot", "restore", path, "--data-dir", restored.0.to_str().unwrap()]);
    assert!(restored.0.join("member/snap/db").is_file());
}

#[test]
fn move_leader_hands_leadership_to_a_follower() {
    let cluster = Cluster::start(3);
    let cs = clients(&cluster);
    let ids = member_ids(&cs);
    let leader = ok(&cs[0], |cb| cs[0].status(cb)).leader;
    let li = ids.iter().position(|&id| id == leader).expect("the leader is a member");
    let fi = (li + 1) % 3;
    let other = (li + 2) % 3;

    // Only the leader can hand leadership over.
    let err = block(&cs[fi], |cb| cs[fi].move_leader(ids[other], cb)).unwrap_err();
    assert_eq!(
        (err.code(), err.operation(), err.message()),
        (Code::FailedPrecondition, "move_leader", "etcdserver: not leader"),
        "{err}"
    );

    ok(&cs[li], |cb| cs[li].move_leader(ids[fi], cb));
    // etcd answers once the old leader follows the new one; the new one knew first.
    for i in [li, fi] {
        let s = ok(&cs[i], |cb| cs[i].status(cb));
        assert_eq!(s.leader, ids[fi], "member {i} names {:x} as leader", s.leader);
    }
    // The cluster serves writes under its new leader.
    ok(&cs[li], |cb| cs[li].put("after-move", "v", PutOptions::new(), cb));
}

#[test]
fn downgrade_validates_enables_and_cancels_one_minor_release_down() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let (major, minor, _) = support::etcd_version();
    let below = format!("{major}.{}", minor - 1);
    let cluster = ok(&c, |cb| c.downgrade(DowngradeAction::Validate, below.clone(), cb)).version;
    assert!(cluster.starts_with(&format!("{major}.{minor}")), "cluster version {cluster}");
    // Two minor releases down is refused.
    let two_down = format!("{major}.{}", minor - 2);
    let err = block(&c, |cb| c.downgrade(DowngradeAction::Validate, two_down, cb)).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    if minor == 5 {
        return; // 3.5's Enable times out ("request timed out"): its downgrade is incomplete
    }
    ok(&c, |cb| c.downgrade(DowngradeAction::Enable, below, cb));
    ok(&c, |cb| c.downgrade(DowngradeAction::Cancel, "", cb));
    // Nothing in progress any more: the cancel is accepted again.
    ok(&c, |cb| c.downgrade(DowngradeAction::Cancel, "", cb));
}
