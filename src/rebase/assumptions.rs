//! What the app layers assume about the package layers under them, and
//! whether a new package set keeps it.
//!
//! The app layers of an auto build are files copied from the build stage:
//! they do not depend on the package layers' bytes, only on what those
//! provide at run time. That is
//!
//! - the shared libraries their ELF files need (`DT_NEEDED` sonames), and
//!   the program interpreter (`PT_INTERP`, `/lib64/ld-linux-x86-64.so.2`);
//! - the files they point at: symbolic links (a venv's `bin/python` →
//!   `/usr/bin/python3.13`), `#!` lines, the config's `Entrypoint`/`Cmd`
//!   (`/usr/bin/tini`, `node` found on `PATH`).
//!
//! A rebase is refused when something the old package set provided is
//! gone from the new one ([`check`]). What neither set provides (a library
//! the app bundles, a musl loader of an unused prebuild) is no assumption
//! about the package layers and is not looked at. A soname counts as
//! provided when a file or link of that name is in a library directory
//! (`/usr/lib`, `/lib`, `/usr/lib64`, `/lib64`, `/usr/local/lib` and
//! their subdirectories), which is where the loader and `ldconfig` find
//! Debian's libraries.

use std::collections::{BTreeMap, BTreeSet};

use crate::oci::links;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::elf;
use crate::Result;

/// The largest file read whole to find its ELF needs (larger ones are
/// not checked: no executable or library is that big).
const MAX_ELF: u64 = 1 << 30;

/// One entry of a file tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File,
    /// A symbolic link and its target.
    Link(String),
}

/// The merged file tree of some layers: paths relative to the root
/// (`usr/bin/node`), and which package owns each (from dpkg's
/// `info/PKG.list` files).
#[derive(Debug, Clone, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
    owners: BTreeMap<String, String>,
}

impl Tree {
    /// Adds `path` (and its parent directories).
    pub fn insert(&mut self, path: &str, node: Node) {
        let path = path.trim_matches('/');
        for (i, _) in path.match_indices('/') {
            self.nodes.entry(path[..i].to_string()).or_insert(Node::Dir);
        }
        self.nodes.insert(path.to_string(), node);
    }

    /// Records that `package` installed `path`.
    pub fn own(&mut self, path: &str, package: &str) {
        self.owners
            .insert(path.trim_matches('/').to_string(), package.to_string());
    }

    /// The package that installed `path`, when dpkg's lists say.
    pub fn owner(&self, path: &str) -> Option<&str> {
        self.owners.get(path.trim_matches('/')).map(String::as_str)
    }

    /// The tree of unpacked layers (snapshot dirs, bottom first), with the
    /// owners dpkg's lists in them name.
    pub fn of_dirs(dirs: &[PathBuf]) -> Result<Tree> {
        let mut tree = Tree::default();
        for dir in dirs {
            walk(dir, &mut |rel, path, ty| {
                let node = if ty.is_dir() {
                    Node::Dir
                } else if ty.is_symlink() {
                    let target = std::fs::read_link(path)
                        .with_context(|| format!("reading the link {}", path.display()))?;
                    Node::Link(target.to_string_lossy().into_owned())
                } else if ty.is_file() {
                    if let Some(pkg) = rel
                        .strip_prefix("var/lib/dpkg/info/")
                        .and_then(|n| n.strip_suffix(".list"))
                    {
                        // `name:arch` for Multi-Arch: same packages.
                        let pkg = pkg.split(':').next().unwrap_or(pkg).to_string();
                        let text = std::fs::read_to_string(path)
                            .with_context(|| format!("reading {}", path.display()))?;
                        for l in text.lines().filter(|l| !l.is_empty() && *l != "/.") {
                            tree.own(l, &pkg);
                        }
                    }
                    Node::File
                } else {
                    // Whiteouts (character devices) and special files.
                    return Ok(());
                };
                tree.insert(rel, node);
                Ok(())
            })?;
        }
        Ok(tree)
    }

