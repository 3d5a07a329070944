//! Elixir (`mix.exs`): Debian's Elixir/OTP, deps fetched on mix files
//! only, `mix compile` (+ `assets.deploy`), no database steps at build time
//! (Nixpacks ran `mix ecto.setup`), `mix phx.server` for Phoenix apps.

use super::{Provider, VersionReq, env_version, existing, first_file, version_file};
use crate::plan::context::{Ctx, locate};
use crate::plan::model::{BuildPlan, Phase, StartPhase};
use crate::plan::versions::Kind;

pub struct Elixir;

fn version(ctx: &Ctx) -> Option<VersionReq> {
    if let Some(v) = env_version(ctx, "ELIXIR_VERSION") {
        return Some(v);
    }
    if let Some(v) = version_file(ctx, ".elixir-version") {
        return Some(v);
    }
    let text = ctx.read("mix.exs")?;
    let i = text.find("elixir:")?;
    let rest = &text[i..];
    let q: Vec<&str> = rest.splitn(3, '"').collect();
    (q.len() == 3).then(|| VersionReq::new(q[1], locate(&text, "mix.exs", "elixir:"), Kind::Range))
}

impl Provider for Elixir {
    fn name(&self) -> &'static str {
        "elixir"
    }
    fn looks_for(&self) -> &'static str {
        "mix.exs"
    }
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(first_file(ctx, &["mix.exs"]))
    }
    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let mut plan = BuildPlan::default();
        plan.add_toolchain("elixir", version(ctx));
        plan.add_phase(Phase::new("setup").apt(&[
            "elixir",
            "erlang-dev",
            "erlang-nox",
            "rebar3",
            "build-essential",
            "git",
        ]));
        plan.add_phase(
            Phase::new("install")
                .cmd("mix local.hex --force")
                .cmd("mix local.rebar --force")
                .cmd("mix deps.get --only prod")
                .cache(&["/root/.hex", "/root/.cache/rebar3"])
                .files(existing(ctx, &["mix.exs", "mix.lock", "config"])),
        );
        let mut build = Phase::new("build").cmd("mix compile");
        if ctx.contains("mix.exs", "assets.deploy") {
            build = build.cmd("mix assets.deploy");
        }
        plan.add_phase(build);
        plan.set_var("MIX_ENV", "prod");
        plan.set_var("ELIXIR_ERL_OPTIONS", "+fnu");
        let cmd = if ctx.contains("mix.exs", ":phoenix") {
            "mix phx.server"
        } else {
            "mix run --no-halt"
        };
        plan.set_start(
            StartPhase::cmd(cmd)
                .runtime(&["elixir", "erlang-nox"])
                .include(&[".", "/root/.mix", "/root/.hex"]),
        );
        Ok(plan)
    }
}
