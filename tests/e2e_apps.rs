//! End to end: real apps that Nixpacks builds and runs, built by kiln and
//! run under podman (issue 16). Each test builds one example (or a variant
//! of one) with the suites' shared warm cache and asserts what the app
//! does at run time, not only that the build succeeded.
#![cfg(feature = "e2e")]

mod support;

use support::auto::build_and_serve;
use support::kiln::Kiln;

/// A Cargo workspace whose binary is a glob member (`crates/*`) next to a
/// library member: kiln builds it with `--package server` and starts it
/// (before: `error: no start command`).
#[test]
fn rust_workspace_builds_and_answers() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    build_and_serve(&home, tmp.path(), "rust-workspace", "Hello from rust-workspace (/)");
}
