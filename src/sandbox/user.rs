//! Resolving a step's `USER` (name or uid, optional group) with the image's
//! own /etc/passwd and /etc/group, as Docker does.

use anyhow::bail;

use crate::Result;

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (from /etc/group membership), primary gid first.
    pub groups: Vec<u32>,
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || l.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

/// (name, gid, members)
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || l.starts_with('#') {
            return None;
        }
        let members = f[3].split(',').filter(|m| !m.is_empty()).collect();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

/// Resolves `spec` (`name`, `uid`, `name:group`, `uid:gid`, …). `passwd` and
/// `group` are the files' contents (empty when the image has none).
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<User> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user_part.is_empty() {
        bail!("user {spec:?} is empty: give a name or uid, e.g. USER app or USER 1000:1000");
    }
    let found = passwd_entries(passwd).find(|e| e.name == user_part);
    let (uid, mut gid, home, name) = match (found, user_part.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, e.home.to_string(), Some(e.name.to_string())),
        (None, Ok(uid)) => match passwd_entries(passwd).find(|e| e.uid == uid) {
            Some(e) => (uid, e.gid, e.home.to_string(), Some(e.name.to_string())),
            // Docker allows a uid the image does not know: gid 0, home /.
            None => (uid, 0, "/".to_string(), None),
        },
        (None, Err(_)) => bail!(
            "user {user_part:?} does not exist in the image's /etc/passwd: create it first (e.g. RUN useradd {user_part}) or use a numeric uid"
        ),
    };
    if let Some(g) = group_part {
        if g.is_empty() {
            bail!("group of user {spec:?} is empty: use USER name:group or drop the colon");
        }
        gid = match group_entries(group).find(|(n, _, _)| *n == g) {
            Some((_, id, _)) => id,
            None => g.parse::<u32>().map_err(|_| {
                anyhow::anyhow!(
                    "group {g:?} does not exist in the image's /etc/group: create it first or use a numeric gid"
                )
            })?,
        };
    }
    let mut groups = vec![gid];
    if group_part.is_none()
        && let Some(name) = &name
    {
        for (_, id, members) in group_entries(group) {
            if members.contains(&name.as_str()) && !groups.contains(&id) {
                groups.push(id);
            }
        }
    }
    Ok(User {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        app:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\ndaemon:x:1:\nstaff:x:50:app,other\napp:x:1000:\n";

    #[test]
    fn names_and_ids() {
        let u = resolve("app", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/app"));
        assert_eq!(u.groups, vec![1000, 50]);
        let u = resolve("1000", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        let u = resolve("app:staff", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.groups.clone()), (1000, 50, vec![50]));
        let u = resolve("4242:4343", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 4343, "/"));
        let u = resolve("4242", "", "").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 0));
        assert_eq!(resolve("root", PASSWD, GROUP).unwrap().home, "/root");
    }

    #[test]
    fn bad_users_say_what_to_do() {
        let e = resolve("nobody-here", PASSWD, GROUP)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"nobody-here\" does not exist") && e.contains("/etc/passwd"),
            "{e}"
        );
        let e = resolve("app:nogroup", PASSWD, GROUP)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/group"), "{e}");
        assert!(resolve("", PASSWD, GROUP).is_err());
        assert!(resolve("app:", PASSWD, GROUP).is_err());
    }
}
