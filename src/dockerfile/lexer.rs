//! Splits Dockerfile text into logical instructions: parser directives at
//! the top, comments, line continuations with the escape character, and
//! heredoc bodies that follow `RUN`/`COPY`/`ADD` lines.

use super::error::{Location, Source, SyntaxError};
use super::shell::{Lexer, NoEnv, parse_words};

/// The parser directives at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Directives {
    /// `# syntax=` (recorded; kiln has one built-in frontend).
    pub syntax: Option<String>,
    /// `# escape=` (`\` by default, or `` ` ``).
    pub escape: char,
    /// `# check=` (recorded; kiln runs no lint checks).
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// A here-document attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heredoc {
    /// The delimiter word (also the file name for `COPY <<NAME`).
    pub name: String,
    /// The body, each line ending in `\n`, exactly as written.
    pub content: String,
    /// False when the delimiter was quoted (`<<'EOF'`, `<<"EOF"`).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body.
    pub chomp: bool,
}

impl Heredoc {
    /// The body with `<<-` tab stripping applied.
    pub fn body(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}

/// One logical instruction before its arguments are interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawInstruction {
    /// The keyword as written (case preserved).
    pub keyword: String,
    pub location: Location,
    /// Location of the first character of `args`.
    pub args_location: Location,
    /// Everything after the keyword, continuations joined, trimmed.
    pub args: String,
    /// The last physical line of the instruction (heredocs included).
    pub end_line: usize,
    pub heredocs: Vec<Heredoc>,
}

/// Directives plus instructions.
#[derive(Debug, Clone)]
pub struct Lexed {
    pub directives: Directives,
    pub instructions: Vec<RawInstruction>,
    /// Warnings such as empty continuation lines.
    pub warnings: Vec<(Location, String)>,
}

fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let eq = rest.find('=')?;
    let name = rest[..eq].trim_end();
    let mut cs = name.chars();
    let first = cs.next()?;
    if !first.is_ascii_alphabetic() || !cs.all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let value = rest[eq + 1..].trim();
    if value.is_empty() {
        return None;
    }
    Some((name.to_ascii_lowercase(), value.to_string()))
}

