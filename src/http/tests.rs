//! The client against scripted loopback servers: what goes over the wire
//! and what a caller gets back.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

/// A request as the server saw it: head lines and body.
struct Seen {
    head: Vec<String>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.head.iter().find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with(&prefix)
                .then(|| l[prefix.len()..].trim())
        })
    }
}

fn read_request(conn: &mut BufReader<TcpStream>) -> Option<Seen> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let mut seen = Seen {
        head,
        body: Vec::new(),
    };
    let len: usize = seen
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    seen.body = vec![0; len];
    conn.read_exact(&mut seen.body).ok()?;
    Some(seen)
}

/// Serves `answers` in order, one per request (each on a fresh connection,
/// `Connection: close`), and reports every request it saw.
fn serve(ip: &str, answers: Vec<String>) -> (String, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for answer in answers {
            let (conn, _) = listener.accept().unwrap();
            let mut conn = BufReader::new(conn);
            if let Some(seen) = read_request(&mut conn) {
                let _ = tx.send(seen);
            }
            let _ = conn.get_mut().write_all(answer.as_bytes());
        }
    });
    (addr, rx)
}

fn answer(status: &str, headers: &[&str], body: &str) -> String {
    let mut a = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for h in headers {
        a.push_str(h);
        a.push_str("\r\n");
    }
    a.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    a
}

#[test]
fn a_redirect_to_another_host_does_not_carry_the_authorization_header() {
    // 127.0.0.2 vs 127.0.0.1: another host, as object storage is.
    let (storage, storage_seen) = serve("127.0.0.2", vec![answer("200 OK", &[], "blob bytes")]);
    let target = format!("http://{storage}/blob?sig=1");
    let (registry, registry_seen) = serve(
        "127.0.0.1",
        vec![answer(
            "307 Temporary Redirect",
            &[&format!("Location: {target}")],
            "",
        )],
    );
    let client = Client::new(&Options::registry(Duration::from_secs(5)));
    let reply = client
        .get(
            &format!("http://{registry}/v2/a/blobs/sha256:x"),
            &[("Authorization", "Bearer secret")],
        )
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.into_text(1024).unwrap(), "blob bytes");
    let first = registry_seen.recv().unwrap();
    assert_eq!(first.header("authorization"), Some("Bearer secret"));
    let second = storage_seen.recv().unwrap();
    assert_eq!(second.head[0], "GET /blob?sig=1 HTTP/1.1");
    assert_eq!(second.header("authorization"), None, "{:?}", second.head);
}

#[test]
fn error_statuses_are_answers_with_headers_and_body() {
    let (addr, seen) = serve(
        "127.0.0.1",
        vec![answer(
            "401 Unauthorized",
            &[
                "WWW-Authenticate: Bearer realm=\"a\"",
                "WWW-Authenticate: Basic realm=\"b\"",
            ],
            "{\"errors\":[]}",
        )],
    );
    let client = Client::new(&Options::registry(Duration::from_secs(5)));
    let reply = client.get(&format!("http://{addr}/v2/"), &[]).unwrap();
    assert_eq!(reply.status(), 401);
    assert_eq!(
        reply.header_all("www-authenticate"),
        ["Bearer realm=\"a\"", "Basic realm=\"b\""]
    );
    assert_eq!(reply.content_length(), Some(13));
    assert_eq!(reply.into_text(1024).unwrap(), "{\"errors\":[]}");
    let req = seen.recv().unwrap();
    assert!(
        req.header("user-agent").unwrap().starts_with("kiln/"),
        "{:?}",
        req.head
    );
    // The registry profile asks for no content coding, as before.
    assert_eq!(req.header("accept-encoding"), None);
}

#[test]
fn a_streamed_body_is_sent_with_its_length_and_a_form_is_encoded() {
    let (addr, seen) = serve(
        "127.0.0.1",
        vec![
            answer("201 Created", &["Location: /next"], ""),
            answer("200 OK", &[], "{}"),
        ],
    );
    let client = Client::new(&Options::registry(Duration::from_secs(5)));
    let data = b"0123456789".to_vec();
    let reply = client
        .send(
            "PATCH",
            &format!("http://{addr}/upload"),
            &[("Content-Type", "application/octet-stream")],
            Body::Stream(Box::new(&data[..]), data.len() as u64),
        )
        .unwrap();
    assert_eq!(reply.status(), 201);
    assert_eq!(reply.header("location"), Some("/next"));
    let req = seen.recv().unwrap();
    assert_eq!(req.head[0], "PATCH /upload HTTP/1.1");
    assert_eq!(req.header("content-length"), Some("10"));
    assert_eq!(req.header("transfer-encoding"), None);
    assert_eq!(req.body, data);

    client
        .post_form(
            &format!("http://{addr}/token"),
            &[("scope", "repository:a/b:pull push"), ("client_id", "kiln")],
        )
        .unwrap();
    let req = seen.recv().unwrap();
    assert_eq!(
        req.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        String::from_utf8(req.body).unwrap(),
        "scope=repository%3Aa%2Fb%3Apull+push&client_id=kiln"
    );
}

#[test]
fn a_silent_server_is_a_stall_within_the_timeout() {
    // Accepts, reads the request, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
        }
    });
    let client = Client::new(&Options::registry(Duration::from_millis(300)));
    let start = Instant::now();
    let err = client
        .get(&format!("http://{addr}/v2/"), &[])
        .err()
        .expect("a silent server answered");
    assert!(err.stalled, "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));

    // A stall in the middle of a body is an I/O error `is_stall` knows.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut conn = BufReader::new(conn);
        read_request(&mut conn);
        let _ = conn
            .get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf");
        std::thread::sleep(Duration::from_secs(3));
    });
    let reply = client.get(&format!("http://{addr}/blob"), &[]).unwrap();
    let mut buf = Vec::new();
    let e = reply.into_reader().read_to_end(&mut buf).unwrap_err();
    assert!(is_stall(&e), "{e:?}");
}

#[test]
fn a_refused_connection_is_a_failure_but_not_a_stall() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::new(&Options::downloads());
    let err = client
        .get(&format!("http://127.0.0.1:{port}/"), &[])
        .err()
        .expect("a closed port answered");
    assert!(!err.stalled, "{err}");
    assert!(!err.reason.is_empty());
}

#[test]
fn timeouts_parse_from_seconds() {
    assert_eq!(parse_timeout("2.5"), Ok(Duration::from_millis(2500)));
    assert_eq!(parse_timeout(" 30 "), Ok(Duration::from_secs(30)));
    for bad in ["0", "-1", "soon", "inf", "100000"] {
        assert!(parse_timeout(bad).is_err(), "{bad}");
    }
}

#[test]
fn encoders_keep_what_each_grammar_leaves_and_percent_encode_the_rest() {
    // RFC 3986 unreserved stay; '*', space and UTF-8 bytes are encoded.
    assert_eq!(encode_query("aZ09-_.~*/: é"), "aZ09-_.~%2A%2F%3A%20%C3%A9");
    // Forms: '*' stays, '~' is encoded, a space is '+'.
    assert_eq!(form_encode("aZ09-_.* ~+ é"), "aZ09-_.*+%7E%2B+%C3%A9");
    assert_eq!(form_encode(" "), "+");
    assert_eq!(form_encode(""), "");
}
