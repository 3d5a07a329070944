//! Clojure (`project.clj` for Leiningen, `build.clj` for tools.build):
//! Debian's leiningen/clojure and OpenJDK, an uberjar, `java -jar`.

use super::{Provider, VersionReq, env_version, first_file, version_file};
use crate::plan::context::Ctx;
use crate::plan::model::{BuildPlan, Phase, StartPhase};

pub struct Clojure;

fn jdk(ctx: &Ctx) -> Option<VersionReq> {
    env_version(ctx, "JDK_VERSION").or_else(|| version_file(ctx, ".jdk-version"))
}

impl Provider for Clojure {
    fn name(&self) -> &'static str {
        "clojure"
    }
    fn looks_for(&self) -> &'static str {
        "project.clj or build.clj"
    }
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(first_file(ctx, &["project.clj", "build.clj"]))
    }
    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let mut plan = BuildPlan::default();
        let mut req = jdk(ctx);
        if let Some(r) = &mut req
            && r.text == "latest"
        {
            r.text = "*".into();
        }
        plan.add_toolchain("java", req);
        let tools_build = ctx.is_file("build.clj") && !ctx.is_file("project.clj");
        let tool = if tools_build { "clojure" } else { "leiningen" };
        plan.add_phase(Phase::new("setup").apt(&[tool, "openjdk-21-jdk-headless"]));
        let build = if tools_build {
            "clojure -T:build uber"
        } else if ctx.contains("project.clj", "[lein-ring ") {
            "lein ring uberjar"
        } else {
            "lein uberjar"
        };
        plan.add_phase(
            Phase::new("build")
                .cmd(build)
                .cmd("if [ -d target/uberjar ]; then cp target/uberjar/*.jar target/; fi")
                .cache(&["/root/.m2/repository"]),
        );
        plan.set_start(
            StartPhase::cmd("java $JAVA_OPTS -jar $(ls -1 target/*standalone.jar target/*.jar 2>/dev/null | grep -v SNAPSHOT.jar$ | head -n 1)")
                .runtime(&["openjdk-21-jre-headless"])
                .include(&["target"]),
        );
        Ok(plan)
    }
}
