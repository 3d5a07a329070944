//! Reading deploy files: multi-document YAML with `FILE:LINE:COLUMN` on
//! errors, and typed access to fields that names the field on a mistake.
//!
//! The crate is `serde_norway`, the maintained fork of `serde_yaml` 0.9
//! (which is archived): it reports line and column for syntax errors,
//! keeps mapping keys in document order (its `Mapping` is an index map),
//! and reads `---`-separated streams. It drops comments, which is why
//! [`super::rewrite`] edits the original text where it can.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize as _;
use serde_norway::{Mapping, Value};

use crate::Result;

/// Every document of `text` (from `file`), in order. Empty documents are
/// kept as `Null` so indexes match the `---` sections of the text.
pub fn load(file: &Path, text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for de in serde_norway::Deserializer::from_str(text) {
        let v = Value::deserialize(de).map_err(|e| located(file, &e))?;
        docs.push(v);
    }
    Ok(docs)
}

/// `FILE:LINE:COLUMN: invalid YAML: …` for a parse error.
pub fn located(file: &Path, e: &serde_norway::Error) -> anyhow::Error {
    match e.location() {
        Some(l) => anyhow!(
            "{}:{}:{}: invalid YAML: {e}",
            file.display(),
            l.line(),
            l.column()
        ),
        None => anyhow!("{}: invalid YAML: {e}", file.display()),
    }
}

/// A mapping's string-keyed view, with the field path for errors.
pub struct Fields<'a> {
    pub map: &'a Mapping,
    /// e.g. `machine.build.docker`
    pub path: String,
}

impl<'a> Fields<'a> {
    pub fn new(map: &'a Mapping, path: impl Into<String>) -> Fields<'a> {
        Fields {
            map,
            path: path.into(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A scalar field as a string (numbers and booleans are written as
    /// YAML shows them: `tag: 1.0` is the tag `1.0`).
    pub fn string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => scalar(v)
                .map(Some)
                .with_context(|| format!("{}.{key} must be a string", self.path)),
        }
    }

    /// `args:` as a map `{K: V}` or a list `["K=V"]` (compose allows both).
    pub fn args(&self, key: &str) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        match self.get(key) {
            None => {}
            Some(Value::Mapping(m)) => {
                for (k, v) in m {
                    let k = scalar(k).with_context(|| format!("{}.{key}: bad key", self.path))?;
                    let v = if v.is_null() {
                        String::new()
                    } else {
                        scalar(v).with_context(|| {
                            format!("{}.{key}.{k} must be a string or number", self.path)
                        })?
                    };
                    out.insert(k, v);
                }
            }
            Some(Value::Sequence(s)) => {
                for item in s {
                    let item = scalar(item)
                        .with_context(|| format!("{}.{key}: items must be KEY=VALUE", self.path))?;
                    let (k, v) = item.split_once('=').unwrap_or((item.as_str(), ""));
                    out.insert(k.to_string(), v.to_string());
                }
            }
            Some(_) => bail!(
                "{}.{key} must be a mapping of NAME: VALUE or a list of NAME=VALUE",
                self.path
            ),
        }
        Ok(out)
    }

    /// Fails on any key outside `known`, naming it and the allowed ones.
    pub fn only(&self, known: &[&str]) -> Result<()> {
        for k in self.map.keys() {
            let k = scalar(k).unwrap_or_else(|_| format!("{k:?}"));
            if !known.contains(&k.as_str()) {
                bail!(
                    "unknown field {}.{k} (expected one of: {})",
                    self.path,
                    known.join(", ")
                );
            }
        }
        Ok(())
    }
}

/// A scalar as text.
pub fn scalar(v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => bail!("expected a string, found {}", kind(other)),
    }
}

/// `command:` as one shell string: a list is joined with spaces, each
/// item quoted when it needs it, so `[node, --flag, server.mjs]` runs as
/// written.
pub fn command(v: &Value, path: &str) -> Result<String> {
    match v {
        Value::Sequence(items) => {
            let parts = items
                .iter()
                .map(|i| scalar(i).map(|s| shell_quote(&s)))
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("{path}: items must be strings"))?;
            Ok(parts.join(" "))
        }
        other => scalar(other).with_context(|| format!("{path} must be a string or a list")),
    }
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Writes documents back as a `---`-separated stream.
pub fn dump(docs: &[Value]) -> Result<String> {
    let mut out = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 || docs.len() > 1 {
            out.push_str("---\n");
        }
        out.push_str(&serde_norway::to_string(d).context("writing YAML")?);
    }
    Ok(out)
}
