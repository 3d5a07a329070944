//! End to end: `kiln build DIR` on apps without a Dockerfile (the auto
//! build). Each example is built by kiln from Debian's archive and the
//! registries its language uses, loaded into podman, started with
//! `--network host -e PORT=…`, asked over HTTP, then sent SIGTERM and
//! expected to exit within 10 s.
//!
//! Builds that need no empty cache share one kiln cache under
//! `$KILN_TEST_CACHE` (default `~/.cache/kiln-tests`), so a local rerun is
//! warm; the reproducibility test uses fresh homes in different dirs.
#![cfg(feature = "e2e")]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::registry::free_port;

fn test_cache() -> PathBuf {
    std::env::var_os("KILN_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or("/root".into())).join(".cache/kiln-tests")
        })
}

/// A kiln home: cache and data dirs.
struct Home {
    cache: PathBuf,
    data: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Home {
    /// The shared warm cache (its own data dir per test).
    fn shared() -> Home {
        let tmp = tempfile::tempdir().unwrap();
        Home {
            cache: test_cache().join("auto-cache"),
            data: tmp.path().join("data"),
            _tmp: Some(tmp),
        }
    }

    /// Empty cache and data dirs.
    fn fresh() -> Home {
        let tmp = tempfile::tempdir().unwrap();
        Home {
            cache: tmp.path().join("cache"),
            data: tmp.path().join("data"),
            _tmp: Some(tmp),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.env("KILN_CACHE_DIR", &self.cache)
            .env("KILN_DATA_DIR", &self.data)
            .env("NO_COLOR", "1")
            .env_remove("SOURCE_DATE_EPOCH")
            .stdin(Stdio::null());
        c
    }

    fn kiln(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.kiln(args);
        assert!(
            out.status.success(),
            "kiln {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Builds `dir` as `name`, returning the manifest digest and the JSON events.
    fn build(&self, dir: &Path, name: &str) -> (String, Vec<serde_json::Value>) {
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

    fn layout(&self) -> String {
        format!("oci:{}", self.data.join("images").display())
    }
}

/// Networks that intercept TLS need their CA in the build stage (npm, pip
/// and cargo downloads): the host's extra CAs, as `--ca-cert` flags.
fn host_ca_args() -> Vec<String> {
    let mut certs: Vec<PathBuf> = std::fs::read_dir("/usr/local/share/ca-certificates")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "crt"))
        .collect();
    certs.sort();
    certs
        .into_iter()
        .flat_map(|c| ["--ca-cert".to_string(), c.display().to_string()])
        .collect()
}

fn run(cmd: &mut Command) -> String {
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

fn copy_dir(from: &Path, to: &Path) {
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

fn example(name: &str, parent: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    let dst = parent.join(name);
    copy_dir(&src, &dst);
    dst
}

fn http_get(port: u16) -> Option<String> {
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
        let _ = support::podman::podman()
            .args(["rm", "-f", &self.container])
            .output();
        let _ = support::podman::podman()
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

/// Loads `name` from the home's image store into podman, runs it with
/// `PORT`, expects `expect` in the HTTP answer, then SIGTERM and an exit
/// within 10 s. Returns the image's size in bytes as podman reports it.
fn serve_and_stop(home: &Home, name: &str, expect: &str) -> u64 {
    let tag = format!("localhost/kiln-e2e-auto-{}", name.replace(':', "-"));
    let container = format!("kiln-e2e-auto-{}-{}", name.replace(':', "-"), std::process::id());
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
    run(support::podman::run_cmd().args([
        "-d",
        "--name",
        &container,
        "-e",
        &format!("PORT={port}"),
        &tag,
    ]));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(resp) = http_get(port)
            && resp.starts_with("HTTP/1.")
            && resp.contains(" 200 ")
        {
            assert!(resp.contains(expect), "{name}: unexpected answer:\n{resp}");
            break;
        }
        if Instant::now() > deadline {
            let logs = support::podman::podman()
                .args(["logs", &container])
                .output()
                .unwrap();
            panic!(
                "{name}: no HTTP 200 on port {port} within 90 s; container logs:\n{}{}",
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // SIGTERM reaches the app (no login-shell wrapper): it exits in time.
    let sent = Instant::now();
    run(support::podman::podman().args(["kill", "--signal", "TERM", &container]));
    loop {
        let state = run(support::podman::podman().args([
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
    let size = run(support::podman::podman().args(["image", "inspect", "--format", "{{.Size}}", &tag]));
    size.trim().parse().unwrap_or(0)
}

/// Layer digests of an image in the home's store.
fn layers(home: &Home, name: &str) -> Vec<String> {
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

fn step_status<'a>(events: &'a [serde_json::Value], prefix: &str) -> Vec<&'a str> {
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

const EXAMPLES: &[(&str, &str)] = &[
    ("node-npm", "Hello from node-npm"),
    ("node-pnpm", "Hello"),
    ("node-yarn", "Hello"),
    ("python-flask", "Hello"),
    ("go-mod", "Hello from go-mod"),
    ("staticfile", "<"),
];

#[test]
fn examples_build_and_answer_http() {
    let home = Home::shared();
    let tmp = tempfile::tempdir().unwrap();
    let only = std::env::var("KILN_AUTO_EXAMPLES").ok();
    let mut sizes = Vec::new();
    for (name, expect) in EXAMPLES {
        if only.as_deref().is_some_and(|o| !o.split(',').any(|x| x == *name)) {
            continue;
        }
        let dir = example(name, tmp.path());
        let started = Instant::now();
        let (digest, _) = home.build(&dir, &format!("{name}:1"));
        let built = started.elapsed();
        let size = serve_and_stop(&home, &format!("{name}:1"), expect);
        eprintln!(
            "{name}: {digest} built in {:.1}s, {:.1} MB",
            built.as_secs_f64(),
            size as f64 / 1e6
        );
        sizes.push((name, size));
        if *name == "go-mod" {
            assert!(size <= 30_000_000, "go image is {size} bytes, goal ≤ 30 MB");
        }
    }
}

/// A one-line source change: the dependency install step is CACHED and
/// exactly one layer (the app's) changes.
#[test]
fn one_line_change_reuses_the_install_step() {
    let home = Home::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("node-npm", tmp.path());
    let (first, _) = home.build(&dir, "edit:1");
    let before = layers(&home, "edit:1");
    let src = std::fs::read_to_string(dir.join("index.js")).unwrap();
    std::fs::write(
        dir.join("index.js"),
        src.replace("Hello from node-npm", "Hello again from node-npm"),
    )
    .unwrap();
    let (second, events) = home.build(&dir, "edit:2");
    assert_ne!(first, second, "the source change must change the image");
    assert_eq!(
        step_status(&events, "RUN npm ci"),
        vec!["cached"],
        "npm ci must be cached after a source edit"
    );
    let after = layers(&home, "edit:2");
    assert_eq!(before.len(), after.len());
    let changed: Vec<usize> = (0..before.len()).filter(|&i| before[i] != after[i]).collect();
    assert_eq!(changed, vec![before.len() - 1], "only the app layer changes");
    serve_and_stop(&home, "edit:2", "Hello again from node-npm");
    // Touching without changing re-runs nothing.
    let now = std::time::SystemTime::now();
    std::fs::File::options()
        .append(true)
        .open(dir.join("index.js"))
        .unwrap()
        .set_modified(now)
        .unwrap();
    let (third, events) = home.build(&dir, "edit:3");
    assert_eq!(third, second);
    assert!(
        events
            .iter()
            .filter(|e| e["event"] == "finish")
            .all(|e| e["status"] != "done"),
        "a touch must not re-run any step"
    );
}

/// Same source, empty caches, different directories ⇒ same digest.
#[test]
fn clean_builds_are_reproducible() {
    for name in ["node-npm", "go-mod"] {
        let mut digests = Vec::new();
        for _ in 0..2 {
            let home = Home::fresh();
            let tmp = tempfile::tempdir().unwrap();
            let dir = example(name, tmp.path());
            digests.push(home.build(&dir, "repro:1").0);
        }
        assert_eq!(digests[0], digests[1], "{name}: two clean builds differ");
    }
}

/// A failing build script: the failure report, exit code 4, nothing
/// tagged, and the rerun resumes from the cached steps.
#[test]
fn failing_build_script_reports_and_resumes() {
    let home = Home::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("node-npm", tmp.path());
    let pkg = std::fs::read_to_string(dir.join("package.json")).unwrap();
    std::fs::write(
        dir.join("package.json"),
        pkg.replace(
            "\"start\": \"node index.js\"",
            "\"start\": \"node index.js\", \"build\": \"echo compiling && echo broken >&2 && exit 7\"",
        ),
    )
    .unwrap();
    let mut args: Vec<String> = ["--progress", "plain", "build", dir.to_str().unwrap(), "-t", "broken:1"]
        .map(String::from)
        .to_vec();
    args.extend(host_ca_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = home.kiln(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("RUN npm run build"), "{err}");
    assert!(err.contains("exit code 7"), "{err}");
    assert!(err.contains("broken"), "the output tail is shown:\n{err}");
    let images = String::from_utf8_lossy(&home.ok(&["images"]).stdout).into_owned();
    assert!(!images.contains("broken"), "nothing is tagged:\n{images}");
    let mut args = args.clone();
    args[1] = "json";
    let out = home.kiln(&args);
    assert_eq!(out.status.code(), Some(4));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(step_status(&events, "RUN npm ci"), vec!["cached"]);
}
