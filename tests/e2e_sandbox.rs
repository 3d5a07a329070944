//! The sandbox, end to end, on a real Debian root filesystem: layer
//! capture, cache and secret mounts, isolation (as root and as an
//! unprivileged user), cleanup, interruption, bad input. Needs root,
//! mmdebstrap, uidmap (newuidmap), perl-base and bash in the image.
#![cfg(feature = "e2e")]

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln::oci::layer::{Compression, LayerOptions};
use kiln::oci::store::Store;
use kiln::progress::Progress;
use kiln::sandbox::{CacheMount, Mount, Network, RunSpec, Sandbox, SecretMount, StepCommand};
use support::debian;
use support::sandbox::{Env, logs};

fn env() -> Env {
    support::sandbox::env("kiln-e2e-sandbox-")
}

fn sh(script: &str) -> RunSpec {
    RunSpec::new(
        vec![debian::base_rootfs()],
        StepCommand::Shell(script.into()),
    )
}

/// What a snapshot dir holds besides the record of unsynced snapshots
/// (`sandbox::unsynced`): the snapshots and any leftover.
fn snapshot_dirs(root: &Path) -> Vec<PathBuf> {
    fs::read_dir(root)
        .unwrap()
        .flatten()
        .filter(|e| !kiln::sandbox::unsynced::is_own_file(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect()
}

/// Runs a shell script, expecting success; returns its output lines.
fn run_ok(e: &Env, spec: &RunSpec) -> Vec<String> {
    let p = Progress::recording();
    let out = e.sandbox.run(spec, &p).expect("the step starts");
    let lines = logs(&p);
    assert_eq!(out.exit_code, 0, "step failed; output: {lines:#?}");
    lines
}

/// Layer tar entries: path → (type byte, content).
fn tar_entries(store: &Store, layer: &kiln::oci::Layer) -> BTreeMap<String, (u8, Vec<u8>)> {
    let blob = store.open_blob(&layer.blob.digest).unwrap();
    let r = layer.compression.decoder(blob).unwrap();
    let mut a = tar::Archive::new(r);
    let mut out = BTreeMap::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let kind = e.header().entry_type().as_byte();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(path, (kind, data));
    }
    out
}

#[test]
fn debian_step_becomes_a_layer_with_files_and_whiteouts() {
    let e = env();
    let store = Store::open(e.dir.path().join("store")).unwrap();
    let spec = sh(
        "echo hi > /a && rm /etc/issue && mkdir -p /d && touch /d/x \
         && rm -rf /usr/share/doc/apt && mkdir /usr/share/doc/apt && touch /usr/share/doc/apt/new",
    );
    let p = Progress::recording();
    let out = e.sandbox.run(&spec, &p).unwrap();
    assert_eq!(out.exit_code, 0, "{:?}", logs(&p));
    let layer = out
        .write_layer(
            &store,
            LayerOptions {
                compression: Compression::Gzip,
                epoch: 1,
            },
        )
        .unwrap();
    let entries = tar_entries(&store, &layer);
    let names: Vec<&String> = entries.keys().collect();
    assert_eq!(entries["a"], (b'0', b"hi\n".to_vec()), "{names:?}");
    assert_eq!(entries["d/"].0, b'5', "{names:?}");
    assert_eq!(entries["d/x"], (b'0', Vec::new()));
    assert!(entries.contains_key("etc/.wh.issue"), "{names:?}");
    assert!(
        entries.contains_key("usr/share/doc/apt/.wh..wh..opq"),
        "opaque dir marker missing: {names:?}"
    );
    assert!(entries.contains_key("usr/share/doc/apt/new"), "{names:?}");
    // Nothing the sandbox itself put there.
    for n in &names {
        for bad in [
            "proc",
            "dev",
            "etc/hosts",
            "etc/resolv.conf",
            "run/",
            "sys/",
        ] {
            assert!(!n.starts_with(bad), "{n} leaked into the layer: {names:?}");
        }
    }
    // Deterministic: the same step again gives the same layer.
    let again = e.sandbox.run(&spec, &p).unwrap();
    let layer2 = again
        .write_layer(
            &store,
            LayerOptions {
                compression: Compression::Gzip,
                epoch: 1,
            },
        )
        .unwrap();
    assert_eq!(layer.diff_id, layer2.diff_id);
    // Dropping the outputs removes the run dirs.
    drop((out, again));
    assert_eq!(fs::read_dir(&e.sandbox.runs).unwrap().count(), 0);
}

#[test]
fn output_is_streamed_line_by_line_and_exit_code_returned() {
    let e = env();
    let p = Progress::recording();
    let out = e
        .sandbox
        .run(&sh("echo one; echo two >&2; printf three; exit 7"), &p)
        .unwrap();
    assert_eq!(out.exit_code, 7);
    assert_eq!(logs(&p), vec!["one", "two", "three"]);
}

/// The step's root overlay is `volatile`: its unmount at the end of the
/// step does not `syncfs` the cache's filesystem (which made a cold
/// python-flask step wait 2.5 s for the package base's snapshots to reach
/// the disk; `sandbox::unsynced` covers a crash of the machine instead).
#[test]
fn the_root_overlay_is_volatile() {
    let e = env();
    let lines = run_ok(
        &e,
        &sh("awk '$5 == \"/\" && $9 == \"overlay\" { print $NF }' /proc/self/mountinfo"),
    );
    assert_eq!(lines.len(), 1, "one overlay on /: {lines:?}");
    // Shown as `volatile` up to Linux 6.5, `fsync=volatile` since.
    assert!(
        lines[0]
            .split(',')
            .any(|o| o == "volatile" || o == "fsync=volatile"),
        "the root overlay's options: {}",
        lines[0]
    );
}

#[test]
fn cache_mount_persists_between_runs_and_sandboxes() {
    let e = env();
    let mut spec = sh("echo x >> /root/.cache/pip/f; wc -l < /root/.cache/pip/f");
    spec.mounts
        .push(Mount::Cache(CacheMount::new("pip", "/root/.cache/pip")));
    assert_eq!(run_ok(&e, &spec), vec!["1"]);
    assert_eq!(run_ok(&e, &spec), vec!["2"]);
    // A second "build": a new sandbox on the same cache dir.
    let e2 = Env {
        sandbox: Sandbox {
            runs: e.dir.path().join("runs2"),
            ..e.sandbox.clone()
        },
        dir: tempfile::tempdir().unwrap(),
    };
    let p = Progress::recording();
    let out = e2.sandbox.run(&spec, &p).unwrap();
    assert_eq!(logs(&p), vec!["3"]);
    // The cache never reaches the layer.
    let entries = out.entries().unwrap();
    assert!(
        !entries.iter().any(|x| x.path.starts_with("root/.cache")),
        "{entries:?}"
    );
}

fn grep_tree(dir: &Path, needle: &[u8], hits: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for ent in rd.flatten() {
        let p = ent.path();
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            grep_tree(&p, needle, hits);
        } else if m.is_file() {
            let raw = fs::read(&p).unwrap_or_default();
            let mut plain = Vec::new();
            // Layers are compressed: look inside too.
            if flate2::read::MultiGzDecoder::new(&raw[..])
                .read_to_end(&mut plain)
                .is_err()
            {
                plain.clear();
            }
            if raw.windows(needle.len()).any(|w| w == needle)
                || plain.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(p);
            }
        }
    }
}

