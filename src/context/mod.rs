//! The build context: the files under the context directory that
//! `.dockerignore` lets through, with content digests (sha256 of the bytes,
//! never mtimes), and the lookup of COPY/ADD sources in it.
//!
//! Symlinks are recorded as symlinks (never followed while walking), as
//! Docker sends them. A COPY source that names a symlink is followed, scoped
//! to the context root, as BuildKit does; symlinks inside copied
//! directories stay symlinks. Sockets, FIFOs and devices are skipped.
//!
//! [`Context::open_cached`] remembers digests across builds in a stat cache
//! ([`statcache`]), so a rebuild reads only the files that changed.

use std::cell::{Cell, OnceCell};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::Result;
use crate::oci::digest::{Digest, Hasher};
use ignore::{Matcher, clean};
use statcache::{FileStat, Known};

pub mod glob;
pub mod ignore;
pub mod statcache;

pub use glob::glob_match;

/// What a context entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File { size: u64 },
    Dir,
    Symlink { target: String },
}

/// One included path of the context.
#[derive(Debug)]
pub struct ContextEntry {
    /// Relative to the context root, `/`-separated, no leading `./`.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (including setuid/setgid/sticky).
    pub mode: u32,
    /// For files: the stat seen while walking, which the stat cache checks.
    stat: Option<FileStat>,
    digest: OnceCell<Digest>,
    /// For files: how the digest is known, to write the stat cache.
    known: OnceCell<Known>,
}

/// Error for a COPY source that is not in the context.
#[derive(Debug, thiserror::Error)]
#[error("file not found in build context: {path}")]
pub struct NotFound {
    pub path: String,
    /// Set when the path exists but `.dockerignore` excludes it.
    pub ignored: bool,
}

/// A walked build context.
#[derive(Debug)]
pub struct Context {
    pub root: PathBuf,
    entries: BTreeMap<String, ContextEntry>,
    ignore: Matcher,
    /// The stat cache: where it lives, what it held, and whether a file
    /// was hashed since (it is written back when the context is dropped).
    stat_cache: Option<(PathBuf, BTreeMap<String, Known>)>,
    hashed: Cell<bool>,
}

impl Context {
    /// Walks `root`, leaving out what `ignore` excludes.
    pub fn open(root: &Path, ignore: Matcher) -> Result<Context> {
        let meta = fs::metadata(root)
            .with_context(|| format!("build context {} is not readable", root.display()))?;
        if !meta.is_dir() {
            bail!("build context {} is not a directory", root.display());
        }
        let mut ctx = Context {
            root: root.to_path_buf(),
            entries: BTreeMap::new(),
            ignore,
            stat_cache: None,
            hashed: Cell::new(false),
        };
        ctx.walk(root, "")?;
        Ok(ctx)
    }

    /// [`Context::open`] with the stat cache of `root` in the cache dir.
    pub fn open_cached(root: &Path, ignore: Matcher) -> Result<Context> {
        let path = statcache::default_path(root)?;
        Context::open_with_stat_cache(root, ignore, path)
    }

    /// [`Context::open`] with the stat cache in `cache_file`.
    pub fn open_with_stat_cache(
        root: &Path,
        ignore: Matcher,
        cache_file: PathBuf,
    ) -> Result<Context> {
        let mut ctx = Context::open(root, ignore)?;
        let known = statcache::load(&cache_file);
        ctx.stat_cache = Some((cache_file, known));
        Ok(ctx)
    }

    /// Writes the stat cache back (when a file was hashed since it was
    /// read): every file whose digest is known now, or was known and is
    /// still vouched for.
    pub fn save_stat_cache(&self) -> Result<()> {
        let Some((path, old)) = &self.stat_cache else {
            return Ok(());
        };
        if !self.hashed.get() {
            return Ok(());
        }
        let mut files = BTreeMap::new();
        for e in self.entries.values() {
            let Some(stat) = &e.stat else { continue };
            let k = match e.known.get() {
                Some(k) => k.clone(),
                None => match old.get(&e.path) {
                    Some(k) if k.vouches_for(stat) => k.clone(),
                    _ => continue,
                },
            };
            files.insert(e.path.clone(), k);
        }
        statcache::save(path, files)?;
        self.hashed.set(false);
        Ok(())
    }

