//! The Debian packages of a composed package set, as the SBOM lists them:
//! the `kiln.lock` entry (version, architecture, `.deb` sha256 from the
//! signed index), the source package from the control data kiln wrote to
//! `/var/lib/dpkg/status`, the layer that holds the package, and its
//! licenses when `/usr/share/doc/PKG/copyright` is machine-readable
//! (DEP-5), mapped to SPDX identifiers.
//!
//! Files are read from the layers' snapshot directories (what the build
//! composed, unpacked), never following a symlink out of them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use super::DebPackage;
use crate::packages::compose::PackageLayer;
use crate::packages::lock::Lockfile;

/// The largest `copyright`/`status` file read (a status of 1000 packages
/// is ~3 MB).
const MAX_FILE: u64 = 32 << 20;

/// The packages of a set composed into `layers` (their snapshot dirs in
/// `dirs`, same order, bottom first).
pub fn packages(lock: &Lockfile, layers: &[PackageLayer], dirs: &[PathBuf]) -> Vec<DebPackage> {
    let status = read_in_layers(dirs, "var/lib/dpkg/status")
        .map(|b| sources(&String::from_utf8_lossy(&b)))
        .unwrap_or_default();
    let mut layer_of = BTreeMap::new();
    for l in layers {
        for p in &l.packages {
            layer_of.insert(p.as_str(), l.blob.to_string());
        }
    }
    let distro = distro(&lock.suite);
    let mut out: Vec<DebPackage> = lock
        .packages
        .iter()
        .map(|p| {
            let (source, source_version) = status
                .get(&p.name)
                .cloned()
                .unwrap_or_else(|| (p.name.clone(), p.version.clone()));
            let license = copyright(dirs, &p.name).and_then(|t| license_expression(&t));
            DebPackage {
                name: p.name.clone(),
                version: p.version.clone(),
                arch: p.arch.clone(),
                source,
                source_version,
                sha256: p.sha256.clone(),
                size: p.size,
                archive: p.archive.clone(),
                filename: p.filename.clone(),
                distro: distro.clone(),
                license,
                // A package with no files of its own shares the database layer.
                layer: layer_of
                    .get(p.name.as_str())
                    .cloned()
                    .or_else(|| layers.last().map(|l| l.blob.to_string()))
                    .unwrap_or_default(),
            }
        })
        .collect();
    out.sort();
    out
}

/// The purl `distro` qualifier of a suite.
pub fn distro(suite: &str) -> String {
    match suite {
        "bookworm" => "debian-12".into(),
        "trixie" => "debian-13".into(),
        "forky" => "debian-14".into(),
        other => format!("debian-{other}"),
    }
}

/// Package → (source, source version) from a dpkg `status` file.
/// `Source: name (version)` names a version other than the package's.
pub fn sources(status: &str) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for para in status.split("\n\n") {
        let (mut name, mut version, mut source) = (None, None, None);
        for line in para.lines() {
            if let Some(v) = line.strip_prefix("Package:") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Version:") {
                version = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Source:") {
                source = Some(v.trim().to_string());
            }
        }
        let (Some(name), Some(version)) = (name, version) else {
            continue;
        };
        let (src, src_version) = match source {
            Some(s) => match s.split_once(" (") {
                Some((n, v)) => (n.to_string(), v.trim_end_matches(')').to_string()),
                None => (s, version.clone()),
            },
            None => (name.clone(), version.clone()),
        };
        out.insert(name, (src, src_version));
    }
    out
}

