//! Config files: `--config`/`KILN_CONFIG_FILE`/`NIXPACKS_CONFIG_FILE`, else
//! `kiln.toml`, `nixpacks.toml`, `nixpacks.json` at the app root (the first
//! found is the only one read). They share the plan schema.
//!
//! Unknown keys are found by walking the parsed document (with spans for
//! TOML, by locating the key text for JSON) against the schema: in
//! Nixpacks' files they are warnings (Nixpacks ignored them silently, so an
//! error would break configs that "worked"), in `kiln.toml` errors. Both
//! name `file:line` and the closest known key.

use std::path::Path;

use anyhow::{Context as _, anyhow, bail};

use super::context::{Env, line_col, parse_json};
use super::model::BuildPlan;
use crate::progress::Progress;

pub const TOP_KEYS: &[&str] = &[
    "providers",
    "buildImage",
    "variables",
    "staticAssets",
    "phases",
    "start",
    "suite",
    "buildVariables",
    "secrets",
    "buildOnlyPkgs",
];
pub const PHASE_KEYS: &[&str] = &[
    "name",
    "dependsOn",
    "nixPkgs",
    "nixPackages",
    "nixLibs",
    "nixLibraries",
    "nixOverlays",
    "nixpkgsArchive",
    "aptPkgs",
    "aptPackages",
    "cmds",
    "commands",
    "onlyIncludeFiles",
    "cacheDirectories",
    "paths",
    "envPaths",
];
pub const START_KEYS: &[&str] = &[
    "cmd",
    "runImage",
    "onlyIncludeFiles",
    "user",
    "aptPkgs",
    "runtime",
];

/// A config file that was read.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// Path as given (relative to the app root when found there).
    pub name: String,
    pub plan: BuildPlan,
}

/// Finds and reads the config file, if any.
pub fn load(
    dir: &Path,
    cli_config: Option<&str>,
    env: &Env,
    progress: &Progress,
) -> crate::Result<Option<ConfigFile>> {
    let (name, required) = if let Some(c) = cli_config {
        (c.to_string(), true)
    } else if let Some((c, _)) = env.option("CONFIG_FILE") {
        (c, true)
    } else {
        let found: Vec<&str> = ["kiln.toml", "nixpacks.toml", "nixpacks.json"]
            .into_iter()
            .filter(|f| dir.join(f).is_file())
            .collect();
        match found.as_slice() {
            [] => return Ok(None),
            [first, rest @ ..] => {
                for r in rest {
                    progress.warn(format!(
                        "{r} is ignored: {first} takes precedence (only one config file is read)"
                    ));
                }
                (first.to_string(), false)
            }
        }
    };
    let path = dir.join(&name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(anyhow!(e)).with_context(|| {
                format!(
                    "reading the config file {} (relative to the app root {})",
                    name,
                    dir.display()
                )
            });
        }
    };
    let strict = Path::new(&name)
        .file_name()
        .and_then(|f| f.to_str())
        .is_some_and(|f| f.starts_with("kiln"));
    let plan = parse(&name, &text, strict, progress)?;
    Ok(Some(ConfigFile { name, plan }))
}

/// Parses config text; `strict` turns unknown keys into errors.
pub fn parse(
    name: &str,
    text: &str,
    strict: bool,
    progress: &Progress,
) -> crate::Result<BuildPlan> {
    let toml = if name.ends_with(".toml") {
        true
    } else if name.ends_with(".json") {
        false
    } else {
        bail!("Unknown file type for config file {name}: use a .toml or .json file");
    };
    let (plan, unknown) = parse_with_unknown(name, text, toml)?;
    check(name, unknown, strict, KILN_TOML_HINT, progress)?;
    Ok(plan)
}

const KILN_TOML_HINT: &str = "kiln.toml rejects unknown keys; see docs/plan.md for the schema";

/// A whole plan as `kiln plan` (or `nixpacks plan`) writes it, for `kiln
/// build --plan`: the config schema plus the resolved `toolchains`; every
/// unknown key is an error. `.toml` files are TOML, anything else JSON.
pub fn parse_plan_file(name: &str, text: &str) -> crate::Result<BuildPlan> {
    let (plan, mut unknown) = parse_with_unknown(name, text, name.ends_with(".toml"))?;
    unknown.retain(|(_, key, _)| key != "toolchains");
    check(
        name,
        unknown,
        true,
        "a plan file takes the keys `kiln plan` writes; see docs/plan.md",
        &Progress::quiet(),
    )?;
    Ok(plan)
}

/// The plan in `text` (TOML or JSON) and its unknown keys.
fn parse_with_unknown(
    name: &str,
    text: &str,
    toml: bool,
) -> crate::Result<(BuildPlan, Vec<Unknown>)> {
    let mut unknown = Vec::new();
    if toml {
        let plan: BuildPlan = toml::from_str(text).map_err(|e| {
            let (l, c) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            anyhow!("{name}:{l}:{c}: {}{}", e.message().trim(), at_line(text, l))
        })?;
        let doc = toml::de::DeTable::parse(text)
            .map_err(|e| anyhow!("{name}: {}", e.message().trim()))?;
        toml_unknown(text, doc.get_ref(), Level::Top, "", &mut unknown);
        Ok((plan, unknown))
    } else {
        let v = parse_json(name, text)?;
        json_unknown(text, &v, Level::Top, "", &mut unknown);
        // A value of the wrong type: the position, and the line itself
        // (it names the key).
        let plan = serde_json::from_str(text).map_err(|e| {
            let msg = e.to_string();
            let msg = msg
                .rsplit_once(" at line ")
                .map_or(msg.as_str(), |(m, _)| m);
            anyhow!(
                "{name}:{}:{}: {msg}{}",
                e.line(),
                e.column(),
                at_line(text, e.line())
            )
        })?;
        Ok((plan, unknown))
    }
}

