//! Auth against a real etcd: the whole user and role lifecycle with the server's errors, and
//! auth enabled with root: a client without a token, root, a user limited to reading a
//! prefix (permission denied for a put and for a watch outside the prefix), a wrong
//! password, a second client seeded with a token, and auth disabled again.

mod support;

use evetcd::pb::authpb::Permission;
use evetcd::{
    prefix_range_end, Client, Code, Config, EtcdError, GetOptions, PermissionType, PutOptions,
    WatchOptions, WatchResponse,
};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use support::client::{block, client, drive_all, drive_until, ok};
use support::Etcd;

/// bcrypt at its lowest cost: every user add, password change and authenticate hashes.
const FAST_BCRYPT: &str = "--bcrypt-cost=4";

/// Asserts `err` is the server's `code` and `message` for `operation`, and final.
fn assert_final(err: &EtcdError, code: Code, operation: &str, message: &str) {
    assert_eq!((err.code(), err.operation(), err.message()), (code, operation, message), "{err}");
    assert!(!err.is_retryable(), "{err} must not be retryable");
}

fn perm(perm_type: PermissionType, key: &str, range_end: &str) -> Permission {
    Permission {
        perm_type: perm_type as i32,
        key: key.to_owned().into_bytes().into(),
        range_end: range_end.to_owned().into_bytes().into(),
    }
}

/// Creates `root` with the root role and turns auth on, through `c` (which has no token).
fn enable_auth_with_root(c: &Client, password: &str) {
    ok(c, |cb| c.user_add("root", password, cb));
    ok(c, |cb| c.user_grant_role("root", "root", cb));
    ok(c, |cb| c.auth_enable(cb));
}

/// A client for `endpoint` authenticated as `user`; returns it with its token.
fn logged_in(endpoint: &str, user: &str, password: &str) -> (Client, String) {
    let c = client(endpoint);
    let token = ok(&c, |cb| c.authenticate(user, password, cb)).token;
    assert!(!token.is_empty());
    (c, token)
}

#[test]
fn users_and_roles_lifecycle() {
    let etcd = Etcd::start_with(&[FAST_BCRYPT]);
    let c = client(&etcd.endpoint());

    // Roles and their permissions.
    ok(&c, |cb| c.role_add("reader", cb));
    let err = block(&c, |cb| c.role_add("reader", cb)).unwrap_err();
    assert_final(
        &err,
        Code::FailedPrecondition,
        "role_add",
        "etcdserver: role name already exists",
    );
    ok(&c, |cb| c.role_grant_permission("reader", PermissionType::Read, "/data/", "/data0", cb));
    ok(&c, |cb| c.role_grant_permission("reader", PermissionType::Readwrite, "/config", "", cb));
    let role = ok(&c, |cb| c.role_get("reader", cb));
    // etcd keeps a role's permissions sorted by key.
    assert_eq!(
        role.perm,
        [
            perm(PermissionType::Readwrite, "/config", ""),
            perm(PermissionType::Read, "/data/", "/data0")
        ]
    );
    ok(&c, |cb| c.role_add("writer", cb));
    assert_eq!(ok(&c, |cb| c.role_list(cb)).roles, ["reader", "writer"]);

    // Users and their roles.
    ok(&c, |cb| c.user_add("alice", "old-password", cb));
    let err = block(&c, |cb| c.user_add("alice", "x", cb)).unwrap_err();
    assert_final(
        &err,
        Code::FailedPrecondition,
        "user_add",
        "etcdserver: user name already exists",
    );
    ok(&c, |cb| c.user_add("bob", "bob-password", cb));
    ok(&c, |cb| c.user_grant_role("alice", "reader", cb));
    ok(&c, |cb| c.user_grant_role("alice", "writer", cb));
    assert_eq!(ok(&c, |cb| c.user_get("alice", cb)).roles, ["reader", "writer"]);
    assert!(ok(&c, |cb| c.user_get("bob", cb)).roles.is_empty());
    assert_eq!(ok(&c, |cb| c.user_list(cb)).users, ["alice", "bob"]);
    let err = block(&c, |cb| c.user_grant_role("alice", "nobody", cb)).unwrap_err();
    assert_final(
        &err,
        Code::FailedPrecondition,
        "user_grant_role",
        "etcdserver: role name not found",
    );
    ok(&c, |cb| c.user_change_password("alice", "new-password", cb));

    // Passwords are only checked with auth on (root needed), through a second client: the
    // first one keeps managing, as root.
    enable_auth_with_root(&c, "root-password");
    ok(&c, |cb| c.authenticate("root", "root-password", cb));
    let probe = client(&etcd.endpoint());
    let err = block(&probe, |cb| probe.authenticate("alice", "old-password", cb)).unwrap_err();
    assert_final(
        &err,
        Code::InvalidArgument,
        "authenticate",
        "etcdserver: authentication failed, invalid user ID or password",
    );
    let alice = ok(&probe, |cb| probe.authenticate("alice", "new-password", cb));
    assert!(!alice.token.is_empty());
    // As alice: a key her reader role covers.
    ok(&probe, |cb| probe.get("/data/x", GetOptions::new(), cb));

    // Revoke and delete, as root.
    ok(&c, |cb| c.role_revoke_permission("reader", "/data/", "/data0", cb));
    let role = ok(&c, |cb| c.role_get("reader", cb));
    assert_eq!(role.perm, [perm(PermissionType::Readwrite, "/config", "")]);
    let err = block(&c, |cb| c.role_revoke_permission("reader", "/data/", "/data0", cb));
    assert_final(
        &err.unwrap_err(),
        Code::FailedPrecondition,
        "role_revoke_permission",
        "etcdserver: permission is not granted to the role",
    );
    ok(&c, |cb| c.user_revoke_role("alice", "reader", cb));
    assert_eq!(ok(&c, |cb| c.user_get("alice", cb)).roles, ["writer"]);
    let err = block(&c, |cb| c.user_revoke_role("alice", "reader", cb)).unwrap_err();
    assert_final(
        &err,
        Code::FailedPrecondition,
        "user_revoke_role",
        "etcdserver: role is not granted to the user",
    );
    ok(&c, |cb| c.user_delete("alice", cb));
    assert_eq!(ok(&c, |cb| c.user_list(cb)).users, ["bob", "root"]);
    let err = block(&c, |cb| c.user_get("alice", cb)).unwrap_err();
    assert_final(&err, Code::FailedPrecondition, "user_get", "etcdserver: user name not found");
    ok(&c, |cb| c.role_delete("reader", cb));
    ok(&c, |cb| c.role_delete("writer", cb));
    let roles = ok(&c, |cb| c.role_list(cb)).roles;
    assert!(!roles.contains(&"reader".to_owned()) && !roles.contains(&"writer".to_owned()));
    let err = block(&c, |cb| c.role_get("reader", cb)).unwrap_err();
    assert_final(&err, Code::FailedPrecondition, "role_get", "etcdserver: role name not found");

    // Unknown users and roles.
    let err = block(&c, |cb| c.user_delete("nobody", cb)).unwrap_err();
    assert_final(&err, Code::FailedPrecondition, "user_delete", "etcdserver: user name not found");
    let err = block(&c, |cb| c.role_delete("nobody", cb)).unwrap_err();
    assert_final(&err, Code::FailedPrecondition, "role_delete", "etcdserver: role name not found");
}

