//! Snapshot dirs as comparable trees, and the rule every snapshot keeps:
//! it is exactly what unpacking its blob gives.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use kiln::oci::Digest;
use kiln::oci::layer::Compression;
use kiln::oci::store::Store;
use kiln::oci::unpack::{UnpackOptions, Whiteouts, unpack_blob};

/// A tree as comparable lines: path → type, mode, owner, links, device,
/// xattrs, mtime (not for whiteouts: the unpacker makes them "now"),
/// contents (a digest past 256 bytes) or symlink target.
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let md = fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let whiteout = ft.is_char_device() && md.rdev() == 0;
            let what = if ft.is_dir() {
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("symlink → {}", fs::read_link(&p).unwrap().display())
            } else if ft.is_file() {
                let bytes = fs::read(&p).unwrap();
                if bytes.len() <= 256 {
                    format!("file {:?}", String::from_utf8_lossy(&bytes))
                } else {
                    format!("file {} bytes {}", bytes.len(), Digest::of(&bytes))
                }
            } else if whiteout {
                "whiteout".to_string()
            } else {
                format!("special {:o} rdev {}", md.mode() & 0o170000, md.rdev())
            };
            let xattrs: Vec<String> = kiln::oci::layer::read_xattrs(&p)
                .unwrap()
                .into_iter()
                .map(|(k, v)| format!("{}={}", k.to_string_lossy(), String::from_utf8_lossy(&v)))
                .collect();
            let mtime = if whiteout {
                String::new()
            } else {
                format!(" mtime {}.{:09}", md.mtime(), md.mtime_nsec())
            };
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            out.insert(
                rel,
                format!(
                    "{what} mode {:o} {}:{} nlink {} xattrs {xattrs:?}{mtime}",
                    md.mode() & 0o7777,
                    md.uid(),
                    md.gid(),
                    md.nlink()
                ),
            );
            if ft.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A snapshot dir against a fresh unpack (into `scratch`) of the blob it
/// claims to be: the snapshot's tree and the paths that differ (none when
/// it is exactly the unpack).
pub fn compare_with_unpack(
    store: &Store,
    blob: &Digest,
    compression: Compression,
    snapshot: &Path,
    scratch: &Path,
) -> (BTreeMap<String, String>, Vec<String>) {
    unpack_blob(
        store,
        blob,
        compression,
        scratch,
        UnpackOptions::new(Whiteouts::Overlay),
    )
    .unwrap();
    let (kept, want) = (tree(snapshot), tree(scratch));
    let diff = kept
        .keys()
        .chain(want.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| kept.get(*k) != want.get(*k))
        .take(20)
        .map(|k| {
            format!(
                "{k}:\n  snapshot {:?}\n  unpack   {:?}",
                kept.get(k),
                want.get(k)
            )
        })
        .collect();
    (kept, diff)
}

/// Every snapshot under `cache/snapshots` equals a fresh unpack of its
/// blob from `cache/store`, however it was made (unpacked, written with
/// its layer, a kept upper dir). Returns how many were compared.
pub fn assert_all_match_their_blobs(cache: &Path) -> usize {
    let store = Store::open(cache.join("store")).unwrap();
    let scratch = tempfile::tempdir_in(cache).unwrap();
    let mut compared = 0;
    for e in fs::read_dir(cache.join("snapshots")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let digest: Digest = format!("sha256:{name}").parse().unwrap();
        let mut magic = [0u8; 4];
        store
            .open_blob(&digest)
            .unwrap()
            .read_exact(&mut magic)
            .unwrap();
        let compression = match magic {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
            _ => Compression::None,
        };
        let fresh = scratch.path().join(&name);
        let (_, diff) = compare_with_unpack(&store, &digest, compression, &e.path(), &fresh);
        assert!(
            diff.is_empty(),
            "snapshot {name} differs from its blob:\n{}",
            diff.join("\n")
        );
        compared += 1;
    }
    compared
}
