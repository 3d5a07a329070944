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

/// Copies the other architecture's image out of the index at `src`
/// (skopeo's source and flags) into podman, runs it emulated and waits for
/// its HTTP answer.
fn answers_under_podman(src: &[&str], name: &str, expect: &str) {
    let (arch, _) = foreign();
    let tag = format!("localhost/kiln-e2e-multiarch-{name}:1");
    let container = format!("kiln-e2e-multiarch-{name}-{}", std::process::id());
    let port = free_port();
    let _podman = support::podman::lock();
    let mut copy = vec!["copy", "-q", "--override-arch", arch];
    copy.extend(src);
    let dest = format!("containers-storage:{tag}");
    copy.push(&dest);
    run("skopeo", &copy);
    let started = support::podman::run_cmd()
        .args([
            "-d",
            "--name",
            &container,
            "--platform",
            &format!("linux/{arch}"),
            "-e",
            &format!("PORT={port}"),
            &tag,
        ])
        .output()
        .unwrap();
    let answered = started.status.success()
        && std::panic::catch_unwind(|| {
            support::podman::wait_for_http(&container, port, expect, name)
        })
        .is_ok();
    let _ = support::podman::podman()
        .args(["rm", "-f", &container])
        .output();
    let _ = support::podman::podman().args(["rmi", "-f", &tag]).output();
    assert!(
        answered,
        "the {arch} {name} image did not answer: {}",
        String::from_utf8_lossy(&started.stderr)
    );
}

/// The index blob of `digest` in a home's image store.
fn index_of(home: &Kiln, digest: &str) -> serde_json::Value {
    let hex = digest.trim().strip_prefix("sha256:").unwrap();
    let bytes = std::fs::read(home.data().join("images/blobs/sha256").join(hex)).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// (platform, manifest digest) of each entry of an index.
fn entries(index: &serde_json::Value) -> Vec<(String, String)> {
    index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("not an index: {index}"))
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

/// go-mod for amd64 and arm64 in one command, pushed: the registry holds
/// an index of both (skopeo reads it), the arm64 image pulled through the
/// index runs under podman, emulated, and answers HTTP; a clean home (its
/// own cache) gives the same index digest, and each platform built alone
/// gives the manifest the index names. The Go build is cross-compiled:
/// `go build` for arm64 runs natively, with GOARCH set.
#[test]
fn go_for_two_platforms_is_one_pushed_index_and_runs_emulated() {
    let platforms = "linux/amd64,linux/arm64";
    let reg = support::registry::Registry::start();
    let target = format!("{}/kiln/go-mod:1", reg.addr);
    let home = Kiln::shared();
    let app = support::auto::example("go-mod", home.root());
    let ca = host_ca_args();
    let build = |home: &Kiln, platform: &str, extra: &[&str]| {
        let mut args = vec![
            "build",
            app.to_str().unwrap(),
            "--platform",
            platform,
            "--progress",
            "plain",
        ];
        args.extend(ca.iter().map(String::as_str));
        args.extend(extra);
        let out = home.ok(&args);
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let started = std::time::Instant::now();
    let (digest, log) = build(&home, platforms, &["-t", &target, "--push"]);
    eprintln!(
        "go-mod amd64+arm64: {digest} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // The foreign platform's build stage cross-compiled: its runtime took
    // tini from the target's packages, not from the build stage.
    assert!(log.contains("COPY --from=target-files"), "{log}");

    let raw = run(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{target}"),
        ],
    );
    let pushed: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        pushed["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{raw}"
    );
    assert_eq!(kiln::oci::Digest::of(raw.as_bytes()).to_string(), digest);
    let listed = entries(&pushed);
    assert_eq!(
        listed.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64"]
    );
    assert_eq!(entries(&index_of(&home, &digest)), listed);

    // Each platform alone gives the manifest the index names (cached).
    for (platform, manifest) in &listed {
        assert_eq!(
            &build(&home, platform, &["-t", "one:1"]).0,
            manifest,
            "{platform}"
        );
    }

    // The foreign image, pulled through the index, answers under qemu.
    let src = format!("docker://{target}");
    answers_under_podman(
        &["--src-tls-verify=false", &src],
        "go-mod",
        "Hello from go-mod",
    );

    // A clean home, its own cache: the same index.
    let clean = Kiln::new();
    let started = std::time::Instant::now();
    let (again, _) = build(&clean, platforms, &["-t", "go-mod:1"]);
    eprintln!(
        "go-mod amd64+arm64, clean cache: {again} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(again, digest, "two clean builds gave different indexes");
}

/// A push of an index whose manifests the registry refuses fails, and the
/// tag is not there: the index (the only PUT by tag) goes last, after
/// every blob and platform manifest. Pushed again, the tag names the index.
#[test]
fn a_failed_index_push_leaves_no_tag() {
    use support::proxy::{Action, Proxy, Request};
    let home = Kiln::new();
    let ctx = home.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("a.txt"), "a\n").unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY a.txt /a.txt\n").unwrap();
    let digest = home
        .stdout(&[
            "build",
            ctx.to_str().unwrap(),
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "two:1",
        ])
        .trim()
        .to_string();
    let reg = support::registry::Registry::start();
    // Platform manifests (PUT by digest) are refused; the rest goes through.
    let proxy = Proxy::start(&reg.addr, |req: &Request| {
        if req.method == "PUT" && req.path().contains("/manifests/sha256:") {
            Action::status(400)
        } else {
            Action::Forward
        }
    });
    let through_proxy = format!("{}/kiln/two:1", proxy.addr);
    let out = home.kiln(&["push", "two:1", &through_proxy]);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let direct = format!("docker://{}/kiln/two:1", reg.addr);
    let missing = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &direct])
        .output()
        .unwrap();
    assert!(
        !missing.status.success(),
        "the tag exists after a failed push: {}",
        String::from_utf8_lossy(&missing.stdout)
    );
    home.ok(&["push", "two:1", &format!("{}/kiln/two:1", reg.addr)]);
    let raw = run(
        "skopeo",
        &["inspect", "--raw", "--tls-verify=false", &direct],
    );
    assert_eq!(kiln::oci::Digest::of(raw.as_bytes()).to_string(), digest);
}

