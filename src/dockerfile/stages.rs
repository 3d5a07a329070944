//! The stage and argument side of lowering, everything before a stage's
//! own instructions: the build and target platforms, the global scope
//! (automatic platform ARGs and the ARGs before the first FROM), the stage
//! headers (one per FROM line) and the target stage. What happens inside a
//! stage is in `lower.rs`.

use std::collections::BTreeSet;

use super::ast::{Dockerfile, Instruction, Kind};
use super::error::{Source, SyntaxError};
use super::lower::BuildArgs;
use super::shell::Lexer;
use crate::Result;
use crate::graph::{Base, Origin};
use crate::platform::Platform;

/// The global scope: what FROM lines see, and what `ARG NAME` without a
/// default takes inside a stage.
pub(super) struct Globals {
    /// The automatic platform args, then the ARGs before the first FROM,
    /// in declaration order (a later one shadows an earlier one).
    vars: Vec<(String, Option<String>)>,
    /// Index of the first FROM instruction.
    pub(super) first_from: usize,
    /// The target platform: a FROM without `--platform` builds for it.
    pub(super) target_platform: Platform,
}

impl Globals {
    /// Reads `--platform`/the build platform and the ARGs before the first
    /// FROM; records the ARG names it declares in `used_args`.
    pub(super) fn read(
        df: &Dockerfile,
        src: &Source,
        lexer: Lexer,
        args: &BuildArgs,
        used_args: &mut BTreeSet<String>,
    ) -> Result<Globals> {
        let build_platform = match &args.build_platform {
            Some(p) => Platform::parse(p)?,
            None => Platform::host(),
        };
        let target_platform = match &args.platform {
            Some(p) => Platform::parse(p).map_err(|e| anyhow::anyhow!("--platform: {e}"))?,
            None => build_platform.clone(),
        };
        let mut vars: Vec<(String, Option<String>)> = Vec::new();
        for (prefix, p) in [("TARGET", &target_platform), ("BUILD", &build_platform)] {
            vars.push((format!("{prefix}PLATFORM"), Some(p.to_string())));
            vars.push((format!("{prefix}OS"), Some(p.os.clone())));
            vars.push((format!("{prefix}ARCH"), Some(p.architecture.clone())));
            vars.push((
                format!("{prefix}VARIANT"),
                Some(p.variant.clone().unwrap_or_default()),
            ));
        }
        let Some(first_from) = df
            .instructions
            .iter()
            .position(|i| matches!(i.kind, Kind::From(_)))
        else {
            anyhow::bail!(
                "{}: no FROM instruction; a Dockerfile needs at least one stage (FROM image)",
                df.file
            );
        };
        let mut globals = Globals {
            vars,
            first_from,
            target_platform,
        };
        for inst in &df.instructions[..first_from] {
            let Kind::Arg(list) = &inst.kind else {
                return Err(src
                    .error_hint(
                        inst.location,
                        format!(
                            "{} before the first FROM: no build stage in current context",
                            inst.keyword
                        ),
                        "only ARG may come before FROM; move it after a FROM line",
                    )
                    .into());
            };
            for (name, default) in list {
                used_args.insert(name.clone());
                let value = match (args.args.get(name), default) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(d)) => Some(
                        lexer
                            .process_word(d, &|k: &str| globals.lookup(k))
                            .map_err(|e| {
                                src.error(inst.args_location, format!("ARG {name}: {e}"))
                            })?,
                    ),
                    (None, None) => None,
                };
                globals.vars.push((name.clone(), value));
            }
        }
        Ok(globals)
    }

    /// The value of a global variable (`None` when undeclared or declared
    /// without a value).
    pub(super) fn lookup(&self, name: &str) -> Option<String> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    }
}

/// A FROM line, with its words expanded in the global scope.
pub(super) struct StageHeader {
    pub(super) name: Option<String>,
    pub(super) image: String,
    pub(super) base: Base,
    pub(super) platform: Platform,
    /// Index of the FROM instruction.
    pub(super) inst: usize,
    pub(super) origin: Origin,
}

