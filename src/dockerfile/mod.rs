//! The Dockerfile frontend: parsing the Dockerfile reference (directives,
//! continuations, heredocs, every instruction) and lowering to the build
//! graph. The build context it reads is [`crate::context`]'s.
//!
//! The parser is hand-written rather than built on `parse-dockerfile`:
//! errors must point at `file:line:column`, and quote/escape/variable
//! handling must follow BuildKit's exact rules, which are interleaved with
//! Docker's scoping in lowering.
//!
//! Generation goes the other way and lives with the plan:
//! [`crate::plan::dockerfile`] prints a Dockerfile equivalent to an
//! auto-build plan, for Docker/BuildKit/buildah users.
//!
//! Entry points: [`load`] (context dir + Dockerfile → [`Graph`]) and
//! [`load_with`] (with a [`BaseResolver`] for base image configs, and the
//! warnings).

pub mod ast;
pub mod error;
pub mod lexer;
pub mod lower;
pub mod mounts;
pub mod parse;
pub mod shell;
mod stages;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

pub use error::{Location, SyntaxError};
pub use lower::{BaseResolver, BuildArgs, Lowered, NoResolver};
pub use parse::parse;

use crate::Result;
use crate::graph::Graph;

/// A loaded Dockerfile build.
#[derive(Debug)]
pub struct Loaded {
    pub lowered: Lowered,
    /// The ignore file that applied, if any.
    pub ignore_file: Option<PathBuf>,
    pub context: crate::context::Context,
}

/// The Dockerfile to use: `dockerfile` if given (relative to the current
/// directory), else `Dockerfile` in the context.
pub fn dockerfile_path(context_dir: &Path, dockerfile: Option<&Path>) -> PathBuf {
    match dockerfile {
        Some(p) => p.to_path_buf(),
        None => context_dir.join("Dockerfile"),
    }
}

/// Parses `dockerfile`, walks `context_dir` (honouring `.dockerignore`) and
/// lowers to a build graph. Base image configs are not consulted; use
/// [`load_with`] to supply them.
pub fn load(context_dir: &Path, dockerfile: &Path, args: &BuildArgs) -> Result<Graph> {
    Ok(load_with(context_dir, dockerfile, args, &NoResolver)?
        .lowered
        .graph)
}

/// [`load`] with a resolver for base image configs; returns warnings and
/// the walked context too.
pub fn load_with(
    context_dir: &Path,
    dockerfile: &Path,
    args: &BuildArgs,
    resolver: &dyn BaseResolver,
) -> Result<Loaded> {
    let text = std::fs::read_to_string(dockerfile).with_context(|| {
        format!(
            "reading Dockerfile {}: pass the right path with -f, or create it",
            dockerfile.display()
        )
    })?;
    let name = dockerfile.display().to_string();
    let df = parse(&name, &text)?;
    let (matcher, ignore_file) = crate::context::ignore::load(context_dir, dockerfile)?;
    let ctx = crate::context::Context::open_cached(context_dir, matcher)?;
    let lowered = lower::lower(&df, &text, Some(&ctx), args, resolver)?;
    Ok(Loaded {
        lowered,
        ignore_file,
        context: ctx,
    })
}

/// Parses and lowers Dockerfile text without a context (steps that read
/// the context get no content digest; an error if one is needed).
pub fn lower_text(name: &str, text: &str, args: &BuildArgs) -> Result<Lowered> {
    let df = parse(name, text)?;
    lower::lower(&df, text, None, args, &NoResolver)
}
