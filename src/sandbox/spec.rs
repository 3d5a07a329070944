//! What a sandboxed step is: command, environment, user, mounts, network.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::bail;

use crate::Result;

/// The command of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepCommand {
    /// Exec form: argv, the program looked up in the step's `PATH`.
    Exec(Vec<String>),
    /// Shell form: run by `/bin/sh -c`.
    Shell(String),
}

impl StepCommand {
    /// The argv that is executed.
    pub fn argv(&self) -> Vec<String> {
        match self {
            StepCommand::Exec(v) => v.clone(),
            StepCommand::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        }
    }
}

/// The step's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Network {
    /// Its own network namespace with outbound access through a user-mode
    /// network stack (pasta or slirp4netns); the host's loopback services
    /// are out of reach. BuildKit's and `docker run`'s default.
    #[default]
    #[cfg_attr(feature = "cli", value(name = "default", alias = "private"))]
    Private,
    /// A private network namespace with only loopback.
    None,
    /// The host's network, loopback services included: an explicit opt-in.
    Host,
}

/// Where the step's stdout/stderr go. Either way the step runs in a
/// session of its own with no controlling terminal: it cannot open kiln's
/// terminal as /dev/tty nor push input into it (TIOCSTI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Io {
    /// Both streams, merged, line by line to the step's progress task; stdin is /dev/null.
    #[default]
    Log,
    /// The step shares kiln's stdin, stdout and stderr (`kiln run`): it
    /// reads and writes a terminal kiln has, but as `docker run -i`
    /// without `-t` (no job control, Ctrl-C stops kiln, which kills it).
    Inherit,
}

/// BuildKit's `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    /// Any number of steps use the directory at once.
    #[default]
    Shared,
    /// One step at a time; others wait.
    Locked,
    /// A step that finds the directory in use gets a fresh, throw-away one.
    Private,
}

impl std::str::FromStr for Sharing {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "shared" => Ok(Sharing::Shared),
            "locked" => Ok(Sharing::Locked),
            "private" => Ok(Sharing::Private),
            _ => bail!("unknown cache sharing {s:?}: use shared, locked or private"),
        }
    }
}

/// A persistent directory kept between steps and builds, outside any image.
#[derive(Debug, Clone)]
pub struct CacheMount {
    /// Identifies the directory (BuildKit's `id=`; defaults to the target).
    pub id: String,
    pub target: PathBuf,
    pub sharing: Sharing,
    /// Owner and mode given to the directory when it is first created.
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// A directory whose contents fill the cache dir when it is first
    /// created (`from=`/`source=`, as BuildKit); ignored afterwards.
    pub seed: Option<PathBuf>,
}

impl CacheMount {
    pub fn new(id: impl Into<String>, target: impl Into<PathBuf>) -> CacheMount {
        CacheMount {
            id: id.into(),
            target: target.into(),
            sharing: Sharing::Shared,
            uid: 0,
            gid: 0,
            mode: 0o755,
            seed: None,
        }
    }
}

/// A secret file: lives in memory (tmpfs) only, never in a layer or a log.
#[derive(Clone)]
pub struct SecretMount {
    pub id: String,
    /// Defaults to `/run/secrets/ID`.
    pub target: Option<PathBuf>,
    pub value: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl SecretMount {
    pub fn new(id: impl Into<String>, value: impl Into<Vec<u8>>) -> SecretMount {
        SecretMount {
            id: id.into(),
            target: None,
            value: value.into(),
            uid: 0,
            gid: 0,
            mode: 0o400,
        }
    }

    pub fn target(&self) -> PathBuf {
        self.target
            .clone()
            .unwrap_or_else(|| PathBuf::from("/run/secrets").join(&self.id))
    }
}

// Never print a secret's value.
impl std::fmt::Debug for SecretMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretMount")
            .field("id", &self.id)
            .field("target", &self.target())
            .field("value", &"<redacted>")
            .finish()
    }
}

/// A host directory or file (build context, another stage's rootfs…).
#[derive(Debug, Clone)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    /// Read-only unless set.
    pub readwrite: bool,
}

/// A fresh tmpfs.
#[derive(Debug, Clone)]
pub struct TmpfsMount {
    pub target: PathBuf,
    /// Bytes; the kernel default (half of RAM) when unset.
    pub size: Option<u64>,
}

/// A mount in the step's filesystem. Mount points never reach the layer.
#[derive(Debug, Clone)]
pub enum Mount {
    Cache(CacheMount),
    Secret(SecretMount),
    Bind(BindMount),
    Tmpfs(TmpfsMount),
}

impl Mount {
    /// Where the mount appears inside the step.
    pub fn target(&self) -> PathBuf {
        match self {
            Mount::Cache(c) => c.target.clone(),
            Mount::Secret(s) => s.target(),
            Mount::Bind(b) => b.target.clone(),
            Mount::Tmpfs(t) => t.target.clone(),
        }
    }
}