#[test]
fn secret_is_readable_inside_and_found_nowhere_after() {
    let e = env();
    let store = Store::open(e.dir.path().join("store")).unwrap();
    let value = format!("kiln-secret-{}", std::process::id() as u64 * 7919 + 12345);
    let mut spec = sh(
        "test \"$(cat /run/secrets/token)\" = \"$EXPECTED\" && stat -c '%a %u' /run/secrets/token \
         && echo done > /out && ls /run/secrets",
    );
    spec.env.push(("EXPECTED".into(), value.clone()));
    spec.mounts
        .push(Mount::Secret(SecretMount::new("token", value.clone())));
    let p = Progress::recording();
    let out = e.sandbox.run(&spec, &p).unwrap();
    let lines = logs(&p);
    assert_eq!(out.exit_code, 0, "{lines:?}");
    assert_eq!(lines, vec!["400 0", "token"]);
    // A layer and an image config made from the step.
    let layer = out.write_layer(&store, LayerOptions::default()).unwrap();
    let mut b = kiln::oci::image::ImageBuilder::scratch(kiln::oci::image::host_platform());
    b.add_layer(&layer, "RUN --mount=type=secret,id=token ...");
    b.write(&store, 1).unwrap();
    let entries = tar_entries(&store, &layer);
    assert!(entries.contains_key("out"), "{entries:?}");
    assert!(!entries.keys().any(|k| k.starts_with("run")), "{entries:?}");
    // Grep the store, the run dir, and the log.
    let mut hits = Vec::new();
    grep_tree(store.root(), value.as_bytes(), &mut hits);
    grep_tree(&out.upper(), value.as_bytes(), &mut hits);
    assert!(hits.is_empty(), "secret found in {hits:?}");
    assert!(!format!("{:?}", p.events()).contains(&value));
    // A step that prints the secret gets it redacted in the log.
    let mut leak = sh("cat /run/secrets/token");
    leak.mounts
        .push(Mount::Secret(SecretMount::new("token", value.clone())));
    let p = Progress::recording();
    e.sandbox.run(&leak, &p).unwrap();
    assert_eq!(logs(&p), vec!["****"]);
}

