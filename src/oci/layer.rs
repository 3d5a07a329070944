//! Reproducible layer tars.
//!
//! A layer is described as a list of [`Entry`] values (from a directory scan
//! with [`scan_dir`], from a sandbox's upper dir, from .deb contents…) and
//! written by [`write_layer`]. The bytes are a pure function of the entries
//! and [`LayerOptions`]:
//!
//! - entries sorted by path bytes, missing parent directories added
//!   (mode 0755, owner 0:0), the root itself never written;
//! - ustar headers with numeric uid/gid and empty user/group names, no
//!   atime/ctime; PAX records only when ustar cannot hold a value (long
//!   paths or link targets, huge ids or sizes, xattrs);
//! - mtimes clamped to the epoch ([`source_date_epoch`]);
//! - whiteouts as empty `.wh.NAME` files and `.wh..wh..opq` markers, mode 0;
//! - the compressor is part of the digest contract: gzip level 6 by the
//!   `zlib-rs` backend in 128 KiB blocks deflated in parallel, each with the
//!   previous block as dictionary ([`super::pgzip`]), with an empty header
//!   (no name, mtime 0), or zstd level
//!   3 in multi-threaded mode (zstd's output does not depend on the number
//!   of workers, only on being in MT mode, which kiln always uses). Changing
//!   any of these changes layer digests: bump [`LAYER_FORMAT`] when doing so.
//!
//! Writing uses two threads: one builds the tar and hashes it (diff_id),
//! the other compresses and hashes the blob (and zstd adds its own workers).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};

use super::digest::{Digest, HashingWriter};
use super::store::{BlobInfo, BlobWriter, Store};
use crate::Result;

/// Version of the layer byte format (tar layout + compressor settings).
/// Part of every cache key that maps inputs to layer digests, so a cache
/// written by another format is a miss, never a mix of both in one image
/// (2: gzip in parallel blocks, [`super::pgzip`]).
pub const LAYER_FORMAT: u32 = 2;

/// The epoch used when `SOURCE_DATE_EPOCH` is not set: one second after the
/// Unix epoch, as Jib does, because some tools treat a zero time as unset.
pub const DEFAULT_EPOCH: i64 = 1;

/// `SOURCE_DATE_EPOCH` when set to a valid number, else [`DEFAULT_EPOCH`].
pub fn source_date_epoch() -> Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse::<i64>().ok().filter(|n| *n >= 0).with_context(|| {
            format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970: unset it or give a non-negative integer")
        }),
        _ => Ok(DEFAULT_EPOCH),
    }
}

/// How a layer blob is compressed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    /// Uncompressed tar.
    None,
}

impl Compression {
    /// The OCI media type of a layer blob with this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }

    /// The compression of a layer media type (OCI or Docker), if known.
    pub fn from_media_type(mt: &str) -> Option<Compression> {
        match mt {
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd" => Some(Compression::Zstd),
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            _ => None,
        }
    }

    /// Wraps a blob reader in the matching decompressor.
    pub fn decoder<'a>(self, r: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
            Compression::None => Box::new(r),
        })
    }
}

impl FromStr for Compression {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" | "uncompressed" => Ok(Compression::None),
            _ => bail!("unknown compression {s:?}: use gzip, zstd or none"),
        }
    }
}

/// Settings that shape a layer's bytes.
#[derive(Debug, Clone, Copy)]
pub struct LayerOptions {
    pub compression: Compression,
    /// mtimes later than this are clamped to it.
    pub epoch: i64,
}

impl LayerOptions {
    /// gzip, epoch from `SOURCE_DATE_EPOCH`.
    pub fn from_env() -> Result<LayerOptions> {
        Ok(LayerOptions {
            compression: Compression::Gzip,
            epoch: source_date_epoch()?,
        })
    }
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            compression: Compression::Gzip,
            epoch: DEFAULT_EPOCH,
        }
    }
}

