//! HTTP for the archive: conditional GETs of `InRelease` and streaming
//! downloads of indexes and .debs, through [`crate::http`] (blocking;
//! parallelism is threads).

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::Result;
use crate::http::Reply;

/// Extra attempts after a transport failure (backoff 0.3 s doubling to
/// 4.8 s: rides out a DNS hiccup of about ten seconds).
const RETRIES: u32 = 5;

/// A blocking HTTP client configured for archive mirrors.
#[derive(Clone)]
pub struct Http {
    client: crate::http::Client,
}

/// The answer to a conditional GET.
pub enum Fetched {
    NotModified,
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
}

/// A failed request: which URL, and either the HTTP status or the transport error.
#[derive(Debug, thiserror::Error)]
#[error("GET {url}: {what}")]
pub struct FetchError {
    pub url: String,
    pub status: Option<u16>,
    pub what: String,
}

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
}

impl Http {
    pub fn new() -> Http {
        Http {
            client: crate::http::Client::new(&crate::http::Options::downloads()),
        }
    }

    fn call(&self, url: &str, headers: &[(&str, &str)]) -> Result<Reply> {
        // Transport failures (a DNS hiccup, a reset connection) are retried
        // with backoff; HTTP answers are judged by the caller.
        let mut attempt = 0;
        let result = loop {
            match self.client.get(url, headers) {
                Err(_) if attempt < RETRIES => {
                    std::thread::sleep(Duration::from_millis(300 << attempt));
                    attempt += 1;
                }
                r => break r,
            }
        };
        result.map_err(|e| {
            anyhow::Error::new(FetchError {
                url: url.to_string(),
                status: None,
                what: format!(
                    "{e} (is the mirror reachable? set KILN_DEBIAN_MIRROR to another mirror, or use --offline with cached indexes)"
                ),
            })
        })
    }

    /// GET with `If-None-Match`/`If-Modified-Since` from a previous answer.
    pub fn get_conditional(
        &self,
        url: &str,
        etag: Option<&str>,
        last_modified: Option<&str>,
    ) -> Result<Fetched> {
        let mut headers = Vec::new();
        if let Some(e) = etag {
            headers.push(("If-None-Match", e));
        }
        if let Some(l) = last_modified {
            headers.push(("If-Modified-Since", l));
        }
        let resp = self.call(url, &headers)?;
        let status = resp.status();
        if status == 304 {
            return Ok(Fetched::NotModified);
        }
        check_status(url, status)?;
        let header = |n: &str| resp.header(n).map(str::to_string);
        let (etag, last_modified) = (header("etag"), header("last-modified"));
        let mut bytes = Vec::new();
        resp.into_reader()
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading the body of {url}"))?;
        Ok(Fetched::Body {
            bytes,
            etag,
            last_modified,
        })
    }

    /// GET as a stream.
    pub fn open(&self, url: &str) -> Result<(Option<u64>, Box<dyn Read + Send>)> {
        let resp = self.call(url, &[])?;
        check_status(url, resp.status())?;
        let len = resp.content_length();
        Ok((len, Box::new(resp.into_reader())))
    }
}

fn check_status(url: &str, status: u16) -> Result<()> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let hint = if status == 404 {
        "not found on the mirror (the suite or file may not exist, or the index is older than the mirror: refresh without --offline, or `kiln lock` again)"
    } else {
        "the mirror answered with an error"
    };
    bail!(FetchError {
        url: url.to_string(),
        status: Some(status),
        what: format!("HTTP {status}: {hint}"),
    })
}
