//! Putting `image: REF@sha256:…` where `build:` was.
//!
//! Two ways, one answer: the documents are rewritten as values (the
//! reference result), and the original text is edited line by line — only
//! the `build:` block and an existing `image:` line change, so comments,
//! quoting, key order and blank lines stay as the author wrote them. The
//! edited text is used only when it parses to exactly the rewritten
//! values; otherwise (flow style, anchors, odd indentation) the values are
//! written out, which keeps order and fields but not comments.

use anyhow::{Context as _, bail};
use serde_norway::{Mapping, Value};

use super::yaml;
use super::{Built, Parsed, Resource};
use crate::Result;

/// A step from a document's root to the mapping that holds `build:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// The resolved text of a parsed file.
pub fn resolve(p: &Parsed, images: &[(&Resource, &Built)]) -> Result<String> {
    let mut docs = p.docs.clone();
    for (r, b) in images {
        let doc = docs.get_mut(r.doc).context("document index out of range")?;
        set_image(doc, &r.at, &b.reference)
            .with_context(|| format!("{}: rewriting {}", p.file.display(), r.label))?;
    }
    if let Some(text) = edit_text(&p.text, images)
        && yaml::load(&p.file, &text).ok().as_deref() == Some(docs.as_slice())
    {
        return Ok(text);
    }
    yaml::dump(&docs)
}

/// The value-level rewrite: `image` takes the value, `build` goes; when
/// there was no `image`, it takes `build`'s place in the key order.
pub fn set_image(doc: &mut Value, at: &[Seg], image: &str) -> Result<()> {
    let mut cur = doc;
    for s in at {
        cur = match (s, cur) {
            (Seg::Key(k), Value::Mapping(m)) => m.get_mut(k.as_str()).context("missing key")?,
            (Seg::Index(i), Value::Sequence(v)) => v.get_mut(*i).context("missing item")?,
            _ => bail!("unexpected document shape"),
        };
    }
    let Value::Mapping(m) = cur else {
        bail!("expected a mapping");
    };
    let img = Value::String(image.to_string());
    if !m.contains_key("build") && !m.contains_key("image") {
        // A service built from `path:` alone: image: goes after name:.
        let mut out = Mapping::new();
        let had_name = m.contains_key("name");
        for (k, v) in std::mem::take(m) {
            let is_name = k.as_str() == Some("name");
            out.insert(k, v);
            if is_name {
                out.insert(Value::from("image"), img.clone());
            }
        }
        if !had_name {
            out.insert(Value::from("image"), img);
        }
        *m = out;
        return Ok(());
    }
    if m.contains_key("image") {
        m.insert(Value::from("image"), img);
        m.shift_remove("build");
        return Ok(());
    }
    let mut out = Mapping::new();
    for (k, v) in std::mem::take(m) {
        if k.as_str() == Some("build") {
            out.insert(Value::from("image"), img.clone());
        } else {
            out.insert(k, v);
        }
    }
    *m = out;
    Ok(())
}

/// Line-level edit of the original text; `None` when a block cannot be
/// found with certainty.
fn edit_text(text: &str, images: &[(&Resource, &Built)]) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let docs = doc_ranges(&lines);
    // (first line, end line exclusive, replacement lines)
    let mut edits: Vec<(usize, usize, Vec<String>)> = Vec::new();
    for (r, b) in images {
        let &(start, end) = docs.get(r.doc)?;
        let (ms, me, indent) = locate(&lines, start, end, &r.at)?;
        let build = find_key(&lines, ms, me, indent, "build");
        let image = find_key(&lines, ms, me, indent, "image");
        let line = |at: usize| format!("{}image: {}", &lines[at][..indent], b.reference);
        match (build, image) {
            (Some(build), Some((il, ie))) => {
                edits.push((il, ie, vec![line(il)]));
                edits.push((build.0, build.1, Vec::new()));
            }
            (Some(build), None) => edits.push((build.0, build.1, vec![line(build.0)])),
            (None, Some((il, ie))) => edits.push((il, ie, vec![line(il)])),
            (None, None) => {
                let (_, ne) = find_key(&lines, ms, me, indent, "name")?;
                // Indented like the keys, without an item's "- ".
                edits.push((
                    ne,
                    ne,
                    vec![format!("{}image: {}", " ".repeat(indent), b.reference)],
                ));
            }
        }
    }
    edits.sort_by_key(|e| e.0);
    let mut out = String::new();
    let mut i = 0;
    for (s, e, repl) in edits {
        if s < i {
            return None;
        }
        for l in &lines[i..s] {
            out.push_str(l);
            out.push('\n');
        }
        for l in repl {
            out.push_str(&l);
            out.push('\n');
        }
        i = e;
    }
    for l in &lines[i..] {
        out.push_str(l);
        out.push('\n');
    }
    Some(out)
}