    /// Returns whether anything under `dir` was included.
    fn walk(&mut self, dir: &Path, rel: &str) -> Result<bool> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .with_context(|| format!("reading directory {} of the build context", dir.display()))?
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("reading directory {}", dir.display()))?;
        names.sort_by_key(|e| e.file_name());
        let mut any = false;
        for e in names {
            let name = e.file_name();
            let Some(name) = name.to_str() else {
                bail!(
                    "file name {:?} in {} is not UTF-8; rename it or add it to .dockerignore",
                    name,
                    dir.display()
                );
            };
            let path = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let full = e.path();
            let md = fs::symlink_metadata(&full)
                .with_context(|| format!("reading {}", full.display()))?;
            let excluded = self.ignore.excludes(&path);
            let ft = md.file_type();
            let mode = md.permissions().mode() & 0o7777;
            if ft.is_dir() {
                if excluded && !self.ignore.may_include_under(&path) {
                    continue;
                }
                // Insert first so the entry exists while children are added.
                let inner = self.walk(&full, &path)?;
                if !excluded || inner {
                    self.insert(path, EntryKind::Dir, mode, None);
                    any = true;
                }
                continue;
            }
            if excluded {
                continue;
            }
            let stat = ft.is_file().then(|| FileStat::of(&md));
            let kind = if ft.is_file() {
                EntryKind::File { size: md.len() }
            } else if ft.is_symlink() {
                let t = fs::read_link(&full)
                    .with_context(|| format!("reading link {}", full.display()))?;
                EntryKind::Symlink {
                    target: t.to_string_lossy().into_owned(),
                }
            } else {
                // Sockets, FIFOs and devices are not sent, as with Docker.
                continue;
            };
            self.insert(path, kind, mode, stat);
            any = true;
        }
        Ok(any)
    }

    fn insert(&mut self, path: String, kind: EntryKind, mode: u32, stat: Option<FileStat>) {
        self.entries.insert(
            path.clone(),
            ContextEntry {
                path,
                kind,
                mode,
                stat,
                digest: OnceCell::new(),
                known: OnceCell::new(),
            },
        );
    }

    /// Every included entry, sorted by path.
    pub fn entries(&self) -> impl Iterator<Item = &ContextEntry> {
        self.entries.values()
    }

    pub fn get(&self, path: &str) -> Option<&ContextEntry> {
        self.entries.get(path)
    }

    /// The sha256 of a file's contents (computed once; not at all when the
    /// stat cache vouches for it).
    pub fn file_digest(&self, entry: &ContextEntry) -> Result<Digest> {
        if let Some(d) = entry.digest.get() {
            return Ok(d.clone());
        }
        if let (Some((_, known)), Some(stat)) = (&self.stat_cache, &entry.stat)
            && let Some(k) = known.get(&entry.path)
            && k.vouches_for(stat)
        {
            let _ = entry.digest.set(k.digest.clone());
            return Ok(k.digest.clone());
        }
        let hashed_ns = statcache::now_ns();
        let full = self.root.join(&entry.path);
        let mut f = fs::File::open(&full).with_context(|| format!("opening {}", full.display()))?;
        let mut h = Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("reading {}", full.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let d = h.finish().0;
        let _ = entry.digest.set(d.clone());
        if let Some(stat) = entry.stat {
            let _ = entry.known.set(Known {
                stat,
                digest: d.clone(),
                hashed_ns,
            });
            self.hashed.set(true);
        }
        Ok(d)
    }

    /// Follows symlinks in `path` (all components), scoped to the context
    /// root. Returns the entry path it lands on, or `None` if missing.
    pub fn resolve(&self, path: &str) -> Option<String> {
        crate::oci::links::resolve(path, |p| match self.entries.get(p) {
            None => crate::oci::links::Node::Missing,
            Some(e) => match &e.kind {
                EntryKind::Symlink { target } => crate::oci::links::Node::Link(target),
                _ => crate::oci::links::Node::Other,
            },
        })
    }

    /// The entries a COPY source names: the path itself (a file, link or
    /// directory with everything under it) or what a glob matches, each with
    /// its path relative to the source (a directory's contents relative to
    /// it, a file by its name), which is what `--exclude` patterns match.
    /// `src` is as written in the Dockerfile (after variable expansion).
    pub fn sources(&self, src: &str) -> Result<Vec<(&ContextEntry, String)>> {
        let cleaned = clean(src.trim_start_matches('/'));
        if cleaned == ".." || cleaned.starts_with("../") {
            bail!(
                "{src}: path is outside the build context; COPY and ADD can only read files inside the context directory (move the file into it or use a larger context)"
            );
        }
        let has_glob = cleaned.contains(['*', '?', '[']);
        let roots: Vec<String> = if cleaned == "." {
            vec![String::new()]
        } else if has_glob {
            let pat: Vec<&str> = cleaned.split('/').collect();
            self.entries
                .keys()
                .filter(|k| {
                    let parts: Vec<&str> = k.split('/').collect();
                    parts.len() == pat.len()
                        && parts.iter().zip(&pat).all(|(p, g)| component_match(g, p))
                })
                .cloned()
                .collect()
        } else {
            match self.resolve(&cleaned) {
                Some(p) => vec![p],
                None => {
                    let ignored = self.root.join(&cleaned).symlink_metadata().is_ok();
                    return Err(NotFound {
                        path: cleaned,
                        ignored,
                    }
                    .into());
                }
            }
        };
        let mut out = Vec::new();
        for r in roots {
            if r.is_empty() {
                out.extend(self.entries.values().map(|e| (e, e.path.clone())));
                continue;
            }
            let Some(e) = self.entries.get(&r) else {
                continue;
            };
            if e.kind == EntryKind::Dir {
                // A directory's contents are copied: paths relative to it.
                out.push((e, String::new()));
                let prefix = format!("{r}/");
                out.extend(
                    self.entries
                        .range(prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(&prefix))
                        .map(|(k, v)| (v, k[prefix.len()..].to_string())),
                );
            } else {
                let name = r.rsplit('/').next().unwrap_or(&r).to_string();
                out.push((e, name));
            }
        }
        Ok(out)
    }

    /// A digest of everything the given sources read: paths, kinds, modes,
    /// contents and link targets. `exclude` patterns (COPY --exclude) match
    /// paths relative to each source (see [`Context::sources`]).
    pub fn digest_sources(&self, sources: &[String], exclude: &Matcher) -> Result<Digest> {
        let mut h = Hasher::new();
        for src in sources {
            h.update(format!("source {}\n", src.len()).as_bytes());
            h.update(src.as_bytes());
            let mut seen = Vec::new();
            for (e, rel) in self.sources(src)? {
                if !exclude.is_empty() && !rel.is_empty() && exclude.excludes(&rel) {
                    continue;
                }
                seen.push(e);
            }
            // A followed symlink source also depends on the link itself.
            let cleaned = clean(src.trim_start_matches('/'));
            if let Some(link) = self.entries.get(&cleaned)
                && let EntryKind::Symlink { target } = &link.kind
            {
                h.update(format!("L {} {}\n", link.path, target).as_bytes());
            }
            for e in seen {
                let line = match &e.kind {
                    EntryKind::Dir => format!("D {:o} {}\n", e.mode, e.path),
                    EntryKind::Symlink { target } => format!("L {} {}\n", e.path, target),
                    EntryKind::File { .. } => {
                        format!("F {:o} {} {}\n", e.mode, self.file_digest(e)?, e.path)
                    }
                };
                h.update(line.as_bytes());
            }
        }
        Ok(h.finish().0)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // Best effort: a cache not written only costs the next build hashing.
        let _ = self.save_stat_cache();
    }
}

