//! Scala (`build.sbt`): OpenJDK from Debian, sbt (upstream, pinned),
//! `sbt stage` with sbt-native-packager, the staged launcher.

use super::{Provider, env_version, first_file, upstream};
use crate::plan::context::Ctx;
use crate::plan::model::{BuildPlan, Phase, StartPhase};

pub struct Scala;
const SBT: &str = "1.11.3";

impl Provider for Scala {
    fn name(&self) -> &'static str {
        "scala"
    }
    fn looks_for(&self) -> &'static str {
        "build.sbt"
    }
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(first_file(ctx, &["build.sbt"]))
    }
    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let mut plan = BuildPlan::default();
        plan.add_toolchain("java", env_version(ctx, "JDK_VERSION"));
        plan.add_phase(Phase::new("setup").apt(&["openjdk-21-jdk-headless"]));
        upstream(
            &mut plan,
            "sbt",
            SBT,
            "default",
            format!(
                "curl -fsSL https://github.com/sbt/sbt/releases/download/v{SBT}/sbt-{SBT}.tgz | tar -xz -C /usr/local/lib && ln -sf /usr/local/lib/sbt/bin/sbt /usr/local/bin/sbt"
            ),
        );
        plan.add_phase(Phase::new("build").cmd("sbt stage").cache(&[
            "/root/.sbt",
            "/root/.ivy2/cache",
            "/root/.cache/coursier",
        ]));
        plan.set_start(
            StartPhase::cmd("./target/universal/stage/bin/main")
                .runtime(&["openjdk-21-jre-headless"])
                .include(&["target/universal"]),
        );
        Ok(plan)
    }
}
