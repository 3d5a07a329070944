//! A read-only union view of an image's layers as overlay lower dirs
//! (snapshots), bottom-most first: what `COPY --from` reads and where
//! `--chown` names are resolved, without mounting anything.
//!
//! The rules are overlayfs's: an upper entry hides lower ones; a 0/0
//! character device is a whiteout; a directory with
//! `trusted.overlay.opaque=y` hides everything below it in lower layers.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};

use crate::Result;
use crate::sandbox::capture::is_whiteout;

#[derive(Debug, Clone)]
pub struct RootView {
    /// Bottom-most first.
    lowers: Vec<PathBuf>,
}

fn is_opaque(p: &Path) -> bool {
    crate::oci::layer::read_xattrs(p)
        .map(|x| {
            x.iter()
                .any(|(k, v)| k == "trusted.overlay.opaque" && v == b"y")
        })
        .unwrap_or(false)
}

impl RootView {
    pub fn new(lowers: Vec<PathBuf>) -> RootView {
        RootView { lowers }
    }

    /// The host path of `path` (absolute or relative to the root) in the
    /// topmost layer that has it, not following a final symlink.
    pub fn lookup(&self, path: &Path) -> Option<PathBuf> {
        let rel = relative(path);
        'layers: for layer in self.lowers.iter().rev() {
            // Is any ancestor hidden or opaque in this layer?
            let mut cur = layer.clone();
            let comps: Vec<_> = rel.components().collect();
            for (i, c) in comps.iter().enumerate() {
                cur.push(c);
                match fs::symlink_metadata(&cur) {
                    Ok(m) if is_whiteout(&m) => return None,
                    Ok(m) if i + 1 == comps.len() => {
                        let _ = m;
                        return Some(cur);
                    }
                    Ok(m) if m.is_dir() => {
                        if is_opaque(&cur) {
                            // Lower layers are hidden below this directory.
                            let rest: PathBuf = comps[i + 1..].iter().collect();
                            let found = cur.join(rest);
                            return fs::symlink_metadata(&found)
                                .ok()
                                .filter(|m| !is_whiteout(m))
                                .map(|_| found);
                        }
                    }
                    Ok(_) => return None, // a file where a directory is needed
                    Err(_) => continue 'layers,
                }
            }
            if comps.is_empty() {
                return Some(layer.clone());
            }
        }
        None
    }

    /// Resolves symlinks inside the view (absolute targets are view-relative).
    pub fn resolve(&self, path: &Path) -> Result<PathBuf> {
        let mut out = PathBuf::new();
        let mut todo: Vec<OsString> = relative(path)
            .components()
            .rev()
            .map(|c| c.as_os_str().to_owned())
            .collect();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if c == ".." {
                out.pop();
                continue;
            }
            let next = out.join(&c);
            match self
                .lookup(&next)
                .and_then(|h| fs::symlink_metadata(&h).ok().map(|m| (h, m)))
            {
                Some((host, m)) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > 40 {
                        bail!(
                            "too many levels of symbolic links resolving {}",
                            path.display()
                        );
                    }
                    let target = fs::read_link(&host)?;
                    if target.is_absolute() {
                        out = PathBuf::new();
                    }
                    for t in target.components().rev() {
                        match t {
                            Component::Normal(n) => todo.push(n.to_owned()),
                            Component::ParentDir => todo.push("..".into()),
                            _ => {}
                        }
                    }
                }
                _ => out = next,
            }
        }
        Ok(out)
    }

    /// The merged entries of a directory: name → host path.
    pub fn read_dir(&self, path: &Path) -> Result<BTreeMap<OsString, PathBuf>> {
        let rel = relative(path);
        let mut out: BTreeMap<OsString, PathBuf> = BTreeMap::new();
        let mut hidden: Vec<OsString> = Vec::new();
        for layer in self.lowers.iter().rev() {
            let dir = layer.join(&rel);
            let Ok(m) = fs::symlink_metadata(&dir) else {
                continue;
            };
            if is_whiteout(&m) || !m.is_dir() {
                break;
            }
            for e in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
                let e = e?;
                let name = e.file_name();
                if out.contains_key(&name) || hidden.contains(&name) {
                    continue;
                }
                let m = e.metadata()?;
                if is_whiteout(&m) {
                    hidden.push(name);
                } else {
                    out.insert(name, e.path());
                }
            }
            if is_opaque(&dir) {
                break;
            }
        }
        Ok(out)
    }

    /// Reads a whole (small) file of the view, e.g. /etc/passwd.
    pub fn read_to_string(&self, path: &Path) -> Option<String> {
        let resolved = self.resolve(path).ok()?;
        fs::read_to_string(self.lookup(&resolved)?).ok()
    }
}

/// `/a/b` → `a/b`, dropping `.` and leading `/`.
pub(super) fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
}
