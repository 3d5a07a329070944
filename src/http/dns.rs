//! A per-agent DNS cache (archive downloads, `ADD <url>`, registries).
//!
//! ureq 3 resolves the host before every request (its connection pool is
//! keyed by socket address), so composing an image made one lookup per
//! `.deb`: about 450 for a Node build stage. Where the network's resolver
//! drops one of glibc's parallel A/AAAA queries now and then, each drop is
//! a 5 s stall in `getaddrinfo`; on this project's CI machine that was 76 s
//! of a 104 s cold build. Keeping each answer for a minute makes that one
//! stall per host at most, as apt (one lookup per connection) has it.
//!
//! Hand-written because ureq has no resolver cache option; it plugs in
//! through ureq's `unversioned` resolver trait (exempt from semver, so the
//! exact ureq version is pinned by Cargo.lock and upgrades are checked by
//! the packages e2e suite).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long an answer is reused: long enough for a build, short enough
/// that a long-lived library user follows a mirror that moves.
const TTL: Duration = Duration::from_secs(60);

/// [`DefaultResolver`] with answers kept for [`TTL`], keyed by scheme and
/// authority.
#[derive(Debug, Default)]
pub(crate) struct CachingResolver {
    inner: DefaultResolver,
    answers: Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>,
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or_default(),
            uri.authority().map(|a| a.as_str()).unwrap_or_default()
        );
        if let Ok(answers) = self.answers.lock()
            && let Some((at, addrs)) = answers.get(&key)
            && at.elapsed() < TTL
        {
            return Ok(addrs.clone());
        }
        // Resolved outside the lock: parallel downloads of a cold cache
        // may each look the host up once, but never wait on each other.
        let addrs = self.inner.resolve(uri, config, timeout)?;
        if let Ok(mut answers) = self.answers.lock() {
            answers.insert(key, (Instant::now(), addrs.clone()));
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::unversioned::transport::time::Duration as UDuration;

    fn no_timeout() -> NextTimeout {
        NextTimeout {
            after: UDuration::NotHappening,
            reason: ureq::Timeout::Global,
            ..NextTimeout::default()
        }
    }

    #[test]
    fn answers_are_reused_per_authority() {
        let r = CachingResolver::default();
        let config = Config::default();
        let a: Uri = "http://127.0.0.1:8080/x".parse().unwrap();
        let b: Uri = "http://127.0.0.1:9090/y".parse().unwrap();
        let first = r.resolve(&a, &config, no_timeout()).unwrap();
        assert_eq!(first[0].port(), 8080);
        let again = r.resolve(&a, &config, no_timeout()).unwrap();
        assert_eq!(first[0], again[0]);
        // Another port is another entry, not the cached one.
        assert_eq!(
            r.resolve(&b, &config, no_timeout()).unwrap()[0].port(),
            9090
        );
        assert_eq!(r.answers.lock().unwrap().len(), 2);
    }
}