    /// Whether `path` (absolute, or relative to the root) names something
    /// in the tree, following links inside the tree (as the kernel would in
    /// the image).
    pub fn exists(&self, path: &str) -> bool {
        self.resolve(path).is_some()
    }

    /// The path `path` leads to, links followed.
    pub fn resolve(&self, path: &str) -> Option<String> {
        crate::oci::links::resolve(path, |p| match self.nodes.get(p) {
            None => links::Node::Missing,
            Some(Node::Link(target)) => links::Node::Link(target),
            Some(Node::Dir | Node::File) => links::Node::Other,
        })
    }

    /// Sonames the tree provides: names of files and links in library
    /// directories that look like shared objects, with one path each.
    pub fn sonames(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (path, node) in &self.nodes {
            if *node == Node::Dir || !in_library_dir(path) {
                continue;
            }
            let name = path.rsplit('/').next().unwrap_or(path);
            if name.contains(".so") {
                out.entry(name.to_string()).or_insert_with(|| path.clone());
            }
        }
        out
    }
}

fn in_library_dir(path: &str) -> bool {
    ["usr/lib/", "lib/", "usr/lib64/", "lib64/", "usr/local/lib/"]
        .iter()
        .any(|d| path.starts_with(d))
}

/// Calls `f(relative path, path, type)` for everything under `root`
/// (depth first, sorted), never following a link.
fn walk(
    root: &Path,
    f: &mut dyn FnMut(&str, &Path, std::fs::FileType) -> Result<()>,
) -> Result<()> {
    fn go(
        root: &Path,
        dir: &Path,
        f: &mut dyn FnMut(&str, &Path, std::fs::FileType) -> Result<()>,
    ) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading {}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let ty = e
                .file_type()
                .with_context(|| format!("reading {}", path.display()))?;
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            f(&rel, &path, ty)?;
            if ty.is_dir() {
                go(root, &path, f)?;
            }
        }
        Ok(())
    }
    go(root, root, f)
}

/// One thing the app layers need from below: satisfied when any of
/// `candidates` exists (a command found on any `PATH` directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub candidates: Vec<String>,
    /// What refers to it (`/app/.venv/bin/python (symbolic link)`).
    pub by: String,
}

/// What the app layers need from the package layers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppNeeds {
    /// (soname, the file whose `DT_NEEDED` names it).
    pub libraries: Vec<(String, String)>,
    /// Files the app layers refer to.
    pub files: Vec<Reference>,
    /// Names of the files the app layers hold themselves (a library they
    /// bundle is not looked for below).
    pub own: BTreeSet<String>,
}

impl AppNeeds {
    /// What the files of the unpacked app layers `dirs` need.
    pub fn of_dirs(dirs: &[PathBuf]) -> Result<AppNeeds> {
        let mut out = AppNeeds::default();
        for dir in dirs {
            walk(dir, &mut |rel, path, ty| {
                let abs = format!("/{rel}");
                if ty.is_symlink() {
                    let target = std::fs::read_link(path)
                        .with_context(|| format!("reading the link {}", path.display()))?;
                    let target = target.to_string_lossy();
                    let to = if target.starts_with('/') {
                        target.into_owned()
                    } else {
                        let parent = abs.rsplit_once('/').map_or("", |(p, _)| p);
                        format!("{parent}/{target}")
                    };
                    out.file(to, format!("{abs} (symbolic link)"));
                    if let Some(name) = rel.rsplit('/').next() {
                        out.own.insert(name.to_string());
                    }
                } else if ty.is_file() {
                    if let Some(name) = rel.rsplit('/').next() {
                        out.own.insert(name.to_string());
                    }
                    out.read_file(&abs, path)?;
                }
                Ok(())
            })?;
        }
        Ok(out)
    }

    fn file(&mut self, path: String, by: String) {
        self.files.push(Reference {
            candidates: vec![path],
            by,
        });
    }

