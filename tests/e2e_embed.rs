//! `examples/embed.rs`, the library as a deploy tool uses it, run against a
//! local registry: it plans a static site, builds it with progress printed
//! by its own sink, pushes it; with a timeout that has passed it cancels
//! (exit 130) and pushes nothing.
//!
//! The example binary is built by `cargo test`/`cargo nextest` (or
//! `cargo build --examples`, which ./scripts/test runs). Warm shared cache:
//! a few seconds.
#![cfg(feature = "e2e")]

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

use support::auto::example;
use support::kiln::Kiln;
use support::registry::Registry;

fn embed(home: &Kiln, args: &[&str]) -> Output {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_kiln"))
        .parent()
        .unwrap()
        .join("examples/embed");
    assert!(
        exe.is_file(),
        "{} is missing: run `cargo build --examples`",
        exe.display()
    );
    Command::new(exe)
        .env("KILN_CACHE_DIR", home.cache())
        .env("KILN_DATA_DIR", home.data())
        .env("NO_COLOR", "1")
        .env_remove("SOURCE_DATE_EPOCH")
        .args(args)
        .output()
        .unwrap()
}

/// The digest the registry serves for `repo:tag`, if it has it.
fn served_digest(registry: &Registry, repo: &str, tag: &str) -> Option<String> {
    let out = Command::new("curl")
        .args([
            "-sfI",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &format!("{}/v2/{repo}/manifests/{tag}", registry.url()),
        ])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("docker-content-digest:"))
        .map(|d| d.trim().to_string())
}

#[test]
fn the_embed_example_plans_builds_with_live_progress_and_pushes() {
    let registry = Registry::start();
    let home = Kiln::shared();
    let app = example("staticfile", home.root());
    let host = registry.url().trim_start_matches("http://").to_string();
    let reference = format!("{host}/static:1");
    let out = embed(&home, &[app.to_str().unwrap(), &reference]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with(r#"plan: providers ["staticfile"]"#),
        "{stdout}"
    );
    // The sink saw the steps before the build returned.
    let first_step = lines
        .iter()
        .position(|l| l.starts_with("step started: [packages]"))
        .unwrap_or_else(|| panic!("no step from the sink:\n{stdout}"));
    let built = lines
        .iter()
        .position(|l| l.starts_with("built sha256:"))
        .unwrap_or_else(|| panic!("no result:\n{stdout}"));
    assert!(first_step < built, "{stdout}");
    let digest = lines[built]
        .trim_start_matches("built ")
        .split(' ')
        .next()
        .unwrap();
    assert!(
        lines.contains(&format!("pushed {host}/static@{digest}").as_str()),
        "{stdout}"
    );
    assert_eq!(
        served_digest(&registry, "static", "1").as_deref(),
        Some(digest)
    );
}

#[test]
fn the_embed_example_cancels_on_its_timeout_and_pushes_nothing() {
    let registry = Registry::start();
    let home = Kiln::shared();
    let app = example("staticfile", home.root());
    let host = registry.url().trim_start_matches("http://").to_string();
    let reference = format!("{host}/static:cancelled");
    let out = embed(
        &home,
        &[app.to_str().unwrap(), &reference, "--timeout", "0"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("cancelled"), "{stderr}");
    assert_eq!(served_digest(&registry, "static", "cancelled"), None);
}
