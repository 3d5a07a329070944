//! Image references, parsed the way docker (`distribution/reference`) does.
//!
//! `[HOST[:PORT]/]PATH[:TAG][@DIGEST]`. The first path component is a host
//! when it contains a `.` or a `:`, is `localhost`, or has an upper-case
//! letter (docker's rule); otherwise the reference is on Docker Hub
//! (`docker.io`), and a one-component path gets `library/` in front. Path
//! components are lower-case `[a-z0-9]+` joined by `.`, `_`, `__` or runs of
//! `-`; tags are `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; digests must be
//! `sha256:` (the only algorithm kiln can verify). No tag and no digest means
//! `latest`.
//!
//! Hand-written rather than a crate: the grammar is small, and kiln needs
//! its own notion of "insecure-capable" hosts and docker.io endpoint mapping.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::Digest;

/// The registry docker calls `docker.io`.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API actually answers.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `docker.io`, `ghcr.io`, `localhost:5000`, `[::1]:5000`…
    pub registry: String,
    /// The repository path: `library/alpine`, `ns/app`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// Why a reference was refused. The message says what is wrong and shows
/// the accepted form.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid image reference {input:?}: {reason} (expected [HOST[:PORT]/]NAME[:TAG][@sha256:DIGEST], e.g. ghcr.io/org/app:1.2)"
)]
pub struct InvalidReference {
    pub input: String,
    pub reason: String,
}

const MAX_NAME: usize = 255;

