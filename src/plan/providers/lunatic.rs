//! Lunatic (a Cargo project whose `.cargo/config.toml` runner is
//! `lunatic`): the Rust plan built for `wasm32-wasip1`, run by lunatic
//! (upstream, pinned).

use super::{Provider, upstream};
use crate::plan::context::Ctx;
use crate::plan::model::BuildPlan;

pub struct Lunatic;
const VERSION: &str = "0.13.2";

impl Provider for Lunatic {
    fn name(&self) -> &'static str {
        "lunatic"
    }
    fn looks_for(&self) -> &'static str {
        "Cargo.toml with .cargo/config.toml runner = \"lunatic\""
    }
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        let hit = ctx.is_file("Cargo.toml")
            && ctx.read(".cargo/config.toml").is_some_and(|t| {
                t.lines()
                    .any(|l| l.trim().starts_with("runner") && l.contains("\"lunatic"))
            });
        Ok(hit.then(|| ".cargo/config.toml runner = lunatic".into()))
    }
    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let mut plan = super::rust::plan(ctx)?;
        plan.phase_mut("setup")
            .apt_pkgs
            .get_or_insert_with(Vec::new)
            .push("libstd-rust-dev-wasm32".into());
        upstream(
            &mut plan,
            "lunatic",
            VERSION,
            "default",
            format!(
                "curl -fsSL https://github.com/lunatic-solutions/lunatic/releases/download/v{VERSION}/lunatic-linux-amd64.tar.gz | tar -xz -C /usr/local/bin"
            ),
        );
        if let Some(build) = plan.phases.as_mut().and_then(|p| p.get_mut("build")) {
            for c in build.cmds.iter_mut().flatten() {
                if c.starts_with("cargo build") {
                    c.push_str(" --target wasm32-wasip1");
                }
                if let Some(rest) = c.strip_prefix("cp target/release/") {
                    *c = format!(
                        "cp target/wasm32-wasip1/release/{}",
                        rest.replacen(" bin", ".wasm bin", 1)
                    );
                }
            }
        }
        if let Some(s) = &mut plan.start {
            s.cmd = s.cmd.take().map(|c| format!("lunatic {c}.wasm"));
            s.only_include_files = Some(vec!["bin".into(), "/usr/local/bin/lunatic".into()]);
        }
        Ok(plan)
    }
}
