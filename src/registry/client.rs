//! The HTTP side of the distribution protocol: one [`Client`] per process,
//! one session per registry (scheme, auth challenge, token), requests with
//! auth and retries.
//!
//! HTTP goes through [`crate::http`] with its registry profile
//! ([`http::Options::registry`]): system trust store, DNS cache, no proxy,
//! blobs streamed from the store with their `Content-Length`.
//!
//! Scheme: HTTPS always first. Plain HTTP is tried only when HTTPS fails to
//! connect and the host is loopback (`localhost`, `127.0.0.0/8`, `::1`) or
//! named with `--insecure-registry`, as docker does.
//!
//! Stalls: every read and write on a registry connection has a stall
//! timeout ([`ClientOptions::stall_timeout`], `KILN_NET_TIMEOUT` /
//! `--net-timeout`, 30 s by default): a registry that accepts a connection
//! and then sends nothing fails that request after the timeout instead of
//! hanging. A stalled request is retried at most
//! [`ClientOptions::stall_attempts`] times, each retry announced as a warning
//! (`waiting for REGISTRY: no bytes for 30 s, retry 2/3`).
//!
//! Secrets: credentials and tokens go only into `Authorization` headers.
//! Errors carry the registry, method, URL path (no query: upload URLs hold
//! session state) and the registry's own error message.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use super::auth::{self, Challenge, Token, TokenResponse};
use super::credentials::{CredentialSource, Credentials};
use crate::Result;
use crate::http::{self, Failure, NET_TIMEOUT_ENV, Reply};
use crate::oci::reference::{api_host, host_is_loopback, host_without_port};

pub use crate::http::Body;

/// How a [`Client`] behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries (`host` or `host:port`) that may be reached over plain
    /// HTTP (`--insecure-registry`). Loopback hosts always may.
    pub insecure_registries: Vec<String>,
    pub credentials: CredentialSource,
    /// Blobs transferred at once.
    pub parallel: usize,
    /// Attempts per request or blob on 5xx, 429 and dropped connections.
    pub attempts: u32,
    /// First backoff delay; doubled on each retry, capped at 10 s.
    pub backoff: Duration,
    /// How long a connection may stay silent (no byte received or accepted)
    /// before the request fails as stalled. Also the connect timeout.
    pub stall_timeout: Duration,
    /// Attempts per request when the registry stalls (at most `attempts`).
    pub stall_attempts: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            credentials: CredentialSource::Files,
            parallel: 6,
            attempts: 8,
            backoff: Duration::from_millis(200),
            // `kiln push/pull/login` refuse a malformed variable (clap
            // parses it for --net-timeout); here it falls back to 30 s.
            stall_timeout: http::net_timeout_from_env().unwrap_or(http::DEFAULT_NET_TIMEOUT),
            stall_attempts: 3,
        }
    }
}

/// A failed exchange with a registry. Typed so callers can branch on the
/// status (404 → not there) and the retry loop on [`RegistryError::retryable`].
#[derive(Debug, thiserror::Error)]
#[error("{registry}: {method} {path}: {message}")]
pub struct RegistryError {
    pub registry: String,
    pub method: String,
    pub path: String,
    /// `None` when the connection failed or dropped.
    pub status: Option<u16>,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// The registry sent nothing for the stall timeout.
    pub stalled: bool,
}

impl RegistryError {
    /// 5xx, 429, 408, stalls and connection failures are worth another try.
    pub fn retryable(&self) -> bool {
        match self.status {
            None => true,
            Some(s) => s >= 500 || s == 429 || s == 408,
        }
    }
}

/// True when an error chain holds a retryable [`RegistryError`].
pub fn is_retryable(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<RegistryError>()
            .is_some_and(RegistryError::retryable)
    })
}

/// The stalled [`RegistryError`] in an error chain, if any.
fn stall_of(err: &anyhow::Error) -> Option<&RegistryError> {
    err.chain()
        .filter_map(|e| e.downcast_ref::<RegistryError>())
        .find(|r| r.stalled)
}

/// The HTTP status in an error chain, if any.
pub fn status_of(err: &anyhow::Error) -> Option<u16> {
    err.chain()
        .find_map(|e| e.downcast_ref::<RegistryError>().and_then(|r| r.status))
}

/// A distribution-protocol client, shared by threads.
pub struct Client {
    http: http::Client,
    opts: ClientOptions,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Where retries after a stall are announced.
    progress: crate::progress::Progress,
}

