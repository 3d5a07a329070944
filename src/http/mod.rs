//! kiln's one HTTP client: archive mirrors, `ADD <url>` and registries all
//! go through [`Client`], so they share the TLS trust (the system store),
//! the DNS cache ([`dns`]), the user agent and the timeout vocabulary.
//!
//! Built on `ureq` 3: blocking I/O fits kiln (a transfer is a thread
//! streaming a file to or from a socket; parallelism is a handful of
//! threads), it pulls in no async runtime, and a body of known length is
//! streamed with its `Content-Length` without buffering. ureq types stay in
//! this module: callers see [`Reply`] (status, headers, body reader),
//! [`Body`] and [`Failure`].
//!
//! What differs between callers is an [`Options`] profile:
//! [`Options::downloads`] for mirrors and `ADD <url>` (HTTP(S)_PROXY from the
//! environment, gzip accepted, a bound on the wait for response headers),
//! [`Options::registry`] for the distribution protocol (a stall timeout on
//! every read and write, no proxy, no content coding, as the registry
//! client always had).
//!
//! Redirects are followed (`GET`/`HEAD` on any 3xx, other methods as curl
//! does) and the `Authorization` header is never carried to the redirect
//! target: a registry sending a blob `GET` to object storage must not hand
//! it the registry's credentials. HTTP error statuses are answers, not
//! errors: the caller judges them.

mod dns;
mod tls;

use std::io::Read;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use ureq::config::{AutoHeaderValue, RedirectAuthHeaders};
use ureq::http::HeaderMap;

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
pub fn net_timeout_from_env() -> crate::Result<Duration> {
    match std::env::var(NET_TIMEOUT_ENV) {
        Ok(v) => parse_timeout(&v).map_err(|e| anyhow::anyhow!("{NET_TIMEOUT_ENV}: {e}")),
        Err(_) => Ok(DEFAULT_NET_TIMEOUT),
    }
}

/// How a [`Client`] behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bound on opening the TCP connection.
    pub connect_timeout: Duration,
    /// How long one read or write may wait for the peer: a server that
    /// accepts a connection and then goes silent fails the request after
    /// this, however long a healthy transfer takes. `None`: no bound.
    pub stall_timeout: Option<Duration>,
    /// Bound on the wait for the response headers after the request is sent.
    pub response_timeout: Option<Duration>,
    /// Use `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` (and `NO_PROXY`).
    pub proxy_from_env: bool,
    /// Redirects followed before the 3xx answer is returned as is.
    pub max_redirects: u32,
    /// Idle connections kept per host (parallel transfers reuse them).
    pub idle_connections_per_host: usize,
    /// Send `Accept-Encoding: gzip` and decode gzip answers.
    pub gzip: bool,
}

impl Options {
    /// Debian mirrors and `ADD <url>`.
    pub fn downloads() -> Options {
        Options {
            connect_timeout: Duration::from_secs(15),
            stall_timeout: None,
            response_timeout: Some(Duration::from_secs(60)),
            proxy_from_env: true,
            max_redirects: 10,
            idle_connections_per_host: 3,
            gzip: true,
        }
    }

    /// A registry: every read and write (and the connect) bounded by `stall`.
    pub fn registry(stall: Duration) -> Options {
        Options {
            connect_timeout: stall,
            stall_timeout: Some(stall),
            response_timeout: None,
            proxy_from_env: false,
            max_redirects: 5,
            // One idle connection per host would make parallel blob
            // transfers reconnect on every request.
            idle_connections_per_host: 32,
            gzip: false,
        }
    }
}

/// A blocking HTTP client; cheap to clone (clones share connections and
/// the DNS cache).
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

/// A request body.
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// A stream of known length, sent with that `Content-Length`.
    Stream(Box<dyn Read + 'a>, u64),
}

/// An answer: status, headers and the body still on the wire.
pub struct Reply {
    status: u16,
    headers: HeaderMap,
    body: ureq::Body,
}

/// A request that got no answer: connection refused, DNS, TLS, a reset or a stall.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct Failure {
    /// The peer was silent for the stall (or connect) timeout.
    pub stalled: bool,
    pub reason: String,
}

