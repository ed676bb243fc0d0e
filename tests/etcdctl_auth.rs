//! `examples/etcdctl` against etcdctl 3.5.1 for `auth`, `user` and `role`: every command and
//! flag, their argument errors and the server's errors, `-w json`, and `--user` once auth is
//! on (a wrong password exits 2). Each test has its own etcd: auth is global to a server, and
//! `user list` / `role list` show every test's names.

mod support;

use support::etcdctl::{exact, example_run, same_after, Run};
use support::Etcd;

/// bcrypt at its lowest cost: every user add, password change and authenticate hashes.
const FAST_BCRYPT: &str = "--bcrypt-cost=4";

const ROOT: &str = "--user=root:rootpw";

fn start() -> Etcd {
    Etcd::start_with(&[FAST_BCRYPT])
}

/// Runs etcdctl commands to put etcd in a state; their outcome does not matter (a user to
/// delete may not exist).
fn setup(ep: &str, commands: &[&[&str]]) {
    for args in commands {
        support::etcdctl(ep, args);
    }
}

/// Both binaries agree on `args`, each run right after the `before` commands.
fn agree_after(ep: &str, before: &[&[&str]], args: &[&str], stdin: Option<&str>) -> Run {
    same_after(&|| setup(ep, before), ep, args, stdin, exact)
}

/// Both binaries agree on `args` with no state to restore.
fn agree(ep: &str, args: &[&str]) -> Run {
    agree_after(ep, &[], args, None)
}

/// [`agree`] for a command that must succeed (so that two identical failures, a refused
/// connection say, do not pass for agreement).
fn agree_ok(ep: &str, args: &[&str]) -> Run {
    let run = agree(ep, args);
    assert_eq!(run.code, 0, "{args:?}: {run:?}");
    run
}

/// [`agree`] for a command that must fail with `code` and `error`.
fn agree_err(ep: &str, args: &[&str], code: i32, error: &str) {
    let run = agree(ep, args);
    assert_eq!((run.code, run.errors.as_slice()), (code, [format!("Error: {error}")].as_slice()));
}

