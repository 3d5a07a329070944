//! The Procfile: always merged above the provider. `web`, else `worker`,
//! else the first other process becomes the start command. `release` is
//! not run at build time (Nixpacks did; it needs the deploy's services):
//! it is left to the deploy tool.
//!
//! Parsed by hand: a Procfile is Heroku's line format (`name: command`),
//! not general YAML, and a line parser gives exact `Procfile:line` errors.

use std::collections::BTreeMap;

use anyhow::bail;

use crate::plan::context::Ctx;
use crate::plan::model::{BuildPlan, StartPhase};

/// Process name → command, in file order by name.
pub fn parse(text: &str) -> crate::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, cmd)) = line.split_once(':') else {
            bail!(
                "Procfile:{}: expected `name: command`, found `{line}`",
                i + 1
            );
        };
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            bail!(
                "Procfile:{}: `{name}` is not a process name (letters, digits, `-`, `_`)",
                i + 1
            );
        }
        let mut cmd = cmd.trim();
        if cmd.len() >= 2
            && ((cmd.starts_with('"') && cmd.ends_with('"'))
                || (cmd.starts_with('\'') && cmd.ends_with('\'')))
        {
            cmd = &cmd[1..cmd.len() - 1];
        }
        if cmd.is_empty() {
            bail!("Procfile:{}: the process `{name}` has no command", i + 1);
        }
        if out.insert(name.to_string(), cmd.to_string()).is_some() {
            bail!("Procfile:{}: the process `{name}` is defined twice", i + 1);
        }
    }
    Ok(out)
}

/// The Procfile's contribution (empty without a Procfile).
pub fn plan(ctx: &Ctx) -> crate::Result<BuildPlan> {
    let Some(text) = ctx.read("Procfile") else {
        return Ok(BuildPlan::default());
    };
    let procs = parse(&text)?;
    let mut plan = BuildPlan::default();
    let start = procs
        .get("web")
        .or_else(|| procs.get("worker"))
        .or_else(|| procs.iter().find(|(k, _)| *k != "release").map(|(_, v)| v));
    if let Some(cmd) = start {
        plan.start = Some(StartPhase::cmd(cmd.clone()));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reports_lines() {
        let p = parse("# c\nweb: node server.js\nworker: \"node w.js\"\n").unwrap();
        assert_eq!(p["web"], "node server.js");
        assert_eq!(p["worker"], "node w.js");
        let e = parse("web: a\nnot a process line\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("Procfile:2:"), "{e}");
        let e = parse("web:\n").unwrap_err().to_string();
        assert!(e.starts_with("Procfile:1:"), "{e}");
    }
}
