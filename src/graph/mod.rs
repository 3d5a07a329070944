//! The build graph: the one IR every frontend (auto plan, Dockerfile)
//! produces and the solver executes.
//!
//! A [`Graph`] is a list of [`Stage`]s; each starts from a [`Base`] (an image
//! reference, a Debian package set, another stage, or `scratch`) and applies
//! [`Step`]s in order: [`Op::Copy`], [`Op::Run`] and [`Op::Config`]
//! changes (Debian packages are a stage's base, never a step). Every step
//! has a cache key ([`key`]) that hashes its parent's key, its canonical
//! definition and the content digests of what it reads. [`deps`] says which stages a target needs and in what order.
//!
//! Execution contract for the solver (what the fields mean):
//! - A stage's image config starts as its base's config with `OnBuild`
//!   cleared (triggers are lowered into steps by the frontend), and each
//!   [`Op::Config`] applies to it ([`config::ImageConfig::apply`]).
//! - A [`Run`] executes with the current config's Env, User (root if
//!   empty), WorkingDir (`/` if empty) and `Shell` already applied to
//!   `command` by the frontend, plus [`Run::build_args`] added to the
//!   environment (they never reach the image config).
//! - `WorkingDir` creates the directory if missing (as Docker does).
//! - Paths in [`Copy::dest`] are absolute; a trailing `/` means "into this
//!   directory".

pub mod config;
pub mod deps;
pub mod key;

use serde::{Deserialize, Serialize};

use crate::oci::digest::Digest;

pub use config::{ConfigChange, Healthcheck, ImageConfig};
pub use key::{CacheKeys, StageKeys};

/// A whole build: stages and the one whose result is the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub stages: Vec<Stage>,
    /// Index of the stage that produces the image.
    pub target: usize,
}

/// A stage: a base and steps on top of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// `AS name` (lower case), if any.
    pub name: Option<String>,
    pub base: Base,
    /// The platform the stage is built for.
    pub platform: crate::platform::Platform,
    pub steps: Vec<Step>,
    /// Where the stage was declared (not part of cache keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

impl Stage {
    /// A display name: the stage name or its index.
    pub fn display_name(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("stage-{index}"))
    }
}

/// Where a stage or step came from, for progress and errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// e.g. `Dockerfile`.
    pub file: String,
    pub line: usize,
    /// The instruction as written, for progress lines (`RUN npm ci`).
    pub text: String,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Base {
    /// An image from a registry or the local store (`FROM debian:bookworm`).
    Image { reference: String },
    /// A root filesystem made of Debian packages.
    Packages(PackageSet),
    /// The result of another stage (index into [`Graph::stages`]).
    Stage(usize),
    /// The empty filesystem.
    Scratch,
}

/// A set of Debian packages from one suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageSet {
    pub suite: String,
    pub packages: Vec<String>,
    /// The base set under the packages (`minimal` by default).
    #[serde(default)]
    pub base: crate::packages::resolve::BaseVariant,
    /// Digest of the lockfile section that pins the versions, when locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<Digest>,
    /// Extra CA certificates trusted in the set's bundle: (file name, PEM),
    /// e.g. a company proxy's CA for the build stage's downloads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_ca: Vec<(String, String)>,
}

impl PackageSet {
    /// The name the solver files the composed image under (in
    /// [`key::ImageDigests`]): the cache key of a package base is the
    /// digest of the image it resolves to today, so a new Debian point
    /// release misses the cache instead of reusing stale layers.
    pub fn reference(&self) -> String {
        let mut pkgs = self.packages.clone();
        pkgs.sort();
        let mut r = format!(
            "debian-packages:{}/{}/{}",
            self.suite,
            serde_json::to_string(&self.base)
                .unwrap_or_default()
                .trim_matches('"'),
            pkgs.join(",")
        );
        if let Some(lock) = &self.lock {
            r.push_str(&format!("+lock:{}", lock.hex()));
        }
        if !self.extra_ca.is_empty() {
            let mut h = crate::oci::digest::Hasher::new();
            for (name, pem) in &self.extra_ca {
                h.update(name.as_bytes());
                h.update(b"\0");
                h.update(pem.as_bytes());
            }
            r.push_str(&format!("+ca:{}", h.finish().0.hex()));
        }
        r
    }
}

/// One step of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// What a step does. The serialized form of an `Op` is its canonical
/// definition in cache keys: changing a field's meaning needs a new
/// `key::KEY_VERSION`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Copy(Copy),
    Run(Run),
    Config(ConfigChange),
}