/// ` (at `LINE`)`: line `l` (1-based) of `text`, trimmed, for type errors.
fn at_line(text: &str, l: usize) -> String {
    match text.lines().nth(l.saturating_sub(1)).map(str::trim) {
        Some(line) if !line.is_empty() && l > 0 => format!(" (at `{line}`)"),
        _ => String::new(),
    }
}

#[derive(Clone, Copy)]
enum Level {
    Top,
    Phases,
    Phase,
    Start,
    Free,
}

fn known(level: Level) -> Option<&'static [&'static str]> {
    match level {
        Level::Top => Some(TOP_KEYS),
        Level::Phase => Some(PHASE_KEYS),
        Level::Start => Some(START_KEYS),
        Level::Phases | Level::Free => None,
    }
}

fn child(level: Level, key: &str) -> Level {
    match (level, key) {
        (Level::Top, "phases") => Level::Phases,
        (Level::Top, "start") => Level::Start,
        (Level::Phases, _) => Level::Phase,
        _ => Level::Free,
    }
}

/// (line, dotted key, suggestion)
type Unknown = (usize, String, Option<&'static str>);

fn toml_unknown(
    text: &str,
    table: &toml::de::DeTable,
    level: Level,
    prefix: &str,
    out: &mut Vec<Unknown>,
) {
    for (k, v) in table.iter() {
        let key = k.get_ref().as_ref();
        let path = if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        };
        if let Some(keys) = known(level)
            && !keys.contains(&key)
        {
            out.push((line_col(text, k.span().start).0, path, closest(key, keys)));
            continue;
        }
        if let toml::de::DeValue::Table(t) = v.get_ref() {
            toml_unknown(text, t, child(level, key), &path, out);
        }
    }
}

fn json_unknown(
    text: &str,
    v: &serde_json::Value,
    level: Level,
    prefix: &str,
    out: &mut Vec<Unknown>,
) {
    let Some(obj) = v.as_object() else { return };
    for (key, val) in obj {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if let Some(keys) = known(level)
            && !keys.contains(&key.as_str())
        {
            let line = text
                .find(&format!("\"{key}\""))
                .map_or(0, |i| line_col(text, i).0);
            out.push((line, path, closest(key, keys)));
            continue;
        }
        json_unknown(text, val, child(level, key), &path, out);
    }
}

fn check(
    name: &str,
    mut unknown: Vec<Unknown>,
    strict: bool,
    hint: &str,
    progress: &Progress,
) -> crate::Result<()> {
    unknown.sort();
    let msgs: Vec<String> = unknown
        .into_iter()
        .map(|(line, key, near)| {
            let hint = near
                .map(|n| format!(": did you mean `{n}`?"))
                .unwrap_or_default();
            format!("{name}:{line}: unknown key `{key}`{hint}")
        })
        .collect();
    if msgs.is_empty() {
        return Ok(());
    }
    if strict {
        bail!("{}\n({hint})", msgs.join("\n"));
    }
    for m in msgs {
        progress.warn(format!("{m} (ignored)"));
    }
    Ok(())
}

/// The known key closest to `key` (edit distance ≤ 3, or case-insensitive).
pub fn closest(key: &str, keys: &[&'static str]) -> Option<&'static str> {
    keys.iter()
        .map(|k| (levenshtein(&key.to_lowercase(), &k.to_lowercase()), *k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_warn_in_nixpacks_files_and_fail_in_kiln_toml() {
        let text = "[phases.setup]\nnixPkg = [\"...\", \"cowsay\"]\n\n[start]\ncmd = \"x\"\n";
        let p = Progress::recording();
        let plan = parse("nixpacks.toml", text, false, &p).unwrap();
        assert_eq!(plan.start_cmd(), Some("x"));
        let ev = format!("{:?}", p.events());
        assert!(
            ev.contains(
                "nixpacks.toml:2: unknown key `phases.setup.nixPkg`: did you mean `nixPkgs`?"
            ),
            "{ev}"
        );
        let e = parse("kiln.toml", text, true, &Progress::quiet())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("kiln.toml:2: unknown key `phases.setup.nixPkg`"),
            "{e}"
        );
    }

    #[test]
    fn json_unknown_and_syntax_errors() {
        let text = "{\n  \"start\": {\n    \"comand\": \"x\"\n  }\n}\n";
        let p = Progress::recording();
        parse("nixpacks.json", text, false, &p).unwrap();
        assert!(
            format!("{:?}", p.events())
                .contains("nixpacks.json:3: unknown key `start.comand`: did you mean `cmd`?")
        );
        let e = parse("nixpacks.json", "{\n \"start\": \n", false, &p)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("nixpacks.json:3:"), "{e}");
        let e = parse("nixpacks.toml", "[start]\ncmd = [1]\n", false, &p)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("nixpacks.toml:2:"), "{e}");
        let e = parse("nixpacks.yaml", "", false, &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Unknown file type"), "{e}");
    }
}
