//! `kiln plan`, `kiln detect`, `kiln info` and `kiln dockerfile`: thin
//! wrappers over `kiln::plan` and `kiln::plan::dockerfile`.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::plan::{self, BuildPlan, Options};
use crate::progress::Progress;

/// Inputs that feed a plan (Nixpacks' flags).
#[derive(clap::Args, Debug, Clone)]
pub struct PlanInputs {
    /// The app's source directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Replace the install commands.
    #[arg(short = 'i', long)]
    pub install_cmd: Option<String>,
    /// Replace the build commands.
    #[arg(short = 'b', long)]
    pub build_cmd: Option<String>,
    /// Replace the start command.
    #[arg(short = 's', long)]
    pub start_cmd: Option<String>,
    /// Add Nix packages to setup (mapped to Debian packages).
    #[arg(short = 'p', long = "pkgs", value_name = "PKG")]
    pub pkgs: Vec<String>,
    /// Add Debian packages to setup.
    #[arg(short = 'a', long = "apt", value_name = "PKG")]
    pub apt: Vec<String>,
    /// Add Nix libraries to setup (mapped to Debian packages).
    #[arg(long = "libs", value_name = "LIB")]
    pub libs: Vec<String>,
    /// NAME=VALUE (or NAME to copy it from here) for the build steps and
    /// the image's environment (`variables`), as Nixpacks' --env;
    /// `KILN_*`/`NIXPACKS_*` configure the plan instead.
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,
    /// NAME=VALUE (or NAME) for the build steps only (`buildVariables`).
    #[arg(long = "build-env", value_name = "NAME[=VALUE]")]
    pub build_env: Vec<String>,
    /// Config file, relative to DIR (.toml or .json).
    #[arg(short = 'c', long)]
    pub config: Option<String>,
    /// A secret build steps may read: NAME or id=NAME[,src=FILE|env=VAR].
    /// Only its name enters the plan.
    #[arg(long = "secret", value_name = "SECRET")]
    pub secret: Vec<String>,
}

impl PlanInputs {
    /// The plan, as `kiln build` and `kiln::plan` make it from the same
    /// inputs ([`crate::PlanRequest::plan`]), plus the `KILN_*`/`NIXPACKS_*`
    /// variables of this process (`-e` wins).
    pub fn generate(&self, progress: &Progress) -> crate::Result<BuildPlan> {
        let mut secrets = Vec::new();
        for s in &self.secret {
            secrets.push(secret_name(s)?);
        }
        let req = crate::PlanRequest {
            install_cmd: self.install_cmd.clone(),
            build_cmd: self.build_cmd.clone(),
            start_cmd: self.start_cmd.clone(),
            pkgs: self.pkgs.clone(),
            apt: self.apt.clone(),
            libs: self.libs.clone(),
            env: with_process_options(&self.env),
            build_env: self.build_env.clone(),
            config: self.config.clone(),
            ..Default::default()
        };
        req.plan(&self.dir, secrets, progress)
    }
}

/// The name of a `--secret` (`NAME`, or `id=NAME,src=…`).
pub fn secret_name(s: &str) -> crate::Result<String> {
    let name = if s.contains('=') {
        s.split(',')
            .find_map(|kv| kv.strip_prefix("id="))
            .with_context(|| {
                format!("--secret `{s}`: expected NAME or id=NAME[,src=FILE|env=VAR]")
            })?
    } else {
        s
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        anyhow::bail!(
            "--secret `{s}`: `{name}` is not a secret name (letters, digits, `_`, `-`, `.`)"
        );
    }
    Ok(name.to_string())
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, Default)]
pub enum Format {
    #[default]
    Json,
    Toml,
}

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub inputs: PlanInputs,
    /// Output format.
    #[arg(short = 'f', long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
}

pub fn run_plan(args: PlanArgs, progress: &Progress) -> crate::Result<()> {
    let plan = args.inputs.generate(progress)?;
    println!("{}", render(&plan, args.format)?);
    Ok(())
}

