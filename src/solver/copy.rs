//! COPY and ADD: the layer entries a copy produces, with Docker's
//! destination rules.
//!
//! - A directory source copies its *contents* into the destination.
//! - A file source lands at the destination path, or inside it when the
//!   destination ends in `/` or there are several sources (globs included).
//! - Owner is 0:0 unless `--chown` (names resolved in the destination
//!   stage's /etc/passwd and /etc/group); `--chmod` (octal) applies to every
//!   copied file and directory; modes otherwise come from the source.
//! - Parent directories of the destination keep the metadata they have in
//!   the stage (so `COPY x /tmp/` does not reset /tmp's mode), and are
//!   created 0755 root-owned when missing.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};

use super::rootfs::{RootView, relative};
use crate::Result;
use crate::context::ignore::Matcher;
use crate::context::{Context, EntryKind as CtxKind, component_match};
use crate::graph::{Copy, CopyItem};
use crate::oci::digest::{Digest, Hasher};
use crate::oci::layer::{Entry, EntryKind, FileSource, Meta, read_xattrs};
use crate::sandbox::IdMap;

/// Where a copy reads from.
pub enum Source<'a> {
    Context(&'a Context),
    View(&'a RootView),
}

/// One file to place: source host path (or inline bytes) and its path
/// relative to the destination root.
struct Item {
    /// Destination path, relative to the image root.
    dest: PathBuf,
    kind: EntryKind,
    meta: Meta,
    /// Named by the source itself (not found inside a source directory):
    /// ADD extracts such a file when it is an archive.
    named: bool,
}

/// The entries COPY/ADD writes into the stage whose files `dest_view` shows.
///
/// `downloads` maps each URL an `ADD` names to the file holding its
/// verified content (the solver downloads them first).
///
/// `ids` maps the owners of snapshot files as the host sees them to the
/// image's (a rootless kiln's snapshots are owned by the user, which is
/// root inside), so an image's bytes do not depend on who built it.
pub fn entries(
    copy: &Copy,
    src: &Source<'_>,
    dest_view: &RootView,
    downloads: &BTreeMap<String, PathBuf>,
    ids: &IdMap,
) -> Result<Vec<Entry>> {
    let owner = match &copy.chown {
        Some(spec) => {
            let passwd = dest_view
                .read_to_string(Path::new("/etc/passwd"))
                .unwrap_or_default();
            let group = dest_view
                .read_to_string(Path::new("/etc/group"))
                .unwrap_or_default();
            let u = crate::sandbox::user::resolve(spec, &passwd, &group)
                .with_context(|| format!("--chown={spec}"))?;
            // Docker: a user without a group (`--chown=1000`, `--chown=app`)
            // gets GID = UID, not the user's primary group.
            let gid = if spec.contains(':') { u.gid } else { u.uid };
            Some((u.uid, gid))
        }
        None => None,
    };
    let chmod = match &copy.chmod {
        Some(m) => Some(
            u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .with_context(|| {
                    format!("--chmod={m}: only octal modes (e.g. 0755) are supported")
                })?,
        ),
        None => None,
    };
    let exclude = Matcher::new(&copy.exclude)?;
    let dest_is_dir = copy.dest.ends_with('/');
    let dest_root = PathBuf::from(copy.dest.trim_end_matches('/'));
    let several = copy.items.len() > 1
        || copy
            .items
            .iter()
            .any(|i| matches!(i, CopyItem::Path(p) if p.contains(['*', '?', '['])));

    let mut items: Vec<Item> = Vec::new();
    for item in &copy.items {
        match item {
            CopyItem::Inline { name, content } => {
                let dest = if dest_is_dir || several {
                    dest_root.join(name)
                } else {
                    dest_root.clone()
                };
                items.push(Item {
                    dest,
                    kind: EntryKind::File(FileSource::Bytes(Arc::from(content.as_bytes()))),
                    meta: Meta::root(0o644),
                    named: true,
                });
            }
            CopyItem::Url { url, .. } => {
                let host = downloads
                    .get(url)
                    .with_context(|| format!("{url} was not downloaded (solver bug)"))?;
                let dest = if dest_is_dir || several {
                    dest_root.join(super::download::file_name(url))
                } else {
                    dest_root.clone()
                };
                items.push(Item {
                    dest,
                    kind: EntryKind::File(FileSource::Path(host.clone())),
                    // Docker gives downloaded files 0600.
                    meta: Meta::root(0o600),
                    // Downloaded archives are never extracted (Docker).
                    named: false,
                });
            }
            CopyItem::Path(p) => match src {
                Source::Context(ctx) => from_context(
                    ctx,
                    p,
                    &dest_root,
                    dest_is_dir || several,
                    &exclude,
                    &mut items,
                )?,
                Source::View(view) => from_view(
                    view,
                    p,
                    &dest_root,
                    dest_is_dir || several,
                    &exclude,
                    &mut items,
                )?,
            },
        }
    }
    let mut out = Vec::with_capacity(items.len() + 4);
    // Parents of the destination, with the stage's own metadata.
    let mut anc = PathBuf::new();
    let dest_rel = relative(&dest_root);
    let dest_parent_count = if items.iter().any(|i| relative(&i.dest) != dest_rel) {
        dest_rel.components().count()
    } else {
        dest_rel.components().count().saturating_sub(1)
    };
    for c in dest_rel.components().take(dest_parent_count) {
        anc.push(c);
        // A `--link` layer does not depend on the layers below (its cache
        // key leaves them out), so it must not read their metadata either:
        // its parents are created fresh, as BuildKit's are.
        let meta = (!copy.link)
            .then(|| dest_view.lookup(&anc))
            .flatten()
            .and_then(|h| {
                fs::symlink_metadata(&h)
                    .ok()
                    .filter(|m| m.is_dir())
                    .map(|m| {
                        let mut meta = meta_of(&h, &m);
                        (meta.uid, meta.gid) = ids.to_container(meta.uid, meta.gid);
                        meta
                    })
            })
            .unwrap_or_else(|| {
                // Directories the copy creates belong to --chown's user, as
                // in Docker; existing ones keep their metadata.
                let mut m = Meta::root(0o755);
                if let Some((u, g)) = owner {
                    (m.uid, m.gid) = (u, g);
                }
                m
            });
        out.push(Entry::new(&anc, EntryKind::Dir, meta)?);
    }
    let unpack = copy.add.as_ref().is_some_and(|a| a.unpack) && matches!(src, Source::Context(_));
    // An archive extracts into the destination as a directory, even when
    // it was written without a trailing `/`.
    let mut dest_dir_written = dest_parent_count == dest_rel.components().count();
    for mut it in items {
        if unpack
            && it.named
            && let EntryKind::File(FileSource::Path(host)) = &it.kind
            && super::add::is_archive(host)?
        {
            let label = host.file_name().unwrap_or_default().to_string_lossy();
            if !dest_dir_written && !dest_rel.as_os_str().is_empty() {
                let mut m = Meta::root(0o755);
                if let Some((u, g)) = owner {
                    (m.uid, m.gid) = (u, g);
                }
                out.push(Entry::new(&dest_rel, EntryKind::Dir, m)?);
                dest_dir_written = true;
            }
            for mut e in super::add::extract(host, &dest_root, &label)? {
                if let Some((u, g)) = owner {
                    (e.meta.uid, e.meta.gid) = (u, g);
                }
                if let Some(m) = chmod
                    && !matches!(e.kind, EntryKind::Symlink(_))
                {
                    e.meta.mode = m;
                }
                out.push(e);
            }
            continue;
        }
        if let Some((u, g)) = owner {
            it.meta.uid = u;
            it.meta.gid = g;
        }
        if let Some(m) = chmod
            && !matches!(it.kind, EntryKind::Symlink(_))
        {
            it.meta.mode = m;
        }
        out.push(Entry::new(relative(&it.dest), it.kind, it.meta)?);
    }
    Ok(out)
}

/// A digest of exactly what `entries` write into a layer: paths, kinds,
/// metadata (mode, owner, mtime, xattrs), link targets and file contents.
/// A `COPY --from=<stage>` is keyed by it ([`crate::graph::key::content_copy_key`]),
/// so it is a pure function of content.
pub fn content_digest(entries: &[Entry]) -> Result<Digest> {
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let field = |h: &mut Hasher, b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    for e in entries {
        field(&mut h, e.path.as_os_str().as_bytes());
        let m = &e.meta;
        field(
            &mut h,
            format!("{:o} {} {} {}", m.mode, m.uid, m.gid, m.mtime).as_bytes(),
        );
        let mut xattrs: Vec<_> = m.xattrs.iter().collect();
        xattrs.sort();
        h.update(&(xattrs.len() as u64).to_le_bytes());
        for (k, v) in xattrs {
            field(&mut h, k.as_bytes());
            field(&mut h, v);
        }
        match &e.kind {
            EntryKind::File(FileSource::Bytes(b)) => {
                field(&mut h, b"F");
                field(&mut h, b);
            }
            // Hashed as the same bytes in memory would be.
            EntryKind::File(FileSource::Spool(span)) => {
                field(&mut h, b"F");
                h.update(&span.len().to_le_bytes());
                let mut r = span.reader();
                loop {
                    let n = r.read(&mut buf).context("reading a spooled file")?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            }
            EntryKind::File(FileSource::Path(p)) => {
                field(&mut h, b"F");
                let mut f =
                    fs::File::open(p).with_context(|| format!("reading {}", p.display()))?;
                let mut file = Hasher::new();
                loop {
                    let n = f
                        .read(&mut buf)
                        .with_context(|| format!("reading {}", p.display()))?;
                    if n == 0 {
                        break;
                    }
                    file.update(&buf[..n]);
                }
                field(&mut h, file.finish().0.to_string().as_bytes());
            }
            EntryKind::Dir => field(&mut h, b"D"),
            EntryKind::Symlink(t) => {
                field(&mut h, b"L");
                field(&mut h, t.as_os_str().as_bytes());
            }
            EntryKind::Hardlink(t) => {
                field(&mut h, b"H");
                field(&mut h, t.as_os_str().as_bytes());
            }
            EntryKind::CharDevice { major, minor } => {
                field(&mut h, format!("C {major} {minor}").as_bytes())
            }
            EntryKind::BlockDevice { major, minor } => {
                field(&mut h, format!("B {major} {minor}").as_bytes())
            }
            EntryKind::Fifo => field(&mut h, b"P"),
            EntryKind::Whiteout => field(&mut h, b"W"),
            EntryKind::Opaque => field(&mut h, b"O"),
        }
    }
    Ok(h.finish().0)
}

fn meta_of(host: &Path, m: &fs::Metadata) -> Meta {
    Meta {
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
        xattrs: read_xattrs(host)
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !k.to_string_lossy().starts_with("trusted.overlay."))
            .collect(),
    }
}

fn from_context(
    ctx: &Context,
    src: &str,
    dest: &Path,
    into_dir: bool,
    exclude: &Matcher,
    out: &mut Vec<Item>,
) -> Result<()> {
    // `sources` lists each root: a directory as (dir, "") then its contents
    // relative to it; a file as (file, its name).
    let mut dir_root: Option<String> = None;
    for (e, rel) in ctx.sources(src)? {
        if rel.is_empty() && e.kind == CtxKind::Dir {
            dir_root = Some(format!("{}/", e.path));
            continue;
        }
        let in_dir = dir_root
            .as_ref()
            .is_some_and(|r| e.path.starts_with(r.as_str()) || r == "/");
        if !exclude.is_empty() && exclude.excludes(&rel) {
            continue;
        }
        let target = if in_dir || (dir_root.is_none() && src_is_whole_context(src)) {
            dest.join(&rel)
        } else {
            dir_root = None;
            if into_dir {
                dest.join(&rel)
            } else {
                dest.to_path_buf()
            }
        };
        let host = ctx.root.join(&e.path);
        let md =
            fs::symlink_metadata(&host).with_context(|| format!("reading {}", host.display()))?;
        let mut meta = meta_of(&host, &md);
        meta.uid = 0;
        meta.gid = 0;
        let kind = match &e.kind {
            CtxKind::File { .. } => EntryKind::File(FileSource::Path(host.clone())),
            CtxKind::Dir => EntryKind::Dir,
            CtxKind::Symlink { target } => EntryKind::Symlink(PathBuf::from(target)),
        };
        out.push(Item {
            dest: target,
            kind,
            meta,
            named: !in_dir && !src_is_whole_context(src),
        });
    }
    Ok(())
}

/// `COPY . /x` copies the context's contents.
fn src_is_whole_context(src: &str) -> bool {
    let c = crate::context::ignore::clean(src.trim_start_matches('/'));
    c == "." || c.is_empty()
}

fn from_view(
    view: &RootView,
    src: &str,
    dest: &Path,
    into_dir: bool,
    exclude: &Matcher,
    out: &mut Vec<Item>,
) -> Result<()> {
    let src_path = Path::new(src);
    let name = src_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut roots: Vec<(PathBuf, PathBuf)> = Vec::new(); // (view path, host path)
    if name.contains(['*', '?', '[']) {
        let parent = view.resolve(src_path.parent().unwrap_or(Path::new("/")))?;
        for (n, host) in view.read_dir(&parent)? {
            if component_match(&name, &n.to_string_lossy()) {
                roots.push((parent.join(&n), host));
            }
        }
    } else {
        let resolved = view.resolve(src_path)?;
        if let Some(host) = view.lookup(&resolved) {
            roots.push((resolved, host));
        }
    }
    if roots.is_empty() {
        bail!("{src}: not found in the source stage or image");
    }
    for (vpath, host) in roots {
        let md = fs::symlink_metadata(&host)?;
        if md.is_dir() {
            walk_view(view, &vpath, dest, exclude, out)?;
        } else {
            let target = if into_dir {
                dest.join(vpath.file_name().unwrap_or_default())
            } else {
                dest.to_path_buf()
            };
            out.push(item_from_host(&host, &md, target)?);
        }
    }
    Ok(())
}

fn walk_view(
    view: &RootView,
    dir: &Path,
    dest: &Path,
    exclude: &Matcher,
    out: &mut Vec<Item>,
) -> Result<()> {
    for (name, host) in view.read_dir(dir)? {
        let vpath = dir.join(&name);
        let rel = relative(&vpath);
        if !exclude.is_empty() && exclude.excludes(&rel.to_string_lossy()) {
            continue;
        }
        let md = fs::symlink_metadata(&host)?;
        let target = dest.join(&name);
        out.push(item_from_host(&host, &md, target.clone())?);
        if md.is_dir() {
            walk_view(view, &vpath, &target, exclude, out)?;
        }
    }
    Ok(())
}

fn item_from_host(host: &Path, md: &fs::Metadata, dest: PathBuf) -> Result<Item> {
    let mut meta = meta_of(host, md);
    meta.uid = 0;
    meta.gid = 0;
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink(fs::read_link(host)?)
    } else if ft.is_file() {
        EntryKind::File(FileSource::Path(host.to_path_buf()))
    } else {
        bail!(
            "{}: only files, directories and symlinks can be copied",
            dest.display()
        );
    };
    Ok(Item {
        dest,
        kind,
        meta,
        named: false,
    })
}

