//! The Dockerfile frontend: parsing the Dockerfile reference (directives,
//! continuations, heredocs, every instruction), the build context
//! (`.dockerignore`, content digests), and lowering to the build graph.
//!
//! The parser is hand-written rather than built on `parse-dockerfile`:
//! errors must point at `file:line:column`, and quote/escape/variable
//! handling must follow BuildKit's exact rules, which are interleaved with
//! Docker's scoping in lowering.

pub mod ast;
pub mod context;
pub mod error;
pub mod ignore;
pub mod lexer;
pub mod mounts;
pub mod parse;
pub mod shell;

pub use error::{Location, SyntaxError};
pub use parse::parse;