/// The plan as JSON (pretty) or TOML.
pub fn render(plan: &BuildPlan, format: Format) -> crate::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(plan)?,
        Format::Toml => toml::to_string_pretty(plan).context("writing the plan as TOML")?,
    })
}

#[derive(clap::Args, Debug)]
pub struct DetectArgs {
    /// The app's source directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Build environment entry NAME=VALUE.
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,
    /// Config file, relative to DIR.
    #[arg(short = 'c', long)]
    pub config: Option<String>,
    /// Also say why each provider matched.
    #[arg(long)]
    pub explain: bool,
}

pub fn run_detect(args: DetectArgs, progress: &Progress) -> crate::Result<()> {
    let opts = Options {
        config: args.config,
        progress: Some(progress.clone()),
        ..Options::default()
    };
    for d in plan::detect(&args.dir, &with_process_options(&args.env), &opts)? {
        if args.explain {
            println!("{}\t{}", d.provider, d.reason);
        } else {
            println!("{}", d.provider);
        }
    }
    Ok(())
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, Default)]
pub enum InfoFormat {
    #[default]
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub inputs: PlanInputs,
    /// Output format: the text summary, or the same facts as JSON.
    #[arg(short = 'f', long, value_enum, default_value_t = InfoFormat::Text)]
    pub format: InfoFormat,
}

pub fn run_info(args: InfoArgs, progress: &Progress) -> crate::Result<()> {
    let plan = args.inputs.generate(progress)?;
    match args.format {
        InfoFormat::Text => print!("{}", summary(&plan)?),
        InfoFormat::Json => println!("{}", serde_json::to_string_pretty(&info_json(&plan)?)?),
    }
    Ok(())
}

/// What [`summary`] shows, as JSON: `providers`, `suite`, `toolchains`
/// (`name`, `version`, `request`, `source`), `phases` in execution order
/// (`name`, `aptPkgs`, `cmds`), `start` (`cmd`, `aptPkgs`), and the names
/// of `imageEnv`, `buildEnv` and `secrets` (never values of the latter).
pub fn info_json(plan: &BuildPlan) -> crate::Result<serde_json::Value> {
    let mut phases = Vec::new();
    for name in plan::phase_order(plan)? {
        let Some(p) = plan.phase(&name) else { continue };
        phases.push(serde_json::json!({
            "name": name,
            "aptPkgs": p.apt_pkgs.clone().unwrap_or_default(),
            "cmds": p.cmds.clone().unwrap_or_default(),
        }));
    }
    let toolchains: Vec<serde_json::Value> = plan
        .toolchains
        .iter()
        .flatten()
        .map(|t| {
            serde_json::json!({
                "name": t.name,
                "version": t.version,
                "request": t.request,
                "source": t.source.as_deref().unwrap_or("default"),
            })
        })
        .collect();
    let start = plan.start.clone().unwrap_or_default();
    let keys = |m: &Option<std::collections::BTreeMap<String, String>>| -> Vec<String> {
        m.iter().flat_map(|m| m.keys().cloned()).collect()
    };
    Ok(serde_json::json!({
        "providers": plan.providers.clone().unwrap_or_default(),
        "suite": plan.suite,
        "toolchains": toolchains,
        "phases": phases,
        "start": {
            "cmd": start.cmd,
            "aptPkgs": start.apt_pkgs.unwrap_or_default(),
        },
        "imageEnv": keys(&plan.variables),
        "buildEnv": keys(&plan.build_variables),
        "secrets": plan.secrets.clone().unwrap_or_default(),
    }))
}

