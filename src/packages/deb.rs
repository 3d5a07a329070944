//! Reading a `.deb`: an `ar` archive of `debian-binary`, `control.tar.*`
//! and `data.tar.{xz,zst,gz}` (or uncompressed). The data members become
//! layer [`Entry`] values (contents in memory or in a [`Spool`] file,
//! paths usr-merged); the control members feed the dpkg database.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};

use super::control::Paragraph;
use crate::Result;
use crate::oci::layer::{Entry, EntryKind, FileSource, Meta, normalize};
use crate::oci::spool::Spool;

/// Top-level directories that merged-/usr images make symlinks into /usr.
pub const MERGED_DIRS: &[&str] = &["bin", "lib", "lib32", "lib64", "libx32", "sbin"];

/// A parsed package.
#[derive(Debug, Clone)]
pub struct Deb {
    pub control: Paragraph,
    /// The `md5sums` control member, as shipped.
    pub md5sums: Option<String>,
    /// `conffiles` paths.
    pub conffiles: Vec<String>,
    /// Other control members (maintainer scripts, triggers, shlibs…), by name.
    pub scripts: BTreeMap<String, Vec<u8>>,
    /// Data entries with usr-merged paths.
    pub entries: Vec<Entry>,
    /// Paths as the package ships them, for dpkg's `.list` (`/.` first).
    pub list: Vec<String>,
}

impl Deb {
    /// md5 of a conffile from the md5sums member (dpkg's status lists them).
    pub fn conffile_md5(&self, path: &str) -> Option<String> {
        let rel = path.trim_start_matches('/');
        self.md5sums.as_ref().and_then(|m| {
            m.lines().find_map(|l| {
                let (sum, p) = l.split_once(char::is_whitespace)?;
                (p.trim() == rel).then(|| sum.to_string())
            })
        })
    }

    /// The bytes of a regular file the package ships (usr-merged path, no leading `/`).
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.entries.iter().find_map(|e| match &e.kind {
            EntryKind::File(FileSource::Bytes(b)) if e.path == Path::new(path) => Some(&b[..]),
            _ => None,
        })
    }
}

/// Rewrites `bin/x` to `usr/bin/x` (and the other merged dirs); `None` for
/// the merged directories themselves, which the image has as symlinks.
pub fn merge_usr(path: &Path) -> Option<PathBuf> {
    let mut comps = path.components();
    let first = comps.next()?.as_os_str().to_str().unwrap_or("");
    if MERGED_DIRS.contains(&first) {
        let rest = comps.as_path();
        if rest.as_os_str().is_empty() {
            return None;
        }
        return Some(Path::new("usr").join(first).join(rest));
    }
    Some(path.to_path_buf())
}

fn decoder<'a>(name: &str, r: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    Ok(if name.ends_with(".xz") {
        Box::new(liblzma::read::XzDecoder::new(r))
    } else if name.ends_with(".zst") {
        Box::new(zstd::stream::read::Decoder::new(r)?)
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(r))
    } else if name.ends_with(".tar") {
        Box::new(r)
    } else {
        bail!("unsupported member {name} (kiln reads .tar, .tar.gz, .tar.xz and .tar.zst)")
    })
}

/// Parses a .deb; `label` names it in errors. File contents are kept in
/// memory.
pub fn read(bytes: &[u8], label: &str) -> Result<Deb> {
    read_stream(bytes, label, None)
}

/// Parses a .deb as it is read (members are not held in memory), with the
/// file contents appended to `spool` when given, else kept in memory (a
/// package set's contents are hundreds of MB).
pub fn read_stream(r: impl Read, label: &str, mut spool: Option<&mut Spool>) -> Result<Deb> {
    let mut ar = ar::Archive::new(r);
    let mut control = None;
    let mut data = None;
    let mut seen_binary = false;
    // dpkg writes control.tar before data.tar, but neither depends on the
    // other: members are read in whatever order they come.
    while let Some(entry) = ar.next_entry() {
        let mut entry = entry.with_context(|| format!("{label}: not a valid .deb (ar archive)"))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).to_string();
        if name == "debian-binary" {
            seen_binary = true;
        } else if name.starts_with("control.tar") {
            control = Some(read_control(&mut entry, &name, label)?);
        } else if name.starts_with("data.tar") {
            data = Some(read_data(&mut entry, &name, label, spool.as_deref_mut())?);
        }
    }
    if !seen_binary {
        bail!("{label}: not a .deb (no debian-binary member)");
    }
    let (control, md5sums, conffiles, scripts) =
        control.with_context(|| format!("{label}: no control.tar member"))?;
    let (entries, list) = data.with_context(|| format!("{label}: no data.tar member"))?;
    Ok(Deb {
        control: Paragraph::new(control),
        md5sums,
        conffiles,
        scripts,
        entries,
        list,
    })
}

/// control, md5sums, conffiles, the other members.
type ControlParts = (
    String,
    Option<String>,
    Vec<String>,
    BTreeMap<String, Vec<u8>>,
);

fn read_control(r: impl Read, cname: &str, label: &str) -> Result<ControlParts> {
    let mut control = None;
    let mut md5sums = None;
    let mut conffiles = Vec::new();
    let mut scripts = BTreeMap::new();
    let mut ctar = tar::Archive::new(decoder(cname, r)?);
    for e in ctar
        .entries()
        .with_context(|| format!("{label}: reading {cname}"))?
    {
        let mut e = e.with_context(|| format!("{label}: reading {cname}"))?;
        if !e.header().entry_type().is_file() {
            continue;
        }
        let path = e
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut buf = Vec::new();
        e.read_to_end(&mut buf)?;
        match path.as_str() {
            "control" => control = Some(String::from_utf8_lossy(&buf).to_string()),
            "md5sums" => md5sums = Some(String::from_utf8_lossy(&buf).to_string()),
            "conffiles" => {
                conffiles = String::from_utf8_lossy(&buf)
                    .lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty() && !l.starts_with("remove-on-upgrade"))
                    .collect()
            }
            _ => {
                scripts.insert(path, buf);
            }
        }
    }
    let control = control.with_context(|| format!("{label}: no control file in {cname}"))?;
    Ok((control, md5sums, conffiles, scripts))
}

