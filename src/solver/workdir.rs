//! WORKDIR's directory: created when missing, with every missing parent,
//! owned by the stage's current USER as Docker (BuildKit) does — so
//! `USER app` then `WORKDIR /home/app/src` gives app a directory it can
//! write to. Existing directories are left as they are.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::rootfs::{RootView, relative};
use crate::Result;
use crate::oci::layer::{Entry, EntryKind, Meta};

/// The entries that create `dir` in the stage `view` shows (none when it
/// exists), owned by `user` (`""` for root; names resolved in the stage's
/// /etc/passwd and /etc/group).
pub fn entries(view: &RootView, dir: &str, user: &str) -> Result<Vec<Entry>> {
    let (uid, gid) = if user.is_empty() {
        (0, 0)
    } else {
        let passwd = view
            .read_to_string(Path::new("/etc/passwd"))
            .unwrap_or_default();
        let group = view
            .read_to_string(Path::new("/etc/group"))
            .unwrap_or_default();
        let u = crate::sandbox::user::resolve(user, &passwd, &group)
            .with_context(|| format!("WORKDIR {dir}: USER {user}"))?;
        (u.uid, u.gid)
    };
    let mut out = Vec::new();
    let mut p = PathBuf::from("/");
    for c in relative(Path::new(dir)).components() {
        p.push(c);
        if view.lookup(&p).is_none() {
            let mut m = Meta::root(0o755);
            (m.uid, m.gid) = (uid, gid);
            out.push(Entry::new(relative(&p), EntryKind::Dir, m)?);
        }
    }
    Ok(out)
}