/// Line ranges of the documents of a stream, split at `---` lines; text
/// before a first `---` that holds no content is not a document.
fn doc_ranges(lines: &[&str]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let is_sep = |l: &str| l == "---" || l.starts_with("--- ") || l.starts_with("---\t");
    for (i, l) in lines.iter().enumerate() {
        if is_sep(l) {
            if !out.is_empty() || has_content(&lines[start..i]) {
                out.push((start, i));
            }
            start = i + 1;
        }
    }
    if start < lines.len() || out.is_empty() {
        out.push((start, lines.len()));
    }
    out
}

fn has_content(lines: &[&str]) -> bool {
    lines.iter().any(|l| content_indent(l).is_some())
}

/// Indentation of a line with content (not blank, not a comment).
fn content_indent(l: &str) -> Option<usize> {
    let t = l.trim_start_matches(' ');
    if t.is_empty() || t.starts_with('#') {
        None
    } else {
        Some(l.len() - t.len())
    }
}

/// Walks `at` inside lines `[start, end)`: returns the mapping's line range
/// and its key indentation.
fn locate(lines: &[&str], start: usize, end: usize, at: &[Seg]) -> Option<(usize, usize, usize)> {
    let mut range = (start, end);
    let mut indent = (start..end).find_map(|i| content_indent(lines[i]))?;
    for s in at {
        match s {
            Seg::Key(k) => {
                let (kl, ke) = find_key(lines, range.0, range.1, indent, k)?;
                // The value must be a block below the key line.
                let rest = lines[kl][indent..].split_once(':')?.1.trim();
                if !(rest.is_empty() || rest.starts_with('#')) {
                    return None;
                }
                range = (kl + 1, ke);
                indent = (kl + 1..ke).find_map(|i| content_indent(lines[i]))?;
            }
            Seg::Index(j) => {
                let items: Vec<usize> = (range.0..range.1)
                    .filter(|&i| {
                        content_indent(lines[i]) == Some(indent)
                            && (lines[i][indent..].starts_with("- ") || lines[i][indent..] == *"-")
                    })
                    .collect();
                let &first = items.get(*j)?;
                let last = items.get(j + 1).copied().unwrap_or(range.1);
                // Keys of the item's mapping start after "- " on its first line.
                if lines[first][indent..].trim() == "-" {
                    return None;
                }
                range = (first, last);
                indent += 2;
            }
        }
    }
    Some((range.0, range.1, indent))
}

/// The lines of `key:` at `indent` in a block mapping within `[start, end)`:
/// the key line and every deeper line after it (trailing blank lines and
/// comments stay outside). A `- ` at the start of an item counts as
/// indentation.
fn find_key(
    lines: &[&str],
    start: usize,
    end: usize,
    indent: usize,
    key: &str,
) -> Option<(usize, usize)> {
    let at_indent = |i: usize| -> Option<&str> {
        let l = lines[i];
        if l.len() < indent {
            return None;
        }
        let (pre, rest) = l.split_at(indent);
        let item_start = i == start
            && pre
                .strip_suffix("- ")
                .is_some_and(|p| p.chars().all(|c| c == ' '));
        let pre_ok = pre.chars().all(|c| c == ' ') || item_start;
        if pre_ok && !rest.starts_with(' ') {
            Some(rest)
        } else {
            None
        }
    };
    let mut found = None;
    for i in start..end {
        if let Some(rest) = at_indent(i) {
            let quoted = [
                format!("{key}:"),
                format!("\"{key}\":"),
                format!("'{key}':"),
            ];
            if quoted.iter().any(|q| rest.starts_with(q.as_str())) {
                if found.is_some() {
                    return None;
                }
                found = Some(i);
            }
        }
    }
    let kl = found?;
    let mut last = kl;
    for (i, l) in lines.iter().enumerate().take(end).skip(kl + 1) {
        match content_indent(l) {
            Some(n) if n > indent => last = i,
            Some(_) => break,
            None => {}
        }
    }
    Some((kl, last + 1))
}
