//! The auto plan: detect the language of a source tree and write a
//! Nixpacks-compatible [`BuildPlan`] for it. Plans are pure data (no build
//! runs to make one).
//!
//! Generation, lowest priority first: provider plan < Procfile < config
//! file (`kiln.toml`/`nixpacks.toml`/`nixpacks.json`) < environment
//! (`KILN_*`/`NIXPACKS_*`) < CLI flags. Then Nix names are mapped to
//! Debian packages, splice markers removed, and each toolchain request is
//! resolved to one Debian suite (an error when none satisfies it).
//! `docs/plan.md` is the user-facing reference; `docs/nixpacks-differences.md`
//! lists where kiln deliberately differs from Nixpacks.

pub mod config;
pub mod context;
pub mod debian;
pub mod dockerfile;
pub mod lower;
pub mod merge;
pub mod model;
pub mod native;
pub mod order;
pub mod providers;
pub mod recipe;
pub mod runtime_tools;
pub mod shared_libs;
pub mod versions;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};

pub use context::{Ctx, Env};
pub use model::{BuildPlan, Phase, StartPhase, Toolchain};

use crate::error::{CodedError, code};
use crate::progress::Progress;
use merge::{merge, merge_all, pin_list};

/// Options a caller (the CLI, a deploy tool) passes next to the source dir.
/// They rank above everything else, like Nixpacks' CLI flags.
#[derive(Clone, Default)]
pub struct Options {
    /// `-i`: replaces the install commands.
    pub install_cmd: Option<String>,
    /// `-b`: replaces the build commands.
    pub build_cmd: Option<String>,
    /// `-s`: replaces the start command.
    pub start_cmd: Option<String>,
    /// `-p`: Nix package names added to setup (mapped to Debian).
    pub pkgs: Vec<String>,
    /// `--apt`: Debian packages added to setup.
    pub apt: Vec<String>,
    /// `--libs`: Nix library names added to setup (mapped to Debian).
    pub libs: Vec<String>,
    /// `--config`: config file, relative to the app dir.
    pub config: Option<String>,
    /// `--build-env NAME[=VALUE]`: variables of the build steps only, never
    /// in the image (`-e`, the `env` argument, reaches both).
    pub build_env: Vec<String>,
    /// `--secret`: names of secrets build steps may read.
    pub secrets: Vec<String>,
    /// Where warnings go (default: nowhere).
    pub progress: Option<Progress>,
}

/// A provider that matched, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Detected {
    pub provider: String,
    pub reason: String,
}

/// The providers that would run for `dir` (config `providers` included).
pub fn detect(dir: &Path, env: &[String], opts: &Options) -> crate::Result<Vec<Detected>> {
    let progress = opts.progress.clone().unwrap_or_else(Progress::quiet);
    let orig = parse_env(env)?;
    let file = config::load(dir, opts.config.as_deref(), &orig, &progress)?;
    let env = resolved_env(&orig, file.as_ref());
    let ctx = Ctx::new(dir, &env);
    let requested = file.as_ref().and_then(|f| f.plan.providers.clone());
    let names = provider_names(&ctx, requested)?;
    names
        .into_iter()
        .map(|(name, reason)| {
            Ok(Detected {
                provider: name,
                reason,
            })
        })
        .collect()
}