const MARKER: &str = "/root/kiln-e2e-sandbox-marker";

fn isolation_script(port: u16) -> String {
    format!(
        r#"
fail=0
# host files
cat {MARKER} 2>/dev/null && {{ echo "READ host marker"; fail=1; }}
# classic chroot escape (CAP_SYS_CHROOT is kept, the host root is detached)
perl -e 'mkdir "/esc"; chroot "/esc" or exit 0; chdir ".." for 1..64; chroot "."; open(F, "{MARKER}") and print "ESCAPED\n"' | grep -q ESCAPED && {{ echo "chroot escape"; fail=1; }}
# mounts and namespaces
mount -t tmpfs none /mnt 2>/dev/null && {{ echo "mount worked"; fail=1; }}
unshare -m true 2>/dev/null && {{ echo "unshare -m worked"; fail=1; }}
unshare -Urm sh -c 'mount -t proc proc /proc; cat {MARKER}' 2>/dev/null && {{ echo "unshare escape"; fail=1; }}
# processes: only ours
n=$(ls /proc | grep -c '^[0-9]*$')
[ "$n" -le 6 ] || {{ echo "sees $n processes"; fail=1; }}
# writes land in the layer only
echo pwned > /etc/kiln-e2e-written 2>/dev/null
# network none
bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' 2>/dev/null && {{ echo "network reachable"; fail=1; }}
[ $fail = 0 ] && echo ISOLATED
"#
    )
}

fn check_host_untouched(rootfs: &Path) {
    assert!(!Path::new("/etc/kiln-e2e-written").exists());
    assert!(!rootfs.join("etc/kiln-e2e-written").exists());
    assert!(!Path::new("/esc").exists());
}

#[test]
fn isolation_as_root() {
    let e = env();
    fs::write(MARKER, "host-only").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut spec = sh(&isolation_script(port));
    spec.network = Network::None;
    let lines = run_ok(&e, &spec);
    assert_eq!(lines, vec!["ISOLATED"]);
    check_host_untouched(&debian::base_rootfs());
    // With the host network the same connection works (the check can fail).
    let mut spec = sh(&format!(
        "bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' && echo connected"
    ));
    spec.network = Network::Host;
    assert_eq!(run_ok(&e, &spec), vec!["connected"]);
    // Capabilities: Docker's set, no CAP_SYS_ADMIN (bit 21) even in the bounding set.
    let lines = run_ok(&e, &sh("grep -E '^Cap(Eff|Bnd)' /proc/self/status"));
    for l in &lines {
        let hex = l.split_whitespace().nth(1).unwrap();
        let v = u64::from_str_radix(hex, 16).unwrap();
        assert_eq!(v, 0xa80425fb, "{l}");
        assert_eq!(v & (1 << 21), 0);
    }
}

fn kiln_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

use support::rootless::{USER as TEST_USER, kiln_in as kiln_for, user as unprivileged_user};

