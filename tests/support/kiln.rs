//! Running the `kiln` binary in a throw-away home: its own data dir, its
//! own cache dir (or the suites' shared warm one), no colour, no inherited
//! `SOURCE_DATE_EPOCH`, no stdin.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Kiln {
    pub dir: tempfile::TempDir,
    cache: PathBuf,
}

impl Kiln {
    /// A fresh home with empty cache and data dirs, readable by other users
    /// (tests that drop privileges).
    pub fn new() -> Kiln {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let cache = dir.path().join("cache");
        Kiln { dir, cache }
    }

    /// A fresh data dir over the shared warm cache ([`super::shared_cache`]).
    pub fn shared() -> Kiln {
        Kiln {
            cache: super::shared_cache(),
            ..Kiln::new()
        }
    }

    pub fn cache(&self) -> &Path {
        &self.cache
    }

    pub fn data(&self) -> PathBuf {
        self.path("data")
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `kiln` with this home's dirs, run from the home.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.env("KILN_CACHE_DIR", &self.cache)
            .env("KILN_DATA_DIR", self.data())
            .env("NO_COLOR", "1")
            .env_remove("SOURCE_DATE_EPOCH")
            .stdin(Stdio::null())
            .current_dir(self.dir.path());
        c
    }

    pub fn kiln(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs kiln, failing the test (with its stderr) unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.kiln(args);
        assert!(
            out.status.success(),
            "kiln {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// [`Kiln::ok`], returning stdout.
    pub fn stdout(&self, args: &[&str]) -> String {
        String::from_utf8(self.ok(args).stdout).unwrap()
    }
}

/// Runs a tool, failing the test with its output unless it succeeds.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (run ./scripts/test, it installs the test tools)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