/// The full, resolved plan for `dir`.
pub fn generate(dir: &Path, env: &[String], opts: &Options) -> crate::Result<BuildPlan> {
    let progress = opts.progress.clone().unwrap_or_else(Progress::quiet);
    if !dir.is_dir() {
        bail!(
            "{} is not a directory: give the app's source directory",
            dir.display()
        );
    }
    let orig = parse_env(env)?;
    let file = config::load(dir, opts.config.as_deref(), &orig, &progress)?;
    let env_all = resolved_env(&orig, file.as_ref());
    let ctx = Ctx::new(dir, &env_all);

    let file_plan = file.as_ref().map(|f| f.plan.clone()).unwrap_or_default();
    let before = merge_all([file_plan.clone(), env_plan(&env_all), cli_plan(opts)]);

    let names = provider_names(&ctx, before.providers.clone())?;
    let mut provider_plans = Vec::new();
    // Whether each provider's manifest is there (else it gives setup only).
    let mut manifest = Vec::new();
    for (i, (name, _)) in names.iter().enumerate() {
        let p = providers::by_name(name).ok_or_else(|| anyhow!("Provider {name} not found"))?;
        let mut plan = p
            .plan(&ctx)
            .with_context(|| format!("planning with the {name} provider"))?;
        manifest.push(p.detect(&ctx)?.is_some());
        if !manifest[i] {
            // Named in `providers` without its manifest (`"node"` and no
            // package.json): the toolchain only, as Nixpacks gives, not an
            // install that fails on the missing file.
            plan = setup_only(plan);
        }
        provider_plans.push(if i == 0 { plan } else { prefixed(plan, name) });
    }
    // Every provider's toolchains and runtime needs count, in provider order.
    let mut toolchains: Vec<Toolchain> = Vec::new();
    let mut runtime: Vec<String> = Vec::new();
    let mut include: Vec<String> = Vec::new();
    for (p, has_manifest) in provider_plans.iter().zip(&manifest) {
        toolchains.extend(p.toolchains.iter().flatten().cloned());
        let start = p.start.clone().unwrap_or_default();
        runtime.extend(start.apt_pkgs.unwrap_or_default());
        if !has_manifest {
            continue;
        }
        // Unset means the whole app.
        for f in start.only_include_files.unwrap_or_else(|| vec![".".into()]) {
            if !include.contains(&f) {
                include.push(f);
            }
        }
    }
    // The first provider wins conflicts: merge it last.
    let mut provider_plan = provider_plans
        .into_iter()
        .rev()
        .fold(BuildPlan::default(), merge);
    if names.len() > 1 {
        provider_plan.toolchains = Some(toolchains);
        let start = provider_plan.start.get_or_insert_with(StartPhase::default);
        start.apt_pkgs = Some(runtime);
        start.only_include_files = Some(include);
    }
    let procfile = providers::procfile::plan(&ctx)?;

    if names.is_empty()
        && procfile.start_cmd().is_none()
        && before.start_cmd().is_none()
        && before.phases.as_ref().is_none_or(|p| p.is_empty())
    {
        return Err(no_provider(dir));
    }

    // What the user's configuration wrote, for the providers' `finish`.
    let before_phases = BuildPlan {
        phases: before.phases.clone(),
        ..BuildPlan::default()
    };
    let user_runtime = requested_runtime_pkgs(&before)?;
    let mut plan = merge_all([
        provider_plan,
        procfile,
        BuildPlan {
            providers: None,
            ..before
        },
    ]);
    plan.providers = Some(names.into_iter().map(|(n, _)| n).collect());
    for name in plan.providers.clone().iter().flatten() {
        if let Some(p) = providers::by_name(name) {
            p.finish(&mut plan, &before_phases, &ctx)?;
        }
    }
    // What the final start command runs (npx, pnpm, go) stays in the runtime.
    runtime_tools::add(&mut plan, &ctx)?;

    apply_caller(&mut plan, &orig, user_runtime, opts)?;
    finalize(&mut plan, &env_all, &progress)?;
    Ok(plan)
}

