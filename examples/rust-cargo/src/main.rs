//! A tiny HTTP server on std::net: parses requests with `httparse` and
//! answers every GET with a greeting. Listens on 0.0.0.0:$PORT (8080).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

fn handle(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 8192];
    let mut len = 0;
    loop {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                let (status, body) = match (req.method, req.path) {
                    (Some("GET"), Some(path)) => {
                        ("200 OK", format!("Hello from rust-cargo ({path})\n"))
                    }
                    _ => ("405 Method Not Allowed", "method not allowed\n".to_string()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                return stream.write_all(resp.as_bytes());
            }
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            _ => {
                let resp = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                return stream.write_all(resp.as_bytes());
            }
        }
    }
}

fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let listener = TcpListener::bind(("0.0.0.0", port.parse::<u16>().expect("PORT")))
        .expect("bind");
    println!("listening on 0.0.0.0:{port}");
    for stream in listener.incoming().flatten() {
        if let Err(e) = handle(stream) {
            eprintln!("request failed: {e}");
        }
    }
}
