//! A [`BuildPlan`] lowered to the build graph: the auto builder's frontend.
//!
//! What the build does is decided once, in [`super::recipe`]; this module
//! prints that recipe as graph stages, with Debian package bases instead
//! of `apt-get` in a container, each step's origin text reading like a
//! Dockerfile line so progress looks like BuildKit's.

use std::collections::BTreeMap;

use anyhow::Context as _;

use super::BuildPlan;
use super::providers::Cross;
use super::recipe::{self, ASSETS_DIR, RecipeBase, RecipeOptions, RecipeStep};
use crate::Result;
use crate::context::Context;
use crate::context::ignore::Matcher;
use crate::graph::{
    self, Base, ConfigChange, Copy, CopyFrom, CopyItem, Graph, Mount, Network, Origin, PackageSet,
    Run, Security, Sharing, Stage, Step,
};

/// The file name progress lines and errors cite for generated steps.
const ORIGIN_FILE: &str = "plan";

/// Paths excluded from the build context of an auto build when the app has
/// no `.dockerignore`: the VCS dir and what the install phase recreates.
/// A `.dockerignore` replaces this list entirely (as it would for Docker).
pub const DEFAULT_IGNORE: &[&str] = &[
    ".git",
    "**/node_modules",
    ".venv",
    "**/__pycache__",
    "target",
    ".kiln",
    // What `kiln dockerfile` writes into the app dir: not the app.
    "Dockerfile.kiln",
];

/// The context matcher for an auto build of `dir`: its `.dockerignore`, or
/// [`DEFAULT_IGNORE`].
pub fn context_ignore(dir: &std::path::Path) -> Result<(Matcher, Option<std::path::PathBuf>)> {
    let dockerignore = dir.join(".dockerignore");
    if dockerignore.is_file() {
        let text = std::fs::read_to_string(&dockerignore)
            .with_context(|| format!("reading {}", dockerignore.display()))?;
        return Ok((
            Matcher::parse(&text, &dockerignore.display().to_string())?,
            Some(dockerignore),
        ));
    }
    Ok((Matcher::new(DEFAULT_IGNORE)?, None))
}

/// What the caller adds to the plan's graph.
#[derive(Debug, Clone)]
pub struct LowerOptions {
    /// The platform of the image (the runtime stage's).
    pub platform: crate::platform::Platform,
    /// The machine the build runs on. When `platform` is another one and
    /// the plan's provider cross-builds
    /// ([`super::providers::Provider::cross_build`]), the build
    /// stage runs on this platform, natively, with the provider's
    /// variables; otherwise it is `platform` (emulated when foreign).
    pub build_platform: crate::platform::Platform,
    /// Extra CA certificates (file name, PEM) trusted in the build stage,
    /// for networks that intercept TLS; never in the runtime image.
    pub build_ca: Vec<(String, String)>,
    /// The build steps trust the host's CA bundle: it is mounted over the
    /// stage's ([`crate::graph::HOST_CA_BUNDLE`], see
    /// [`graph::Mount::HostCa`]); the key records only that it is.
    pub host_ca: bool,
    /// `--cache-key KEY` (Nixpacks'): cache mount ids become `KEY-DIR`
    /// instead of `DIR`, so apps built on one machine keep their caches
    /// (npm's, pip's…) apart.
    pub cache_key: Option<String>,
    /// `--no-error-without-start` (Nixpacks'): a plan without a start
    /// command gives an image without `CMD` (run it with a command) instead
    /// of an error.
    pub allow_no_start: bool,
}

impl Default for LowerOptions {
    /// This machine's platform, no extra trust, no cache key.
    fn default() -> Self {
        LowerOptions {
            platform: crate::platform::Platform::host(),
            build_platform: crate::platform::Platform::host(),
            build_ca: Vec::new(),
            host_ca: false,
            cache_key: None,
            allow_no_start: false,
        }
    }
}

