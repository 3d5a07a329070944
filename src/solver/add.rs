//! ADD's local-archive rule: a source file that is a tar archive — plain,
//! gzip, bzip2, xz or zstd, recognised by content as Docker does, never by
//! name — is extracted into the destination directory instead of copied.
//! A file that only looks like one (a `.tar.gz` name, a truncated header)
//! is copied as it is, as Docker does.
//!
//! Extracted entries keep the archive's modes, owners and mtimes (Docker
//! keeps them; `--chown` and `--chmod` still apply on top). Paths are
//! cleaned and kept under the destination: `..` components are dropped, so
//! an archive cannot write outside it.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};

use crate::Result;
use crate::oci::layer::{Entry, EntryKind, FileSource, Meta};

/// The compressions Docker's `DetectCompression` knows, by magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Compression::Gzip
    } else if head.starts_with(b"BZh") {
        Compression::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

fn open(host: &Path) -> Result<(Compression, Box<dyn Read>)> {
    let mut f = File::open(host).with_context(|| format!("reading {}", host.display()))?;
    let mut head = [0u8; 6];
    let n = read_up_to(&mut f, &mut head)?;
    let kind = detect(&head[..n]);
    let f =
        BufReader::new(File::open(host).with_context(|| format!("reading {}", host.display()))?);
    let r: Box<dyn Read> = match kind {
        Compression::None => Box::new(f),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(f)),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(f)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(f)?),
    };
    Ok((kind, r))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Whether `host` is a tar archive ADD extracts: its (decompressed) start
/// is a valid tar header, as Docker's `IsArchive` checks.
pub fn is_archive(host: &Path) -> Result<bool> {
    let (kind, mut r) = open(host)?;
    let mut block = [0u8; 512];
    let n = match read_up_to(&mut r, &mut block) {
        Ok(n) => n,
        // A compressed file that does not decompress is not an archive.
        Err(_) if kind != Compression::None => return Ok(false),
        Err(e) => return Err(e),
    };
    if n < 512 {
        return Ok(false);
    }
    Ok(tar_header_ok(&block))
}

/// A tar header with a valid checksum (the sum of its bytes, the checksum
/// field counted as spaces).
fn tar_header_ok(block: &[u8; 512]) -> bool {
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .map(|b| *b as char)
        .collect();
    let Ok(stored) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                b' ' as u32
            } else {
                *b as u32
            }
        })
        .sum();
    sum == stored
}

/// `name` inside `dest`, with `.`/`..`/root components dropped.
fn under(dest: &Path, name: &Path) -> Option<PathBuf> {
    let mut p = dest.to_path_buf();
    let mut any = false;
    for c in name.components() {
        if let Component::Normal(n) = c {
            p.push(n);
            any = true;
        }
    }
    any.then_some(p)
}

/// The entries of the archive at `host`, placed under `dest` (absolute in
/// the image). `label` names the source in errors.
pub fn extract(host: &Path, dest: &Path, label: &str) -> Result<Vec<Entry>> {
    let (_, r) = open(host)?;
    let mut ar = tar::Archive::new(r);
    let mut out = Vec::new();
    let entries = ar
        .entries()
        .with_context(|| format!("ADD {label}: reading the archive"))?;
    for e in entries {
        let mut e = e.with_context(|| format!("ADD {label}: reading the archive"))?;
        let name = e.path()?.into_owned();
        let Some(path) = under(dest, &name) else {
            continue;
        };
        let h = e.header();
        let meta = Meta {
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            uid: h.uid().unwrap_or(0) as u32,
            gid: h.gid().unwrap_or(0) as u32,
            mtime: h.mtime().unwrap_or(0) as i64,
            xattrs: Vec::new(),
        };
        let t = h.entry_type();
        let kind = if t.is_dir() {
            EntryKind::Dir
        } else if t.is_symlink() {
            let target = e.link_name()?.with_context(|| {
                format!("ADD {label}: symlink {} has no target", name.display())
            })?;
            EntryKind::Symlink(target.into_owned())
        } else if t.is_hard_link() {
            let target = e.link_name()?.with_context(|| {
                format!("ADD {label}: hard link {} has no target", name.display())
            })?;
            let Some(t) = under(dest, &target) else {
                bail!(
                    "ADD {label}: hard link {} points at {}",
                    name.display(),
                    target.display()
                );
            };
            EntryKind::Hardlink(super::rootfs::relative(&t))
        } else if t.is_character_special() || t.is_block_special() {
            let major = h.device_major()?.unwrap_or(0);
            let minor = h.device_minor()?.unwrap_or(0);
            if t.is_character_special() {
                EntryKind::CharDevice { major, minor }
            } else {
                EntryKind::BlockDevice { major, minor }
            }
        } else if t.is_fifo() {
            EntryKind::Fifo
        } else if t.is_file() || t == tar::EntryType::Continuous {
            let mut bytes = Vec::with_capacity(e.size() as usize);
            e.read_to_end(&mut bytes)
                .with_context(|| format!("ADD {label}: reading {}", name.display()))?;
            EntryKind::File(FileSource::Bytes(Arc::from(bytes)))
        } else {
            // pax/GNU metadata records are consumed by the tar reader.
            continue;
        };
        out.push(Entry::new(super::rootfs::relative(&path), kind, meta)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o640);
        h.set_uid(7);
        h.set_gid(8);
        h.set_mtime(1_000_000);
        h.set_cksum();
        b.append_data(&mut h, "inner/a.txt", &b"a\n"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_link_name("inner/a.txt").unwrap();
        // The tar crate refuses to write `..`; hostile archives have it.
        h.as_old_mut().name[..12].copy_from_slice(b"../../escape");
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
        b.into_inner().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn every_compression_is_recognised_by_content_and_extracted() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let raw = tarball();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&raw).unwrap();
        let zst = zstd::encode_all(&raw[..], 1).unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&raw).unwrap();
        let bz = bz.finish().unwrap();
        // Names lie on purpose: detection is by content.
        for (name, bytes) in [
            ("plain.bin", raw.clone()),
            ("gz.txt", gz.finish().unwrap()),
            ("xz", xz.finish().unwrap()),
            ("zst", zst),
            ("bz", bz),
        ] {
            let p = write(dir.path(), name, &bytes);
            assert!(is_archive(&p).unwrap(), "{name}");
            let es = extract(&p, Path::new("/x"), name).unwrap();
            assert_eq!(es.len(), 2, "{name}");
            assert_eq!(es[0].path, Path::new("x/inner/a.txt"));
            assert_eq!(
                (es[0].meta.mode, es[0].meta.uid, es[0].meta.gid),
                (0o640, 7, 8)
            );
            assert_eq!(es[0].meta.mtime, 1_000_000);
            assert_eq!(
                es[0].kind,
                EntryKind::File(FileSource::Bytes(Arc::from(&b"a\n"[..])))
            );
            // `..` cannot climb out of the destination.
            assert_eq!(es[1].path, Path::new("x/escape"));
        }
    }

    #[test]
    fn files_that_only_look_like_archives_are_not() {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [
            ("empty.tar", Vec::new()),
            ("text.tar.gz", b"hello\n".to_vec()),
            ("bad-gzip.tgz", vec![0x1f, 0x8b, 0x08, 0, 1, 2, 3]),
            ("zeros.tar", vec![0u8; 1024]),
        ] {
            let p = write(dir.path(), name, &bytes);
            assert!(!is_archive(&p).unwrap(), "{name}");
        }
    }
}