#[test]
fn user_add_delete_and_passwords() {
    let etcd = start();
    let ep = &etcd.endpoint();
    let add = |name: &str, args: &[&str], stdin: Option<&str>| {
        let run = agree_after(ep, &[&["user", "delete", name]], args, stdin);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
    };
    add("alice", &["user", "add", "alice:pw"], None);
    add("a", &["user", "add", "a:b:c"], None);
    add("bob", &["user", "add", "bob", "--interactive=false"], Some("  secret more\n"));
    add("carol", &["user", "add", "--interactive=false", "carol"], None);
    add("dave", &["user", "add", "dave", "--new-user-password=xyz"], None);
    add("q:pw", &["user", "add", "q:pw", "--new-user-password", "zz"], None);
    add("eve", &["user", "add", "eve", "--no-password"], None);
    add("q2:pw", &["user", "add", "--no-password", "q2:pw"], None);
    // Interactive (the default): asked twice, one line each, prompts on stdout.
    let run = agree_after(
        ep,
        &[&["user", "delete", "frank"]],
        &["user", "add", "frank"],
        Some("pw\npw\n"),
    );
    assert!(run.stdout.ends_with("User frank created\n"), "{run:?}");
    agree_after(ep, &[], &["user", "add", "gina"], Some("pw\npx\n"));
    agree_after(ep, &[], &["user", "add", "gina"], Some("pw"));
    agree_err(ep, &["user", "add", "gina"], 128, "empty password");
    agree_err(ep, &["user", "add", "alice:other"], 1, "etcdserver: user name already exists");
    agree_err(ep, &["user", "add", ":pw"], 128, "empty user name is not allowed");
    agree_err(
        ep,
        &["user", "add", "--new-user-password=x", ""],
        1,
        "etcdserver: user name is empty",
    );
    let usage = "user add command requires user name as its argument";
    agree_err(ep, &["user", "add"], 128, usage);
    agree_err(ep, &["user", "add", "x", "y"], 128, usage);
    agree_ok(ep, &["user", "list"]);
    agree_ok(ep, &["user", "list", "-w", "json"]);
    agree_err(ep, &["user", "list", "x"], 128, "user list command requires no arguments");
    let json = agree_after(
        ep,
        &[&["user", "delete", "zed"]],
        &["-w", "json", "user", "add", "zed:x"],
        None,
    );
    assert!(json.stdout.starts_with("{\"header\":{\"cluster_id\":"), "{json:?}");

    // passwd: a word from stdin, or asked twice.
    agree_ok(ep, &["user", "passwd", "alice", "--interactive=false"]);
    let run =
        agree_after(ep, &[], &["user", "passwd", "alice", "--interactive=false"], Some("new\n"));
    assert_eq!(run.stdout, "Password updated\n");
    agree_after(ep, &[], &["user", "passwd", "alice"], Some("a\na\n"));
    agree_after(ep, &[], &["user", "passwd", "alice"], Some("a\nb\n"));
    agree_err(
        ep,
        &["user", "passwd", "nobody", "--interactive=false"],
        1,
        "etcdserver: user name not found",
    );
    agree_err(
        ep,
        &["user", "passwd"],
        128,
        "user passwd command requires user name as its argument",
    );
    agree_ok(ep, &["user", "passwd", "alice", "--interactive=false", "-w", "json"]);

    // delete
    let run = agree_after(ep, &[&["user", "add", "zed:x"]], &["user", "delete", "zed"], None);
    assert_eq!(run.stdout, "User zed deleted\n");
    agree_after(ep, &[&["user", "add", "zed:x"]], &["user", "delete", "zed", "-w", "json"], None);
    agree_err(ep, &["user", "delete", "zed"], 1, "etcdserver: user name not found");
    agree_err(
        ep,
        &["user", "delete"],
        128,
        "user delete command requires user name as its argument",
    );
}

#[test]
fn user_get_and_roles() {
    let etcd = start();
    let ep = &etcd.endpoint();
    setup(
        ep,
        &[
            &["user", "add", "alice:pw"],
            &["role", "add", "r1"],
            &["role", "add", "r2"],
            &["role", "grant-permission", "r1", "read", "k1"],
            &["role", "grant-permission", "r2", "readwrite", "--prefix", "/p/"],
        ],
    );
    let run = agree_ok(ep, &["user", "get", "alice"]);
    assert_eq!(run.stdout, "User: alice\nRoles:\n");
    agree_ok(ep, &["user", "get", "alice", "--detail"]);

    // grant-role (twice: granting again is no error)
    let revoked: &[&[&str]] = &[&["user", "revoke-role", "alice", "r1"]];
    let run = agree_after(ep, revoked, &["user", "grant-role", "alice", "r1"], None);
    assert_eq!(run.stdout, "Role r1 is granted to user alice\n");
    agree_ok(ep, &["user", "grant-role", "alice", "r1"]);
    agree_ok(ep, &["user", "grant-role", "alice", "r2", "-w", "json"]);
    agree_err(ep, &["user", "grant-role", "alice", "nope"], 1, "etcdserver: role name not found");
    agree_err(ep, &["user", "grant-role", "nobody", "r1"], 1, "etcdserver: user name not found");
    let usage = "user grant command requires user name and role name as its argument";
    agree_err(ep, &["user", "grant-role", "alice"], 128, usage);

    let run = agree_ok(ep, &["user", "get", "alice"]);
    assert_eq!(run.stdout, "User: alice\nRoles: r1 r2\n");
    let run = agree_ok(ep, &["user", "get", "--detail", "alice"]);
    assert!(run.stdout.starts_with("User: alice\n\nRole r1\nKV Read:\n\tk1\n"), "{run:?}");
    agree_ok(ep, &["user", "get", "alice", "-w", "json"]);
    agree_ok(ep, &["user", "get", "alice", "--detail", "-w", "json"]);
    agree_err(ep, &["user", "get", "nobody"], 1, "etcdserver: user name not found");
    agree_err(
        ep,
        &["user", "get", "--detail"],
        128,
        "user get command requires user name as its argument",
    );
    agree_err(
        ep,
        &["user", "get", "a", "b"],
        128,
        "user get command requires user name as its argument",
    );

    // revoke-role
    let granted: &[&[&str]] = &[&["user", "grant-role", "alice", "r1"]];
    let run = agree_after(ep, granted, &["user", "revoke-role", "alice", "r1"], None);
    assert_eq!(run.stdout, "Role r1 is revoked from user alice\n");
    agree_after(ep, granted, &["user", "revoke-role", "alice", "r1", "-w", "json"], None);
    agree_err(
        ep,
        &["user", "revoke-role", "alice", "r1"],
        1,
        "etcdserver: role is not granted to the user",
    );
    agree_err(
        ep,
        &["user", "revoke-role", "alice", "nope"],
        1,
        "etcdserver: role is not granted to the user",
    );
    agree_err(ep, &["user", "revoke-role", "nobody", "r1"], 1, "etcdserver: user name not found");
    let usage = "user revoke-role requires user name and role name as its argument";
    agree_err(ep, &["user", "revoke-role", "alice"], 128, usage);
}

