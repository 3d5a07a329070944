//! What providers look at: the app directory (files read once and cached,
//! one walk of the tree for extension lookups that skips dependency and VCS
//! directories), the resolved environment, and manifest parsers whose
//! errors name `file:line:column` and what is wrong.

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context as _, anyhow};

/// The resolved environment: `--env` values plus the config file's
/// `[variables]`, read the same way for every option.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub vars: BTreeMap<String, String>,
}

impl Env {
    /// `KILN_<name>` or else `NIXPACKS_<name>`, newlines stripped, empty = unset.
    /// Returns the value and the variable it came from.
    pub fn option(&self, name: &str) -> Option<(String, String)> {
        for prefix in ["KILN_", "NIXPACKS_"] {
            let key = format!("{prefix}{name}");
            if let Some(v) = self.vars.get(&key) {
                let v: String = v.chars().filter(|c| *c != '\n' && *c != '\r').collect();
                if !v.trim().is_empty() {
                    return Some((v.trim().to_string(), key));
                }
            }
        }
        None
    }

    pub fn opt(&self, name: &str) -> Option<String> {
        self.option(name).map(|(v, _)| v)
    }

    /// Truthy is exactly `1` or `true` (Nixpacks' rule).
    pub fn truthy(&self, name: &str) -> bool {
        self.opt(name).is_some_and(|v| v == "1" || v == "true")
    }

    /// A plain (unprefixed) variable.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// An option holding a list: comma and/or whitespace separated.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.opt(name).map(|v| split_list(&v)).unwrap_or_default()
    }
}

/// kiln's one list syntax: items separated by commas and/or whitespace.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

/// Directories the walk never enters.
const SKIP_DIRS: &[&str] = &[
    "node_modules",
    ".git",
    ".hg",
    ".svn",
    "target",
    "vendor",
    "__pycache__",
    ".venv",
    "venv",
    ".next",
    ".nuxt",
    ".svelte-kit",
    "_build",
    "deps",
    ".gradle",
    ".stack-work",
    "zig-cache",
    "zig-out",
    ".build",
];
const WALK_LIMIT: usize = 20_000;

/// What a provider sees.
pub struct Ctx<'a> {
    pub dir: &'a Path,
    pub env: &'a Env,
    cache: RefCell<HashMap<String, Option<Rc<str>>>>,
    walk: OnceCell<Vec<String>>,
}

impl<'a> Ctx<'a> {
    pub fn new(dir: &'a Path, env: &'a Env) -> Ctx<'a> {
        Ctx {
            dir,
            env,
            cache: RefCell::new(HashMap::new()),
            walk: OnceCell::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn is_file(&self, rel: &str) -> bool {
        self.path(rel).is_file()
    }

    pub fn is_dir(&self, rel: &str) -> bool {
        self.path(rel).is_dir()
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    /// A file's text, cached; `None` when it does not exist or is not UTF-8.
    pub fn read(&self, rel: &str) -> Option<Rc<str>> {
        if let Some(c) = self.cache.borrow().get(rel) {
            return c.clone();
        }
        let v: Option<Rc<str>> = std::fs::read_to_string(self.path(rel)).ok().map(Rc::from);
        self.cache.borrow_mut().insert(rel.to_string(), v.clone());
        v
    }

    /// True when the file exists and contains `needle`.
    pub fn contains(&self, rel: &str, needle: &str) -> bool {
        self.read(rel).is_some_and(|t| t.contains(needle))
    }

    /// Parses a JSON file; errors say `file:line:column: what`.
    pub fn json(&self, rel: &str) -> crate::Result<Option<serde_json::Value>> {
        let Some(text) = self.read(rel) else {
            return Ok(None);
        };
        parse_json(rel, &text).map(Some)
    }

    /// Parses a TOML file; errors say `file:line:column: what`.
    pub fn toml(&self, rel: &str) -> crate::Result<Option<toml::Table>> {
        let Some(text) = self.read(rel) else {
            return Ok(None);
        };
        parse_toml(rel, &text).map(Some)
    }

    /// Every file below the root (relative, `/`-separated, sorted), found
    /// by one walk that skips hidden, dependency and build directories.
    pub fn files(&self) -> &[String] {
        self.walk.get_or_init(|| {
            let mut out = Vec::new();
            walk(self.dir, "", 0, &mut out);
            out.sort();
            out
        })
    }

    /// Files with extension `ext` anywhere in the tree.
    pub fn with_ext(&self, ext: &str) -> Vec<&str> {
        let suffix = format!(".{ext}");
        self.files()
            .iter()
            .filter(|f| f.ends_with(&suffix))
            .map(String::as_str)
            .collect()
    }

    /// Files with extension `ext` directly in the root.
    pub fn root_with_ext(&self, ext: &str) -> Vec<String> {
        let suffix = format!(".{ext}");
        let mut v: Vec<String> = std::fs::read_dir(self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(&suffix) && self.is_file(n))
            .collect();
        v.sort();
        v
    }
}

fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<String>) {
    if depth > 8 || out.len() >= WALK_LIMIT {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let Ok(ft) = e.file_type() else { continue };
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if ft.is_dir() {
            if name.starts_with('.') || SKIP_DIRS.contains(&name.as_str()) {
                continue;
            }
            walk(&e.path(), &rel, depth + 1, out);
        } else {
            out.push(rel);
        }
    }
}

/// `line:column` (1-based) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

pub fn parse_json(file: &str, text: &str) -> crate::Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| {
        anyhow!(
            "{file}:{}:{}: invalid JSON: {}: fix the file",
            e.line(),
            e.column(),
            strip_position(&e.to_string())
        )
    })
}

pub fn parse_toml(file: &str, text: &str) -> crate::Result<toml::Table> {
    toml::from_str(text).map_err(|e| {
        let (l, c) = e.span().map_or((0, 0), |s| line_col(text, s.start));
        anyhow!(
            "{file}:{l}:{c}: invalid TOML: {}: fix the file",
            e.message().trim()
        )
    })
}

/// serde_json appends " at line X column Y"; we print it in front instead.
fn strip_position(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

/// A string field of a JSON object path (`a.b.c`).
pub fn jstr<'v>(v: &'v serde_json::Value, path: &str) -> Option<&'v str> {
    let mut cur = v;
    for k in path.split('.') {
        cur = cur.get(k)?;
    }
    cur.as_str()
}

/// A string field of a TOML table path.
pub fn tstr<'v>(t: &'v toml::Table, path: &str) -> Option<&'v str> {
    let mut parts = path.split('.');
    let mut cur = t.get(parts.next()?)?;
    for k in parts {
        cur = cur.get(k)?;
    }
    cur.as_str()
}

/// Reads a file for an error message's sake: `file:line` of the first line
/// containing `needle`, else the file name.
pub fn locate(text: &str, file: &str, needle: &str) -> String {
    match text.find(needle) {
        Some(i) => format!("{file}:{}", line_col(text, i).0),
        None => file.to_string(),
    }
}

/// Reads a directory's entries for error messages.
pub fn read_dir_names(dir: &Path) -> crate::Result<Vec<String>> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the app directory {}", dir.display()))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    Ok(v)
}
