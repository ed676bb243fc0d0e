//! Building an example for a test to run, as a shell would.

use std::path::PathBuf;
use std::process::Command;

/// Builds example `name` (debug, with `features`) and returns its path. The build runs as
/// from a shell: without the variables cargo sets for the test running it (ring's build
/// script tracks some, so they would rebuild it here, and again in the next build from a
/// shell).
pub fn build_example(name: &str, features: &[&str]) -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--quiet"]);
    for f in features {
        build.args(["--features", f]);
    }
    build.args(["--example", name]);
    const SET_BY_CARGO_TEST: [&str; 8] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    for (var, _) in std::env::vars_os() {
        let var = var.to_string_lossy();
        if var.starts_with("CARGO_PKG_") || SET_BY_CARGO_TEST.contains(&&*var) {
            build.env_remove(&*var);
        }
    }
    let status = build.current_dir(&repo).status().expect("cargo build --example");
    assert!(status.success(), "cargo build --example {name} failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));
    target.join("debug/examples").join(name)
}
