//! The module map in `docs/architecture.md` is the code's: every
//! `crate::` path between top-level modules of `src/` is an arrow in the
//! doc's dependency list, every arrow there is such a path, and the
//! arrows have no cycle (a loop between top-level modules is how a
//! frontend ends up depending on the solver, or two frontends on each
//! other).
//!
//! The scan is textual: `crate::NAME` and `crate::{NAME, …}` outside `//`
//! comments, in every `.rs` file under `src/` (a file's module is the first
//! component of its path: `src/oci/store.rs` is `oci`, `src/build.rs` is
//! `build`; `lib.rs` and `main.rs` are the crate root, which may use
//! anything). Doc links are comments, so they are not dependencies.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

type Edges = BTreeMap<String, BTreeSet<String>>;

#[test]
fn module_dependencies_match_the_architecture_doc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let code = scan(&root.join("src"));
    let doc = fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let documented = documented(&doc);

    let mut problems = Vec::new();
    for (from, tos) in &code {
        for to in tos {
            if !documented.get(from).is_some_and(|d| d.contains(to)) {
                problems.push(format!(
                    "src/{from} uses crate::{to}, which docs/architecture.md's dependency list lacks"
                ));
            }
        }
    }
    for (from, tos) in &documented {
        for to in tos {
            if !code.get(from).is_some_and(|c| c.contains(to)) {
                problems.push(format!(
                    "docs/architecture.md says {from} -> {to}, but no file of src/{from} uses crate::{to}"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the module map and the code disagree (fix the import or the list under \
         \"## Module dependencies\"):\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn top_level_modules_have_no_import_loop() {
    let code = scan(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    if let Some(cycle) = find_cycle(&code) {
        panic!(
            "import loop between top-level modules: {}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn a_loop_is_found() {
    let mut e = Edges::new();
    e.entry("a".into()).or_default().insert("b".into());
    e.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&e), None);
    e.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&e),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn grouped_and_plain_paths_are_read_and_comments_are_not() {
    let mut found = BTreeSet::new();
    uses(
        "use crate::{oci::Digest, graph};\n// crate::solver\n/// [`crate::plan`]\nlet x = crate::progress::quiet();",
        &mut found,
    );
    let want: BTreeSet<String> = ["graph", "oci", "progress"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, want);
}

/// The top-level module → the top-level modules its files name.
fn scan(src: &Path) -> Edges {
    let mut edges = Edges::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let first = rel.components().next().unwrap().as_os_str();
            let module = first.to_str().unwrap().trim_end_matches(".rs").to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            let mut found = BTreeSet::new();
            uses(&fs::read_to_string(&path).unwrap(), &mut found);
            found.remove(&module);
            edges.entry(module).or_default().extend(found);
        }
    }
    edges.retain(|_, tos| !tos.is_empty());
    edges
}

/// Adds the modules named by `crate::NAME` and `crate::{NAME, …}` in `text`.
fn uses(text: &str, found: &mut BTreeSet<String>) {
    let code: String = text
        .lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `mycrate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split on commas at depth 0.
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        push_head(&item, found);
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            push_head(&item, found);
        } else {
            push_head(rest, found);
        }
    }
}

/// The first identifier of a path, if it is a module (lowercase; `Result`
/// and the like are the crate root's re-exports).
fn push_head(path: &str, found: &mut BTreeSet<String>) {
    let head: String = path
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if head.starts_with(|c: char| c.is_ascii_lowercase()) && head != "self" {
        found.insert(head);
    }
}

/// The arrows listed under `## Module dependencies`, in its first fenced
/// block: one line per module, `from -> to to …`.
fn documented(doc: &str) -> Edges {
    let section = doc
        .split("\n## Module dependencies")
        .nth(1)
        .expect("docs/architecture.md has a \"## Module dependencies\" section");
    let block = section
        .split("```")
        .nth(1)
        .expect("the section has a fenced block");
    let mut edges = Edges::new();
    for line in block.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let (from, tos) = line
            .split_once("->")
            .unwrap_or_else(|| panic!("not `from -> to …`: {line:?}"));
        edges
            .entry(from.trim().to_string())
            .or_default()
            .extend(tos.split_whitespace().map(str::to_string));
    }
    edges
}

/// A cycle as `[a, b, …, a]`, depth first from each module in name order.
fn find_cycle(edges: &Edges) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &Edges,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

/// The library's promise is its crate root (docs/library.md): the example
/// a user copies and the docs name no item through a module path
/// (`kiln::oci::…`), since the modules are private outside the
/// `internals` feature the test suites use.
#[test]
fn the_library_example_and_docs_use_only_the_crate_root() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    for file in docs_and_examples(root) {
        let text = fs::read_to_string(root.join(&file)).unwrap();
        for (n, line) in text.lines().enumerate() {
            if let Some(path) = module_path(line) {
                problems.push(format!("{file}:{}: {path}", n + 1));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "paths into kiln's private modules (re-export the item at the crate root instead):\n{}",
        problems.join("\n")
    );
}

/// What a library user reads: the README, every page of docs/ and the
/// embedding example.
fn docs_and_examples(root: &Path) -> Vec<String> {
    let mut files = vec!["README.md".to_string(), "examples/embed.rs".to_string()];
    for e in fs::read_dir(root.join("docs")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        if name.ends_with(".md") {
            files.push(format!("docs/{name}"));
        }
    }
    files.sort();
    files
}

/// The first `kiln::module::` path in `line` (a lowercase segment followed
/// by `::`), if any.
fn module_path(line: &str) -> Option<&str> {
    let mut rest = line;
    while let Some(i) = rest.find("kiln::") {
        let after = &rest[i + "kiln::".len()..];
        let seg = after
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(after.len());
        if seg > 0 && after[seg..].starts_with("::") {
            return Some(&rest[i..i + "kiln::".len() + seg + 2]);
        }
        rest = after;
    }
    None
}

#[test]
fn module_paths_are_found() {
    assert_eq!(module_path("use kiln::oci::Store;"), Some("kiln::oci::"));
    assert_eq!(module_path("kiln::build(&req) and kiln::Error::X"), None);
    assert_eq!(
        module_path("a kiln::plan(…) then kiln::transfer::send"),
        Some("kiln::transfer::")
    );
}