/// The text of `/usr/share/doc/PKG/copyright` (following the doc dir's
/// link to another package's, as Debian allows for packages of one source).
fn copyright(dirs: &[PathBuf], package: &str) -> Option<String> {
    let rel = format!("usr/share/doc/{package}/copyright");
    if let Some(b) = read_in_layers(dirs, &rel) {
        return Some(String::from_utf8_lossy(&b).into_owned());
    }
    let doc = format!("usr/share/doc/{package}");
    let target = dirs
        .iter()
        .rev()
        .find_map(|d| std::fs::read_link(d.join(&doc)).ok())?;
    let target = target.to_str()?;
    if target.contains('/') || target.starts_with('.') {
        return None;
    }
    read_in_layers(dirs, &format!("usr/share/doc/{target}/copyright"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A regular file at `rel` in the topmost layer dir that has it. Every
/// component must be a real directory (no symlinks), and the file is
/// opened with `O_NOFOLLOW`, so nothing outside the snapshots is read.
fn read_in_layers(dirs: &[PathBuf], rel: &str) -> Option<Vec<u8>> {
    dirs.iter().rev().find_map(|d| read_in(d, rel))
}

fn read_in(dir: &Path, rel: &str) -> Option<Vec<u8>> {
    let parts: Vec<&str> = rel.split('/').collect();
    let mut at = dir.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let meta = std::fs::symlink_metadata(&at).ok()?;
        let last = i + 1 == parts.len();
        if (last && !meta.is_file()) || (!last && !meta.is_dir()) {
            return None;
        }
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&at)
        .ok()?;
    let mut out = Vec::new();
    f.take(MAX_FILE).read_to_end(&mut out).ok()?;
    Some(out)
}

/// The SPDX license expression of a machine-readable copyright file: its
/// distinct `License:` short names, mapped to SPDX identifiers (others
/// become `LicenseRef-…`), joined with `AND`. `None` when the file is
/// not machine-readable (NOASSERTION).
pub fn license_expression(copyright: &str) -> Option<String> {
    let mut lines = copyright.lines();
    let first = lines.by_ref().find(|l| !l.trim().is_empty())?;
    let (field, value) = first.split_once(':')?;
    if !field.eq_ignore_ascii_case("format")
        || !(value.contains("copyright-format") || value.contains("dep5") || value.contains("DEP5"))
    {
        return None;
    }
    let mut exprs = BTreeSet::new();
    for line in copyright.lines() {
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        if line.starts_with([' ', '\t']) || !field.eq_ignore_ascii_case("license") {
            continue;
        }
        let value = value.trim();
        if !value.is_empty() {
            exprs.insert(dep5_expression(value));
        }
    }
    if exprs.is_empty() {
        return None;
    }
    let n = exprs.len();
    Some(
        exprs
            .into_iter()
            .map(|e| {
                if n > 1 && e.contains(' ') {
                    format!("({e})")
                } else {
                    e
                }
            })
            .collect::<Vec<_>>()
            .join(" AND "),
    )
}

/// One `License:` value (`GPL-2+ or Artistic`) as an SPDX expression.
/// DEP-5's `and`/`or`/`|` map to `AND`/`OR`; anything more (commas,
/// parentheses, `with … exception`) becomes one `LicenseRef-`.
pub fn dep5_expression(value: &str) -> String {
    if value.contains([',', '(', ')']) || value.to_ascii_lowercase().contains(" with ") {
        return license_ref(value);
    }
    let mut out = Vec::new();
    for word in value.split_whitespace() {
        match word.to_ascii_lowercase().as_str() {
            "or" | "|" => out.push("OR".to_string()),
            "and" | "&" => out.push("AND".to_string()),
            _ => out.push(spdx_id(word)),
        }
    }
    // A dangling operator is not an expression: keep the text as one ref.
    let bad = out.first().is_some_and(|w| w == "OR" || w == "AND")
        || out.last().is_some_and(|w| w == "OR" || w == "AND")
        || out
            .windows(2)
            .any(|w| (w[0] == "OR" || w[0] == "AND") == (w[1] == "OR" || w[1] == "AND"));
    if bad {
        license_ref(value)
    } else {
        out.join(" ")
    }
}

/// DEP-5 short names (and the SPDX ids Debian also writes) → SPDX ids.
const SPDX: &[(&str, &str)] = &[
    ("gpl-1", "GPL-1.0-only"),
    ("gpl-1+", "GPL-1.0-or-later"),
    ("gpl-2", "GPL-2.0-only"),
    ("gpl-2+", "GPL-2.0-or-later"),
    ("gpl-3", "GPL-3.0-only"),
    ("gpl-3+", "GPL-3.0-or-later"),
    ("lgpl-2", "LGPL-2.0-only"),
    ("lgpl-2+", "LGPL-2.0-or-later"),
    ("lgpl-2.1", "LGPL-2.1-only"),
    ("lgpl-2.1+", "LGPL-2.1-or-later"),
    ("lgpl-3", "LGPL-3.0-only"),
    ("lgpl-3+", "LGPL-3.0-or-later"),
    ("agpl-3", "AGPL-3.0-only"),
    ("agpl-3+", "AGPL-3.0-or-later"),
    ("gfdl-1.2", "GFDL-1.2-only"),
    ("gfdl-1.2+", "GFDL-1.2-or-later"),
    ("gfdl-1.3", "GFDL-1.3-only"),
    ("gfdl-1.3+", "GFDL-1.3-or-later"),
    ("expat", "MIT"),
    ("mit", "MIT"),
    ("x11", "X11"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("0bsd", "0BSD"),
    ("isc", "ISC"),
    ("apache-2", "Apache-2.0"),
    ("apache-2.0", "Apache-2.0"),
    ("mpl-1.1", "MPL-1.1"),
    ("mpl-2.0", "MPL-2.0"),
    ("zlib", "Zlib"),
    ("artistic", "Artistic-1.0-Perl"),
    ("artistic-1.0", "Artistic-1.0"),
    ("artistic-2.0", "Artistic-2.0"),
    ("cc0", "CC0-1.0"),
    ("cc0-1.0", "CC0-1.0"),
    ("cc-by-3.0", "CC-BY-3.0"),
    ("cc-by-4.0", "CC-BY-4.0"),
    ("cc-by-sa-3.0", "CC-BY-SA-3.0"),
    ("cc-by-sa-4.0", "CC-BY-SA-4.0"),
    ("psf-2", "PSF-2.0"),
    ("python-2.0", "Python-2.0"),
    ("openssl", "OpenSSL"),
    ("unicode-dfs-2016", "Unicode-DFS-2016"),
    ("curl", "curl"),
    ("bsl-1.0", "BSL-1.0"),
    ("boost-1.0", "BSL-1.0"),
    ("wtfpl", "WTFPL"),
    ("unlicense", "Unlicense"),
    ("fsfap", "FSFAP"),
    ("fsful", "FSFUL"),
    ("fsfullr", "FSFULLR"),
    ("ofl-1.1", "OFL-1.1"),
    ("ipa", "IPA"),
    ("epl-1.0", "EPL-1.0"),
    ("epl-2.0", "EPL-2.0"),
];

fn spdx_id(short: &str) -> String {
    let lower = short.to_ascii_lowercase();
    // Debian also writes SPDX's own forms (`GPL-2.0-only`, `LGPL-2.1-or-later`).
    for family in ["GPL", "LGPL", "AGPL", "GFDL"] {
        let l = family.to_ascii_lowercase();
        for suffix in ["-only", "-or-later"] {
            if let Some(v) = lower
                .strip_prefix(&format!("{l}-"))
                .and_then(|r| r.strip_suffix(suffix))
                && !v.is_empty()
                && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            {
                return format!("{family}-{v}{suffix}");
            }
        }
    }
    // `GPL-2.0+` and `GPL-2+` are the same licence.
    let key = lower.replace(".0+", "+");
    let key = if key.ends_with(".0") && key.starts_with(['g', 'l', 'a']) {
        key.trim_end_matches(".0").to_string()
    } else {
        key
    };
    SPDX.iter()
        .find(|(k, _)| *k == key || *k == lower)
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| license_ref(short))
}

/// `LicenseRef-` + the text with every character outside `[A-Za-z0-9.-]`
/// as `-` (SPDX's idstring).
pub fn license_ref(text: &str) -> String {
    format!("LicenseRef-{}", super::spdx::idstring(text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep5_licenses_become_one_spdx_expression() {
        let text = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: x\n\nFiles: *\nCopyright: 2000 A\nLicense: GPL-2+\n\nFiles: lib/*\nLicense: LGPL-2.1+ or Artistic\n\nLicense: GPL-2+\n On Debian systems, see /usr/share/common-licenses/GPL-2.\n License: not a field\n\nFiles: y\nLicense: public-domain\n";
        assert_eq!(
            license_expression(text).as_deref(),
            Some(
                "GPL-2.0-or-later AND (LGPL-2.1-or-later OR Artistic-1.0-Perl) AND LicenseRef-public-domain"
            )
        );
        assert_eq!(
            license_expression("Format: http://dep.debian.net/deps/dep5\nLicense: Expat\n")
                .as_deref(),
            Some("MIT")
        );
    }

    #[test]
    fn free_form_copyright_files_are_noassertion() {
        assert_eq!(
            license_expression("This is the Debian package of foo.\nLicense: GPL\n"),
            None
        );
        assert_eq!(license_expression(""), None);
    }

    #[test]
    fn odd_values_become_license_refs() {
        assert_eq!(
            dep5_expression("GPL-3+ with GCC-runtime-library exception"),
            "LicenseRef-GPL-3--with-GCC-runtime-library-exception"
        );
        assert_eq!(dep5_expression("GPL-2.0+"), "GPL-2.0-or-later");
        assert_eq!(dep5_expression("LGPL-2.1"), "LGPL-2.1-only");
        assert_eq!(dep5_expression("GPL-2.0-only"), "GPL-2.0-only");
        assert_eq!(dep5_expression("lgpl-2.1-or-later"), "LGPL-2.1-or-later");
        assert_eq!(dep5_expression("or MIT"), "LicenseRef-or-MIT");
        assert_eq!(
            dep5_expression("BSD-3-clause | Expat"),
            "BSD-3-Clause OR MIT"
        );
    }

    #[test]
    fn status_gives_source_packages_and_their_versions() {
        let s = "Package: libc6\nStatus: install ok installed\nSource: glibc\nVersion: 2.41-12\n\nPackage: libgcc-s1\nSource: gcc-14 (14.2.0-19)\nVersion: 14.2.0-19+b1\n\nPackage: dash\nVersion: 0.5.12-12\n";
        let m = sources(s);
        assert_eq!(m["libc6"], ("glibc".into(), "2.41-12".into()));
        assert_eq!(m["libgcc-s1"], ("gcc-14".into(), "14.2.0-19".into()));
        assert_eq!(m["dash"], ("dash".into(), "0.5.12-12".into()));
    }

    #[test]
    fn symlinks_out_of_the_layer_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let secret = d.path().join("secret");
        std::fs::write(&secret, "host file").unwrap();
        let layer = d.path().join("layer");
        std::fs::create_dir_all(layer.join("usr/share/doc/a")).unwrap();
        std::os::unix::fs::symlink(&secret, layer.join("usr/share/doc/a/copyright")).unwrap();
        std::os::unix::fs::symlink(d.path(), layer.join("usr/share/doc/b")).unwrap();
        std::fs::create_dir_all(layer.join("usr/share/doc/c")).unwrap();
        std::fs::write(
            layer.join("usr/share/doc/c/copyright"),
            "Format: copyright-format\nLicense: MIT\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("c", layer.join("usr/share/doc/d")).unwrap();
        let dirs = vec![layer];
        assert_eq!(copyright(&dirs, "a"), None);
        assert_eq!(read_in_layers(&dirs, "usr/share/doc/b/../secret"), None);
        assert_eq!(copyright(&dirs, "b"), None);
        assert!(copyright(&dirs, "d").unwrap().contains("MIT"));
    }
}