/// Where a regular file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// Read from this host path when the layer is written.
    Path(PathBuf),
    /// These bytes.
    Bytes(Arc<[u8]>),
    /// A range of a spool file (contents kept out of memory).
    Spool(super::spool::Span),
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File(FileSource),
    Dir,
    Symlink(PathBuf),
    /// A hard link to another entry of the same layer (a layer-relative path).
    Hardlink(PathBuf),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    /// The path was deleted: written as `DIR/.wh.NAME`.
    Whiteout,
    /// The directory's lower contents are hidden: written as `DIR/.wh..wh..opq`.
    Opaque,
}

/// Ownership, permissions, time and extended attributes of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (no file-type bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch (clamped when written).
    pub mtime: i64,
    /// Extended attributes, sorted by name when written.
    pub xattrs: Vec<(OsString, Vec<u8>)>,
}

impl Meta {
    /// Root-owned with the given mode and time 0 (clamping makes it the epoch floor).
    pub fn root(mode: u32) -> Meta {
        Meta {
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        }
    }
}

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the image root, normalised (no `.`, `..`, or leading `/`).
    pub path: PathBuf,
    pub kind: EntryKind,
    pub meta: Meta,
}

impl Entry {
    pub fn new(path: impl AsRef<Path>, kind: EntryKind, meta: Meta) -> Result<Entry> {
        Ok(Entry {
            path: normalize(path.as_ref())?,
            kind,
            meta,
        })
    }
}

/// Turns `/a/./b/` into `a/b`; refuses `..` and empty paths.
pub fn normalize(path: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => bail!(
                "path {} leaves the image root (contains ..)",
                path.display()
            ),
            Component::Prefix(_) => bail!("path {} is not a Unix path", path.display()),
        }
    }
    if out.as_os_str().is_empty() {
        bail!("empty path in layer entry ({:?})", path.display());
    }
    Ok(out)
}

/// How [`scan_dir`] records ownership.
#[derive(Debug, Clone, Copy, Default)]
pub enum Ownership {
    /// Keep each file's numeric uid/gid (a root filesystem).
    #[default]
    Preserve,
    /// Give everything this uid:gid (a source tree; like `COPY` without `--chown`).
    Fixed(u32, u32),
}

/// Options of [`scan_dir`].
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    pub ownership: Ownership,
    /// Prefix every path with this (e.g. `app` to place a tree under /app).
    pub prefix: Option<PathBuf>,
}

