//! `.dockerignore` with Docker's semantics (moby `patternmatcher` and
//! `ignorefile`): patterns are cleaned (`./a` → `a`, `/a` → `a`), `*` and
//! `?` do not cross `/`, `**` matches any number of directories, `!`
//! re-includes, the last matching pattern wins, and a path is excluded when
//! it or one of its parent directories is.
//!
//! Patterns are compiled to regexes exactly as moby does; the `regex`
//! crate's syntax matches Go's for everything this produces.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use regex::Regex;

use crate::Result;

/// Go's `path.Clean` for `/`-separated paths.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if matches!(parts.last(), Some(p) if *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            _ => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The cleaned pattern without its `!`.
    pub text: String,
    /// A `!` exception (re-includes).
    pub exclusion: bool,
    regex: Regex,
}

impl Pattern {
    fn new(raw: &str) -> Result<Pattern> {
        let mut p = clean(raw.trim());
        let mut exclusion = false;
        if let Some(rest) = p.strip_prefix('!') {
            if rest.is_empty() {
                bail!("illegal exclusion pattern: \"!\"");
            }
            exclusion = true;
            p = clean(rest);
        }
        let regex = Regex::new(&to_regex(&p))
            .with_context(|| format!("invalid pattern {raw:?}: check brackets and escapes"))?;
        Ok(Pattern {
            text: p,
            exclusion,
            regex,
        })
    }

    pub fn matches(&self, path: &str) -> bool {
        self.regex.is_match(path)
    }
}

/// moby's pattern → regex translation.
fn to_regex(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut re = String::from("^");
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                // `**/` is treated as `**`.
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    re.push_str(".*");
                } else {
                    re.push_str("(.*/)?");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                re.push('\\');
                re.push(ch);
            }
            '\\' => {
                if let Some(&n) = chars.get(i) {
                    i += 1;
                    re.push_str(&regex::escape(&n.to_string()));
                } else {
                    re.push_str("\\\\");
                }
            }
            _ => re.push(ch),
        }
    }
    re.push('$');
    re
}

/// A list of patterns, as in a `.dockerignore` file or `COPY --exclude`.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub patterns: Vec<Pattern>,
}

impl Matcher {
    /// Compiles patterns (already one per entry, `!` allowed).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Matcher> {
        let mut out = Vec::new();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            out.push(Pattern::new(p)?);
        }
        Ok(Matcher { patterns: out })
    }

    /// Parses `.dockerignore` text (moby `ignorefile.ReadAll`): `#` comments
    /// at the start of a line, blank lines skipped, surrounding whitespace
    /// trimmed, leading `/` removed.
    pub fn parse(text: &str, file: &str) -> Result<Matcher> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let mut p = line.trim();
            if p.is_empty() {
                continue;
            }
            let invert = p.starts_with('!');
            if invert {
                p = p[1..].trim();
            }
            let mut cleaned = if p.is_empty() {
                String::new()
            } else {
                clean(p)
            };
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let full = if invert {
                format!("!{cleaned}")
            } else {
                cleaned
            };
            let pat = Pattern::new(&full).with_context(|| format!("{file}:{}: {line:?}", n + 1))?;
            out.push(pat);
        }
        Ok(Matcher { patterns: out })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (relative, `/`-separated) is excluded: the last
    /// pattern matching it or one of its parents decides.
    pub fn excludes(&self, path: &str) -> bool {
        let parents: Vec<&str> = match path.rfind('/') {
            Some(p) => path[..p].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for pat in &self.patterns {
            // An inclusion cannot change an already-excluded path and an
            // exception cannot change an included one.
            if pat.exclusion != matched {
                continue;
            }
            let mut m = pat.matches(path);
            if !m {
                for i in 0..parents.len() {
                    if pat.matches(&parents[..=i].join("/")) {
                        m = true;
                        break;
                    }
                }
            }
            if m {
                matched = !pat.exclusion;
            }
        }
        matched
    }

    /// Whether an excluded directory must still be walked because an
    /// exception pattern names something inside it (moby's prefix rule).
    pub fn may_include_under(&self, dir: &str) -> bool {
        let dir_slash = format!("{dir}/");
        self.patterns
            .iter()
            .any(|p| p.exclusion && format!("{}/", p.text).starts_with(&dir_slash))
    }
}

/// The ignore file for a build: `<Dockerfile name>.dockerignore` next to the
/// Dockerfile wins over `<context>/.dockerignore`.
pub fn ignore_file(context: &Path, dockerfile: &Path) -> Option<PathBuf> {
    if let (Some(dir), Some(name)) = (dockerfile.parent(), dockerfile.file_name()) {
        let mut n = name.to_os_string();
        n.push(".dockerignore");
        let specific = dir.join(n);
        if specific.is_file() {
            return Some(specific);
        }
    }
    let general = context.join(".dockerignore");
    general.is_file().then_some(general)
}

