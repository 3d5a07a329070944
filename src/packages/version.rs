//! Debian version ordering (`[epoch:]upstream[-revision]`), as dpkg's
//! `verrevcmp`. Hand-written: it is ~60 lines with a fixed, documented
//! algorithm (deb-version(7)); the crates that implement it bring a deb822
//! stack kiln does not need.

use std::cmp::Ordering;
use std::fmt;

use anyhow::bail;

use crate::Result;

/// A parsed Debian version. Ordering is Debian's, equality is by ordering
/// (`1.0` == `0:1.0`).
#[derive(Clone, Debug)]
pub struct Version {
    pub epoch: u64,
    pub upstream: String,
    pub revision: String,
    text: String,
}

impl Version {
    pub fn parse(s: &str) -> Result<Version> {
        let t = s.trim();
        if t.is_empty() {
            bail!("empty version");
        }
        let (epoch, rest) = match t.split_once(':') {
            Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) && !e.is_empty() => {
                (e.parse::<u64>().unwrap_or(u64::MAX), r)
            }
            Some(_) => bail!("version {t:?} has a bad epoch (expected digits before ':')"),
            None => (0, t),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((u, r)) => (u, r),
            None => (rest, ""),
        };
        if upstream.is_empty() || !upstream.starts_with(|c: char| c.is_ascii_digit()) {
            bail!("version {t:?}: the upstream part must start with a digit");
        }
        Ok(Version {
            epoch,
            upstream: upstream.to_string(),
            revision: revision.to_string(),
            text: t.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for Version {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Version {}
impl PartialOrd for Version {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Version {
    fn cmp(&self, o: &Self) -> Ordering {
        self.epoch
            .cmp(&o.epoch)
            .then_with(|| verrevcmp(&self.upstream, &o.upstream))
            .then_with(|| verrevcmp(&self.revision, &o.revision))
    }
}

/// Compares two version strings (no parse needed), Debian order.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (Version::parse(a), Version::parse(b)) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        _ => a.cmp(b),
    }
}

fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // Non-digit prefix, compared with the `~` < end < letters < others rule.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = order(a.get(i).copied().filter(|c| !c.is_ascii_digit()));
            let bc = order(b.get(j).copied().filter(|c| !c.is_ascii_digit()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while i < a.len() && a[i].is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if i < a.len() && a[i].is_ascii_digit() {
            return Ordering::Greater;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// Whether `version` starts with the dotted prefix `want` (`20` matches
/// `20.19.2+dfsg-1`, `3.13` matches `3.13.5-2`, not `3.131`); the epoch is ignored.
pub fn matches_prefix(version: &Version, want: &str) -> bool {
    let up = version.upstream.as_str();
    match up.strip_prefix(want) {
        Some(rest) => rest.is_empty() || !rest.starts_with(|c: char| c.is_ascii_digit()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lt(a: &str, b: &str) {
        assert_eq!(compare(a, b), Ordering::Less, "{a} < {b}");
        assert_eq!(compare(b, a), Ordering::Greater, "{b} > {a}");
    }

    #[test]
    fn debian_ordering() {
        lt("1.0~rc1", "1.0");
        lt("1.0", "1.0+b1");
        lt("1.0-1", "1.0-2");
        lt("1.9", "1.10");
        lt("1.0", "1:0.1");
        lt("2.36-9", "2.36-9+deb12u4");
        lt("1.0~~", "1.0~");
        lt("1.0a", "1.0+");
        lt("20.19.2+dfsg-1", "22.0.0~dfsg-1");
        lt("3.11.2-1", "3.13.5-2");
        lt("1.2.3-1~bpo12+1", "1.2.3-1");
        assert_eq!(compare("0:1.0", "1.0"), Ordering::Equal);
        assert_eq!(compare("1.00", "1.0"), Ordering::Equal);
    }

    #[test]
    fn bad_versions() {
        assert!(Version::parse("").is_err());
        assert!(Version::parse("a:1").is_err());
        assert!(Version::parse("abc").is_err());
    }

    #[test]
    fn prefix_requests() {
        let v = Version::parse("20.19.2+dfsg-1").unwrap();
        assert!(matches_prefix(&v, "20"));
        assert!(matches_prefix(&v, "20.19"));
        assert!(!matches_prefix(&v, "2"));
        let p = Version::parse("3.13.5-2").unwrap();
        assert!(matches_prefix(&p, "3.13"));
        assert!(!matches_prefix(&p, "3.1"));
        let g = Version::parse("2:1.24~2").unwrap();
        assert!(matches_prefix(&g, "1.24"));
    }

    proptest::proptest! {
        #[test]
        fn ordering_is_antisymmetric(a in "[0-9][0-9a-z.+~]{0,8}(-[0-9a-z.+~]{1,4})?", b in "[0-9][0-9a-z.+~]{0,8}(-[0-9a-z.+~]{1,4})?") {
            proptest::prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
        }
    }
}
