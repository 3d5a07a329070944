//! What kind of failure a build ended in, read from its error chain.
//!
//! The library's entry points ([`crate::build()`], [`crate::plan()`]) return
//! [`Error`]: one enum a deploy tool matches on, made from the `anyhow`
//! chain by looking for the typed causes the modules raise
//! ([`StepFailure`], [`InputError`], [`CodedError`],
//! [`crate::registry::RegistryError`], [`crate::dockerfile::SyntaxError`],
//! [`crate::sandbox::Cancelled`], the HTTP client's failures), with
//! [`Error::is_transient`] for retries and the message of the whole chain.
//! [`exit_code`] maps the same causes for the binary. It is apart from
//! [`crate::error`] because it names those modules, and they all raise
//! errors.

use std::path::PathBuf;

use crate::error::{CodedError, InputError, StepFailure, code};

/// The exit code for an error: the first typed cause in its chain that has
/// one, else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| {
            if let Some(c) = e.downcast_ref::<CodedError>() {
                Some(c.code)
            } else if e.is::<StepFailure>() {
                Some(code::STEP_FAILED)
            } else if e.is::<crate::sandbox::Cancelled>() {
                Some(code::INTERRUPTED)
            } else {
                e.downcast_ref::<Error>().map(Error::exit_code)
            }
        })
        .unwrap_or(code::FAILURE)
}

/// Why a library call failed, for a caller that branches on it. Every
/// variant's `Display` is the whole context chain ("what: where: why").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A build step ran and exited non-zero.
    #[error("{message}")]
    StepFailed {
        /// The step's label, `[build 3/7] RUN npm ci`.
        step: String,
        exit_code: i32,
        /// The last lines of its output (secrets masked).
        tail: Vec<String>,
        message: String,
    },
    /// A registry or a download failed: `status` is the HTTP status when a
    /// server answered, `None` when the connection failed, dropped or
    /// timed out.
    #[error("{message}")]
    Network {
        status: Option<u16>,
        message: String,
    },
    /// Bad input: a Dockerfile syntax error, a missing context or file, a
    /// malformed image name. `file` and `line` say where when known.
    #[error("{message}")]
    BadInput {
        file: Option<PathBuf>,
        line: Option<usize>,
        message: String,
    },
    /// An auto build found no provider for the source tree.
    #[error("{message}")]
    NoProvider { message: String },
    /// The build's cancel flag was set ([`crate::BuildRequest::cancel`]).
    #[error("{message}")]
    Cancelled { message: String },
    /// Anything else, with its context chain.
    #[error("{0:#}")]
    Other(anyhow::Error),
}

impl Error {
    /// Worth retrying as is: the network failed (a timeout, a reset or
    /// refused connection, a 5xx, 429 or 408 answer). Bad input, a failed
    /// step, a 4xx answer and cancellation are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Network { status: None, .. } => true,
            Error::Network {
                status: Some(s), ..
            } => *s >= 500 || *s == 429 || *s == 408,
            _ => false,
        }
    }

    /// The `kiln` binary's exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::StepFailed { .. } => code::STEP_FAILED,
            Error::NoProvider { .. } => code::NO_PROVIDER,
            Error::Cancelled { .. } => code::INTERRUPTED,
            Error::Other(e) => exit_code(e),
            Error::Network { .. } | Error::BadInput { .. } => code::FAILURE,
        }
    }
}

impl From<anyhow::Error> for Error {
    /// The first cause in the chain (outermost first) that says what kind
    /// of failure this is; [`Error::Other`] when none does.
    fn from(err: anyhow::Error) -> Error {
        let message = format!("{err:#}");
        for cause in err.chain() {
            if let Some(s) = cause.downcast_ref::<StepFailure>() {
                return Error::StepFailed {
                    step: s.step.clone(),
                    exit_code: s.exit_code,
                    tail: s.tail.clone(),
                    message,
                };
            }
            if cause.is::<crate::sandbox::Cancelled>() {
                return Error::Cancelled { message };
            }
            if let Some(c) = cause.downcast_ref::<CodedError>() {
                match c.code {
                    code::INTERRUPTED => return Error::Cancelled { message },
                    code::NO_PROVIDER => return Error::NoProvider { message },
                    _ => {}
                }
            }
            if let Some(i) = cause.downcast_ref::<InputError>() {
                return Error::BadInput {
                    file: i.file.clone(),
                    line: i.line,
                    message,
                };
            }
            if let Some(s) = cause.downcast_ref::<crate::dockerfile::error::SyntaxError>() {
                return Error::BadInput {
                    file: Some(PathBuf::from(&s.file)),
                    line: Some(s.location.line),
                    message,
                };
            }
            if let Some(r) = cause.downcast_ref::<crate::registry::RegistryError>() {
                return Error::Network {
                    status: r.status,
                    message,
                };
            }
            if let Some(status) = http_failure(cause) {
                return Error::Network { status, message };
            }
        }
        Error::Other(err)
    }
}

