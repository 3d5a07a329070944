//! Exporters: an image from a blob store to a file or directory. Which
//! one runs is chosen by [`crate::ship`] from the `--output` spelling.
//!
//! | `--output` | writes |
//! |---|---|
//! | `type=oci,dest=DIR` | an OCI image layout directory (added to if it exists) |
//! | `type=oci-archive,dest=FILE.tar` (or `type=oci,dest=FILE.tar`) | an OCI layout as a tar |
//! | `type=docker,dest=FILE.tar` | a `docker save` archive, loadable by `docker load` and `podman load` |
//! | `type=local,dest=DIR` | the image's root filesystem, its layers applied in order by the safe unpacker ([`super::unpack`]: nothing lands outside DIR) |
//! | `type=tar,dest=FILE.tar` | that root filesystem as one tar |
//!
//! The OCI layout entry is named with the tag (`org.opencontainers.image.ref.name`,
//! so `skopeo inspect oci:DIR:TAG` works) and the full name
//! (`io.containerd.image.name`), as buildx does.
//!
//! Archives are written to an unnamed file (`O_TMPFILE`) in the destination's
//! directory and linked under their name only when complete, so neither a
//! failed nor a killed export (even `SIGKILL`) leaves a partial file. On a
//! filesystem without `O_TMPFILE` a named `.kiln-export-*` file is used,
//! locked while it is written; the next export to that directory removes
//! such files once they are unlocked and more than a minute old.

use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use oci_spec::image::Descriptor;

use super::digest::{Digest, HashingWriter};
use super::image::{self, canonical_json};
use super::layer::{self, Compression};
use super::layout::{IMAGE_NAME, Layout};
use super::store::Store;
use super::unpack;
use crate::Result;

/// Splits `repo/name:tag` into (`repo/name:tag`, `tag`) for index annotations.
fn tag_of(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) if !last.contains('@') => tag,
        _ => "latest",
    }
}

/// Writes the image to an OCI layout directory, named `name`.
pub fn to_oci_dir(src: &Store, desc: &Descriptor, name: &str, dest: &Path) -> Result<()> {
    {
        let layout = Layout::open_or_create(dest)?;
        for (digest, _) in image::closure(src, desc)? {
            layout.blobs().import_from(src, &digest)?;
        }
        let mut plain = desc.clone();
        plain.set_annotations(None);
        layout.set_ref(tag_of(name), &plain, &[(IMAGE_NAME, name)])?;
    }
    // The layout's bookkeeping files are kiln's, not part of the format.
    let _ = fs::remove_dir(dest.join("ingest"));
    let _ = fs::remove_file(dest.join("lock"));
    let _ = fs::remove_file(dest.join("index.lock"));
    Ok(())
}

/// Writes the image as an OCI layout inside a tar file.
pub fn to_oci_archive(src: &Store, desc: &Descriptor, name: &str, dest: &Path) -> Result<()> {
    let mut plain = desc.clone();
    let mut ann = std::collections::HashMap::new();
    ann.insert(
        super::layout::REF_NAME.to_string(),
        tag_of(name).to_string(),
    );
    ann.insert(IMAGE_NAME.to_string(), name.to_string());
    plain.set_annotations(Some(ann));
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [plain],
    });
    write_archive(dest, |tar| {
        append_bytes(tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append_bytes(tar, "index.json", &canonical_json(&index)?)?;
        for (digest, _) in image::closure(src, desc)? {
            let mut f = src.open_blob(&digest)?;
            let len = f.metadata()?.len();
            append_reader(tar, &format!("blobs/sha256/{}", digest.hex()), len, &mut f)?;
        }
        Ok(())
    })
}

/// Writes a `docker save` archive (manifest.json, config, uncompressed
/// layer tars), which `docker load` and `podman load` read.
pub fn to_docker_archive(
    src: &Store,
    desc: &Descriptor,
    names: &[String],
    dest: &Path,
) -> Result<()> {
    let img = image::read_image(src, desc, None)?;
    let config_digest = image::desc_digest(img.manifest.config())?;
    let config_file = format!("{}.json", config_digest.hex());
    let mut layer_files = Vec::new();
    write_archive(dest, |tar| {
        append_bytes(tar, &config_file, &src.read(&config_digest)?)?;
        for (l, diff_id) in img
            .manifest
            .layers()
            .iter()
            .zip(img.config.rootfs().diff_ids())
        {
            let digest = image::desc_digest(l)?;
            let compression =
                Compression::from_media_type(l.media_type().as_ref()).with_context(|| {
                    format!(
                        "layer {digest} has an unknown media type {}",
                        l.media_type()
                    )
                })?;
            let diff: Digest = diff_id.parse()?;
            let file = format!("{}/layer.tar", diff.hex());
            // The tar header needs the size first: decompress to a temp file,
            // checking the result against the config's diff_id.
            let mut tmp = tempfile::tempfile()?;
            let mut hashed = HashingWriter::new(BufWriter::new(&mut tmp));
            io::copy(
                &mut compression.decoder(io::BufReader::new(src.open_blob(&digest)?))?,
                &mut hashed,
            )
            .with_context(|| format!("decompressing layer {digest}"))?;
            let (actual, len, buf) = hashed.finish();
            buf.into_inner().map_err(|e| e.into_error())?;
            if actual != diff {
                bail!("layer {digest} decompresses to {actual}, but the config says {diff}");
            }
            tmp.rewind()?;
            append_reader(tar, &file, len, &mut tmp)?;
            layer_files.push(file);
        }
        let repo_tags: Vec<&String> = names.iter().filter(|n| !n.contains('@')).collect();
        let manifest = serde_json::json!([{
            "Config": config_file,
            "RepoTags": repo_tags,
            "Layers": layer_files,
        }]);
        append_bytes(tar, "manifest.json", &serde_json::to_vec(&manifest)?)?;
        Ok(())
    })
}