impl Reference {
    /// Parses a reference as docker would (see the module doc).
    pub fn parse(input: &str) -> Result<Reference, InvalidReference> {
        let bad = |reason: &str| InvalidReference {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("it is empty"));
        }
        if input.chars().any(|c| c.is_whitespace()) {
            return Err(bad("it contains whitespace"));
        }
        // Digest first: it is the part after the last `@`.
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => {
                if d.contains('@') {
                    return Err(bad("it has more than one '@'"));
                }
                let digest = d.parse::<Digest>().map_err(|_| {
                    bad("the digest must be sha256: followed by 64 lower-case hex digits")
                })?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        // The tag is after the last `:` that follows the last `/` (a `:`
        // before a `/` is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(&rest[at + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(bad(
                "the tag must be 1-128 characters of letters, digits, '_', '.', '-', not starting with '.' or '-'",
            ));
        }
        if name.is_empty() {
            return Err(bad("the name is empty"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if is_host(first) => (first, path),
            _ => (DOCKER_HUB, name),
        };
        if registry != DOCKER_HUB && !valid_host(registry) {
            return Err(bad("the registry host is not a valid host[:port]"));
        }
        if path.is_empty() {
            return Err(bad("the repository name is empty"));
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("repository names must be lower-case"));
        }
        for comp in path.split('/') {
            if !valid_component(comp) {
                return Err(bad(&format!(
                    "path component {comp:?} must be lower-case letters and digits, separated by '.', '_', '__' or '-'"
                )));
            }
        }
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        if registry.len() + 1 + repository.len() > MAX_NAME {
            return Err(bad("the name is longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, e.g. `docker.io/library/alpine`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The host (and port) the registry API answers on.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The same repository pinned to a digest (tag kept for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// True for `localhost` and IP-literal hosts: the ones a user may reach
    /// over plain HTTP (loopback automatically, others with
    /// `--insecure-registry`), as docker does.
    pub fn is_insecure_capable(&self) -> bool {
        host_is_ip_or_localhost(&self.registry)
    }
}

/// Maps `docker.io` to the host its API answers on.
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

/// `host[:port]` without the port, brackets removed from IPv6 literals.
pub fn host_without_port(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

/// `localhost` or an IP literal.
pub fn host_is_ip_or_localhost(registry: &str) -> bool {
    let host = host_without_port(registry);
    host == "localhost" || host.parse::<IpAddr>().is_ok()
}

/// `localhost`, `127.0.0.0/8` or `::1`: plain HTTP is allowed without asking.
pub fn host_is_loopback(registry: &str) -> bool {
    let host = host_without_port(registry);
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = InvalidReference;
    fn from_str(s: &str) -> Result<Reference, InvalidReference> {
        Reference::parse(s)
    }
}

fn is_host(first: &str) -> bool {
    first.contains('.')
        || first.contains(':')
        || first == "localhost"
        || first.chars().any(|c| c.is_ascii_uppercase())
}

fn valid_host(host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(p) => ("", Some(p)),
                None => return false,
            },
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if host.starts_with('[') {
        return true;
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn docker_hub_defaults() {
        let x = r("alpine");
        assert_eq!(x.registry, "docker.io");
        assert_eq!(x.repository, "library/alpine");
        assert_eq!(x.tag.as_deref(), Some("latest"));
        assert_eq!(x.to_string(), "docker.io/library/alpine:latest");
        assert_eq!(x.api_host(), "registry-1.docker.io");
        assert_eq!(r("user/app:1").repository, "user/app");
        assert_eq!(r("docker.io/alpine").repository, "library/alpine");
        assert_eq!(r("index.docker.io/library/alpine:3").registry, "docker.io");
    }

    #[test]
    fn tags_digests_and_ports() {
        let x = r("node:20-slim");
        assert_eq!(x.tag.as_deref(), Some("20-slim"));
        let x = r(&format!("alpine@{D}"));
        assert_eq!(x.tag, None);
        assert_eq!(x.digest.as_ref().unwrap().to_string(), D);
        assert_eq!(x.reference(), D);
        let x = r(&format!("alpine:3.20@{D}"));
        assert_eq!(x.tag.as_deref(), Some("3.20"));
        assert_eq!(x.reference(), D);
        let x = r("localhost:5000/ns/app:v1.2");
        assert_eq!(x.registry, "localhost:5000");
        assert_eq!(x.repository, "ns/app");
        assert_eq!(x.tag.as_deref(), Some("v1.2"));
        let x = r("localhost:5000/app");
        assert_eq!(
            (x.registry.as_str(), x.tag.as_deref()),
            ("localhost:5000", Some("latest"))
        );
        let x = r("ghcr.io/org/team/app");
        assert_eq!(x.registry, "ghcr.io");
        assert_eq!(x.repository, "org/team/app");
        let x = r("localhost/app");
        assert_eq!(x.registry, "localhost");
        let x = r("[::1]:5000/app:x");
        assert_eq!(x.registry, "[::1]:5000");
        assert_eq!(x.to_string(), "[::1]:5000/app:x");
        let x = r("ab__c-d---e/f_g.h");
        assert_eq!(x.registry, "docker.io");
        assert_eq!(x.repository, "ab__c-d---e/f_g.h");
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "docker.io/library/alpine:latest",
            "127.0.0.1:5000/a/b:c",
            &format!("ghcr.io/x/y@{D}"),
            &format!("ghcr.io/x/y:t@{D}"),
        ] {
            assert_eq!(r(s).to_string(), s);
            assert_eq!(r(&r(s).to_string()), r(s));
        }
    }

    #[test]
    fn insecure_capable_hosts() {
        assert!(r("localhost:5000/a").is_insecure_capable());
        assert!(r("127.0.0.1:5000/a").is_insecure_capable());
        assert!(r("10.1.2.3/a").is_insecure_capable());
        assert!(r("[::1]:5000/a").is_insecure_capable());
        assert!(!r("ghcr.io/a").is_insecure_capable());
        assert!(!r("alpine").is_insecure_capable());
        assert!(host_is_loopback("127.0.0.2:80"));
        assert!(host_is_loopback("[::1]:5000"));
        assert!(host_is_loopback("localhost"));
        assert!(!host_is_loopback("10.1.2.3:5000"));
        assert!(!host_is_loopback("example.com"));
    }

    #[test]
    fn malformed_references_are_refused_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("Alpine", "lower-case"),
            ("ghcr.io/Org/app", "lower-case"),
            ("alpine:", "tag"),
            ("alpine:-x", "tag"),
            ("alpine:.x", "tag"),
            (&format!("alpine:{}", "a".repeat(129)), "tag"),
            ("alpine@sha256:abc", "digest"),
            ("alpine@md5:abc", "digest"),
            (&format!("alpine@{D}@{D}"), "more than one"),
            ("a b", "whitespace"),
            ("ghcr.io/", "empty"),
            ("/app", "path component"),
            ("app/", "path component"),
            ("a//b", "path component"),
            ("-app", "path component"),
            ("app-", "path component"),
            ("a..b", "path component"),
            ("a___b", "path component"),
            ("a/b!c", "path component"),
            ("host:port/app", "host"),
            ("host:99999999/app", "host"),
            ("-bad.host/app", "host"),
            ("[zz]:5000/app", "host"),
            (&format!("x.io/{}", "a".repeat(256)), "255"),
        ];
        for (input, why) in cases {
            let err = Reference::parse(input).expect_err(input);
            let msg = err.to_string();
            assert!(msg.contains(why), "{input:?}: {msg}");
            assert!(msg.contains("expected [HOST"), "{msg}");
        }
    }
}
