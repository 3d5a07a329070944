//! Error conventions.
//!
//! Everything returns [`Result`], an `anyhow` result whose chain reads
//! "what failed: where: why". Errors that decide an exit code or that a
//! library user may want to match are small typed structs in the module
//! that raises them, wrapped in the chain; [`exit_code`] maps them.

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

/// The exit code for an error: the first [`CodedError`] in its chain, else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<CodedError>().map(|c| c.code))
        .unwrap_or(code::FAILURE)
}
