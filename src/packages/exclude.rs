//! What a package image leaves out of the packages' files by default:
//! documentation, manual pages, info pages, message translations and
//! lintian overrides, as Docker's and Ubuntu's minimal images do with
//! dpkg's `path-exclude` (copyright files stay: licences require them).
//!
//! The dpkg database stays honest the way `path-exclude` leaves it: the
//! excluded paths are still listed in `info/<pkg>.list` and `.md5sums`
//! (dpkg registers them as shipped by the package) but are not in the
//! filesystem. `dpkg -l`, `dpkg -S` and scanners are unaffected; `dpkg
//! --verify` reports them missing, as on any image built with such rules.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::oci::layer::{Entry, EntryKind};

/// Trees excluded (usr-merged paths, no leading `/`), like
/// `path-exclude=/usr/share/doc/*`.
const EXCLUDED_TREES: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/lintian",
];

/// Whether `path` (usr-merged, relative) is left out of the image.
pub fn excluded(path: &Path) -> bool {
    let Some(s) = path.to_str() else {
        return false;
    };
    for tree in EXCLUDED_TREES {
        if let Some(rest) = s.strip_prefix(tree).and_then(|r| r.strip_prefix('/')) {
            // path-include=/usr/share/doc/*/copyright
            let copyright = *tree == "usr/share/doc"
                && rest.split_once('/').is_some_and(|(_, f)| f == "copyright");
            return !copyright && !rest.is_empty();
        }
    }
    // path-exclude=/usr/share/locale/*/LC_MESSAGES/*.mo: translations only;
    // locale.alias and the directory skeleton stay.
    if let Some(rest) = s.strip_prefix("usr/share/locale/") {
        let parts: Vec<&str> = rest.split('/').collect();
        return parts.len() == 3 && parts[1] == "LC_MESSAGES" && parts[2].ends_with(".mo");
    }
    false
}

/// Drops the excluded entries of one package. A directory under an
/// excluded tree stays only when something kept is inside it (the
/// `usr/share/doc/<pkg>` of a copyright file); a file that a kept hard link
/// points to stays too, so no link dangles.
pub fn filter(entries: Vec<Entry>) -> Vec<Entry> {
    let link_targets: BTreeSet<PathBuf> = entries
        .iter()
        .filter(|e| !excluded(&e.path))
        .filter_map(|e| match &e.kind {
            EntryKind::Hardlink(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    let keep = |e: &Entry| !excluded(&e.path) || link_targets.contains(&e.path);
    let mut needed_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for e in entries.iter().filter(|e| keep(e)) {
        let mut p = e.path.parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            if !needed_dirs.insert(d.to_path_buf()) {
                break;
            }
            p = d.parent();
        }
    }
    entries
        .into_iter()
        .filter(|e| keep(e) || (matches!(e.kind, EntryKind::Dir) && needed_dirs.contains(&e.path)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::layer::{FileSource, Meta};

    fn file(p: &str) -> Entry {
        Entry::new(
            p,
            EntryKind::File(FileSource::Bytes(std::sync::Arc::from(b"x".to_vec()))),
            Meta::root(0o644),
        )
        .unwrap()
    }

    fn dir(p: &str) -> Entry {
        Entry::new(p, EntryKind::Dir, Meta::root(0o755)).unwrap()
    }

    #[test]
    fn rules_follow_dpkg_path_exclude_of_minimal_images() {
        for p in [
            "usr/share/doc/nodejs/changelog.Debian.gz",
            "usr/share/doc/nodejs",
            "usr/share/man/man1/node.1.gz",
            "usr/share/info/coreutils.info.gz",
            "usr/share/lintian/overrides/libc6",
            "usr/share/locale/de/LC_MESSAGES/coreutils.mo",
        ] {
            assert!(excluded(Path::new(p)), "{p}");
        }
        for p in [
            "usr/share/doc/nodejs/copyright",
            "usr/share/doc",
            "usr/share/locale/locale.alias",
            "usr/share/locale/de/LC_MESSAGES",
            "usr/share/documentation/x",
            "usr/lib/x86_64-linux-gnu/libnode.so.115",
            "etc/man_db.conf",
        ] {
            assert!(!excluded(Path::new(p)), "{p}");
        }
    }

    #[test]
    fn filter_keeps_copyright_dirs_and_hard_link_targets() {
        let mut link = file("usr/bin/x");
        link.kind = EntryKind::Hardlink(PathBuf::from("usr/share/doc/x/x.bin"));
        let out = filter(vec![
            dir("usr/share/doc"),
            dir("usr/share/doc/x"),
            file("usr/share/doc/x/copyright"),
            file("usr/share/doc/x/README"),
            file("usr/share/doc/x/x.bin"),
            dir("usr/share/man/man1"),
            file("usr/share/man/man1/x.1.gz"),
            link,
        ]);
        let paths: Vec<&str> = out.iter().map(|e| e.path.to_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "usr/share/doc",
                "usr/share/doc/x",
                "usr/share/doc/x/copyright",
                "usr/share/doc/x/x.bin",
                "usr/bin/x"
            ]
        );
    }
}