#[cfg(test)]
mod content_tests {
    use super::*;

    fn file(path: &str, host: &Path, mode: u32, mtime: i64) -> Entry {
        Entry::new(
            path,
            EntryKind::File(FileSource::Path(host.to_path_buf())),
            Meta {
                mtime,
                ..Meta::root(mode)
            },
        )
        .unwrap()
    }

    #[test]
    fn content_digest_follows_every_byte_of_the_layer_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::write(&a, "same").unwrap();
        fs::write(&b, "same").unwrap();
        let base = content_digest(&[file("opt/x", &a, 0o644, 5)]).unwrap();
        // Where the bytes come from on the host does not matter.
        assert_eq!(
            base,
            content_digest(&[file("opt/x", &b, 0o644, 5)]).unwrap()
        );
        // Content, path, mode and mtime do.
        fs::write(&b, "diff").unwrap();
        for other in [
            file("opt/x", &b, 0o644, 5),
            file("opt/y", &a, 0o644, 5),
            file("opt/x", &a, 0o755, 5),
            file("opt/x", &a, 0o644, 6),
        ] {
            assert_ne!(base, content_digest(&[other]).unwrap());
        }
        // A file is not a symlink with the same text.
        let link = Entry::new(
            "opt/x",
            EntryKind::Symlink("same".into()),
            Meta::root(0o644),
        )
        .unwrap();
        assert_ne!(
            content_digest(&[link]).unwrap(),
            content_digest(&[Entry::new(
                "opt/x",
                EntryKind::File(FileSource::Bytes(Arc::from(&b"same"[..]))),
                Meta::root(0o644)
            )
            .unwrap()])
            .unwrap()
        );
    }
}
