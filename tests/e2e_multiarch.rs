//! End to end: an auto build for the other architecture (arm64 on an
//! amd64 host, amd64 on arm64). Its Debian packages are composed natively
//! (no emulation); its `RUN` steps run under qemu-user through binfmt_misc,
//! which `scripts/install-test-deps` installs and registers. The image
//! runs under podman, emulated, and answers HTTP.
#![cfg(feature = "e2e")]

mod support;

use support::auto::host_ca_args;
use support::kiln::{Kiln, run};
use support::registry::free_port;

/// The other architecture: (OCI's name, qemu's and `uname -m`'s name).
fn foreign() -> (&'static str, &'static str) {
    if cfg!(target_arch = "aarch64") {
        ("amd64", "x86_64")
    } else {
        ("arm64", "aarch64")
    }
}

#[test]
fn an_app_built_for_the_other_architecture_runs_emulated_and_answers_http() {
    let (arch, qemu) = foreign();
    let handler = std::fs::read_to_string(format!("/proc/sys/fs/binfmt_misc/qemu-{qemu}"))
        .unwrap_or_default();
    assert!(
        handler.starts_with("enabled"),
        "no binfmt_misc handler for {qemu}: run ./scripts/install-test-deps (it installs qemu-user-static and registers it)"
    );
    let home = Kiln::shared();
    let app = home.path("app");
    std::fs::create_dir_all(app.join("public")).unwrap();
    std::fs::write(app.join("public/index.html"), "hello from the other arch\n").unwrap();
    std::fs::write(
        app.join("Procfile"),
        "web: python3 -m http.server $PORT --directory /app/public\n",
    )
    .unwrap();
    let platform = format!("linux/{arch}");
    let mut args = vec![
        "build",
        app.to_str().unwrap(),
        "--apt",
        "python3",
        "--platform",
        &platform,
        "-t",
        "other:1",
        "--progress",
        "plain",
    ];
    let ca = host_ca_args();
    args.extend(ca.iter().map(String::as_str));
    home.ok(&args);

    // The config and manifest say the architecture; an independent reader agrees.
    let raw = run(
        "skopeo",
        &["inspect", "--config", &format!("{}:other:1", home.layout())],
    );
    let config: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(config["architecture"], arch, "{raw}");

    let tag = "localhost/kiln-e2e-multiarch:1";
    let container = format!("kiln-e2e-multiarch-{}", std::process::id());
    let _podman = support::podman::lock();
    run(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("{}:other:1", home.layout()),
            &format!("containers-storage:{tag}"),
        ],
    );
    let port = free_port();
    let started = support::podman::run_cmd()
        .args([
            "-d",
            "--name",
            &container,
            "--platform",
            &platform,
            "-e",
            &format!("PORT={port}"),
            tag,
        ])
        .output()
        .unwrap();
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let cleanup = || {
        let _ = support::podman::podman()
            .args(["rm", "-f", &container])
            .output();
        let _ = support::podman::podman().args(["rmi", "-f", tag]).output();
    };
    let answered = std::panic::catch_unwind(|| {
        support::podman::wait_for_http(&container, port, "hello from the other arch", "other:1")
    });
    let machine = support::podman::podman()
        .args([
            "exec",
            &container,
            "python3",
            "-c",
            "import os; print(os.uname().machine)",
        ])
        .output();
    cleanup();
    assert!(answered.is_ok(), "the emulated app did not answer");
    let machine = machine.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&machine.stdout).trim(),
        qemu,
        "{}",
        String::from_utf8_lossy(&machine.stderr)
    );
}