/// Where a COPY reads from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyFrom {
    /// The build context.
    Context,
    /// Another stage's result.
    Stage(usize),
    /// An image's root filesystem.
    Image(String),
}

/// One thing to copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyItem {
    /// A path or glob, cleaned and `/`-separated: relative to the context
    /// root (`.` for all of it), or absolute in a stage or image.
    Path(String),
    /// A file with inline content (`COPY <<EOF /f`), mode 0644 unless chmod.
    Inline { name: String, content: String },
    /// A URL (ADD), with an optional expected digest.
    Url {
        url: String,
        checksum: Option<String>,
        /// Without a checksum: the sha256 of the content, filled in by the
        /// solver (which downloads before keying) so the key follows it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<Digest>,
    },
}

/// ADD-specific behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddOptions {
    /// Extract local tar archives (default true; never for URLs).
    pub unpack: bool,
    pub keep_git_dir: bool,
}

/// COPY / ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    pub from: CopyFrom,
    pub items: Vec<CopyItem>,
    /// Absolute destination; a trailing `/` means a directory.
    pub dest: String,
    /// `user[:group]` (names resolved in the destination's /etc/passwd).
    pub chown: Option<String>,
    /// Octal mode (`0755`) or symbolic (`u+x`), as written.
    pub chmod: Option<String>,
    pub link: bool,
    /// Patterns (`.dockerignore` syntax) not to copy, matched against paths
    /// relative to each source (a directory's contents relative to it, a
    /// file by its name).
    pub exclude: Vec<String>,
    /// Keep the source's parent directories (`--parents`).
    pub parents: bool,
    pub add: Option<AddOptions>,
    /// Digest of the context files this copy reads (paths, modes, contents,
    /// link targets), when it reads the context.
    pub context_digest: Option<Digest>,
}

impl Copy {
    /// `COPY` of `items` from `from` to `dest` with no option (no
    /// `--chown`, `--chmod`, `--link`, `--exclude`, `--parents`).
    pub fn new(from: CopyFrom, items: Vec<CopyItem>, dest: &str) -> Copy {
        Copy {
            from,
            items,
            dest: dest.to_string(),
            chown: None,
            chmod: None,
            link: false,
            exclude: Vec::new(),
            parents: false,
            add: None,
            context_digest: None,
        }
    }
}

/// `RUN --network=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    #[default]
    Default,
    None,
    Host,
}

/// `RUN --security=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    #[default]
    Sandbox,
    Insecure,
}

/// Cache mount sharing mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    #[default]
    Shared,
    Private,
    Locked,
}

/// Debian's system CA bundle, where a [`Mount::HostCa`] goes: what OpenSSL,
/// GnuTLS and the tools that take `plan::recipe::CA_BUNDLE_VARS` read.
pub const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A `RUN --mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Mount {
    Bind {
        target: String,
        from: CopyFrom,
        source: String,
        readwrite: bool,
    },
    Cache {
        target: String,
        id: String,
        sharing: Sharing,
        /// Seed the cache from a stage/image (`from=`, `source=`).
        from: Option<CopyFrom>,
        source: String,
        readonly: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    Secret {
        id: String,
        /// File path; `None` when only `env` is set.
        target: Option<String>,
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Ssh {
        id: String,
        target: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// The host's CA bundle, read-only over `target` (auto builds' steps,
    /// for networks that intercept TLS). Its content comes from
    /// [`crate::solver::SolveOptions::host_ca`] when the step runs and is
    /// no part of the key: the key records only that the step trusts the
    /// host, so a CA rotation keeps the cache, and the bundle is in no
    /// layer (mounts are never captured).
    HostCa {
        target: String,
    },
    /// A read-only file with inline content (heredoc scripts with `#!`).
    Inline {
        target: String,
        content: String,
        mode: u32,
    },
}

/// RUN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The argv to execute (shell form already wrapped in the shell).
    pub command: Vec<String>,
    /// Build arguments in scope, added to the environment of this command
    /// only (an ENV of the same name wins).
    pub build_args: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub network: Network,
    pub security: Security,
    /// Digest of the context files bind-mounted into the command.
    pub context_digest: Option<Digest>,
}

impl Graph {
    /// The stage index for a name (case-insensitive) or a number.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Some(i) = self
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Some(i);
        }
        name.parse::<usize>()
            .ok()
            .filter(|i| *i < self.stages.len())
    }
}
