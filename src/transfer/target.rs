//! `ssh://[USER@]HOST[:PORT][/PATH]` targets.

use anyhow::{Context, bail};

use crate::Result;

/// Where an image goes: a host reached with the system `ssh`, and the OCI
/// layout on it (None: the remote user's kiln image store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: Option<String>,
    /// A host name, an address, or an alias from the ssh config.
    pub host: String,
    pub port: Option<u16>,
    /// Absolute path of the image layout on the server.
    pub path: Option<String>,
}

/// The remote store when the URL gives no path, expanded by the server's
/// shell (so it is the remote user's data dir, not ours).
pub const DEFAULT_REMOTE_STORE: &str = "${XDG_DATA_HOME:-$HOME/.local/share}/kiln/images";

impl SshTarget {
    /// Parses `ssh://[USER@]HOST[:PORT][/PATH]`; `HOST` may be `[v6addr]`.
    pub fn parse(url: &str) -> Result<SshTarget> {
        let usage =
            "expected ssh://[USER@]HOST[:PORT][/PATH], e.g. ssh://deploy@web1:2222/srv/images";
        let rest = url
            .strip_prefix("ssh://")
            .with_context(|| format!("{url:?} is not an ssh:// URL: {usage}"))?;
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            bail!("{url:?}: ssh URLs cannot contain spaces or control characters ({usage})");
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => {
                if u.is_empty() {
                    bail!("{url:?}: empty user name before '@' ({usage})");
                }
                if u.starts_with('-') || u.contains([':', '@']) {
                    bail!("{url:?}: invalid user name {u:?} ({usage})");
                }
                (Some(u.to_string()), h)
            }
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .with_context(|| format!("{url:?}: unclosed '[' in the host ({usage})"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .with_context(|| format!("{url:?}: junk after ']' ({usage})"))?,
                ),
            };
            (h, port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            bail!("{url:?}: no host ({usage})");
        }
        // A host starting with '-' would be read by ssh as an option.
        if host.starts_with('-')
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'))
        {
            bail!("{url:?}: invalid host {host:?} ({usage})");
        }
        let port = match port {
            None => None,
            Some(p) => {
                let n: u16 = p.parse().ok().filter(|n| *n > 0).with_context(|| {
                    format!("{url:?}: invalid port {p:?}: give a number from 1 to 65535")
                })?;
                Some(n)
            }
        };
        let path = match path {
            None | Some("/") => None,
            Some(p) => {
                if p.split('/').any(|seg| seg == "..") {
                    bail!("{url:?}: the path cannot contain '..'");
                }
                Some(p.trim_end_matches('/').to_string())
            }
        };
        Ok(SshTarget {
            user,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// True for strings this parser should handle (`kiln push NAME ssh://…`).
    pub fn is_ssh_url(s: &str) -> bool {
        s.starts_with("ssh://")
    }
}

impl std::fmt::Display for SshTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ssh://")?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            write!(f, "{}", self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if let Some(p) = &self.path {
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(url: &str) -> SshTarget {
        SshTarget::parse(url).unwrap()
    }

    #[test]
    fn full_url() {
        let x = t("ssh://deploy@web1.example:2222/srv/images/");
        assert_eq!(x.user.as_deref(), Some("deploy"));
        assert_eq!(x.host, "web1.example");
        assert_eq!(x.port, Some(2222));
        assert_eq!(x.path.as_deref(), Some("/srv/images"));
        assert_eq!(x.to_string(), "ssh://deploy@web1.example:2222/srv/images");
    }

    #[test]
    fn host_only_and_aliases() {
        let x = t("ssh://web1");
        assert_eq!((x.user, x.port, x.path), (None, None, None));
        assert_eq!(t("ssh://web1/").path, None);
        assert_eq!(t("ssh://my_alias").host, "my_alias");
    }

    #[test]
    fn ipv6() {
        let x = t("ssh://root@[::1]:22/x");
        assert_eq!(x.host, "::1");
        assert_eq!(x.port, Some(22));
        assert_eq!(x.to_string(), "ssh://root@[::1]:22/x");
        assert_eq!(t("ssh://[fe80::1]").port, None);
    }

    #[test]
    fn malformed() {
        for (url, needle) in [
            ("web1", "not an ssh:// URL"),
            ("http://web1", "not an ssh:// URL"),
            ("ssh://", "no host"),
            ("ssh:///path", "no host"),
            ("ssh://@web1", "empty user"),
            ("ssh://web1:0", "invalid port"),
            ("ssh://web1:99999", "invalid port"),
            ("ssh://web1:ab", "invalid port"),
            ("ssh://-oProxyCommand=x", "invalid host"),
            ("ssh://web1;rm", "invalid host"),
            ("ssh://[::1", "unclosed"),
            ("ssh://[::1]x", "junk"),
            ("ssh://web1/a/../b", "'..'"),
            ("ssh://web1/a b", "spaces"),
            ("ssh://-u@web1", "invalid user"),
        ] {
            let e = format!("{:#}", SshTarget::parse(url).unwrap_err());
            assert!(e.contains(needle), "{url}: {e}");
        }
    }
}