/// node-npm for amd64 and arm64 in one command: its dependencies are pure
/// JavaScript, so the foreign platform's build stage is this machine's
/// (npm's install, already run for this platform, is cached); the index
/// lists both, and the foreign image, taken from the local store's index,
/// answers HTTP under podman with the target's node.
#[test]
fn node_for_two_platforms_is_one_index_and_runs_emulated() {
    let home = Kiln::shared();
    let (digest, log) = build_example(&home, "node-npm", TWO);
    // The second platform's build stage is the first's: both run here.
    let (_, second) = log
        .split_once("building for linux/arm64")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        second
            .lines()
            .any(|l| l.contains("npm ci") && l.contains("CACHED")),
        "the second platform's npm ci did not reuse the first's: {log}"
    );
    assert!(!log.contains("emulated under qemu-user"), "{log}");
    let listed = entries(&index_of(&home, &digest));
    assert_eq!(
        listed.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64"]
    );
    let src = format!("{}:node-npm:1", home.layout());
    answers_under_podman(&[&src], "node-npm", "Hello from node-npm");

    // `kiln run --platform` picks that platform's image of the index (and
    // runs it under qemu when foreign); without it, this machine's.
    let (arch, _) = foreign();
    let node_arch = |platform: Option<&str>| {
        let mut args = vec!["run"];
        if let Some(p) = platform {
            args.extend(["--platform", p]);
        }
        args.extend(["node-npm:1", "node", "-e", "console.log(process.arch)"]);
        String::from_utf8_lossy(&home.ok(&args).stdout)
            .trim()
            .to_string()
    };
    let node_name = |a: &str| if a == "amd64" { "x64" } else { "arm64" };
    let native = if arch == "arm64" { "amd64" } else { "arm64" };
    assert_eq!(node_arch(Some(&format!("linux/{arch}"))), node_name(arch));
    assert_eq!(node_arch(None), node_name(native));

    // A clean home (its own cache) gives the same index.
    let (again, _) = build_example(&Kiln::new(), "node-npm", TWO);
    assert_eq!(again, digest, "two clean builds gave different indexes");
}

/// python-flask (pip) for amd64 and arm64 in one command: the foreign
/// platform's `pip install` runs natively, installing the target's wheels
/// (`--platform`, wheels only), so nothing of the build is emulated; the
/// foreign image, taken from the local store's index, answers HTTP under
/// podman (gunicorn's shebang and the venv's python are the target's
/// `/usr/bin/python3`); a clean home (its own cache) gives the same index.
#[test]
fn python_for_two_platforms_installs_the_targets_wheels_natively() {
    let (_, machine) = foreign();
    let home = Kiln::shared();
    let dir = support::auto::example("python-flask", home.root());
    requirements_not_cached(&home, &dir);
    let (digest, log) = build_dir(&home, &dir, "python-flask", TWO);
    // The foreign platform's install ran on this machine, for the target,
    // and needed no emulated fallback.
    assert!(
        log.contains(&format!("pip install for {machine} (Python 3.")),
        "{log}"
    );
    assert!(!log.contains("emulated under qemu-user"), "{log}");
    let listed = entries(&index_of(&home, &digest));
    assert_eq!(
        listed.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64"]
    );
    let src = format!("{}:python-flask:1", home.layout());
    answers_under_podman(&[&src], "python-flask", "Hello from python-flask");

    let (again, _) = build_dir(&Kiln::new(), &dir, "python-flask", TWO);
    assert_eq!(again, digest, "two clean builds gave different indexes");
}

