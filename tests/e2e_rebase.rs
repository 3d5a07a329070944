//! End to end: `kiln rebase` on a real auto build whose runtime package set
//! is older than its suite's current one, against Debian's real indexes.
//!
//! The image is built from a `kiln.lock` (`kiln lock --auto`) whose
//! runtime set pins `libzstd1` to trixie's release version
//! ([`OLD_ZSTD`], in the trixie archive) while the suite's candidate is a
//! `trixie-security` update. The soname refusal is tested hermetically
//! (`rebase::assumptions` unit tests over synthetic package trees and
//! NEEDED lists): no real Debian update changes a soname under one name.
#![cfg(feature = "e2e")]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kiln::packages::lock::{Lockfile, Locks};
use kiln::packages::resolve::BaseVariant;
use support::auto::{example, layers, serve_and_stop};
use support::kiln::Kiln;

/// trixie's own libzstd1 (13.0), which trixie-security has since updated.
/// Should a point release fold the update into trixie (and drop this file
/// from the pool), pick another package of the runtime set whose trixie
/// version is behind trixie-security's (`kiln outdated` lists them).
const OLD_ZSTD: &str = "1.5.7+dfsg-1";

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn events(stderr: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The record of the image `digest` in the home's data dir.
fn record_path(home: &Kiln, digest: &str) -> PathBuf {
    home.data()
        .join("sbom")
        .join(format!("{}.json", digest.replace(':', "-")))
}

/// name → version of the Debian packages a CycloneDX document lists.
fn cdx_debs(home: &Kiln, image: &str) -> std::collections::BTreeMap<String, String> {
    let doc: serde_json::Value =
        serde_json::from_str(&home.stdout(&["sbom", image, "--format", "cyclonedx"])).unwrap();
    doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["purl"]
                .as_str()
                .is_some_and(|p| p.starts_with("pkg:deb/"))
        })
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn rebase_takes_a_security_update_under_the_same_app_layers() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("python-flask", tmp.path());

    // The lock of today's sets, then the runtime set's libzstd1 moved back
    // to trixie's own version (a real file of the archive).
    home.ok(&["lock", "--auto", dir.to_str().unwrap()]);
    let lock_path = dir.join("kiln.lock");
    let mut locks = Locks::read(&lock_path).unwrap();
    let runtime = locks
        .sets
        .iter_mut()
        .find(|s| s.base == BaseVariant::Minimal)
        .expect("the python-flask runtime set (base minimal)");
    let current = runtime
        .packages
        .iter()
        .find(|p| p.name == "libzstd1")
        .expect("libzstd1 in the runtime set")
        .clone();
    assert_ne!(
        current.version, OLD_ZSTD,
        "trixie's candidate libzstd1 is {OLD_ZSTD} again: pick another package whose trixie version is behind trixie-security's"
    );
    let old_lock = tmp.path().join("zstd.lock");
    home.ok(&[
        "lock",
        "--suite",
        "trixie",
        "--base",
        "none",
        &format!("libzstd1={OLD_ZSTD}"),
        "-o",
        old_lock.to_str().unwrap(),
    ]);
    let old = Lockfile::read(&old_lock).unwrap().packages;
    let old = old.iter().find(|p| p.name == "libzstd1").unwrap().clone();
    assert_eq!(old.archive, "trixie", "{old:?}");
    for p in runtime.packages.iter_mut().filter(|p| p.name == "libzstd1") {
        *p = old.clone();
    }
    locks.write(&lock_path).unwrap();

    let (built, _) = home.build(&dir, "flask:1");
    assert_eq!(
        cdx_debs(&home, "flask:1")
            .get("libzstd1")
            .map(String::as_str),
        Some(OLD_ZSTD)
    );
    let before = layers(&home, "flask:1");
    let record = json(&record_path(&home, &built));
    let sets: Vec<&serde_json::Value> = record["build"]["package_sets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["in_image"] == true)
        .collect();
    assert_eq!(sets.len(), 1, "{record}");
    let base = sets[0]["request"]["layers"].as_array().unwrap().len();
    assert!(base >= 2 && base < before.len(), "{base} of {before:?}");

    // Rebase: one change, said as `package: old → new`; no step ran.
    let out = home.ok(&["--progress", "json", "rebase", "flask:1", "-t", "flask:2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("kiln rebase flask:1 -t flask:2:\n{stdout}");
    assert!(
        stdout.contains(&format!(
            "libzstd1: {OLD_ZSTD} → {} ({})",
            current.version, current.archive
        )),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains(" → ")).count(),
        1,
        "{stdout}"
    );
    let events = events(&out.stderr);
    let tasks: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "start")
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        tasks.iter().any(|t| t.starts_with("[packages]")),
        "{tasks:?}"
    );
    assert!(
        !tasks.iter().any(|t| t.starts_with("[build")
            || t.starts_with("[runtime")
            || t.contains("RUN ")
            || t.contains("COPY")),
        "a build step ran: {tasks:?}"
    );

    // Every app layer is the same blob; the package layers changed.
    let after = layers(&home, "flask:2");
    let app = before.len() - base;
    assert_eq!(after[after.len() - app..], before[base..], "app layers");
    assert_ne!(after[..after.len() - app], before[..base], "package layers");
    let kept: BTreeSet<&String> = before[..base].iter().collect();
    assert!(
        after[..after.len() - app].iter().any(|l| !kept.contains(l)),
        "no new package layer: {after:?}"
    );
    // The old image is untouched.
    assert_eq!(layers(&home, "flask:1"), before);

    // The SBOM of the new image has the new version, the rest as before.
    let (old_debs, new_debs) = (cdx_debs(&home, "flask:1"), cdx_debs(&home, "flask:2"));
    assert_eq!(
        new_debs.get("libzstd1").map(String::as_str),
        Some(current.version.as_str())
    );
    let differ: Vec<&String> = old_debs
        .keys()
        .filter(|k| old_debs.get(*k) != new_debs.get(*k))
        .collect();
    assert_eq!(differ, vec!["libzstd1"], "{old_debs:?}\n{new_debs:?}");

    // The app still answers, on the new package layers.
    serve_and_stop(&home, "flask:2", "Hello from python-flask");

    // Nothing newer now: said, the image unchanged (same digest).
    let digest2 = stdout.split_whitespace().last().unwrap().to_string();
    assert!(digest2.starts_with("sha256:"), "{stdout}");
    let again = home.stdout(&["rebase", "flask:2"]);
    eprintln!("kiln rebase flask:2:\n{again}");
    assert!(
        again.contains("current") && again.contains("unchanged") && again.contains(&digest2),
        "{again}"
    );
    assert_eq!(layers(&home, "flask:2"), after);

    // A record of an older kiln (no set request) says how to enable it.
    let mut old_record = json(&record_path(&home, &built));
    old_record["version"] = 1.into();
    for s in old_record["build"]["package_sets"].as_array_mut().unwrap() {
        s.as_object_mut().unwrap().remove("request");
    }
    std::fs::write(
        record_path(&home, &built),
        serde_json::to_vec(&old_record).unwrap(),
    )
    .unwrap();
    let out = home.kiln(&["rebase", "flask:1", "-t", "flask:3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("rebuild the image once with this kiln to enable rebase"),
        "{err}"
    );
    let out = home.kiln(&["images"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("flask:3"),
        "a refused rebase tagged nothing"
    );
}
