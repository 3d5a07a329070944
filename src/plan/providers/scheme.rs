//! Scheme sites built with Haunt (`haunt.scm`): Debian's guile and haunt.

use super::{Provider, first_file};
use crate::plan::context::Ctx;
use crate::plan::model::{BuildPlan, Phase, StartPhase};

pub struct Scheme;

impl Provider for Scheme {
    fn name(&self) -> &'static str {
        "scheme"
    }
    fn looks_for(&self) -> &'static str {
        "haunt.scm"
    }
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(first_file(ctx, &["haunt.scm"]))
    }
    fn plan(&self, _ctx: &Ctx) -> crate::Result<BuildPlan> {
        let mut plan = BuildPlan::default();
        plan.add_toolchain("guile", None);
        plan.add_toolchain("haunt", None);
        plan.add_phase(Phase::new("setup").apt(&["guile-3.0", "haunt"]));
        plan.add_phase(Phase::new("build").cmd("haunt build"));
        plan.set_start(
            StartPhase::cmd("guile init.scm --auto-compile").runtime(&["guile-3.0", "haunt"]),
        );
        Ok(plan)
    }
}
