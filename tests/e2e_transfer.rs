#![cfg(feature = "e2e")]
//! `kiln push NAME ssh://…` end to end against a real OpenSSH server on
//! loopback (tests/support/sshd.rs) with a fresh user account as the
//! server. skopeo reads what arrived, podman runs it, and the server's
//! store is checked blob by blob. Debian packages come from a cache shared
//! with e2e_packages, so each .deb is downloaded once per machine.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln::oci::image::closure;
use kiln::oci::layout::{Layout, ref_name};
use kiln::oci::{Digest, ImageStore, Store};
use serde_json::Value;
use support::sshd::{self, Sshd};

macro_rules! need_sshd {
    () => {
        if let Some(why) = sshd::unavailable() {
            eprintln!("skipping: {why}");
            return;
        }
    };
}

/// A kiln home (own data dir) sharing the packages cache.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.args(["--progress", "plain"])
            .args(args)
            .env("KILN_CACHE_DIR", support::shared_cache())
            .env("KILN_DATA_DIR", self.data())
            .env("NO_COLOR", "1")
            .env_remove("KILN_SSH_CONFIG")
            .env_remove("SOURCE_DATE_EPOCH")
            .current_dir(self.dir.path());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "kiln {args:?} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `kiln push NAME URL -F CONFIG --json …`, parsed.
    fn push(&self, sshd: &Sshd, name: &str, url: &str, extra: &[&str]) -> Value {
        let config = sshd.config.to_str().unwrap();
        let mut args = vec!["push", name, url, "-F", config, "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    /// Fails; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "kiln {args:?} should fail");
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn images(&self) -> ImageStore {
        ImageStore::open(self.data().join("images")).unwrap()
    }

    /// Blob digest → size of every blob of the named image.
    fn blobs(&self, name: &str) -> Vec<(Digest, u64)> {
        let images = self.images();
        let desc = images.resolve(name).unwrap();
        closure(images.blobs(), &desc)
            .unwrap()
            .into_iter()
            .map(|(d, _)| {
                let n = images.blobs().size(&d).unwrap();
                (d, n)
            })
            .collect()
    }
}

/// The node base image from Debian packages, plus an app directory whose
/// Dockerfile adds one layer.
fn node_app(home: &Home, message: &str) -> PathBuf {
    let app = home.dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("Dockerfile"),
        "FROM node\nCOPY app.js /app/app.js\nCMD [\"node\", \"/app/app.js\"]\n",
    )
    .unwrap();
    std::fs::write(app.join("app.js"), format!("console.log({message:?});\n")).unwrap();
    app
}

/// Checks the server's layout: every blob's sha256 matches its name, and
/// every tag's closure is present. Returns the tags.
fn verify_remote(root: &Path) -> BTreeSet<String> {
    let dir = root.join("blobs/sha256");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // a temp file: never a blob name
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        assert_eq!(
            Digest::of(&bytes).hex(),
            name,
            "remote blob {name} is corrupt"
        );
    }
    let store = Store::read_only(root);
    let layout = Layout::open(root).unwrap();
    let mut tags = BTreeSet::new();
    for m in layout.index().unwrap().manifests() {
        for (d, _) in closure(&store, m).unwrap() {
            assert!(
                store.contains(&d),
                "tag {:?} points at missing {d}",
                ref_name(m)
            );
        }
        tags.insert(ref_name(m).unwrap_or_default().to_string());
    }
    tags
}