/// Whether `line` ends with the escape character (plus optional blanks);
/// returns the line without it.
fn continuation(line: &str, escape: char) -> Option<&str> {
    let t = line.trim_end_matches([' ', '\t']);
    t.strip_suffix(escape)
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Heredoc markers in an instruction's arguments, in order:
/// `(delimiter, expand, chomp)`.
pub fn heredoc_markers(args: &str, escape: char) -> Result<Vec<(String, bool, bool)>, String> {
    let mut out = Vec::new();
    for word in parse_words(args, escape) {
        let w = word.trim_start_matches(|c: char| c.is_ascii_digit());
        let Some(rest) = w.strip_prefix("<<") else {
            continue;
        };
        let (chomp, rest) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if rest.is_empty() || rest.contains('<') {
            continue;
        }
        let name = Lexer::new(escape).process_word(rest, &NoEnv)?;
        if name.is_empty() {
            return Err(format!("heredoc {word:?} has an empty delimiter"));
        }
        let quotes = |s: &str| s.matches(['\'', '"']).count();
        let expand = quotes(rest) == quotes(&name);
        out.push((name, expand, chomp));
    }
    Ok(out)
}

/// Whether an instruction keyword takes heredocs.
fn takes_heredocs(keyword: &str) -> bool {
    matches!(
        keyword.to_ascii_uppercase().as_str(),
        "RUN" | "COPY" | "ADD"
    )
}

/// Lexes a whole Dockerfile.
pub fn lex(src: &Source, text: &str) -> Result<Lexed, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    // A trailing newline does not make an extra line.
    let n = if text.ends_with('\n') {
        lines.len() - 1
    } else {
        lines.len()
    };

    let mut directives = Directives::default();
    let mut seen: Vec<String> = Vec::new();
    let mut i = 0;
    while i < n {
        let Some((name, value)) = directive(lines[i]) else {
            break;
        };
        let at = Location {
            line: i + 1,
            column: 1,
        };
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            // Unknown directives are comments, and end the directive block.
            break;
        }
        if seen.contains(&name) {
            return Err(src.error_hint(
                at,
                format!("only one {name} parser directive can be used"),
                "remove the duplicate line",
            ));
        }
        seen.push(name.clone());
        match name.as_str() {
            "syntax" => directives.syntax = Some(value),
            "check" => directives.check = Some(value),
            _ => {
                directives.escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(src.error_hint(
                            at,
                            format!("invalid escape token {value:?} does not match ` or \\"),
                            "use `# escape=\\` or ``# escape=` ``",
                        ));
                    }
                }
            }
        }
        i += 1;
    }

    let escape = directives.escape;
    let mut instructions = Vec::new();
    let mut warnings = Vec::new();
    while i < n {
        let line = lines[i];
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            i += 1;
            continue;
        }
        let start = i;
        let column = line.len() - trimmed.len() + 1;
        let mut logical = String::new();
        let mut cur = trimmed;
        loop {
            match continuation(cur, escape) {
                Some(body) => {
                    logical.push_str(body);
                    i += 1;
                    // Comments and blank lines inside a continuation are skipped.
                    while i < n && (lines[i].trim().is_empty() || is_comment(lines[i])) {
                        if lines[i].trim().is_empty() {
                            warnings.push((
                                Location {
                                    line: i + 1,
                                    column: 1,
                                },
                                "empty continuation line (deprecated; remove it)".to_string(),
                            ));
                        }
                        i += 1;
                    }
                    if i >= n {
                        break;
                    }
                    cur = lines[i];
                }
                None => {
                    logical.push_str(cur);
                    break;
                }
            }
        }
        let end_line = i.min(n - 1);
        i = end_line + 1;
        let logical = logical.trim();
        let (keyword, args) = match logical.find(char::is_whitespace) {
            Some(p) => (&logical[..p], logical[p..].trim()),
            None => (logical, ""),
        };
        let after_kw = trimmed.get(keyword.len()..).unwrap_or("");
        let blanks = after_kw.len() - after_kw.trim_start().len();
        let args_col = column + keyword.chars().count() + after_kw[..blanks].chars().count().max(1);
        let mut inst = RawInstruction {
            keyword: keyword.to_string(),
            location: Location {
                line: start + 1,
                column,
            },
            args_location: Location {
                line: start + 1,
                column: args_col,
            },
            args: args.to_string(),
            end_line: end_line + 1,
            heredocs: Vec::new(),
        };
        // `ONBUILD RUN <<EOF` is not supported by BuildKit either.
        if takes_heredocs(keyword) {
            let markers =
                heredoc_markers(args, escape).map_err(|m| src.error(inst.args_location, m))?;
            for (name, expand, chomp) in markers {
                let opened = i;
                let mut content = String::new();
                loop {
                    if i >= n {
                        return Err(src.error_hint(
                            inst.location,
                            format!("unterminated heredoc <<{name} (no line {name:?} after line {opened})"),
                            format!("end the heredoc with a line containing only {name}"),
                        ));
                    }
                    let l = lines[i];
                    i += 1;
                    let cmp = if chomp { l.trim_start_matches('\t') } else { l };
                    if cmp == name {
                        break;
                    }
                    content.push_str(l);
                    content.push('\n');
                }
                inst.heredocs.push(Heredoc {
                    name,
                    content,
                    expand,
                    chomp,
                });
            }
            inst.end_line = i;
        }
        instructions.push(inst);
    }
    Ok(Lexed {
        directives,
        instructions,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lx(text: &str) -> Lexed {
        lex(&Source::new("Dockerfile", text), text).unwrap()
    }

    fn lx_err(text: &str) -> SyntaxError {
        lex(&Source::new("Dockerfile", text), text).unwrap_err()
    }

    #[test]
    fn directives_and_comments() {
        let l = lx(
            "# syntax=docker/dockerfile:1\n#escape = `\n# check=skip=all\nFROM x\n# escape=\\\nRUN a `\n  b\n",
        );
        assert_eq!(l.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(l.directives.escape, '`');
        assert_eq!(l.directives.check.as_deref(), Some("skip=all"));
        assert_eq!(l.instructions.len(), 2);
        assert_eq!(l.instructions[1].args, "a   b");
        assert_eq!(l.instructions[1].end_line, 7);
    }

    #[test]
    fn directive_after_comment_is_a_comment() {
        let l = lx("# hello\n# escape=`\nRUN a \\\n b\n");
        assert_eq!(l.directives.escape, '\\');
        assert_eq!(l.instructions[0].args, "a  b");
    }

    #[test]
    fn bad_directives() {
        let e = lx_err("# escape=x\nFROM a\n");
        assert_eq!(e.location.line, 1);
        assert!(e.message.contains("invalid escape token"));
        let e = lx_err("# syntax=a\n# syntax=b\n");
        assert!(e.message.contains("only one syntax"));
    }

    #[test]
    fn continuations_skip_comments_and_blank_lines() {
        let l = lx(
            "FROM x\nRUN echo a \\\n# inner comment\n\n   && echo b \\   \n  && echo c\nCMD x\n",
        );
        let run = &l.instructions[1];
        assert_eq!(run.keyword, "RUN");
        assert_eq!(run.args, "echo a    && echo b   && echo c");
        assert_eq!(run.location.line, 2);
        assert_eq!(run.end_line, 6);
        assert_eq!(l.warnings.len(), 1);
        assert_eq!(l.instructions[2].location.line, 7);
    }

    #[test]
    fn indented_instruction_columns() {
        let l = lx("  FROM   alpine\n\tRUN  ls\n");
        assert_eq!(l.instructions[0].location, Location { line: 1, column: 3 });
        assert_eq!(l.instructions[0].args_location.column, 10);
        assert_eq!(l.instructions[1].location.column, 2);
    }

    #[test]
    fn heredocs() {
        let l = lx(
            "FROM x\nRUN <<EOF\necho hi\n  EOF\nEOF\nCOPY <<-\"A\" <<B /dst/\n\tline $X\n\tA\nb\nB\nRUN cat\n",
        );
        let run = &l.instructions[1];
        assert_eq!(run.heredocs.len(), 1);
        assert_eq!(run.heredocs[0].content, "echo hi\n  EOF\n");
        assert!(run.heredocs[0].expand);
        assert_eq!(run.end_line, 5);
        let copy = &l.instructions[2];
        assert_eq!(copy.heredocs.len(), 2);
        assert_eq!(copy.heredocs[0].name, "A");
        assert!(!copy.heredocs[0].expand);
        assert!(copy.heredocs[0].chomp);
        assert_eq!(copy.heredocs[0].body(), "line $X\n");
        assert_eq!(copy.heredocs[1].content, "b\n");
        assert_eq!(l.instructions[3].location.line, 11);
    }

    #[test]
    fn heredoc_markers_in_words() {
        let m = heredoc_markers("python3 <<'PY' 2<<ERR > out '<<no'", '\\').unwrap();
        assert_eq!(
            m,
            vec![("PY".into(), false, false), ("ERR".into(), true, false)]
        );
        assert!(heredoc_markers("echo a<<b", '\\').unwrap().is_empty());
    }

    #[test]
    fn unterminated_heredoc() {
        let e = lx_err("FROM x\nRUN <<EOF\necho\n");
        assert_eq!(e.location.line, 2);
        assert!(e.message.contains("unterminated heredoc <<EOF"));
    }

    #[test]
    fn crlf_and_bom() {
        let l = lx("\u{feff}FROM x\r\nRUN a \\\r\n b\r\n");
        assert_eq!(l.instructions[1].args, "a  b");
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;

    fn lx(text: &str) -> Lexed {
        lex(&Source::new("Dockerfile", text), text).unwrap()
    }

    #[test]
    fn heredoc_after_continuation_and_indented_directive() {
        let l = lx("  # escape=`\nFROM x\nCOPY <<EOF \\\n  /dest\nbody\nEOF\nRUN [\"C:\\\\x\"]\n");
        assert_eq!(
            l.directives.escape, '\\',
            "a directive must start at column 1"
        );
        let copy = &l.instructions[1];
        assert_eq!(copy.args, "<<EOF   /dest");
        assert_eq!(copy.heredocs[0].content, "body\n");
        assert_eq!(copy.end_line, 6);
        assert_eq!(l.instructions[2].location.line, 7);
    }

    #[test]
    fn backtick_escape_keeps_backslashes() {
        let l = lx("# escape=`\nFROM x\nRUN dir C:\\ `\n  && echo done\n");
        assert_eq!(l.instructions[1].args, "dir C:\\   && echo done");
    }

    #[test]
    fn continuation_at_end_of_file() {
        let l = lx("FROM x\nRUN a \\");
        assert_eq!(l.instructions[1].args, "a");
    }
}
