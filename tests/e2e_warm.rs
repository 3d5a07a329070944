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
        support::auto::ran_nothing(&events),
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
    // The runtime copies the app, then the virtualenv: the app changed,
    // the virtualenv did not, so its copy is cached by content.
    assert_eq!(
        step_status(&events, "COPY --from=build /opt/venv"),
        vec!["cached"]
    );
}

/// The other bench apps: an unchanged rebuild with the network denied gives
/// the same image and runs nothing; a one-line change needs no network
/// either and runs only what depends on the source.
#[test]
fn no_change_rebuild_without_network_for_node_and_go() {
    let home = Kiln::shared();
    for name in ["node-npm", "go-mod"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = example(name, tmp.path());
        let (first, _) = home.build(&dir, &format!("{name}-warm:1"));
        let (again, events) = build_offline(&home, &dir, &format!("{name}-warm:2"));
        assert_eq!(
            again, first,
            "{name}: an unchanged rebuild gives the same image"
        );
        assert_eq!(started(&events, "[index]"), Vec::<String>::new(), "{name}");
        assert!(
            support::auto::ran_nothing(&events),
            "{name}: an unchanged rebuild runs nothing"
        );
        // A line no earlier run wrote: the shared home keeps every run's steps.
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let main = if name == "node-npm" {
            "index.js"
        } else {
            "main.go"
        };
        let src = std::fs::read_to_string(dir.join(main)).unwrap();
        std::fs::write(dir.join(main), format!("{src}\n// edit {stamp}\n")).unwrap();
        let (changed, events) = build_offline(&home, &dir, &format!("{name}-warm:3"));
        assert_ne!(
            changed, first,
            "{name}: the source change must change the image"
        );
        // What runs again: for node-npm, only the runtime's shared-library
        // check of what was copied, no command of the build stage (before:
        // the prune); for go-mod, the build itself (before: also the
        // `mkdir` of the scratch runtime's /tmp, placed after the source).
        let ran = support::auto::commands_run(&events);
        let expected = if name == "node-npm" {
            assert_eq!(step_status(&events, "npm ci --omit=dev"), vec!["cached"]);
            "check that the shared libraries"
        } else {
            "RUN go build"
        };
        assert!(
            !ran.is_empty() && ran.iter().all(|n| n.contains(expected)),
            "{name}: commands run after a one-line change: {ran:?}"
        );
    }
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

/// `kiln --progress json build DIR -t NAME --json` with the network.
fn build(home: &Kiln, dir: &Path, name: &str) -> (String, Vec<serde_json::Value>) {
    home.build(dir, name)
}

#[test]
fn copy_from_a_stage_is_keyed_by_what_it_copies() {
    let home = Kiln::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    for (f, c) in [
        ("venv/lib/site.py", "import os\n"),
        ("venv/bin/python", "#!/bin/sh\n"),
        ("src/main.py", "print('one')\n"),
    ] {
        let p = dir.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    }
    // The source stage copies the app before the venv, and so does the
    // final stage: a change to the app changes every key after it.
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch AS build\n\
         COPY src /app\n\
         COPY venv /opt/venv\n\
         FROM scratch\n\
         COPY --from=build /app /app\n\
         COPY --from=build /opt/venv /opt/venv\n\
         ENV A=1\n",
    )
    .unwrap();
    let (first, events) = build(&home, &dir, "copy:1");
    assert_eq!(
        step_status(&events, "COPY --from=build /opt/venv"),
        vec!["done"]
    );

    // Only the app changed: the venv copy is cached (same layer), the app
    // copy is not.
    std::fs::write(dir.join("src/main.py"), "print('two')\n").unwrap();
    let (second, events) = build(&home, &dir, "copy:2");
    assert_ne!(first, second);
    assert_eq!(step_status(&events, "COPY --from=build /app"), vec!["done"]);
    assert_eq!(
        step_status(&events, "COPY --from=build /opt/venv"),
        vec!["cached"],
        "an unchanged subtree of the source stage is cached"
    );
    let (l1, l2) = (
        support::auto::layers(&home, "copy:1"),
        support::auto::layers(&home, "copy:2"),
    );
    assert_ne!(l1[0], l2[0], "the app layer changes");
    assert_eq!(l1[1], l2[1], "the venv layer is the same blob");

    // No change: everything cached, the same image.
    let (third, events) = build(&home, &dir, "copy:3");
    assert_eq!(third, second);
    assert!(
        support::auto::ran_nothing(&events),
        "an unchanged rebuild runs nothing"
    );

    // A change inside the copied subtree is copied.
    std::fs::write(dir.join("venv/lib/site.py"), "import sys\n").unwrap();
    let (_, events) = build(&home, &dir, "copy:4");
    assert_eq!(
        step_status(&events, "COPY --from=build /opt/venv"),
        vec!["done"]
    );
    assert_eq!(
        step_status(&events, "COPY --from=build /app"),
        vec!["cached"]
    );
}