/// What kiln knows about one registry.
pub struct Session {
    /// As in references: `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// `https://host[:port]` or `http://…`.
    pub base: String,
    challenge: Option<Challenge>,
    creds: Option<Credentials>,
    token: Mutex<Option<Token>>,
    /// Every scope asked for so far: a new token covers all of them.
    scopes: Mutex<BTreeSet<String>>,
    /// Held while a token is fetched, so parallel transfers share one
    /// token request instead of each making their own.
    fetching: Mutex<()>,
}

impl Client {
    pub fn new(opts: ClientOptions) -> Client {
        // Per read/write timeouts: a registry that stops sending (or
        // accepting) bytes fails the request after `stall_timeout`, however
        // long a healthy transfer takes.
        let http = http::Client::new(&http::Options::registry(opts.stall_timeout));
        Client {
            http,
            opts,
            sessions: Mutex::new(HashMap::new()),
            progress: crate::progress::Progress::quiet(),
        }
    }

    /// Announces stalls and retries on `progress` (warnings are shown even
    /// when it is quiet).
    pub fn with_progress(mut self, progress: &crate::progress::Progress) -> Client {
        self.progress = progress.clone();
        self
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    fn insecure_allowed(&self, registry: &str) -> bool {
        plain_http_allowed(registry, &self.opts.insecure_registries)
    }

    /// The session for a registry: picks the scheme and learns the auth
    /// challenge with `GET /v2/` on first use (retried when it stalls).
    pub fn session(&self, registry: &str) -> Result<Arc<Session>> {
        if let Some(s) = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(registry)
        {
            return Ok(s.clone());
        }
        self.retry(&format!("connecting to registry {registry}"), || {
            self.open_session(registry)
        })
    }

    fn open_session(&self, registry: &str) -> Result<Arc<Session>> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sessions.get(registry) {
            return Ok(s.clone());
        }
        let mut stalled = true;
        let host = api_host(registry);
        let mut schemes = vec!["https"];
        if self.insecure_allowed(registry) {
            schemes.push("http");
        }
        let mut last_err = None;
        for scheme in schemes {
            let base = format!("{scheme}://{host}");
            let resp = match self.http.get(&format!("{base}/v2/"), &[]) {
                Ok(r) => r,
                Err(f) => {
                    stalled &= f.stalled;
                    last_err = Some(f.reason);
                    continue;
                }
            };
            let status = resp.status();
            let challenge = match status {
                200 => None,
                401 => {
                    let headers: Vec<String> = resp
                        .header_all("www-authenticate")
                        .into_iter()
                        .map(str::to_string)
                        .collect();
                    let parsed: Vec<Challenge> = headers
                        .iter()
                        .filter_map(|h| auth::parse_challenge(h))
                        .collect();
                    let chosen = parsed
                        .iter()
                        .find(|c| matches!(c, Challenge::Bearer { .. }))
                        .or_else(|| parsed.first())
                        .cloned();
                    if chosen.is_none() {
                        anyhow::bail!(
                            "{registry} asks for authentication with a scheme kiln does not support ({}): only Basic and Bearer are",
                            headers.join("; ")
                        );
                    }
                    chosen
                }
                s => anyhow::bail!(
                    "{registry} does not answer the registry API: GET {base}/v2/ gave HTTP {s}; check the host and port"
                ),
            };
            let creds = self
                .opts
                .credentials
                .lookup(registry)
                .with_context(|| format!("looking up credentials for {registry}"))?;
            let s = Arc::new(Session {
                registry: registry.to_string(),
                base,
                challenge,
                creds,
                token: Mutex::new(None),
                scopes: Mutex::new(BTreeSet::new()),
                fetching: Mutex::new(()),
            });
            sessions.insert(registry.to_string(), s.clone());
            return Ok(s);
        }
        let why = last_err.unwrap_or_default();
        if stalled {
            // Every scheme connected and then heard nothing: a stall, which
            // the caller's retry loop announces and retries.
            return Err(anyhow::Error::new(RegistryError {
                registry: registry.to_string(),
                method: "GET".into(),
                path: "/v2/".into(),
                status: None,
                message: format!(
                    "no answer for {} (the registry accepts connections but does not respond; raise --net-timeout / {NET_TIMEOUT_ENV} if it is just slow)",
                    secs(self.opts.stall_timeout)
                ),
                retry_after: None,
                stalled: true,
            }));
        }
        if self.insecure_allowed(registry) {
            anyhow::bail!("cannot reach registry {registry} over HTTPS or HTTP: {why}")
        } else {
            anyhow::bail!(
                "cannot reach registry {registry} over HTTPS: {why}. If it only speaks plain HTTP, pass --insecure-registry {registry}"
            )
        }
    }