fn write_archive(
    dest: &Path,
    body: impl FnOnce(&mut tar::Builder<&mut BufWriter<File>>) -> Result<()>,
) -> Result<()> {
    write_file(dest, |out| {
        let mut tar = tar::Builder::new(out);
        body(&mut tar)?;
        tar.finish()?;
        Ok(())
    })
}

/// Writes `dest` complete or not at all (see the module doc).
fn write_file(dest: &Path, body: impl FnOnce(&mut BufWriter<File>) -> Result<()>) -> Result<()> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    remove_stale_temp_files(&dir, STALE_AFTER);
    let pending = Pending::create(&dir)?;
    let mut out = BufWriter::new(pending.file().try_clone()?);
    body(&mut out)?;
    out.flush()?;
    out.get_ref().sync_all()?;
    drop(out);
    pending
        .persist(&dir, dest)
        .with_context(|| format!("writing {}", dest.display()))
}

/// The prefix of kiln's temp files next to an exported archive.
const TEMP_PREFIX: &str = ".kiln-export-";

/// A `.kiln-export-*` file unlocked for this long is a leftover.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// An archive being written.
enum Pending {
    /// An `O_TMPFILE` file: it has no name until [`Pending::persist`], so a
    /// killed process leaves nothing behind.
    Unnamed(File),
    /// A named temp file (filesystems without `O_TMPFILE`), locked while
    /// written so [`remove_stale_temp_files`] can tell it is in use.
    Named(tempfile::NamedTempFile),
}

impl Pending {
    fn create(dir: &Path) -> Result<Pending> {
        let unnamed = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o666)
            .open(dir);
        let file = match unnamed {
            Ok(f) => f,
            // EOPNOTSUPP/EISDIR/EINVAL: no O_TMPFILE on this filesystem.
            Err(_) => return Pending::named(dir),
        };
        // Locked too: between linkat and rename it has a temp name.
        file.lock().context("locking the export's temp file")?;
        Ok(Pending::Unnamed(file))
    }

    /// A named, locked temp file in `dir`: 0666 minus the umask, as
    /// docker and `cp` create files (tempfile's own default is 0600).
    fn named(dir: &Path) -> Result<Pending> {
        let tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .permissions(fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .with_context(|| format!("creating a temp file in {}", dir.display()))?;
        tmp.as_file()
            .lock()
            .with_context(|| format!("locking {}", tmp.path().display()))?;
        Ok(Pending::Named(tmp))
    }

    fn file(&self) -> &File {
        match self {
            Pending::Unnamed(f) => f,
            Pending::Named(t) => t.as_file(),
        }
    }

    /// Gives the complete file its name (replacing an existing `dest`).
    fn persist(self, dir: &Path, dest: &Path) -> Result<()> {
        let file = match self {
            Pending::Named(t) => {
                t.persist(dest)?;
                return Ok(());
            }
            Pending::Unnamed(f) => f,
        };
        let link = |to: &Path| {
            // linkat of /proc/self/fd/N works without privileges (the
            // AT_EMPTY_PATH form needs CAP_DAC_READ_SEARCH).
            let proc = format!("/proc/self/fd/{}", file.as_raw_fd());
            nix::unistd::linkat(
                nix::fcntl::AT_FDCWD,
                proc.as_str(),
                nix::fcntl::AT_FDCWD,
                to,
                nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
            )
        };
        match link(dest) {
            Ok(()) => {}
            Err(nix::Error::EEXIST) => {
                // Replace the old file atomically: link under a temp name
                // (locked: a concurrent export will not remove it), rename.
                let tmp = dir.join(format!(
                    "{TEMP_PREFIX}{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_nanos()
                ));
                link(&tmp).with_context(|| format!("linking {}", tmp.display()))?;
                if let Err(e) = fs::rename(&tmp, dest) {
                    let _ = fs::remove_file(&tmp);
                    return Err(e.into());
                }
            }
            Err(e) => return Err(e.into()),
        }
        File::open(dir)?.sync_all()?;
        Ok(())
    }
}

