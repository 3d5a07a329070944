//! `kiln build --platform linux/amd64,linux/arm64`: one OCI image index
//! with one manifest per platform, and every place an image goes taking
//! the index. The Dockerfile has no `RUN` step, so no platform is
//! emulated and no root is needed: this runs with the hermetic tests.

mod support;

use serde_json::Value;
use support::kiln::Kiln;

const BOTH: &str = "linux/amd64,linux/arm64";

/// A context whose Dockerfile copies one file (no RUN: any platform builds).
fn context(k: &Kiln) -> String {
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello from every platform\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\nCMD [\"/hello\"]\n",
    )
    .unwrap();
    ctx.to_str().unwrap().to_string()
}

/// A blob of the home's image store, as JSON.
fn blob(k: &Kiln, digest: &str) -> Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let path = k.data().join("images/blobs/sha256").join(hex);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// (platform, manifest digest) of each entry of an index.
fn entries(index: &Value) -> Vec<(String, String)> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                format!(
                    "{}/{}",
                    m["platform"]["os"].as_str().unwrap(),
                    m["platform"]["architecture"].as_str().unwrap()
                ),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn build(k: &Kiln, ctx: &str, platform: &str, tag: &str, extra: &[&str]) -> String {
    let mut args = vec!["build", ctx, "--platform", platform, "-t", tag];
    args.extend(extra);
    k.stdout(&args).trim().to_string()
}

