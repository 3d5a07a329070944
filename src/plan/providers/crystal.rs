//! Crystal (`shard.yml`): Debian's crystal, `shards build`, the first
//! target in name order (Nixpacks' hash-map order was non-deterministic).

use super::{Provider, existing, first_file};
use crate::plan::context::Ctx;
use crate::plan::model::{BuildPlan, Phase, StartPhase};

pub struct Crystal;

impl Provider for Crystal {
    fn name(&self) -> &'static str {
        "crystal"
    }
    fn looks_for(&self) -> &'static str {
        "shard.yml"
    }
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(first_file(ctx, &["shard.yml"]))
    }
    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let mut plan = BuildPlan::default();
        plan.add_toolchain("crystal", None);
        plan.add_phase(Phase::new("setup").apt(&[
            "crystal",
            "shards",
            "libssl-dev",
            "libyaml-dev",
            "libz-dev",
        ]));
        plan.add_phase(
            Phase::new("install")
                .cmd("shards install")
                .files(existing(ctx, &["shard.yml", "shard.lock"])),
        );
        plan.add_phase(Phase::new("build").cmd("shards build --release"));
        // targets: a YAML map under `targets:`; keys are indented names.
        let text = ctx.read("shard.yml").unwrap_or_default();
        let mut targets: Vec<String> = Vec::new();
        let mut inside = false;
        for line in text.lines() {
            if line.starts_with("targets:") {
                inside = true;
                continue;
            }
            if inside {
                if !line.starts_with(' ') && !line.trim().is_empty() {
                    break;
                }
                let t = line.trim_end();
                if t.starts_with("  ") && !t.starts_with("   ") && t.ends_with(':') {
                    targets.push(t.trim().trim_end_matches(':').to_string());
                }
            }
        }
        targets.sort();
        let start = match targets.first() {
            Some(t) => StartPhase::cmd(format!("./bin/{t}")),
            None => StartPhase::default(),
        };
        plan.set_start(
            start
                .runtime(&[
                    "libssl3t64",
                    "libyaml-0-2",
                    "libgc1",
                    "libevent-2.1-7t64",
                    "libpcre2-8-0",
                ])
                .include(&["bin"]),
        );
        Ok(plan)
    }
}
