//! The network of build steps, end to end on a real Debian root filesystem:
//! by default a step has its own network namespace with outbound access
//! (pasta or slirp4netns) and cannot reach the host's loopback services;
//! `host` is an explicit opt-in; `none` is loopback only; a missing helper
//! is an error, never a fallback to the host's network; the helper never
//! outlives its step. Needs root, mmdebstrap, slirp4netns or pasta, and
//! the Debian mirror (deb.debian.org) reachable.
#![cfg(feature = "e2e")]

mod support;

use std::fs;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln::sandbox::{Network, RunSpec, StepCommand};
use support::debian;
use support::sandbox::Env;

fn env() -> Env {
    support::sandbox::env("kiln-e2e-network-")
}

fn bash(script: &str, network: Network) -> RunSpec {
    let mut spec = RunSpec::new(
        vec![debian::base_rootfs()],
        StepCommand::Exec(vec!["bash".into(), "-c".into(), script.into()]),
    );
    spec.network = network;
    spec
}

/// Runs a step; returns its exit code and output lines.
fn run(e: &Env, spec: &RunSpec) -> (i32, Vec<String>) {
    support::sandbox::run(&e.sandbox, spec)
}

/// A server on the host's loopback that records whether anyone connected.
fn loopback_server() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn was_contacted(l: &TcpListener) -> bool {
    match l.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    }
}

/// Tries the host's loopback port through every address that could lead
/// there: 127.0.0.1, the namespace's default gateway (pasta maps it to the
/// host's loopback unless told not to) and slirp4netns' host alias
/// 10.0.2.2. Prints `REACHED addr` or `refused addr` per address.
fn probe_script(port: u16) -> String {
    format!(
        r#"gw=$(awk '$2 == "00000000" {{ print $3 }}' /proc/net/route | head -1)
addrs="127.0.0.1 10.0.2.2"
if [ -n "$gw" ]; then
  addrs="$addrs $(printf '%d.%d.%d.%d' 0x${{gw:6:2}} 0x${{gw:4:2}} 0x${{gw:2:2}} 0x${{gw:0:2}})"
  echo "gateway"
fi
for a in $addrs; do
  if timeout 5 bash -c "exec 3<>/dev/tcp/$a/{port}" 2>/dev/null; then echo "REACHED $a"; else echo "refused $a"; fi
done"#
    )
}

#[test]
fn the_default_network_cannot_reach_the_hosts_loopback_and_host_network_can() {
    let e = env();
    let (listener, port) = loopback_server();
    let (code, lines) = run(&e, &bash(&probe_script(port), Network::Private));
    assert_eq!(code, 0, "{lines:#?}");
    assert!(
        lines.iter().any(|l| l == "gateway"),
        "the private network has no default route: {lines:#?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("refused ")).count(),
        3,
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("REACHED")),
        "{lines:#?}"
    );
    assert!(
        !was_contacted(&listener),
        "the host's loopback server got a connection"
    );
    // RunSpec's default is the private network.
    assert_eq!(
        RunSpec::new(vec![], StepCommand::Shell("true".into())).network,
        Network::Private
    );

    // The same probe on the host's network reaches it (the check can fail).
    let (code, lines) = run(&e, &bash(&probe_script(port), Network::Host));
    assert_eq!(code, 0, "{lines:#?}");
    assert!(
        lines.contains(&"REACHED 127.0.0.1".to_string()),
        "{lines:#?}"
    );
    assert!(was_contacted(&listener));
}

/// Fetches the bookworm Release file from the Debian mirror over HTTP
/// (bash's /dev/tcp: the minbase image has no curl), after resolving the
/// mirror's name with the step's resolv.conf.
const MIRROR_FETCH: &str = r#"getent hosts deb.debian.org >/dev/null || { echo "no DNS"; exit 3; }
exec 3<>/dev/tcp/deb.debian.org/80 || exit 4
printf 'GET /debian/dists/bookworm/Release HTTP/1.1\r\nHost: deb.debian.org\r\nConnection: close\r\n\r\n' >&3
timeout 60 cat <&3 | tr -d '\r' | grep -E '^(HTTP/|Origin:|Codename:)'"#;

#[test]
fn the_default_network_downloads_from_a_package_mirror_with_working_dns() {
    let e = env();
    let (code, lines) = run(&e, &bash(MIRROR_FETCH, Network::Private));
    assert_eq!(code, 0, "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.starts_with("HTTP/1.1 200")),
        "{lines:#?}"
    );
    assert!(lines.contains(&"Origin: Debian".to_string()), "{lines:#?}");
    assert!(
        lines.contains(&"Codename: bookworm".to_string()),
        "{lines:#?}"
    );
    // The step's resolv.conf names no loopback resolver (it would be the
    // namespace's own loopback).
    let (code, lines) = run(
        &e,
        &bash("grep '^nameserver' /etc/resolv.conf", Network::Private),
    );
    assert_eq!(code, 0, "{lines:#?}");
    assert!(!lines.is_empty());
    for l in &lines {
        let addr = l.split_whitespace().nth(1).unwrap();
        let ip: std::net::IpAddr = addr.parse().unwrap();
        assert!(!ip.is_loopback(), "{l}");
    }
}

