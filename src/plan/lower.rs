//! A [`BuildPlan`] lowered to the build graph: the auto builder's frontend.
//!
//! Two stages, the shape `kiln dockerfile` writes for BuildKit users, but
//! with Debian package bases instead of `apt-get` in a container:
//!
//! 1. `build`: a `minbase` package set (a shell, coreutils, tar, grep…
//!    that build scripts expect) plus every phase's `aptPkgs`. Each phase
//!    copies its inputs just before it runs: `onlyIncludeFiles` (manifests
//!    and lockfiles, so a source edit keeps the install step cached), or the
//!    whole source for the first phase without a list. `cacheDirectories`
//!    become cache mounts, build secrets are mounted at
//!    `/run/secrets/NAME` and given as the variable `NAME` to the steps that
//!    may read them, build-only variables as step arguments (never in the
//!    image config).
//! 2. `runtime`: a `minimal` package set with the start phase's `aptPkgs`
//!    (or the plan's `runImage`), then only what the start command needs
//!    (`start.onlyIncludeFiles`, default the app dir), the plan's
//!    variables, `start.user` and the start command as the process.
//!
//! The start command runs as PID 1's direct child or as PID 1: exec form
//! when it is a plain command line, `sh -c 'exec …'` otherwise
//! ([`crate::dockerfile::generate::exec_form`]), never a login shell.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};

use super::BuildPlan;
use crate::Result;
use crate::dockerfile::context::Context;
use crate::dockerfile::generate::exec_form;
use crate::dockerfile::ignore::Matcher;
use crate::error::{CodedError, code};
use crate::graph::{
    self, Base, ConfigChange, Copy, CopyFrom, CopyItem, Graph, Mount, Network, Origin, PackageSet,
    Run, Security, Sharing, Stage, Step,
};
use crate::packages::image::PATH;
use crate::packages::resolve::Base as PackageBase;

/// Where the app lives in both stages (Nixpacks' `/app`).
pub const APP_DIR: &str = "/app";

/// Where `staticAssets` are written in the image.
pub const ASSETS_DIR: &str = "/assets";

/// The runtime image's PID 1 (Debian's `tini`), the start command its child.
pub const INIT: &[&str] = &["/usr/bin/tini", "-s", "--"];

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

/// Appended to `PATH` in both stages (Debian's games directory).
const GAMES: &str = "/usr/games";

/// An empty directory the build stage makes for the static runtime's /tmp.
const EMPTY_DIR: &str = "/.kiln-empty";

