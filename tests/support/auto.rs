//! Auto-build test helpers: a kiln home (shared warm cache or empty),
//! example apps copied out of `examples/`, and running an image under
//! podman until it answers HTTP, then stopping it with SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::kiln::Kiln;
use super::registry::free_port;

/// Auto builds and their images, on the shared kiln runner.
impl Kiln {
    /// Builds `dir` as `name`, returning the manifest digest and the JSON events.
    pub fn build(&self, dir: &Path, name: &str) -> (String, Vec<serde_json::Value>) {
        let mut args = vec![
            "--progress".to_string(),
            "json".into(),
            "build".into(),
            dir.to_str().unwrap().into(),
            "-t".into(),
            name.into(),
            "--json".into(),
        ];
        args.extend(host_ca_args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.ok(&args);
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "build output is not JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let events = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (result["digest"].as_str().unwrap().to_string(), events)
    }

    pub fn layout(&self) -> String {
        format!("oci:{}", self.data().join("images").display())
    }
}

/// The host's extra CA certificates (`/usr/local/share/ca-certificates/*.crt`),
/// sorted.
pub fn host_ca_certs() -> Vec<PathBuf> {
    let mut certs: Vec<PathBuf> = std::fs::read_dir("/usr/local/share/ca-certificates")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "crt"))
        .collect();
    certs.sort();
    certs
}

/// Networks that intercept TLS need their CA in the build stage (npm, pip
/// and cargo downloads): the host's extra CAs, as `--ca-cert` flags.
pub fn host_ca_args() -> Vec<String> {
    host_ca_certs()
        .into_iter()
        .flat_map(|c| ["--ca-cert".to_string(), c.display().to_string()])
        .collect()
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (is the tool installed? run ./scripts/test)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let dst = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &dst);
        } else {
            std::fs::copy(&p, &dst).unwrap();
        }
    }
}

pub fn example(name: &str, parent: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    let dst = parent.join(name);
    copy_dir(&src, &dst);
    dst
}

pub fn http_get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf)
}

/// Removes the container and image even when an assertion fails.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = super::podman::podman()
            .args(["rm", "-f", &self.container])
            .output();
        let _ = super::podman::podman()
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

/// Loads `name` from the home's image store into podman, runs it with
/// `PORT`, expects `expect` in the HTTP answer, then SIGTERM and an exit
/// within 10 s. Returns the image's size in bytes as podman reports it.
pub fn serve_and_stop(home: &Kiln, name: &str, expect: &str) -> u64 {
    let tag = format!("localhost/kiln-e2e-auto-{}", name.replace(':', "-"));
    let container = format!(
        "kiln-e2e-auto-{}-{}",
        name.replace(':', "-"),
        std::process::id()
    );
    let _podman = super::podman::lock();
    let _cleanup = Cleanup {
        container: container.clone(),
        image: tag.clone(),
    };
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        &format!("{}:{name}", home.layout()),
        &format!("containers-storage:{tag}"),
    ]));
    let port = free_port();
    run(super::podman::run_cmd().args([
        "-d",
        "--name",
        &container,
        "-e",
        &format!("PORT={port}"),
        &tag,
    ]));
    super::podman::wait_for_http(&container, port, expect, name);
    // SIGTERM reaches the app (no login-shell wrapper): it exits in time.
    let sent = Instant::now();
    run(super::podman::podman().args(["kill", "--signal", "TERM", &container]));
    loop {
        let state = run(super::podman::podman().args([
            "inspect",
            "--format",
            "{{.State.Running}}",
            &container,
        ]));
        if state.trim() == "false" {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "{name}: still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let size =
        run(super::podman::podman().args(["image", "inspect", "--format", "{{.Size}}", &tag]));
    size.trim().parse().unwrap_or(0)
}

/// Copies the example `name` under `parent`, builds it as `name:1`, and
/// [`serve_and_stop`]s it; prints the digest, build time and image size,
/// and returns the size in bytes.
pub fn build_and_serve(home: &Kiln, parent: &Path, name: &str, expect: &str) -> u64 {
    let dir = example(name, parent);
    let started = Instant::now();
    let (digest, _) = home.build(&dir, &format!("{name}:1"));
    let built = started.elapsed();
    let size = serve_and_stop(home, &format!("{name}:1"), expect);
    eprintln!(
        "{name}: {digest} built in {:.1}s, {:.1} MB",
        built.as_secs_f64(),
        size as f64 / 1e6
    );
    size
}

/// Layer digests of an image in the home's store.
pub fn layers(home: &Kiln, name: &str) -> Vec<String> {
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("{}:{name}", home.layout()),
    ]));
    let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

pub fn step_status<'a>(events: &'a [serde_json::Value], prefix: &str) -> Vec<&'a str> {
    let ids: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "start" && e["name"].as_str().is_some_and(|n| n.contains(prefix)))
        .filter_map(|e| e["id"].as_u64())
        .collect();
    events
        .iter()
        .filter(|e| e["event"] == "finish" && e["id"].as_u64().is_some_and(|i| ids.contains(&i)))
        .filter_map(|e| e["status"].as_str())
        .collect()
}

/// The names of the `RUN` steps a build's JSON events show as run (not
/// cached).
pub fn commands_run(events: &[serde_json::Value]) -> Vec<String> {
    let done: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "finish" && e["status"] == "done")
        .filter_map(|e| e["id"].as_u64())
        .collect();
    events
        .iter()
        .filter(|e| e["event"] == "start" && e["id"].as_u64().is_some_and(|i| done.contains(&i)))
        .filter_map(|e| e["name"].as_str())
        .filter(|n| n.contains("RUN "))
        .map(str::to_string)
        .collect()
}

/// Whether a build's JSON events show no step that ran (all cached).
pub fn ran_nothing(events: &[serde_json::Value]) -> bool {
    events
        .iter()
        .filter(|e| e["event"] == "finish")
        .all(|e| e["status"] != "done")
}