#[test]
fn network_none_has_only_loopback() {
    let e = env();
    let script = format!(
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '\n{}",
        "if timeout 10 bash -c 'exec 3<>/dev/tcp/deb.debian.org/80' 2>/dev/null; then echo OUT; else echo no-way-out; fi"
    );
    let (code, lines) = run(&e, &bash(&script, Network::None));
    assert_eq!(code, 0, "{lines:#?}");
    assert_eq!(lines, vec!["lo", "no-way-out"]);
    // The private network has one more interface: the helper's tap device.
    let (code, lines) = run(&e, &bash(&script, Network::Private));
    assert_eq!(code, 0, "{lines:#?}");
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(lines[2], "OUT", "{lines:#?}");
}

fn kiln_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

#[test]
fn a_missing_helper_is_an_error_that_names_the_fix_not_a_fallback_to_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, port) = loopback_server();
    let rootfs = debian::base_rootfs();
    let kiln = |network: Option<&str>| {
        let mut c = Command::new(kiln_bin());
        c.env("KILN_CACHE_DIR", dir.path().join("cache"))
            // No pasta, no slirp4netns.
            .env("PATH", dir.path().join("empty-bin"))
            .env_remove(kiln::sandbox::NETWORK_HELPER_ENV)
            .args(["--progress", "quiet", "run"]);
        if let Some(n) = network {
            c.args(["--network", n]);
        }
        c.arg("--rootfs")
            .arg(&rootfs)
            .args([
                "/bin/bash",
                "-c",
                &format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo reached"),
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = kiln(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("apt-get install passt"), "{stderr}");
    assert!(stderr.contains("--network host"), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        !was_contacted(&listener),
        "the step ran on the host's network"
    );
    // The explicit opt-in still works without a helper.
    let out = kiln(Some("host"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "reached\n");
    assert!(was_contacted(&listener));
    // A forced helper that is missing says so.
    let out = Command::new(kiln_bin())
        .env("KILN_CACHE_DIR", dir.path().join("cache"))
        .env("PATH", dir.path().join("empty-bin"))
        .env(kiln::sandbox::NETWORK_HELPER_ENV, "pasta")
        .args(["--progress", "quiet", "run", "--rootfs"])
        .arg(&rootfs)
        .arg("/bin/true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("KILN_NETWORK_HELPER") && stderr.contains("pasta"),
        "{stderr}"
    );
}

/// `(pid, ppid, state, comm)` of every process.
fn processes() -> Vec<(i32, i32, char, String)> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // comm is in parentheses and may contain spaces.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let mut rest = stat[close + 2..].split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = rest.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        out.push((pid, ppid, state, comm));
    }
    out
}

/// Live descendants of `root`.
fn descendants(root: i32) -> Vec<(i32, String)> {
    let all = processes();
    let mut found = vec![root];
    let mut out = Vec::new();
    let mut i = 0;
    while i < found.len() {
        for (pid, ppid, state, comm) in &all {
            if *ppid == found[i] && *state != 'Z' {
                found.push(*pid);
                out.push((*pid, comm.clone()));
            }
        }
        i += 1;
    }
    out
}

/// pasta is a link to passt, which may exec `passt.avx2`.
fn is_helper(comm: &str) -> bool {
    comm == "slirp4netns" || comm.starts_with("pasta") || comm.starts_with("passt")
}

fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').and_then(|i| s[i + 2..].chars().next()))
        .is_some_and(|state| state != 'Z')
}