/// The index lists the platforms in the order given, each entry is the
/// manifest a one-platform build gives, a second clean home gives the same
/// index digest, and `kiln images`, `inspect --platform`, `-o type=oci`
/// show it.
#[test]
fn several_platforms_build_one_reproducible_index() {
    let a = Kiln::new();
    let ctx = context(&a);
    let out = a.path("layout");
    let dest = format!("type=oci,dest={}", out.display());
    let digest = build(&a, &ctx, BOTH, "multi:1", &["-o", &dest]);
    let index = blob(&a, &digest);
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    let listed = entries(&index);
    let platforms: Vec<&str> = listed.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{index}");
    for (platform, manifest) in &listed {
        let m = blob(&a, manifest);
        let config = blob(&a, m["config"]["digest"].as_str().unwrap());
        assert_eq!(
            format!(
                "{}/{}",
                config["os"].as_str().unwrap(),
                config["architecture"].as_str().unwrap()
            ),
            *platform
        );
    }

    // Same inputs, a clean home: the same index, and each platform built
    // alone gives the manifest the index names for it.
    let b = Kiln::new();
    let ctx_b = context(&b);
    assert_eq!(build(&b, &ctx_b, BOTH, "multi:1", &[]), digest);
    for (platform, manifest) in &listed {
        assert_eq!(
            &build(&b, &ctx_b, platform, "one:1", &[]),
            manifest,
            "{platform}"
        );
    }
    // The order given is the order of the index (another index).
    let reversed = build(&b, &ctx_b, "linux/arm64,linux/amd64", "rev:1", &[]);
    assert_ne!(reversed, digest);
    let rev: Vec<String> = entries(&blob(&b, &reversed))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(rev, ["linux/arm64", "linux/amd64"]);

    let table = a.stdout(&["images"]);
    let row = table.lines().find(|l| l.starts_with("multi:1")).unwrap();
    assert!(row.contains("linux/amd64,linux/arm64"), "{table}");
    assert!(
        row.contains(&digest.strip_prefix("sha256:").unwrap()[..12]),
        "{table}"
    );

    let inspected: Value =
        serde_json::from_str(&a.stdout(&["inspect", "--platform", "linux/arm64", "multi:1"]))
            .unwrap();
    assert_eq!(inspected["config"]["architecture"], "arm64");
    assert_eq!(inspected["digest"].as_str().unwrap(), listed[1].1);

    // The OCI layout names the index itself.
    let layout: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let entry = &layout["manifests"][0];
    assert_eq!(entry["digest"].as_str().unwrap(), digest);
    assert_eq!(
        entry["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    for (_, manifest) in &listed {
        let hex = manifest.strip_prefix("sha256:").unwrap();
        assert!(out.join("blobs/sha256").join(hex).is_file(), "{manifest}");
    }
}

/// A docker archive holds one platform: a build of two is refused before
/// any work, naming `--platform` (nothing written, nothing tagged); `kiln
/// save` of an index to one is refused the same way unless `--platform`
/// picks one. An OCI archive round-trips the index through `kiln load`.
#[test]
fn an_index_is_saved_and_loaded_and_a_docker_archive_takes_one_platform() {
    let k = Kiln::new();
    let ctx = context(&k);
    let tar = k.path("both.tar");
    let dest = format!("type=docker,dest={}", tar.display());
    let out = k.kiln(&[
        "build",
        &ctx,
        "--platform",
        BOTH,
        "-t",
        "refused:1",
        "-o",
        &dest,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("type=docker")
            && err.contains("--platform linux/amd64,linux/arm64")
            && err.contains("type=oci"),
        "{err}"
    );
    assert!(!tar.exists());
    assert!(!k.stdout(&["images"]).contains("refused"));

    let digest = build(&k, &ctx, BOTH, "multi:1", &[]);
    let out = k.kiln(&["save", "multi:1", "-o", &dest]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("image index of 2 platforms (linux/amd64, linux/arm64)")
            && err.contains("--platform"),
        "{err}"
    );
    assert!(!tar.exists());
    k.ok(&["save", "--platform", "linux/arm64", "multi:1", "-o", &dest]);
    assert!(tar.is_file());

    let archive = k.path("multi.oci.tar");
    k.ok(&[
        "save",
        "multi:1",
        "-o",
        &format!("type=oci-archive,dest={}", archive.display()),
    ]);
    let other = Kiln::new();
    let loaded = other.stdout(&["load", archive.to_str().unwrap()]);
    assert!(loaded.contains(&digest), "{loaded}");
    let table = other.stdout(&["images"]);
    assert!(table.contains("linux/amd64,linux/arm64"), "{table}");
    let arm: Value =
        serde_json::from_str(&other.stdout(&["inspect", "--platform", "linux/arm64", "multi:1"]))
            .unwrap();
    assert_eq!(arm["config"]["architecture"], "arm64");
}

/// A platform named twice, or one that does not parse, is refused with
/// the flag named.
#[test]
fn a_bad_platform_list_names_the_flag() {
    let k = Kiln::new();
    let ctx = context(&k);
    for (list, says) in [
        ("linux/amd64,linux/amd64", "linux/amd64 is named twice"),
        ("linux/amd64,linux", "invalid platform"),
    ] {
        let out = k.kiln(&["build", &ctx, "--platform", list]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{list}: {err}");
        assert!(
            err.contains(&format!("--platform {list}")) && err.contains(says),
            "{list}: {err}"
        );
    }
}

/// `kiln deploy --platform A,B`: each service's image is the index a
/// `kiln build --platform A,B` of its context gives, and the deploy file
/// pins that index.
#[test]
fn deploy_builds_each_service_for_every_platform() {
    let k = Kiln::new();
    let ctx = context(&k);
    let index = build(&k, &ctx, BOTH, "direct:1", &[]);
    let compose = k.path("compose.yaml");
    std::fs::write(&compose, format!("services:\n  web:\n    build: {ctx}\n")).unwrap();
    let out = k.path("out.yaml");
    k.ok(&[
        "deploy",
        compose.to_str().unwrap(),
        "--registry",
        "reg.test:5000/team",
        "--skip-push",
        "--platform",
        BOTH,
        "-o",
        out.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains(&format!("@{index}")), "{index}:\n{text}");
    let idx = blob(&k, &index);
    assert_eq!(
        entries(&idx)
            .iter()
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64"]
    );
}
