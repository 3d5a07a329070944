#![cfg(feature = "e2e")]
//! The build cache keeps itself in bounds (issue 17): `kiln cache prune
//! --keep-storage` leaves the cache dir within the bound (measured here
//! with a walk, not kiln's figure), every named image still runs and the
//! next builds succeed with the same images; a prune after a killed build
//! or waiting for a running one leaves no broken entry; the GC at the end
//! of a build trims a cache over `KILN_CACHE_MAX`. Small Dockerfile apps
//! on the local Debian base keep it fast. Runs as root (CI does).

mod support;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::kiln::Kiln;

/// A kiln home whose image store has `debian:bookworm`.
fn home() -> Kiln {
    let k = Kiln::new();
    support::base::local_debian(&k.data());
    k
}

/// Bytes on disk under `dir`, hard links once: what `du -s -B1` says.
fn du(dir: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let md = fs::symlink_metadata(&d).unwrap();
        if md.nlink() > 1 && !md.is_dir() && !seen.insert(md.ino()) {
            continue;
        }
        total += md.blocks() * 512;
        if md.is_dir() {
            for e in fs::read_dir(&d).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    total
}

/// An app: a Dockerfile whose image prints `msg` and holds `lines` lines
/// of `seq` output (deterministic, so a rebuild gives the same image).
fn app(k: &Kiln, name: &str, lines: u32, extra: &str) -> std::path::PathBuf {
    let dir = k.path(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("msg"), format!("{name}\n")).unwrap();
    fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM debian:bookworm\nRUN seq 1 {lines} > /data-{name}\n{extra}COPY msg /msg\nCMD [\"cat\", \"/msg\"]\n"
        ),
    )
    .unwrap();
    dir
}

/// Builds `dir` as `tag` with JSON progress; returns the digest and each
/// step's status (`[...]` tasks), with the stderr for messages.
fn build(
    k: &Kiln,
    dir: &Path,
    tag: &str,
    env: &[(&str, &str)],
) -> (String, Vec<(String, String)>, String) {
    let mut c = k.cmd();
    for (key, v) in env {
        c.env(key, v);
    }
    let out = c
        .args(["--progress", "json", "build"])
        .arg(dir)
        .args(["-t", tag, "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kiln build {tag} failed:\n{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names = BTreeMap::new();
    let mut steps = Vec::new();
    for v in stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        match v["event"].as_str() {
            Some("start") => {
                names.insert(
                    v["id"].clone().to_string(),
                    v["name"].as_str().unwrap_or("").to_string(),
                );
            }
            Some("finish") => {
                let name = names.get(&v["id"].to_string()).cloned().unwrap_or_default();
                if name.starts_with('[') {
                    steps.push((name, v["status"].as_str().unwrap().to_string()));
                }
            }
            _ => {}
        }
    }
    (
        result["digest"].as_str().unwrap().to_string(),
        steps,
        stderr,
    )
}

fn status<'a>(steps: &'a [(String, String)], needle: &str) -> &'a str {
    steps
        .iter()
        .find(|(n, _)| n.contains(needle))
        .map(|(_, s)| s.as_str())
        .unwrap_or_else(|| panic!("no step {needle} in {steps:?}"))
}

fn json(k: &Kiln, args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&k.ok(args).stdout).unwrap()
}