#[test]
fn the_helper_stops_with_its_step_and_when_kiln_is_killed() {
    // In-process: once the step has returned, nothing it started is left.
    let e = env();
    let (code, lines) = run(&e, &bash("echo up", Network::Private));
    assert_eq!((code, lines), (0, vec!["up".to_string()]));
    let me = std::process::id() as i32;
    assert_eq!(descendants(me), vec![], "processes left by the step");
    let runs: Vec<_> = fs::read_dir(&e.sandbox.runs).unwrap().collect();
    assert!(runs.is_empty(), "run dirs left: {runs:?}");

    // kiln killed (SIGKILL: no cleanup code runs) in the middle of a step.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(kiln_bin())
        .env("KILN_CACHE_DIR", dir.path())
        .args(["--progress", "quiet", "run", "--rootfs"])
        .arg(debian::base_rootfs())
        .args(["/bin/sleep", "120"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let kiln_pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (helper, sleeper) = loop {
        let d = descendants(kiln_pid);
        let helper = d.iter().find(|(_, c)| is_helper(c)).map(|(p, _)| *p);
        let sleeper = d.iter().find(|(_, c)| c == "sleep").map(|(p, _)| *p);
        if let (Some(h), Some(s)) = (helper, sleeper) {
            break (h, s);
        }
        assert!(
            Instant::now() < deadline,
            "no helper and step under kiln: {d:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(helper) || alive(sleeper) {
        assert!(
            Instant::now() < deadline,
            "left running after kiln was killed: helper {} step {}",
            alive(helper),
            alive(sleeper)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// `kiln build`: RUN --network=host needs the network.host entitlement;
// --network sets the default of every step.

fn build(k: &support::kiln::Kiln, dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--progress", "plain", "build", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    k.kiln(&args)
}

#[test]
fn run_network_host_needs_the_entitlement_and_build_network_sets_the_default() {
    let k = support::kiln::Kiln::new();
    support::base::local_debian(&k.path("data"));
    let (listener, port) = loopback_server();
    let probe = format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' && echo reached > /reached");

    let explicit = k.path("explicit");
    fs::create_dir_all(&explicit).unwrap();
    fs::write(
        explicit.join("Dockerfile"),
        format!("FROM debian:bookworm\nRUN --network=host {probe}\n"),
    )
    .unwrap();
    let out = build(&k, &explicit, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("network.host") && stderr.contains("--allow network.host"),
        "{stderr}"
    );
    assert!(!was_contacted(&listener));
    let out = build(&k, &explicit, &["--allow", "network.host"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(was_contacted(&listener));
    let out = build(&k, &explicit, &["--allow", "network.bogus"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value"));

    // A step without --network: private by default (the connection is
    // refused, the step fails), the host's with `kiln build --network host`.
    let implicit = k.path("implicit");
    fs::create_dir_all(&implicit).unwrap();
    fs::write(
        implicit.join("Dockerfile"),
        format!("FROM debian:bookworm\nRUN {probe}\n"),
    )
    .unwrap();
    let out = build(&k, &implicit, &["--no-cache"]);
    assert!(!out.status.success());
    assert!(!was_contacted(&listener));
    let out = build(&k, &implicit, &["--no-cache", "--network", "host"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(was_contacted(&listener));
}

// ---------------------------------------------------------------------------
// Rootless: the helper runs as the user and joins the step's user namespace.

/// Whether the test user can open /dev/net/tun (udev on Debian makes it
/// 0666; containers and minimal VMs may leave it 0600).
fn tun_usable_by(uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/dev/net/tun")
        .is_ok_and(|m| m.mode() & 0o006 == 0o006 || (m.uid() == uid && m.mode() & 0o600 == 0o600))
}

#[test]
fn rootless_steps_get_the_private_network_or_an_error_naming_the_cause() {
    let (uid, gid) = support::rootless::user();
    let dir = tempfile::Builder::new()
        .prefix("kiln-e2e-network-rootless-")
        .tempdir_in("/var/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    support::base::local_debian(&data);
    let cache = dir.path().join("cache");
    fs::create_dir(&cache).unwrap();
    let st = Command::new("chown")
        .args(["-R", &format!("{uid}:{gid}")])
        .arg(&data)
        .arg(&cache)
        .status()
        .unwrap();
    assert!(st.success());
    let kiln = support::rootless::kiln_in(dir.path());
    let (listener, port) = loopback_server();
    let run_as_user = |helper: Option<&str>, network: &str, script: &str| {
        let mut c = Command::new("runuser");
        c.args(["-u", support::rootless::USER, "--", "env"])
            .arg(format!("KILN_CACHE_DIR={}", cache.display()))
            .arg(format!("KILN_DATA_DIR={}", data.display()));
        if let Some(h) = helper {
            c.arg(format!("{}={h}", kiln::sandbox::NETWORK_HELPER_ENV));
        }
        c.arg(&kiln)
            .args(["--progress", "quiet", "run", "--network", network])
            .args(["debian:bookworm", "bash", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let script = format!("{}\n{MIRROR_FETCH}", probe_script(port));
    for helper in [None, Some("pasta"), Some("slirp4netns")] {
        let out = run_as_user(helper, "default", &script);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if tun_usable_by(uid) {
            assert!(out.status.success(), "{helper:?}: {stdout}\n{stderr}");
            assert!(!stdout.contains("REACHED"), "{helper:?}: {stdout}");
            assert!(stdout.contains("refused 127.0.0.1"), "{helper:?}: {stdout}");
            assert!(stdout.contains("Origin: Debian"), "{helper:?}: {stdout}");
        } else {
            // The helper cannot open the tap device: the step does not run,
            // and the error says why and what else to do.
            assert!(!out.status.success(), "{helper:?}: {stdout}");
            assert!(stdout.is_empty(), "{helper:?}: {stdout}");
            assert!(
                stderr.contains("/dev/net/tun") && stderr.contains("--network host"),
                "{helper:?}: {stderr}"
            );
        }
        assert!(!was_contacted(&listener), "{helper:?}");
    }
    // The opt-in reaches the host's loopback, rootless too.
    let out = run_as_user(
        None,
        "host",
        &format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo reached"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(was_contacted(&listener));
}