/// What a watch's callback received.
type Seen = Rc<RefCell<Vec<Result<WatchResponse, EtcdError>>>>;

#[test]
fn auth_enabled_with_root_and_a_limited_user() {
    let etcd = Etcd::start_with(&[FAST_BCRYPT]);
    let ep = etcd.endpoint();
    let p = support::unique_prefix("auth");
    let readable = format!("{p}readable/");
    let admin = client(&ep);
    ok(&admin, |cb| admin.role_add("ro", cb));
    ok(&admin, |cb| {
        let end = prefix_range_end(readable.as_bytes());
        admin.role_grant_permission("ro", PermissionType::Read, readable.clone(), end, cb)
    });
    ok(&admin, |cb| admin.user_add("limited", "limited-password", cb));
    ok(&admin, |cb| admin.user_grant_role("limited", "ro", cb));
    ok(&admin, |cb| admin.put(format!("{readable}k"), "before auth", PutOptions::new(), cb));
    enable_auth_with_root(&admin, "root-password");

    // No token: etcd 3.5 says the user name is empty.
    let anonymous = client(&ep);
    let err = block(&anonymous, |cb| anonymous.get(format!("{p}k"), GetOptions::new(), cb));
    assert_final(&err.unwrap_err(), Code::InvalidArgument, "get", "etcdserver: user name is empty");
    // The client that enabled auth has no token either.
    let err = block(&admin, |cb| admin.put(format!("{p}k"), "v", PutOptions::new(), cb));
    assert_final(&err.unwrap_err(), Code::InvalidArgument, "put", "etcdserver: user name is empty");

    // Root can do everything, streams included.
    let root_token = ok(&admin, |cb| admin.authenticate("root", "root-password", cb)).token;
    assert!(!root_token.is_empty());
    let put = ok(&admin, |cb| admin.put(format!("{p}k"), "v1", PutOptions::new(), cb));
    let got = ok(&admin, |cb| admin.get(format!("{p}k"), GetOptions::new(), cb));
    assert_eq!(&got.kvs[0].value[..], b"v1");
    let seen: Seen = Rc::default();
    let (s, a, key) = (seen.clone(), admin.clone(), format!("{p}k"));
    let from = put.header.unwrap().revision;
    let w = admin.watch(key.clone(), WatchOptions::new().start_revision(from), move |r| {
        if r.as_ref().is_ok_and(|resp| resp.created) {
            a.put(key.clone(), "v2", PutOptions::new(), |r| {
                r.expect("put from the watch callback");
            });
        }
        s.borrow_mut().push(r);
    });
    drive_until(&[&admin], Duration::from_secs(10), || {
        seen.borrow().iter().flatten().map(|resp| resp.events.len()).sum::<usize>() >= 2
    });
    w.cancel(|r| r.expect("cancel"));
    admin.run();
    let seen = seen.take();
    assert!(seen[0].as_ref().expect("created").created, "{seen:?}");
    let values: Vec<Vec<u8>> = seen
        .iter()
        .flatten()
        .flat_map(|resp| &resp.events)
        .map(|ev| ev.kv.as_ref().unwrap().value.to_vec())
        .collect();
    assert_eq!(values, [b"v1".to_vec(), b"v2".to_vec()]);

    // A user who may only read a prefix.
    let (limited, _) = logged_in(&ep, "limited", "limited-password");
    let got = ok(&limited, |cb| limited.get(format!("{readable}k"), GetOptions::new(), cb));
    assert_eq!(&got.kvs[0].value[..], b"before auth");
    let err = block(&limited, |cb| limited.put(format!("{readable}k"), "v", PutOptions::new(), cb));
    assert_final(&err.unwrap_err(), Code::PermissionDenied, "put", "etcdserver: permission denied");
    let err = block(&limited, |cb| limited.get(format!("{p}k"), GetOptions::new(), cb));
    assert_final(&err.unwrap_err(), Code::PermissionDenied, "get", "etcdserver: permission denied");
    // A watch outside its range: etcd refuses the create, and the watch ends with one error.
    let seen: Seen = Rc::default();
    let s = seen.clone();
    limited.watch(format!("{p}k"), WatchOptions::new(), move |r| s.borrow_mut().push(r));
    drive_all(&[&limited], Duration::from_secs(10)); // returns once the watch has ended
    let seen = seen.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let err = seen[0].as_ref().unwrap_err();
    assert_eq!((err.code(), err.operation()), (Code::PermissionDenied, "watch"), "{err}");
    // etcd 3.5 puts the whole gRPC error into the cancel reason: "rpc error: code =
    // PermissionDenied desc = etcdserver: permission denied".
    assert!(err.message().contains("etcdserver: permission denied"), "{err}");
    assert!(!err.is_retryable());

    // A wrong password.
    let err = block(&limited, |cb| limited.authenticate("limited", "wrong", cb)).unwrap_err();
    assert_final(
        &err,
        Code::InvalidArgument,
        "authenticate",
        "etcdserver: authentication failed, invalid user ID or password",
    );
    let err = block(&limited, |cb| limited.authenticate("nobody", "x", cb)).unwrap_err();
    assert_eq!(err.message(), "etcdserver: authentication failed, invalid user ID or password");
    // The failed attempts left limited's token in place.
    ok(&limited, |cb| limited.get(format!("{readable}k"), GetOptions::new(), cb));

    let status = ok(&admin, |cb| admin.auth_status(cb));
    assert!(status.enabled && status.auth_revision > 0, "{status:?}");

    // A second client seeded with root's token.
    let seeded = Client::new(
        Config::new()
            .endpoints([ep.clone()])
            .timeout(Duration::from_secs(10))
            .auth_token(root_token),
    )
    .expect("valid config");
    ok(&seeded, |cb| seeded.put(format!("{p}seeded"), "yes", PutOptions::new(), cb));
    let got = ok(&seeded, |cb| seeded.get(format!("{p}seeded"), GetOptions::new(), cb));
    assert_eq!(&got.kvs[0].value[..], b"yes");

    // Auth off: a client without a token works again.
    ok(&admin, |cb| admin.auth_disable(cb));
    let status = ok(&anonymous, |cb| anonymous.auth_status(cb));
    assert!(!status.enabled, "{status:?}");
    let got = ok(&anonymous, |cb| anonymous.get(format!("{p}seeded"), GetOptions::new(), cb));
    assert_eq!(&got.kvs[0].value[..], b"yes");
    ok(&anonymous, |cb| anonymous.put(format!("{p}k"), "open", PutOptions::new(), cb));

    // auth_disable dropped admin's token: with auth on again, admin is anonymous ("user name
    // is empty"), not the holder of a token etcd forgot when auth went off ("invalid auth
    // token").
    ok(&anonymous, |cb| anonymous.auth_enable(cb));
    let err = block(&admin, |cb| admin.get(format!("{p}k"), GetOptions::new(), cb));
    assert_final(&err.unwrap_err(), Code::InvalidArgument, "get", "etcdserver: user name is empty");
}

#[test]
fn a_user_added_without_a_password_cannot_log_in_even_with_an_empty_one() {
    let etcd = Etcd::start_with(&[FAST_BCRYPT]);
    let c = client(&etcd.endpoint());
    ok(&c, |cb| c.user_add_no_password("certonly", cb));
    assert_eq!(ok(&c, |cb| c.user_list(cb)).users, ["certonly"]);
    enable_auth_with_root(&c, "rootpw");
    let other = client(&etcd.endpoint());
    let err = block(&other, |cb| other.authenticate("certonly", "", cb)).unwrap_err();
    assert!(err.message().contains("authentication failed"), "{err}");
}