    fn read_file(&mut self, abs: &str, path: &Path) -> Result<()> {
        let mut f =
            std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        let mut head = [0u8; 256];
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            }
        }
        let head = &head[..n];
        if elf::is_elf(head) {
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            if size > MAX_ELF {
                return Ok(());
            }
            let data =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            if let Some(needs) = elf::needs(&data) {
                for lib in needs.libraries {
                    self.libraries.push((lib, abs.to_string()));
                }
                if let Some(interp) = needs.interpreter {
                    self.file(interp, format!("{abs} (its ELF interpreter)"));
                }
            }
        } else if let Some(line) = head.strip_prefix(b"#!") {
            let line = line.split(|&b| b == b'\n').next().unwrap_or(line);
            let line = String::from_utf8_lossy(line);
            if let Some(interp) = line.split_whitespace().next()
                && interp.starts_with('/')
            {
                self.file(interp.to_string(), format!("{abs} (its #! line)"));
            }
        }
        Ok(())
    }

    /// The image config's `Entrypoint` and `Cmd`: every absolute path in
    /// them, and the first word of each looked up on `path` (the config's
    /// `PATH`) when it is a bare name (an init such as tini runs `Cmd`'s).
    pub fn add_config(&mut self, entrypoint: &[String], cmd: &[String], path: &str, base: &Tree) {
        for (what, args) in [("Entrypoint", entrypoint), ("Cmd", cmd)] {
            for a in args.iter().filter(|a| a.starts_with('/')) {
                self.file(a.clone(), format!("the image's {what}"));
            }
            let Some(command) = args.first() else {
                continue;
            };
            if command.contains('/') || command.is_empty() {
                continue;
            }
            let candidates: Vec<String> = path
                .split(':')
                .filter(|d| d.starts_with('/'))
                .map(|d| format!("{}/{command}", d.trim_end_matches('/')))
                .collect();
            // Only a command the package layers provided is an assumption
            // about them (an app's own `bin/` on PATH is not).
            if candidates.iter().any(|c| base.exists(c)) {
                self.files.push(Reference {
                    candidates,
                    by: format!("the image's {what} {command:?} (found on PATH)"),
                });
            }
        }
    }
}

/// Why a new package set breaks the app layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `by` needs `soname`, which `path` of the old set provided (owned by
    /// `package`) and the new set does not.
    Library {
        soname: String,
        by: String,
        path: String,
        package: Option<String>,
    },
    /// `by` refers to `path`, which the old set had (owned by `package`)
    /// and the new one lacks.
    File {
        path: String,
        by: String,
        package: Option<String>,
    },
}

impl Problem {
    /// The package of the old set the problem comes from.
    pub fn package(&self) -> Option<&str> {
        match self {
            Problem::Library { package, .. } | Problem::File { package, .. } => package.as_deref(),
        }
    }
}

/// What `app` needs that `old` provided and `new` does not. Each soname
/// and each path is reported once (for the first file that needs it).
pub fn check(old: &Tree, new: &Tree, app: &AppNeeds) -> Vec<Problem> {
    let (old_so, new_so) = (old.sonames(), new.sonames());
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (soname, by) in &app.libraries {
        if app.own.contains(soname) || !seen.insert(soname.clone()) {
            continue;
        }
        if let Some(path) = old_so.get(soname)
            && !new_so.contains_key(soname)
        {
            let package = owner_of(old, path);
            out.push(Problem::Library {
                soname: soname.clone(),
                by: by.clone(),
                path: format!("/{path}"),
                package,
            });
        }
    }
    let mut seen = BTreeSet::new();
    for r in &app.files {
        if !seen.insert(r.candidates.clone()) {
            continue;
        }
        let Some((path, found)) = r
            .candidates
            .iter()
            .find_map(|c| old.resolve(c).map(|f| (c, f)))
        else {
            continue;
        };
        if !r.candidates.iter().any(|c| new.exists(c)) {
            let package = owner_of(old, &found);
            out.push(Problem::File {
                path: path.clone(),
                by: r.by.clone(),
                package,
            });
        }
    }
    out
}

