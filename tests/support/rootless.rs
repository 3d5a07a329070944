//! An unprivileged user with subordinate ids, and a kiln binary it can run.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The test user (shared with the sandbox suite, which makes it the same way).
pub const USER: &str = "kilnsbx";

/// Makes the user (with ids 300000-365535 in /etc/subuid and /etc/subgid)
/// when missing; returns its uid and gid.
pub fn user() -> (u32, u32) {
    let exists = Command::new("id")
        .arg(USER)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        let st = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", USER])
            .status()
            .unwrap();
        assert!(st.success(), "useradd failed");
    }
    let subuid = fs::read_to_string("/etc/subuid").unwrap_or_default();
    if !subuid.lines().any(|l| l.starts_with(&format!("{USER}:"))) {
        let st = Command::new("usermod")
            .args([
                "--add-subuids",
                "300000-365535",
                "--add-subgids",
                "300000-365535",
                USER,
            ])
            .status()
            .unwrap();
        assert!(st.success(), "usermod --add-subuids failed");
    }
    let id = |flag: &str| -> u32 {
        let o = Command::new("id").args([flag, USER]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// A copy of the kiln binary in `dir` that the user can execute.
pub fn kiln_in(dir: &Path) -> PathBuf {
    let dest = dir.join("kiln");
    fs::copy(env!("CARGO_BIN_EXE_kiln"), &dest).unwrap();
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).unwrap();
    dest
}
