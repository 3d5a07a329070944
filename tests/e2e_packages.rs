#![cfg(feature = "e2e")]
//! End-to-end tests of Debian package images against the real archive
//! (deb.debian.org), run under podman. Downloaded .debs and indexes are
//! shared by all tests (and the other suites) through
//! `support::shared_cache()`, so each package is fetched once per machine.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln::oci::store::Store;

use support::shared_cache;

struct Kiln {
    cache: PathBuf,
    data: PathBuf,
}

impl Kiln {
    fn shared(data: &Path) -> Kiln {
        Kiln {
            cache: shared_cache(),
            data: data.to_path_buf(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.args(["--progress", "plain"])
            .args(args)
            .env("KILN_CACHE_DIR", &self.cache)
            .env("KILN_DATA_DIR", &self.data)
            .env_remove("KILN_DEBIAN_MIRROR")
            .env_remove("SOURCE_DATE_EPOCH");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run kiln")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "kiln {args:?} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "kiln {args:?} should fail");
        String::from_utf8_lossy(&o.stderr).to_string()
    }

    /// Builds an image, exports it as an OCI layout and returns (manifest digest, layout dir).
    fn build(&self, tag: &str, args: &[&str], out: &Path) -> String {
        let dest = format!("type=oci,dest={}", out.display());
        let mut all = vec!["image", "packages", "-t", tag, "-o", &dest];
        all.extend_from_slice(args);
        let stdout = self.ok(&all);
        stdout
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no digest in {stdout:?}"))
            .to_string()
    }
}

/// CA certificates this machine trusts locally (e.g. an egress proxy's):
/// the images must trust them too to reach the npm registry from here.
fn local_ca_args() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/usr/local/share/ca-certificates") {
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "crt"))
        {
            out.push("--ca-cert".to_string());
            out.push(f.display().to_string());
        }
    }
    out
}

fn tool(name: &str, args: &[&str]) -> Output {
    Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} is required for this test ({e}); install it"))
}