    /// Checks that the configured credentials are accepted by `registry`
    /// (what `kiln login` does before saving them): basic auth against
    /// `GET /v2/`, or a token request without scopes for bearer registries.
    pub fn verify_login(&self, registry: &str) -> Result<()> {
        let s = self.session(registry)?;
        match &s.challenge {
            None => Ok(()),
            Some(Challenge::Bearer { .. }) => self.fetch_token(&s, &BTreeSet::new()).map(|_| ()),
            Some(Challenge::Basic) => {
                self.request(&s, "GET", "/v2/", &[], &[], Body::Empty)?;
                Ok(())
            }
        }
    }

    /// The `Authorization` value for a request needing `scopes`, fetching a
    /// token when the current one does not cover them.
    fn authorization(&self, s: &Session, scopes: &[String]) -> Result<Option<String>> {
        match &s.challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(s.creds.as_ref().and_then(Credentials::basic_header)),
            Some(Challenge::Bearer { .. }) => {
                let want: BTreeSet<String> = scopes.iter().cloned().collect();
                let cached = |s: &Session| {
                    let tok = s.token.lock().unwrap_or_else(|e| e.into_inner());
                    tok.as_ref()
                        .filter(|t| t.fresh() && auth::covers(&t.scopes, &want))
                        .map(|t| format!("Bearer {}", t.value))
                };
                if let Some(h) = cached(s) {
                    return Ok(Some(h));
                }
                let _one_at_a_time = s.fetching.lock().unwrap_or_else(|e| e.into_inner());
                // Another thread may have fetched a covering token meanwhile.
                if let Some(h) = cached(s) {
                    return Ok(Some(h));
                }
                let all = {
                    let mut sc = s.scopes.lock().unwrap_or_else(|e| e.into_inner());
                    sc.extend(want);
                    auth::merge_scopes(&sc)
                };
                let t = self.fetch_token(s, &all)?;
                let header = format!("Bearer {}", t.value);
                *s.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
                Ok(Some(header))
            }
        }
    }

    fn fetch_token(&self, s: &Session, scopes: &BTreeSet<String>) -> Result<Token> {
        let Some(Challenge::Bearer { realm, service, .. }) = &s.challenge else {
            anyhow::bail!("{} did not ask for a bearer token", s.registry);
        };
        let registry = &s.registry;
        let answer = match &s.creds {
            Some(Credentials::IdentityToken(refresh)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("client_id", "kiln".to_string()),
                    ("refresh_token", refresh.clone()),
                    (
                        "scope",
                        scopes.iter().cloned().collect::<Vec<_>>().join(" "),
                    ),
                ];
                if let Some(svc) = service {
                    form.push(("service", svc.clone()));
                }
                let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
                self.http.post_form(realm, &pairs)
            }
            creds => {
                let mut url = realm.clone();
                if let Some(svc) = service {
                    url = with_query(&url, "service", svc);
                }
                for sc in scopes {
                    url = with_query(&url, "scope", sc);
                }
                let basic = creds.as_ref().and_then(Credentials::basic_header);
                let headers: Vec<(&str, &str)> = basic
                    .as_deref()
                    .map(|h| ("Authorization", h))
                    .into_iter()
                    .collect();
                self.http.get(&url, &headers)
            }
        };
        let resp = match answer {
            Ok(r) if r.status() < 400 => r,
            Ok(r) if matches!(r.status(), 401 | 403) => {
                let code = r.status();
                let what = if s.creds.is_some() {
                    format!(
                        "the token server of {registry} refused the stored credentials (HTTP {code}): run `kiln login {registry}` with valid ones"
                    )
                } else {
                    format!(
                        "the token server of {registry} refused anonymous access (HTTP {code}): run `kiln login {registry}`"
                    )
                };
                return Err(anyhow::Error::new(RegistryError {
                    registry: registry.clone(),
                    method: "GET".into(),
                    path: strip_query(realm),
                    status: Some(code),
                    message: what,
                    retry_after: None,
                    stalled: false,
                }));
            }
            Ok(r) => return Err(self.status_error(registry, "GET", realm, r)),
            Err(f) => return Err(self.failure_error(registry, "GET", realm, f)),
        };
        // Token answers are small; the bound keeps a hostile one from filling memory.
        let text = resp.into_text(10 * 1024 * 1024).with_context(|| {
            format!(
                "reading the token from {} for {registry}",
                strip_query(realm)
            )
        })?;
        let parsed: TokenResponse = serde_json::from_str(&text).map_err(|_| {
            anyhow::anyhow!(
                "the token server {} for {registry} did not answer token JSON",
                strip_query(realm)
            )
        })?;
        parsed.into_token(scopes.clone()).with_context(|| {
            format!(
                "the token server {} for {registry} answered without a token",
                strip_query(realm)
            )
        })
    }

    /// One request with auth. A 401 on a replayable body refreshes the
    /// token with the scope the registry asked for and tries once more.
    pub fn request(
        &self,
        s: &Session,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        scopes: &[String],
        body: Body<'_>,
    ) -> Result<Reply> {
        let url = if url.starts_with("http://") || url.starts_with("https://") {
            url.to_string()
        } else {
            format!("{}{url}", s.base)
        };
        let mut body = Some(body);
        let mut scopes = scopes.to_vec();
        // Credentials go only to the registry itself, never to another
        // host an upload Location points at (e.g. object storage).
        let same_host = url.starts_with(&format!("{}/", s.base));
        for attempt in 0..2 {
            let auth = if same_host {
                self.authorization(s, &scopes)?
            } else {
                None
            };
            let mut req_headers = headers.to_vec();
            if let Some(a) = &auth {
                req_headers.push(("Authorization", a));
            }
            let b = body.take().unwrap_or(Body::Empty);
            let replay = match &b {
                Body::Empty => Some(Body::Empty),
                Body::Bytes(x) => Some(Body::Bytes(x)),
                Body::Stream(..) => None,
            };
            match self.http.send(method, &url, &req_headers, b) {
                Ok(r) if r.status() < 400 => return Ok(r),
                Ok(r) if r.status() == 401 && attempt == 0 && replay.is_some() => {
                    // The registry may want a scope kiln did not know of.
                    if let Some(Challenge::Bearer {
                        scope: Some(sc), ..
                    }) = r
                        .header_all("www-authenticate")
                        .into_iter()
                        .find_map(auth::parse_challenge)
                    {
                        scopes.extend(auth::split_scopes(&sc));
                    }
                    // Force a new token even if the old one looked sufficient.
                    *s.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    body = replay;
                }
                Ok(r) => return Err(self.status_error(&s.registry, method, &url, r)),
                Err(f) => return Err(self.failure_error(&s.registry, method, &url, f)),
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    /// Turns an error status into a [`RegistryError`] with the registry's
    /// own explanation and advice for auth failures.
    fn status_error(&self, registry: &str, method: &str, url: &str, resp: Reply) -> anyhow::Error {
        let code = resp.status();
        let retry_after = resp
            .header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let ctype = resp.header("content-type").unwrap_or_default().to_string();
        let text = resp.into_text(64 * 1024).unwrap_or_default();
        let detail = explain_body(&ctype, &text);
        let message = match code {
            401 => format!(
                "authentication failed (HTTP 401{detail}): check the credentials for {registry} (`kiln login {registry}`)"
            ),
            403 => format!(
                "access denied (HTTP 403{detail}): the account lacks permission for this repository"
            ),
            _ => format!("HTTP {code}{detail}"),
        };
        anyhow::Error::new(RegistryError {
            registry: registry.to_string(),
            method: method.to_string(),
            path: strip_query(url),
            status: Some(code),
            message,
            retry_after,
            stalled: false,
        })
    }

    /// Turns a request without an answer into a [`RegistryError`].
    fn failure_error(&self, registry: &str, method: &str, url: &str, f: Failure) -> anyhow::Error {
        let message = if f.stalled {
            format!(
                "no bytes for {} (stalled; raise --net-timeout / {NET_TIMEOUT_ENV} if the registry is just slow)",
                secs(self.opts.stall_timeout)
            )
        } else {
            format!("connection failed: {}", f.reason)
        };
        anyhow::Error::new(RegistryError {
            registry: registry.to_string(),
            method: method.to_string(),
            path: strip_query(url),
            status: None,
            message,
            retry_after: None,
            stalled: f.stalled,
        })
    }

    /// Runs `f` until it succeeds, retrying retryable failures with
    /// exponential backoff (and `Retry-After`, capped at 30 s). A stall is
    /// retried at most `stall_attempts` times, each retry announced.
    pub fn retry<T>(&self, what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let mut delay = self.opts.backoff;
        let mut attempt = 1;
        let attempts = self.opts.attempts.max(1);
        let stall_attempts = self.opts.stall_attempts.clamp(1, attempts);
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(e) if stall_of(&e).is_some() && attempt < stall_attempts => {
                    let r = stall_of(&e).expect("checked above");
                    self.progress.warn(format!(
                        "waiting for {}: no bytes for {} ({} {}), retry {}/{}",
                        r.registry,
                        secs(self.opts.stall_timeout),
                        r.method,
                        r.path,
                        attempt + 1,
                        stall_attempts
                    ));
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(10));
                    attempt += 1;
                }
                Err(e) if attempt < attempts && stall_of(&e).is_none() && is_retryable(&e) => {
                    let hinted = e.chain().find_map(|x| {
                        x.downcast_ref::<RegistryError>()
                            .and_then(|r| r.retry_after)
                    });
                    let wait = hinted
                        .map(|h| h.min(Duration::from_secs(30)))
                        .unwrap_or(delay);
                    std::thread::sleep(wait);
                    delay = (delay * 2).min(Duration::from_secs(10));
                    attempt += 1;
                }
                Err(e) => {
                    return Err(if attempt > 1 {
                        e.context(format!("{what} (gave up after {attempt} attempts)"))
                    } else {
                        e.context(what.to_string())
                    });
                }
            }
        }
    }
}