/// The graph for `plan` over the walked source tree `ctx`.
pub fn lower(plan: &BuildPlan, ctx: &Context, opts: &LowerOptions) -> Result<Graph> {
    if recipe::start_command(plan).is_none() && !opts.allow_no_start {
        return Err(recipe::no_start_command(
            plan,
            &ctx.root,
            " (or build an image without one: --no-error-without-start)",
        ));
    }
    let exists = |f: &str| ctx.resolve(f).is_some();
    let cross = match cross_build(plan, ctx, opts) {
        Cross::Build(c) => Some(c),
        Cross::No | Cross::Emulate(_) => None,
    };
    // The cross build's commands replace the phases' own: the recipe (and
    // so the graph) is the plan's as the build machine runs it.
    let crossed;
    let plan = match &cross {
        Some(c) if !c.cmds.is_empty() => {
            let mut p = plan.clone();
            for (phase, cmds) in &c.cmds {
                p.phase_mut(phase).cmds = Some(cmds.clone());
            }
            crossed = p;
            &crossed
        }
        _ => plan,
    };
    let recipe = recipe::recipe(
        plan,
        &RecipeOptions {
            build_ca: opts.build_ca.clone(),
            host_ca: opts.host_ca,
            exists: &exists,
        },
    )?;
    // A static runtime copies files that are programs (tini) out of the
    // build stage: cross-compiling, a package base of the target's
    // supplies them instead.
    let target_files = cross.is_some() && recipe::is_static(plan);
    let mut stages = [&recipe.build, &recipe.runtime]
        .into_iter()
        .enumerate()
        .map(|(i, st)| {
            let base = match &st.base {
                RecipeBase::Packages {
                    packages,
                    variant,
                    extra_ca,
                } => Base::Packages(PackageSet {
                    suite: recipe.suite.clone(),
                    packages: packages.clone(),
                    base: *variant,
                    lock: None,
                    extra_ca: extra_ca.clone(),
                }),
                RecipeBase::Image(reference) => Base::Image {
                    reference: reference.clone(),
                },
                RecipeBase::BuildStage => Base::Stage(0),
                RecipeBase::Scratch => Base::Scratch,
            };
            let platform = match (&cross, i) {
                (Some(_), 0) => &opts.build_platform,
                _ => &opts.platform,
            };
            let mut b = StageBuilder::new(st.name, base, platform);
            b.cache_key = opts.cache_key.clone();
            if let (Some(c), 0) = (&cross, i)
                && !c.env.is_empty()
            {
                let text = c
                    .env
                    .iter()
                    .map(|(k, v)| match v.lines().count() {
                        // A script (pip's cross install) is named, not shown.
                        n if n > 1 => format!("{k}=({n}-line script)"),
                        _ => format!("{k}={v}"),
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                b.config(
                    ConfigChange::Env(c.env.clone()),
                    &format!(
                        "ENV {text} (cross-building on {} for {})",
                        opts.build_platform, opts.platform
                    ),
                );
            }
            if target_files && i == 1 {
                b.target_files = Some(TARGET_FILES_STAGE);
            }
            for step in &st.steps {
                b.step(step, ctx)?;
            }
            Ok(b.finish())
        })
        .collect::<Result<Vec<Stage>>>()?;
    if target_files {
        // The static runtime's files that are programs (tini) must be the
        // target's: a package base of the target, composed without
        // emulation, supplies them instead of the build stage.
        let base = Base::Packages(PackageSet {
            suite: recipe.suite.clone(),
            packages: TARGET_FILES_PACKAGES
                .iter()
                .map(|p| p.to_string())
                .collect(),
            base: recipe::PackageBase::Minimal,
            lock: None,
            extra_ca: Vec::new(),
        });
        stages.push(StageBuilder::new("target-files", base, &opts.platform).finish());
    }
    Ok(Graph { stages, target: 1 })
}

/// With cross-compilation, the stage holding the target platform's
/// copies of the static runtime's files.
const TARGET_FILES_STAGE: usize = 2;

/// The packages of that stage: what [`recipe::STATIC_FILES`] come from.
const TARGET_FILES_PACKAGES: &[&str] = &["ca-certificates", "tzdata", "tini"];

/// The provider's native build for the target, when it is not the build
/// platform and the plan's one provider has one: no `buildImage` (its
/// programs are one platform's), no `runImage` and no `runtime = "build"`
/// (the image must be the target's, with only what the build stage made
/// for it copied in). [`Cross::Emulate`] says why this app's build runs on
/// the target anyway (the caller shows it).
pub fn cross_build(plan: &BuildPlan, ctx: &Context, opts: &LowerOptions) -> Cross {
    let start = plan.start.clone().unwrap_or_default();
    if opts.platform == opts.build_platform
        || plan.build_image.is_some()
        || start.run_image.is_some()
        || start.is_build_runtime()
    {
        return Cross::No;
    }
    let read = |f: &str| {
        let path = ctx.root.join(ctx.resolve(f)?);
        std::fs::read_to_string(path).ok()
    };
    match plan.providers.as_deref() {
        Some([only]) => match super::providers::by_name(only) {
            Some(p) => p.cross_build(plan, &opts.platform, &read),
            None => Cross::No,
        },
        _ => Cross::No,
    }
}

/// A build secret's mount: the file (what the Dockerfile `kiln dockerfile`
/// writes mounts) and the variable (Nixpacks' way), as docs/plan.md
/// promises. Neither is in the graph: the value comes at run time.
fn secret_mount(id: &str) -> Mount {
    Mount::Secret {
        id: id.to_string(),
        target: Some(format!("/run/secrets/{id}")),
        env: Some(id.to_string()),
        required: false,
        mode: 0o400,
        uid: 0,
        gid: 0,
    }
}

/// A cache mount at `target`, its id `KEY-TARGET` under `--cache-key KEY`.
fn cache_mount(target: &str, key: Option<&str>) -> Mount {
    Mount::Cache {
        target: target.to_string(),
        id: match key {
            Some(k) => format!("{k}-{target}"),
            None => target.to_string(),
        },
        sharing: Sharing::Locked,
        from: None,
        source: String::new(),
        readonly: false,
        mode: 0o755,
        uid: 0,
        gid: 0,
    }
}

/// Accumulates one stage's steps, each with a Dockerfile-like origin text
/// so progress lines read like BuildKit's.
struct StageBuilder {
    stage: Stage,
    /// `--cache-key`: the prefix of cache mount ids.
    cache_key: Option<String>,
    /// Cross-compiling: the stage the static runtime's files come from
    /// (the build stage's are the build machine's architecture).
    target_files: Option<usize>,
}

impl StageBuilder {
    fn new(name: &str, base: Base, platform: &crate::platform::Platform) -> StageBuilder {
        let text = match &base {
            Base::Packages(p) => format!(
                "FROM debian packages ({}): {}",
                p.suite,
                p.packages.join(" ")
            ),
            Base::Image { reference } => format!("FROM {reference}"),
            Base::Stage(_) => "FROM build".to_string(),
            _ => "FROM scratch".to_string(),
        };
        StageBuilder {
            stage: Stage {
                name: Some(name.to_string()),
                base,
                platform: platform.clone(),
                steps: Vec::new(),
                origin: Some(origin(name, &text)),
            },
            cache_key: None,
            target_files: None,
        }
    }

    fn step(&mut self, step: &RecipeStep, ctx: &Context) -> Result<()> {
        match step {
            RecipeStep::Workdir(dir) => self.config(
                ConfigChange::WorkingDir(dir.clone()),
                &format!("WORKDIR {dir}"),
            ),
            RecipeStep::Env(env) => {
                self.config(ConfigChange::Env(env.clone()), "ENV (plan variables)")
            }
            RecipeStep::CopyContext { src, dest, phase } => {
                self.copy_context(ctx, src, dest, phase)?
            }
            RecipeStep::Run {
                cmd,
                phase,
                args,
                caches,
                secrets,
                host_ca,
            } => {
                let mut mounts: Vec<Mount> = caches
                    .iter()
                    .map(|c| cache_mount(c, self.cache_key.as_deref()))
                    .collect();
                mounts.extend(secrets.iter().map(|id| secret_mount(id)));
                if *host_ca {
                    mounts.push(Mount::HostCa {
                        target: crate::graph::HOST_CA_BUNDLE.to_string(),
                    });
                }
                self.run(cmd, args, &mounts, phase);
            }
            RecipeStep::Script {
                cmd,
                phase,
                label: None,
            } => self.run(cmd, &[], &[], phase),
            RecipeStep::Script {
                cmd,
                phase,
                label: Some(label),
            } => self.run_labeled(cmd, phase, label),
            RecipeStep::CopyBuild { src, dest, chmod } => {
                let from = match self.target_files {
                    Some(stage) if recipe::STATIC_FILES.iter().any(|(s, _)| s == src) => stage,
                    _ => 0,
                };
                self.copy_stage_to(from, src, dest, chmod.as_deref())
            }
            RecipeStep::Assets(files) => self.copy_inline(files)?,
            RecipeStep::Expose(port) => self.config(
                ConfigChange::ExposedPorts(vec![format!("{port}/tcp")]),
                &format!("EXPOSE {port}"),
            ),
            RecipeStep::User(user) => {
                self.config(ConfigChange::User(user.clone()), &format!("USER {user}"))
            }
            RecipeStep::Entrypoint(args) => self.config(
                ConfigChange::Entrypoint {
                    args: args.clone(),
                    reset_cmd: false,
                },
                &format!(
                    "ENTRYPOINT [{}]",
                    args.iter()
                        .map(|a| format!("{a:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            RecipeStep::Cmd(cmd) => self.config(
                ConfigChange::Cmd(Some(cmd.clone())),
                &format!("CMD {}", serde_json::to_string(cmd)?),
            ),
        }
        Ok(())
    }

    fn push(&mut self, op: graph::Op, phase: &str, text: String) {
        self.stage.steps.push(Step {
            op,
            origin: Some(origin(phase, &text)),
        });
    }

    fn config(&mut self, change: ConfigChange, text: &str) {
        self.push(graph::Op::Config(change), "config", text.to_string());
    }

    fn run(&mut self, cmd: &str, build_args: &[(String, String)], mounts: &[Mount], phase: &str) {
        self.push(
            graph::Op::Run(Run {
                command: vec!["/bin/sh".into(), "-c".into(), cmd.to_string()],
                build_args: build_args.to_vec(),
                mounts: mounts.to_vec(),
                network: Network::Default,
                security: Security::Sandbox,
                context_digest: None,
            }),
            phase,
            format!("RUN {cmd}"),
        );
    }

    /// A `RUN` shown as `text` (a generated script's summary, not its body).
    fn run_labeled(&mut self, cmd: &str, phase: &str, text: &str) {
        self.run(cmd, &[], &[], phase);
        if let Some(last) = self.stage.steps.last_mut() {
            last.origin = Some(origin(phase, text));
        }
    }

    fn copy_context(&mut self, ctx: &Context, src: &str, dest: &str, phase: &str) -> Result<()> {
        let none = Matcher::new::<&str>(&[])?;
        let digest = ctx.digest_sources(&[src.to_string()], &none)?;
        let mut c = Copy::new(
            CopyFrom::Context,
            vec![CopyItem::Path(src.to_string())],
            dest,
        );
        c.context_digest = Some(digest);
        self.push(graph::Op::Copy(c), phase, format!("COPY {src} {dest}"));
        Ok(())
    }

    fn copy_stage_to(&mut self, stage: usize, src: &str, dest: &str, chmod: Option<&str>) {
        let mut c = Copy::new(
            CopyFrom::Stage(stage),
            vec![CopyItem::Path(src.to_string())],
            dest,
        );
        c.chmod = chmod.map(String::from);
        let flag = chmod.map(|m| format!(" --chmod={m}")).unwrap_or_default();
        let name = if stage == 0 { "build" } else { "target-files" };
        self.push(
            graph::Op::Copy(c),
            "runtime",
            format!("COPY --from={name}{flag} {src} {dest}"),
        );
    }

    fn copy_inline(&mut self, files: &[(String, String)]) -> Result<()> {
        let items = files
            .iter()
            .map(|(name, content)| CopyItem::Inline {
                name: name.clone(),
                content: content.clone(),
            })
            .collect();
        let c = Copy::new(CopyFrom::Context, items, &format!("{ASSETS_DIR}/"));
        self.push(
            graph::Op::Copy(c),
            "assets",
            format!("COPY (static assets) {ASSETS_DIR}/"),
        );
        Ok(())
    }

    fn finish(self) -> Stage {
        self.stage
    }
}

fn origin(phase: &str, text: &str) -> Origin {
    Origin {
        file: format!("{ORIGIN_FILE}:{phase}"),
        line: 0,
        text: text.to_string(),
    }
}

/// The build summary `--debug` prints (Nixpacks' box, as plain lines).
pub fn summary(plan: &BuildPlan) -> Result<String> {
    let mut rows: BTreeMap<usize, (String, String)> = BTreeMap::new();
    let order = super::phase_order(plan)?;
    for (i, name) in order.iter().enumerate() {
        let Some(p) = plan.phase(name) else { continue };
        let mut parts = Vec::new();
        if let Some(pk) = &p.apt_pkgs
            && !pk.is_empty()
        {
            parts.push(format!("packages: {}", pk.join(", ")));
        }
        if let Some(c) = &p.cmds {
            parts.extend(c.iter().cloned());
        }
        if !parts.is_empty() {
            rows.insert(i, (name.clone(), parts.join(" | ")));
        }
    }
    let mut out = format!(
        "providers: {}\n",
        plan.providers.clone().unwrap_or_default().join(", ")
    );
    for (name, text) in rows.values() {
        out.push_str(&format!("{name:<8} │ {text}\n"));
    }
    let start = plan.start.clone().unwrap_or_default();
    out.push_str(&format!(
        "{:<8} │ {}\n",
        "start",
        start.cmd.unwrap_or_else(|| "(none)".into())
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_generated_dockerfile_is_not_part_of_the_apps_context() {
        let t = tempfile::tempdir().unwrap();
        let (m, file) = context_ignore(t.path()).unwrap();
        assert!(file.is_none());
        assert!(m.excludes("Dockerfile.kiln"));
        assert!(!m.excludes("Dockerfile"));
    }
    use super::*;

    /// docs/plan.md: a `--secret` is at `/run/secrets/NAME` (and in the
    /// variable `NAME`) in every build `RUN`; the graph has no value.
    #[test]
    fn secrets_are_files_and_variables_of_every_build_run() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Procfile"), "web: sh -c 'echo hi'\n").unwrap();
        let opts = crate::plan::Options {
            build_cmd: Some("cat /run/secrets/tok".into()),
            install_cmd: Some("echo $tok".into()),
            secrets: vec!["tok".into()],
            ..Default::default()
        };
        let plan = crate::plan::generate(dir.path(), &[], &opts).unwrap();
        let (matcher, _) = context_ignore(dir.path()).unwrap();
        let ctx = Context::open(dir.path(), matcher).unwrap();
        let lowered = lower(
            &plan,
            &ctx,
            &LowerOptions {
                platform: crate::platform::Platform::linux("amd64", None),
                build_ca: Vec::new(),
                host_ca: false,
                ..Default::default()
            },
        )
        .unwrap();
        let build = &lowered.stages[0];
        let runs: Vec<&Run> = build
            .steps
            .iter()
            .filter_map(|s| match &s.op {
                graph::Op::Run(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(runs.len(), 2, "{runs:?}");
        for r in runs {
            let secrets: Vec<&Mount> = r
                .mounts
                .iter()
                .filter(|m| matches!(m, Mount::Secret { .. }))
                .collect();
            assert_eq!(
                secrets,
                vec![&Mount::Secret {
                    id: "tok".into(),
                    target: Some("/run/secrets/tok".into()),
                    env: Some("tok".into()),
                    required: false,
                    mode: 0o400,
                    uid: 0,
                    gid: 0,
                }],
                "{r:?}"
            );
        }
    }

    /// docs/auto.md: with the host's CA on, every build RUN mounts the
    /// host's bundle over the system one and gets the tools' CA variables;
    /// the runtime stage has neither, and off means no mount at all.
    #[test]
    fn host_ca_is_mounted_in_build_runs_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Procfile"), "web: sh -c 'echo hi'\n").unwrap();
        let opts = crate::plan::Options {
            build_cmd: Some("make".into()),
            install_cmd: Some("npm ci".into()),
            ..Default::default()
        };
        let plan = crate::plan::generate(dir.path(), &[], &opts).unwrap();
        let (matcher, _) = context_ignore(dir.path()).unwrap();
        let ctx = Context::open(dir.path(), matcher).unwrap();
        let runs = |host_ca: bool| -> Vec<(usize, Run)> {
            let g = lower(
                &plan,
                &ctx,
                &LowerOptions {
                    platform: crate::platform::Platform::linux("amd64", None),
                    build_ca: Vec::new(),
                    host_ca,
                    ..Default::default()
                },
            )
            .unwrap();
            g.stages
                .iter()
                .enumerate()
                .flat_map(|(i, st)| {
                    st.steps.iter().filter_map(move |s| match &s.op {
                        graph::Op::Run(r) => Some((i, r.clone())),
                        _ => None,
                    })
                })
                .collect()
        };
        let on = runs(true);
        let (build, runtime): (Vec<_>, Vec<_>) = on.iter().partition(|(stage, _)| *stage == 0);
        assert_eq!(build.len(), 2, "{on:?}");
        // The runtime stage's own checks download nothing.
        for (_, r) in &runtime {
            assert!(
                !r.mounts.iter().any(|m| matches!(m, Mount::HostCa { .. })),
                "{r:?}"
            );
        }
        for (_, r) in &build {
            assert!(
                r.mounts.contains(&Mount::HostCa {
                    target: "/etc/ssl/certs/ca-certificates.crt".into()
                }),
                "{r:?}"
            );
            for (k, v) in crate::plan::recipe::CA_BUNDLE_VARS {
                assert!(
                    r.build_args.iter().any(|(bk, bv)| bk == k && bv == v),
                    "{k} missing: {r:?}"
                );
            }
        }
        for (_, r) in runs(false) {
            assert!(
                !r.mounts.iter().any(|m| matches!(m, Mount::HostCa { .. })),
                "{r:?}"
            );
            assert!(!r.build_args.iter().any(|(k, _)| k == "SSL_CERT_FILE"));
        }
    }

    /// A Procfile app's plan with `env` (`-e`) and `opts`, lowered.
    fn lowered(
        env: &[&str],
        opts: crate::plan::Options,
        lower_opts: LowerOptions,
    ) -> Result<Graph> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Procfile"), "web: sh -c 'echo hi'\n").unwrap();
        let env: Vec<String> = env.iter().map(|s| s.to_string()).collect();
        let plan = crate::plan::generate(dir.path(), &env, &opts)?;
        let (matcher, _) = context_ignore(dir.path()).unwrap();
        let ctx = Context::open(dir.path(), matcher).unwrap();
        lower(&plan, &ctx, &lower_opts)
    }

    fn configs(stage: &Stage) -> Vec<&ConfigChange> {
        stage
            .steps
            .iter()
            .filter_map(|s| match &s.op {
                graph::Op::Config(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    fn env_names(stage: &Stage) -> Vec<String> {
        configs(stage)
            .into_iter()
            .filter_map(|c| match c {
                ConfigChange::Env(e) => Some(e.iter().map(|(k, _)| k.clone())),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn build_runs(g: &Graph) -> Vec<&Run> {
        g.stages[0]
            .steps
            .iter()
            .filter_map(|s| match &s.op {
                graph::Op::Run(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// docs/nixpacks-migration.md: `-e` (Nixpacks' `--env`) is in the
    /// image's ENV and the build steps'; `--build-env` only in the steps,
    /// where it wins over an image variable of the same name.
    #[test]
    fn env_reaches_the_image_and_build_env_only_the_steps() {
        let opts = crate::plan::Options {
            build_cmd: Some("make".into()),
            build_env: vec!["BUILD_TOKEN=t".into(), "SHARED=build".into()],
            ..Default::default()
        };
        // One name with both flags is refused (which should win?).
        let e = lowered(
            &["GREETING=hi", "SHARED=x"],
            opts.clone(),
            LowerOptions::default(),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("both -e"), "{e:#}");
        let opts = crate::plan::Options {
            build_env: vec!["BUILD_TOKEN=t".into()],
            ..opts
        };
        let g = lowered(&["GREETING=hi"], opts, LowerOptions::default()).unwrap();
        let runtime = env_names(&g.stages[1]);
        assert!(runtime.contains(&"GREETING".to_string()), "{runtime:?}");
        assert!(!runtime.contains(&"BUILD_TOKEN".to_string()), "{runtime:?}");
        let build = env_names(&g.stages[0]);
        assert!(build.contains(&"GREETING".to_string()), "{build:?}");
        let runs = build_runs(&g);
        assert!(!runs.is_empty());
        for r in runs {
            assert!(
                r.build_args.contains(&("BUILD_TOKEN".into(), "t".into())),
                "{r:?}"
            );
        }
        let e = lowered(
            &[],
            crate::plan::Options {
                build_env: vec!["KILN_START_CMD=x".into()],
                ..Default::default()
            },
            LowerOptions::default(),
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("--build-env KILN_START_CMD"),
            "{e:#}"
        );
    }

    /// `--cache-key KEY`: every cache mount id is `KEY-DIR`.
    #[test]
    fn cache_key_prefixes_cache_mount_ids() {
        let ids = |key: Option<&str>| -> Vec<String> {
            let g = lowered(
                &["KILN_BUILD_CACHE_DIRS=/root/.npm"],
                crate::plan::Options {
                    build_cmd: Some("make".into()),
                    ..Default::default()
                },
                LowerOptions {
                    cache_key: key.map(String::from),
                    ..Default::default()
                },
            )
            .unwrap();
            build_runs(&g)
                .iter()
                .flat_map(|r| r.mounts.iter())
                .filter_map(|m| match m {
                    Mount::Cache { id, .. } => Some(id.clone()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(ids(None), vec!["/root/.npm"]);
        assert_eq!(ids(Some("app1")), vec!["app1-/root/.npm"]);
    }

    /// `--no-error-without-start`: no start command gives an image
    /// without CMD; without the flag it is the error naming the ways to
    /// set one.
    #[test]
    fn no_start_command_is_an_error_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<p>hi</p>\n").unwrap();
        let opts = crate::plan::Options {
            build_cmd: Some("true".into()),
            ..Default::default()
        };
        let plan = crate::plan::generate(dir.path(), &[], &opts).unwrap();
        let plan = BuildPlan {
            start: None,
            ..plan
        };
        let (matcher, _) = context_ignore(dir.path()).unwrap();
        let ctx = Context::open(dir.path(), matcher).unwrap();
        let e = lower(&plan, &ctx, &LowerOptions::default()).unwrap_err();
        assert!(
            format!("{e:#}").contains("--no-error-without-start"),
            "{e:#}"
        );
        let g = lower(
            &plan,
            &ctx,
            &LowerOptions {
                allow_no_start: true,
                ..Default::default()
            },
        )
        .unwrap();
        let runtime = configs(&g.stages[1]);
        assert!(
            !runtime.iter().any(|c| matches!(c, ConfigChange::Cmd(_))),
            "{runtime:?}"
        );
    }
}

#[cfg(test)]
mod cross_tests {
    use super::*;
    use crate::platform::Platform;

    fn lowered(example: &str, env: &[String], platform: &str) -> Graph {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(example);
        let plan = crate::plan::generate(&dir, env, &Default::default()).unwrap();
        let (matcher, _) = context_ignore(&dir).unwrap();
        let ctx = Context::open(&dir, matcher).unwrap();
        lower(
            &plan,
            &ctx,
            &LowerOptions {
                platform: Platform::parse(platform).unwrap(),
                build_platform: Platform::linux("amd64", None),
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn env_of(stage: &Stage) -> Vec<(String, String)> {
        stage
            .steps
            .iter()
            .filter_map(|s| match &s.op {
                graph::Op::Config(ConfigChange::Env(e)) => Some(e.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Which stage each runtime `COPY --from` reads, by source path.
    fn copies_from(stage: &Stage) -> BTreeMap<String, usize> {
        stage
            .steps
            .iter()
            .filter_map(|s| match &s.op {
                graph::Op::Copy(Copy {
                    from: CopyFrom::Stage(i),
                    items,
                    ..
                }) => match items.as_slice() {
                    [CopyItem::Path(p)] => Some((p.clone(), *i)),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// A Go app for arm64 built on amd64: the build stage runs on amd64
    /// with GOOS/GOARCH for arm64 (go build is not emulated), the runtime
    /// is arm64 and takes the binary from the build stage but tini from
    /// an arm64 package base (the build stage's tini is amd64).
    #[test]
    fn go_for_a_foreign_platform_cross_compiles_on_the_build_machine() {
        let g = lowered("go-mod", &[], "linux/arm64");
        assert_eq!(g.stages.len(), 3);
        assert_eq!(g.stages[0].platform, "linux/amd64");
        assert_eq!(g.stages[1].platform, "linux/arm64");
        assert_eq!(g.stages[2].platform, "linux/arm64");
        let env = env_of(&g.stages[0]);
        assert!(env.contains(&("GOOS".into(), "linux".into())), "{env:?}");
        assert!(env.contains(&("GOARCH".into(), "arm64".into())), "{env:?}");
        let Base::Packages(p) = &g.stages[2].base else {
            panic!("the target's files come from a package base")
        };
        assert!(p.packages.iter().any(|p| p == "tini"));
        let from = copies_from(&g.stages[1]);
        assert_eq!(from["/usr/bin/tini-static"], 2, "{from:?}");
        assert_eq!(from["/usr/share/zoneinfo"], 2, "{from:?}");
        assert_eq!(from[recipe::EMPTY_DIR], 0, "{from:?}");
        assert_eq!(from["/app/out"], 0, "{from:?}");
        assert_eq!(crate::graph::deps::build_order(&g, 1).unwrap().len(), 3);
    }

    /// Native builds keep two stages and no GOARCH; with cgo, and for a
    /// provider that does not cross-compile, the build stage is the
    /// target's (emulated).
    #[test]
    fn native_cgo_and_other_providers_build_on_the_target_platform() {
        let native = lowered("go-mod", &[], "linux/amd64");
        assert_eq!(native.stages.len(), 2);
        assert!(!env_of(&native.stages[0]).iter().any(|(k, _)| k == "GOARCH"));
        for g in [
            lowered("go-mod", &["CGO_ENABLED=1".to_string()], "linux/arm64"),
            lowered("node-vite-react", &[], "linux/arm64"),
            lowered("ruby-rails", &[], "linux/arm64"),
        ] {
            assert_eq!(g.stages.len(), 2);
            assert_eq!(g.stages[0].platform, "linux/arm64");
            assert!(!env_of(&g.stages[0]).iter().any(|(k, _)| k == "GOARCH"));
        }
    }

    /// The shell commands of a stage's `RUN` steps.
    fn runs(stage: &Stage) -> Vec<String> {
        stage
            .steps
            .iter()
            .filter_map(|s| match &s.op {
                graph::Op::Run(r) => r.command.last().cloned(),
                _ => None,
            })
            .collect()
    }

    /// python-flask (pip) for arm64 on amd64: the build stage runs on
    /// amd64 and its install is pip's cross install for aarch64 (the
    /// script in the stage's variables, the requirements and the server
    /// kiln adds as arguments); the runtime is arm64 and takes the app and
    /// the venv from the build stage. No `target-files` stage: the
    /// runtime is the target's Debian packages.
    #[test]
    fn python_pip_for_a_foreign_platform_installs_the_targets_wheels_natively() {
        let g = lowered("python-flask", &[], "linux/arm64");
        assert_eq!(g.stages.len(), 2);
        assert_eq!(g.stages[0].platform, "linux/amd64");
        assert_eq!(g.stages[1].platform, "linux/arm64");
        let env = env_of(&g.stages[0]);
        let script = env
            .iter()
            .find(|(k, _)| k == "KILN_PIP_CROSS")
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no cross install script: {env:?}"));
        assert!(script.contains("--only-binary=:all:"), "{script}");
        assert!(script.contains(crate::plan::providers::EMULATE_MARKER));
        let install: Vec<String> = runs(&g.stages[0])
            .into_iter()
            .filter(|c| c.contains("/opt/venv"))
            .collect();
        assert_eq!(
            install,
            [
                "python3 -m venv /opt/venv && . /opt/venv/bin/activate && python3 -c \"$KILN_PIP_CROSS\" aarch64 -r requirements.txt"
            ]
        );
        assert!(!env_of(&g.stages[1]).iter().any(|(k, _)| k == "KILN_PIP_CROSS"));
        let from = copies_from(&g.stages[1]);
        assert_eq!(from["/app"], 0, "{from:?}");
        assert_eq!(from["/opt/venv"], 0, "{from:?}");
        let Base::Packages(p) = &g.stages[1].base else {
            panic!("the runtime is a package base")
        };
        assert!(p.packages.iter().any(|p| p == "python3"), "{p:?}");
    }

    /// The server kiln adds (gunicorn for Flask when requirements.txt
    /// lacks it) is one more argument of the same cross install; the
    /// amd64 target from an arm64 machine is x86_64's.
    #[test]
    fn python_cross_install_takes_the_added_server_and_the_targets_machine() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("requirements.txt"), "flask==3.1.1\n").unwrap();
        std::fs::write(
            dir.path().join("app.py"),
            "from flask import Flask\napp = Flask(__name__)\n",
        )
        .unwrap();
        let plan = crate::plan::generate(dir.path(), &[], &Default::default()).unwrap();
        let (matcher, _) = context_ignore(dir.path()).unwrap();
        let ctx = Context::open(dir.path(), matcher).unwrap();
        let g = lower(
            &plan,
            &ctx,
            &LowerOptions {
                platform: Platform::linux("amd64", None),
                build_platform: Platform::linux("arm64", None),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(g.stages[0].platform, "linux/arm64");
        assert!(
            runs(&g.stages[0]).iter().any(|c| c.ends_with(
                "python3 -c \"$KILN_PIP_CROSS\" x86_64 -r requirements.txt gunicorn==23.0.0"
            )),
            "{:?}",
            runs(&g.stages[0])
        );
    }

    /// Whatever might run the venv's programs in the build stage (a build
    /// command, another package manager's install, a user's install
    /// command), or copy more of the build stage into the runtime, keeps
    /// the build on the target platform (emulated); so does a runtime
    /// that is the build stage.
    #[test]
    fn python_builds_that_may_run_the_venv_stay_on_the_target_platform() {
        for (example, env) in [
            ("python-flask", "NIXPACKS_BUILD_CMD=python -c 'import flask'"),
            ("python-flask", "NIXPACKS_INSTALL_CMD=pip install -r requirements.txt"),
            ("python-flask", "KILN_RUNTIME=build"),
            ("python-poetry", "KILN_X=1"),
            ("python-uv", "KILN_X=1"),
        ] {
            let g = lowered(example, &[env.to_string()], "linux/arm64");
            assert_eq!(g.stages[0].platform, "linux/arm64", "{example} {env}");
            assert!(
                !env_of(&g.stages[0]).iter().any(|(k, _)| k == "KILN_PIP_CROSS"),
                "{example} {env}"
            );
        }
        // A runtime that copies more of the build stage than the app and
        // the venv (the build machine's files).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python-flask");
        let mut plan = crate::plan::generate(&dir, &[], &Default::default()).unwrap();
        plan.start.as_mut().unwrap().only_include_files =
            Some(vec![".".into(), "/opt/venv".into(), "/usr/lib/extra".into()]);
        let (matcher, _) = context_ignore(&dir).unwrap();
        let ctx = Context::open(&dir, matcher).unwrap();
        let g = lower(
            &plan,
            &ctx,
            &LowerOptions {
                platform: Platform::linux("arm64", None),
                build_platform: Platform::linux("amd64", None),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(g.stages[0].platform, "linux/arm64");
        // Natively, nothing changes: pip's own install.
        let native = lowered("python-flask", &[], "linux/amd64");
        assert!(!env_of(&native.stages[0]).iter().any(|(k, _)| k == "KILN_PIP_CROSS"));
        assert!(
            runs(&native.stages[0])
                .iter()
                .any(|c| c.ends_with("pip install -r requirements.txt")),
            "{:?}",
            runs(&native.stages[0])
        );
    }

    /// The cross decision for an example (or a temp dir) for arm64 on
    /// amd64.
    fn decision(dir: &std::path::Path) -> Cross {
        let plan = crate::plan::generate(dir, &[], &Default::default()).unwrap();
        let (matcher, _) = context_ignore(dir).unwrap();
        let ctx = Context::open(dir, matcher).unwrap();
        cross_build(
            &plan,
            &ctx,
            &LowerOptions {
                platform: Platform::linux("arm64", None),
                build_platform: Platform::linux("amd64", None),
                ..Default::default()
            },
        )
    }

    fn example(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name)
    }

    /// node-npm (express: pure JavaScript, its lockfile names no CPU and
    /// no install script) for arm64: `npm ci` runs natively, unchanged,
    /// and the arm64 runtime (its nodejs) takes the app.
    #[test]
    fn node_with_pure_js_dependencies_installs_natively() {
        let g = lowered("node-npm", &[], "linux/arm64");
        assert_eq!(g.stages.len(), 2);
        assert_eq!(g.stages[0].platform, "linux/amd64");
        assert_eq!(g.stages[1].platform, "linux/arm64");
        let native = lowered("node-npm", &[], "linux/amd64");
        assert_eq!(runs(&g.stages[0]), runs(&native.stages[0]));
        assert!(runs(&g.stages[0]).iter().any(|c| c.contains("npm ci")));
        assert_eq!(copies_from(&g.stages[1])["/app"], 0);
    }

    /// What npm would build or pick for one CPU keeps the build on the
    /// target, and the reason names the package (or the app's file).
    #[test]
    fn node_with_native_or_cpu_specific_packages_builds_on_the_target() {
        let reason = |c: Cross| match c {
            Cross::Emulate(why) => why,
            other => panic!("{other:?}"),
        };
        let vite = reason(decision(&example("node-vite-react")));
        assert!(vite.starts_with("package-lock.json: "), "{vite}");
        assert!(
            vite.contains("runs an install script") || vite.contains("for some CPUs only"),
            "{vite}"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"name":"a","scripts":{"start":"node index.js"},"dependencies":{"esbuild":"0.25.0"}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("index.js"), "").unwrap();
        let lock = |extra: &str| {
            format!(
                r#"{{"name":"a","lockfileVersion":3,"packages":{{"":{{"name":"a"}},"node_modules/esbuild":{{"version":"0.25.0"{extra}}}}}}}"#
            )
        };
        std::fs::write(dir.path().join("package-lock.json"), lock("")).unwrap();
        assert!(matches!(decision(dir.path()), Cross::Build(_)));
        std::fs::write(
            dir.path().join("package-lock.json"),
            lock(r#","hasInstallScript":true"#),
        )
        .unwrap();
        assert_eq!(
            reason(decision(dir.path())),
            "package-lock.json: esbuild runs an install script"
        );
        std::fs::write(
            dir.path().join("package-lock.json"),
            lock(r#","cpu":["x64"]"#),
        )
        .unwrap();
        assert_eq!(
            reason(decision(dir.path())),
            r#"package-lock.json: esbuild is for some CPUs only (["x64"])"#
        );
        std::fs::write(dir.path().join("package-lock.json"), lock("")).unwrap();
        std::fs::write(dir.path().join("binding.gyp"), "{}").unwrap();
        assert!(reason(decision(dir.path())).starts_with("binding.gyp"));
    }
}