/// What [`scan_dir`] found besides entries.
#[derive(Debug, Default)]
pub struct Scan {
    pub entries: Vec<Entry>,
    /// Paths skipped, with the reason (sockets: like tar, they cannot be archived).
    pub skipped: Vec<(PathBuf, &'static str)>,
}

/// Walks a directory tree into entries, never following symlinks (a symlink
/// loop is just symlinks). Device nodes and fifos are kept; sockets are
/// skipped and reported. File contents are read later, by [`write_layer`].
pub fn scan_dir(root: &Path, opts: &ScanOptions) -> Result<Scan> {
    let meta = fs::metadata(root).with_context(|| format!("cannot read {}", root.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    let mut scan = Scan::default();
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let base = opts.prefix.clone().unwrap_or_default();
    if !base.as_os_str().is_empty() {
        let m = entry_meta(root, &meta, opts.ownership)?;
        scan.entries.push(Entry::new(&base, EntryKind::Dir, m)?);
    }
    walk(root, &base, opts, &mut links, &mut scan)?;
    Ok(scan)
}

fn walk(
    dir: &Path,
    rel: &Path,
    opts: &ScanOptions,
    links: &mut HashMap<(u64, u64), PathBuf>,
    scan: &mut Scan,
) -> Result<()> {
    let mut names: Vec<OsString> = fs::read_dir(dir)
        .with_context(|| {
            format!(
                "cannot read directory {}: check its permissions",
                dir.display()
            )
        })?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .with_context(|| format!("cannot read directory {}", dir.display()))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let host = dir.join(&name);
        let path = rel.join(&name);
        let md = fs::symlink_metadata(&host)
            .with_context(|| format!("cannot stat {}", host.display()))?;
        let ft = md.file_type();
        let meta = entry_meta(&host, &md, opts.ownership)?;
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            let target = fs::read_link(&host)
                .with_context(|| format!("cannot read link {}", host.display()))?;
            EntryKind::Symlink(target)
        } else if ft.is_socket() {
            scan.skipped
                .push((host, "socket (sockets cannot be stored in a layer)"));
            continue;
        } else {
            // Regular files, devices and fifos can be hard-linked.
            if md.nlink() > 1 {
                if let Some(first) = links.get(&(md.dev(), md.ino())) {
                    scan.entries.push(Entry {
                        path,
                        kind: EntryKind::Hardlink(first.clone()),
                        meta,
                    });
                    continue;
                }
                links.insert((md.dev(), md.ino()), path.clone());
            }
            if ft.is_file() {
                EntryKind::File(FileSource::Path(host.clone()))
            } else if ft.is_char_device() {
                EntryKind::CharDevice {
                    major: major(md.rdev()),
                    minor: minor(md.rdev()),
                }
            } else if ft.is_block_device() {
                EntryKind::BlockDevice {
                    major: major(md.rdev()),
                    minor: minor(md.rdev()),
                }
            } else if ft.is_fifo() {
                EntryKind::Fifo
            } else {
                bail!("{} has a file type kiln does not know", host.display());
            }
        };
        let is_dir = kind == EntryKind::Dir;
        scan.entries.push(Entry {
            path: path.clone(),
            kind,
            meta,
        });
        if is_dir {
            walk(&host, &path, opts, links, scan)?;
        }
    }
    Ok(())
}

fn entry_meta(host: &Path, md: &fs::Metadata, ownership: Ownership) -> Result<Meta> {
    let (uid, gid) = match ownership {
        Ownership::Preserve => (md.uid(), md.gid()),
        Ownership::Fixed(u, g) => (u, g),
    };
    Ok(Meta {
        mode: md.mode() & 0o7777,
        uid,
        gid,
        mtime: md.mtime(),
        xattrs: read_xattrs(host)?,
    })
}

pub(crate) fn major(dev: u64) -> u32 {
    libc::major(dev as libc::dev_t) as u32
}

pub(crate) fn minor(dev: u64) -> u32 {
    libc::minor(dev as libc::dev_t) as u32
}

/// Extended attributes worth keeping in a layer. `security.selinux` is host
/// policy and `system.*` are ACLs the runtime recomputes: both are dropped,
/// as BuildKit does.
pub(crate) fn keep_xattr(name: &[u8]) -> bool {
    !(name == b"security.selinux" || name.starts_with(b"system."))
}

/// The names of a path's extended attributes, without following
/// symlinks; none on a filesystem without xattr support.
pub(crate) fn xattr_names(path: &Path) -> Result<Vec<Vec<u8>>> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: valid path string and a buffer of the given length.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // The list outgrew the buffer (or grew meanwhile): retry larger.
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => {
                return Err(err)
                    .with_context(|| format!("listing extended attributes of {}", path.display()));
            }
        }
    };
    Ok(names[..len]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// Reads a path's extended attributes without following symlinks.
pub fn read_xattrs(path: &Path) -> Result<Vec<(OsString, Vec<u8>)>> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut out = Vec::new();
    for name in xattr_names(path)?.into_iter().filter(|n| keep_xattr(n)) {
        let cname = std::ffi::CString::new(name.as_slice())?;
        // SAFETY: valid strings; a null buffer asks for the size.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            continue; // removed meanwhile
        }
        let mut value = vec![0u8; len as usize];
        // SAFETY: the buffer has `len` bytes.
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len < 0 {
            continue;
        }
        value.truncate(len as usize);
        out.push((OsString::from_vec(name), value));
    }
    out.sort();
    Ok(out)
}

