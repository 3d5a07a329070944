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
