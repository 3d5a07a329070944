//! Python tools from PyPI for the tests, in venvs under the shared test
//! cache, made on first use (scripts/install-test-deps makes the same ones
//! ahead of time).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The venv `name` under the test cache with `requirements` installed
/// (pip requirement strings, pinned by the caller); made once per machine.
pub fn venv(name: &str, requirements: &[&str]) -> PathBuf {
    let venv = Path::new(super::debian::CACHE).join(name);
    let ready = venv.join(".kiln-ready");
    if ready.is_file() {
        return venv;
    }
    let _lock = super::podman::lock();
    if ready.is_file() {
        return venv;
    }
    // The system Python: a pyenv build may lack the ssl module pip needs.
    let python = if Path::new("/usr/bin/python3").is_file() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let ok = Command::new(python)
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "cannot make a Python venv at {}: install python3 and python3-venv (apt-get install python3-venv)",
        venv.display()
    );
    let mut pip = Command::new(venv.join("bin/python"));
    pip.args(["-m", "pip", "install", "-q"]).args(requirements);
    // Networks that intercept TLS: pip trusts the host's bundle.
    if Path::new("/etc/ssl/certs/ca-certificates.crt").is_file() {
        pip.args(["--cert", "/etc/ssl/certs/ca-certificates.crt"]);
    }
    let out = pip.output().expect("running pip");
    assert!(
        out.status.success(),
        "pip could not install {requirements:?} from PyPI into {} (network? proxy?):\n{}",
        venv.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&ready, "").unwrap();
    venv
}