/// A written layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Digest of the uncompressed tar (the image config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// The stored (compressed) blob.
    pub blob: BlobInfo,
    pub compression: Compression,
}

impl Layer {
    pub fn media_type(&self) -> &'static str {
        self.compression.media_type()
    }
}

/// Sorts entries, keeps the last of duplicate paths, drops entries below a
/// whiteout, adds missing parents. An added parent is root-owned 0755 and
/// overrides the directory's metadata in lower layers when applied, so
/// producers that know a parent's real metadata (a sandbox upper dir, a
/// COPY into an existing directory) must list it themselves.
pub fn canonicalize(entries: Vec<Entry>) -> Vec<Entry> {
    // Keyed by the path written to the tar, so a directory and its opaque
    // marker (`DIR/.wh..wh..opq`) are two entries, not one.
    let mut by_path: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
    for e in entries {
        let mut key = e.path.as_os_str().as_bytes().to_vec();
        if e.kind == EntryKind::Opaque {
            key.extend_from_slice(b"/.wh..wh..opq");
        }
        by_path.insert(key, e);
    }
    // Anything below a deleted path is moot (and would otherwise bring the
    // deleted directory back as an implicit parent).
    let deleted: Vec<Vec<u8>> = by_path
        .iter()
        .filter(|(_, e)| e.kind == EntryKind::Whiteout)
        .map(|(k, _)| k.clone())
        .collect();
    if !deleted.is_empty() {
        by_path.retain(|k, _| {
            !k.iter().enumerate().any(|(i, b)| {
                *b == b'/'
                    && deleted
                        .binary_search_by(|d| d.as_slice().cmp(&k[..i]))
                        .is_ok()
            })
        });
    }
    let mut parents = Vec::new();
    for e in by_path.values() {
        // An opaque marker lives inside its directory.
        let mut p = if e.kind == EntryKind::Opaque {
            Some(e.path.as_path())
        } else {
            e.path.parent()
        };
        while let Some(dir) = p.filter(|d| !d.as_os_str().is_empty()) {
            let key = dir.as_os_str().as_bytes().to_vec();
            if by_path.contains_key(&key) {
                break;
            }
            parents.push((key, dir.to_path_buf()));
            p = dir.parent();
        }
    }
    for (key, dir) in parents {
        by_path.entry(key).or_insert_with(|| Entry {
            path: dir,
            kind: EntryKind::Dir,
            meta: Meta::root(0o755),
        });
    }
    first_of_each_link_group_is_the_file(&mut by_path);
    by_path.into_values().collect()
}

/// A hard link must follow its target in the tar: an unpacker links to
/// what it has already written. Producers name the target they met first
/// (a directory walk is depth-first, so `turbo/bin/turbo` comes before
/// `turbo-linux-64/bin/turbo`), which byte order may put last (`-` sorts
/// before `/`). For each group whose target is in this layer, the entry
/// that sorts first becomes the file (the target's kind, content and
/// metadata) and every other member a link to it. Links to a lower
/// layer's file are left as they are.
fn first_of_each_link_group_is_the_file(by_path: &mut BTreeMap<Vec<u8>, Entry>) {
    let mut groups: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for (key, e) in by_path.iter() {
        if let EntryKind::Hardlink(t) = &e.kind {
            let t = t.as_os_str().as_bytes().to_vec();
            if by_path
                .get(&t)
                .is_some_and(|te| !matches!(te.kind, EntryKind::Hardlink(_)))
            {
                groups.entry(t).or_default().push(key.clone());
            }
        }
    }
    for (target, links) in groups {
        let first = links.iter().min().cloned().unwrap_or_default();
        if first.is_empty() || first > target {
            continue;
        }
        // `first` sorts before the target: it takes the target's content.
        let Some(target_entry) = by_path.get(&target).cloned() else {
            continue;
        };
        let first_path = by_path[&first].path.clone();
        if let Some(e) = by_path.get_mut(&first) {
            e.kind = target_entry.kind.clone();
            e.meta = target_entry.meta.clone();
        }
        if let Some(e) = by_path.get_mut(&target) {
            e.kind = EntryKind::Hardlink(first_path.clone());
        }
        for l in links.iter().filter(|l| **l != first) {
            if let Some(e) = by_path.get_mut(l) {
                e.kind = EntryKind::Hardlink(first_path.clone());
            }
        }
    }
}

