//! User-namespace id mappings for rootless runs: the invoking user becomes
//! root inside, and the ranges from /etc/subuid and /etc/subgid become uids
//! and gids 1… (through the setuid helpers `newuidmap`/`newgidmap`, as
//! podman and buildah do). Without ranges, only the user itself is mapped,
//! so a step cannot chown files to other users.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::Result;

/// How ids are mapped into the step's user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMap {
    /// kiln runs as root: no user namespace.
    Host,
    /// Rootless with subordinate ranges: 0 → uid/gid, 1..=count → start…
    Ranges {
        uid: u32,
        gid: u32,
        sub_uid: (u32, u32),
        sub_gid: (u32, u32),
    },
    /// Rootless without ranges: only 0 → uid/gid.
    Single { uid: u32, gid: u32 },
}

/// Finds `user`'s (name or uid) first range in a subuid/subgid file.
pub fn parse_subid(content: &str, name: &str, id: u32) -> Option<(u32, u32)> {
    content.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if who != name && who.parse::<u32>().ok() != Some(id) {
            return None;
        }
        let (start, count) = (start.parse().ok()?, count.parse::<u32>().ok()?);
        (count > 0).then_some((start, count))
    })
}

impl IdMap {
    /// The mapping for the current process: `Host` as root, else ranges
    /// from /etc/subuid and /etc/subgid when the user has both.
    pub fn detect() -> IdMap {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        if uid == 0 {
            return IdMap::Host;
        }
        let name = nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default();
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let have_helpers = Path::new("/usr/bin/newuidmap").exists() || which("newuidmap").is_some();
        match (
            parse_subid(&read("/etc/subuid"), &name, uid),
            parse_subid(&read("/etc/subgid"), &name, gid),
        ) {
            (Some(su), Some(sg)) if have_helpers => IdMap::Ranges {
                uid,
                gid,
                sub_uid: su,
                sub_gid: sg,
            },
            _ => IdMap::Single { uid, gid },
        }
    }

    pub fn is_rootless(&self) -> bool {
        !matches!(self, IdMap::Host)
    }

    /// The ids inside the namespace of a file the host sees owned by
    /// `uid:gid` (a snapshot file kiln reads from outside the step): the
    /// user's own ids are root, the subordinate ranges 1…, anything else
    /// the overflow id 65534, as the kernel shows unmapped ids.
    pub fn to_container(&self, uid: u32, gid: u32) -> (u32, u32) {
        const OVERFLOW: u32 = 65534;
        let map = |id: u32, own: u32, sub: Option<(u32, u32)>| -> u32 {
            if id == own {
                return 0;
            }
            match sub {
                Some((start, count)) if id >= start && id - start < count => id - start + 1,
                _ => OVERFLOW,
            }
        };
        match *self {
            IdMap::Host => (uid, gid),
            IdMap::Ranges {
                uid: u,
                gid: g,
                sub_uid,
                sub_gid,
            } => (map(uid, u, Some(sub_uid)), map(gid, g, Some(sub_gid))),
            IdMap::Single { uid: u, gid: g } => (map(uid, u, None), map(gid, g, None)),
        }
    }

    /// Maps the user namespace of process `pid` (which must have unshared
    /// it and be waiting).
    pub fn apply(&self, pid: i32) -> Result<()> {
        match self {
            IdMap::Host => Ok(()),
            IdMap::Ranges {
                uid,
                gid,
                sub_uid,
                sub_gid,
            } => {
                for (tool, id, (start, count)) in
                    [("newuidmap", uid, sub_uid), ("newgidmap", gid, sub_gid)]
                {
                    let out = Command::new(tool)
                        .args([pid.to_string(), "0".into(), id.to_string(), "1".into()])
                        .args(["1".to_string(), start.to_string(), count.to_string()])
                        .output()
                        .with_context(|| {
                            format!("running {tool}: install the uidmap package (apt-get install uidmap)")
                        })?;
                    if !out.status.success() {
                        bail!(
                            "{tool} {pid} failed: {}: check your ranges in /etc/subuid and /etc/subgid",
                            String::from_utf8_lossy(&out.stderr).trim()
                        );
                    }
                }
                Ok(())
            }
            IdMap::Single { uid, gid } => {
                let proc = format!("/proc/{pid}");
                std::fs::write(format!("{proc}/setgroups"), "deny")
                    .with_context(|| format!("writing {proc}/setgroups"))?;
                std::fs::write(format!("{proc}/uid_map"), format!("0 {uid} 1"))
                    .with_context(|| format!("writing {proc}/uid_map"))?;
                std::fs::write(format!("{proc}/gid_map"), format!("0 {gid} 1"))
                    .with_context(|| format!("writing {proc}/gid_map"))?;
                Ok(())
            }
        }
    }
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids_of_snapshot_files_map_back_into_the_namespace() {
        let ranges = IdMap::Ranges {
            uid: 1001,
            gid: 1002,
            sub_uid: (300000, 65536),
            sub_gid: (400000, 65536),
        };
        assert_eq!(ranges.to_container(1001, 1002), (0, 0));
        assert_eq!(ranges.to_container(300000, 400000), (1, 1));
        assert_eq!(ranges.to_container(300999, 400009), (1000, 10));
        assert_eq!(ranges.to_container(365535, 465535), (65536, 65536));
        // Past the range, or root's own files: unmapped, as the kernel shows them.
        assert_eq!(ranges.to_container(365536, 0), (65534, 65534));
        let single = IdMap::Single { uid: 1001, gid: 1001 };
        assert_eq!(single.to_container(1001, 1001), (0, 0));
        assert_eq!(single.to_container(0, 5), (65534, 65534));
        assert_eq!(IdMap::Host.to_container(1001, 5), (1001, 5));
    }

    #[test]
    fn subid_lines() {
        let f = "alice:100000:65536\n# c\nbob:165536:0\n1001:231072:65536\n";
        assert_eq!(parse_subid(f, "alice", 1000), Some((100000, 65536)));
        assert_eq!(parse_subid(f, "bob", 1002), None);
        assert_eq!(parse_subid(f, "carol", 1001), Some((231072, 65536)));
        assert_eq!(parse_subid(f, "dave", 5), None);
    }
}
