//! A small HTTP/1.1 proxy on 127.0.0.1 whose behaviour per request is a
//! test-supplied policy: forward to a backend, answer itself, drop the
//! connection, or forward and cut the connection after N bytes. Used for
//! fault injection (500/429/drops in front of a real registry), for a
//! bearer-token front (token endpoint + token checks in front of an
//! anonymous registry), and for "a server answering HTML".
//!
//! One request per connection: every answer carries `Connection: close`,
//! so request boundaries never depend on parsing response bodies.
//! Requests must carry `Content-Length` when they have a body (kiln does).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// A request head as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// The body of a small form POST (`application/x-www-form-urlencoded`,
    /// e.g. an OAuth2 token request); empty otherwise.
    pub body: Vec<u8>,
}

impl Request {
    /// Form fields of a form POST body, percent-decoded.
    pub fn form(&self) -> Vec<(String, String)> {
        parse_pairs(&String::from_utf8_lossy(&self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }

    /// Query parameters, percent-decoded.
    pub fn query(&self) -> Vec<(String, String)> {
        let Some((_, q)) = self.target.split_once('?') else {
            return Vec::new();
        };
        parse_pairs(q)
    }
}

fn parse_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What to do with one request.
pub enum Action {
    Forward,
    /// Answer with this status, headers and body (no backend involved).
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Close the connection without answering.
    Drop,
    /// Forward, but cut both connections after this many body bytes
    /// (request body first, then response).
    ForwardCut(u64),
    /// Take the request body, then never answer (a stalled registry); the
    /// connection is held until the client closes it.
    Stall,
}

impl Action {
    pub fn status(status: u16) -> Action {
        Action::Respond {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

pub struct Proxy {
    pub addr: String,
    stop: Arc<AtomicBool>,
    /// Requests seen.
    pub requests: Arc<AtomicUsize>,
}

type Policy = dyn Fn(&Request) -> Action + Send + Sync;

impl Proxy {
    /// Starts a proxy to `backend` (`127.0.0.1:PORT`; may be empty when the
    /// policy never forwards).
    pub fn start(
        backend: &str,
        policy: impl Fn(&Request) -> Action + Send + Sync + 'static,
    ) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let policy: Arc<Policy> = Arc::new(policy);
        let backend = backend.to_string();
        {
            let stop = stop.clone();
            let requests = requests.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let policy = policy.clone();
                    let backend = backend.clone();
                    let requests = requests.clone();
                    std::thread::spawn(move || {
                        let _ = handle(conn, &backend, &*policy, &requests);
                    });
                }
            });
        }
        Proxy {
            addr,
            stop,
            requests,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn handle(
    conn: TcpStream,
    backend: &str,
    policy: &Policy,
    requests: &AtomicUsize,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut client = conn;
    let Some(head) = read_head(&mut reader)? else {
        return Ok(());
    };
    requests.fetch_add(1, Ordering::Relaxed);
    let mut parts = head[0].split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = head[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut req = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    let mut body_len: u64 = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let is_form = req
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if is_form && body_len <= 64 * 1024 {
        let mut body = vec![0u8; body_len as usize];
        reader.read_exact(&mut body)?;
        req.body = body;
        body_len = 0;
    }
    match policy(&req) {
        Action::Stall => {
            conn_stall(&mut reader);
            Ok(())
        }
        Action::Drop => {
            let _ = client.shutdown(Shutdown::Both);
            Ok(())
        }
        Action::Respond {
            status,
            headers,
            body,
        } => {
            std::io::copy(&mut (&mut reader).take(body_len), &mut std::io::sink())?;
            let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
            let has_ct = headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
            for (k, v) in &headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            if !has_ct {
                out.push_str("Content-Type: application/json\r\n");
            }
            out.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ));
            client.write_all(out.as_bytes())?;
            if req.method != "HEAD" {
                client.write_all(&body)?;
            }
            client.flush()?;
            let _ = client.shutdown(Shutdown::Both);
            Ok(())
        }
        action @ (Action::Forward | Action::ForwardCut(_)) => {
            let mut cut = match action {
                Action::ForwardCut(n) => Some(n),
                _ => None,
            };
            let mut up = TcpStream::connect(backend)?;
            let mut out = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
            for (k, v) in &req.headers {
                if k.eq_ignore_ascii_case("connection") {
                    continue;
                }
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("Connection: close\r\n\r\n");
            up.write_all(out.as_bytes())?;
            up.write_all(&req.body)?;
            // Request body, possibly cut.
            let n = match cut {
                Some(c) if c < body_len => c,
                _ => body_len,
            };
            let copied = std::io::copy(&mut (&mut reader).take(n), &mut up)?;
            if copied < body_len {
                let _ = up.shutdown(Shutdown::Both);
                let _ = client.shutdown(Shutdown::Both);
                return Ok(());
            }
            if let Some(c) = cut.as_mut() {
                *c -= copied.min(*c);
            }
            // Response: head with Connection: close, then the rest.
            let mut upr = BufReader::new(up);
            let Some(rhead) = read_head(&mut upr)? else {
                let _ = client.shutdown(Shutdown::Both);
                return Ok(());
            };
            let mut out = String::new();
            for l in &rhead {
                if l.to_ascii_lowercase().starts_with("connection:") {
                    continue;
                }
                out.push_str(l);
                out.push_str("\r\n");
            }
            out.push_str("Connection: close\r\n\r\n");
            client.write_all(out.as_bytes())?;
            match cut {
                Some(c) => {
                    std::io::copy(&mut (&mut upr).take(c), &mut client)?;
                }
                None => {
                    std::io::copy(&mut upr, &mut client)?;
                }
            }
            client.flush()?;
            let _ = client.shutdown(Shutdown::Both);
            Ok(())
        }
    }
}

/// The repository a `/v2/<name>/(blobs|manifests|tags)/…` path names.
pub fn repository_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v2/")?;
    for marker in ["/blobs/", "/manifests/", "/tags/"] {
        if let Some(i) = rest.rfind(marker) {
            return Some(rest[..i].to_string());
        }
    }
    None
}

/// Reads (and discards) whatever the client sends until it closes.
fn conn_stall(reader: &mut BufReader<TcpStream>) {
    let _ = reader.get_ref().set_read_timeout(None);
    let _ = std::io::copy(reader, &mut std::io::sink());
}