/// Everything about one step.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The progress task's name (e.g. `RUN npm ci`).
    pub name: String,
    /// Root filesystem layers as directories, bottom-most first (image order).
    pub lowers: Vec<PathBuf>,
    pub command: StepCommand,
    /// `KEY=VALUE` pairs; `PATH` and `HOME` get defaults when missing.
    pub env: Vec<(String, String)>,
    /// Absolute; created when missing (as Docker's `WORKDIR` does).
    pub workdir: PathBuf,
    /// `name`, `uid`, `name:group`, `uid:gid`… resolved in the rootfs' /etc/passwd and /etc/group.
    pub user: Option<String>,
    pub hostname: String,
    /// Lines added to the step's `/etc/hosts` (buildx's `--add-host`).
    pub extra_hosts: Vec<(String, std::net::IpAddr)>,
    pub mounts: Vec<Mount>,
    pub network: Network,
    pub io: Io,
    /// `RUN --security=insecure` with the `security.insecure` entitlement:
    /// a root step keeps every capability (CAP_SYS_ADMIN included) and sees
    /// /proc unmasked and writable. It is root on the host; the caller
    /// must have been allowed to grant that.
    pub privileged: bool,
    /// Set it (e.g. from a SIGINT handler) to kill the step's process tree.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl RunSpec {
    pub fn new(lowers: Vec<PathBuf>, command: StepCommand) -> RunSpec {
        let full = match &command {
            StepCommand::Exec(v) => format!("RUN {}", v.join(" ")),
            StepCommand::Shell(s) => format!("RUN {s}"),
        };
        // One short line: it names the step in progress output and errors.
        let flat = full.split_whitespace().collect::<Vec<_>>().join(" ");
        let name = if flat.chars().count() > 72 {
            format!("{}…", flat.chars().take(71).collect::<String>())
        } else {
            flat
        };
        RunSpec {
            name,
            lowers,
            command,
            env: Vec::new(),
            workdir: PathBuf::from("/"),
            user: None,
            hostname: "kiln".into(),
            extra_hosts: Vec::new(),
            mounts: Vec::new(),
            network: Network::Private,
            io: Io::Log,
            privileged: false,
            cancel: None,
        }
    }

    /// Checks what can be checked before anything is started.
    pub fn validate(&self) -> Result<()> {
        if self.command.argv().first().is_none_or(|p| p.is_empty()) {
            bail!("{}: no command given: give a program to run", self.name);
        }
        if !self.workdir.is_absolute() {
            bail!(
                "working directory {:?} is not absolute: use a path starting with /",
                self.workdir
            );
        }
        for (k, _) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                bail!("invalid environment variable name {k:?}: use NAME=VALUE");
            }
        }
        for m in &self.mounts {
            let t = m.target();
            if !t.is_absolute() {
                bail!(
                    "mount target {} is not absolute: use a path starting with /",
                    t.display()
                );
            }
            if t.components().any(|c| c == std::path::Component::ParentDir) {
                bail!("mount target {} contains ..", t.display());
            }
            if t.components().count() < 2 {
                bail!("cannot mount over the root directory (target /)");
            }
            match m {
                Mount::Bind(b) if !b.source.exists() => {
                    bail!("bind mount source {} does not exist", b.source.display())
                }
                Mount::Cache(c) if c.id.is_empty() || c.id.contains('\0') => {
                    bail!("cache mount at {} has an empty id", c.target.display())
                }
                Mount::Secret(s) if s.id.is_empty() || s.id.contains('/') => bail!(
                    "secret id {:?} is invalid: use a non-empty name without /",
                    s.id
                ),
                _ => {}
            }
        }
        if self.hostname.is_empty() || self.hostname.len() > 64 {
            bail!("hostname {:?} must be 1 to 64 characters", self.hostname);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec::new(vec![], StepCommand::Shell("true".into()))
    }

    fn err(s: &RunSpec) -> String {
        s.validate().unwrap_err().to_string()
    }

    #[test]
    fn bad_specs_are_refused_before_anything_runs() {
        assert!(spec().validate().is_ok());
        let mut s = spec();
        s.command = StepCommand::Exec(vec![]);
        assert!(err(&s).contains("no command"));
        let mut s = spec();
        s.workdir = "app".into();
        assert!(err(&s).contains("not absolute"));
        let mut s = spec();
        s.env.push(("A=B".into(), "x".into()));
        assert!(err(&s).contains("invalid environment variable name"));
        for target in ["rel", "/", "/a/../b"] {
            let mut s = spec();
            s.mounts.push(Mount::Tmpfs(TmpfsMount {
                target: target.into(),
                size: None,
            }));
            assert!(s.validate().is_err(), "{target}");
        }
        let mut s = spec();
        s.mounts.push(Mount::Secret(SecretMount::new("a/b", "v")));
        assert!(err(&s).contains("secret id"));
        let mut s = spec();
        s.mounts.push(Mount::Bind(BindMount {
            source: "/nonexistent/kiln".into(),
            target: "/x".into(),
            readwrite: false,
        }));
        assert!(err(&s).contains("does not exist"));
    }

    #[test]
    fn names_are_one_short_line_and_secrets_never_debug_printed() {
        let s = RunSpec::new(
            vec![],
            StepCommand::Shell(format!("a\n  b {}", "x".repeat(200))),
        );
        assert!(s.name.starts_with("RUN a b x") && s.name.chars().count() == 72);
        let secret = SecretMount::new("tok", "hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(secret.target(), PathBuf::from("/run/secrets/tok"));
        assert_eq!("locked".parse::<Sharing>().unwrap(), Sharing::Locked);
        assert!("sometimes".parse::<Sharing>().is_err());
    }
}
