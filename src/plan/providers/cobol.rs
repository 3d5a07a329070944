//! COBOL (`*.cbl`): Debian's GnuCOBOL, `cobc -x` on the chosen source.

use super::Provider;
use crate::plan::context::Ctx;
use crate::plan::model::{BuildPlan, Phase, StartPhase};

pub struct Cobol;

impl Provider for Cobol {
    fn name(&self) -> &'static str {
        "cobol"
    }
    fn looks_for(&self) -> &'static str {
        "a *.cbl file"
    }
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(ctx.with_ext("cbl").first().map(|s| s.to_string()))
    }
    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let files = ctx.with_ext("cbl");
        let pick = ctx
            .env
            .opt("COBOL_APP_NAME")
            .and_then(|n| {
                files
                    .iter()
                    .find(|f| f.ends_with(&format!("{n}.cbl")))
                    .copied()
            })
            .or_else(|| files.iter().find(|f| f.ends_with("index.cbl")).copied())
            .or_else(|| files.first().copied())
            .unwrap_or("index.cbl")
            .to_string();
        let stem = pick
            .rsplit('/')
            .next()
            .unwrap_or(&pick)
            .trim_end_matches(".cbl")
            .to_string();
        let args = ctx
            .env
            .opt("COBOL_COMPILE_ARGS")
            .unwrap_or_else(|| "-x -o".into());
        let mut plan = BuildPlan::default();
        plan.add_toolchain("gnucobol", None);
        plan.add_phase(Phase::new("setup").apt(&["gnucobol3", "gcc"]));
        plan.add_phase(Phase::new("build").cmd(format!("cobc {args} {stem} {pick}")));
        plan.set_start(
            StartPhase::cmd(format!("./{stem}"))
                .runtime(&["libcob4t64"])
                .include(&[&stem]),
        );
        Ok(plan)
    }
}