/// Writes entries as a layer blob into the store.
pub fn write_layer(store: &Store, entries: Vec<Entry>, opts: LayerOptions) -> Result<Layer> {
    write_canonical_layer(store, &canonicalize(entries), opts)
}

/// [`write_layer`] for entries already in [`canonicalize`]d form, for
/// callers that need the exact list the tar was made of afterwards (a
/// step's upper dir turned into the layer's snapshot).
pub fn write_canonical_layer(
    store: &Store,
    entries: &[Entry],
    opts: LayerOptions,
) -> Result<Layer> {
    write_canonical_layer_tee(store, entries, opts, None)
}

/// [`write_canonical_layer`] that also sends the uncompressed tar, in
/// chunks, to `tee` (read them with [`tar_stream`]). The tar is sent
/// whole or, if the receiver goes away, not further; the layer does not
/// depend on it.
pub fn write_canonical_layer_tee(
    store: &Store,
    entries: &[Entry],
    opts: LayerOptions,
    tee: Option<SyncSender<Vec<u8>>>,
) -> Result<Layer> {
    let (tx, rx) = sync_channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    // The diff_id is hashed on whichever thread has time: gzip keeps the
    // compressing thread busy, so the tar thread hashes; zstd compresses on
    // its own workers, so the feeding thread hashes. Either way the digest
    // covers the same bytes.
    let hash_in_producer = opts.compression == Compression::Gzip;
    std::thread::scope(|s| {
        let producer = s.spawn(move || -> Result<Option<Digest>> {
            if hash_in_producer {
                let mut hashed = HashingWriter::new(ChunkWriter::new(tx));
                write_tar(&mut hashed, entries, opts.epoch)?;
                let (diff_id, _, mut chunks) = hashed.finish();
                chunks.flush()?;
                Ok(Some(diff_id))
            } else {
                let mut chunks = ChunkWriter::new(tx);
                write_tar(&mut chunks, entries, opts.epoch)?;
                chunks.flush()?;
                Ok(None)
            }
        });
        let mut reader = ChunkReader::new(rx);
        reader.hash = !hash_in_producer;
        reader.tee = tee;
        let compressed = compress_into(store, &mut reader, opts.compression);
        if compressed.is_err() {
            // The producer may be blocked on a full channel: let it fail.
            reader.close();
        }
        let produced = producer.join().expect("layer tar writer panicked");
        // A compressor failure (disk full…) makes the producer fail with a
        // closed channel, so the compressor's error is the cause to report.
        // A producer failure means the tar is incomplete: the unsealed blob
        // is dropped, so no truncated layer is ever stored.
        let blob = compressed?;
        let diff_id = match produced? {
            Some(d) => d,
            None => reader.hasher.finish().0,
        };
        Ok(Layer {
            diff_id,
            blob: blob.commit()?,
            compression: opts.compression,
        })
    })
}

/// Writes an uncompressed tar stream of canonical entries.
pub fn write_tar(out: impl Write, entries: &[Entry], epoch: i64) -> Result<()> {
    let mut builder = tar::Builder::new(out);
    for e in entries {
        append_entry(&mut builder, e, epoch)
            .with_context(|| format!("adding {} to the layer", e.path.display()))?;
    }
    builder
        .into_inner()
        .context("finishing the layer tar")?
        .flush()?;
    Ok(())
}

