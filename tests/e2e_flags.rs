//! `kiln build`'s Nixpacks and buildx flags on real builds: auto builds
//! from a plan file over a busybox base (no Debian archive, no network),
//! `-e` in the image, `--build-env` in the steps only.
#![cfg(feature = "e2e")]

mod support;

use std::fs;

use support::hostile::{busybox_layer, oci_layout};
use support::kiln::Kiln;

/// A fresh home with `bb:1` (a static busybox) in its store.
fn home_with_busybox() -> Kiln {
    let k = Kiln::new();
    oci_layout(&k.path("bb"), &[busybox_layer()], "bb:1");
    k.ok(&[
        "--progress",
        "quiet",
        "load",
        k.path("bb").to_str().unwrap(),
    ]);
    k
}

/// The image config's `Env` of `name`.
fn image_env(k: &Kiln, name: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&k.stdout(&["inspect", name])).unwrap();
    v["config"]["config"]["Env"]
        .as_array()
        .unwrap_or_else(|| panic!("no Env: {v}"))
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

/// An app whose plan (`plan.json`) builds on busybox: one build step that
/// records what it sees, no start command.
fn busybox_app(k: &Kiln) -> std::path::PathBuf {
    let app = k.path("app");
    fs::create_dir_all(&app).unwrap();
    fs::write(app.join("hello.txt"), "hello\n").unwrap();
    fs::write(
        k.path("plan.json"),
        r#"{
  "buildImage": "bb:1",
  "phases": {
    "build": {
      "cmds": ["echo \"$GREETING/$BUILD_TOKEN\" > /app/seen"]
    }
  },
  "start": { "runImage": "bb:1" }
}
"#,
    )
    .unwrap();
    app
}

/// `-e` (Nixpacks' `--env`) is in the build steps and the image's `Env`,
/// and the progress says so; `--build-env` is in the steps only;
/// `--plan FILE` is the plan built; `--no-error-without-start` builds it
/// without a start command.
#[test]
fn env_reaches_the_image_and_build_env_only_the_steps() {
    let k = home_with_busybox();
    busybox_app(&k);
    let base = [
        "--progress",
        "plain",
        "build",
        "app",
        "--plan",
        "plan.json",
        "--no-host-ca",
        "-e",
        "GREETING=hi",
        "--build-env",
        "BUILD_TOKEN=tok",
    ];
    // Without a start command and without the flag: the error says how.
    let out = k.kiln(&base);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-error-without-start"), "{err}");

    let mut args = base.to_vec();
    args.extend(["--no-error-without-start", "-t", "envs:1"]);
    let out = k.ok(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in the image's environment (-e): GREETING"),
        "{err}"
    );
    assert!(err.contains("the plan plan.json"), "{err}");
    let env = image_env(&k, "envs:1");
    assert!(env.contains(&"GREETING=hi".to_string()), "{env:?}");
    assert!(!env.iter().any(|e| e.starts_with("BUILD_TOKEN")), "{env:?}");
    let out = k.ok(&[
        "--progress",
        "quiet",
        "run",
        "envs:1",
        "/bin/busybox",
        "cat",
        "/app/seen",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi/tok\n");
}

/// `--add-host HOST:IP` is in every RUN step's `/etc/hosts` (IPv4 and
/// IPv6, `HOST=IP` too), next to the host's own entries.
#[test]
fn add_host_reaches_run_steps() {
    let k = home_with_busybox();
    let ctx = k.path("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM bb:1\nRUN /bin/busybox cat /etc/hosts > /hosts\n",
    )
    .unwrap();
    k.ok(&[
        "--progress",
        "plain",
        "build",
        "ctx",
        "--add-host",
        "db:10.1.2.3",
        "--add-host",
        "cache=fd00::7",
        "-o",
        "type=local,dest=out",
    ]);
    let hosts = fs::read_to_string(k.path("out/hosts")).unwrap();
    let lines: Vec<&str> = hosts.lines().collect();
    assert!(lines.contains(&"10.1.2.3\tdb"), "{hosts}");
    assert!(lines.contains(&"fd00::7\tcache"), "{hosts}");
    assert!(hosts.contains("localhost"), "{hosts}");
}