/// A plan written out (`kiln plan`, `nixpacks plan`) read back for `kiln
/// build --plan FILE`: no detection, no config file; the CLI's flags, `-e`
/// and the `KILN_*`/`NIXPACKS_*` options still rank above it. A finished
/// kiln plan passes [`finalize`] unchanged; a Nixpacks one gets its Nix
/// names mapped and a suite chosen. Unknown keys are errors naming the
/// file, line and key.
pub fn from_file(file: &Path, env: &[String], opts: &Options) -> crate::Result<BuildPlan> {
    let progress = opts.progress.clone().unwrap_or_else(Progress::quiet);
    if opts.config.is_some() {
        bail!(
            "--plan {} and -c/--config cannot be combined: the plan file is the whole plan",
            file.display()
        );
    }
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("--plan {name}: cannot read the plan file"))?;
    let mut written = config::parse_plan_file(&name, &text)?;
    // Nixpacks writes its own build image into every plan; kiln builds on
    // Debian packages instead (a `buildImage` of the user's own stays).
    if written
        .build_image
        .as_deref()
        .is_some_and(|i| i.starts_with("ghcr.io/railwayapp/nixpacks"))
    {
        progress.info(format!(
            "{name}: buildImage {} is Nixpacks' own: building on Debian packages instead",
            written.build_image.take().unwrap_or_default()
        ));
    }
    let orig = parse_env(env)?;
    let mut vars = written.variables.clone().unwrap_or_default();
    vars.extend(orig.vars.clone());
    let env_all = Env { vars };
    let overrides = merge_all([env_plan(&env_all), cli_plan(opts)]);
    let user_runtime = requested_runtime_pkgs(&overrides)?;
    let mut plan = merge(written, overrides);
    apply_caller(&mut plan, &orig, user_runtime, opts)?;
    finalize(&mut plan, &env_all, &progress)?;
    Ok(plan)
}

/// What the caller adds last: `-e` variables (build steps and the image,
/// as Nixpacks' `--env`), `--build-env` ones (build steps only), secret
/// names, and the runtime packages the user asked for. Option variables
/// (`KILN_*`/`NIXPACKS_*`) configure kiln and are dropped.
fn apply_caller(
    plan: &mut BuildPlan,
    orig: &Env,
    user_runtime: Vec<String>,
    opts: &Options,
) -> crate::Result<()> {
    let build_env = parse_env_flag(&opts.build_env, "--build-env")?;
    if let Some(k) = build_env.vars.keys().find(|k| is_option_var(k)) {
        bail!(
            "--build-env {k}: KILN_*/NIXPACKS_* variables configure the plan; give them with -e/--env"
        );
    }
    if let Some(k) = build_env.vars.keys().find(|k| orig.vars.contains_key(*k)) {
        bail!(
            "{k} is given with both -e (build steps and the image) and --build-env (build steps only): keep one"
        );
    }
    let vars = plan.variables.get_or_insert_with(BTreeMap::new);
    vars.retain(|k, _| !is_option_var(k));
    for (k, v) in &orig.vars {
        if !is_option_var(k) {
            vars.insert(k.clone(), v.clone());
        }
    }
    if vars.is_empty() {
        plan.variables = None;
    }
    let mut build_vars = plan.build_variables.take().unwrap_or_default();
    build_vars.extend(build_env.vars);
    plan.build_variables = (!build_vars.is_empty()).then_some(build_vars);
    if !opts.secrets.is_empty() {
        let s = plan.secrets.get_or_insert_with(Vec::new);
        s.extend(opts.secrets.iter().cloned());
    }

    if !user_runtime.is_empty() {
        let start = plan.start.get_or_insert_with(StartPhase::default);
        start
            .apt_pkgs
            .get_or_insert_with(Vec::new)
            .extend(user_runtime);
    }
    // `buildOnlyPkgs` are never in the runtime stage, whoever added them
    // (the user's packages, or a provider named for its toolchain only,
    // such as Python for node-gyp).
    let build_only: Vec<String> = plan
        .build_only_pkgs
        .iter()
        .flatten()
        .filter(|p| !model::is_marker(p))
        .cloned()
        .collect();
    if let Some(pkgs) = plan.start.as_mut().and_then(|s| s.apt_pkgs.as_mut()) {
        pkgs.retain(|p| !build_only.contains(p));
    }
    Ok(())
}