fn compress_into<'s>(
    store: &'s Store,
    tar: &mut ChunkReader,
    compression: Compression,
) -> Result<BlobWriter<'s>> {
    let mut blob = store.writer()?;
    match compression {
        Compression::Gzip => {
            super::pgzip::encode(&mut blob, 6, |enc| tar.copy_to(enc))?;
        }
        Compression::Zstd => {
            // One zstd stream at a time, on one worker: a multi-threaded
            // stream's job buffers grow with its workers (~110 MB with
            // two, heaptrack on a node-npm cold build), and one worker at
            // level 3 outruns the tar writer and the snapshot tee that
            // feed it. Multi-threaded mode with any number of workers
            // writes the same bytes (tested below), so digests do not
            // change.
            static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
            let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
            let mut enc = zstd::stream::write::Encoder::new(&mut blob, 3)?;
            enc.multithread(1)?;
            tar.copy_to(&mut enc)?;
            enc.finish()?;
        }
        Compression::None => {
            tar.copy_to(&mut blob)?;
        }
    }
    Ok(blob)
}

fn append_entry<W: Write>(b: &mut tar::Builder<W>, e: &Entry, epoch: i64) -> Result<()> {
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let (path, kind) = match &e.kind {
        EntryKind::Whiteout => {
            let name = e.path.file_name().context("whiteout of the root")?;
            let mut wh = OsString::from(".wh.");
            wh.push(name);
            (e.path.with_file_name(wh), &e.kind)
        }
        EntryKind::Opaque => (e.path.join(".wh..wh..opq"), &e.kind),
        k => (e.path.clone(), k),
    };
    let mut h = tar::Header::new_ustar();
    h.set_mtime(clamped_mtime(e.meta.mtime, epoch) as u64);
    let (uid, gid) = (e.meta.uid as u64, e.meta.gid as u64);
    const USTAR_ID_MAX: u64 = 0o7777777;
    if uid > USTAR_ID_MAX {
        pax.push(("uid".into(), uid.to_string().into_bytes()));
    }
    if gid > USTAR_ID_MAX {
        pax.push(("gid".into(), gid.to_string().into_bytes()));
    }
    h.set_uid(uid.min(USTAR_ID_MAX));
    h.set_gid(gid.min(USTAR_ID_MAX));
    h.set_mode(e.meta.mode & 0o7777);
    h.set_size(0);

    let mut name_bytes = path.as_os_str().as_bytes().to_vec();
    if matches!(kind, EntryKind::Dir) {
        name_bytes.push(b'/');
    }
    let mut data: Box<dyn Read> = Box::new(io::empty());
    match kind {
        EntryKind::Dir => h.set_entry_type(tar::EntryType::Directory),
        EntryKind::File(src) => {
            h.set_entry_type(tar::EntryType::Regular);
            let (len, reader): (u64, Box<dyn Read>) = match src {
                FileSource::Bytes(bytes) => {
                    (bytes.len() as u64, Box::new(io::Cursor::new(bytes.clone())))
                }
                FileSource::Spool(span) => (span.len(), Box::new(span.reader())),
                FileSource::Path(p) => {
                    let f =
                        File::open(p).with_context(|| format!("cannot read {}", p.display()))?;
                    let len = f.metadata()?.len();
                    // Never read more than was measured: a file growing while the
                    // layer is written must not corrupt the tar.
                    (
                        len,
                        Box::new(ExactReader {
                            // Large reads: 8 KiB ones cost a syscall each.
                            inner: io::BufReader::with_capacity(
                                READ_BUF.min(len.max(1) as usize),
                                f,
                            )
                            .take(len),
                            left: len,
                            path: p.clone(),
                        }),
                    )
                }
            };
            const USTAR_SIZE_MAX: u64 = 0o77777777777;
            if len > USTAR_SIZE_MAX {
                pax.push(("size".into(), len.to_string().into_bytes()));
                h.set_size(0);
            }
            h.set_size(len.min(USTAR_SIZE_MAX));
            if len > USTAR_SIZE_MAX {
                bail!("files over 8 GiB are not supported yet");
            }
            data = reader;
        }
        EntryKind::Symlink(target) | EntryKind::Hardlink(target) => {
            h.set_entry_type(if matches!(kind, EntryKind::Symlink(_)) {
                tar::EntryType::Symlink
            } else {
                tar::EntryType::Link
            });
            let t = target.as_os_str().as_bytes();
            if t.len() > 100 {
                pax.push(("linkpath".into(), t.to_vec()));
            } else {
                h.set_link_name_literal(t)?;
            }
            if matches!(kind, EntryKind::Symlink(_)) {
                h.set_mode(0o777);
            }
        }
        EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
            h.set_entry_type(if matches!(kind, EntryKind::CharDevice { .. }) {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            h.set_device_major(*major)?;
            h.set_device_minor(*minor)?;
        }
        EntryKind::Fifo => h.set_entry_type(tar::EntryType::Fifo),
        EntryKind::Whiteout | EntryKind::Opaque => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0);
        }
    }
    if !matches!(
        kind,
        EntryKind::CharDevice { .. } | EntryKind::BlockDevice { .. }
    ) {
        // ustar has device fields for every entry; keep them zero.
        h.set_device_major(0)?;
        h.set_device_minor(0)?;
    }
    if set_ustar_path(&mut h, &name_bytes).is_err() {
        pax.push(("path".into(), name_bytes.clone()));
        let tail = &name_bytes[name_bytes.len().saturating_sub(99)..];
        set_ustar_path(&mut h, tail).or_else(|_| set_ustar_path(&mut h, b"longname"))?;
    }
    if !matches!(e.kind, EntryKind::Whiteout | EntryKind::Opaque) {
        let mut xattrs = e.meta.xattrs.clone();
        xattrs.sort();
        for (k, v) in xattrs {
            let mut key = String::from("SCHILY.xattr.");
            key.push_str(&String::from_utf8_lossy(k.as_bytes()));
            pax.push((key, v));
        }
    }
    if !pax.is_empty() {
        pax.sort_by(|a, b| a.0.cmp(&b.0));
        b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
    }
    h.set_cksum();
    b.append(&h, data)?;
    Ok(())
}

