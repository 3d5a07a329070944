//! End to end: Dockerfiles that `kiln dockerfile` writes for the Node,
//! Python, Go and static examples build with buildah (chroot isolation,
//! `--layers`) from a Debian base image served by a local registry, and the
//! images answer HTTP under podman.
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
        let _ = Command::new("podman")
            .args(["rm", "-f", &self.container])
            .output();
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
            "--force-rm",
            "--isolation",
            "chroot",
            "--layers",
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