#[test]
fn isolation_as_unprivileged_user() {
    let (uid, gid) = unprivileged_user();
    let e = env();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(e.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let kiln = kiln_for(e.dir.path());
    let cache = e.dir.path().join("user-cache");
    fs::create_dir(&cache).unwrap();
    std::os::unix::fs::chown(&cache, Some(uid), Some(gid)).unwrap();
    fs::write(MARKER, "host-only").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let rootfs = debian::rootfs_for_users();
    let out = Command::new("runuser")
        .args(["-u", TEST_USER, "--"])
        .arg("env")
        .arg(format!("KILN_CACHE_DIR={}", cache.display()))
        .arg(&kiln)
        .args([
            "--progress",
            "quiet",
            "run",
            "--network",
            "none",
            "--rootfs",
        ])
        .arg(&rootfs)
        .args(["sh", "-c", &isolation_script(port)])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout.trim(), "ISOLATED", "stderr: {stderr}");
    check_host_untouched(&rootfs);
    // Rootless mapping: root inside is the user outside.
    let out = Command::new("runuser")
        .args(["-u", TEST_USER, "--", "env"])
        .arg(format!("KILN_CACHE_DIR={}", cache.display()))
        .arg(&kiln)
        // The rootless private network has its own tests (e2e_network).
        .args([
            "--progress",
            "quiet",
            "run",
            "--network",
            "none",
            "--rootfs",
        ])
        .arg(&rootfs)
        .args([
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map | tr -s ' ' | head -2",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        vec!["0", &uid.to_string(), "1"]
    );
    assert_eq!(
        fs::read_dir(cache.join("sandbox")).unwrap().count(),
        0,
        "run dirs left"
    );
}

/// The host's mounts that involve kiln's paths (every sandbox and snapshot
/// dir of these tests has `kiln` in its path). Other suites (buildah, podman)
/// mount and unmount in parallel, so the whole table is not stable.
fn mounts_now() -> String {
    fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.contains("kiln"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn two_hundred_steps_leave_no_mounts_or_temp_dirs() {
    let e = env();
    let spec = sh("echo $$ > /pid");
    let p = Progress::quiet();
    // Warm up (snapshot made), then snapshot the state.
    drop(e.sandbox.run(&spec, &p).unwrap());
    let mounts = mounts_now();
    let tmp_before: Vec<_> = fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|d| d.file_name())
        .collect();
    for i in 0..200 {
        let out = e.sandbox.run(&spec, &p).unwrap();
        assert_eq!(out.exit_code, 0, "step {i}");
    }
    assert_eq!(mounts_now(), mounts);
    assert_eq!(fs::read_dir(&e.sandbox.runs).unwrap().count(), 0);
    let tmp_after: Vec<_> = fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|d| d.file_name())
        .collect();
    let new: Vec<_> = tmp_after
        .iter()
        .filter(|f| !tmp_before.contains(f))
        .collect();
    assert!(
        new.iter().all(|f| !f.to_string_lossy().contains("kiln")),
        "{new:?}"
    );
}

fn pids_running(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for ent in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = ent.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = fs::read(ent.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.trim() == needle {
                out.push(pid);
            }
        }
    }
    out
}

#[test]
fn sigint_kills_the_step_tree_and_cleans_up() {
    let e = env();
    let cache = e.dir.path().join("cache");
    let mounts = mounts_now();
    // Distinct durations so this test finds only its own processes.
    let tag = 3000 + std::process::id() % 1000;
    let mut child = Command::new(kiln_bin())
        .env("KILN_CACHE_DIR", &cache)
        .args(["--progress", "quiet", "run", "--rootfs"])
        .arg(debian::base_rootfs())
        .args([
            "sh",
            "-c",
            &format!("trap '' INT; sleep {tag} & sleep {}", tag + 1),
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while pids_running(&format!("sleep {}", tag + 1)).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "step did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(pids_running(&format!("sleep {tag}")).len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "kiln did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        pids_running(&format!("sleep {tag}")).is_empty(),
        "background sleep survived"
    );
    assert!(
        pids_running(&format!("sleep {}", tag + 1)).is_empty(),
        "step survived"
    );
    assert_eq!(fs::read_dir(cache.join("sandbox")).unwrap().count(), 0);
    assert_eq!(mounts_now(), mounts);
}

fn setup_error(e: &Env, spec: &RunSpec) -> String {
    let err = match e.sandbox.run(spec, &Progress::quiet()) {
        Ok(out) => panic!("expected an error, got exit code {}", out.exit_code),
        Err(err) => format!("{err:#}"),
    };
    assert_eq!(
        fs::read_dir(&e.sandbox.runs).unwrap().count(),
        0,
        "run dir left after {err}"
    );
    err
}

#[test]
fn bad_input_gives_clear_errors() {
    let e = env();
    let base = debian::base_rootfs();
    let spec = RunSpec::new(
        vec![base.clone()],
        StepCommand::Exec(vec!["no-such-tool".into()]),
    );
    let err = setup_error(&e, &spec);
    assert!(
        err.contains("command not found") && err.contains("no-such-tool"),
        "{err}"
    );
    let spec = RunSpec::new(
        vec![base.clone()],
        StepCommand::Exec(vec!["/opt/nothing".into()]),
    );
    let err = setup_error(&e, &spec);
    assert!(err.contains("/opt/nothing does not exist"), "{err}");

    let mut spec = sh("true");
    spec.user = Some("ghost".into());
    let err = setup_error(&e, &spec);
    assert!(
        err.contains("user \"ghost\" does not exist") && err.contains("/etc/passwd"),
        "{err}"
    );

    let mut spec = sh("true");
    spec.workdir = "/etc/passwd".into();
    let err = setup_error(&e, &spec);
    assert!(err.contains("/etc/passwd is not a directory"), "{err}");

    let spec = RunSpec::new(vec![base], StepCommand::Exec(vec![]));
    assert!(setup_error(&e, &spec).contains("no command"));

    // The CLI says the same and exits non-zero.
    let out = Command::new(kiln_bin())
        .env("KILN_CACHE_DIR", e.dir.path().join("cli"))
        .args(["--progress", "quiet", "run", "--user", "ghost", "--rootfs"])
        .arg(debian::base_rootfs())
        .arg("true")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"ghost\" does not exist"));
}

