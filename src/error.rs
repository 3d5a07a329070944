//! Error conventions.
//!
//! Inside the crate everything returns [`Result`], an `anyhow` result whose
//! chain reads "what failed: where: why". Errors that decide an exit code
//! or that a caller may branch on are small typed structs in the module
//! that raises them ([`StepFailure`], [`InputError`], [`CodedError`],
//! [`crate::registry::RegistryError`], [`crate::dockerfile::error::SyntaxError`],
//! [`crate::sandbox::Cancelled`]), wrapped in the chain;
//! [`crate::failure`] reads them for the binary's exit code and the
//! library's [`crate::Error`].
//!
//! This module names no other: every module may raise these.

use std::path::PathBuf;

pub type Result<T, E = anyhow::Error> = std::result::Result<T, E>;

/// Exit codes of the `kiln` binary, documented in the README ("Exit codes").
pub mod code {
    /// Any failure without a more specific code.
    pub const FAILURE: u8 = 1;
    /// Bad command-line usage (clap's own code).
    pub const USAGE: u8 = 2;
    /// Auto-build found no provider for the source tree.
    pub const NO_PROVIDER: u8 = 3;
    /// A build step ran and failed.
    pub const STEP_FAILED: u8 = 4;
    /// Interrupted by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: u8 = 130;
}

/// An error that carries its own exit code. Modules wrap their typed errors
/// in this so the CLI does not need to know every error type.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CodedError {
    pub code: u8,
    pub message: String,
}

impl CodedError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CodedError {
            code,
            message: message.into(),
        }
    }
}

/// A build step ran and exited non-zero (exit code 4).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StepFailure {
    /// The step's label, `[build 3/7] RUN npm ci`.
    pub step: String,
    pub exit_code: i32,
    /// The last lines of its output (secrets masked).
    pub tail: Vec<String>,
    /// The report: step, origin, command, exit code, output tail, hint.
    pub message: String,
}

/// Input the caller gave is wrong (a missing context, a bad name, a file
/// that cannot be used): retrying cannot help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct InputError {
    /// The file at fault, when there is one.
    pub file: Option<PathBuf>,
    /// Its 1-based line, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl InputError {
    pub fn new(message: impl Into<String>) -> InputError {
        InputError {
            file: None,
            line: None,
            message: message.into(),
        }
    }

    pub fn in_file(file: impl Into<PathBuf>, message: impl Into<String>) -> InputError {
        InputError {
            file: Some(file.into()),
            ..InputError::new(message)
        }
    }
}