#[test]
fn roles_and_permissions() {
    let etcd = start();
    let ep = &etcd.endpoint();
    let run = agree_after(ep, &[&["role", "delete", "r"]], &["role", "add", "r"], None);
    assert_eq!(run.stdout, "Role r created\n");
    agree_after(ep, &[&["role", "delete", "j"]], &["role", "add", "j", "-w", "json"], None);
    agree_err(ep, &["role", "add", "r"], 1, "etcdserver: role name already exists");
    agree_err(ep, &["role", "add", ""], 1, "etcdserver: role name is empty");
    agree_err(
        ep,
        &["role", "add", "a", "b"],
        128,
        "role add command requires role name as its argument",
    );
    let run = agree_ok(ep, &["role", "get", "r"]);
    assert_eq!(run.stdout, "Role r\nKV Read:\nKV Write:\n");

    // grant-permission: every way to name a range. Granting again changes nothing, so the
    // second run needs no setup.
    let grants: &[&[&str]] = &[
        &["r", "read", "k1"],
        &["r", "write", "k2", "k5"],
        &["r", "READ", "x", "y", "ignored"],
        &["r", "readwrite", "--prefix", "/p/"],
        &["r", "Write", "--from-key", "z"],
        &["r", "read", ""],
        &["r", "write", "--prefix", ""],
        &["r", "read", "--from-key", "", "ignored"],
        &["r", "read", "--prefix", "ÿ"],
    ];
    for grant in grants {
        let run = agree_ok(ep, &[&["role", "grant-permission"], *grant].concat());
        assert_eq!(run.stdout, "Role r updated\n");
    }
    agree_ok(ep, &["role", "get", "r"]);
    agree_ok(ep, &["role", "get", "r", "-w", "json"]);
    agree_ok(ep, &["role", "grant-permission", "r", "read", "k1", "-w", "json"]);
    agree_err(ep, &["role", "get", "nope"], 1, "etcdserver: role name not found");
    agree_err(ep, &["role", "get"], 128, "role get command requires role name as its argument");
    let usage =
        "role grant command requires role name, permission type, and key [endkey] as its argument";
    agree_err(ep, &["role", "grant-permission", "r", "read"], 128, usage);
    agree_err(
        ep,
        &["role", "grant-permission", "r", "bogus", "k"],
        128,
        "invalid permission type: bogus",
    );
    let exclusive = "--from-key and --prefix flags are mutually exclusive";
    agree_err(
        ep,
        &["role", "grant-permission", "r", "read", "--prefix", "--from-key", "a"],
        128,
        exclusive,
    );
    agree_err(
        ep,
        &["role", "grant-permission", "r", "read", "--prefix", "--from-key", ""],
        128,
        exclusive,
    );
    agree_err(
        ep,
        &["role", "grant-permission", "r", "read", "--prefix", "a", "b"],
        128,
        "unexpected endkey argument with --prefix flag",
    );
    agree_err(
        ep,
        &["role", "grant-permission", "r", "read", "--from-key", "a", "b"],
        128,
        "unexpected endkey argument with --from-key flag",
    );
    agree_err(
        ep,
        &["role", "grant-permission", "nope", "read", "k"],
        1,
        "etcdserver: role name not found",
    );

    // revoke-permission, each right after granting what it revokes; the message shows the
    // range as given.
    let revokes: &[(&[&str], &[&str])] = &[
        (&["r", "k1"], &["r", "read", "k1"]),
        (&["r", "k2", "k5", "ignored"], &["r", "write", "k2", "k5"]),
        (&["r", "--prefix", "/p/"], &["r", "readwrite", "--prefix", "/p/"]),
        (&["r", "--from-key", "z"], &["r", "write", "--from-key", "z"]),
        (&["r", "--prefix", ""], &["r", "read", "--prefix", ""]),
        (&["r", "--from-key", ""], &["r", "read", "--from-key", ""]),
        (&["r", ""], &["r", "read", ""]),
    ];
    for (revoke, grant) in revokes {
        let grant = [&["role", "grant-permission"], *grant].concat();
        let args = [&["role", "revoke-permission"], *revoke].concat();
        let run = agree_after(ep, &[&grant], &args, None);
        assert!(run.stdout.starts_with("Permission of "), "{run:?}");
    }
    let grant: &[&str] = &["role", "grant-permission", "r", "read", "k1"];
    agree_after(ep, &[grant], &["role", "revoke-permission", "r", "k1", "-w", "json"], None);
    let not_granted = "etcdserver: permission is not granted to the role";
    agree_err(ep, &["role", "revoke-permission", "r", "k1"], 1, not_granted);
    agree_err(
        ep,
        &["role", "revoke-permission", "nope", "k"],
        1,
        "etcdserver: role name not found",
    );
    agree_err(
        ep,
        &["role", "revoke-permission", "r", "--prefix", "--from-key", "a"],
        128,
        exclusive,
    );
    let usage =
        "role revoke-permission command requires role name and key [endkey] as its argument";
    agree_err(ep, &["role", "revoke-permission", "r"], 128, usage);

    // list and delete
    let run = agree_ok(ep, &["role", "list"]);
    assert_eq!(run.stdout, "j\nr\n");
    agree_ok(ep, &["role", "list", "-w", "json"]);
    agree_err(ep, &["role", "list", "x"], 128, "role list command requires no arguments");
    let run = agree_after(ep, &[&["role", "add", "j"]], &["role", "delete", "j"], None);
    assert_eq!(run.stdout, "Role j deleted\n");
    agree_after(ep, &[&["role", "add", "j"]], &["role", "delete", "j", "-w", "json"], None);
    agree_err(ep, &["role", "delete", "j"], 1, "etcdserver: role name not found");
    agree_err(
        ep,
        &["role", "delete"],
        128,
        "role delete command requires role name as its argument",
    );
}

