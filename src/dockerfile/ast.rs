//! The parsed Dockerfile: instructions with their flags and arguments, as
//! written (variables are expanded later, by lowering, per Docker's scoping).

use super::error::Location;
use super::lexer::{Directives, Heredoc};

/// A parsed Dockerfile.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Dockerfile {
    /// The file name used in error messages.
    pub file: String,
    pub directives: Directives,
    pub instructions: Vec<Instruction>,
    /// Non-fatal findings (location, message).
    pub warnings: Vec<(Location, String)>,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Instruction {
    pub location: Location,
    pub args_location: Location,
    pub end_line: usize,
    /// Upper-case keyword (`RUN`, `COPY`, …).
    pub keyword: String,
    /// The arguments as written (continuations joined).
    pub args: String,
    pub kind: Kind,
}

/// Exec (JSON) or shell form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum Kind {
    From(From),
    Run(Run),
    Copy(Copy),
    /// `(key, value)` pairs as written (quotes not yet removed).
    Env(Vec<(String, String)>),
    /// `(name, default)` as written.
    Arg(Vec<(String, Option<String>)>),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Cmd(Command),
    Entrypoint(Command),
    Label(Vec<(String, String)>),
    Shell(Vec<String>),
    Volume(Vec<String>),
    StopSignal(String),
    Healthcheck(Healthcheck),
    /// The trigger text (as stored in the image config) and its parse.
    Onbuild(String, Box<Instruction>),
    Maintainer(String),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct From {
    pub image: String,
    pub name: Option<String>,
    pub platform: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Run {
    pub command: Command,
    /// Raw `--mount` values (CSV), parsed after variable expansion.
    pub mounts: Vec<String>,
    pub network: Option<String>,
    pub security: Option<String>,
    pub heredocs: Vec<Heredoc>,
}

/// A COPY/ADD source: a path (or glob, or URL for ADD) or an inline heredoc.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum CopySource {
    Path(String),
    Heredoc(Heredoc),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Copy {
    /// ADD rather than COPY.
    pub add: bool,
    pub sources: Vec<CopySource>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub exclude: Vec<String>,
    pub parents: bool,
    /// ADD only.
    pub checksum: Option<String>,
    /// ADD only.
    pub keep_git_dir: bool,
    /// ADD only: `--unpack` (default: unpack local archives, not URLs).
    pub unpack: Option<bool>,
}

/// `HEALTHCHECK NONE` or a check. Durations in nanoseconds (as the image
/// config stores them), `None` when not given.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Healthcheck {
    None,
    Check {
        test: Command,
        interval: Option<u64>,
        timeout: Option<u64>,
        start_period: Option<u64>,
        start_interval: Option<u64>,
        retries: Option<u32>,
    },
}
