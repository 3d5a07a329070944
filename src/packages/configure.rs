//! What Debian's maintainer scripts would leave behind, produced by kiln
//! directly and deterministically into the image's final layer.
//!
//! Running `dpkg --configure -a` needs a sandbox that can execute the
//! image's own binaries (and a `dpkg` inside the image, which `minimal`
//! does not carry); kiln's sandbox module will offer that as an optional
//! final step. Until then, and for images without dpkg, kiln emulates the
//! few scripts whose results a runtime needs:
//!
//! - merged /usr: `bin`, `sbin`, `lib`, `lib64` (amd64) as symlinks into
//!   `/usr`, as debootstrap/mmdebstrap create them (package files are
//!   already relocated by [`super::deb::merge_usr`]);
//! - `base-passwd`: `/etc/passwd` and `/etc/group` from its `*.master` files;
//! - `ca-certificates`: `/etc/ca-certificates.conf`, one
//!   `/etc/ssl/certs/NAME.pem` link per certificate and the
//!   `/etc/ssl/certs/ca-certificates.crt` bundle (what
//!   `update-ca-certificates` writes; the OpenSSL `HASH.0` links are not
//!   made: OpenSSL, curl, Python and Node read the bundle);
//! - `tzdata`: `/etc/localtime` → `Etc/UTC` and `/etc/timezone`;
//! - alternatives: `update-alternatives --install` calls are read from each
//!   `postinst` (simple variables and `for` loops are expanded) and the
//!   highest-priority alternative of each name is linked, with its state in
//!   `/var/lib/dpkg/alternatives` (so `/usr/bin/java` and `/usr/bin/php` work);
//! - `dash`: `/usr/bin/sh` → `dash` when no package ships `sh`;
//! - the `ldconfig` cache: the host's `ldconfig -r` runs over a scratch
//!   root holding the image's shared libraries (glibc's cache format is
//!   stable; the output is sorted, without timestamps). Skipped with a
//!   warning when the host cannot run it (another architecture, no
//!   privileges): the libraries live in the loader's default directories,
//!   so programs still start.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::deb::{Deb, merge_usr};
use crate::Result;
use crate::oci::layer::{Entry, EntryKind, FileSource, Meta};
use crate::progress::Progress;

fn file(path: &str, bytes: Vec<u8>, mode: u32) -> Result<Entry> {
    Entry::new(
        path,
        EntryKind::File(FileSource::Bytes(Arc::from(bytes))),
        Meta::root(mode),
    )
}

fn link(path: &str, target: &str) -> Result<Entry> {
    Entry::new(
        path,
        EntryKind::Symlink(PathBuf::from(target)),
        Meta::root(0o777),
    )
}

/// Everything the packages ship, by usr-merged path.
struct Tree<'a> {
    files: HashMap<PathBuf, &'a Entry>,
}