/// The mtime an entry gets in the tar (and so in every unpack of it):
/// clamped to `[0, epoch]`, whole seconds.
pub fn clamped_mtime(mtime: i64, epoch: i64) -> i64 {
    mtime.clamp(0, epoch.max(0))
}

/// Sets a ustar name, splitting it into prefix + name when it is over 100 bytes.
fn set_ustar_path(h: &mut tar::Header, path: &[u8]) -> Result<()> {
    let ustar = h.as_ustar_mut().context("not a ustar header")?;
    ustar.name.fill(0);
    ustar.prefix.fill(0);
    if path.len() <= 100 {
        ustar.name[..path.len()].copy_from_slice(path);
        return Ok(());
    }
    // Split at a '/' so that prefix ≤ 155 and name ≤ 100 bytes.
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    for (i, _) in trimmed.iter().enumerate().filter(|(_, b)| **b == b'/') {
        let (prefix, name) = (&path[..i], &path[i + 1..]);
        if prefix.len() <= 155 && name.len() <= 100 && !name.is_empty() {
            ustar.prefix[..prefix.len()].copy_from_slice(prefix);
            ustar.name[..name.len()].copy_from_slice(name);
            return Ok(());
        }
    }
    bail!("path does not fit a ustar header")
}

/// Reads exactly `left` bytes or fails, naming the file (it shrank while
/// the layer was being written).
struct ExactReader<R> {
    inner: R,
    left: u64,
    path: PathBuf,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} shrank while it was being added to the layer",
                    self.path.display()
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Collects writes into 1 MiB chunks sent over a channel.
struct ChunkWriter {
    tx: Option<SyncSender<Vec<u8>>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 1 << 20;

/// Chunks queued between a layer's tar writer and its compressor (or a
/// tee's reader): enough to keep both busy, few enough that the layers
/// written in parallel do not each hold 16 MB.
pub const CHUNKS_IN_FLIGHT: usize = 4;

/// Read size for file contents.
const READ_BUF: usize = 1 << 20;

impl ChunkWriter {
    fn new(tx: SyncSender<Vec<u8>>) -> Self {
        ChunkWriter {
            tx: Some(tx),
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        match &self.tx {
            Some(tx) => tx
                .send(chunk)
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "layer compressor stopped")),
            None => Ok(()),
        }
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        let _ = self.send();
        self.tx.take();
    }
}

