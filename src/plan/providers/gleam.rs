//! Gleam (`gleam.toml` + `manifest.toml`): Debian's Erlang, the gleam
//! compiler (upstream; its version from `gleam.toml`'s `gleam` key or
//! `.tool-versions`, not from gleam_stdlib's), an Erlang shipment.

use super::{Provider, existing, tool_versions, upstream};
use crate::plan::context::{Ctx, tstr};
use crate::plan::model::{BuildPlan, Phase, StartPhase};

pub struct Gleam;
const DEFAULT: &str = "1.12.0";

impl Provider for Gleam {
    fn name(&self) -> &'static str {
        "gleam"
    }
    fn looks_for(&self) -> &'static str {
        "gleam.toml and manifest.toml"
    }
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok((ctx.is_file("gleam.toml") && ctx.is_file("manifest.toml"))
            .then(|| "gleam.toml + manifest.toml".into()))
    }
    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let cfg = ctx.toml("gleam.toml")?.unwrap_or_default();
        let (version, source) = match (tstr(&cfg, "gleam"), tool_versions(ctx, "gleam")) {
            (Some(v), _) if v.chars().next().is_some_and(|c| c.is_ascii_digit()) => {
                (v.to_string(), "gleam.toml (gleam)".to_string())
            }
            (_, Some(v)) => (v.text, v.source),
            _ => (DEFAULT.to_string(), "default".to_string()),
        };
        let mut plan = BuildPlan::default();
        plan.add_phase(Phase::new("setup").apt(&["erlang-nox", "erlang-dev", "rebar3"]));
        upstream(
            &mut plan,
            "gleam",
            &version,
            &source,
            format!(
                "curl -fsSL https://github.com/gleam-lang/gleam/releases/download/v{version}/gleam-v{version}-x86_64-unknown-linux-musl.tar.gz | tar -xz -C /usr/local/bin"
            ),
        );
        plan.add_phase(
            Phase::new("install")
                .cmd("gleam deps download")
                .files(existing(ctx, &["gleam.toml", "manifest.toml"])),
        );
        plan.add_phase(Phase::new("build").cmd("gleam export erlang-shipment"));
        plan.set_start(
            StartPhase::cmd("./build/erlang-shipment/entrypoint.sh run")
                .runtime(&["erlang-nox"])
                .include(&["build/erlang-shipment"]),
        );
        Ok(plan)
    }
}