/// Loads an OCI layout into podman's storage under `name`.
fn load(layout: &Path, tag: &str, name: &str) {
    let o = tool(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("oci:{}:{tag}", layout.display()),
            &format!("containers-storage:{name}"),
        ],
    );
    assert!(
        o.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn podman(image: &str, cmd: &[&str]) -> Output {
    support::podman::run_cmd()
        .arg("--rm")
        .arg(image)
        .args(cmd)
        .output()
        .unwrap_or_else(|e| panic!("podman is required for this test ({e}); run ./scripts/test"))
}

fn podman_ok(image: &str, cmd: &[&str]) -> String {
    let o = podman(image, cmd);
    assert!(
        o.status.success(),
        "{cmd:?} in {image} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// (created_by, layer digest) of the image in an OCI layout.
fn layers(layout: &Path) -> Vec<(String, String)> {
    let read = |d: &str| -> serde_json::Value {
        let hex = d.trim_start_matches("sha256:");
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let config = read(manifest["config"]["digest"].as_str().unwrap());
    let history: Vec<String> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| !h["empty_layer"].as_bool().unwrap_or(false))
        .map(|h| h["created_by"].as_str().unwrap_or("").to_string())
        .collect();
    let digests: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(history.len(), digests.len());
    history.into_iter().zip(digests).collect()
}

fn resolved_names(k: &Kiln, args: &[&str]) -> BTreeSet<String> {
    let mut all = vec!["packages", "resolve"];
    all.extend_from_slice(args);
    k.ok(&all)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split('\t').next().map(str::to_string))
        .collect()
}

#[test]
fn node_image_reaches_the_npm_registry_over_verified_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let k = Kiln::shared(tmp.path());
    let registry = String::from_utf8_lossy(&tool("npm", &["config", "get", "registry"]).stdout)
        .trim()
        .to_string();
    assert!(
        registry.starts_with("https://"),
        "npm registry {registry:?}"
    );
    let host = registry
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let layout = tmp.path().join("oci");
    let ca = local_ca_args();
    let mut args: Vec<&str> = vec!["--suite", "trixie", "--base", "minimal"];
    args.extend(ca.iter().map(String::as_str));
    args.extend(["nodejs", "curl"]);
    k.build("e2e-node:1", &args, &layout);
    load(&layout, "1", "localhost/kiln-e2e-node:1");
    let script = format!(
        "require('https').get({registry:?}, r => {{ console.log('status ' + r.statusCode); r.resume(); }}).on('error', e => {{ console.error(e.message); process.exit(1); }})"
    );
    let out = podman_ok("localhost/kiln-e2e-node:1", &["node", "-e", &script]);
    let status: u16 = out
        .lines()
        .find_map(|l| l.strip_prefix("status "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no status in {out}"));
    assert!((200..500).contains(&status), "{out}");
    // curl and openssl verify against the generated bundle.
    let code = podman_ok(
        "localhost/kiln-e2e-node:1",
        &[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &registry,
        ],
    );
    assert!(code.trim().parse::<u16>().is_ok(), "{code}");
    let s = podman_ok(
        "localhost/kiln-e2e-node:1",
        &[
            "sh",
            "-c",
            &format!(
                "openssl s_client -connect {host}:443 -servername {host} -verify_return_error -brief </dev/null 2>&1"
            ),
        ],
    );
    assert!(
        s.contains("Verification: OK") || s.contains("CONNECTION ESTABLISHED"),
        "{s}"
    );
    // Without the bundle, verification fails: the bundle is what makes it work.
    let no = podman(
        "localhost/kiln-e2e-node:1",
        &[
            "curl",
            "-sS",
            "--cacert",
            "/dev/null",
            "--capath",
            "/nonexistent",
            "-o",
            "/dev/null",
            &registry,
        ],
    );
    assert!(!no.status.success());
}

#[test]
fn python_image_has_ssl_sqlite_and_an_exact_dpkg_database() {
    let tmp = tempfile::tempdir().unwrap();
    let k = Kiln::shared(tmp.path());
    let layout = tmp.path().join("oci");
    let args = ["--suite", "trixie", "python3", "dpkg"];
    k.build("e2e-python:1", &args, &layout);
    load(&layout, "1", "localhost/kiln-e2e-python:1");
    let out = podman_ok(
        "localhost/kiln-e2e-python:1",
        &[
            "python3",
            "-c",
            "import ssl, sqlite3, json; print(ssl.OPENSSL_VERSION)",
        ],
    );
    assert!(out.contains("OpenSSL 3."), "{out}");
    // dpkg sees exactly the resolved set, with every file list present.
    let listed: BTreeSet<String> = podman_ok(
        "localhost/kiln-e2e-python:1",
        &["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n"],
    )
    .lines()
    .map(|l| {
        assert!(l.ends_with("ii "), "not installed: {l}");
        l.split(' ').next().unwrap().to_string()
    })
    .collect();
    let expected = resolved_names(
        &k,
        &["--suite", "trixie", "--base", "minimal", "python3", "dpkg"],
    );
    assert_eq!(listed, expected);
    // `dpkg -l` (what people type) shows the same set, all `ii`.
    let dash_l: BTreeSet<String> = podman_ok(
        "localhost/kiln-e2e-python:1",
        &["sh", "-c", "COLUMNS=300 dpkg -l"],
    )
    .lines()
    .filter_map(|l| l.strip_prefix("ii  "))
    .filter_map(|l| l.split_whitespace().next())
    .map(|n| n.split(':').next().unwrap_or(n).to_string())
    .collect();
    assert_eq!(dash_l, expected);
    // Docs, manual pages and translations are left out (copyright files
    // stay), but dpkg still knows which package ships them, as with
    // dpkg's path-exclude.
    let docs = podman_ok(
        "localhost/kiln-e2e-python:1",
        &[
            "sh",
            "-c",
            "test -f /usr/share/doc/coreutils/copyright && echo copyright; \
             test -e /usr/share/man/man1/ls.1.gz || echo no-man; \
             test -e /usr/share/locale/de/LC_MESSAGES/coreutils.mo || echo no-mo; \
             test -e /usr/share/doc/coreutils/changelog.Debian.gz || echo no-changelog; \
             dpkg -S /usr/share/man/man1/ls.1.gz",
        ],
    );
    for want in [
        "copyright",
        "no-man",
        "no-mo",
        "no-changelog",
        "coreutils: /usr/share/man/man1/ls.1.gz",
    ] {
        assert!(docs.contains(want), "{want} in {docs}");
    }
    let kept = tmp.path().join("kept");
    k.build(
        "e2e-python-docs:1",
        &["--keep-docs", "--suite", "trixie", "python3", "dpkg"],
        &kept,
    );
    load(&kept, "1", "localhost/kiln-e2e-python-docs:1");
    podman_ok(
        "localhost/kiln-e2e-python-docs:1",
        &[
            "sh",
            "-c",
            "test -f /usr/share/man/man1/ls.1.gz && test -f /usr/share/locale/de/LC_MESSAGES/coreutils.mo",
        ],
    );
    let owner = podman_ok(
        "localhost/kiln-e2e-python:1",
        &["dpkg", "-S", "/usr/bin/python3"],
    );
    assert!(owner.starts_with("python3"), "{owner}");
    let audit = podman_ok("localhost/kiln-e2e-python:1", &["dpkg", "--audit"]);
    assert!(audit.trim().is_empty(), "{audit}");
    // The python and node images share the libc6 layer byte for byte.
    let node = tmp.path().join("node");
    k.build("e2e-node-plain:1", &["--suite", "trixie", "nodejs"], &node);
    let libc = |l: &Path| {
        layers(l)
            .into_iter()
            .find(|(by, _)| by == "kiln packages: libc6")
            .map(|(_, d)| d)
            .expect("a libc6 layer")
    };
    assert_eq!(libc(&layout), libc(&node));
}

#[test]
fn toolchains_run_java_go_ruby_php() {
    let tmp = tempfile::tempdir().unwrap();
    let k = Kiln::shared(tmp.path());
    let layout = tmp.path().join("oci");
    k.build(
        "e2e-tools:1",
        &[
            "--suite",
            "trixie",
            "openjdk-21-jre-headless",
            "golang-go",
            "ruby",
            "php-cli",
        ],
        &layout,
    );
    load(&layout, "1", "localhost/kiln-e2e-tools:1");
    let img = "localhost/kiln-e2e-tools:1";
    assert!(podman_ok(img, &["java", "-version"]).contains("openjdk version \"21"));
    assert!(
        podman_ok(img, &["readlink", "-f", "/usr/bin/java"])
            .contains("/usr/lib/jvm/java-21-openjdk")
    );
    assert!(podman_ok(img, &["go", "version"]).contains("go version go1.24"));
    assert!(podman_ok(img, &["ruby", "-v"]).starts_with("ruby 3."));
    assert!(podman_ok(img, &["php", "-v"]).starts_with("PHP 8."));
    let ld = podman_ok(
        img,
        &[
            "sh",
            "-c",
            "test -s /etc/ld.so.cache && head -1 /etc/passwd && cat /etc/timezone",
        ],
    );
    assert!(ld.starts_with("root:") && ld.contains("Etc/UTC"), "{ld}");
}

#[test]
fn node_image_is_reproducible_on_clean_caches_and_from_a_lockfile() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = Kiln::shared(tmp.path());
    let args = ["--suite", "trixie", "nodejs"];
    // Make sure the shared store has the .debs, then build twice on fresh
    // caches that only get those .deb blobs (no indexes, no layers).
    let lockfile = tmp.path().join("kiln.lock");
    let mut lock_args = vec!["lock", "-o", lockfile.to_str().unwrap()];
    lock_args.extend_from_slice(&args);
    shared.ok(&lock_args);
    let first = shared.build("e2e-repro:1", &args, &tmp.path().join("oci0"));
    let lock = kiln::packages::lock::Lockfile::read(&lockfile).unwrap();
    let mut digests = Vec::new();
    for i in 1..=2 {
        let cache = tmp.path().join(format!("cache{i}"));
        let from = Store::open(shared_cache().join("store")).unwrap();
        let to = Store::open(cache.join("store")).unwrap();
        for p in &lock.packages {
            to.import_from(&from, &p.digest().unwrap()).unwrap();
        }
        let k = Kiln {
            cache,
            data: tmp.path().join(format!("data{i}")),
        };
        digests.push(k.build("e2e-repro:1", &args, &tmp.path().join(format!("oci{i}"))));
    }
    assert_eq!(digests[0], digests[1]);
    assert_eq!(digests[0], first);
    // With the lockfile: the same image, without reading any index.
    let locked = shared.build(
        "e2e-repro:2",
        &["--lock", lockfile.to_str().unwrap(), "--offline"],
        &tmp.path().join("oci3"),
    );
    assert_eq!(locked, first);
    // A file the mirror no longer has is a clear failure.
    let mut gone = lock.clone();
    let idx = gone
        .packages
        .iter()
        .position(|p| p.name == "nodejs")
        .unwrap();
    gone.packages[idx].filename = "pool/main/n/nodejs/nodejs_0.0.0-gone_amd64.deb".into();
    gone.packages[idx].sha256 = "0".repeat(64);
    let gone_path = tmp.path().join("gone.lock");
    gone.write(&gone_path).unwrap();
    let err = shared.fails(&[
        "image",
        "packages",
        "-t",
        "gone",
        "--lock",
        gone_path.to_str().unwrap(),
    ]);
    assert!(
        err.contains("nodejs_0.0.0-gone_amd64.deb") && err.contains("404"),
        "{err}"
    );
}

#[test]
fn bad_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let k = Kiln::shared(tmp.path());
    let e = k.fails(&["packages", "resolve", "--suite", "trixie", "nodejz"]);
    assert!(
        e.contains("unknown package \"nodejz\"") && e.contains("nodejs"),
        "{e}"
    );
    let e = k.fails(&[
        "packages",
        "resolve",
        "--suite",
        "trixie",
        "postfix",
        "exim4-daemon-light",
    ]);
    assert!(
        e.contains("conflicts") && e.contains("mail-transport-agent"),
        "{e}"
    );
    let e = k.fails(&["packages", "resolve", "nodejs@18", "python3@3.13"]);
    assert!(
        e.contains("no Debian suite satisfies") && e.contains("bookworm: nodejs → 18."),
        "{e}"
    );
    let e = k.fails(&["packages", "resolve", "--suite", "trixie", "python3@3.11"]);
    assert!(
        e.contains("no version of python3 in trixie matches python3@3.11"),
        "{e}"
    );
    let e = k.fails(&["packages", "resolve", "Bad_Name"]);
    assert!(e.contains("not a package request"), "{e}");
    // Version requests pick the suite.
    let out = k.ok(&["packages", "resolve", "python3@3.11"]);
    assert!(out.starts_with("# suite bookworm"), "{out}");
    let why = k.ok(&[
        "packages", "resolve", "--suite", "trixie", "--why", "libc6", "nodejs",
    ]);
    assert!(why.lines().last().unwrap().contains("requested"), "{why}");

    // Unreachable mirror: clear error; --offline works from the cached indexes.
    let fresh = Kiln {
        cache: tmp.path().join("fresh"),
        data: tmp.path().join("data"),
    };
    let e = fresh.fails(&[
        "packages",
        "resolve",
        "--suite",
        "trixie",
        "--mirror",
        "http://127.0.0.1:9/debian",
        "hello",
    ]);
    assert!(e.contains("127.0.0.1:9") && e.contains("reachable"), "{e}");
    let e = fresh.fails(&[
        "packages",
        "resolve",
        "--suite",
        "trixie",
        "--offline",
        "hello",
    ]);
    assert!(
        e.contains("--offline") && e.contains("without --offline"),
        "{e}"
    );
    let out = k.ok(&[
        "packages",
        "resolve",
        "--suite",
        "trixie",
        "--offline",
        "nodejs",
    ]);
    assert!(out.contains("\nnodejs\t"), "{out}");
}

/// Serves the real (cached) InRelease files, optionally altered, and
/// garbage for every index: kiln must refuse both.
fn tampering_mirror(tamper_release: bool) -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let root = shared_cache().join("packages/inrelease");
    let h = std::thread::spawn(move || {
        for s in l.incoming().take(12) {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
            // /debian/dists/trixie/InRelease → http___deb.debian.org_debian_trixie
            let body = if let Some(rest) = path.strip_suffix("/InRelease") {
                let mut parts = rest.trim_start_matches('/').splitn(3, '/');
                let (archive, _, dist) = (
                    parts.next().unwrap_or(""),
                    parts.next(),
                    parts.next().unwrap_or(""),
                );
                let f = root.join(format!("http___deb.debian.org_{archive}_{dist}/InRelease"));
                let mut b = std::fs::read(f).unwrap_or_default();
                if tamper_release && let Some(i) = b.windows(7).position(|w| w == b"Suite: ") {
                    b[i + 7] ^= 0x20;
                }
                b
            } else {
                b"not the index you are looking for".to_vec()
            };
            let status = if body.is_empty() {
                "404 Not Found"
            } else {
                "200 OK"
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    (format!("http://127.0.0.1:{port}/debian"), h)
}

#[test]
fn tampered_indexes_and_debs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let k = Kiln::shared(tmp.path());
    // Make sure the real InRelease files are cached.
    k.ok(&["packages", "resolve", "--suite", "trixie", "netbase"]);
    let fresh = |n: &str| Kiln {
        cache: tmp.path().join(n),
        data: tmp.path().join("data"),
    };
    let (mirror, _h) = tampering_mirror(false);
    let e = fresh("a").fails(&[
        "packages", "resolve", "--suite", "trixie", "--mirror", &mirror, "netbase",
    ]);
    assert!(
        e.contains("signed Release says") && e.contains("refused"),
        "{e}"
    );
    let (mirror, _h) = tampering_mirror(true);
    let e = fresh("b").fails(&[
        "packages", "resolve", "--suite", "trixie", "--mirror", &mirror, "netbase",
    ]);
    assert!(
        e.contains("OpenPGP signature does not verify") && e.contains("BADSIG"),
        "{e}"
    );

    // A corrupt .deb in the cache is refused, not unpacked.
    let lockfile = tmp.path().join("kiln.lock");
    k.ok(&[
        "lock",
        "-o",
        lockfile.to_str().unwrap(),
        "--suite",
        "trixie",
        "--base",
        "none",
        "netbase",
    ]);
    let lock = kiln::packages::lock::Lockfile::read(&lockfile).unwrap();
    assert_eq!(lock.packages.len(), 1);
    let c = fresh("c");
    let store = Store::open(c.cache.join("store")).unwrap();
    let p = store.blob_path(&lock.packages[0].digest().unwrap());
    std::fs::write(&p, b"not a deb").unwrap();
    let e = c.fails(&[
        "image",
        "packages",
        "-t",
        "bad",
        "--lock",
        lockfile.to_str().unwrap(),
        "--base",
        "none",
    ]);
    assert!(e.contains("corrupt") && e.contains("netbase"), "{e}");
}