/// The absolute paths the runtime stage copies from the build stage, each
/// to the same path: `start.onlyIncludeFiles` (default: the app dir), none
/// when the build stage is the runtime. Both printers of a plan use it.
pub fn runtime_copies(start: &super::model::StartPhase, build_rt: bool) -> Vec<String> {
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
#[derive(Debug, Clone, Default)]
pub struct LowerOptions {
    /// `os/arch[/variant]` of both stages.
    pub platform: String,
    /// Extra CA certificates (file name, PEM) trusted in the build stage,
    /// for networks that intercept TLS; never in the runtime image.
    pub build_ca: Vec<(String, String)>,
    /// The build steps trust the host's CA bundle: it is mounted over the
    /// stage's ([`crate::solver::trust::BUNDLE`], see
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

/// The graph for `plan` over the walked source tree `ctx`.
pub fn lower(plan: &BuildPlan, ctx: &Context, opts: &LowerOptions) -> Result<Graph> {
    let platform = opts.platform.as_str();
    let start = plan.start.clone().unwrap_or_default();
    let start_cmd = start.cmd.clone().filter(|c| !c.trim().is_empty());
    if start_cmd.is_none() && !opts.allow_no_start {
        return Err(CodedError::new(
            code::FAILURE,
            format!(
                "no start command for the app in {} (providers: {}): set one with `[start] cmd = \"…\"` in kiln.toml, NIXPACKS_START_CMD=… (or KILN_START_CMD), a Procfile `web:` line, or `kiln build -s CMD` (or build an image without one: --no-error-without-start)",
                ctx.root.display(),
                plan.providers.clone().unwrap_or_default().join(", ")
            ),
        )
        .into());
    }
    let suite = plan.suite.clone().unwrap_or_else(|| "trixie".to_string());
    let order = super::phase_order(plan)?;

    // Variables: the plan's (image config and steps), PATH with the
    // phases' paths first, build-only ones as step arguments.
    // Debian installs some commands (cowsay, fortune, sl) in /usr/games,
    // which root's default PATH leaves out.
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
    let mut build_args: Vec<(String, String)> = plan
        .build_variables
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Tools that follow reproducible-builds.org (pip's and compileall's
    // hash-based .pyc files, gzip, many compilers) take the layers' epoch.
    if !build_args.iter().any(|(k, _)| k == "SOURCE_DATE_EPOCH") {
        build_args.push((
            "SOURCE_DATE_EPOCH".to_string(),
            crate::oci::layer::source_date_epoch()?.to_string(),
        ));
    }
    if !opts.build_ca.is_empty() || opts.host_ca {
        // Tools that carry their own CA list (uv, cargo, requests) are
        // pointed at the system bundle, which holds the extra CAs.
        for (k, v) in CA_BUNDLE_VARS {
            if !build_args.iter().any(|(bk, _)| bk == k) {
                build_args.push((k.to_string(), v.to_string()));
            }
        }
    }
    let secrets: Vec<Mount> = plan
        .secrets
        .iter()
        .flatten()
        // Both forms, as docs/plan.md promises: the file (what the Dockerfile
        // `kiln dockerfile` writes mounts) and the variable (Nixpacks'
        // way). Neither is in the graph: the values come at run time.
        .map(|id| Mount::Secret {
            id: id.clone(),
            target: Some(format!("/run/secrets/{id}")),
            env: Some(id.clone()),
            required: false,
            mode: 0o400,
            uid: 0,
            gid: 0,
        })
        .collect();

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
    let mut base = build_base(plan, &suite, build_pkgs);
    if let Base::Packages(p) = &mut base {
        p.extra_ca = opts.build_ca.clone();
    }
    let mut b = StageBuilder::new("build", base, platform);
    b.config(ConfigChange::WorkingDir(APP_DIR.into()), "WORKDIR /app");
    let assets: Vec<(String, String)> = plan
        .static_assets
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // A `--build-env` variable overrides an image variable of the same
    // name in the build steps (step arguments lose to ENV).
    let build_env: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !build_args.iter().any(|(bk, _)| bk == k))
        .cloned()
        .collect();
    b.config(ConfigChange::Env(build_env), "ENV (plan variables)");
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
                    if f.is_empty() || ctx.resolve(f).is_none() {
                        continue;
                    }
                    b.copy_context(ctx, f, &format!("{APP_DIR}/{f}"), name)?;
                }
            }
            None if !copied_all && !is_setup => {
                b.copy_context(ctx, ".", &format!("{APP_DIR}/"), name)?;
                copied_all = true;
            }
            _ => {}
        }
        let mut mounts: Vec<Mount> = phase
            .cache_directories
            .iter()
            .flatten()
            .map(|c| cache_mount(&abs(c), opts.cache_key.as_deref()))
            .collect();
        mounts.extend(secrets.iter().cloned());
        if opts.host_ca {
            mounts.push(Mount::HostCa {
                target: crate::solver::trust::BUNDLE.to_string(),
            });
        }
        for c in cmds {
            b.run(&c, &build_args, &mounts, name);
        }
    }
    if !copied_all {
        b.copy_context(ctx, ".", &format!("{APP_DIR}/"), "source")?;
    }
    if static_rt {
        b.run(&format!("mkdir -p {EMPTY_DIR}"), &[], &[], "runtime");
    }
    let build = b.finish();

    // Stage 1: runtime.
    // tini is PID 1: it forwards SIGTERM to the app (a process that is PID
    // 1 itself ignores every signal it installed no handler for, so a plain
    // `node server.js` would never stop) and reaps zombies.
    let mut rt_pkgs = vec!["ca-certificates".to_string(), "tini".to_string()];
    for p in start.apt_pkgs.clone().unwrap_or_default() {
        if !rt_pkgs.contains(&p) {
            rt_pkgs.push(p);
        }
    }
    let rt_base = match &start.run_image {
        Some(image) => Base::Image {
            reference: image.clone(),
        },
        // `runtime = "build"`: the build stage, toolchain, caches' owners
        // and sources included, is the image (what Nixpacks ships).
        None if build_rt => Base::Stage(0),
        None if static_rt => Base::Scratch,
        None => Base::Packages(PackageSet {
            suite: suite.clone(),
            packages: rt_pkgs,
            base: PackageBase::Minimal,
            lock: None,
            extra_ca: Vec::new(),
        }),
    };
    let mut r = StageBuilder::new("runtime", rt_base, platform);
    if static_rt {
        // A static binary needs no libc or shell: the CA bundle, zoneinfo,
        // tini and a /tmp, from the build stage.
        for (src, dest) in [
            (
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/ssl/certs/ca-certificates.crt",
            ),
            ("/usr/share/zoneinfo", "/usr/share/zoneinfo"),
            ("/usr/bin/tini-static", INIT[0]),
        ] {
            r.copy_stage_to(0, src, dest, None);
        }
        r.copy_stage_to(0, EMPTY_DIR, "/tmp", Some("1777"));
    }
    if !assets.is_empty() {
        r.copy_inline(&assets)?;
    }
    let copied = runtime_copies(&start, build_rt);
    for src in &copied {
        r.copy_stage(0, src);
    }
    if !static_rt && !build_rt && start.run_image.is_none() && !copied.is_empty() {
        // Every shared library what was copied needs is in the runtime, or
        // the build says which is missing (not the app at its start).
        let script = super::shared_libs::check_script(&copied, &suite);
        r.run_labeled(
            &script,
            "runtime",
            &format!(
                "RUN (check that the shared libraries of {} are in the runtime)",
                copied.join(" ")
            ),
        );
    }
    r.config(ConfigChange::WorkingDir(APP_DIR.into()), "WORKDIR /app");
    r.config(ConfigChange::Env(env), "ENV (plan variables)");
    if let Some(port) = plan.variables.as_ref().and_then(|v| v.get("PORT"))
        && port.parse::<u16>().is_ok()
    {
        r.config(
            ConfigChange::ExposedPorts(vec![format!("{port}/tcp")]),
            &format!("EXPOSE {port}"),
        );
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
        let script = format!(
            "id -u {user} >/dev/null 2>&1 || {{ echo '{user}:x:1000:1000::/home/{user}:/bin/sh' >> /etc/passwd && echo '{user}:x:1000:' >> /etc/group && mkdir -p /home/{user} && chown 1000:1000 /home/{user}; }}"
        );
        r.run(&script, &[], &[], "start");
        r.config(
            ConfigChange::User(user.to_string()),
            &format!("USER {user}"),
        );
    }
    if start.run_image.is_none() {
        r.config(
            ConfigChange::Entrypoint {
                args: INIT.iter().map(|s| s.to_string()).collect(),
                reset_cmd: false,
            },
            "ENTRYPOINT [\"/usr/bin/tini\", \"-s\", \"--\"]",
        );
    }
    // Without a start command (--no-error-without-start) the image has no
    // CMD: it runs what `podman run IMAGE CMD…` gives, under tini.
    if let Some(start_cmd) = &start_cmd {
        let cmd = exec_form(start_cmd);
        r.config(
            ConfigChange::Cmd(Some(cmd.clone())),
            &format!("CMD {}", serde_json::to_string(&cmd)?),
        );
    }
    let runtime = r.finish();
    Ok(Graph {
        stages: vec![build, runtime],
        target: 1,
    })
}

