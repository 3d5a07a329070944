//! Language providers, in Nixpacks' detection order (the first match wins;
//! more than one runs only when `providers = [...]` asks for it), plus the
//! Procfile, which always merges in. Each file owns one provider: how it
//! detects the app and the plan it contributes.

use super::context::Ctx;
use super::model::BuildPlan;
use super::versions::Kind;

pub mod clojure;
pub mod cobol;
pub mod crystal;
pub mod dart;
pub mod deno;
pub mod dotnet;
pub mod elixir;
pub mod gleam;
pub mod go;
pub mod haskell;
pub mod java;
pub mod lunatic;
pub mod node;
pub mod php;
pub mod procfile;
pub mod python;
pub mod ruby;
pub mod rust;
pub mod scala;
pub mod scheme;
pub mod staticfile;
pub mod swift;
pub mod zig;

/// A language provider.
pub trait Provider: Sync {
    /// Nixpacks' provider name (`node`, `c#`, …).
    fn name(&self) -> &'static str;
    /// What detection looks for, for the "no provider" message.
    fn looks_for(&self) -> &'static str;
    /// `Some(reason)` when the app is this provider's.
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>>;
    /// The provider's plan.
    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan>;
    /// Labels for `NIXPACKS_METADATA` (Python: `django`, `poetry`, …).
    fn metadata(&self, _ctx: &Ctx) -> Vec<String> {
        Vec::new()
    }
    /// Adjusts the merged plan once every source has spoken (providers,
    /// Procfile, config files, environment): what a provider decides from
    /// the final start command rather than its own. `user` is the plan the
    /// user's configuration wrote, whose phases stay as written.
    fn finish(&self, _plan: &mut BuildPlan, _user: &BuildPlan, _ctx: &Ctx) -> crate::Result<()> {
        Ok(())
    }
    /// Whether the built app is one static binary that needs no Debian
    /// runtime: its runtime stage then starts from scratch with only what
    /// the lowering copies (CA bundle, zoneinfo, init). Asked only when
    /// this provider is the plan's only one and the user added no runtime
    /// package or image.
    fn static_runtime(&self, _plan: &BuildPlan) -> bool {
        false
    }
    /// How the build stage makes the app for `target` while it runs on
    /// the build machine, natively (Go's `GOOS`/`GOARCH`, pip's
    /// `--platform`): the build stage of a foreign-platform build then
    /// runs natively, not under qemu, and only the runtime stage is the
    /// target's. `None`: this provider's build runs on the target platform
    /// (emulated when it is foreign). Asked only for a plan whose only
    /// provider this is, with no `buildImage`, `runImage` or
    /// `runtime = "build"`: what leaves the build stage must be made for
    /// the target, or be architecture-independent (sources, scripts).
    /// `read` gives a file of the build context (a lockfile), `None` when
    /// it is missing.
    fn cross_build(
        &self,
        _plan: &BuildPlan,
        _target: &crate::platform::Platform,
        _read: &dyn Fn(&str) -> Option<String>,
    ) -> Cross {
        Cross::No
    }
}

/// Whether a provider builds natively for a foreign platform.
#[derive(Debug, Clone, PartialEq)]
pub enum Cross {
    /// It does not: its build runs on the target platform.
    No,
    /// It does, this way.
    Build(CrossBuild),
    /// It could, but not this app, for the reason given (a package that
    /// runs an install script): the build runs on the target platform and
    /// progress says why.
    Emulate(String),
}

/// A provider's native build for another platform: see
/// [`Provider::cross_build`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrossBuild {
    /// Variables of the build stage's steps (never in the image).
    pub env: Vec<(String, String)>,
    /// Phases whose commands the cross build replaces: (phase, commands).
    pub cmds: Vec<(String, Vec<String>)>,
}

/// The first line of a build step's output that asks for the build on
/// the target platform (emulated) instead of the native cross build, the
/// reason following it: a cross build that finds it cannot make the app
/// for the target (a Python requirement without a wheel for it) prints
/// it last and fails, and the build runs again emulated.
pub const EMULATE_MARKER: &str = "kiln: build on the target platform:";

/// The reason a failed build's output (an error's text) gives on its
/// [`EMULATE_MARKER`] line.
pub fn emulate_reason(output: &str) -> Option<String> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix(EMULATE_MARKER))
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
}

