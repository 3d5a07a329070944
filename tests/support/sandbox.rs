//! A sandbox in a throw-away dir under /var/tmp, and running a step to its
//! exit code and output lines: what the sandbox-level suites share.

use kiln::progress::{Event, Progress};
use kiln::sandbox::{IdMap, RunSpec, Sandbox};

/// A sandbox with its own run and cache-mount dirs.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub sandbox: Sandbox,
}

/// A fresh [`Env`]; `prefix` names the suite in the temp dir's name.
pub fn env(prefix: &str) -> Env {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .unwrap();
    let sandbox = Sandbox {
        runs: dir.path().join("runs"),
        cache_mounts: dir.path().join("cache-mounts"),
        idmap: IdMap::Host,
    };
    Env { dir, sandbox }
}

/// The step output lines a recording progress handle saw.
pub fn logs(p: &Progress) -> Vec<String> {
    p.events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Log { line, .. } => Some(line),
            _ => None,
        })
        .collect()
}

/// Runs a step; returns its exit code and output lines.
pub fn run(sandbox: &Sandbox, spec: &RunSpec) -> (i32, Vec<String>) {
    let p = Progress::recording();
    let out = sandbox.run(spec, &p).expect("the step starts");
    (out.exit_code, logs(&p))
}