/// Removes `.kiln-export-*` files left in `dir` by killed exports: those
/// no process holds locked and older than `min_age` (a file just created
/// by another export may not be locked yet). Best effort.
fn remove_stale_temp_files(dir: &Path, min_age: Duration) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let path = e.path();
        let Ok(f) = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        let old = f
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= min_age);
        if old && f.try_lock().is_ok() && fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn header(path: &str, len: u64) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_size(len);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<()> {
    tar.append(&header(path, bytes.len() as u64)?, bytes)
        .with_context(|| format!("writing {path}"))?;
    Ok(())
}

fn append_reader<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    len: u64,
    r: &mut impl io::Read,
) -> Result<()> {
    tar.append(&header(path, len)?, io::Read::take(r, len))
        .with_context(|| format!("writing {path}"))?;
    Ok(())
}

/// Applies the image's layers in order onto `dest` (created if missing):
/// whiteouts delete, and every entry is placed inside `dest` whatever
/// symlinks the layers hold ([`super::unpack`]). Without root, owners and
/// device nodes are skipped (as `umoci unpack --rootless`).
pub fn to_rootfs_dir(src: &Store, desc: &Descriptor, dest: &Path) -> Result<()> {
    let img = image::read_image(src, desc, None)?;
    for layer in img.manifest.layers() {
        let mt = layer.media_type().to_string();
        let compression = Compression::from_media_type(&mt)
            .with_context(|| format!("layer {}: unsupported media type {mt}", layer.digest()))?;
        let digest = image::desc_digest(layer)?;
        unpack::unpack_blob(
            src,
            &digest,
            compression,
            dest,
            unpack::UnpackOptions::new(unpack::Whiteouts::Apply),
        )?;
    }
    Ok(())
}

/// The root filesystem as one tar at `dest`: unpacked next to it (same
/// filesystem, removed after), then written as canonical entries (sorted,
/// owners and times as unpacked), complete or not at all.
pub fn to_rootfs_tar(src: &Store, desc: &Descriptor, dest: &Path) -> Result<()> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-rootfs-")
        .tempdir_in(&dir)
        .with_context(|| format!("creating a temp dir in {}", dir.display()))?;
    to_rootfs_dir(src, desc, tmp.path())?;
    let scan = layer::scan_dir(tmp.path(), &layer::ScanOptions::default())?;
    let entries = layer::canonicalize(scan.entries);
    write_file(dest, |out| {
        // Times as they are (the layers already clamped them).
        layer::write_tar(out, &entries, i64::MAX)
    })
    .with_context(|| format!("writing the root filesystem to {}", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_get_the_usual_file_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        // What this process's umask makes of 0666.
        let probe = dir.path().join("probe");
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&probe)
            .unwrap();
        let want = fs::metadata(&probe).unwrap().permissions().mode() & 0o777;
        for (name, pending) in [
            ("unnamed.tar", Pending::create(dir.path()).unwrap()),
            ("named.tar", Pending::named(dir.path()).unwrap()),
        ] {
            let dest = dir.path().join(name);
            pending.persist(dir.path(), &dest).unwrap();
            let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, want, "{name}: {mode:o}");
        }
    }

    #[test]
    fn archives_appear_complete_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.tar");
        let names = || -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        // While the body runs, nothing is visible in the directory.
        write_archive(&dest, |tar| {
            append_bytes(tar, "x", &[7u8; 100_000])?;
            tar.get_mut().flush()?;
            assert!(names().is_empty(), "{:?}", names());
            Ok(())
        })
        .unwrap();
        assert_eq!(names(), ["a.tar"]);
        // Replacing an existing archive; a failing body leaves the old one.
        write_archive(&dest, |tar| append_bytes(tar, "y", b"new")).unwrap();
        let err = write_archive(&dest, |tar| {
            append_bytes(tar, "z", b"partial")?;
            bail!("interrupted")
        });
        assert!(err.is_err());
        assert_eq!(names(), ["a.tar"]);
        let mut a = tar::Archive::new(File::open(&dest).unwrap());
        let first = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(first.path().unwrap().to_str(), Some("y"));
    }

    #[test]
    fn stale_temp_files_are_removed_but_not_locked_or_fresh_ones() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        let make = |name: &str, when| {
            let p = dir.path().join(name);
            let f = File::create(&p).unwrap();
            f.set_modified(when).unwrap();
            f
        };
        drop(make(".kiln-export-stale", old));
        let held = make(".kiln-export-in-use", old);
        held.lock().unwrap();
        drop(make(".kiln-export-fresh", std::time::SystemTime::now()));
        drop(make("other.tar", old));
        assert_eq!(remove_stale_temp_files(dir.path(), STALE_AFTER), 1);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [".kiln-export-fresh", ".kiln-export-in-use", "other.tar"]
        );
        drop(held);
        assert_eq!(remove_stale_temp_files(dir.path(), STALE_AFTER), 1);
    }

    #[test]
    fn tags() {
        assert_eq!(tag_of("app:1"), "1");
        assert_eq!(tag_of("localhost:5000/app"), "latest");
        assert_eq!(tag_of("localhost:5000/app:v2"), "v2");
    }
}