impl<'a> Tree<'a> {
    fn new(debs: &[&'a Deb]) -> Tree<'a> {
        let mut files = HashMap::new();
        for d in debs {
            for e in &d.entries {
                files.insert(e.path.clone(), e);
            }
        }
        Tree { files }
    }
    fn has(&self, abs: &str) -> bool {
        let p = Path::new(abs.trim_start_matches('/'));
        merge_usr(p).is_some_and(|p| self.files.contains_key(&p))
    }
    fn bytes(&self, rel: &str) -> Option<&'a [u8]> {
        match &self.files.get(Path::new(rel))?.kind {
            EntryKind::File(FileSource::Bytes(b)) => Some(&b[..]),
            _ => None,
        }
    }
}

/// The entries of the configure results.
pub fn configure(
    debs: &[&Deb],
    arch: &str,
    extra_ca: &[(String, Vec<u8>)],
    progress: &Progress,
) -> Result<Vec<Entry>> {
    let tree = Tree::new(debs);
    let names: BTreeSet<String> = debs
        .iter()
        .filter_map(|d| d.control.get("Package"))
        .collect();
    let mut out = Vec::new();
    // merged /usr
    for d in ["bin", "sbin", "lib"] {
        out.push(link(d, &format!("usr/{d}"))?);
    }
    if arch == "amd64" {
        out.push(link("lib64", "usr/lib64")?);
    }
    if !tree.has("/usr/bin/sh") && names.contains("dash") {
        out.push(link("usr/bin/sh", "dash")?);
    }
    // base-passwd
    for (master, dest, mode) in [
        ("passwd", "etc/passwd", 0o644),
        ("group", "etc/group", 0o644),
    ] {
        if let Some(b) = tree.bytes(&format!("usr/share/base-passwd/{master}.master")) {
            out.push(file(dest, b.to_vec(), mode)?);
        }
    }
    // tzdata
    if tree.has("/usr/share/zoneinfo/Etc/UTC") {
        out.push(link("etc/localtime", "/usr/share/zoneinfo/Etc/UTC")?);
        out.push(file("etc/timezone", b"Etc/UTC\n".to_vec(), 0o644)?);
    }
    out.extend(ca_certificates(&tree, extra_ca)?);
    out.extend(alternatives(debs, &tree)?);
    out.extend(ldconfig(debs, arch, progress)?);
    Ok(out)
}

/// `extra` are local certificates (name, PEM) that `update-ca-certificates`
/// would find in `/usr/local/share/ca-certificates` (a company or proxy CA):
/// they are placed there and appended to the bundle.
fn ca_certificates(tree: &Tree<'_>, extra: &[(String, Vec<u8>)]) -> Result<Vec<Entry>> {
    let mut certs: Vec<(String, &[u8])> = tree
        .files
        .keys()
        .filter_map(|p| {
            let rel = p.strip_prefix("usr/share/ca-certificates").ok()?;
            let s = rel.to_str()?;
            if !s.ends_with(".crt") {
                return None;
            }
            Some((s.to_string(), tree.bytes(p.to_str()?)?))
        })
        .collect();
    if certs.is_empty() {
        return Ok(Vec::new());
    }
    certs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut conf = String::from(
        "# Generated by kiln as update-ca-certificates would: one certificate per line,\n# relative to /usr/share/ca-certificates; '!' disables one.\n",
    );
    let mut bundle = Vec::new();
    let mut out = Vec::new();
    for (rel, pem) in &certs {
        conf.push_str(rel);
        conf.push('\n');
        bundle.extend_from_slice(pem);
        if !pem.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        let base = Path::new(rel)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("cert")
            .to_string();
        out.push(link(
            &format!("etc/ssl/certs/{base}.pem"),
            &format!("/usr/share/ca-certificates/{rel}"),
        )?);
    }
    let mut extra: Vec<&(String, Vec<u8>)> = extra.iter().collect();
    extra.sort();
    for (name, pem) in extra {
        let base = name.trim_end_matches(".crt").replace('/', "_");
        out.push(file(
            &format!("usr/local/share/ca-certificates/{base}.crt"),
            pem.clone(),
            0o644,
        )?);
        out.push(link(
            &format!("etc/ssl/certs/{base}.pem"),
            &format!("/usr/local/share/ca-certificates/{base}.crt"),
        )?);
        bundle.extend_from_slice(pem);
        if !pem.ends_with(b"\n") {
            bundle.push(b'\n');
        }
    }
    out.push(file("etc/ca-certificates.conf", conf.into_bytes(), 0o644)?);
    out.push(file("etc/ssl/certs/ca-certificates.crt", bundle, 0o644)?);
    Ok(out)
}

/// One `update-alternatives --install` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alternative {
    pub link: String,
    pub name: String,
    pub path: String,
    pub priority: i64,
    pub slaves: Vec<(String, String, String)>,
}

