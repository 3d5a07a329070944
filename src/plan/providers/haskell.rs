//! Haskell (`package.yaml` + `*.hs`): Debian's haskell-stack, `stack
//! setup`/`stack install`, the first executable in name order.

use super::Provider;
use crate::plan::context::Ctx;
use crate::plan::model::{BuildPlan, Phase, StartPhase};

pub struct Haskell;

impl Provider for Haskell {
    fn name(&self) -> &'static str {
        "haskell"
    }
    fn looks_for(&self) -> &'static str {
        "package.yaml and a *.hs file"
    }
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(
            (ctx.is_file("package.yaml") && !ctx.with_ext("hs").is_empty())
                .then(|| "package.yaml + *.hs".into()),
        )
    }
    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let text = ctx.read("package.yaml").unwrap_or_default();
        let mut exes: Vec<String> = Vec::new();
        let mut inside = false;
        for line in text.lines() {
            if line.starts_with("executables:") {
                inside = true;
                continue;
            }
            if inside {
                if !line.starts_with(' ') && !line.trim().is_empty() {
                    break;
                }
                let t = line.trim_end();
                if t.starts_with("  ") && !t.starts_with("   ") && t.ends_with(':') {
                    exes.push(t.trim().trim_end_matches(':').to_string());
                }
            }
        }
        exes.sort();
        let mut plan = BuildPlan::default();
        plan.add_toolchain("haskell-stack", None);
        plan.add_phase(Phase::new("setup").apt(&[
            "haskell-stack",
            "libgmp-dev",
            "gcc",
            "binutils",
            "make",
            "zlib1g-dev",
        ]));
        plan.add_phase(
            Phase::new("install")
                .cmd("stack setup")
                .cache(&["/root/.stack"]),
        );
        plan.add_phase(
            Phase::new("build")
                .cmd("stack install")
                .cache(&["/root/.stack"]),
        );
        let start = match exes.first() {
            Some(e) => StartPhase::cmd(format!("/root/.local/bin/{e}")),
            None => StartPhase::default(),
        };
        plan.set_start(start.runtime(&["libgmp10"]).include(&["/root/.local/bin"]));
        Ok(plan)
    }
}
