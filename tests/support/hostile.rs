//! Hostile layer tars and the canary that proves they stayed inside.
//!
//! A [`Canary`] is a temp dir holding `canary/` (a directory with a file
//! `victim` and a subdirectory, the host files an attacker aims at) and
//! `dest/` (where layers are unpacked). [`Item`]s name layer entries; the
//! symlinks that aim outside name the canary by its absolute path or by a
//! `../` chain long enough to climb from any destination to `/`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One entry of a hostile layer.
#[derive(Debug, Clone)]
pub enum Item {
    File(&'static str, &'static [u8]),
    Dir(&'static str),
    /// A directory entry with this mode (set after the layer, by the unpacker).
    DirMode(&'static str, u32),
    Symlink(&'static str, &'static str),
    /// `name` → the canary dir, absolute.
    SymlinkToCanary(&'static str),
    /// `name` → `../../…/<canary>`, relative.
    SymlinkUpToCanary(&'static str),
    /// `name` → the canary's `victim` file, absolute.
    SymlinkToCanaryVictim(&'static str),
    /// `name` is a hard link to `target` (a layer path).
    Hardlink(&'static str, &'static str),
    /// `.wh.` marker deleting `path`.
    Whiteout(&'static str),
    /// `.wh..wh..opq` in directory `dir`.
    Opaque(&'static str),
    /// A regular file with this mode (setuid, world-writable…).
    FileMode(&'static str, &'static [u8], u32),
    /// A character (`false`) or block (`true`) device node.
    Device(&'static str, bool, u32, u32),
}

pub struct Canary {
    dir: tempfile::TempDir,
    before: BTreeMap<PathBuf, String>,
}

impl Default for Canary {
    fn default() -> Self {
        Self::new()
    }
}

impl Canary {
    pub fn new() -> Canary {
        let dir = tempfile::Builder::new()
            .prefix("kiln-canary-")
            .tempdir_in(std::env::temp_dir())
            .unwrap();
        let c = dir.path().join("canary");
        fs::create_dir_all(c.join("sub")).unwrap();
        fs::write(c.join("victim"), b"host secret\n").unwrap();
        fs::write(c.join("sub/inner"), b"inner\n").unwrap();
        fs::create_dir(dir.path().join("dest")).unwrap();
        let before = observe(&c);
        Canary { dir, before }
    }

    /// The canary directory (outside every destination).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("canary")
    }

    /// Where layers are unpacked.
    pub fn dest(&self) -> PathBuf {
        self.dir.path().join("dest")
    }

    /// Panics (with `what`) unless the canary is exactly as it was made.
    pub fn assert_untouched(&self, what: &str) {
        let after = observe(&self.path());
        assert_eq!(self.before, after, "the canary changed after {what}");
    }
}

/// Every path below `root` with its type, mode, owner, mtime and content.
pub fn observe(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let what = if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
            "dir".to_string()
        } else if m.file_type().is_symlink() {
            format!("-> {}", fs::read_link(&p).unwrap().display())
        } else {
            format!("{:?}", fs::read(&p).unwrap_or_default())
        };
        out.insert(
            rel,
            format!(
                "{what} mode={:o} uid={} gid={} mtime={} nlink={}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                if m.is_dir() { 0 } else { m.nlink() }
            ),
        );
    }
    out
}

/// Enough `../` to reach `/` from any destination, then the canary.
fn up_to(target: &Path) -> String {
    "../".repeat(40) + target.strip_prefix("/").unwrap().to_str().unwrap()
}

/// The layer tar (uncompressed) of `items`, aimed at `canary`.
pub fn tar_of(items: &[Item], canary: &Canary) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let canary_dir = canary.path();
    for item in items {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        match item {
            Item::File(name, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, &data[..]).unwrap();
            }
            Item::Dir(name) | Item::DirMode(name, _) => {
                let mode = match item {
                    Item::DirMode(_, m) => *m,
                    _ => 0o755,
                };
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(mode);
                b.append_data(&mut h, name, std::io::empty()).unwrap();
            }
            Item::Symlink(name, target) => link(&mut b, h, name, Path::new(target), false),
            Item::SymlinkToCanary(name) => link(&mut b, h, name, &canary_dir, false),
            Item::SymlinkUpToCanary(name) => {
                link(&mut b, h, name, Path::new(&up_to(&canary_dir)), false)
            }
            Item::SymlinkToCanaryVictim(name) => {
                link(&mut b, h, name, &canary_dir.join("victim"), false)
            }
            Item::Hardlink(name, target) => link(&mut b, h, name, Path::new(target), true),
            Item::Whiteout(path) => {
                let p = Path::new(path);
                let marker = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => {
                        d.join(format!(".wh.{}", p.file_name().unwrap().to_str().unwrap()))
                    }
                    _ => PathBuf::from(format!(".wh.{path}")),
                };
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                b.append_data(&mut h, marker, std::io::empty()).unwrap();
            }
            Item::FileMode(name, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, &data[..]).unwrap();
            }
            Item::Device(name, block, major, minor) => {
                h.set_entry_type(if *block {
                    tar::EntryType::Block
                } else {
                    tar::EntryType::Char
                });
                h.set_mode(0o666);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                b.append_data(&mut h, name, std::io::empty()).unwrap();
            }
            Item::Opaque(dir) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                b.append_data(
                    &mut h,
                    Path::new(dir).join(".wh..wh..opq"),
                    std::io::empty(),
                )
                .unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn link(b: &mut tar::Builder<Vec<u8>>, mut h: tar::Header, name: &str, target: &Path, hard: bool) {
    h.set_entry_type(if hard {
        tar::EntryType::Link
    } else {
        tar::EntryType::Symlink
    });
    h.set_mode(0o777);
    b.append_link(&mut h, name, target).unwrap();
}

/// A static busybox at `/bin/busybox` with `/bin/sh` → it, as a layer tar:
/// the base under hostile layers, so that `kiln run` and `RUN` have
/// something to execute.
pub fn busybox_layer() -> Vec<u8> {
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static: run ./scripts/test");
    let data = fs::read(bb).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_mtime(1_000_000);
    b.append_data(&mut h, "bin", std::io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(data.len() as u64);
    h.set_mtime(1_000_000);
    b.append_data(&mut h, "bin/busybox", &data[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    h.set_mtime(1_000_000);
    b.append_link(&mut h, "bin/sh", "busybox").unwrap();
    b.into_inner().unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn config_json(layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha256_hex(l)))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// Writes an OCI image layout at `dir` with `layers` (uncompressed tars,
/// stored gzipped), its one manifest named `name` in index.json. Written
/// by hand, not by kiln: the image is the attacker's.
pub fn oci_layout(dir: &Path, layers: &[Vec<u8>], name: &str) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = sha256_hex(bytes);
        fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut descs = Vec::new();
    for l in layers {
        let (digest, size) = put(&gzip(l));
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest, "size": size,
        }));
    }
    let (cdigest, csize) = put(&config_json(layers));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": csize},
        "layers": descs,
    }))
    .unwrap();
    let (mdigest, msize) = put(&manifest);
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": mdigest, "size": msize,
                "annotations": {"org.opencontainers.image.ref.name": name},
            }],
        }))
        .unwrap(),
    )
    .unwrap();
}

/// Writes a docker archive (`docker save` format) of `layers` tagged `tag`.
pub fn docker_archive(path: &Path, layers: &[Vec<u8>], tag: &str) {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64);
        b.append_data(&mut h, name, bytes).unwrap();
    };
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let n = format!("layer{i}.tar");
        add(&n, l);
        names.push(n);
    }
    add("config.json", &config_json(layers));
    add(
        "manifest.json",
        &serde_json::to_vec(&serde_json::json!([{
            "Config": "config.json", "RepoTags": [tag], "Layers": names,
        }]))
        .unwrap(),
    );
    fs::write(path, b.into_inner().unwrap()).unwrap();
}