/// Go `filepath.Match` for one path component (`*`, `?`, `[...]`, `\`).
pub fn component_match(pattern: &str, name: &str) -> bool {
    if !pattern.contains(['[', '\\']) {
        let p: Vec<char> = pattern.chars().collect();
        let n: Vec<char> = name.chars().collect();
        return glob_match(&p, &n);
    }
    // Character classes and escapes: translate to a regex.
    let mut re = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '\\' => {
                if let Some(n) = chars.next() {
                    re.push_str(&regex::escape(&n.to_string()));
                }
            }
            '[' => {
                re.push('[');
                if chars.peek() == Some(&'^') || chars.peek() == Some(&'!') {
                    chars.next();
                    re.push('^');
                }
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    if c == '\\' || c == '[' {
                        re.push('\\');
                    }
                    re.push(c);
                }
                re.push(']');
            }
            _ => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re)
        .map(|r| r.is_match(name))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in ["src/lib", "node_modules/keep", "node_modules/drop", "docs"] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        for (f, c) in [
            ("Dockerfile", "FROM x"),
            ("a.txt", "a"),
            ("b.txt", "b"),
            ("src/main.c", "int main;"),
            ("src/lib/x.c", "x"),
            ("node_modules/keep/k.js", "k"),
            ("node_modules/drop/d.js", "d"),
            ("docs/readme.md", "r"),
            ("secret.env", "pw"),
        ] {
            fs::write(r.join(f), c).unwrap();
        }
        symlink("src/main.c", r.join("link")).unwrap();
        symlink("../../../etc/passwd", r.join("escape")).unwrap();
        t
    }

    fn ctx(t: &tempfile::TempDir, ignore: &str) -> Context {
        Context::open(t.path(), Matcher::parse(ignore, ".dockerignore").unwrap()).unwrap()
    }

    fn paths(c: &Context) -> Vec<String> {
        c.entries().map(|e| e.path.clone()).collect()
    }

    #[test]
    fn walk_respects_dockerignore() {
        let t = tree();
        let c = ctx(&t, "node_modules\n!node_modules/keep\n*.env\ndocs\n");
        let p = paths(&c);
        assert!(
            p.contains(&"node_modules".to_string()),
            "parent of a re-included file"
        );
        assert!(p.contains(&"node_modules/keep/k.js".to_string()));
        assert!(!p.iter().any(|x| x.contains("drop")));
        assert!(!p.iter().any(|x| x.starts_with("docs")));
        assert!(!p.contains(&"secret.env".to_string()));
        assert!(
            matches!(c.get("link").unwrap().kind, EntryKind::Symlink { ref target } if target == "src/main.c")
        );
    }

    #[test]
    fn sources_and_errors() {
        let t = tree();
        let c = ctx(&t, "secret.env\n");
        let names = |s: &str| {
            c.sources(s)
                .unwrap()
                .iter()
                .map(|(e, _)| e.path.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("*.txt"), vec!["a.txt", "b.txt"]);
        assert_eq!(
            names("src"),
            vec!["src", "src/lib", "src/lib/x.c", "src/main.c"]
        );
        assert_eq!(names("./src/../a.txt"), vec!["a.txt"]);
        assert_eq!(names("/a.txt"), vec!["a.txt"]);
        assert_eq!(names("link"), vec!["src/main.c"]);
        assert_eq!(names("src/*/x.c"), vec!["src/lib/x.c"]);
        assert_eq!(names("[ab].txt"), vec!["a.txt", "b.txt"]);
        assert!(names("*.nothing").is_empty());
        let e = c.sources("../x").unwrap_err().to_string();
        assert!(e.contains("outside the build context"), "{e}");
        let e = c.sources("missing.txt").unwrap_err();
        assert_eq!(
            e.to_string(),
            "file not found in build context: missing.txt"
        );
        let nf = c.sources("secret.env").unwrap_err();
        assert!(nf.downcast_ref::<NotFound>().unwrap().ignored);
        // The escaping link resolves inside the root, where nothing exists.
        assert!(c.sources("escape").is_err());
    }

    #[test]
    fn digests_follow_content_not_mtime() {
        let t = tree();
        let c = ctx(&t, "");
        let none = Matcher::default();
        let d1 = c.digest_sources(&["src".into()], &none).unwrap();
        // Touching a file (same content, new mtime) keeps the digest.
        let f = t.path().join("src/main.c");
        fs::write(&f, "int main;").unwrap();
        let c = ctx(&t, "");
        assert_eq!(d1, c.digest_sources(&["src".into()], &none).unwrap());
        fs::write(&f, "int main(void);").unwrap();
        let c = ctx(&t, "");
        let d2 = c.digest_sources(&["src".into()], &none).unwrap();
        assert_ne!(d1, d2);
        // Excluding the changed file gives a digest independent of it.
        let ex = Matcher::new(&["main.c"]).unwrap();
        let e1 = c.digest_sources(&["src".into()], &ex).unwrap();
        fs::write(&f, "changed again").unwrap();
        let c = ctx(&t, "");
        assert_eq!(e1, c.digest_sources(&["src".into()], &ex).unwrap());
        // Mode changes count.
        fs::set_permissions(t.path().join("a.txt"), fs::Permissions::from_mode(0o755)).unwrap();
        let before = ctx(&t, "")
            .digest_sources(&["a.txt".into()], &none)
            .unwrap();
        fs::set_permissions(t.path().join("a.txt"), fs::Permissions::from_mode(0o644)).unwrap();
        assert_ne!(
            before,
            ctx(&t, "")
                .digest_sources(&["a.txt".into()], &none)
                .unwrap()
        );
    }

    /// Rewrites the stat cache at `path`, giving `file` the digest `fake`:
    /// a build that returns `fake` took the digest from the cache.
    fn forge(path: &Path, file: &str, fake: &Digest) {
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
        v["files"][file]["digest"] = serde_json::Value::String(fake.to_string());
        fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
    }

    fn set_mtime(p: &Path, t: std::time::SystemTime) {
        fs::File::options()
            .append(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn stat_cache_skips_unchanged_files_and_sees_every_change() {
        let t = tree();
        let cache = tempfile::tempdir().unwrap();
        let cache_file = cache.path().join("ctx.json");
        let open = || {
            Context::open_with_stat_cache(t.path(), Matcher::default(), cache_file.clone()).unwrap()
        };
        let f = t.path().join("a.txt");
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        set_mtime(&f, old);
        // The ctime (which cannot be set back) must be older than the
        // hashing by the racy margin for the cache to vouch for the file.
        std::thread::sleep(statcache::RACY_MARGIN + std::time::Duration::from_millis(100));
        let a = open();
        let real = a.file_digest(a.get("a.txt").unwrap()).unwrap();
        assert_eq!(real, Digest::of(b"a"));
        drop(a);
        // Unchanged stat, old enough: the digest comes from the cache
        // (forged here to tell a hit from a read).
        let fake = Digest::of(b"forged");
        forge(&cache_file, "a.txt", &fake);
        let b = open();
        assert_eq!(b.file_digest(b.get("a.txt").unwrap()).unwrap(), fake);
        drop(b);
        // Same size, mtime set back to the same nanosecond: the ctime moved,
        // so the file is read again.
        fs::write(&f, "z").unwrap();
        set_mtime(&f, old);
        // Size, mtime and inode are back and older than the margin: only
        // the ctime tells.
        std::thread::sleep(statcache::RACY_MARGIN + std::time::Duration::from_millis(100));
        let c = open();
        assert_eq!(
            c.file_digest(c.get("a.txt").unwrap()).unwrap(),
            Digest::of(b"z")
        );
    }

    #[test]
    fn stat_cache_rehashes_a_file_as_new_as_the_cache() {
        let t = tree();
        let cache = tempfile::tempdir().unwrap();
        let cache_file = cache.path().join("ctx.json");
        let open = || {
            Context::open_with_stat_cache(t.path(), Matcher::default(), cache_file.clone()).unwrap()
        };
        // b.txt was just written: its digest is recorded, but a rewrite in
        // the same timestamp tick could keep every stat field but ctime's
        // nanoseconds on a coarse filesystem, so it is not trusted yet.
        let a = open();
        assert_eq!(
            a.file_digest(a.get("b.txt").unwrap()).unwrap(),
            Digest::of(b"b")
        );
        drop(a);
        forge(&cache_file, "b.txt", &Digest::of(b"forged"));
        let b = open();
        assert_eq!(
            b.file_digest(b.get("b.txt").unwrap()).unwrap(),
            Digest::of(b"b"),
            "a racily clean entry must be read again"
        );
    }

    #[test]
    fn go_component_match() {
        assert!(component_match("*.c", "a.c"));
        assert!(component_match("[!a]*", "b"));
        assert!(!component_match("[!a]*", "a"));
        assert!(component_match("\\*", "*"));
        assert!(!component_match("\\*", "x"));
    }
}
