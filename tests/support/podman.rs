//! podman with the flags this kind of machine needs (hybrid cgroups, a
//! 20000 open-file limit): every suite that runs images goes through here.

use std::process::Command;

/// `podman --cgroup-manager cgroupfs` (global flags only).
pub fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(["--cgroup-manager", "cgroupfs"]);
    c
}

/// `podman run` with the runtime, ulimit and network flags; add options
/// (`--rm`, `-d`, `-e`…), then the image and its command.
pub fn run_cmd() -> Command {
    let mut c = podman();
    c.args([
        "run",
        "--runtime",
        "runc",
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=4096:4096",
        "--network",
        "host",
    ]);
    c
}

/// Serialises podman use across test processes (nextest runs tests as
/// separate processes): podman removing one test's image while another
/// pulls or loads the same layer fails with "layer not known".
pub fn lock() -> nix::fcntl::Flock<std::fs::File> {
    let f = std::fs::File::create("/var/tmp/kiln-e2e-podman.lock").unwrap();
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap()
}

/// Waits up to 90 s for an HTTP 200 from the container on `port` whose
/// answer contains `expect`; panics with the container's logs otherwise.
pub fn wait_for_http(container: &str, port: u16, expect: &str, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        if let Some(resp) = super::auto::http_get(port)
            && resp.starts_with("HTTP/1.")
            && resp.contains(" 200 ")
        {
            assert!(resp.contains(expect), "{what}: unexpected answer:\n{resp}");
            return;
        }
        if std::time::Instant::now() > deadline {
            let logs = podman().args(["logs", container]).output().unwrap();
            panic!(
                "{what}: no HTTP 200 on port {port} within 90 s; container logs:\n{}{}",
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}
