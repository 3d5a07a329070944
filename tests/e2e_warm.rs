#![cfg(feature = "e2e")]
//! Warm rebuilds (issue 17): a rebuild with no change, or a one-line
//! change, reuses the resolved package sets like pulled base images, so it
//! needs no network and reads no index. The rebuilds run in a network
//! namespace with only loopback (`unshare -n`, as root): any request kiln
//! made would fail the build.

mod support;

use std::path::Path;
use std::process::Command;

use support::auto::{example, host_ca_args, step_status};
use support::kiln::Kiln;

/// `kiln --progress json build DIR -t NAME --json` in a network namespace
/// with only loopback; returns the digest and the progress events.
fn build_offline(home: &Kiln, dir: &Path, name: &str) -> (String, Vec<serde_json::Value>) {
    let kiln = home.cmd();
    let mut c = Command::new("unshare");
    c.args(["-n", "--"]).arg(kiln.get_program());
    for (k, v) in kiln.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.current_dir(home.root())
        .args(["--progress", "json", "build"])
        .arg(dir)
        .args(["-t", name, "--json"])
        .args(host_ca_args());
    let out = c.output().expect("run unshare -n kiln");
    assert!(
        out.status.success(),
        "kiln build {name} without network failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (result["digest"].as_str().unwrap().to_string(), events)
}

fn started(events: &[serde_json::Value], prefix: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "start")
        .filter_map(|e| e["name"].as_str())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn warm_rebuild_without_network_reuses_the_package_sets() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("python-flask", tmp.path());
    let (first, _) = home.build(&dir, "warm:1");

    // No change: the same image, no index read, every package set cached.
    let (again, events) = build_offline(&home, &dir, "warm:2");
    assert_eq!(again, first, "an unchanged rebuild gives the same image");
    assert_eq!(started(&events, "[index]"), Vec::<String>::new());
    let sets = step_status(&events, "[packages]");
    assert!(!sets.is_empty(), "the build has package sets");
    assert!(
        sets.iter().all(|s| *s == "cached"),
        "package sets: {sets:?}"
    );
    assert!(
        events
            .iter()
            .filter(|e| e["event"] == "finish")
            .all(|e| e["status"] != "done"),
        "an unchanged rebuild runs nothing"
    );

    // A one-line change: a new image, still no network and no index.
    let src = std::fs::read_to_string(dir.join("app.py")).unwrap();
    std::fs::write(dir.join("app.py"), format!("{src}\n# one more line\n")).unwrap();
    let (changed, events) = build_offline(&home, &dir, "warm:3");
    assert_ne!(changed, first, "the source change must change the image");
    assert_eq!(started(&events, "[index]"), Vec::<String>::new());
    let sets = step_status(&events, "[packages]");
    assert!(
        sets.iter().all(|s| *s == "cached"),
        "package sets: {sets:?}"
    );
}

#[test]
fn pull_resolves_the_package_sets_again() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("python-flask", tmp.path());
    home.build(&dir, "pull:1");
    let mut args = vec![
        "--progress".to_string(),
        "json".into(),
        "build".into(),
        dir.to_str().unwrap().into(),
        "-t".into(),
        "pull:2".into(),
        "--pull".into(),
    ];
    args.extend(host_ca_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = home.ok(&args);
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let read = started(&events, "[index]");
    assert!(!read.is_empty(), "--pull reads the suite's index");
    assert!(read.iter().all(|n| n == "[index] trixie"), "{read:?}");
}