fn read_data(
    r: impl Read,
    dname: &str,
    label: &str,
    mut spool: Option<&mut Spool>,
) -> Result<(Vec<Entry>, Vec<String>)> {
    let mut entries = Vec::new();
    let mut list = vec!["/.".to_string()];
    let mut dtar = tar::Archive::new(decoder(dname, r)?);
    for e in dtar
        .entries()
        .with_context(|| format!("{label}: reading {dname}"))?
    {
        let mut e = e.with_context(|| format!("{label}: reading {dname}"))?;
        let raw = e.path()?.to_path_buf();
        let Ok(path) = normalize(&raw) else {
            continue; // "./" itself
        };
        list.push(format!("/{}", path.display()));
        let h = e.header();
        let meta = Meta {
            mode: h.mode()? & 0o7777,
            uid: h.uid()? as u32,
            gid: h.gid()? as u32,
            mtime: h.mtime()? as i64,
            xattrs: Vec::new(),
        };
        let et = h.entry_type();
        let kind = if et.is_dir() {
            EntryKind::Dir
        } else if et.is_symlink() {
            EntryKind::Symlink(
                e.link_name()?
                    .with_context(|| format!("{label}: symlink {} without target", raw.display()))?
                    .to_path_buf(),
            )
        } else if et.is_hard_link() {
            let t = e
                .link_name()?
                .with_context(|| format!("{label}: hard link {} without target", raw.display()))?;
            let t = normalize(&t)?;
            EntryKind::Hardlink(merge_usr(&t).unwrap_or(t))
        } else if et.is_file() {
            let size = h.size()?;
            let src = match spool.as_deref_mut() {
                Some(spool) => FileSource::Spool(
                    spool
                        .append(&mut e, size)
                        .with_context(|| format!("{label}: reading {}", raw.display()))?,
                ),
                None => {
                    let mut buf = Vec::with_capacity(size as usize);
                    e.read_to_end(&mut buf)
                        .with_context(|| format!("{label}: reading {}", raw.display()))?;
                    FileSource::Bytes(Arc::from(buf))
                }
            };
            EntryKind::File(src)
        } else {
            // Packages in main ship no devices or fifos; skip anything else.
            continue;
        };
        let Some(path) = merge_usr(&path) else {
            continue;
        };
        entries.push(Entry { path, kind, meta });
    }
    Ok((entries, list))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn usr_merge() {
        assert_eq!(
            merge_usr(Path::new("bin/sh")),
            Some(PathBuf::from("usr/bin/sh"))
        );
        assert_eq!(merge_usr(Path::new("lib64")), None);
        assert_eq!(
            merge_usr(Path::new("etc/passwd")),
            Some(PathBuf::from("etc/passwd"))
        );
        assert_eq!(
            merge_usr(Path::new("library/x")),
            Some(PathBuf::from("library/x"))
        );
    }

    /// Builds a tiny .deb in memory, as dpkg-deb lays it out.
    pub(crate) fn make_deb(control: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
        fn tar_gz(files: &[(&str, &[u8], bool)]) -> Vec<u8> {
            let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::fast(),
            ));
            for (p, data, dir) in files {
                let mut h = tar::Header::new_gnu();
                h.set_path(p).unwrap();
                h.set_mode(if *dir { 0o755 } else { 0o644 });
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(1700000000);
                h.set_size(data.len() as u64);
                h.set_entry_type(if *dir {
                    tar::EntryType::Directory
                } else {
                    tar::EntryType::Regular
                });
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            b.into_inner().unwrap().finish().unwrap()
        }
        let ctl = tar_gz(&[("./control", control.as_bytes(), false)]);
        let mut data_files: Vec<(&str, &[u8], bool)> = vec![("./", b"", true)];
        for (p, d) in files {
            data_files.push((p, d, false));
        }
        let data = tar_gz(&data_files);
        let mut out = Vec::new();
        {
            let mut ar = ar::Builder::new(&mut out);
            for (name, bytes) in [
                ("debian-binary", b"2.0\n".to_vec()),
                ("control.tar.gz", ctl),
                ("data.tar.gz", data),
            ] {
                let h = ar::Header::new(name.as_bytes().to_vec(), bytes.len() as u64);
                ar.append(&h, &bytes[..]).unwrap();
            }
        }
        out
    }

    #[test]
    fn reads_a_deb() {
        let deb = make_deb(
            "Package: hello\nVersion: 1.0\nArchitecture: amd64\n",
            &[
                ("./bin/hello", b"#!/bin/sh\n"),
                ("./etc/hello.conf", b"x=1\n"),
            ],
        );
        let d = read(&deb, "hello.deb").unwrap();
        assert_eq!(d.control.get("Package").as_deref(), Some("hello"));
        assert_eq!(d.list, vec!["/.", "/bin/hello", "/etc/hello.conf"]);
        assert_eq!(d.file("usr/bin/hello"), Some(&b"#!/bin/sh\n"[..]));
        assert!(read(b"garbage", "bad.deb").is_err());
    }
}