/// `Some(status)` when `cause` is an HTTP client's or a socket's failure:
/// `Some(Some(code))` for an answer with an error status, `Some(None)` for
/// a connection that failed, dropped or timed out.
fn http_failure(cause: &(dyn std::error::Error + 'static)) -> Option<Option<u16>> {
    if let Some(f) = cause.downcast_ref::<crate::packages::fetch::FetchError>() {
        return Some(f.status);
    }
    if cause.is::<crate::http::Failure>() {
        return Some(None);
    }
    if let Some(e) = cause.downcast_ref::<ureq::Error>() {
        return match e {
            ureq::Error::StatusCode(code) => Some(Some(*code)),
            ureq::Error::Timeout(_)
            | ureq::Error::Io(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed => Some(None),
            _ => None,
        };
    }
    if let Some(e) = cause.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind::*;
        return matches!(
            e.kind(),
            ConnectionReset | ConnectionRefused | ConnectionAborted | TimedOut | NotConnected
        )
        .then_some(None);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    fn registry(status: Option<u16>) -> anyhow::Error {
        anyhow::Error::new(crate::registry::RegistryError {
            registry: "r.example".into(),
            method: "PUT".into(),
            path: "/v2/app/blobs/uploads/".into(),
            status,
            message: "answered".into(),
            retry_after: None,
            stalled: false,
        })
        .context("pushing r.example/app:1")
    }

    #[test]
    fn network_failures_are_transient_and_bad_input_or_step_failures_are_not() {
        for (err, transient) in [
            (registry(Some(503)), true),
            (registry(Some(429)), true),
            (registry(None), true),
            (registry(Some(401)), false),
            (
                anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
                    .context("downloading a package"),
                true,
            ),
            (
                anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::NotFound))
                    .context("reading a file"),
                false,
            ),
            (
                anyhow::Error::new(InputError::in_file("Dockerfile", "no FROM")),
                false,
            ),
        ] {
            let shown = format!("{err:#}");
            assert_eq!(Error::from(err).is_transient(), transient, "{shown}");
        }
    }

    #[test]
    fn the_typed_cause_decides_the_variant_and_the_exit_code() {
        let step = Err::<(), _>(anyhow::Error::new(StepFailure {
            step: "[build 2/3] RUN make".into(),
            exit_code: 2,
            tail: vec!["make: *** no rule".into()],
            message: "[build 2/3] RUN make failed with exit code 2".into(),
        }))
        .context("building app")
        .unwrap_err();
        assert_eq!(exit_code(&step), code::STEP_FAILED);
        let e = Error::from(step);
        assert_eq!(e.exit_code(), code::STEP_FAILED);
        assert_eq!(
            e.to_string(),
            "building app: [build 2/3] RUN make failed with exit code 2"
        );
        let Error::StepFailed {
            step,
            exit_code,
            tail,
            ..
        } = e
        else {
            panic!("{e:?}")
        };
        assert_eq!(
            (step.as_str(), exit_code, tail),
            (
                "[build 2/3] RUN make",
                2,
                vec!["make: *** no rule".to_string()]
            )
        );
        let cancelled = Error::from(anyhow::Error::new(crate::sandbox::Cancelled));
        assert!(matches!(cancelled, Error::Cancelled { .. }));
        assert_eq!(cancelled.exit_code(), code::INTERRUPTED);
        let syntax = Error::from(anyhow::Error::new(crate::dockerfile::error::SyntaxError {
            file: "app/Dockerfile".into(),
            location: crate::dockerfile::error::Location { line: 3, column: 1 },
            message: "unknown instruction".into(),
            source_line: String::new(),
            hint: None,
        }));
        assert!(
            matches!(&syntax, Error::BadInput { file: Some(f), line: Some(3), .. } if f == std::path::Path::new("app/Dockerfile")),
            "{syntax:?}"
        );
        let other = Error::from(anyhow::anyhow!("disk full"));
        assert!(matches!(other, Error::Other(_)) && !other.is_transient());
        assert_eq!(other.exit_code(), code::FAILURE);
    }
}
