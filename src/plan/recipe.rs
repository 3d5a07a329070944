//! A [`BuildPlan`] as typed steps: the one place that decides what an auto
//! build does. Two small printers read it: [`super::lower`] to the build
//! graph `kiln build` runs, [`super::dockerfile`] to the Dockerfile
//! `kiln dockerfile` writes for Docker, BuildKit and buildah. Whatever one
//! image gets (tini as PID 1, the scratch runtime of a static binary,
//! `SOURCE_DATE_EPOCH`, the `/etc/passwd` account of `start.user`, the
//! shared-library check), the other gets too.
//!
//! Two stages, each a base and its steps:
//!
//! 1. `build`: a `minbase` Debian package set (a shell, coreutils, tar,
//!    grep… that build scripts expect) plus every phase's `aptPkgs`. Each
//!    phase copies its inputs just before it runs: `onlyIncludeFiles`
//!    (manifests and lockfiles, so a source edit keeps the install step
//!    cached), or the whole source for the first phase without a list.
//!    `cacheDirectories` become cache mounts, build secrets are mounted at
//!    `/run/secrets/NAME` (and given as the variable `NAME`), build-only
//!    variables are step arguments (never in the image config).
//! 2. `runtime`: a `minimal` package set with the start phase's `aptPkgs`
//!    (or the plan's `runImage`; the build stage itself for
//!    `runtime = "build"`; scratch for a static binary), then only what the
//!    start command needs (`start.onlyIncludeFiles`, default the app dir),
//!    the plan's variables, `start.user` and the start command as tini's
//!    child.

use anyhow::bail;

use super::BuildPlan;
use super::model::StartPhase;
use crate::Result;
use crate::error::{CodedError, code};
use crate::packages::image::PATH;
pub use crate::packages::resolve::BaseVariant as PackageBase;

/// Where the app lives in both stages (Nixpacks' `/app`).
pub const APP_DIR: &str = "/app";

/// Where `staticAssets` are written in the image.
pub const ASSETS_DIR: &str = "/assets";

/// The runtime image's PID 1 (Debian's `tini`), the start command its child.
/// tini forwards SIGTERM to the app (a process that is PID 1 itself
/// ignores every signal it installed no handler for, so a plain
/// `node server.js` would never stop) and reaps zombies.
pub const INIT: &[&str] = &["/usr/bin/tini", "--"];

/// Build-step variables that make language tools trust the system CA
/// bundle, set when the steps trust the host's bundle or extra CAs are
/// given (`--ca-cert`).
pub const CA_BUNDLE_VARS: &[(&str, &str)] = &[
    ("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"),
    ("NODE_EXTRA_CA_CERTS", "/etc/ssl/certs/ca-certificates.crt"),
    ("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"),
    ("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"),
    ("CARGO_HTTP_CAINFO", "/etc/ssl/certs/ca-certificates.crt"),
    ("GIT_SSL_CAINFO", "/etc/ssl/certs/ca-certificates.crt"),
    ("UV_NATIVE_TLS", "1"),
];

/// Appended to `PATH` in both stages: Debian installs some commands
/// (cowsay, fortune, sl) in /usr/games, which root's default PATH leaves
/// out.
const GAMES: &str = "/usr/games";

/// An empty directory the build stage makes for the static runtime's /tmp.
pub const EMPTY_DIR: &str = "/.kiln-empty";

/// What the static runtime copies out of the build stage besides the app:
/// a static binary needs no libc or shell, only the CA bundle, zoneinfo
/// and the init.
pub const STATIC_FILES: &[(&str, &str)] = &[
    (
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/ssl/certs/ca-certificates.crt",
    ),
    ("/usr/share/zoneinfo", "/usr/share/zoneinfo"),
    ("/usr/bin/tini-static", INIT[0]),
];

