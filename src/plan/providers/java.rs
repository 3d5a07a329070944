//! Java (Maven or Gradle): Debian's OpenJDK, the project's wrapper when
//! present, dependencies resolved in their own step keyed on the build
//! files, the real Maven and Gradle caches, Spring Boot's `server.port`
//! from `$PORT`. Detection tests the `pom.*` names as files and also finds
//! Gradle builds without a wrapper.

use super::{Provider, env_version, existing};
use crate::plan::context::Ctx;
use crate::plan::model::{BuildPlan, Phase, StartPhase};

pub struct Java;

const POMS: &[&str] = &[
    "pom.xml",
    "pom.atom",
    "pom.clj",
    "pom.groovy",
    "pom.rb",
    "pom.scala",
    "pom.yaml",
    "pom.yml",
];
const GRADLE: &[&str] = &[
    "gradlew",
    "build.gradle",
    "build.gradle.kts",
    "settings.gradle",
    "settings.gradle.kts",
];

fn is_gradle(ctx: &Ctx) -> bool {
    GRADLE.iter().any(|f| ctx.is_file(f))
}

impl Provider for Java {
    fn name(&self) -> &'static str {
        "java"
    }
    fn looks_for(&self) -> &'static str {
        "pom.xml (or another pom.* file), gradlew, build.gradle(.kts) or settings.gradle(.kts)"
    }
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(POMS
            .iter()
            .chain(GRADLE)
            .find(|f| ctx.is_file(f))
            .map(|f| f.to_string()))
    }
    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let mut plan = BuildPlan::default();
        plan.add_toolchain("java", env_version(ctx, "JDK_VERSION"));
        let gradle = is_gradle(ctx) && !ctx.is_file("pom.xml");
        let mut setup = Phase::new("setup").apt(&["openjdk-21-jdk-headless"]);
        let start;
        if gradle {
            let wrapper =
                ctx.is_file("gradlew") && ctx.is_file("gradle/wrapper/gradle-wrapper.properties");
            let exe = if wrapper { "./gradlew" } else { "gradle" };
            if !wrapper {
                setup = setup.apt(&["gradle"]);
            }
            plan.add_phase(setup);
            let mut build = Phase::new("build")
                .depends(&["install", "setup"])
                .cache(&["/root/.gradle"]);
            if wrapper {
                build = build.cmd("chmod +x gradlew");
            }
            plan.add_phase(build.cmd(format!("{exe} clean build -x check -x test")));
            let spring = ["build.gradle", "build.gradle.kts"].iter().any(|f| {
                ctx.contains(f, "org.springframework.boot")
                    || ctx.contains(f, "spring-boot-gradle-plugin")
                    || ctx.contains(f, "org.grails:grails-")
            });
            let port = if spring {
                " -Dserver.port=${PORT:-8080}"
            } else {
                ""
            };
            start = StartPhase::cmd(format!(
                "java $JAVA_OPTS -jar{port} $(ls -1 build/libs/*jar | grep -v plain)"
            ))
            .include(&["build/libs"]);
        } else {
            let wrapper =
                ctx.is_file("mvnw") && ctx.is_file(".mvn/wrapper/maven-wrapper.properties");
            let exe = if wrapper { "./mvnw" } else { "mvn" };
            if !wrapper {
                setup = setup.apt(&["maven"]);
            }
            plan.add_phase(setup);
            let mut install = Phase::new("install").cache(&["/root/.m2/repository"]);
            if wrapper {
                install = install.cmd("chmod +x mvnw");
            }
            plan.add_phase(
                install
                    .cmd(format!("{exe} -B dependency:go-offline"))
                    .files(existing(ctx, &["pom.xml", "mvnw", ".mvn"])),
            );
            plan.add_phase(
                Phase::new("build")
                    .depends(&["install", "setup"])
                    .cache(&["/root/.m2/repository"])
                    .cmd(format!("{exe} -DoutputFile=target/mvn-dependency-list.log -B -DskipTests clean dependency:list install")),
            );
            let pom = ctx.read("pom.xml").unwrap_or_default();
            let port = if pom.contains("<groupId>org.springframework.boot")
                && pom.contains("<artifactId>spring-boot")
            {
                "-Dserver.port=${PORT:-8080} "
            } else if pom.contains("<groupId>org.wildfly.swarm") {
                "-Dswarm.http.port=${PORT:-8080} "
            } else {
                ""
            };
            start = StartPhase::cmd(format!("java {port}$JAVA_OPTS -jar target/*jar"))
                .include(&["target"]);
        }
        plan.set_start(start.runtime(&["openjdk-21-jre-headless"]));
        Ok(plan)
    }
}