/// A requirement with no wheel at all (docopt 0.6.2: an sdist, pure
/// Python), for the other architecture: its wheel is built natively and
/// installed for the target, nothing runs emulated, and the image answers
/// HTTP under podman with the module importable.
#[test]
fn python_sdist_of_pure_python_builds_natively_for_the_other_architecture() {
    let (arch, machine) = foreign();
    let home = Kiln::shared();
    let app = home.path("sdist");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("requirements.txt"), "docopt==0.6.2\n").unwrap();
    requirements_not_cached(&home, &app);
    std::fs::write(
        app.join("main.py"),
        r#"import http.server, os, docopt
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("docopt %s\n" % docopt.__version__).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#,
    )
    .unwrap();
    let platform = format!("linux/{arch}");
    let mut args = vec![
        "build",
        app.to_str().unwrap(),
        "--platform",
        &platform,
        "-t",
        "sdist:1",
        "--progress",
        "plain",
    ];
    let ca = host_ca_args();
    args.extend(ca.iter().map(String::as_str));
    let started = std::time::Instant::now();
    let log = String::from_utf8_lossy(&home.ok(&args).stderr).into_owned();
    eprintln!(
        "sdist app for {platform}: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        log.contains(&format!(
            "no wheel of docopt==0.6.2 for {machine}: building one here"
        )),
        "{log}"
    );
    assert!(!log.contains("emulated under qemu-user"), "{log}");
    let src = format!("{}:sdist:1", home.layout());
    answers_under_podman(&[&src], "sdist", "docopt 0.6.2");
}

/// Both platforms of the e2e builds, amd64 first.
const TWO: &str = "linux/amd64,linux/arm64";

/// `kiln build` of the example `app` for `platforms` in `home`, tagged
/// `APP:1`, with plain progress: the index's digest and the build's log.
fn build_example(home: &Kiln, app: &str, platforms: &str) -> (String, String) {
    let dir = support::auto::example(app, home.root());
    build_dir(home, &dir, app, platforms)
}

/// Makes the steps after `dir`'s requirements.txt run in the shared warm
/// cache (a comment naming the test's home: a key no earlier run has), so
/// a test can read what they print; a second build of the same `dir`
/// still gives the same image.
fn requirements_not_cached(home: &Kiln, dir: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("requirements.txt"))
        .unwrap();
    writeln!(f, "# {}", home.root().display()).unwrap();
}

/// `kiln build DIR` for `platforms` in `home`, tagged `NAME:1`, with
/// plain progress: the index's digest and the build's log.
fn build_dir(home: &Kiln, dir: &std::path::Path, name: &str, platforms: &str) -> (String, String) {
    let tag = format!("{name}:1");
    let mut args = vec![
        "build",
        dir.to_str().unwrap(),
        "--platform",
        platforms,
        "-t",
        &tag,
        "--progress",
        "plain",
    ];
    let ca = host_ca_args();
    args.extend(ca.iter().map(String::as_str));
    let started = std::time::Instant::now();
    let out = home.ok(&args);
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    eprintln!(
        "{name} {platforms}: {digest} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    (digest, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A machine without qemu-user for the other architecture, made here by
/// hiding binfmt_misc in a mount namespace of kiln's own (`unshare -m`, a
/// tmpfs over `/proc/sys/fs/binfmt_misc`): first not mounted at all, then
/// mounted without a handler for the architecture. Each build fails
/// before any work with exit 1, says what to install, mount or register,
/// and tags nothing; no step starts to fail with "not an executable
/// format". (`cli_basics` checks the same on whatever the machine has;
/// CI's machine has the handler, so the missing cases are made here.)
#[test]
fn a_machine_without_binfmt_for_the_platform_is_told_the_fix_and_nothing_is_tagged() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: hiding binfmt_misc needs root (unshare -m, mount)");
        return;
    }
    let (arch, qemu) = foreign();
    let k = Kiln::new();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nRUN true\n").unwrap();
    let platform = format!("linux/{arch}");
    let binfmt = "/proc/sys/fs/binfmt_misc";
    for (setup, says) in [
        (
            format!("mount -t tmpfs none {binfmt}"),
            vec![
                format!("mount -t binfmt_misc binfmt_misc {binfmt}"),
                "apt-get install qemu-user-static binfmt-support".to_string(),
            ],
        ),
        (
            format!("mount -t tmpfs none {binfmt} && echo enabled > {binfmt}/status"),
            vec![
                format!("has no binfmt_misc handler for {qemu}"),
                format!("update-binfmts --enable qemu-{qemu}"),
            ],
        ),
    ] {
        let kiln = k.cmd();
        let mut c = std::process::Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!("{setup} && exec \"$0\" \"$@\""))
            .arg(kiln.get_program())
            .args(["build", "ctx", "--platform", &platform, "-t", "foreign:1"])
            .current_dir(k.root());
        for (key, value) in kiln.get_envs() {
            match value {
                Some(v) => c.env(key, v),
                None => c.env_remove(key),
            };
        }
        let out = c.output().expect("run unshare -m kiln");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{setup}: {err}");
        for s in &says {
            assert!(err.contains(s.as_str()), "{setup}: no `{s}` in: {err}");
        }
        assert!(!err.contains("not an executable format"), "{err}");
        let images = k.stdout(&["images"]);
        assert!(!images.contains("foreign"), "{images}");
    }
}