/// Pids of ssh control masters using this client config.
fn ssh_masters(config: &Path) -> Vec<String> {
    let needle = config.to_str().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            (args.iter().any(|a| a == needle) && args.iter().any(|a| a == "-M"))
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

fn skopeo_inspect(sshd: &Sshd, root: &str, tag: &str) -> Value {
    let out = sshd.ssh_ok(
        "server",
        &format!("skopeo inspect --raw oci:{root}:{tag} | sha256sum"),
    );
    Value::String(out.split_whitespace().next().unwrap().to_string())
}

#[test]
fn node_app_first_and_incremental_transfer_then_podman_runs_it() {
    need_sshd!();
    let sshd = Sshd::start();
    let home = Home::new();
    home.ok(&[
        "image", "packages", "-t", "node", "--suite", "trixie", "nodejs",
    ]);
    let app = node_app(&home, "hello v1");
    home.ok(&["build", app.to_str().unwrap(), "-t", "app:1"]);
    let v1 = home.blobs("app:1");

    // First transfer, to the default store in the server user's data dir.
    let first = home.push(&sshd, "app:1", "ssh://server", &[]);
    let root = sshd.home.join(".local/share/kiln/images");
    assert_eq!(first["remote_path"], root.to_str().unwrap());
    assert_eq!(first["blobs_sent"], v1.len(), "{first}");
    assert_eq!(first["blobs_present"], 0);
    let total: u64 = v1.iter().map(|(_, n)| n).sum();
    assert_eq!(first["bytes_sent"], total);
    // skopeo, as the server user, reads the manifest kiln says it sent.
    let digest = first["digest"].as_str().unwrap();
    let raw_sum = skopeo_inspect(&sshd, root.to_str().unwrap(), "app:1");
    assert_eq!(format!("sha256:{}", raw_sum.as_str().unwrap()), digest);
    let inspect: Value = serde_json::from_str(&sshd.ssh_ok(
        "server",
        &format!("skopeo inspect oci:{}:app:1", root.display()),
    ))
    .unwrap();
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), v1.len() - 2);
    assert_eq!(verify_remote(&root), BTreeSet::from(["app:1".to_string()]));

    // One-line change, rebuild: only the app layer, config and manifest go.
    node_app(&home, "hello v2");
    home.ok(&["build", app.to_str().unwrap(), "-t", "app:1"]);
    let v2 = home.blobs("app:1");
    let old: BTreeSet<&Digest> = v1.iter().map(|(d, _)| d).collect();
    let changed: Vec<&(Digest, u64)> = v2.iter().filter(|(d, _)| !old.contains(d)).collect();
    assert_eq!(
        changed.len(),
        3,
        "app layer + config + manifest: {changed:?}"
    );
    let changed_bytes: u64 = changed.iter().map(|(_, n)| n).sum();
    let second = home.push(&sshd, "app:1", "ssh://server", &[]);
    assert_eq!(second["blobs_sent"], 3, "{second}");
    assert_eq!(second["blobs_present"], v2.len() - 3);
    let sent = second["bytes_sent"].as_u64().unwrap();
    assert!(
        sent as f64 <= 1.1 * changed_bytes as f64,
        "sent {sent} bytes for {changed_bytes} bytes of changed blobs"
    );
    assert!(sent > 0);
    assert_ne!(second["digest"], first["digest"]);
    verify_remote(&root);

    // --load podman (as root on the same sshd: podman here runs as root),
    // then podman runs what the server loaded.
    let store2 = sshd.dir.path().join("root-store");
    let url = format!("ssh://root{}", store2.display());
    let loaded = home.push(&sshd, "app:1", &url, &["--load", "podman"]);
    let ran = loaded["loaded"].as_str().unwrap();
    assert!(ran.starts_with("skopeo copy oci:"), "{ran}");
    assert!(ran.ends_with("containers-storage:localhost/app:1"), "{ran}");
    let out = support::podman::run_cmd()
        .args(["--rm", "localhost/app:1"])
        .output()
        .unwrap();
    let _ = support::podman::podman()
        .args(["rmi", "-f", "localhost/app:1"])
        .output();
    assert!(
        out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello v2");
}