#[test]
fn users_workdirs_and_env() {
    let e = env();
    let mut spec = sh("id -u; id -g; pwd; echo $HOME $FOO; hostname");
    spec.user = Some("nobody".into());
    spec.workdir = "/srv/app/sub".into();
    spec.env.push(("FOO".into(), "bar".into()));
    spec.hostname = "builder".into();
    assert_eq!(
        run_ok(&e, &spec),
        vec![
            "65534",
            "65534",
            "/srv/app/sub",
            "/nonexistent bar",
            "builder"
        ]
    );
    let mut spec = sh("id -u; id -g; grep CapEff /proc/self/status");
    spec.user = Some("1234:5678".into());
    assert_eq!(
        run_ok(&e, &spec),
        vec!["1234", "5678", "CapEff:\t0000000000000000"]
    );
}

#[test]
fn many_layers_fit_in_one_overlay() {
    let e = env();
    // Long paths: without short lower names, 150 of these overflow the
    // one-page limit of overlay's mount options.
    let deep = e.dir.path().join("l".repeat(40)).join("m".repeat(40));
    let mut lowers = vec![debian::base_rootfs()];
    for i in 0..150 {
        let d = deep.join(format!("layer-{i:04}"));
        fs::create_dir_all(d.join("layers")).unwrap();
        fs::write(d.join("layers").join(format!("f{i}")), i.to_string()).unwrap();
        fs::write(d.join("top"), i.to_string()).unwrap();
        lowers.push(d);
    }
    let spec = RunSpec::new(
        lowers,
        StepCommand::Shell("cat /top; echo; ls /layers | wc -l".into()),
    );
    assert_eq!(run_ok(&e, &spec), vec!["149", "150"]);
}

#[test]
fn bind_and_tmpfs_mounts() {
    let e = env();
    let ctx = e.dir.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(ctx.join("package.json"), "{}\n").unwrap();
    let mut spec = sh(
        "cat /ctx/package.json; touch /ctx/new 2>/dev/null || echo read-only; \
         echo t > /scratch/t && cat /scratch/t",
    );
    spec.mounts.push(Mount::Bind(kiln::sandbox::BindMount {
        source: ctx.clone(),
        target: "/ctx".into(),
        readwrite: false,
    }));
    spec.mounts.push(Mount::Tmpfs(kiln::sandbox::TmpfsMount {
        target: "/scratch".into(),
        size: Some(1 << 20),
    }));
    let p = Progress::recording();
    let out = e.sandbox.run(&spec, &p).unwrap();
    assert_eq!(logs(&p), vec!["{}", "read-only", "t"]);
    assert!(!ctx.join("new").exists());
    let entries = out.entries().unwrap();
    assert!(entries.is_empty(), "mount points leaked: {entries:?}");
}