/// Reads every FROM line after the first.
pub(super) fn headers(
    df: &Dockerfile,
    src: &Source,
    lexer: Lexer,
    globals: &Globals,
) -> Result<Vec<StageHeader>> {
    let mut headers: Vec<StageHeader> = Vec::new();
    for (idx, inst) in df.instructions.iter().enumerate().skip(globals.first_from) {
        let Kind::From(from) = &inst.kind else {
            continue;
        };
        let env = |k: &str| globals.lookup(k);
        let image = lexer
            .process_word(&from.image, &env)
            .map_err(|e| src.error(inst.args_location, format!("FROM: {e}")))?;
        if image.is_empty() {
            return Err(src
                .error_hint(
                    inst.args_location,
                    format!("base name ({}) should not be blank", from.image),
                    "give the ARG a default or pass --build-arg",
                )
                .into());
        }
        let platform = match &from.platform {
            None => globals.target_platform.clone(),
            Some(p) => {
                let p = lexer
                    .process_word(p, &env)
                    .map_err(|e| src.error(inst.args_location, format!("FROM --platform: {e}")))?;
                Platform::parse(&p).map_err(|e| src.error(inst.args_location, e.to_string()))?
            }
        };
        let name = match &from.name {
            None => None,
            Some(n) => Some(stage_name(src, inst, &headers, n)?),
        };
        let base = base(&headers, &image);
        let origin = Origin {
            file: df.file.clone(),
            line: inst.location.line,
            text: format!("FROM {}", inst.args),
        };
        headers.push(StageHeader {
            name,
            image,
            base,
            platform,
            inst: idx,
            origin,
        });
    }
    Ok(headers)
}

/// Checks a stage name (`FROM … AS name`): valid and not taken by an
/// earlier stage. Names are case-insensitive; the result is lowercase.
fn stage_name(
    src: &Source,
    inst: &Instruction,
    earlier: &[StageHeader],
    name: &str,
) -> std::result::Result<String, SyntaxError> {
    let n = name.to_ascii_lowercase();
    let valid = n.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if !valid {
        return Err(src.error_hint(
            inst.args_location,
            format!("invalid name for build stage: {n:?}"),
            "stage names start with a letter and contain only letters, digits, '-', '_' and '.'",
        ));
    }
    if earlier
        .iter()
        .any(|h| h.name.as_deref() == Some(n.as_str()))
    {
        return Err(src.error_hint(
            inst.args_location,
            format!("duplicate stage name {n:?}"),
            "give each stage a unique name",
        ));
    }
    Ok(n)
}

/// What a FROM image names: an earlier stage, scratch, or an image.
fn base(earlier: &[StageHeader], image: &str) -> Base {
    let lower = image.to_ascii_lowercase();
    if let Some(i) = earlier
        .iter()
        .position(|h| h.name.as_deref() == Some(lower.as_str()))
    {
        Base::Stage(i)
    } else if lower == "scratch" {
        Base::Scratch
    } else {
        Base::Image {
            reference: image.to_string(),
        }
    }
}

/// The stage `--target` names, or the last one.
pub(super) fn target(df: &Dockerfile, headers: &[StageHeader], args: &BuildArgs) -> Result<usize> {
    let Some(t) = &args.target else {
        return Ok(headers.len() - 1);
    };
    let lt = t.to_ascii_lowercase();
    headers
        .iter()
        .position(|h| h.name.as_deref() == Some(lt.as_str()))
        .ok_or_else(|| {
            let names: Vec<&str> = headers.iter().filter_map(|h| h.name.as_deref()).collect();
            anyhow::anyhow!(
                "--target {t}: no stage named {t:?} in {}; named stages: {}",
                df.file,
                if names.is_empty() {
                    "(none)".to_string()
                } else {
                    names.join(", ")
                }
            )
        })
}