/// What the printers add to the plan's decisions.
pub struct RecipeOptions<'a> {
    /// Extra CA certificates (file name, PEM) trusted in the build stage.
    pub build_ca: Vec<(String, String)>,
    /// The build steps trust the host's CA bundle (mounted, never copied).
    pub host_ca: bool,
    /// Whether a context path exists: phases' `onlyIncludeFiles` name what
    /// a provider may read, and only what exists is copied.
    pub exists: &'a dyn Fn(&str) -> bool,
}

/// The plan as two stages of typed steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    pub suite: String,
    pub build: StageRecipe,
    pub runtime: StageRecipe,
    /// The start command as given (the runtime's `Cmd` is its exec form).
    pub start_cmd: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StageRecipe {
    pub name: &'static str,
    pub base: RecipeBase,
    pub steps: Vec<RecipeStep>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecipeBase {
    /// Debian packages of the plan's suite, over `variant`.
    Packages {
        packages: Vec<String>,
        variant: PackageBase,
        /// Extra CAs trusted while the packages are configured (build only).
        extra_ca: Vec<(String, String)>,
    },
    /// An image the plan names (`buildImage`, `runImage`).
    Image(String),
    /// The build stage (`runtime = "build"`).
    BuildStage,
    /// Nothing (a static binary's runtime).
    Scratch,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecipeStep {
    Workdir(String),
    /// The whole environment the plan sets (`PATH` included, complete).
    Env(Vec<(String, String)>),
    /// A path of the build context copied to `dest`, before `phase`.
    CopyContext {
        src: String,
        dest: String,
        phase: String,
    },
    /// A phase's command.
    Run {
        cmd: String,
        phase: String,
        /// Step arguments: build-only variables, never in the image.
        args: Vec<(String, String)>,
        /// Absolute cache mount targets.
        caches: Vec<String>,
        /// Secret ids, mounted at `/run/secrets/ID` and given as `ID`.
        secrets: Vec<String>,
        /// The host's CA bundle is mounted over the system one.
        host_ca: bool,
    },
    /// A script kiln wrote, shown as `label` rather than its body.
    Script {
        cmd: String,
        phase: String,
        label: Option<String>,
    },
    /// A path of the build stage copied into this one.
    CopyBuild {
        src: String,
        dest: String,
        chmod: Option<String>,
    },
    /// `staticAssets`: (file name, content) under [`ASSETS_DIR`].
    Assets(Vec<(String, String)>),
    /// `PORT` when it is a port number.
    Expose(String),
    User(String),
    Entrypoint(Vec<String>),
    Cmd(Vec<String>),
}

/// Decides every step of the build of `plan`.
pub fn recipe(plan: &BuildPlan, opts: &RecipeOptions) -> Result<Recipe> {
    let start = plan.start.clone().unwrap_or_default();
    let start_cmd = start_command(plan);
    let suite = plan.suite.clone().unwrap_or_else(|| "trixie".to_string());
    let order = super::phase_order(plan)?;

    // Variables: the plan's (image config and steps), PATH with the
    // phases' paths first, build-only ones as step arguments.
    let paths = plan.phase_paths(&order);
    let path_value = if paths.is_empty() {
        format!("{PATH}:{GAMES}")
    } else {
        format!("{}:{PATH}:{GAMES}", paths.join(":"))
    };
    let mut env: Vec<(String, String)> = plan
        .variables
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.push(("PATH".to_string(), path_value));
    let mut args: Vec<(String, String)> = plan
        .build_variables
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Tools that follow reproducible-builds.org (pip's and compileall's
    // hash-based .pyc files, gzip, many compilers) take the layers' epoch.
    if !args.iter().any(|(k, _)| k == "SOURCE_DATE_EPOCH") {
        args.push((
            "SOURCE_DATE_EPOCH".to_string(),
            crate::oci::layer::source_date_epoch()?.to_string(),
        ));
    }
    if !opts.build_ca.is_empty() || opts.host_ca {
        // Tools that carry their own CA list (uv, cargo, requests) are
        // pointed at the system bundle, which holds the extra CAs.
        for (k, v) in CA_BUNDLE_VARS {
            if !args.iter().any(|(bk, _)| bk == k) {
                args.push((k.to_string(), v.to_string()));
            }
        }
    }
    let secrets: Vec<String> = plan.secrets.iter().flatten().cloned().collect();

    // Stage 0: build.
    let mut build_pkgs = vec!["ca-certificates".to_string()];
    for p in plan.all_apt_pkgs() {
        if !build_pkgs.contains(&p) {
            build_pkgs.push(p);
        }
    }
    let static_rt = is_static(plan);
    let build_rt = start.is_build_runtime();
    if build_rt && !build_pkgs.iter().any(|b| b == "tini") {
        // The build stage is the image: it needs the init.
        build_pkgs.push("tini".to_string());
    }
    if static_rt {
        // What the scratch runtime copies out of the build stage.
        for p in ["tzdata", "tini"] {
            if !build_pkgs.iter().any(|b| b == p) {
                build_pkgs.push(p.to_string());
            }
        }
    }
    let build_base = match &plan.build_image {
        Some(image) => RecipeBase::Image(image.clone()),
        None => RecipeBase::Packages {
            packages: build_pkgs,
            variant: PackageBase::Minbase,
            extra_ca: opts.build_ca.clone(),
        },
    };
    // A `--build-env` variable overrides an image variable of the same
    // name in the build steps (step arguments lose to ENV).
    let build_env: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !args.iter().any(|(bk, _)| bk == k))
        .cloned()
        .collect();
    let mut b = vec![
        RecipeStep::Workdir(APP_DIR.into()),
        RecipeStep::Env(build_env),
    ];
    if static_rt {
        // The scratch runtime's `/tmp`, copied from here. It needs no
        // source: made before the first copy of the context, a source
        // edit does not run it again.
        b.push(RecipeStep::Script {
            cmd: format!("mkdir -p {EMPTY_DIR}"),
            phase: "runtime".into(),
            label: None,
        });
    }
    let copy_context = |src: &str, phase: &str| RecipeStep::CopyContext {
        src: src.to_string(),
        dest: if src == "." {
            format!("{APP_DIR}/")
        } else {
            format!("{APP_DIR}/{src}")
        },
        phase: phase.to_string(),
    };
    let mut copied_all = false;
    for name in &order {
        let Some(phase) = plan.phase(name) else {
            continue;
        };
        let cmds = phase.cmds.clone().unwrap_or_default();
        if cmds.is_empty() {
            continue;
        }
        let is_setup = name == "setup" || name.ends_with(":setup");
        match &phase.only_include_files {
            Some(files) if !copied_all => {
                for f in files {
                    let f = f.trim_start_matches("./").trim_end_matches('/');
                    // Lists name what a provider may read; copy what exists.
                    if f.is_empty() || !(opts.exists)(f) {
                        continue;
                    }
                    b.push(copy_context(f, name));
                }
            }
            None if !copied_all && !is_setup => {
                b.push(copy_context(".", name));
                copied_all = true;
            }
            _ => {}
        }
        let caches: Vec<String> = phase
            .cache_directories
            .iter()
            .flatten()
            .map(|c| abs(c))
            .collect();
        for cmd in cmds {
            b.push(RecipeStep::Run {
                cmd,
                phase: name.clone(),
                args: args.clone(),
                caches: caches.clone(),
                secrets: secrets.clone(),
                host_ca: opts.host_ca,
            });
        }
    }
    if !copied_all {
        b.push(copy_context(".", "source"));
    }

    // Stage 1: runtime.
    let mut rt_pkgs = vec!["ca-certificates".to_string(), "tini".to_string()];
    for p in start.apt_pkgs.clone().unwrap_or_default() {
        if !rt_pkgs.contains(&p) {
            rt_pkgs.push(p);
        }
    }
    let rt_base = match &start.run_image {
        Some(image) => RecipeBase::Image(image.clone()),
        // `runtime = "build"`: the build stage, toolchain, caches' owners
        // and sources included, is the image (what Nixpacks ships).
        None if build_rt => RecipeBase::BuildStage,
        None if static_rt => RecipeBase::Scratch,
        None => RecipeBase::Packages {
            packages: rt_pkgs,
            variant: PackageBase::Minimal,
            extra_ca: Vec::new(),
        },
    };
    let mut r = Vec::new();
    if static_rt {
        for (src, dest) in STATIC_FILES {
            r.push(RecipeStep::CopyBuild {
                src: src.to_string(),
                dest: dest.to_string(),
                chmod: None,
            });
        }
        r.push(RecipeStep::CopyBuild {
            src: EMPTY_DIR.into(),
            dest: "/tmp".into(),
            chmod: Some("1777".into()),
        });
    }
    let assets: Vec<(String, String)> = plan
        .static_assets
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !assets.is_empty() {
        for (name, _) in &assets {
            if name.contains('/') || name == ".." || name.is_empty() {
                bail!("staticAssets: {name:?} must be a plain file name");
            }
        }
        r.push(RecipeStep::Assets(assets));
    }
    let copied = runtime_copies(&start, build_rt);
    for src in &copied {
        r.push(RecipeStep::CopyBuild {
            src: src.clone(),
            dest: src.clone(),
            chmod: None,
        });
    }
    if !static_rt && !build_rt && start.run_image.is_none() && !copied.is_empty() {
        // Every shared library what was copied needs is in the runtime, or
        // the build says which is missing (not the app at its start).
        r.push(RecipeStep::Script {
            cmd: super::shared_libs::check_script(&copied, &suite),
            phase: "runtime".into(),
            label: Some(format!(
                "RUN (check that the shared libraries of {} are in the runtime)",
                copied.join(" ")
            )),
        });
    }
    r.push(RecipeStep::Workdir(APP_DIR.into()));
    r.push(RecipeStep::Env(env));
    if let Some(port) = plan.variables.as_ref().and_then(|v| v.get("PORT"))
        && port.parse::<u16>().is_ok()
    {
        r.push(RecipeStep::Expose(port.clone()));
    }
    if let Some(user) = start.user.as_deref().filter(|u| !u.is_empty()) {
        if static_rt {
            bail!(
                "start.user {user:?}: the static runtime image has no /etc/passwd; set CGO_ENABLED=1 to get a Debian runtime, or drop start.user"
            );
        }
        if !user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            bail!("start.user {user:?}: a user name may hold only letters, digits, '_' and '-'");
        }
        // `minimal` has no useradd: append the account the way useradd
        // would (uid/gid 1000, a home dir), unless the base has it.
        r.push(RecipeStep::Script {
            cmd: format!(
                "id -u {user} >/dev/null 2>&1 || {{ echo '{user}:x:1000:1000::/home/{user}:/bin/sh' >> /etc/passwd && echo '{user}:x:1000:' >> /etc/group && mkdir -p /home/{user} && chown 1000:1000 /home/{user}; }}"
            ),
            phase: "start".into(),
            label: None,
        });
        r.push(RecipeStep::User(user.to_string()));
    }
    if start.run_image.is_none() {
        r.push(RecipeStep::Entrypoint(
            INIT.iter().map(|s| s.to_string()).collect(),
        ));
    }
    if let Some(cmd) = &start_cmd {
        r.push(RecipeStep::Cmd(exec_form(cmd)));
    }
    Ok(Recipe {
        suite,
        build: StageRecipe {
            name: "build",
            base: build_base,
            steps: b,
        },
        runtime: StageRecipe {
            name: "runtime",
            base: rt_base,
            steps: r,
        },
        start_cmd,
    })
}

/// The plan's start command, unless it is missing or blank.
pub fn start_command(plan: &BuildPlan) -> Option<String> {
    plan.start
        .as_ref()
        .and_then(|s| s.cmd.clone())
        .filter(|c| !c.trim().is_empty())
}

/// The error of a plan without a start command, for the printers that
/// need one (an image must run something); `also` ends the list of ways
/// out (the caller's own switch, if it has one).
pub fn no_start_command(plan: &BuildPlan, dir: &std::path::Path, also: &str) -> anyhow::Error {
    CodedError::new(
        code::FAILURE,
        format!(
            "no start command for the app in {} (providers: {}): set one with `[start] cmd = \"…\"` in kiln.toml, NIXPACKS_START_CMD=… (or KILN_START_CMD), a Procfile `web:` line, or `kiln build -s CMD`{also}",
            dir.display(),
            plan.providers.clone().unwrap_or_default().join(", ")
        ),
    )
    .into()
}

/// Whether the app is one static binary (its only provider says so, see
/// [`Provider::static_runtime`](super::providers::Provider::static_runtime);
/// Go with `CGO_ENABLED=0`): its runtime stage starts from scratch instead
/// of a Debian package set.
pub fn is_static(plan: &BuildPlan) -> bool {
    let start = plan.start.clone().unwrap_or_default();
    // Runtime packages beyond what the scratch stage copies (a package the
    // user asked for) need a Debian runtime.
    let only_copied = start
        .apt_pkgs
        .iter()
        .flatten()
        .all(|p| p == "ca-certificates" || p == "tzdata");
    only_copied
        && start.run_image.is_none()
        && !start.is_build_runtime()
        && match plan.providers.as_deref() {
            Some([only]) => super::providers::by_name(only).is_some_and(|p| p.static_runtime(plan)),
            _ => false,
        }
}

/// The absolute paths the runtime stage copies from the build stage, each
/// to the same path: `start.onlyIncludeFiles` (default: the app dir), none
/// when the build stage is the runtime.
pub fn runtime_copies(start: &StartPhase, build_rt: bool) -> Vec<String> {
    if build_rt {
        return Vec::new();
    }
    start
        .only_include_files
        .clone()
        .unwrap_or_else(|| vec![".".into()])
        .iter()
        .map(|f| {
            let f = f.trim_end_matches('/');
            if f == "." || f.is_empty() {
                APP_DIR.to_string()
            } else {
                abs(f)
            }
        })
        .collect()
}

/// A cache directory or start include as an absolute path (Nixpacks'
/// rules: `~/` is root's home, relative paths are under the app dir).
pub fn abs(dir: &str) -> String {
    if dir.starts_with('/') {
        dir.to_string()
    } else if let Some(rest) = dir.strip_prefix("~/") {
        format!("/root/{rest}")
    } else {
        format!("{APP_DIR}/{}", dir.trim_start_matches("./"))
    }
}

/// The start command in exec form: split when it is a plain command line,
/// `sh -c 'exec …'` when it needs a shell, `sh -c '…'` when compound;
/// never a login shell.
pub fn exec_form(cmd: &str) -> Vec<String> {
    let shell_chars = [
        '$', '&', '|', ';', '<', '>', '(', ')', '*', '?', '"', '\'', '\\', '`', '~', '{', '}',
    ];
    let assignment = cmd
        .split_whitespace()
        .next()
        .is_some_and(|w| w.contains('=') && !w.starts_with('-'));
    if !cmd.contains(shell_chars) && !assignment {
        return cmd.split_whitespace().map(String::from).collect();
    }
    let compound = ["&&", "||", ";", "|", "&"]
        .iter()
        .any(|op| cmd.contains(op));
    let script = if compound {
        cmd.to_string()
    } else {
        format!("exec {cmd}")
    };
    vec!["/bin/sh".into(), "-c".into(), script]
}