/// Every provider in detection order.
pub fn all() -> &'static [&'static dyn Provider] {
    &[
        &crystal::Crystal,
        &dotnet::CSharp,
        &dart::Dart,
        &elixir::Elixir,
        &deno::Deno,
        &dotnet::FSharp,
        &clojure::Clojure,
        &gleam::Gleam,
        &go::Go,
        &haskell::Haskell,
        &scheme::Scheme,
        &java::Java,
        &lunatic::Lunatic,
        &scala::Scala,
        &php::Php,
        &ruby::Ruby,
        &node::Node,
        &python::Python,
        &rust::Rust,
        &swift::Swift,
        &staticfile::Staticfile,
        &zig::Zig,
        &cobol::Cobol,
    ]
}

/// A provider by name (`csharp`/`fsharp` accepted for `c#`/`f#`).
pub fn by_name(name: &str) -> Option<&'static dyn Provider> {
    let name = match name {
        "csharp" => "c#",
        "fsharp" => "f#",
        "golang" => "go",
        "static" => "staticfile",
        n => n,
    };
    all().iter().copied().find(|p| p.name() == name)
}

/// A version request found in a file or variable.
#[derive(Debug, Clone)]
pub struct VersionReq {
    pub text: String,
    /// `file:line` or the variable name.
    pub source: String,
    pub kind: Kind,
}

impl VersionReq {
    pub fn new(text: impl Into<String>, source: impl Into<String>, kind: Kind) -> VersionReq {
        VersionReq {
            text: text.into().trim().to_string(),
            source: source.into(),
            kind,
        }
    }
}

/// The first non-empty, non-comment line of a version file.
pub fn version_file(ctx: &Ctx, file: &str) -> Option<VersionReq> {
    let text = ctx.read(file)?;
    text.lines()
        .enumerate()
        .map(|(i, l)| (i, l.trim()))
        .find(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| VersionReq::new(l, format!("{file}:{}", i + 1), Kind::Pin))
}

/// The version of `tool` in `.tool-versions` (asdf/mise).
pub fn tool_versions(ctx: &Ctx, tool: &str) -> Option<VersionReq> {
    let text = ctx.read(".tool-versions")?;
    text.lines().enumerate().find_map(|(i, l)| {
        let mut it = l.split_whitespace();
        (it.next()? == tool)
            .then(|| it.next())
            .flatten()
            .map(|v| VersionReq::new(v, format!(".tool-versions:{}", i + 1), Kind::Pin))
    })
}

/// A version from `KILN_<X>_VERSION` / `NIXPACKS_<X>_VERSION`.
pub fn env_version(ctx: &Ctx, var: &str) -> Option<VersionReq> {
    ctx.env
        .option(var)
        .map(|(v, k)| VersionReq::new(v, k, Kind::Range))
}

/// `file` if it exists, for `onlyIncludeFiles` lists.
pub fn existing(ctx: &Ctx, files: &[&str]) -> Vec<String> {
    files
        .iter()
        .filter(|f| ctx.exists(f))
        .map(|f| f.to_string())
        .collect()
}

/// Declares a toolchain Debian does not ship, installed by `cmd` in setup
/// at a pinned upstream version.
pub fn upstream(plan: &mut BuildPlan, name: &str, version: &str, source: &str, cmd: String) {
    plan.toolchains
        .get_or_insert_with(Vec::new)
        .push(super::model::Toolchain {
            name: name.to_string(),
            version: Some(version.to_string()),
            request: None,
            source: Some(format!("{source}; upstream download (not in Debian)")),
            kind: None,
        });
    let setup = plan.phase_mut("setup");
    let apt = setup.apt_pkgs.get_or_insert_with(Vec::new);
    for p in ["curl", "ca-certificates", "unzip", "xz-utils"] {
        if !apt.iter().any(|x| x == p) {
            apt.push(p.to_string());
        }
    }
    setup.cmds.get_or_insert_with(Vec::new).push(cmd);
}

/// A simple provider's detection: the first of `files` that exists.
pub fn first_file(ctx: &Ctx, files: &[&str]) -> Option<String> {
    files.iter().find(|f| ctx.is_file(f)).map(|f| f.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reason follows the marker on its line, wherever the line is in
    /// a failed step's output; no marker (or no reason) is no reason.
    #[test]
    fn emulate_reason_reads_the_marker_line() {
        let out = format!(
            "ERROR: No matching distribution found for docopt==0.6.2\n  {EMULATE_MARKER} No matching distribution found for docopt==0.6.2 (pip)\nprocess exited with 1"
        );
        assert_eq!(
            emulate_reason(&out).as_deref(),
            Some("No matching distribution found for docopt==0.6.2 (pip)")
        );
        assert_eq!(emulate_reason("ERROR: No matching distribution"), None);
        assert_eq!(emulate_reason(&format!("{EMULATE_MARKER}  \n")), None);
    }
}