/// `30 s`, `2.5 s`.
pub fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// May `registry` be reached over plain HTTP? Loopback always; others only
/// when listed (as `host:port`, or `host` for every port).
pub fn plain_http_allowed(registry: &str, insecure: &[String]) -> bool {
    host_is_loopback(registry)
        || insecure
            .iter()
            .any(|h| h == registry || h == host_without_port(registry))
}

/// The registry's JSON error list, or a hint when it answered HTML.
fn explain_body(ctype: &str, text: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_str::<Errors>(text) {
        let parts: Vec<String> = e
            .errors
            .iter()
            .map(|i| format!("{} {}", i.code, i.message).trim().to_string())
            .collect();
        if !parts.is_empty() {
            return format!(" {}", parts.join("; "));
        }
    }
    if ctype.contains("html") || text.trim_start().starts_with('<') {
        return ", an HTML page instead of a registry answer: is this a registry API endpoint?"
            .to_string();
    }
    String::new()
}

/// A URL without its query string.
pub fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

/// Resolves an upload `Location` against the session base.
pub fn absolute(s: &Session, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if location.starts_with('/') {
        format!("{}{location}", s.base)
    } else {
        format!("{}/{location}", s.base)
    }
}

/// Appends a query parameter to a URL that may already have a query.
pub fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={}", crate::http::encode_query(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_location_helpers() {
        assert_eq!(
            with_query(
                "http://h/v2/a/blobs/uploads/x?_state=1",
                "digest",
                "sha256:ab"
            ),
            "http://h/v2/a/blobs/uploads/x?_state=1&digest=sha256%3Aab"
        );
        assert_eq!(with_query("/u", "from", "a/b"), "/u?from=a%2Fb");
        assert_eq!(strip_query("http://h/p?secret=1"), "http://h/p");
    }

    #[test]
    fn explains_registry_errors_and_html() {
        let j = r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#;
        assert_eq!(
            explain_body("application/json", j),
            " BLOB_UNKNOWN blob unknown to registry"
        );
        assert!(explain_body("text/html", "<html>").contains("HTML"));
        assert_eq!(explain_body("text/plain", "nope"), "");
    }

    #[test]
    fn plain_http_only_for_loopback_or_listed_hosts() {
        let none: Vec<String> = vec![];
        assert!(plain_http_allowed("localhost:5000", &none));
        assert!(plain_http_allowed("127.0.0.1:5000", &none));
        assert!(plain_http_allowed("[::1]:5000", &none));
        assert!(!plain_http_allowed("10.0.0.5:5000", &none));
        assert!(!plain_http_allowed("registry.example.com", &none));
        assert!(!plain_http_allowed("docker.io", &none));
        let listed = vec!["10.0.0.5:5000".to_string(), "reg.lan".to_string()];
        assert!(plain_http_allowed("10.0.0.5:5000", &listed));
        assert!(!plain_http_allowed("10.0.0.5:6000", &listed));
        assert!(plain_http_allowed("reg.lan:443", &listed));
        assert!(plain_http_allowed("reg.lan", &listed));
    }

    #[test]
    fn retryable_statuses() {
        let e = |status| RegistryError {
            registry: "r".into(),
            method: "GET".into(),
            path: "/".into(),
            status,
            message: String::new(),
            retry_after: None,
            stalled: false,
        };
        assert!(e(None).retryable());
        assert!(e(Some(500)).retryable());
        assert!(e(Some(503)).retryable());
        assert!(e(Some(429)).retryable());
        assert!(!e(Some(404)).retryable());
        assert!(!e(Some(401)).retryable());
    }
}