/// The package that installed `path` (as dpkg lists it: usr-merged paths
/// may be listed under `/lib`, `/bin`…).
fn owner_of(tree: &Tree, path: &str) -> Option<String> {
    let path = path.trim_matches('/');
    if let Some(p) = tree.owner(path) {
        return Some(p.to_string());
    }
    let unmerged = path.strip_prefix("usr/")?;
    tree.owner(unmerged).map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A usr-merged package tree: `lib` → `usr/lib`, `bin` → `usr/bin`.
    fn tree(files: &[(&str, &str)], links: &[(&str, &str, &str)]) -> Tree {
        let mut t = Tree::default();
        t.insert("lib", Node::Link("usr/lib".into()));
        t.insert("lib64", Node::Link("usr/lib64".into()));
        t.insert("bin", Node::Link("usr/bin".into()));
        for (path, pkg) in files {
            t.insert(path, Node::File);
            t.own(path, pkg);
        }
        for (path, target, pkg) in links {
            t.insert(path, Node::Link(target.to_string()));
            t.own(path, pkg);
        }
        t
    }

    fn app(libraries: &[(&str, &str)], files: &[(&str, &str)]) -> AppNeeds {
        AppNeeds {
            libraries: libraries
                .iter()
                .map(|(s, b)| (s.to_string(), b.to_string()))
                .collect(),
            files: files
                .iter()
                .map(|(p, b)| Reference {
                    candidates: vec![p.to_string()],
                    by: b.to_string(),
                })
                .collect(),
            own: BTreeSet::new(),
        }
    }

    const LIBDIR: &str = "usr/lib/x86_64-linux-gnu";

    fn libpq(version: u32) -> Tree {
        let real = format!("{LIBDIR}/libpq.so.{version}.17");
        tree(
            &[
                (&real, &format!("libpq{version}")),
                ("usr/lib64/ld-linux-x86-64.so.2", "libc6"),
                (&format!("{LIBDIR}/libc.so.6"), "libc6"),
            ],
            &[(
                &format!("{LIBDIR}/libpq.so.{version}"),
                &format!("libpq.so.{version}.17"),
                &format!("libpq{version}"),
            )],
        )
    }

    #[test]
    fn a_soname_the_new_set_drops_is_a_problem_naming_file_and_package() {
        let needs = app(
            &[("libpq.so.5", "/app/server"), ("libc.so.6", "/app/server")],
            &[(
                "/lib64/ld-linux-x86-64.so.2",
                "/app/server (its ELF interpreter)",
            )],
        );
        let problems = check(&libpq(5), &libpq(6), &needs);
        assert_eq!(
            problems,
            vec![Problem::Library {
                soname: "libpq.so.5".into(),
                by: "/app/server".into(),
                path: format!("/{LIBDIR}/libpq.so.5"),
                package: Some("libpq5".into()),
            }]
        );
        // The same soname in a newer package version: nothing to say.
        assert_eq!(check(&libpq(5), &libpq(5), &needs), vec![]);
    }

    #[test]
    fn what_the_old_set_did_not_provide_is_no_assumption() {
        // A bundled library, and one that was missing all along.
        let mut needs = app(
            &[
                ("libbundled.so.1", "/app/x.node"),
                ("libgone.so.9", "/app/y"),
            ],
            &[("/lib/ld-musl-x86_64.so.1", "/app/z (its ELF interpreter)")],
        );
        needs.own.insert("libbundled.so.1".into());
        assert_eq!(check(&libpq(5), &libpq(6), &needs), vec![]);
        // A bundled copy of a library the set drops is the app's own.
        let mut needs = app(&[("libpq.so.5", "/app/server")], &[]);
        needs.own.insert("libpq.so.5".into());
        assert_eq!(check(&libpq(5), &libpq(6), &needs), vec![]);
    }

    #[test]
    fn a_referenced_file_that_disappears_is_a_problem_through_links() {
        let old = tree(
            &[("usr/bin/python3.13", "python3.13-minimal")],
            &[("usr/bin/python3", "python3.13", "python3-minimal")],
        );
        let new = tree(
            &[("usr/bin/python3.14", "python3.14-minimal")],
            &[("usr/bin/python3", "python3.14", "python3-minimal")],
        );
        // The venv's link names the versioned interpreter, via /bin.
        let needs = app(
            &[],
            &[
                ("/bin/python3.13", "/app/.venv/bin/python (symbolic link)"),
                ("/usr/bin/python3", "/app/run.py (its #! line)"),
            ],
        );
        assert_eq!(
            check(&old, &new, &needs),
            vec![Problem::File {
                path: "/bin/python3.13".into(),
                by: "/app/.venv/bin/python (symbolic link)".into(),
                package: Some("python3.13-minimal".into()),
            }]
        );
    }

    #[test]
    fn a_command_on_path_may_move_between_path_dirs() {
        let old = tree(&[("usr/bin/node", "nodejs")], &[]);
        let moved = tree(&[("usr/local/bin/node", "nodejs")], &[]);
        let gone = tree(&[("usr/bin/nodejs", "nodejs")], &[]);
        let path = "/usr/local/bin:/usr/bin:/bin";
        let mut needs = AppNeeds::default();
        needs.add_config(
            &["/usr/bin/tini".into(), "--".into()],
            &["node".into(), "server.js".into()],
            path,
            &old,
        );
        // tini was never there: not the package layers' business.
        assert_eq!(check(&old, &moved, &needs), vec![]);
        let problems = check(&old, &gone, &needs);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            matches!(&problems[0], Problem::File { path, package: Some(p), .. }
                if path == "/usr/bin/node" && p == "nodejs"),
            "{problems:?}"
        );
        // A command the package layers never had (the app's own) is none.
        let mut needs = AppNeeds::default();
        needs.add_config(&[], &["gunicorn".into()], path, &old);
        assert!(needs.files.is_empty());
    }

    #[test]
    fn links_resolve_inside_the_tree_and_loops_end() {
        let mut t = tree(&[("usr/lib/x/libz.so.1.3", "zlib1g")], &[]);
        t.insert("usr/lib/x/libz.so.1", Node::Link("libz.so.1.3".into()));
        t.insert("loop/a", Node::Link("b".into()));
        t.insert("loop/b", Node::Link("a".into()));
        assert_eq!(
            t.resolve("/lib/x/libz.so.1").as_deref(),
            Some("usr/lib/x/libz.so.1.3")
        );
        assert!(t.exists("/usr/lib/x/../x/libz.so.1"));
        assert!(!t.exists("/loop/a"));
        assert!(!t.exists("/usr/lib/x/libz.so.2"));
        let so = t.sonames();
        assert!(so.contains_key("libz.so.1") && so.contains_key("libz.so.1.3"));
    }

    #[test]
    fn needs_of_unpacked_app_layers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("app/.venv/bin")).unwrap();
        std::os::unix::fs::symlink("/usr/bin/python3", root.join("app/.venv/bin/python")).unwrap();
        std::os::unix::fs::symlink("../lib/x.py", root.join("app/.venv/bin/x")).unwrap();
        std::fs::write(root.join("app/run"), "#!/bin/sh -e\necho hi\n").unwrap();
        std::fs::write(root.join("app/data.txt"), "plain").unwrap();
        let needs = AppNeeds::of_dirs(&[root.to_path_buf()]).unwrap();
        let files: Vec<(&str, &str)> = needs
            .files
            .iter()
            .map(|r| (r.candidates[0].as_str(), r.by.as_str()))
            .collect();
        assert_eq!(
            files,
            vec![
                ("/usr/bin/python3", "/app/.venv/bin/python (symbolic link)"),
                (
                    "/app/.venv/bin/../lib/x.py",
                    "/app/.venv/bin/x (symbolic link)"
                ),
                ("/bin/sh", "/app/run (its #! line)"),
            ]
        );
        assert!(needs.own.contains("data.txt"));
    }
}