fn kiln_cli(data: &Path, cache: &Path, args: &[&str]) -> std::process::Output {
    Command::new(kiln_bin())
        .env("KILN_DATA_DIR", data)
        .env("KILN_CACHE_DIR", cache)
        .args(["--progress", "quiet", "run"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A one-layer Debian image named `name` in the image store under `data`,
/// with Env GREETING=hello, WorkingDir /srv and a Cmd.
fn debian_image(data: &Path, name: &str) {
    let store = debian::store();
    let base = debian::base_layer();
    let layer = kiln::oci::Layer {
        diff_id: base.clone(),
        blob: kiln::oci::BlobInfo {
            digest: base.clone(),
            size: store.size(&base).unwrap(),
        },
        compression: Compression::None,
    };
    let mut b = kiln::oci::ImageBuilder::scratch(kiln::oci::image::host_platform());
    b.add_layer(&layer, "debian bookworm minbase");
    kiln::oci::image::set_env(b.config_mut(), "GREETING", "hello");
    b.config_mut().set_working_dir(Some("/srv".into()));
    b.config_mut().set_cmd(Some(vec![
        "sh".into(),
        "-c".into(),
        "echo $GREETING from $(pwd)".into(),
    ]));
    let img = b.write(&store, 1).unwrap();
    kiln::oci::ImageStore::open(data.join("images"))
        .unwrap()
        .import(&store, &img.manifest_desc, name)
        .unwrap();
}

#[test]
fn kiln_run_an_image_from_the_local_store() {
    let e = env();
    let data = e.dir.path().join("data");
    let cache = e.dir.path().join("cache");
    debian_image(&data, "runme:1");

    // The image's Cmd, Env and WorkingDir.
    let out = kiln_cli(&data, &cache, &["runme:1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from /srv\n");
    // Snapshot made once, under the cache dir.
    assert_eq!(snapshot_dirs(&cache.join("snapshots")).len(), 1);

    // -e, -w, --user, -v (read-only by default), a command.
    let host = e.dir.path().join("vol");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("f"), "content").unwrap();
    let vol = format!("{}:/mnt/vol", host.display());
    let out = kiln_cli(
        &data,
        &cache,
        &[
            "-e",
            "GREETING=bye",
            "-w",
            "/tmp",
            "--user",
            "nobody",
            "-v",
            &vol,
            "runme:1",
            "sh",
            "-c",
            "echo $GREETING $(pwd) $(id -u) $(cat /mnt/vol/f); touch /mnt/vol/g || echo ro",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec!["bye /tmp 65534 content", "ro"]
    );
    assert!(!host.join("g").exists());
    let out = kiln_cli(
        &data,
        &cache,
        &["-v", &format!("{vol}:rw"), "runme:1", "touch", "/mnt/vol/g"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(host.join("g").exists());

    // The command's exit code is kiln's.
    let out = kiln_cli(&data, &cache, &["runme:1", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    // --network none
    let out = kiln_cli(
        &data,
        &cache,
        &[
            "--network",
            "none",
            "runme:1",
            "sh",
            "-c",
            "ls /sys/class/net 2>/dev/null; cat /proc/net/dev | tail -n +3 | cut -d: -f1",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "lo");

    // A missing image says what to do.
    let out = kiln_cli(&data, &cache, &["nothere:1", "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not in the local image store"), "{err}");
    assert_eq!(fs::read_dir(cache.join("sandbox")).unwrap().count(), 0);
}

#[test]
fn rootless_kiln_run_of_an_image() {
    let (uid, gid) = unprivileged_user();
    let e = env();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(e.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let data = e.dir.path().join("data");
    debian_image(&data, "rootless:1");
    // The user's own image store.
    let st = Command::new("chown")
        .args(["-R", &format!("{uid}:{gid}")])
        .arg(&data)
        .status()
        .unwrap();
    assert!(st.success());
    let cache = e.dir.path().join("user-cache");
    fs::create_dir(&cache).unwrap();
    std::os::unix::fs::chown(&cache, Some(uid), Some(gid)).unwrap();
    let kiln = kiln_for(e.dir.path());
    let out = Command::new("runuser")
        .args(["-u", TEST_USER, "--", "env"])
        .arg(format!("KILN_CACHE_DIR={}", cache.display()))
        .arg(format!("KILN_DATA_DIR={}", data.display()))
        .arg(&kiln)
        // The rootless private network has its own tests (e2e_network).
        .args(["--progress", "quiet", "run", "--network", "none"])
        .args(["rootless:1", "sh", "-c"])
        .arg("rm /etc/issue && echo hi > /a && cat /a && id -u && echo $GREETING")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n0\nhello\n");
    // The user's snapshot is owned by the user; nothing left running or mounted.
    let snaps = snapshot_dirs(&cache.join("snapshots"));
    assert_eq!(snaps.len(), 1);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(&snaps[0]).unwrap().uid(), uid);
    assert_eq!(fs::read_dir(cache.join("sandbox")).unwrap().count(), 0);
}

/// Waits until a file named `name` shows up in some cache mount dir.
fn wait_for_cache_file(e: &Env, name: &str) -> PathBuf {
    let start = Instant::now();
    loop {
        if let Ok(rd) = fs::read_dir(&e.sandbox.cache_mounts) {
            for d in rd.flatten() {
                if d.path().join(name).exists() {
                    return d.path();
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{name} never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cache_sharing_locked_and_private() {
    use kiln::sandbox::Sharing;
    let e = env();
    let cache = |sharing| {
        let mut c = CacheMount::new("shared-id", "/c");
        c.sharing = sharing;
        Mount::Cache(c)
    };
    // locked: the second step waits for the first.
    let mut first = sh("touch /c/one; sleep 1; echo end1 >> /c/log");
    first.mounts.push(cache(Sharing::Locked));
    let mut second = sh("echo start2 >> /c/log");
    second.mounts.push(cache(Sharing::Locked));
    std::thread::scope(|s| {
        let t = s.spawn(|| run_ok(&e, &first));
        let dir = wait_for_cache_file(&e, "one");
        run_ok(&e, &second);
        t.join().unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("log")).unwrap(),
            "end1\nstart2\n"
        );
    });
    // private: a busy cache gives the second step a fresh, throw-away dir.
    let mut first = sh("touch /c/two; sleep 1");
    first.mounts.push(cache(Sharing::Private));
    let mut second = sh("ls /c | wc -l; touch /c/three");
    second.mounts.push(cache(Sharing::Private));
    std::thread::scope(|s| {
        let t = s.spawn(|| run_ok(&e, &first));
        let dir = wait_for_cache_file(&e, "two");
        assert_eq!(run_ok(&e, &second), vec!["0"]);
        t.join().unwrap();
        assert!(dir.join("one").exists() && !dir.join("three").exists());
    });
}

/// A RUN step's upper dir kept as its layer's snapshot must be exactly
/// what unpacking the layer blob gives (a later build that has no
/// snapshot unpacks the blob): files, deletions, an opaque dir, links,
/// owners, setuid, old and clamped mtimes, a fifo, a socket (not in
/// layers), and the mount targets of cache, bind and tmpfs mounts.
#[test]
fn kept_upper_dir_equals_the_unpacked_layer() {
    use kiln::oci::layer::{canonicalize, write_canonical_layer};
    use kiln::sandbox::{Adoption, BindMount, Snapshots, TmpfsMount};
    let e = env();
    let store = Store::open(e.dir.path().join("store")).unwrap();
    let snapshots = Snapshots::new(e.dir.path().join("snapshots"));
    let ctx = e.dir.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(ctx.join("in"), "from the context\n").unwrap();
    let mut spec = sh("set -e
        echo hi > /new.txt && chmod 4755 /new.txt
        mkdir -p /d/sub && echo x > /d/sub/f && chown 1000:1001 /d/sub/f /d/sub
        touch -d @1000 /d/old
        ln -s ../new.txt /d/link
        ln /new.txt /d/hard
        rm /etc/issue /etc/issue.net
        rm -rf /usr/share/doc/apt && mkdir /usr/share/doc/apt && touch /usr/share/doc/apt/new
        chmod 700 /root && echo r > /root/file
        mkfifo /d/fifo
        perl -MIO::Socket::UNIX -e 'IO::Socket::UNIX->new(Local => \"/d/sock\", Listen => 1) or die \"socket: $!\"'
        echo cached > /root/.cache/tool/c
        cat /opt/ctx/src/in > /d/from-ctx
        echo t > /scratch/t
        pwd > /d/pwd");
    spec.workdir = "/work/here".into();
    spec.mounts.push(Mount::Cache(CacheMount::new(
        "adopt-test",
        "/root/.cache/tool",
    )));
    spec.mounts.push(Mount::Bind(BindMount {
        source: ctx.clone(),
        target: "/opt/ctx/src".into(),
        readwrite: false,
    }));
    spec.mounts.push(Mount::Tmpfs(TmpfsMount {
        target: "/scratch".into(),
        size: None,
    }));
    let p = Progress::recording();
    let out = e.sandbox.run(&spec, &p).unwrap();
    assert_eq!(out.exit_code, 0, "{:?}", logs(&p));
    assert!(
        out.upper().join("d/sock").exists(),
        "the socket was not made"
    );
    let mut captured = out.capture().unwrap();
    let entries = canonicalize(std::mem::take(&mut captured.entries));
    // Files made now are clamped to the epoch, /d/old is older than it.
    let opts = LayerOptions {
        compression: Compression::Gzip,
        epoch: 1_700_000_000,
    };
    let layer = write_canonical_layer(&store, &entries, opts).unwrap();
    let blob = &layer.blob.digest;
    let adopted = out
        .into_snapshot(&snapshots, &captured, &entries, blob, opts.epoch)
        .unwrap();
    assert_eq!(adopted, Adoption::Adopted);
    assert_eq!(
        fs::read_dir(&e.sandbox.runs).unwrap().count(),
        0,
        "run dir left"
    );
    let (kept, diff) = support::snapshot::compare_with_unpack(
        &store,
        blob,
        layer.compression,
        &snapshots.path(blob),
        &e.dir.path().join("fresh"),
    );
    assert!(
        diff.is_empty(),
        "snapshot differs from the unpack:\n{}",
        diff.join("\n")
    );
    // What the step did is there, what the sandbox mounted is not.
    for (path, what) in [
        ("etc/issue", "whiteout"),
        ("etc/issue.net", "whiteout"),
        ("d/link", "symlink → ../new.txt"),
        ("d/hard", "nlink 2"),
        ("new.txt", "mode 4755"),
        ("d/sub/f", "1000:1001"),
        ("d/old", "mtime 1000.0"),
        ("d/fifo", "special"),
        ("usr/share/doc/apt", "trusted.overlay.opaque=y"),
        ("root", "mode 700"),
        ("d/pwd", "/work/here"),
        ("d/from-ctx", "from the context"),
    ] {
        let got = kept
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing: {kept:#?}"));
        assert!(got.contains(what), "{path}: {got}");
    }
    assert!(
        kept["new.txt"].contains("mtime 1700000000.0"),
        "{}",
        kept["new.txt"]
    );
    for gone in [
        "d/sock",
        "root/.cache/tool",
        "opt/ctx/src",
        "scratch",
        "proc",
        "dev",
        "etc/hosts",
    ] {
        assert!(!kept.contains_key(gone), "{gone} is in the snapshot");
    }
    // Copied-up dirs carried overlay's own xattrs in the upper dir.
    assert!(
        !kept
            .values()
            .any(|v| v.contains("overlay.") && !v.contains("overlay.opaque=y")),
        "overlay xattrs left: {kept:#?}"
    );
}

/// A layer kiln writes from entries (a Debian package base) gets its snapshot
/// from the tar stream as it is written: it must equal a fresh unpack of
/// the blob.
#[test]
fn snapshot_written_with_its_layer_equals_the_unpacked_layer() {
    use kiln::oci::layer::{Entry, EntryKind, Meta, ScanOptions, scan_dir};
    use kiln::sandbox::Snapshots;
    use std::os::unix::fs::{PermissionsExt, symlink};
    let e = env();
    let store = Store::open(e.dir.path().join("store")).unwrap();
    let snapshots = Snapshots::new(e.dir.path().join("snapshots"));
    let src = e.dir.path().join("src");
    fs::create_dir_all(src.join("d/sub")).unwrap();
    fs::write(src.join("d/sub/f"), "x\n").unwrap();
    fs::write(src.join("new.txt"), "hi\n").unwrap();
    fs::set_permissions(src.join("new.txt"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(src.join("d/sub/f"), src.join("d/sub/g")).unwrap();
    symlink("../new.txt", src.join("d/link")).unwrap();
    std::os::unix::fs::lchown(src.join("d/sub"), Some(1000), Some(1001)).unwrap();
    let mut entries = scan_dir(&src, &ScanOptions::default()).unwrap().entries;
    entries.push(Entry::new("etc/issue", EntryKind::Whiteout, Meta::root(0)).unwrap());
    entries.push(Entry::new("d", EntryKind::Opaque, Meta::root(0)).unwrap());
    let opts = LayerOptions {
        compression: Compression::Gzip,
        epoch: 1_700_000_000,
    };
    let layer = snapshots.write_layer(&store, entries, opts).unwrap();
    let blob = &layer.blob.digest;
    assert!(snapshots.path(blob).is_dir(), "no snapshot written");
    let (kept, diff) = support::snapshot::compare_with_unpack(
        &store,
        blob,
        layer.compression,
        &snapshots.path(blob),
        &e.dir.path().join("fresh"),
    );
    assert!(diff.is_empty(), "{}", diff.join("\n"));
    assert!(kept["d"].contains("trusted.overlay.opaque=y"), "{kept:#?}");
    assert!(kept["etc/issue"].contains("whiteout"), "{kept:#?}");
    assert!(kept["d/sub/g"].contains("nlink 2"), "{kept:#?}");
    // No temp dirs left beside the snapshot.
    assert_eq!(snapshot_dirs(snapshots.root()).len(), 1);
}

/// A file named `.wh.*` is a whiteout to the unpacker, so such an upper
/// dir cannot be the snapshot: nothing is kept, the blob is unpacked later.
#[test]
fn upper_dir_that_cannot_match_its_unpack_is_not_kept() {
    use kiln::oci::layer::{canonicalize, write_canonical_layer};
    use kiln::sandbox::{Adoption, Snapshots};
    let e = env();
    let store = Store::open(e.dir.path().join("store")).unwrap();
    let snapshots = Snapshots::new(e.dir.path().join("snapshots"));
    let out = e
        .sandbox
        .run(
            &sh("mkdir /x && touch /x/.wh.y /x/z"),
            &Progress::recording(),
        )
        .unwrap();
    let mut captured = out.capture().unwrap();
    let entries = canonicalize(std::mem::take(&mut captured.entries));
    let opts = LayerOptions::default();
    let layer = write_canonical_layer(&store, &entries, opts).unwrap();
    let blob = &layer.blob.digest;
    let adopted = out
        .into_snapshot(&snapshots, &captured, &entries, blob, opts.epoch)
        .unwrap();
    assert!(matches!(adopted, Adoption::Fallback(_)), "{adopted:?}");
    assert!(!snapshots.path(blob).exists());
    assert_eq!(fs::read_dir(&e.sandbox.runs).unwrap().count(), 0);
}