/// Reads the `--install` calls of a maintainer script, expanding simple
/// `var=value` assignments and `for v in …; do … done` loops.
pub fn parse_alternatives(script: &str) -> Vec<Alternative> {
    let joined = script.replace("\\\n", " ");
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut loops: Vec<(String, Vec<String>)> = Vec::new();
    let mut out = Vec::new();
    for raw in joined.lines() {
        let line = raw.trim();
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("for ") {
            let mut words = rest.split_whitespace();
            let var = words.next().unwrap_or("").to_string();
            let list: Vec<String> = words
                .skip_while(|w| *w != "in")
                .skip(1)
                .take_while(|w| !w.starts_with(';') && *w != "do")
                .map(|w| w.trim_end_matches(';'))
                .flat_map(|w| {
                    expand(w, &vars, None)
                        .split_whitespace()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect();
            loops.push((var, list));
            continue;
        }
        if line == "done" || line.starts_with("done;") || line.starts_with("done ") {
            loops.pop();
            continue;
        }
        if let Some((k, v)) = line.split_once('=')
            && !k.is_empty()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !k.starts_with(|c: char| c.is_ascii_digit())
        {
            let v = v.trim();
            let quoted = v.len() >= 2 && (v.starts_with('\'') || v.starts_with('"'));
            let v = v.trim_matches(|c| c == '\'' || c == '"');
            if !v.contains("$(") && !v.contains('`') && (quoted || !v.contains(' ')) {
                let val = expand(v, &vars, None);
                vars.insert(k.to_string(), val);
            }
            continue;
        }
        if !(line.contains("update-alternatives") && line.contains("--install")) {
            continue;
        }
        let values: Vec<Option<(String, String)>> = match loops.last() {
            Some((var, list)) => list
                .iter()
                .map(|v| Some((var.clone(), v.clone())))
                .collect(),
            None => vec![None],
        };
        for lv in values {
            let expanded = expand(line, &vars, lv.as_ref());
            if let Some(a) = parse_install(&expanded) {
                out.push(a);
            }
        }
    }
    out
}

fn expand(s: &str, vars: &HashMap<String, String>, lv: Option<&(String, String)>) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let (name, end) = if b.get(i + 1) == Some(&b'{') {
                match s[i + 2..].find('}') {
                    Some(j) => (&s[i + 2..i + 2 + j], i + 3 + j),
                    None => ("", i + 1),
                }
            } else {
                let j = s[i + 1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(s.len(), |j| i + 1 + j);
                (&s[i + 1..j], j)
            };
            if !name.is_empty() {
                if let Some((k, v)) = lv.filter(|(k, _)| k == name) {
                    let _ = k;
                    out.push_str(v);
                } else if let Some(v) = vars.get(name) {
                    out.push_str(v);
                } else {
                    // Unknown (conditionally set) variables expand to a
                    // marker so the token is dropped.
                    out.push('\u{1}');
                }
                i = end;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

fn parse_install(line: &str) -> Option<Alternative> {
    let toks: Vec<&str> = line
        .split_whitespace()
        .map(|t| t.trim_matches(|c| c == '"' || c == '\''))
        .filter(|t| !t.contains('\u{1}'))
        .collect();
    let i = toks.iter().position(|t| *t == "--install")?;
    let (link, name, path, prio) = (
        toks.get(i + 1)?,
        toks.get(i + 2)?,
        toks.get(i + 3)?,
        toks.get(i + 4)?,
    );
    let priority = prio.parse().ok()?;
    let mut slaves = Vec::new();
    let mut j = i + 5;
    while j < toks.len() {
        if toks[j] == "--slave" {
            if let (Some(l), Some(n), Some(p)) = (toks.get(j + 1), toks.get(j + 2), toks.get(j + 3))
                && l.starts_with('/')
                && p.starts_with('/')
            {
                slaves.push((l.to_string(), n.to_string(), p.to_string()));
            }
            j += 4;
        } else if toks[j].starts_with("--") || toks[j] == "||" || toks[j] == ";" || toks[j] == "&&"
        {
            break;
        } else {
            j += 1;
        }
    }
    if !link.starts_with('/') || !path.starts_with('/') {
        return None;
    }
    Some(Alternative {
        link: link.to_string(),
        name: name.to_string(),
        path: path.to_string(),
        priority,
        slaves,
    })
}

fn alternatives(debs: &[&Deb], tree: &Tree<'_>) -> Result<Vec<Entry>> {
    let mut best: BTreeMap<String, Vec<Alternative>> = BTreeMap::new();
    for d in debs {
        let Some(script) = d.scripts.get("postinst") else {
            continue;
        };
        for a in parse_alternatives(&String::from_utf8_lossy(script)) {
            if tree.has(&a.path) {
                best.entry(a.name.clone()).or_default().push(a);
            }
        }
    }
    let mut out = Vec::new();
    for (name, mut alts) in best {
        alts.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.path.cmp(&b.path))
        });
        alts.dedup_by(|a, b| a.path == b.path);
        let a = &alts[0];
        if tree.has(&a.link) {
            continue; // a package ships the link itself
        }
        let link_rel = merge_usr(Path::new(a.link.trim_start_matches('/')))
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_default();
        out.push(link(&link_rel, &format!("/etc/alternatives/{name}"))?);
        out.push(link(&format!("etc/alternatives/{name}"), &a.path)?);
        let mut state = format!("auto\n{}\n", a.link);
        for (l, n, _) in &a.slaves {
            state.push_str(&format!("{n}\n{l}\n"));
        }
        state.push('\n');
        for alt in &alts {
            state.push_str(&format!("{}\n{}\n", alt.path, alt.priority));
            for (_, n, _) in &a.slaves {
                let p = alt
                    .slaves
                    .iter()
                    .find(|s| s.1 == *n)
                    .map(|s| s.2.as_str())
                    .unwrap_or("");
                state.push_str(p);
                state.push('\n');
            }
        }
        state.push('\n');
        out.push(file(
            &format!("var/lib/dpkg/alternatives/{name}"),
            state.into_bytes(),
            0o644,
        )?);
        for (l, n, p) in &a.slaves {
            if tree.has(p) && !tree.has(l) {
                let l_rel = merge_usr(Path::new(l.trim_start_matches('/')))
                    .map(|p| p.to_string_lossy().to_string())
                    .unwrap_or_default();
                out.push(link(&l_rel, &format!("/etc/alternatives/{n}"))?);
                out.push(link(&format!("etc/alternatives/{n}"), p)?);
            }
        }
    }
    Ok(out)
}

fn is_lib(p: &Path) -> bool {
    let s = p.to_string_lossy();
    (s.starts_with("usr/lib") && (s.contains(".so"))) || s.starts_with("etc/ld.so.conf")
}

fn ldconfig(debs: &[&Deb], arch: &str, progress: &Progress) -> Result<Vec<Entry>> {
    if arch != super::repo::host_arch() {
        progress.warn(format!(
            "not building /etc/ld.so.cache: the image is {arch} and this host runs {}",
            super::repo::host_arch()
        ));
        return Ok(Vec::new());
    }
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let mut any = false;
    for d in debs {
        for e in d.entries.iter().filter(|e| is_lib(&e.path)) {
            let dest = root.join(&e.path);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            match &e.kind {
                EntryKind::File(FileSource::Bytes(b)) => {
                    std::fs::write(&dest, b)?;
                    any = true;
                }
                EntryKind::File(FileSource::Spool(span)) => {
                    std::io::copy(&mut span.reader(), &mut std::fs::File::create(&dest)?)
                        .with_context(|| {
                            format!("copying {} out for ldconfig", e.path.display())
                        })?;
                    any = true;
                }
                EntryKind::Symlink(t) => {
                    let _ = std::fs::remove_file(&dest);
                    std::os::unix::fs::symlink(t, &dest)?;
                }
                EntryKind::Dir => std::fs::create_dir_all(&dest)?,
                _ => {}
            }
        }
    }
    if !any {
        return Ok(Vec::new());
    }
    for d in ["bin", "sbin", "lib", "lib64"] {
        std::fs::create_dir_all(root.join("usr").join(d))?;
        let _ = std::os::unix::fs::symlink(format!("usr/{d}"), root.join(d));
    }
    std::fs::create_dir_all(root.join("etc"))?;
    let euid = unsafe { libc::geteuid() };
    let mut cmd = if euid == 0 {
        std::process::Command::new("ldconfig")
    } else {
        let mut c = std::process::Command::new("unshare");
        c.args(["--map-root-user", "ldconfig"]);
        c
    };
    cmd.arg("-X").arg("-r").arg(root);
    let ran = cmd.env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin").output();
    match ran {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            progress.warn(format!(
                "ldconfig failed ({}); the image has no /etc/ld.so.cache (libraries still load from the default paths)",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            return Ok(Vec::new());
        }
        Err(e) => {
            progress.warn(format!(
                "cannot run ldconfig ({e}); the image has no /etc/ld.so.cache (libraries still load from the default paths)"
            ));
            return Ok(Vec::new());
        }
    }
    let cache = std::fs::read(root.join("etc/ld.so.cache"))?;
    Ok(vec![file("etc/ld.so.cache", cache, 0o644)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternatives_with_loops_and_variables() {
        let s = "#!/bin/sh\nset -e\nbasedir=/usr/lib/jvm/java-21\npriority=2111\njre_tools='java keytool'\ncase \"$1\" in\nconfigure)\n    for i in $jre_tools; do\n\tunset slave1 || true\n        update-alternatives \\\n            --install \\\n            /usr/bin/$i \\\n            $i \\\n            $basedir/bin/$i \\\n            $priority \\\n\t    $slave1\n    done\nesac\nupdate-alternatives --quiet --install /usr/bin/php php /usr/bin/php8.4 84 --slave /usr/share/man/man1/php.1.gz php.1.gz /usr/share/man/man1/php8.4.1.gz\n";
        let a = parse_alternatives(s);
        assert_eq!(a.len(), 3, "{a:?}");
        assert_eq!(a[0].link, "/usr/bin/java");
        assert_eq!(a[0].path, "/usr/lib/jvm/java-21/bin/java");
        assert_eq!(a[0].priority, 2111);
        assert_eq!(a[1].name, "keytool");
        assert_eq!(a[2].name, "php");
        assert_eq!(a[2].slaves.len(), 1);
    }
}