#[test]
fn auth_enable_disable_status_and_the_user_flag() {
    let etcd = start();
    let ep = &etcd.endpoint();
    let run = agree_ok(ep, &["auth", "status"]);
    assert!(run.stdout.starts_with("Authentication Status: false\nAuthRevision: "), "{run:?}");
    agree_ok(ep, &["auth", "status", "-w", "json"]);
    agree_err(ep, &["auth", "enable"], 1, "etcdserver: root user does not exist");
    agree_err(
        ep,
        &["auth", "enable", "x"],
        128,
        "auth enable command does not accept any arguments",
    );
    agree_err(
        ep,
        &["auth", "disable", "x"],
        128,
        "auth disable command does not accept any arguments",
    );
    agree_err(
        ep,
        &["auth", "status", "x"],
        128,
        "auth status command does not accept any arguments",
    );
    let run = agree_ok(ep, &["auth", "disable"]);
    assert_eq!(run.stdout, "Authentication Disabled\n");
    // A wrong password is no error while auth is off.
    agree_ok(ep, &["--user=root:wrong", "auth", "status"]);

    // root without the root role: etcdctl creates the role, grants it, and enables.
    setup(ep, &[&["user", "add", "root:rootpw"], &["user", "add", "alice:pw"]]);
    // Users whose passwords the example read: a word from stdin, a line asked twice.
    let bob = example_run(ep, &["user", "add", "bob", "--interactive=false"], Some(" secret x\n"));
    let frank = example_run(ep, &["user", "add", "frank"], Some("pw\npw\n"));
    assert_eq!((bob.code, frank.code), (0, 0), "{bob:?} {frank:?}");
    let off: &[&[&str]] = &[
        &[ROOT, "auth", "disable"],
        &["user", "revoke-role", "root", "root"],
        &["role", "delete", "root"],
    ];
    let run = agree_after(ep, off, &["auth", "enable"], None);
    assert_eq!(run.stdout, "Authentication Enabled\n");
    // The root role exists but is not granted: etcdctl fails adding it.
    let ungranted: &[&[&str]] =
        &[&[ROOT, "auth", "disable"], &["user", "revoke-role", "root", "root"]];
    agree_after(ep, ungranted, &["auth", "enable", "-w", "json"], None);
    setup(ep, &[&["user", "grant-role", "root", "root"], &["auth", "enable"]]);

    // Auth on.
    agree_err(ep, &["auth", "status"], 1, "etcdserver: user name is empty");
    agree_err(ep, &["role", "list"], 1, "etcdserver: user name is empty");
    let run = agree_ok(ep, &[ROOT, "auth", "status"]);
    assert!(run.stdout.starts_with("Authentication Status: true\n"), "{run:?}");
    agree_ok(ep, &[ROOT, "auth", "status", "-w", "json"]);
    agree_ok(ep, &["--user", "root:rootpw", "user", "list"]);
    agree_ok(ep, &["--user=root", "--password=rootpw", "user", "list"]);
    let wrong = "etcdserver: authentication failed, invalid user ID or password";
    agree_err(ep, &["--user=root:x", "--password=wrong", "auth", "status"], 2, wrong);
    agree_ok(ep, &[ROOT, "auth", "enable", "-w", "json"]);
    agree_err(ep, &["--user=root:wrong", "auth", "status"], 2, wrong);
    agree_err(ep, &["--user=nobody:x", "user", "add", "x:y"], 2, wrong);
    // Argument errors come before authenticating.
    agree_err(
        ep,
        &["--user=root:wrong", "user", "add"],
        128,
        "user add command requires user name as its argument",
    );
    for user in ["--user=alice:pw", "--user=bob:secret", "--user=frank:pw"] {
        agree_err(ep, &[user, "user", "list"], 1, "etcdserver: permission denied");
    }
    agree_err(ep, &["--user=alice:pw", "role", "get", "root"], 1, "etcdserver: permission denied");
    agree_err(ep, &[ROOT, "user", "delete", "root"], 1, "etcdserver: invalid auth management");
    agree_err(
        ep,
        &[ROOT, "user", "revoke-role", "root", "root"],
        1,
        "etcdserver: invalid auth management",
    );
    agree_err(ep, &[ROOT, "role", "delete", "root"], 1, "etcdserver: invalid auth management");
    agree_ok(ep, &[ROOT, "user", "get", "root", "--detail"]);

    let on: &[&[&str]] = &[&[ROOT, "auth", "enable"]];
    let run = agree_after(ep, on, &[ROOT, "auth", "disable"], None);
    assert_eq!(run.stdout, "Authentication Disabled\n");
    agree_after(ep, on, &[ROOT, "auth", "disable", "-w", "json"], None);
    let run = agree_ok(ep, &["auth", "status"]);
    assert!(run.stdout.starts_with("Authentication Status: false\n"), "{run:?}");
}
