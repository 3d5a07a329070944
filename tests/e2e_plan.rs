//! End to end: Dockerfiles that `kiln dockerfile` writes for the Node,
//! Python, Go and static examples build with buildah (chroot isolation)
//! from a Debian base image served by a local registry, the
//! images answer HTTP under podman, and they are the image `kiln build`
//! makes of the same app: the same entrypoint, command, working dir,
//! environment and ports, and the same files under `/app`.
//!
//! The base image is a `mmdebstrap --variant=minbase` trixie tarball,
//! cached in `$KILN_TEST_CACHE` (default `~/.cache/kiln-tests`) across runs.
//! Networks that intercept TLS need their CA inside the build: the host's
//! extra CAs (`/usr/local/share/ca-certificates/*.crt`) are copied into the
//! base image, as a company base image would carry them (the build's
//! `ca-certificates` install picks them up).
#![cfg(feature = "e2e")]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::auto::{copy_dir, run};
use support::registry::{Registry, free_port};

fn cache_dir() -> PathBuf {
    std::env::var_os("KILN_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or("/root".into())).join(".cache/kiln-tests")
        })
}

/// The minbase trixie rootfs tarball, made once.
fn base_tarball() -> PathBuf {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let tar = dir.join("debian-trixie.tar");
    if !tar.exists() {
        let tmp = dir.join(format!("debian-trixie.tar.{}", std::process::id()));
        run(Command::new("mmdebstrap")
            .args(["--variant=minbase", "--format=tar", "trixie"])
            .arg(&tmp)
            .arg("http://deb.debian.org/debian"));
        std::fs::rename(&tmp, &tar).unwrap();
    }
    tar
}

/// Removes the container and image even when an assertion fails.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.container.is_empty() {
            let _ = Command::new("podman")
                .args(["rm", "-f", &self.container])
                .output();
        }
        let _ = Command::new("buildah")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

fn build_and_answer(base: &str, example: &str, expect: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(example);
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join(example);
    copy_dir(&src, &ctx);
    let dockerfile = ctx.join("Dockerfile.kiln");
    run(Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["--progress", "quiet", "dockerfile"])
        .arg(&ctx)
        .arg("-o")
        .arg(&dockerfile)
        .args(["--base-image", base]));
    let image = format!("localhost/kiln-e2e-plan-{example}:{}", std::process::id());
    let container = format!("kiln-e2e-plan-{example}-{}", std::process::id());
    let _podman = support::podman::lock();
    let _cleanup = Cleanup {
        container: container.clone(),
        image: image.clone(),
    };
    run(Command::new("buildah")
        .args([
            "bud",
            "--isolation",
            "chroot",
            // No --layers: its intermediate images outlive the test
            // (untagged, ~1.5 GB a run) and nothing here reuses them.
            "--tls-verify=false",
            "-f",
        ])
        .arg(&dockerfile)
        .args(["-t", &image])
        .arg(&ctx));
    let port = free_port();
    run(support::podman::run_cmd().args([
        "-d",
        "--name",
        &container,
        "-e",
        &format!("PORT={port}"),
        &image,
    ]));
    support::podman::wait_for_http(&container, port, expect, example);

    // kiln's own build of the app, beside buildah's.
    let home = support::kiln::Kiln::shared();
    let name = format!("kiln-e2e-plan-{example}:1");
    home.build(&ctx, &name);
    let kiln_image = format!(
        "localhost/kiln-e2e-plan-kiln-{example}:{}",
        std::process::id()
    );
    let _kiln_cleanup = Cleanup {
        container: String::new(),
        image: kiln_image.clone(),
    };
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        &format!("{}:{name}", home.layout()),
        &format!("containers-storage:{kiln_image}"),
    ]));
    let (kiln_config, buildah_config) = (config(&kiln_image), config(&image));
    assert_eq!(
        kiln_config, buildah_config,
        "{example}: the image configs of kiln build and of buildah on kiln dockerfile differ"
    );
    let (kiln_files, buildah_files) = (app_files(&kiln_image), app_files(&image));
    assert!(
        !kiln_files.is_empty(),
        "{example}: kiln's image has no /app"
    );
    assert_eq!(
        kiln_files, buildah_files,
        "{example}: /app differs between kiln build and buildah on kiln dockerfile"
    );
}

/// What the printers decide of an image's config (not the history,
/// creation time or architecture fields builders fill in their own way).
fn config(image: &str) -> serde_json::Value {
    let out = run(Command::new("skopeo").args([
        "inspect",
        "--config",
        &format!("containers-storage:{image}"),
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c = &v["config"];
    let mut env: Vec<String> = c["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().map(String::from))
        .collect();
    env.sort();
    serde_json::json!({
        "Entrypoint": c["Entrypoint"],
        "Cmd": c["Cmd"],
        "WorkingDir": c["WorkingDir"],
        "User": c.get("User").and_then(|u| u.as_str()).unwrap_or(""),
        "ExposedPorts": c["ExposedPorts"],
        "Env": env,
    })
}

/// The paths under `/app` in `image` (names, sorted), without what
/// `kiln dockerfile` wrote into the context (the Dockerfile, its assets and
/// scripts under `.kiln/`), which a Docker build's `COPY .` takes along
/// unless the app's `.dockerignore` says otherwise (docs/auto.md).
fn app_files(image: &str) -> Vec<String> {
    let mnt = run(Command::new("podman").args(["image", "mount", image]));
    let app = PathBuf::from(mnt.trim()).join("app");
    let mut files = Vec::new();
    let mut stack = vec![app.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(&app).unwrap().display().to_string();
            if rel == "Dockerfile.kiln" || rel == ".kiln" || rel.starts_with(".kiln/") {
                continue;
            }
            files.push(rel);
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    let _ = Command::new("podman")
        .args(["image", "unmount", image])
        .output();
    files.sort();
    files
}

#[test]
fn generated_dockerfiles_build_with_buildah_and_serve_http() {
    let tar = base_tarball();
    let registry = Registry::start();
    let host = registry.url().trim_start_matches("http://").to_string();
    let base = format!("{host}/debian:trixie");
    let local = format!("localhost/kiln-e2e-plan-base:{}", std::process::id());
    run(Command::new("podman")
        .args(["import"])
        .arg(&tar)
        .arg(&local));
    let certs = support::auto::host_ca_certs();
    if !certs.is_empty() {
        let ctr = run(Command::new("buildah").args(["from", &local]))
            .trim()
            .to_string();
        for c in &certs {
            run(Command::new("buildah")
                .args(["copy", &ctr])
                .arg(c)
                .arg("/usr/local/share/ca-certificates/"));
        }
        run(Command::new("buildah").args(["commit", "--rm", &ctr, &local]));
    }
    run(Command::new("podman").args([
        "push",
        "--tls-verify=false",
        &local,
        &format!("docker://{base}"),
    ]));
    let _ = Command::new("podman").args(["rmi", "-f", &local]).output();

    for (example, expect) in [
        ("go-mod", "Hello from go-mod"),
        ("staticfile", "Hello from staticfile"),
        ("node-npm", "Hello from node-npm"),
        ("python-flask", "Hello from python-flask"),
    ] {
        build_and_answer(&base, example, expect);
    }
    let _ = Command::new("podman").args(["rmi", "-f", &base]).output();
}