#[test]
fn killed_transfer_resumes_and_never_tags_missing_blobs() {
    need_sshd!();
    let sshd = Sshd::start();
    let home = Home::new();
    // Small layers first, then one large incompressible one.
    let dir = home.dir.path().join("big");
    std::fs::create_dir_all(dir.join("small")).unwrap();
    std::fs::write(dir.join("small/a.txt"), "small layer\n").unwrap();
    home.ok(&[
        "image",
        "from-dir",
        dir.join("small").to_str().unwrap(),
        "-t",
        "small",
    ]);
    let mut data = vec![0u8; 120 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in data.chunks_mut(8) {
        // xorshift: incompressible and fast.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(dir.join("blob.bin"), &data).unwrap();
    drop(data);
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM small\nCOPY blob.bin /blob.bin\n",
    )
    .unwrap();
    home.ok(&["build", dir.to_str().unwrap(), "-t", "big:1"]);
    let blobs = home.blobs("big:1");

    let root = sshd.dir.path().join("srv-store");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let url = format!("ssh://server{}", root.display());

    let config = sshd.config.to_str().unwrap();
    let mut child = home
        .cmd(&["push", "big:1", &url, "-F", config, "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill kiln once the large blob is partly on the server.
    let blob_dir = root.join("blobs/sha256");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut killed_at = None;
    while Instant::now() < deadline {
        let partial = std::fs::read_dir(&blob_dir).ok().and_then(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(".kiln-tmp-"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .find(|n| *n > (8 << 20))
        });
        if let Some(n) = partial {
            child.kill().unwrap();
            killed_at = Some(n);
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = child.wait().unwrap();
    let n = killed_at
        .unwrap_or_else(|| panic!("the transfer ended ({status}) before it could be killed"));
    assert!(!status.success());
    eprintln!("killed kiln with {n} bytes of the large blob on the server");
    // Let the orphaned ssh finish its EOF (the server drops the temp file).
    std::thread::sleep(Duration::from_millis(500));
    let masters = ssh_masters(&sshd.config);
    assert!(
        masters.is_empty(),
        "the killed kiln left ssh masters: {masters:?}"
    );
    let tags = verify_remote(&root);
    assert!(
        tags.is_empty(),
        "no tag after an interrupted transfer: {tags:?}"
    );

    let rerun = home.push(&sshd, "big:1", &url, &[]);
    assert_eq!(
        rerun["blobs_sent"].as_u64().unwrap() + rerun["blobs_present"].as_u64().unwrap(),
        blobs.len() as u64
    );
    assert!(
        rerun["blobs_present"].as_u64().unwrap() >= 1,
        "the small layer was kept: {rerun}"
    );
    assert_eq!(verify_remote(&root), BTreeSet::from(["big:1".to_string()]));
    let names: Vec<String> = std::fs::read_dir(&blob_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "temp files left: {names:?}"
    );
    // An independent reader agrees.
    sshd.ssh_ok(
        "server",
        &format!("skopeo inspect oci:{}:big:1", root.display()),
    );
}

#[test]
fn changed_host_key_and_missing_sha256sum_are_refused() {
    need_sshd!();
    let sshd = Sshd::start();
    let home = Home::new();
    let dir = home.dir.path().join("tiny");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("x"), "x\n").unwrap();
    home.ok(&["image", "from-dir", dir.to_str().unwrap(), "-t", "tiny"]);
    let config = sshd.config.to_str().unwrap();

    let root = sshd.home.join("refused");
    let url = format!("ssh://badkey{}", root.display());
    let err = home.fails(&["push", "tiny", &url, "-F", config]);
    assert!(err.contains("host key"), "{err}");
    assert!(err.contains("known_hosts"), "{err}");
    assert!(!root.exists(), "nothing written past a bad host key");

    let url = format!("ssh://nosum{}", root.display());
    let err = home.fails(&["push", "tiny", &url, "-F", config]);
    assert!(err.contains("lacks `sha256sum`"), "{err}");
    assert!(!root.exists(), "nothing written without sha256sum");

    // KILN_SSH_CONFIG works as -F does.
    let out = home
        .cmd(&["push", "tiny", &format!("ssh://server{}", root.display())])
        .env("KILN_SSH_CONFIG", &sshd.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(3 blobs sent, 0 already there"), "{text}");
    assert_eq!(
        verify_remote(&root),
        BTreeSet::from(["tiny:latest".to_string()])
    );

    // Without GNU head kiln sends blob by blob, then tags in a second step.
    let root = sshd.home.join("nohead");
    let url = format!("ssh://nohead{}", root.display());
    let v = home.push(&sshd, "tiny", &url, &[]);
    let counts = |v: &Value| (v["blobs_sent"].as_u64(), v["blobs_present"].as_u64());
    assert_eq!(counts(&v), (Some(3), Some(0)), "{v}");
    let tags = verify_remote(&root);
    assert_eq!(tags, BTreeSet::from(["tiny:latest".to_string()]));
    let v = home.push(&sshd, "tiny", &url, &[]);
    assert_eq!(counts(&v), (Some(0), Some(3)), "{v}");
}

#[test]
fn bad_input_is_refused_clearly() {
    let home = Home::new();
    let dir = home.dir.path().join("tiny");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("x"), "x\n").unwrap();
    home.ok(&["image", "from-dir", dir.to_str().unwrap(), "-t", "tiny"]);
    for (url, needle) in [
        ("ssh://", "no host"),
        ("ssh://web1:99999", "invalid port"),
        ("ssh://@web1", "empty user"),
        ("ssh://-oProxyCommand=touch%20x", "invalid host"),
        ("ssh://web1/a/../b", "'..'"),
    ] {
        let err = home.fails(&["push", "tiny", url]);
        assert!(err.contains(needle), "{url}: {err}");
    }
    // Nothing listens on port 1.
    let err = home.fails(&[
        "push",
        "tiny",
        "ssh://nobody@127.0.0.1:1/x",
        "-F",
        "/dev/null",
    ]);
    assert!(
        err.contains("cannot connect to ssh://nobody@127.0.0.1:1/x"),
        "{err}"
    );
    assert!(err.contains("unreachable"), "{err}");
    let err = home.fails(&["push", "nope:1", "ssh://127.0.0.1:1/x"]);
    assert!(err.contains("not in the local image store"), "{err}");
    let err = home.fails(&["push", "tiny", "ssh://web1", "-F", "/nonexistent/cfg"]);
    assert!(err.contains("/nonexistent/cfg does not exist"), "{err}");
    let err = home.fails(&["push", "tiny", "reg.example/tiny", "--load", "podman"]);
    assert!(err.contains("--load only applies to ssh://"), "{err}");
}

/// `kiln deploy ftl.yaml --ssh HOST`: the service without `image:` goes to
/// the server over SSH (the one with `image:` would be pushed), and the
/// output document names the image the server now has.
#[test]
fn deploy_sends_ftl_services_without_image_over_ssh() {
    need_sshd!();
    let sshd = Sshd::start();
    let home = Home::new();
    home.ok(&[
        "image", "packages", "-t", "node", "--suite", "trixie", "nodejs",
    ]);
    let app = node_app(&home, "hello from deploy");
    let root = home.dir.path();
    std::fs::write(
        root.join("ftl.yaml"),
        format!(
            "project:\n  name: shop\nservices:\n  - name: worker\n    path: {}\n",
            app.display()
        ),
    )
    .unwrap();
    let config = sshd.config.to_str().unwrap();
    let out = home.run(&["deploy", "ftl.yaml", "--ssh", "server", "-F", config]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Sending image for shop/worker"), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    let image = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: "))
        .unwrap_or_else(|| panic!("no image: in\n{text}"));
    let (name, digest) = image.split_once('@').unwrap();
    let remote = sshd.home.join(".local/share/kiln/images");
    assert!(
        verify_remote(&remote).contains(name),
        "{name} not on the server"
    );
    let raw_sum = skopeo_inspect(&sshd, remote.to_str().unwrap(), name);
    assert_eq!(format!("sha256:{}", raw_sum.as_str().unwrap()), digest);
    // A second deploy with nothing changed sends no blob.
    let out = home.run(&["deploy", "ftl.yaml", "--ssh", "server", "-F", config]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("(0 blobs sent"), "{stderr}");
}

#[test]
fn build_output_type_ssh_sends_the_built_image() {
    need_sshd!();
    let sshd = Sshd::start();
    let home = Home::new();
    let app = home.dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("Dockerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
    )
    .unwrap();
    std::fs::write(app.join("hello.txt"), "hello over ssh\n").unwrap();
    let app = app.to_str().unwrap();
    let config = sshd.config.to_str().unwrap();
    // A bad spec is refused before any work, naming the field.
    let err = home.fails(&["build", app, "-t", "hello:1", "-o", "type=ssh"]);
    assert!(err.contains("type=ssh needs dest=[USER@]HOST"), "{err}");
    assert!(!home.data().join("images").exists(), "nothing built");

    let remote = sshd.home.join("srv/images");
    let dest = format!("type=ssh,dest=server{}", remote.display());
    let out = home.run(&["build", app, "-t", "hello:1", "-o", &dest, "-F", config]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("sent hello:1 to ssh://server"), "{stderr}");
    assert_eq!(
        verify_remote(&remote),
        BTreeSet::from(["hello:1".to_string()])
    );
    // The server's tag names the very manifest the local store has.
    let local = home.images().resolve("hello:1").unwrap();
    let layout = Layout::open(&remote).unwrap();
    let index = layout.index().unwrap();
    assert_eq!(index.manifests().len(), 1);
    assert_eq!(index.manifests()[0].digest(), local.digest());
    assert_eq!(
        home.blobs("hello:1").len(),
        std::fs::read_dir(remote.join("blobs/sha256"))
            .unwrap()
            .count(),
        "every blob of the image, and nothing else, is on the server"
    );
    // Built again (cached): the server has every blob, none is sent.
    let out = home.run(&["build", app, "-t", "hello:1", "-o", &dest, "-F", config]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("(0 blobs sent"), "{stderr}");
}

#[test]
fn a_server_that_accepts_and_never_speaks_fails_within_the_timeout() {
    // Not sshd: accepts TCP connections and stays silent (no SSH banner).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
        }
    });
    let env = support::kiln::Kiln::new();
    let root = env.path("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello"), "hi\n").unwrap();
    env.ok(&["image", "from-dir", root.to_str().unwrap(), "-t", "app:1"]);
    let start = Instant::now();
    let mut child = env
        .cmd()
        .args([
            "push",
            "app:1",
            &format!("ssh://127.0.0.1:{port}/srv/images"),
            "--net-timeout",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kiln push to a silent ssh server hung for 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = start.elapsed();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("did not speak SSH within the timeout") && err.contains("--net-timeout"),
        "{err}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

/// An image index sent to a server whose engine has no skopeo beside it:
/// `--load podman` streams a docker archive of the one platform the
/// server's `uname -m` names (amd64 here), and podman runs that one.
#[test]
fn load_of_an_index_without_skopeo_takes_the_servers_platform() {
    need_sshd!();
    let sshd = Sshd::start();
    let home = Home::new();
    let dir = home.dir.path().join("multi");
    std::fs::create_dir_all(&dir).unwrap();
    // No RUN step: nothing runs emulated. Each platform's image says which
    // it is in a file named after it.
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nARG TARGETARCH\nCOPY hello /hello-$TARGETARCH\n",
    )
    .unwrap();
    std::fs::write(dir.join("hello"), "hello\n").unwrap();
    home.ok(&[
        "build",
        dir.to_str().unwrap(),
        "--platform",
        "linux/arm64,linux/amd64",
        "-t",
        "multi:1",
    ]);
    let store = sshd.dir.path().join("noskopeo-store");
    let url = format!("ssh://rootnoskopeo{}", store.display());
    let loaded = home.push(&sshd, "multi:1", &url, &["--load", "podman"]);
    let line = loaded["loaded"].as_str().unwrap();
    assert_eq!(line, "podman load", "{loaded}");
    let inspect = support::podman::podman()
        .args(["image", "inspect", "localhost/multi:1"])
        .output()
        .unwrap();
    let _ = support::podman::podman()
        .args(["rmi", "-f", "localhost/multi:1"])
        .output();
    assert!(
        inspect.status.success(),
        "podman has no localhost/multi:1: {}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let v: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v[0]["Architecture"], "amd64", "{v}");
    // The whole index is on the server too, for servers of either kind.
    let raw = sshd.ssh_ok(
        "root",
        &format!("skopeo inspect --raw oci:{}:multi:1", store.display()),
    );
    let index: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
}
