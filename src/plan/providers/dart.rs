//! Dart (`pubspec.yaml`): the Dart SDK (upstream, pinned), `dart pub get`
//! on the manifests, an AOT executable from `bin/<name>.dart`.

use anyhow::bail;

use super::{Provider, existing, first_file, upstream};
use crate::plan::context::Ctx;
use crate::plan::model::{BuildPlan, Phase, StartPhase};

pub struct Dart;
const VERSION: &str = "3.8.2";

impl Provider for Dart {
    fn name(&self) -> &'static str {
        "dart"
    }
    fn looks_for(&self) -> &'static str {
        "pubspec.yaml"
    }
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(first_file(ctx, &["pubspec.yaml"]))
    }
    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let text = ctx.read("pubspec.yaml").unwrap_or_default();
        let Some(name) = text.lines().find_map(|l| {
            l.strip_prefix("name:")
                .map(|n| n.trim().trim_matches(['"', '\'']).to_string())
        }) else {
            bail!("pubspec.yaml: no `name:` key: add the package name");
        };
        let mut plan = BuildPlan::default();
        plan.add_phase(Phase::new("setup"));
        upstream(
            &mut plan,
            "dart",
            VERSION,
            "default",
            format!(
                "curl -fsSL https://storage.googleapis.com/dart-archive/channels/stable/release/{VERSION}/sdk/dartsdk-linux-x64-release.zip -o /tmp/dart.zip && unzip -q /tmp/dart.zip -d /usr/lib && ln -sf /usr/lib/dart-sdk/bin/dart /usr/local/bin/dart"
            ),
        );
        plan.add_phase(
            Phase::new("install")
                .cmd("dart pub get")
                .cache(&["/root/.pub-cache"])
                .files(existing(ctx, &["pubspec.yaml", "pubspec.lock"])),
        );
        plan.add_phase(Phase::new("build").cmd(format!("dart compile exe bin/{name}.dart")));
        plan.set_start(
            StartPhase::cmd(format!("./bin/{name}.exe"))
                .runtime(&["ca-certificates"])
                .include(&[&format!("bin/{name}.exe")]),
        );
        Ok(plan)
    }
}