/// The runtime packages for what the user asked for in any phase of the
/// config file, `KILN_PKGS`/`KILN_APT_PKGS` (and `NIXPACKS_*`), `-p`/`-a`:
/// an app that shells out to `ffmpeg` or a start command that runs
/// `cowsay` needs them at run time, not only in the build. Debian names
/// as given; Nix names as mapped for the runtime (`nodejs_20` →
/// `nodejs`), or as for the build when the table has no runtime entry
/// (`cowsay`). `buildOnlyPkgs` / `KILN_BUILD_ONLY_PKGS` keep some out,
/// by either name.
fn requested_runtime_pkgs(user: &BuildPlan) -> crate::Result<Vec<String>> {
    let build_only: Vec<&String> = user
        .build_only_pkgs
        .iter()
        .flatten()
        .filter(|p| !model::is_marker(p))
        .collect();
    let kept = |name: &str| !build_only.iter().any(|b| *b == name);
    let mut out: Vec<String> = Vec::new();
    let mut push = |p: &str| {
        if kept(p) && !out.iter().any(|o| o == p) {
            out.push(p.to_string());
        }
    };
    for (name, phase) in user.phases.iter().flatten() {
        for p in phase.apt_pkgs.iter().flatten() {
            if !model::is_marker(p) {
                push(p);
            }
        }
        for n in [&phase.nix_pkgs, &phase.nix_libs]
            .into_iter()
            .flatten()
            .flatten()
        {
            if model::is_marker(n) || !kept(n) {
                continue;
            }
            let (build, run) = debian::map(n)
                .with_context(|| format!("phase `{name}`: mapping nixPkgs/nixLibs to Debian"))?;
            for p in if run.is_empty() { build } else { run } {
                push(p);
            }
        }
    }
    Ok(out)
}

/// The phase names of a finished plan in execution order.
pub fn phase_order(plan: &BuildPlan) -> crate::Result<Vec<String>> {
    match &plan.phases {
        Some(p) => order::order(p),
        None => Ok(Vec::new()),
    }
}

fn no_provider(dir: &Path) -> anyhow::Error {
    let looked: Vec<String> = providers::all()
        .iter()
        .map(|p| format!("  {}: {}", p.name(), p.looks_for()))
        .collect();
    let dirs: Vec<String> = context::read_dir_names(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| !n.starts_with('.') && dir.join(n).is_dir())
        .collect();
    let hint = match dirs.as_slice() {
        [one] => format!(
            "\nThe app may be in the subdirectory `{one}`: run `kiln plan {}`.",
            dir.join(one).display()
        ),
        _ => String::new(),
    };
    anyhow::Error::new(CodedError::new(
        code::NO_PROVIDER,
        format!(
            "No compatible providers found for auto-build. Nothing in {} matched; looked for:\n{}\n\
             Name a provider (`providers = [\"node\"]` in kiln.toml), or give a start command \
             (`-s`, `[start] cmd`, or a Procfile).{hint}",
            dir.display(),
            looked.join("\n")
        ),
    ))
}

fn is_option_var(k: &str) -> bool {
    k.starts_with("NIXPACKS_") || k.starts_with("KILN_")
}

/// `K=V` entries; a bare `K` (or `K=`) copies `K` from the host environment.
pub fn parse_env(entries: &[String]) -> crate::Result<Env> {
    parse_env_flag(entries, "--env")
}

/// [`parse_env`] for the entries of `flag` (named in errors).
fn parse_env_flag(entries: &[String], flag: &str) -> crate::Result<Env> {
    let mut vars = BTreeMap::new();
    for e in entries {
        let (k, v) = match e.split_once('=') {
            Some((k, v)) if !v.is_empty() => (k, v.to_string()),
            Some((k, _)) => (k, std::env::var(k).unwrap_or_default()),
            None => (e.as_str(), std::env::var(e).unwrap_or_default()),
        };
        if k.is_empty() || k.contains(char::is_whitespace) {
            bail!("invalid {flag} entry `{e}`: expected NAME=VALUE or NAME");
        }
        vars.insert(k.to_string(), v);
    }
    Ok(Env { vars })
}

/// `--env` values plus the config file's `[variables]`; `--env` wins.
fn resolved_env(orig: &Env, file: Option<&config::ConfigFile>) -> Env {
    let mut vars = file
        .and_then(|f| f.plan.variables.clone())
        .unwrap_or_default();
    vars.extend(orig.vars.clone());
    Env { vars }
}

