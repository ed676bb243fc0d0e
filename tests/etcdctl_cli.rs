//! The example's command line as etcdctl's (cobra's): flags that do not parse, unknown
//! commands and missing sub-commands fail (or not) with etcdctl 3.5.1's `Error:` lines and
//! exit codes. None of these reaches a server. etcdctl's usage and help texts on stdout are
//! not reproduced (this example words its own short help), so stdout is not compared.

mod support;

use support::etcdctl::{etcdctl_run, example_run};

const NOWHERE: &str = "127.0.0.1:1";

fn same_errors_and_exit(args: &[&str]) -> (String, String) {
    let theirs = etcdctl_run(NOWHERE, args, None);
    let ours = example_run(NOWHERE, args, None);
    assert_eq!((&ours.errors, ours.code), (&theirs.errors, theirs.code), "{args:?}");
    (theirs.stdout, ours.stdout)
}

#[test]
fn a_flag_that_does_not_parse_is_reported_twice_with_exit_1() {
    for args in [
        &["get", "--bogus", "k"][..],
        &["get", "--limit=x", "k"],
        &["put", "--prev-kv=maybe", "k", "v"],
        &["--dial-timeout=soon", "get", "k"],
        &["get", "k", "--rev"],
    ] {
        let (theirs, _) = same_errors_and_exit(args);
        assert!(theirs.contains("USAGE:"), "etcdctl printed its usage for {args:?}");
    }
}

#[test]
fn an_unknown_command_is_an_error_and_a_missing_sub_command_prints_help() {
    same_errors_and_exit(&["frob"]);
    for args in [&["lease"][..], &["lease", "frob"], &["member"], &["user"], &["role", "x"]] {
        let (_, ours) = same_errors_and_exit(args);
        assert!(ours.contains("subcommands: "), "{args:?}: {ours}");
    }
}
