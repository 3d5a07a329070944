//! Deno (`deno.json(c)`, or sources importing from deno.land): the Deno
//! binary (upstream, pinned), `deno cache` on the entry file, `deno task
//! start` when the task exists (Nixpacks ran the task's text verbatim).

use super::{Provider, first_file, upstream};
use crate::plan::context::{Ctx, jstr, parse_json};
use crate::plan::model::{BuildPlan, Phase, StartPhase};

pub struct Deno;
const VERSION: &str = "2.4.3";

fn index(ctx: &Ctx) -> Option<String> {
    ["ts", "tsx", "js", "jsx"].iter().find_map(|e| {
        ctx.files()
            .iter()
            .find(|f| f.rsplit('/').next() == Some(&format!("index.{e}")))
            .cloned()
    })
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Provider for Deno {
    fn name(&self) -> &'static str {
        "deno"
    }
    fn looks_for(&self) -> &'static str {
        "deno.json, deno.jsonc, or a source file importing from https://deno.land/"
    }
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        if let Some(f) = first_file(ctx, &["deno.json", "deno.jsonc"]) {
            return Ok(Some(f));
        }
        for ext in ["ts", "tsx", "js", "jsx"] {
            for f in ctx.with_ext(ext) {
                if ctx.read(f).is_some_and(|t| {
                    t.contains("from \"https://deno.land/")
                        || t.contains("from 'https://deno.land/")
                }) {
                    return Ok(Some(format!("{f} imports from deno.land")));
                }
            }
        }
        Ok(None)
    }
    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let mut plan = BuildPlan::default();
        plan.add_phase(Phase::new("setup"));
        upstream(
            &mut plan,
            "deno",
            VERSION,
            "default",
            format!(
                "curl -fsSL https://dl.deno.land/release/v{VERSION}/deno-x86_64-unknown-linux-gnu.zip -o /tmp/deno.zip && unzip -o /tmp/deno.zip -d /usr/local/bin"
            ),
        );
        let config = match (ctx.read("deno.json"), ctx.read("deno.jsonc")) {
            (Some(t), _) => Some(parse_json("deno.json", &t)?),
            (None, Some(t)) => Some(parse_json("deno.jsonc", &strip_comments(&t))?),
            _ => None,
        };
        let idx = index(ctx);
        if let Some(i) = &idx {
            plan.add_phase(
                Phase::new("build")
                    .cmd(format!("deno cache {i}"))
                    .depends(&["install", "setup"]),
            );
        }
        let has_task = config
            .as_ref()
            .and_then(|c| jstr(c, "tasks.start"))
            .is_some();
        let cmd = if has_task {
            Some("deno task start".to_string())
        } else {
            idx.map(|i| format!("deno run --allow-all {i}"))
        };
        plan.set_start(
            StartPhase {
                cmd,
                ..StartPhase::default()
            }
            .include(&[".", "/usr/local/bin/deno", "/root/.cache/deno"]),
        );
        Ok(plan)
    }
}