/// The human summary: providers, toolchains, then one row per phase.
pub fn summary(plan: &BuildPlan) -> crate::Result<String> {
    let mut out = String::new();
    let providers = plan.providers.clone().unwrap_or_default().join(", ");
    let _ = writeln!(
        out,
        "providers  {}",
        if providers.is_empty() {
            "(none)"
        } else {
            &providers
        }
    );
    let _ = writeln!(out, "suite      {}", plan.suite.as_deref().unwrap_or("-"));
    for t in plan.toolchains.iter().flatten() {
        let _ = writeln!(
            out,
            "toolchain  {} {} ({}{})",
            t.name,
            t.version.as_deref().unwrap_or("?"),
            t.request
                .as_deref()
                .map(|r| format!("{r} from "))
                .unwrap_or_default(),
            t.source.as_deref().unwrap_or("default")
        );
    }
    let _ = writeln!(out);
    let row = |out: &mut String, name: &str, lines: Vec<String>| {
        let lines = if lines.is_empty() {
            vec!["-".to_string()]
        } else {
            lines
        };
        for (i, l) in lines.iter().enumerate() {
            let _ = writeln!(out, "{:<12} │ {l}", if i == 0 { name } else { "" });
        }
    };
    for name in plan::phase_order(plan)? {
        let Some(p) = plan.phase(&name) else { continue };
        let mut lines = Vec::new();
        if let Some(a) = p.apt_pkgs.as_ref().filter(|a| !a.is_empty()) {
            lines.push(format!("apt: {}", a.join(" ")));
        }
        lines.extend(p.cmds.iter().flatten().cloned());
        row(&mut out, &name, lines);
    }
    let start = plan.start.clone().unwrap_or_default();
    row(&mut out, "start", start.cmd.into_iter().collect());
    if let Some(a) = start.apt_pkgs.filter(|a| !a.is_empty()) {
        row(&mut out, "runtime", vec![format!("apt: {}", a.join(" "))]);
    }
    let _ = writeln!(out);
    let keys = |m: &Option<std::collections::BTreeMap<String, String>>| {
        m.as_ref()
            .map(|m| m.keys().cloned().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    let _ = writeln!(out, "image env  {}", keys(&plan.variables));
    let _ = writeln!(out, "build env  {}", keys(&plan.build_variables));
    let _ = writeln!(
        out,
        "secrets    {}",
        plan.secrets.clone().unwrap_or_default().join(" ")
    );
    Ok(out)
}

#[derive(clap::Args, Debug)]
pub struct DockerfileArgs {
    #[command(flatten)]
    pub inputs: PlanInputs,
    /// Where to write the Dockerfile; its assets go to `.kiln/assets/` in
    /// DIR (the build context). `-` prints the Dockerfile only.
    #[arg(short = 'o', long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Base image of both stages (default: debian:<suite>-slim).
    #[arg(long, value_name = "REF")]
    pub base_image: Option<String>,
}

pub fn run_dockerfile(args: DockerfileArgs, progress: &Progress) -> crate::Result<()> {
    let plan = args.inputs.generate(progress)?;
    let opts = crate::plan::dockerfile::Options {
        base_image: args.base_image.clone(),
        context: Some(args.inputs.dir.clone()),
    };
    let generated = crate::plan::dockerfile::generate(&plan, &opts)?;
    match args.output.as_deref() {
        Some(p) if p.as_os_str() == "-" => print!("{}", generated.dockerfile),
        out => {
            let out = out
                .map(PathBuf::from)
                .unwrap_or_else(|| args.inputs.dir.join("Dockerfile.kiln"));
            generated.write(&args.inputs.dir, &out)?;
            progress.info(format!("wrote {}", out.display()));
            println!("{}", out.display());
        }
    }
    Ok(())
}

/// `-e` entries preceded by the `KILN_*`/`NIXPACKS_*` variables of kiln's
/// own environment, as Nixpacks reads them: `KILN_START_CMD=… kiln build .`
/// configures the plan, and `-e` (later, so it wins) overrides the
/// environment. Only the plan's options are read from these (see
/// `plan::Env::option`); they never become build or image variables.
pub(crate) fn with_process_options(cli: &[String]) -> Vec<String> {
    let mut out: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("KILN_") || k.starts_with("NIXPACKS_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    out.sort();
    out.extend(cli.iter().cloned());
    out
}
