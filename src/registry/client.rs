//! The HTTP side of the distribution protocol: one [`Client`] per process,
//! one session per registry (scheme, auth challenge, token), requests with
//! auth and retries.
//!
//! HTTP client: `ureq` 2 with rustls and the system's root certificates.
//! Blocking I/O fits kiln (a blob transfer is a thread streaming a file to
//! a socket; parallelism is a handful of threads), it pulls in no async
//! runtime, and `send(reader)` with a `Content-Length` streams a blob from
//! the store without buffering it. `reqwest::blocking` would start a tokio
//! runtime behind the scenes for the same result.
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
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use super::auth::{self, Challenge, Token, TokenResponse};
use super::credentials::{CredentialSource, Credentials};
use crate::Result;
use crate::oci::reference::{api_host, host_is_loopback, host_without_port};

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

/// The environment variable with the network stall timeout in seconds.
pub const NET_TIMEOUT_ENV: &str = "KILN_NET_TIMEOUT";

/// The stall timeout when neither `--net-timeout` nor `KILN_NET_TIMEOUT` is set.
pub const DEFAULT_NET_TIMEOUT: Duration = Duration::from_secs(30);

/// Parses a timeout in seconds (`30`, `2.5`) as given to `--net-timeout`
/// or `KILN_NET_TIMEOUT`.
pub fn parse_timeout(s: &str) -> std::result::Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!(
            "{s:?} is not a timeout: give seconds, more than 0 (e.g. 30 or 2.5)"
        )),
    }
}