struct ChunkReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    /// Hash the chunks as they pass (the diff_id), when set.
    hash: bool,
    hasher: super::digest::Hasher,
    /// Where a copy of every chunk goes, when set.
    tee: Option<SyncSender<Vec<u8>>>,
}

impl ChunkReader {
    fn new(rx: Receiver<Vec<u8>>) -> Self {
        ChunkReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            hash: false,
            hasher: super::digest::Hasher::new(),
            tee: None,
        }
    }

    /// Stops reading: the tar writer's next send fails (instead of
    /// blocking forever on a full channel) and the tee sees the end.
    fn close(&mut self) {
        let (_, closed) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, closed));
        self.tee = None;
    }

    /// Hands whole 1 MiB chunks to `out`: compressors work far better on
    /// big writes than on `io::copy`'s 8 KiB pieces.
    fn copy_to(&mut self, out: &mut (impl Write + ?Sized)) -> io::Result<()> {
        let rest = std::mem::take(&mut self.cur).split_off(self.pos);
        self.pos = 0;
        self.pass(rest, out)?;
        while let Ok(chunk) = self.rx.recv() {
            self.pass(chunk, out)?;
        }
        Ok(())
    }

    /// Hashes a chunk, writes it, then hands it (moved, not copied) to the tee.
    fn pass(&mut self, chunk: Vec<u8>, out: &mut (impl Write + ?Sized)) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        if self.hash {
            self.hasher.update(&chunk);
        }
        out.write_all(&chunk)?;
        if let Some(tee) = &self.tee
            && tee.send(chunk).is_err()
        {
            self.tee = None; // the receiver stopped reading
        }
        Ok(())
    }
}

/// The reading end of [`write_canonical_layer_tee`]'s tee: the tar bytes.
pub fn tar_stream(rx: Receiver<Vec<u8>>) -> impl Read {
    ChunkReader::new(rx)
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compressor that fails (here: the store cannot take a blob; on a
    /// build host, a full disk) must fail the layer, not leave the tar
    /// writer blocked on a full channel and the build hung.
    #[test]
    fn a_failed_compressor_fails_the_layer_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        std::fs::remove_dir_all(dir.path().join("ingest")).unwrap();
        let big = vec![7u8; 32 << 20]; // more chunks than the channel holds
        let entries = vec![
            Entry::new(
                "big",
                EntryKind::File(FileSource::Bytes(Arc::from(big))),
                Meta::root(0o644),
            )
            .unwrap(),
        ];
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = write_layer(&store, entries, LayerOptions::default());
            let _ = tx.send(r.map(|_| ()).map_err(|e| format!("{e:#}")));
        });
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("writing the layer hung");
        assert!(r.unwrap_err().contains("temp file"));
    }

    /// Layer digests rely on zstd's multi-threaded output not depending on
    /// the number of workers (only on MT mode itself).
    #[test]
    fn zstd_mt_output_does_not_depend_on_worker_count() {
        let data: Vec<u8> = (0..6_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 % 7 + b'a')
            .collect();
        let compress = |workers: u32| {
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            enc.multithread(workers).unwrap();
            enc.write_all(&data).unwrap();
            enc.finish().unwrap()
        };
        let one = compress(1);
        assert_eq!(one, compress(2));
        assert_eq!(one, compress(4));
    }
}
