//! Errors that point into a Dockerfile: `file:line:column`, the offending
//! line, and what to do about it.

use std::fmt;

/// A position in a Dockerfile (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// A Dockerfile syntax or semantic error. Callers may downcast to this to
/// show the location in an editor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SyntaxError {
    /// The Dockerfile path as the user named it.
    pub file: String,
    pub location: Location,
    pub message: String,
    /// The text of the offending line (without its newline).
    pub source_line: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.location.line, self.location.column, self.message
        )?;
        if !self.source_line.is_empty() {
            write!(f, "\n  {:>4} | {}", self.location.line, self.source_line)?;
            let pad = self.location.column.saturating_sub(1);
            // Tabs keep their width so the caret lines up under the column.
            let lead: String = self
                .source_line
                .chars()
                .take(pad)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n       | {lead}^")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Builds [`SyntaxError`]s for one Dockerfile: knows its name and lines.
#[derive(Debug, Clone)]
pub struct Source {
    pub file: String,
    lines: Vec<String>,
}

impl Source {
    pub fn new(file: impl Into<String>, text: &str) -> Source {
        Source {
            file: file.into(),
            lines: text.lines().map(str::to_string).collect(),
        }
    }

    /// The text of a 1-based line, or "" past the end.
    pub fn line(&self, line: usize) -> &str {
        line.checked_sub(1)
            .and_then(|i| self.lines.get(i))
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn error(&self, at: Location, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            file: self.file.clone(),
            location: at,
            message: message.into(),
            source_line: self.line(at.line).to_string(),
            hint: None,
        }
    }

    pub fn error_hint(
        &self,
        at: Location,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> SyntaxError {
        let mut e = self.error(at, message);
        e.hint = Some(hint.into());
        e
    }
}