#[test]
fn prune_keep_storage_bounds_the_cache_and_every_image_still_runs() {
    let k = home();
    // Four apps, oldest first; the last one uses a cache mount and a stage.
    let apps = [
        app(&k, "alpha", 2_000_000, ""),
        app(&k, "beta", 2_000_000, ""),
        app(&k, "gamma", 2_000_000, ""),
        app(
            &k,
            "delta",
            200_000,
            "RUN --mount=type=cache,target=/cache seq 1 500000 > /cache/c && wc -l < /cache/c > /count\n",
        ),
    ];
    let mut digests = Vec::new();
    for (i, dir) in apps.iter().enumerate() {
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        let (d, steps, _) = build(&k, dir, &format!("{name}:1"), &[("KILN_CACHE_MAX", "off")]);
        assert!(steps.iter().all(|(_, s)| s == "done"), "{name}: {steps:?}");
        digests.push((name, d));
        // Distinct last-use times, a second apart (file mtimes).
        if i + 1 < apps.len() {
            std::thread::sleep(Duration::from_millis(1100));
        }
    }
    let before = du(k.cache());
    // What kiln counts is what du counts (kiln may count a shared
    // hard link twice: never less).
    let usage = json(&k, &["cache", "du", "--format", "json"]);
    let counted = usage["total"].as_u64().unwrap();
    assert!(
        counted >= before && counted < before + before / 20,
        "kiln {counted}, du {before}"
    );
    let kinds: BTreeMap<String, u64> = usage["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["kind"].as_str().unwrap().to_string(),
                g["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        kinds["snapshots"] > kinds["steps"] && kinds["cache mounts"] > 0,
        "{kinds:?}"
    );

    // Keep 30 MB less than the cache holds: the three data layers (16 MB
    // snapshot + 4 MB blob each) are the oldest, so alpha's and beta's go.
    let keep = before - 30_000_000;
    let before_dry = du(k.cache());
    let dry = json(
        &k,
        &[
            "cache",
            "prune",
            "--keep-storage",
            &keep.to_string(),
            "--dry-run",
            "--format",
            "json",
        ],
    );
    assert!(dry["after"].as_u64().unwrap() <= keep, "{dry}");
    assert_eq!(du(k.cache()), before_dry, "a dry run removes nothing");
    let report = json(
        &k,
        &[
            "cache",
            "prune",
            "--keep-storage",
            &keep.to_string(),
            "--format",
            "json",
        ],
    );
    let after = du(k.cache());
    assert!(
        after <= keep,
        "du says {after} after --keep-storage {keep} (was {before})"
    );
    assert!(report["after"].as_u64().unwrap() <= keep, "{report}");
    assert_eq!(
        report["removed"], dry["removed"],
        "the dry run said what went"
    );
    // Least recently used first: alpha's data went, delta's did not.
    let (_, again, _) = build(&k, &apps[3], "delta:2", &[("KILN_CACHE_MAX", "off")]);
    assert!(again.iter().all(|(_, s)| s == "cached"), "delta: {again:?}");

    // Every named image still runs.
    for (name, _) in &digests {
        let out = k.ok(&["run", &format!("{name}:1")]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{name}\n"));
    }
    // Every app builds again, to the same image; the pruned ones rerun.
    for (dir, (name, digest)) in apps.iter().zip(&digests) {
        let (d, steps, _) = build(&k, dir, &format!("{name}:2"), &[("KILN_CACHE_MAX", "off")]);
        assert_eq!(&d, digest, "{name} rebuilt to another image: {steps:?}");
        if name == "alpha" {
            assert_eq!(status(&steps, "RUN seq"), "done", "{steps:?}");
        }
    }
    let verify = String::from_utf8_lossy(&k.ok(&["cache", "verify"]).stdout).into_owned();
    assert!(verify.lines().all(|l| l.contains(" 0 corrupt")), "{verify}");

    // --all empties the cache: only its dirs, the lock and GC state stay.
    k.ok(&["cache", "prune", "--all"]);
    assert!(du(k.cache()) < 1_000_000, "{} left", du(k.cache()));
    let out = k.ok(&["run", "alpha:1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alpha\n");
}

#[test]
fn prune_waits_for_a_running_build_and_cleans_up_after_a_killed_one() {
    let k = home();
    let dir = k.path("slow");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("Dockerfile"),
        "FROM debian:bookworm\nRUN seq 1 2000000 > /a\nRUN sleep 3 && seq 1 2000000 > /b\nRUN echo done > /done\n",
    )
    .unwrap();
    // Killed in the sleeping step, after the first layer was cached.
    let mut child = k
        .cmd()
        .env("KILN_CACHE_MAX", "off")
        .args(["build", dir.to_str().unwrap(), "-t", "slow:1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sandbox = k.cache().join("sandbox");
    for _ in 0..300 {
        if fs::read_dir(&sandbox).is_ok_and(|mut d| d.next().is_some())
            && fs::read_dir(k.cache().join("steps")).is_ok_and(|d| d.count() >= 1)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = child.kill();
    let _ = child.wait();
    // The kill left a run dir (and maybe staging dirs): prune removes them
    // without waiting (the lock died with the process).
    let r = json(
        &k,
        &[
            "cache",
            "prune",
            "--keep-storage",
            "10GB",
            "--format",
            "json",
        ],
    );
    let temp: Vec<&str> = r["removed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "temp")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(temp.iter().any(|n| n.starts_with("sandbox/")), "{r}");
    let du_after = json(&k, &["cache", "du", "--format", "json"]);
    let left_temp = du_after["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["kind"] == "temp")
        .unwrap()["count"]
        .as_u64()
        .unwrap();
    assert_eq!(left_temp, 0, "{du_after}");

    // A prune started while a build runs waits for it, says so, and then
    // removes everything; the build is not disturbed.
    let builder = std::thread::spawn({
        let cmd = k.cmd();
        let dir = dir.clone();
        move || {
            let mut cmd = cmd;
            cmd.env("KILN_CACHE_MAX", "off")
                .args(["build", dir.to_str().unwrap(), "-t", "slow:1"])
                .output()
                .unwrap()
        }
    });
    for _ in 0..300 {
        if fs::read_dir(&sandbox).is_ok_and(|mut d| d.next().is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let prune = k.cmd().args(["cache", "prune"]).output().unwrap();
    let built = builder.join().unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert!(
        prune.status.success(),
        "{}",
        String::from_utf8_lossy(&prune.stderr)
    );
    assert!(
        String::from_utf8_lossy(&prune.stderr).contains("waiting for the build cache lock"),
        "{}",
        String::from_utf8_lossy(&prune.stderr)
    );
    // The image still runs (its own blobs), and a rebuild redoes the steps.
    let out = k.ok(&["run", "slow:1", "cat", "/done"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    let (_, steps, _) = build(&k, &dir, "slow:2", &[("KILN_CACHE_MAX", "off")]);
    assert!(steps.iter().all(|(_, s)| s == "done"), "{steps:?}");
}

#[test]
fn a_build_trims_a_cache_over_kiln_cache_max() {
    let k = home();
    let a = app(&k, "first", 2_000_000, "");
    let b = app(&k, "second", 2_000_000, "");
    build(&k, &a, "first:1", &[("KILN_CACHE_MAX", "off")]);
    let one = du(k.cache());
    // The GC keeps what was used from a second before the build started.
    std::thread::sleep(Duration::from_millis(2000));
    // Room for the base and one app's data, not two.
    let bound = one + 5_000_000;
    let bound_s = bound.to_string();
    let (_, steps, stderr) = build(&k, &b, "second:1", &[("KILN_CACHE_MAX", &bound_s)]);
    assert!(steps.iter().all(|(_, s)| s == "done"), "{steps:?}");
    assert!(stderr.contains("least recently used entries"), "{stderr}");
    let after = du(k.cache());
    assert!(after <= bound, "du says {after}, bound {bound}");
    // What the build used stays: its rebuild is all cached (and, with
    // nothing new, it does not even measure the cache).
    let (_, again, stderr) = build(&k, &b, "second:2", &[("KILN_CACHE_MAX", &bound_s)]);
    assert!(again.iter().all(|(_, s)| s == "cached"), "{again:?}");
    assert!(!stderr.contains("cache:"), "{stderr}");
    // The older app's layer went: its RUN runs again, to the same image.
    let (_, steps, _) = build(&k, &a, "first:2", &[("KILN_CACHE_MAX", "off")]);
    assert_eq!(status(&steps, "RUN seq"), "done", "{steps:?}");
    let out = k.ok(&["run", "first:1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "first\n");

    // A bad bound fails before any work, naming the variable.
    let out = k
        .cmd()
        .env("KILN_CACHE_MAX", "lots")
        .args(["build", a.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("KILN_CACHE_MAX") && err.contains("off"),
        "{err}"
    );
}

/// `kiln cache prune --filter until=` keeps what was used recently; a
/// record whose snapshot is gone is still a hit and a step on it unpacks
/// the layers again; a bad filter or size names what is expected.
#[test]
fn prune_filter_until_a_missing_snapshot_and_bad_input() {
    let k = home();
    let a = app(&k, "recent", 1000, "");
    build(&k, &a, "recent:1", &[("KILN_CACHE_MAX", "off")]);
    let r = json(
        &k,
        &["cache", "prune", "--filter", "until=1h", "--format", "json"],
    );
    let kinds: Vec<&str> = r["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.iter().all(|k| *k == "temp"), "{r}");
    let (_, steps, _) = build(&k, &a, "recent:2", &[("KILN_CACHE_MAX", "off")]);
    assert!(steps.iter().all(|(_, s)| s == "cached"), "{steps:?}");

    // Step records whose snapshots are gone (as a prune killed between the
    // two would leave them): the cached steps stay cached, and a new step
    // on top unpacks the layers again from their blobs.
    for e in fs::read_dir(k.cache().join("snapshots")).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            fs::remove_dir_all(e.path()).unwrap();
        }
    }
    let df = fs::read_to_string(a.join("Dockerfile")).unwrap();
    fs::write(
        a.join("Dockerfile"),
        df.replace("CMD", "RUN tail -n 1 /data-recent > /last\nCMD"),
    )
    .unwrap();
    let (_, steps, _) = build(&k, &a, "recent:3", &[("KILN_CACHE_MAX", "off")]);
    assert_eq!(status(&steps, "RUN seq"), "cached", "{steps:?}");
    assert_eq!(status(&steps, "RUN tail"), "done", "{steps:?}");
    let out = k.ok(&["run", "recent:3", "cat", "/last"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1000\n");

    for (args, want) in [
        (
            vec!["cache", "prune", "--keep-storage", "1XB"],
            "is not a size",
        ),
        (
            vec!["cache", "prune", "--filter", "until=1y"],
            "is not a duration",
        ),
        (
            vec!["cache", "prune", "--filter", "type=regular"],
            "until=DURATION",
        ),
    ] {
        let out = k.kiln(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let human = String::from_utf8_lossy(&k.ok(&["cache", "du", "--verbose"]).stdout).into_owned();
    assert!(
        human.contains("snapshots") && human.contains("LAST USED"),
        "{human}"
    );
}