fn extend_list(items: Vec<String>) -> Option<Vec<String>> {
    (!items.is_empty()).then(|| std::iter::once("...".to_string()).chain(items).collect())
}

fn override_phase(plan: &mut BuildPlan, name: &str, phase: Phase) {
    plan.phases
        .get_or_insert_with(BTreeMap::new)
        .insert(name.to_string(), phase);
}

/// The plan from `KILN_*`/`NIXPACKS_*` options (each handled on its own).
fn env_plan(env: &Env) -> BuildPlan {
    let mut plan = BuildPlan::default();
    for (phase, cmd, caches) in [
        ("install", "INSTALL_CMD", "INSTALL_CACHE_DIRS"),
        ("build", "BUILD_CMD", "BUILD_CACHE_DIRS"),
    ] {
        let cmds = env.opt(cmd).map(|c| vec![c]);
        let cache_directories = extend_list(env.list(caches));
        if cmds.is_some() || cache_directories.is_some() {
            override_phase(
                &mut plan,
                phase,
                Phase {
                    cmds,
                    cache_directories,
                    ..Phase::default()
                },
            );
        }
    }
    let setup = Phase {
        nix_pkgs: extend_list(env.list("PKGS")),
        apt_pkgs: extend_list(env.list("APT_PKGS")),
        nix_libs: extend_list(env.list("LIBS")),
        ..Phase::default()
    };
    if setup != Phase::default() {
        override_phase(&mut plan, "setup", setup);
    }
    let start = StartPhase {
        cmd: env.opt("START_CMD"),
        apt_pkgs: extend_list(env.list("RUNTIME_APT_PKGS")),
        runtime: env.opt("RUNTIME"),
        ..StartPhase::default()
    };
    if start != StartPhase::default() {
        plan.start = Some(start);
    }
    if let Some(s) = env.opt("SUITE") {
        plan.suite = Some(s);
    }
    plan.build_only_pkgs = extend_list(env.list("BUILD_ONLY_PKGS"));
    plan
}

/// The plan from CLI flags.
fn cli_plan(opts: &Options) -> BuildPlan {
    let mut plan = BuildPlan::default();
    if let Some(c) = &opts.install_cmd {
        override_phase(
            &mut plan,
            "install",
            Phase {
                cmds: Some(vec![c.clone()]),
                ..Phase::default()
            },
        );
    }
    if let Some(c) = &opts.build_cmd {
        override_phase(
            &mut plan,
            "build",
            Phase {
                cmds: Some(vec![c.clone()]),
                ..Phase::default()
            },
        );
    }
    let setup = Phase {
        nix_pkgs: extend_list(opts.pkgs.clone()),
        apt_pkgs: extend_list(opts.apt.clone()),
        nix_libs: extend_list(opts.libs.clone()),
        ..Phase::default()
    };
    if setup != Phase::default() {
        override_phase(&mut plan, "setup", setup);
    }
    if let Some(c) = &opts.start_cmd {
        plan.start = Some(StartPhase::cmd(c.clone()));
    }
    plan
}

