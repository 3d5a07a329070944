//! The `BuildPlan` data model: Nixpacks' schema and key names (camelCase,
//! unset fields left out, output order `providers, buildImage, variables,
//! staticAssets, phases, start`) plus kiln's additions after them: the
//! Debian `suite`, resolved `toolchains` with exact versions, build-only
//! variables and secret names. See `docs/plan.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The marker that splices the lower list into a higher one.
pub const SPLICE: &str = "...";
/// Nixpacks' alias of [`SPLICE`].
pub const SPLICE_AUTO: &str = "@auto";

/// True for `"..."` and `"@auto"`.
pub fn is_marker(s: &str) -> bool {
    s == SPLICE || s == SPLICE_AUTO
}

/// A whole plan, as printed by `kiln plan` and read from config files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildPlan {
    /// Providers to run (`"..."` = the detected one). After generation: the
    /// providers that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub providers: Option<Vec<String>>,
    /// Base image of the build stage (unset: kiln's Debian `suite`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_image: Option<String>,
    /// Variables present at build time and in the image (`ENV`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<BTreeMap<String, String>>,
    /// Files written under `/assets/` in the image, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_assets: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<BTreeMap<String, Phase>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartPhase>,

    // kiln additions.
    /// Debian suite the packages come from (`bookworm`, `trixie`, `sid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    /// Language toolchains with the exact version kiln resolved and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolchains: Option<Vec<Toolchain>>,
    /// Variables present during build steps only, never in the image
    /// (what a bare `--env` gives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_variables: Option<BTreeMap<String, String>>,
    /// Names of secrets available to build steps. Values never appear in a
    /// plan, a layer or the image config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<String>>,
    /// Packages the user asked for (`aptPkgs`/`nixPkgs` in the config,
    /// `*_PKGS`, `-p`/`-a`) that stay out of the runtime image: the build
    /// needs them, the app does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_only_pkgs: Option<Vec<String>>,
}

/// One build phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Phase {
    /// Always the map key; left out of the output like `nixpacks plan` does.
    #[serde(default, skip_serializing)]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
    /// Nix package names; kiln maps them to Debian packages (`aptPkgs`).
    #[serde(
        default,
        alias = "nixPackages",
        skip_serializing_if = "Option::is_none"
    )]
    pub nix_pkgs: Option<Vec<String>>,
    #[serde(
        default,
        alias = "nixLibraries",
        skip_serializing_if = "Option::is_none"
    )]
    pub nix_libs: Option<Vec<String>>,
    /// Accepted for compatibility; kiln does not use Nix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nix_overlays: Option<Vec<String>>,
    /// Accepted for compatibility; kiln does not use Nix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nixpkgs_archive: Option<String>,
    /// Debian packages for the build stage.
    #[serde(
        default,
        alias = "aptPackages",
        skip_serializing_if = "Option::is_none"
    )]
    pub apt_pkgs: Option<Vec<String>>,
    #[serde(default, alias = "commands", skip_serializing_if = "Option::is_none")]
    pub cmds: Option<Vec<String>>,
    /// What to copy into `/app` before this phase (unset: everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_include_files: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_directories: Option<Vec<String>>,
    #[serde(default, alias = "envPaths", skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
}

/// How the container starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartPhase {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_image: Option<String>,
    /// What the runtime stage copies from the build stage. Relative paths
    /// are under `/app`, absolute ones (kiln) are copied as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_include_files: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// kiln: Debian packages of the runtime stage (the build toolchain is
    /// not in the final image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apt_pkgs: Option<Vec<String>>,
    /// kiln: what the image is: `slim` (default: a runtime stage with the
    /// runtime packages and the copied outputs) or `build` (the build
    /// stage itself, toolchain and all, as Nixpacks ships it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

/// `start.runtime = "build"`: the image is the build stage.
pub const RUNTIME_BUILD: &str = "build";
/// `start.runtime = "slim"`: the default two-stage image.
pub const RUNTIME_SLIM: &str = "slim";

/// A language toolchain and the version kiln resolved for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Toolchain {
    /// `node`, `python`, `go`, `rust`, …
    pub name: String,
    /// Exact upstream version of the suite's package (unset before resolving).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What was asked for (`>=18`, `3.11`), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Where the request came from (`.nvmrc:1`, `NIXPACKS_NODE_VERSION`,
    /// `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// How to read `request` (a pin, a range or a minimum).
    #[serde(skip)]
    pub kind: Option<super::versions::Kind>,
}

impl Phase {
    pub fn new(name: &str) -> Phase {
        Phase {
            name: Some(name.to_string()),
            depends_on: default_depends_on(name),
            ..Phase::default()
        }
    }

    /// Adds commands (builder style).
    pub fn cmd(mut self, c: impl Into<String>) -> Phase {
        self.cmds.get_or_insert_with(Vec::new).push(c.into());
        self
    }