impl Client {
    pub fn new(opts: &Options) -> Client {
        let idle_per_host = opts.idle_connections_per_host.max(1);
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(tls::system_roots())
                    .build(),
            )
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_per_read(opts.stall_timeout)
            .timeout_per_write(opts.stall_timeout)
            .timeout_recv_response(opts.response_timeout)
            .max_redirects(opts.max_redirects)
            // An answer after the last redirect is the caller's to judge.
            .max_redirects_will_error(false)
            .redirect_auth_headers(RedirectAuthHeaders::Never)
            .max_idle_connections_per_host(idle_per_host)
            .max_idle_connections(idle_per_host.max(10));
        if !opts.proxy_from_env {
            config = config.proxy(None);
        }
        if !opts.gzip {
            config = config.accept_encoding(AutoHeaderValue::None);
        }
        Client {
            agent: ureq::Agent::with_parts(
                config.build(),
                ureq::unversioned::transport::DefaultConnector::new(),
                dns::CachingResolver::default(),
            ),
        }
    }

    /// One request. `headers` are sent as given; a body's `Content-Length`
    /// is set here.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<Reply, Failure> {
        let method = ureq::http::Method::from_bytes(method.as_bytes()).map_err(|_| Failure {
            stalled: false,
            reason: format!("{method:?} is not an HTTP method"),
        })?;
        let mut req = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let answer = match body {
            Body::Empty => req.body(()).map(|r| self.agent.run(r)),
            Body::Bytes(b) => req
                .header("Content-Length", b.len())
                .body(b)
                .map(|r| self.agent.run(r)),
            Body::Stream(mut r, len) => req
                .header("Content-Length", len)
                .body(ureq::SendBody::from_reader(&mut *r))
                .map(|r| self.agent.run(r)),
        };
        let resp = answer
            .map_err(|e| Failure {
                stalled: false,
                reason: format!("invalid request to {url}: {e}"),
            })?
            .map_err(failure)?;
        let (parts, body) = resp.into_parts();
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// `GET url`.
    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Reply, Failure> {
        self.send("GET", url, headers, Body::Empty)
    }

    /// `POST url` with an `application/x-www-form-urlencoded` body.
    pub fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Result<Reply, Failure> {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.send(
            "POST",
            url,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Body::Bytes(body.as_bytes()),
        )
    }
}

impl Reply {
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of a header, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a header that is text, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The announced body length.
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }

    /// The body as a stream. A stall while reading is an error for which
    /// [`is_stall`] holds.
    pub fn into_reader(self) -> impl Read + Send + 'static {
        self.body.into_reader()
    }

    /// The body as text, at most `limit` bytes of it.
    pub fn into_text(self, limit: u64) -> std::io::Result<String> {
        let mut text = String::new();
        self.into_reader().take(limit).read_to_string(&mut text)?;
        Ok(text)
    }
}

/// Is this I/O error a read or write that timed out (a silent peer)?
/// Socket timeouts surface as `TimedOut` or `WouldBlock`; ureq wraps its
/// own timeout error in an I/O error of another kind.
pub fn is_stall(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) || e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(ureq_stalled)
}

fn ureq_stalled(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Timeout(_) => true,
        ureq::Error::Io(io) => is_stall(io),
        _ => false,
    }
}

fn failure(e: ureq::Error) -> Failure {
    Failure {
        stalled: ureq_stalled(&e),
        reason: e.to_string(),
    }
}

/// RFC 3986's unreserved characters stay; every other byte is `%XX`.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What `application/x-www-form-urlencoded` leaves as is (space aside).
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'*');

/// A URL query value (or path segment): unreserved bytes as is, the rest
/// percent-encoded.
pub fn encode_query(v: &str) -> String {
    utf8_percent_encode(v, QUERY).to_string()
}

/// `application/x-www-form-urlencoded` encoding of one key or value
/// (a space is `+`).
fn form_encode(v: &str) -> String {
    v.split(' ')
        .map(|part| utf8_percent_encode(part, FORM).to_string())
        .collect::<Vec<_>>()
        .join("+")
}

#[cfg(test)]
mod tests;
