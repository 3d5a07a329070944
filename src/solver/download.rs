//! `ADD <url>`: downloads into the blob store, verified against
//! `--checksum` before anything is visible under a digest.
//!
//! A downloaded file is stored as a blob (sha256 of its bytes): the store's
//! temp file + rename means an interrupted or mismatching download leaves
//! nothing under a real digest, and a rebuild with a sha256 `--checksum`
//! whose blob is already present needs no network at all.

use std::io::{Read, Write};

use anyhow::{Context as _, bail};
use sha2::Digest as _;

use crate::Result;
use crate::oci::{Digest, Store};
use crate::packages::fetch::Http;

/// An expected digest in `--checksum` form (`sha256:…`, `sha384:…`, `sha512:…`).
struct Expected<'a> {
    algorithm: &'a str,
    hex: String,
}

impl<'a> Expected<'a> {
    fn parse(checksum: &'a str) -> Result<Expected<'a>> {
        match checksum.split_once(':') {
            Some((a @ ("sha256" | "sha384" | "sha512"), h)) => Ok(Expected {
                algorithm: a,
                hex: h.to_ascii_lowercase(),
            }),
            _ => bail!("--checksum={checksum}: write sha256:<hex> (or sha384:, sha512:)"),
        }
    }
}

/// Hashes the stream with the checksum's algorithm, to compare before the
/// blob is committed.
enum Extra {
    None,
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Extra {
    fn update(&mut self, b: &[u8]) {
        match self {
            Extra::None => {}
            Extra::Sha256(h) => h.update(b),
            Extra::Sha384(h) => h.update(b),
            Extra::Sha512(h) => h.update(b),
        }
    }
    fn finish(self) -> Option<String> {
        match self {
            Extra::None => None,
            Extra::Sha256(h) => Some(hex::encode(h.finalize())),
            Extra::Sha384(h) => Some(hex::encode(h.finalize())),
            Extra::Sha512(h) => Some(hex::encode(h.finalize())),
        }
    }
}

/// The blob digest (sha256) of `url`'s content, downloading it into
/// `store` unless a sha256 `checksum` names a blob already there. A
/// `checksum` that does not match fails with both digests and stores
/// nothing.
pub fn fetch(store: &Store, http: &Http, url: &str, checksum: Option<&str>) -> Result<Digest> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!(
            "ADD {url}: only http:// and https:// URLs can be downloaded (Git sources are not supported yet)"
        );
    }
    let expected = checksum.map(Expected::parse).transpose()?;
    if let Some(e) = &expected
        && e.algorithm == "sha256"
    {
        let d: Digest = format!("sha256:{}", e.hex)
            .parse()
            .with_context(|| format!("--checksum={}", checksum.unwrap_or_default()))?;
        if store.contains(&d) {
            return Ok(d);
        }
    }
    let (_, mut body) = http.open(url).map_err(|e| {
        // The archive client's hints are about Debian mirrors; say what
        // failed in ADD's terms instead.
        match e.downcast_ref::<crate::packages::fetch::FetchError>() {
            Some(f) => match f.status {
                Some(s) => anyhow::anyhow!("GET {url}: HTTP {s}"),
                None => anyhow::anyhow!(
                    "GET {url}: {} (is the server reachable from this machine?)",
                    f.what.split(" (is the mirror").next().unwrap_or(&f.what)
                ),
            },
            None => e,
        }
    })?;
    let mut w = store.writer()?;
    let mut extra = match expected.as_ref().map(|e| e.algorithm) {
        Some("sha256") => Extra::Sha256(sha2::Sha256::new()),
        Some("sha384") => Extra::Sha384(sha2::Sha384::new()),
        Some("sha512") => Extra::Sha512(sha2::Sha512::new()),
        _ => Extra::None,
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = body
            .read(&mut buf)
            .with_context(|| format!("downloading {url}"))?;
        if n == 0 {
            break;
        }
        extra.update(&buf[..n]);
        w.write_all(&buf[..n])
            .with_context(|| format!("storing the download of {url}"))?;
    }
    if let (Some(e), Some(got)) = (&expected, extra.finish())
        && got != e.hex
    {
        // Dropping the writer deletes the temp file: nothing is stored.
        bail!(
            "checksum mismatch for {url}: expected {}, got {}:{got}",
            checksum.unwrap_or_default(),
            e.algorithm
        );
    }
    Ok(w.commit()?.digest)
}

/// The file name a URL gives when ADD's destination is a directory: the
/// last segment of its path (percent-decoded), `index` when the path has
/// none (as BuildKit).
pub fn file_name(url: &str) -> String {
    let path = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(url)
        .split(['?', '#'])
        .next()
        .unwrap_or_default();
    let path = path.split_once('/').map(|(_, p)| p).unwrap_or_default();
    let last = path.rsplit('/').next().unwrap_or_default();
    let decoded = percent_decode(last);
    if decoded.is_empty() || decoded == "." || decoded == ".." || decoded.contains('/') {
        "index".to_string()
    } else {
        decoded
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_come_from_the_url_path() {
        assert_eq!(
            file_name("https://x.org/a/b/tool.tar.gz?v=1#f"),
            "tool.tar.gz"
        );
        assert_eq!(file_name("http://x.org/"), "index");
        assert_eq!(file_name("http://x.org"), "index");
        assert_eq!(file_name("http://x.org/a%20b"), "a b");
        assert_eq!(file_name("http://x.org/a/%2F"), "index");
    }

    /// Answers every request on a loopback port with `body`.
    fn serve(body: &'static [u8]) -> String {
        use std::io::BufRead;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let mut r = std::io::BufReader::new(c.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = c.write_all(body);
            }
        });
        format!("http://127.0.0.1:{port}/f")
    }

    #[test]
    fn downloads_are_verified_before_they_are_stored() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let url = serve(b"payload");
        let http = Http::new();
        let wrong = format!("sha256:{}", "0".repeat(64));
        let err = fetch(&store, &http, &url, Some(&wrong))
            .unwrap_err()
            .to_string();
        let got = Digest::of(b"payload");
        assert!(
            err.contains(&format!("expected {wrong}, got {got}")),
            "{err}"
        );
        assert!(store.list().unwrap().is_empty(), "nothing stored");
        let sha512 = format!("sha512:{}", hex::encode(sha2::Sha512::digest(b"payload")));
        assert_eq!(fetch(&store, &http, &url, Some(&sha512)).unwrap(), got);
        assert_eq!(fetch(&store, &http, &url, None).unwrap(), got);
        assert!(fetch(&store, &http, "git@host:repo.git", None).is_err());
    }

    #[test]
    fn checksums_parse() {
        assert!(Expected::parse("md5:abc").is_err());
        assert_eq!(Expected::parse("sha512:AB").unwrap().hex, "ab");
    }
}