    pub fn apt(mut self, pkgs: &[&str]) -> Phase {
        let list = self.apt_pkgs.get_or_insert_with(Vec::new);
        list.extend(pkgs.iter().map(|s| s.to_string()));
        self
    }

    pub fn cache(mut self, dirs: &[&str]) -> Phase {
        let list = self.cache_directories.get_or_insert_with(Vec::new);
        list.extend(dirs.iter().map(|s| s.to_string()));
        list.sort();
        list.dedup();
        self
    }

    pub fn path(mut self, p: &str) -> Phase {
        self.paths.get_or_insert_with(Vec::new).push(p.to_string());
        self
    }

    pub fn files(mut self, files: Vec<String>) -> Phase {
        self.only_include_files = Some(files);
        self
    }

    pub fn depends(mut self, deps: &[&str]) -> Phase {
        self.depends_on = Some(deps.iter().map(|s| s.to_string()).collect());
        self
    }

    /// A phase with nothing to run emits nothing.
    pub fn is_noop(&self) -> bool {
        self.cmds.as_ref().is_none_or(|c| c.is_empty())
            && self.paths.as_ref().is_none_or(|p| p.is_empty())
            && self.apt_pkgs.as_ref().is_none_or(|p| p.is_empty())
    }
}

/// Nixpacks' constructor defaults: install after setup, build after install.
pub fn default_depends_on(name: &str) -> Option<Vec<String>> {
    match name {
        "install" => Some(vec!["setup".into()]),
        "build" => Some(vec!["install".into()]),
        _ => None,
    }
}

impl StartPhase {
    pub fn cmd(c: impl Into<String>) -> StartPhase {
        StartPhase {
            cmd: Some(c.into()),
            ..StartPhase::default()
        }
    }

    pub fn runtime(mut self, pkgs: &[&str]) -> StartPhase {
        let list = self.apt_pkgs.get_or_insert_with(Vec::new);
        list.extend(pkgs.iter().map(|s| s.to_string()));
        self
    }

    /// Whether the image is the build stage (`runtime = "build"`).
    pub fn is_build_runtime(&self) -> bool {
        self.runtime.as_deref() == Some(RUNTIME_BUILD)
    }

    pub fn include(mut self, files: &[&str]) -> StartPhase {
        self.only_include_files = Some(files.iter().map(|s| s.to_string()).collect());
        self
    }
}

impl BuildPlan {
    pub fn add_phase(&mut self, phase: Phase) {
        let name = phase.name.clone().unwrap_or_default();
        self.phases
            .get_or_insert_with(BTreeMap::new)
            .insert(name, phase);
    }

    pub fn phase(&self, name: &str) -> Option<&Phase> {
        self.phases.as_ref()?.get(name)
    }

    pub fn phase_mut(&mut self, name: &str) -> &mut Phase {
        self.phases
            .get_or_insert_with(BTreeMap::new)
            .entry(name.to_string())
            .or_insert_with(|| Phase::new(name))
    }

    pub fn set_var(&mut self, k: &str, v: impl Into<String>) {
        self.variables
            .get_or_insert_with(BTreeMap::new)
            .insert(k.to_string(), v.into());
    }

    pub fn set_start(&mut self, start: StartPhase) {
        self.start = Some(start);
    }

    /// Declares a toolchain; `request` is `(text, source, kind)`.
    pub fn add_toolchain(&mut self, name: &str, request: Option<super::providers::VersionReq>) {
        let t = match request {
            Some(r) => Toolchain {
                name: name.to_string(),
                version: None,
                request: Some(r.text),
                source: Some(r.source),
                kind: Some(r.kind),
            },
            None => Toolchain {
                name: name.to_string(),
                source: Some("default".to_string()),
                ..Toolchain::default()
            },
        };
        self.toolchains.get_or_insert_with(Vec::new).push(t);
    }

    pub fn add_asset(&mut self, name: &str, contents: impl Into<String>) {
        self.static_assets
            .get_or_insert_with(BTreeMap::new)
            .insert(name.to_string(), contents.into());
    }

    /// The start command, if any.
    pub fn start_cmd(&self) -> Option<&str> {
        self.start.as_ref()?.cmd.as_deref()
    }

    /// Every build-stage apt package, in phase order, de-duplicated.
    /// Every phase's `paths`, in phase order, without repeats: what goes
    /// before `PATH` in the image.
    pub fn phase_paths(&self, order: &[String]) -> Vec<String> {
        let mut paths: Vec<String> = Vec::new();
        for name in order {
            for p in self
                .phase(name)
                .and_then(|p| p.paths.clone())
                .into_iter()
                .flatten()
            {
                if !paths.contains(&p) {
                    paths.push(p);
                }
            }
        }
        paths
    }

    pub fn all_apt_pkgs(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in self.phases.iter().flat_map(|m| m.values()) {
            for pkg in p.apt_pkgs.iter().flatten() {
                if !out.contains(pkg) {
                    out.push(pkg.clone());
                }
            }
        }
        out
    }
}
