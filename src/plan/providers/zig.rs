//! Zig (`*.zig`): zig (upstream, pinned), `zig build -Doptimize=ReleaseSafe`,
//! the binary named in `build.zig` (Nixpacks used the checkout's directory
//! name, which depends on where the repo lives).

use anyhow::bail;

use super::{Provider, upstream};
use crate::plan::context::Ctx;
use crate::plan::model::{BuildPlan, Phase, StartPhase};

pub struct Zig;
const VERSION: &str = "0.14.1";

fn exe_name(ctx: &Ctx) -> Option<String> {
    let text = ctx.read("build.zig")?;
    let i = text.find(".name")?;
    let q: Vec<&str> = text[i..].splitn(3, '"').collect();
    (q.len() == 3).then(|| q[1].to_string())
}

impl Provider for Zig {
    fn name(&self) -> &'static str {
        "zig"
    }
    fn looks_for(&self) -> &'static str {
        "a *.zig file"
    }
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(ctx.with_ext("zig").first().map(|s| s.to_string()))
    }
    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let Some(name) = exe_name(ctx) else {
            bail!(
                "build.zig: no executable `.name = \"…\"` found: add an addExecutable with a name, or give a start command"
            );
        };
        let mut plan = BuildPlan::default();
        plan.add_phase(Phase::new("setup"));
        upstream(
            &mut plan,
            "zig",
            VERSION,
            "default",
            format!(
                "curl -fsSL https://ziglang.org/download/{VERSION}/zig-x86_64-linux-{VERSION}.tar.xz | tar -xJ -C /usr/local/lib && ln -sf /usr/local/lib/zig-x86_64-linux-{VERSION}/zig /usr/local/bin/zig"
            ),
        );
        if ctx.is_file(".gitmodules") {
            plan.add_phase(Phase::new("install").cmd("git submodule update --init"));
        }
        plan.add_phase(Phase::new("build").cmd("zig build -Doptimize=ReleaseSafe"));
        plan.set_start(StartPhase::cmd(format!("./zig-out/bin/{name}")).include(&["zig-out/bin"]));
        Ok(plan)
    }
}