/// Loads the ignore rules for a build (empty when there is no file).
pub fn load(context: &Path, dockerfile: &Path) -> Result<(Matcher, Option<PathBuf>)> {
    match ignore_file(context, dockerfile) {
        None => Ok((Matcher::default(), None)),
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok((
                Matcher::parse(&text, &path.display().to_string())?,
                Some(path),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(text: &str) -> Matcher {
        Matcher::parse(text, ".dockerignore").unwrap()
    }

    #[test]
    fn go_clean() {
        assert_eq!(clean("./a//b/../c/"), "a/c");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean("../a"), "../a");
        assert_eq!(clean(""), ".");
        assert_eq!(clean("a/.."), ".");
    }

    #[test]
    fn basics() {
        let i = m("# comment\n\n  *.log  \n/build\n./tmp/\nnode_modules\n");
        assert!(i.excludes("a.log"));
        assert!(!i.excludes("dir/a.log"), "* does not cross /");
        assert!(i.excludes("build"));
        assert!(i.excludes("build/x/y"), "parent excluded");
        assert!(i.excludes("tmp/x"));
        assert!(i.excludes("node_modules/a/b.js"));
        assert!(
            !i.excludes("src/node_modules"),
            "patterns are anchored at the root"
        );
        assert!(!i.excludes("src/main.rs"));
    }

    #[test]
    fn double_star() {
        let i = m("**/*.pyc\ndocs/**\n**\n!keep/**\n");
        assert!(i.excludes("anything"));
        assert!(!i.excludes("keep/a/b"));
        let i = m("**/*.pyc\n");
        assert!(i.excludes("a.pyc"));
        assert!(i.excludes("x/y/a.pyc"));
        assert!(!i.excludes("x/y/a.py"));
        let i = m("a/**/b\n");
        assert!(i.excludes("a/b"));
        assert!(i.excludes("a/x/y/b"));
        assert!(!i.excludes("a/x/c"));
        let i = m("docs/**\n");
        assert!(i.excludes("docs/a"));
        assert!(
            !i.excludes("docs"),
            "docs/** is everything inside, not docs itself"
        );
    }

    #[test]
    fn exceptions_last_match_wins() {
        let i = m("*.md\n!README.md\n");
        assert!(i.excludes("CHANGES.md"));
        assert!(!i.excludes("README.md"));
        let i = m("!README.md\n*.md\n");
        assert!(i.excludes("README.md"), "later exclusion wins");
        let i = m("dir\n!dir/keep\n");
        assert!(i.excludes("dir/x"));
        assert!(!i.excludes("dir/keep"));
        assert!(!i.excludes("dir/keep/inner"));
        assert!(i.may_include_under("dir"));
        assert!(!i.may_include_under("other"));
        let i = m("*\n!src\n");
        assert!(!i.excludes("src/a/b"));
        assert!(i.excludes("Dockerfile"));
    }

    #[test]
    fn special_characters() {
        let i = m("a.b\nf?o\n[xy].txt\n\\*lit\nc+d(e)\n");
        assert!(i.excludes("a.b"));
        assert!(!i.excludes("aXb"), ". is literal");
        assert!(i.excludes("fxo"));
        assert!(!i.excludes("f/o"));
        assert!(i.excludes("x.txt"));
        assert!(!i.excludes("z.txt"));
        assert!(i.excludes("*lit"));
        assert!(!i.excludes("alit"));
        assert!(i.excludes("c+d(e)"));
        assert!(Matcher::parse("!\n", "f").is_err());
        assert!(
            Matcher::parse("[\n", "f")
                .unwrap_err()
                .to_string()
                .contains("f:1")
        );
    }

    #[test]
    fn ignore_file_precedence() {
        let t = tempfile::tempdir().unwrap();
        let ctx = t.path();
        std::fs::create_dir(ctx.join("sub")).unwrap();
        std::fs::write(ctx.join(".dockerignore"), "a\n").unwrap();
        let df = ctx.join("sub/app.Dockerfile");
        assert_eq!(ignore_file(ctx, &df).unwrap(), ctx.join(".dockerignore"));
        std::fs::write(ctx.join("sub/app.Dockerfile.dockerignore"), "b\n").unwrap();
        assert_eq!(
            ignore_file(ctx, &df).unwrap(),
            ctx.join("sub/app.Dockerfile.dockerignore")
        );
        let (mm, _) = load(ctx, &df).unwrap();
        assert!(mm.excludes("b") && !mm.excludes("a"));
        std::fs::write(ctx.join("Dockerfile.dockerignore"), "c\n").unwrap();
        let (mm, _) = load(ctx, &ctx.join("Dockerfile")).unwrap();
        assert!(mm.excludes("c") && !mm.excludes("a"));
    }
}
