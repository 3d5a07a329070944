//! Rust (`Cargo.toml`): Debian's rustc/cargo, with `rust-toolchain(.toml)`
//! pins, `rust-version` minimums and `KILN_RUST_VERSION` resolved against
//! the suites (an error when unsatisfiable); binaries copied to `bin/`;
//! the runtime stage gets only them. The musl target follows Nixpacks only
//! when asked (`KILN_RUST_TARGET`), so it never depends on the host arch.

use anyhow::bail;

use super::{Provider, VersionReq, env_version};
use crate::plan::context::{Ctx, locate, tstr};
use crate::plan::model::{BuildPlan, Phase, StartPhase};
use crate::plan::versions::Kind;

pub struct Rust;

fn version(ctx: &Ctx, cargo: &toml::Table) -> crate::Result<Option<VersionReq>> {
    if let Some(v) = env_version(ctx, "RUST_VERSION") {
        return Ok(Some(v));
    }
    for f in ["rust-toolchain.toml", "rust-toolchain"] {
        let Some(text) = ctx.read(f) else { continue };
        let channel = if text.contains("[toolchain]") {
            let t = ctx.toml(f)?.unwrap_or_default();
            tstr(&t, "toolchain.channel").map(String::from)
        } else {
            text.lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(String::from)
        };
        let Some(channel) = channel else { continue };
        let src = locate(&text, f, &channel);
        if channel == "stable" {
            return Ok(Some(VersionReq::new("*", src, Kind::Range)));
        }
        if channel.starts_with("nightly") || channel.starts_with("beta") {
            bail!(
                "{src}: the `{channel}` Rust channel is not available from Debian: pin a stable version (e.g. `1.85`) or use `buildImage` with your own toolchain"
            );
        }
        return Ok(Some(VersionReq::new(channel, src, Kind::Pin)));
    }
    if let Some(v) = tstr(cargo, "package.rust-version") {
        let src = ctx
            .read("Cargo.toml")
            .map(|t| locate(&t, "Cargo.toml", "rust-version"))
            .unwrap_or_default();
        return Ok(Some(VersionReq::new(v, src, Kind::Minimum)));
    }
    Ok(None)
}

/// Binaries: the package when `src/main.rs` exists, `[[bin]]` names, `src/bin/*`.
fn binaries(ctx: &Ctx, cargo: &toml::Table) -> Vec<String> {
    let mut out = Vec::new();
    let name = tstr(cargo, "package.name");
    if let Some(n) = name.filter(|_| ctx.is_file("src/main.rs")) {
        out.push(n.to_string());
    }
    for b in cargo
        .get("bin")
        .and_then(|b| b.as_array())
        .into_iter()
        .flatten()
    {
        if let Some(n) = b.get("name").and_then(|n| n.as_str()) {
            out.push(n.to_string());
        }
    }
    if let Ok(rd) = std::fs::read_dir(ctx.path("src/bin")) {
        let mut v: Vec<String> = rd
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|f| f.trim_end_matches(".rs").to_string())
            .collect();
        v.sort();
        out.extend(v);
    }
    out.dedup();
    out
}

pub fn plan(ctx: &Ctx) -> crate::Result<BuildPlan> {
    let cargo = ctx.toml("Cargo.toml")?.unwrap_or_default();
    let mut plan = BuildPlan::default();
    plan.add_toolchain("rust", version(ctx, &cargo)?);
    let openssl = ["dependencies", "dev-dependencies", "build-dependencies"]
        .iter()
        .any(|k| cargo.get(*k).and_then(|d| d.get("openssl")).is_some())
        || ctx
            .read("Cargo.lock")
            .is_some_and(|l| l.contains("name = \"openssl-sys\""));
    let mut setup = Phase::new("setup").apt(&["rustc", "cargo", "gcc", "libc6-dev", "pkg-config"]);
    let mut runtime = vec!["ca-certificates"];
    if openssl {
        setup = setup.apt(&["libssl-dev"]);
        runtime.push("libssl3t64");
    }
    plan.add_phase(setup);

    let workspace = ctx.env.opt("CARGO_WORKSPACE");
    let target = ctx.env.opt("RUST_TARGET");
    let mut build = Phase::new("build").depends(&["setup"]).cmd("mkdir -p bin");
    let mut cargo_cmd = "cargo build --release".to_string();
    if let Some(ws) = &workspace {
        cargo_cmd.push_str(&format!(" --package {ws}"));
    }
    if let Some(t) = &target {
        cargo_cmd.push_str(&format!(" --target {t}"));
    }
    build = build.cmd(cargo_cmd);
    let dir = match &target {
        Some(t) => format!("target/{t}/release"),
        None => "target/release".into(),
    };
    let bins = match &workspace {
        Some(ws) => vec![ws.clone()],
        None => binaries(ctx, &cargo),
    };
    for b in &bins {
        build = build.cmd(format!("cp {dir}/{b} bin"));
    }
    // The target dir stays outside the mount so `cp` above sees the binaries;
    // the registry and git caches are what save time.
    build = build.cache(&["/root/.cargo/git", "/root/.cargo/registry"]);
    plan.add_phase(build);
    plan.set_var("ROCKET_ADDRESS", "0.0.0.0");

    let chosen = if let Some(b) = ctx.env.opt("RUST_BIN") {
        if !bins.contains(&b) {
            bail!(
                "KILN_RUST_BIN/NIXPACKS_RUST_BIN names `{b}`, but the binaries are: {}",
                bins.join(", ")
            );
        }
        Some(b)
    } else if bins.len() == 1 {
        bins.first().cloned()
    } else {
        tstr(&cargo, "package.default-run").map(String::from)
    };
    let start = match chosen {
        Some(b) => StartPhase::cmd(format!("./bin/{b}")).include(&["bin"]),
        None => StartPhase::default().include(&["bin"]),
    };
    plan.set_start(start.runtime(&runtime));
    Ok(plan)
}

impl Provider for Rust {
    fn name(&self) -> &'static str {
        "rust"
    }

    fn looks_for(&self) -> &'static str {
        "Cargo.toml"
    }

    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(ctx.is_file("Cargo.toml").then(|| "Cargo.toml".to_string()))
    }

    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        plan(ctx)
    }
}