/// Whether the app is one static binary (Go with `CGO_ENABLED=0`, the Go
/// provider's default): its runtime stage starts from scratch instead of a
/// Debian package set.
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
        && plan.providers.as_deref() == Some(&["go".to_string()][..])
        && plan
            .variables
            .as_ref()
            .and_then(|v| v.get("CGO_ENABLED"))
            .is_some_and(|v| v == "0")
}

fn build_base(plan: &BuildPlan, suite: &str, packages: Vec<String>) -> Base {
    match &plan.build_image {
        Some(image) => Base::Image {
            reference: image.clone(),
        },
        None => Base::Packages(PackageSet {
            suite: suite.to_string(),
            packages,
            base: PackageBase::Minbase,
            lock: None,
            extra_ca: Vec::new(),
        }),
    }
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
}

impl StageBuilder {
    fn new(name: &str, base: Base, platform: &str) -> StageBuilder {
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
                platform: platform.to_string(),
                steps: Vec::new(),
                origin: Some(origin(name, &text)),
            },
        }
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
        let mut c = copy(
            CopyFrom::Context,
            vec![CopyItem::Path(src.to_string())],
            dest,
        );
        c.context_digest = Some(digest);
        self.push(graph::Op::Copy(c), phase, format!("COPY {src} {dest}"));
        Ok(())
    }

    fn copy_stage(&mut self, stage: usize, path: &str) {
        self.copy_stage_to(stage, path, path, None);
    }

    fn copy_stage_to(&mut self, stage: usize, src: &str, dest: &str, chmod: Option<&str>) {
        let mut c = copy(
            CopyFrom::Stage(stage),
            vec![CopyItem::Path(src.to_string())],
            dest,
        );
        c.chmod = chmod.map(String::from);
        let flag = chmod.map(|m| format!(" --chmod={m}")).unwrap_or_default();
        self.push(
            graph::Op::Copy(c),
            "runtime",
            format!("COPY --from=build{flag} {src} {dest}"),
        );
    }

    fn copy_inline(&mut self, files: &[(String, String)]) -> Result<()> {
        for (name, _) in files {
            if name.contains('/') || name == ".." || name.is_empty() {
                bail!("staticAssets: {name:?} must be a plain file name");
            }
        }
        let items = files
            .iter()
            .map(|(name, content)| CopyItem::Inline {
                name: name.clone(),
                content: content.clone(),
            })
            .collect();
        let c = copy(CopyFrom::Context, items, &format!("{ASSETS_DIR}/"));
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

fn copy(from: CopyFrom, items: Vec<CopyItem>, dest: &str) -> Copy {
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
                platform: "linux/amd64".into(),
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
                    platform: "linux/amd64".into(),
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
            for (k, v) in CA_BUNDLE_VARS {
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