/// `fill(detected, requested or ["..."])`, with unknown names rejected.
fn provider_names(
    ctx: &Ctx,
    requested: Option<Vec<String>>,
) -> crate::Result<Vec<(String, String)>> {
    let detected: Option<(String, String)> = providers::all()
        .iter()
        .find_map(|p| match p.detect(ctx) {
            Ok(Some(reason)) => Some(Ok((p.name().to_string(), reason))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        })
        .transpose()?;
    let requested = requested.unwrap_or_else(|| vec!["...".to_string()]);
    let mut out: Vec<(String, String)> = Vec::new();
    for name in requested {
        if model::is_marker(&name) {
            if let Some(d) = &detected
                && !out.iter().any(|(n, _)| *n == d.0)
            {
                out.push(d.clone());
            }
            continue;
        }
        let p = providers::by_name(&name).ok_or_else(|| {
            let known: Vec<&str> = providers::all().iter().map(|p| p.name()).collect();
            anyhow!(
                "Provider {name} not found: known providers are {}",
                known.join(", ")
            )
        })?;
        if !out.iter().any(|(n, _)| n == p.name()) {
            out.push((p.name().to_string(), "named in `providers`".to_string()));
        }
    }
    Ok(out)
}

/// What a provider named without its manifest contributes: its `setup`
/// phase (toolchain packages), its toolchain requests, and its runtime
/// packages (the language's runtime, for an app that runs it). No
/// install/build phases, start command, variables, assets, or start files
/// (Python's `/opt/venv` would not exist).
fn setup_only(plan: BuildPlan) -> BuildPlan {
    let phases = plan.phases.map(|mut p| {
        p.retain(|name, _| name == "setup");
        p
    });
    let apt_pkgs = plan.start.and_then(|s| s.apt_pkgs);
    BuildPlan {
        phases,
        toolchains: plan.toolchains,
        start: Some(StartPhase {
            apt_pkgs,
            ..StartPhase::default()
        }),
        ..BuildPlan::default()
    }
}

/// Prefixes a later provider's phases (and their dependencies) with `name:`.
fn prefixed(mut plan: BuildPlan, name: &str) -> BuildPlan {
    if let Some(phases) = plan.phases.take() {
        let keys: Vec<String> = phases.keys().cloned().collect();
        let mut out = BTreeMap::new();
        for (k, mut p) in phases {
            if let Some(d) = &mut p.depends_on {
                for x in d.iter_mut() {
                    if keys.contains(x) {
                        *x = format!("{name}:{x}");
                    }
                }
            }
            let key = format!("{name}:{k}");
            p.name = Some(key.clone());
            out.insert(key, p);
        }
        plan.phases = Some(out);
    }
    plan
}

/// Maps Nix names, removes markers, checks phase order and resolves
/// toolchains to a suite.
fn finalize(plan: &mut BuildPlan, env: &Env, progress: &Progress) -> crate::Result<()> {
    let mut runtime: Vec<String> = Vec::new();
    for (name, phase) in plan.phases.iter_mut().flatten() {
        phase.name = Some(name.clone());
        let mut nix: Vec<String> = Vec::new();
        for list in [&mut phase.nix_pkgs, &mut phase.nix_libs] {
            pin_list(list, true);
            nix.extend(list.take().unwrap_or_default());
        }
        for n in nix {
            let (build, run) = debian::map(&n)
                .with_context(|| format!("phase `{name}`: mapping nixPkgs/nixLibs to Debian"))?;
            let apt = phase.apt_pkgs.get_or_insert_with(Vec::new);
            apt.extend(build.iter().map(|s| s.to_string()));
            runtime.extend(run.iter().map(|s| s.to_string()));
        }
        if phase
            .nix_overlays
            .take()
            .is_some_and(|o| !o.iter().all(|x| model::is_marker(x)))
            | phase.nixpkgs_archive.take().is_some()
        {
            progress.warn(format!(
                "phase `{name}`: nixOverlays/nixpkgsArchive are ignored: kiln installs Debian packages"
            ));
        }
        pin_list(&mut phase.apt_pkgs, true);
        pin_list(&mut phase.cmds, false);
        pin_list(&mut phase.depends_on, true);
        pin_list(&mut phase.only_include_files, true);
        pin_list(&mut phase.cache_directories, true);
        pin_list(&mut phase.paths, true);
    }
    if !runtime.is_empty() {
        let start = plan.start.get_or_insert_with(StartPhase::default);
        start.apt_pkgs.get_or_insert_with(Vec::new).extend(runtime);
    }
    if let Some(start) = &mut plan.start {
        pin_list(&mut start.only_include_files, true);
        pin_list(&mut start.apt_pkgs, true);
        runtime_tools::check(start)?;
    }
    pin_list(&mut plan.secrets, true);
    pin_list(&mut plan.providers, true);
    phase_order(plan)?;
    resolve_toolchains(plan, env)?;
    Ok(())
}

fn resolve_toolchains(plan: &mut BuildPlan, env: &Env) -> crate::Result<()> {
    let forced = match env.option("SUITE") {
        Some((s, k)) => Some((s, k)),
        None => plan
            .suite
            .clone()
            .map(|s| (s, "the config file's `suite`".to_string())),
    };
    if let Some((s, src)) = &forced {
        versions::check_suite(s, src)?;
    }
    let mut candidates: Vec<&'static str> = versions::SUITES.to_vec();
    let mut why: Vec<String> = Vec::new();
    for t in plan.toolchains.iter().flatten() {
        if versions::suite_versions(&t.name).is_none() {
            continue;
        }
        let req = match (&t.request, t.kind) {
            (Some(text), Some(kind)) => Some(versions::request(&t.name, text, kind).with_context(|| {
                format!(
                    "{}: cannot read the {} version `{text}`: use a version such as `{}` or a range such as `>=1.2`",
                    t.source.as_deref().unwrap_or("?"),
                    t.name,
                    versions::version_in(&t.name, "trixie").unwrap_or("1.0")
                )
            })?),
            _ => None,
        };
        let ok = versions::satisfying_suites(&t.name, req.as_ref());
        if ok.is_empty() {
            bail!(
                "{} {} (from {}) is not available: kiln installs {} from Debian, which has {}. \
                 Change the version request, or install your own toolchain with `buildImage`",
                t.name,
                t.request.as_deref().unwrap_or(""),
                t.source.as_deref().unwrap_or("?"),
                t.name,
                versions::available(&t.name)
            );
        }
        why.push(format!(
            "{} {} ({}) → {}",
            t.name,
            t.request.as_deref().unwrap_or("any"),
            t.source.as_deref().unwrap_or("default"),
            ok.join("/")
        ));
        candidates.retain(|s| ok.contains(s));
    }
    let suite = match forced {
        Some((s, src)) => {
            if !candidates.iter().any(|c| *c == s) {
                bail!(
                    "the Debian suite `{s}` (from {src}) does not satisfy the toolchain requests: {}",
                    why.join("; ")
                );
            }
            s
        }
        None => candidates.first().map(|s| s.to_string()).ok_or_else(|| {
            anyhow!(
                "no Debian suite satisfies every toolchain request together: {}",
                why.join("; ")
            )
        })?,
    };
    for t in plan.toolchains.iter_mut().flatten() {
        if let Some(v) = versions::version_in(&t.name, &suite) {
            t.version = Some(v.to_string());
        }
    }
    let rename = |list: &mut Option<Vec<String>>| {
        if let Some(l) = list {
            for p in l.iter_mut() {
                if let Some(n) = suite_package(p, &suite) {
                    *p = n.to_string();
                }
            }
        }
    };
    for phase in plan.phases.iter_mut().flat_map(|m| m.values_mut()) {
        rename(&mut phase.apt_pkgs);
    }
    if let Some(s) = &mut plan.start {
        rename(&mut s.apt_pkgs);
    }
    plan.suite = Some(suite);
    Ok(())
}

/// Package names that differ by suite (the t64 transition, default JDK).
pub(crate) fn suite_package(name: &str, suite: &str) -> Option<&'static str> {
    match (name, suite) {
        ("libssl3t64", "bookworm") => Some("libssl3"),
        ("libasound2t64", "bookworm") => Some("libasound2"),
        ("libcob4t64", "bookworm") => Some("libcob4"),
        ("libevent-2.1-7t64", "bookworm") => Some("libevent-2.1-7"),
        ("libicu76", "bookworm") => Some("libicu72"),
        ("libvips42t64", "bookworm") => Some("libvips42"),
        ("libmagic1t64", "bookworm") => Some("libmagic1"),
        ("libglib2.0-0t64", "bookworm") => Some("libglib2.0-0"),
        ("openjdk-21-jdk-headless", "bookworm") => Some("openjdk-17-jdk-headless"),
        ("openjdk-21-jre-headless", "bookworm") => Some("openjdk-17-jre-headless"),
        _ => None,
    }
}