/// The stall timeout from `KILN_NET_TIMEOUT`, or the default. A value that
/// does not parse is an error, not silently ignored.
pub fn net_timeout_from_env() -> Result<Duration> {
    match std::env::var(NET_TIMEOUT_ENV) {
        Ok(v) => parse_timeout(&v).map_err(|e| anyhow::anyhow!("{NET_TIMEOUT_ENV}: {e}")),
        Err(_) => Ok(DEFAULT_NET_TIMEOUT),
    }
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
            stall_timeout: net_timeout_from_env().unwrap_or(DEFAULT_NET_TIMEOUT),
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

/// Is this I/O error a read or write timeout (ureq sets socket timeouts, so
/// a silent peer surfaces as `WouldBlock` or `TimedOut`)?
pub fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// Does a ureq transport error come from a stall timeout?
fn transport_stalled(t: &ureq::Transport) -> bool {
    let mut src = std::error::Error::source(t);
    while let Some(e) = src {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && is_timeout(io)
        {
            return true;
        }
        src = e.source();
    }
    t.kind() == ureq::ErrorKind::Io && t.to_string().contains("timed out")
}

/// The HTTP status in an error chain, if any.
pub fn status_of(err: &anyhow::Error) -> Option<u16> {
    err.chain()
        .find_map(|e| e.downcast_ref::<RegistryError>().and_then(|r| r.status))
}

/// A distribution-protocol client, shared by threads.
pub struct Client {
    agent: ureq::Agent,
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

/// A request body.
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// A stream of known length (not replayable: no auth retry).
    Stream(Box<dyn Read + 'a>, u64),
}

impl Client {
    pub fn new(opts: ClientOptions) -> Client {
        // Per read/write timeouts: a registry that stops sending (or
        // accepting) bytes fails the request after `stall_timeout`, however
        // long a healthy transfer takes.
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(opts.stall_timeout)
            .timeout_read(opts.stall_timeout)
            .timeout_write(opts.stall_timeout)
            // One idle connection per host (ureq's default) would make
            // parallel blob transfers reconnect on every request.
            .max_idle_connections_per_host(32)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent,
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
            let answer = self.agent.get(&format!("{base}/v2/")).call();
            let resp = match answer {
                Ok(r) => r,
                Err(ureq::Error::Status(_, r)) => r,
                Err(ureq::Error::Transport(t)) => {
                    stalled &= transport_stalled(&t);
                    last_err = Some(t.to_string());
                    continue;
                }
            };
            let status = resp.status();
            let challenge = match status {
                200 => None,
                401 => {
                    let headers: Vec<String> = resp
                        .all("www-authenticate")
                        .iter()
                        .map(|s| s.to_string())
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
                self.agent.post(realm).send_form(&pairs)
            }
            creds => {
                let mut req = self.agent.get(realm);
                if let Some(svc) = service {
                    req = req.query("service", svc);
                }
                for sc in scopes {
                    req = req.query("scope", sc);
                }
                if let Some(h) = creds.as_ref().and_then(Credentials::basic_header) {
                    req = req.set("Authorization", &h);
                }
                req.call()
            }
        };
        let resp = match answer {
            Ok(r) => r,
            Err(ureq::Error::Status(code @ (401 | 403), _)) => {
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
            Err(e) => return Err(self.to_error(registry, "GET", realm, e)),
        };
        let text = resp.into_string().with_context(|| {
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
    ) -> Result<ureq::Response> {
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
            let mut req = self.agent.request(method, &url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(a) = &auth {
                req = req.set("Authorization", a);
            }
            let b = body.take().unwrap_or(Body::Empty);
            let replay = match &b {
                Body::Empty => Some(Body::Empty),
                Body::Bytes(x) => Some(Body::Bytes(x)),
                Body::Stream(..) => None,
            };
            let answer = match b {
                Body::Empty => req.call(),
                Body::Bytes(x) => req
                    .set("Content-Length", &x.len().to_string())
                    .send_bytes(x),
                Body::Stream(r, len) => req.set("Content-Length", &len.to_string()).send(r),
            };
            match answer {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(401, r)) if attempt == 0 && replay.is_some() => {
                    // The registry may want a scope kiln did not know of.
                    if let Some(Challenge::Bearer {
                        scope: Some(sc), ..
                    }) = r
                        .all("www-authenticate")
                        .iter()
                        .find_map(|h| auth::parse_challenge(h))
                    {
                        scopes.extend(auth::split_scopes(&sc));
                    }
                    // Force a new token even if the old one looked sufficient.
                    *s.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    body = replay;
                }
                Err(e) => return Err(self.to_error(&s.registry, method, &url, e)),
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    /// Turns a ureq error into a [`RegistryError`] with the registry's own
    /// explanation and advice for auth failures.
    fn to_error(&self, registry: &str, method: &str, url: &str, e: ureq::Error) -> anyhow::Error {
        let path = strip_query(url);
        let err = match e {
            ureq::Error::Status(code, resp) => {
                let retry_after = resp
                    .header("retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let ctype = resp.content_type().to_string();
                let mut text = String::new();
                let _ = resp.into_reader().take(64 * 1024).read_to_string(&mut text);
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
                RegistryError {
                    registry: registry.to_string(),
                    method: method.to_string(),
                    path,
                    status: Some(code),
                    message,
                    retry_after,
                    stalled: false,
                }
            }
            ureq::Error::Transport(t) if transport_stalled(&t) => RegistryError {
                registry: registry.to_string(),
                method: method.to_string(),
                path,
                status: None,
                message: format!(
                    "no bytes for {} (stalled; raise --net-timeout / {NET_TIMEOUT_ENV} if the registry is just slow)",
                    secs(self.opts.stall_timeout)
                ),
                retry_after: None,
                stalled: true,
            },
            ureq::Error::Transport(t) => RegistryError {
                registry: registry.to_string(),
                method: method.to_string(),
                path,
                status: None,
                message: format!("connection failed: {}", transport_reason(&t)),
                retry_after: None,
                stalled: false,
            },
        };
        anyhow::Error::new(err)
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

fn transport_reason(t: &ureq::Transport) -> String {
    // ureq's Display includes the URL; the kind and message are enough
    // here (the caller adds the path).
    let mut s = t.kind().to_string();
    if let Some(m) = t.message() {
        s.push_str(": ");
        s.push_str(m);
    }
    if let Some(src) = std::error::Error::source(t) {
        s.push_str(": ");
        s.push_str(&src.to_string());
    }
    s
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
    format!("{url}{sep}{key}={}", encode_query(value))
}

fn encode_query(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
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
