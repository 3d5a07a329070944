//! The registry client against a real registry (Debian's docker-registry on
//! loopback), with skopeo as an independent reader and writer, a bearer
//! token front, and a fault-injecting proxy.
#![cfg(feature = "e2e")]
mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln::oci::layer::{EntryKind, FileSource};
use kiln::oci::{Compression, Digest, Entry, LayerOptions, Meta, Store};
use kiln::progress::Progress;
use kiln::registry::{
    Client, ClientOptions, CredentialSource, Credentials, Platform, PullOptions, PushOptions,
    Reference, pull, push,
};
use oci_spec::image::{Descriptor, DescriptorBuilder, MediaType};
use support::proxy::{Action, Proxy, Request, repository_of};
use support::registry::Registry;

// ---------- helpers ----------

/// Deterministic pseudo-random bytes (xorshift): incompressible, cheap.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An image whose layer `i` holds one file of `contents[i]`; returns the
/// manifest descriptor (manifest, config and layers are in `store`).
fn build_image(store: &Store, contents: &[Vec<u8>], arch: &str) -> Descriptor {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, c) in contents.iter().enumerate() {
        let entries = vec![
            Entry::new("data", EntryKind::Dir, Meta::root(0o755)).unwrap(),
            Entry::new(
                format!("data/layer{i}.bin"),
                EntryKind::File(FileSource::Bytes(c.clone().into())),
                Meta::root(0o644),
            )
            .unwrap(),
        ];
        let l = kiln::oci::layer::write_layer(
            store,
            entries,
            LayerOptions {
                compression: Compression::None,
                ..LayerOptions::default()
            },
        )
        .unwrap();
        diff_ids.push(l.diff_id.to_string());
        layers.push(serde_json::json!({"mediaType": l.media_type(), "digest": l.blob.digest.to_string(), "size": l.blob.size}));
    }
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = store
        .put(serde_json::to_vec(&config).unwrap().as_slice())
        .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest.to_string(), "size": config.size},
        "layers": layers,
    });
    let m = store
        .put(serde_json::to_vec(&manifest).unwrap().as_slice())
        .unwrap();
    descriptor(
        "application/vnd.oci.image.manifest.v1+json",
        &m.digest,
        m.size,
    )
}

fn descriptor(mt: &str, d: &Digest, size: u64) -> Descriptor {
    DescriptorBuilder::default()
        .media_type(MediaType::from(mt))
        .digest(d.to_oci())
        .size(size)
        .build()
        .unwrap()
}

fn digest_of(d: &Descriptor) -> Digest {
    Digest::from_oci(d.digest()).unwrap()
}

/// Every blob digest an image manifest names (config + layers).
fn blobs_of(store: &Store, manifest: &Digest) -> Vec<Digest> {
    let m: serde_json::Value = serde_json::from_slice(&store.read(manifest).unwrap()).unwrap();
    std::iter::once(&m["config"])
        .chain(m["layers"].as_array().unwrap())
        .map(|d| d["digest"].as_str().unwrap().parse().unwrap())
        .collect()
}

fn client() -> Client {
    Client::new(ClientOptions {
        credentials: CredentialSource::Fixed(None),
        backoff: Duration::from_millis(20),
        ..ClientOptions::default()
    })
}

fn client_with(creds: Option<Credentials>) -> Client {
    Client::new(ClientOptions {
        credentials: CredentialSource::Fixed(creds),
        backoff: Duration::from_millis(20),
        ..ClientOptions::default()
    })
}

fn r(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

fn skopeo(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed by ./scripts/test");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes an OCI layout holding `manifest` (and its blobs) tagged `tag`.
fn write_layout(store: &Store, manifest: &Descriptor, dir: &Path, tag: &str) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let md = digest_of(manifest);
    for d in std::iter::once(md.clone()).chain(blobs_of(store, &md)) {
        std::fs::copy(store.blob_path(&d), dir.join("blobs/sha256").join(d.hex())).unwrap();
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": manifest.media_type().to_string(), "digest": md.to_string(), "size": manifest.size(),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

fn kiln_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

// ---------- round trips and interop ----------

#[test]
fn push_then_pull_gives_identical_digests_and_skopeo_reads_it() {
    let reg = Registry::start();
    let src_dir = tempfile::tempdir().unwrap();
    let src = Store::open(src_dir.path()).unwrap();
    let image = build_image(
        &src,
        &[noise(1, 300_000), noise(2, 12 << 20), noise(3, 10)],
        "amd64",
    );
    let target = r(&format!("{}/kiln/round:v1", reg.addr));
    let progress = Progress::recording();
    let summary = push::push(
        &client(),
        &src,
        &image,
        &target,
        &PushOptions::default(),
        &progress,
    )
    .unwrap();
    assert_eq!(summary.blobs_sent, 4, "{summary:?}");
    assert_eq!(summary.blobs_skipped, 0);
    assert_eq!(summary.manifests_pushed, 1);
    assert_eq!(summary.digest, digest_of(&image).to_string());
    // Per-blob byte progress was reported, ending at each blob's size.
    let finals: Vec<u64> = progress
        .events()
        .iter()
        .filter_map(|e| match e {
            kiln::progress::Event::Bytes {
                done,
                total: Some(t),
                ..
            } if done == t => Some(*t),
            _ => None,
        })
        .collect();
    assert_eq!(finals.len(), 4, "one final byte count per blob: {finals:?}");
    assert!(finals.iter().any(|t| *t > 12 << 20), "{finals:?}");

    // skopeo reads what kiln pushed: same digest, same manifest bytes.
    let (ok, out, err) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]);
    assert!(ok, "skopeo inspect failed: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], summary.digest);
    assert_eq!(v["Layers"].as_array().unwrap().len(), 3);
    let (ok, raw, err) = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        raw.as_bytes(),
        src.read(&digest_of(&image)).unwrap().as_slice()
    );

    // Pull into a fresh store: same digests, every blob verified.
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Store::open(dst_dir.path()).unwrap();
    let pulled = pull::pull(
        &client(),
        &dst,
        &target,
        &PullOptions::default(),
        &Progress::quiet(),
    )
    .unwrap();
    assert_eq!(pulled.resolved, digest_of(&image));
    assert_eq!(digest_of(&pulled.manifest), digest_of(&image));
    assert_eq!(pulled.blobs_fetched, 4);
    let mut a = src.list().unwrap();
    let mut b = dst.list().unwrap();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert!(dst.verify(false).unwrap().is_ok());

    // Pulling again fetches nothing.
    let again = pull::pull(
        &client(),
        &dst,
        &target,
        &PullOptions::default(),
        &Progress::quiet(),
    )
    .unwrap();
    assert_eq!(
        (
            again.blobs_fetched,
            again.blobs_present,
            again.bytes_fetched
        ),
        (0, 4, 0)
    );
    // By digest too.
    let pinned = target.with_digest(digest_of(&image));
    let by_digest = pull::pull(
        &client(),
        &dst,
        &pinned,
        &PullOptions::default(),
        &Progress::quiet(),
    )
    .unwrap();
    assert_eq!(by_digest.resolved, digest_of(&image));
}

#[test]
fn kiln_pulls_what_skopeo_pushed() {
    let reg = Registry::start();
    let src_dir = tempfile::tempdir().unwrap();
    let src = Store::open(src_dir.path()).unwrap();
    let image = build_image(&src, &[noise(11, 1 << 20), noise(12, 5000)], "amd64");
    let layout = tempfile::tempdir().unwrap();
    write_layout(&src, &image, layout.path(), "v1");
    let target = format!("{}/skopeo/made:v1", reg.addr);
    let (ok, _, err) = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.path().display()),
        &format!("docker://{target}"),
    ]);
    assert!(ok, "skopeo copy failed: {err}");
    let (ok, out, err) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]);
    assert!(ok, "{err}");
    let skopeo_digest = serde_json::from_str::<serde_json::Value>(&out).unwrap()["Digest"]
        .as_str()
        .unwrap()
        .to_string();

    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Store::open(dst_dir.path()).unwrap();
    let pulled = pull::pull(
        &client(),
        &dst,
        &r(&target),
        &PullOptions::default(),
        &Progress::quiet(),
    )
    .unwrap();
    assert_eq!(pulled.resolved.to_string(), skopeo_digest);
    for b in blobs_of(&dst, &digest_of(&pulled.manifest)) {
        assert!(dst.contains(&b), "{b} missing after pull");
    }
    assert!(dst.verify(false).unwrap().is_ok());
}

#[test]
fn index_push_and_platform_selection() {
    let reg = Registry::start();
    let src_dir = tempfile::tempdir().unwrap();
    let src = Store::open(src_dir.path()).unwrap();
    let amd = build_image(&src, &[noise(21, 1000)], "amd64");
    let arm = build_image(&src, &[noise(22, 1000)], "arm64");
    let entry = |d: &Descriptor, arch: &str| {
        serde_json::json!({"mediaType": d.media_type().to_string(), "digest": d.digest().to_string(), "size": d.size(),
            "platform": {"os": "linux", "architecture": arch}})
    };
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&amd, "amd64"), entry(&arm, "arm64")]});
    let idx = src
        .put(serde_json::to_vec(&index).unwrap().as_slice())
        .unwrap();
    let idx = descriptor(
        "application/vnd.oci.image.index.v1+json",
        &idx.digest,
        idx.size,
    );
    let target = r(&format!("{}/kiln/multi:latest", reg.addr));
    let s = push::push(
        &client(),
        &src,
        &idx,
        &target,
        &PushOptions::default(),
        &Progress::quiet(),
    )
    .unwrap();
    assert_eq!((s.manifests_pushed, s.blobs_sent), (3, 4), "{s:?}");

    let (ok, out, err) = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("arm64") && out.contains("amd64"));

    for (platform, want) in [("linux/arm64", &arm), ("linux/amd64", &amd)] {
        let dst_dir = tempfile::tempdir().unwrap();
        let dst = Store::open(dst_dir.path()).unwrap();
        let opts = PullOptions {
            platform: Some(Platform::parse(platform).unwrap()),
        };
        let p = pull::pull(&client(), &dst, &target, &opts, &Progress::quiet()).unwrap();
        assert_eq!(p.resolved, digest_of(&idx));
        assert_eq!(digest_of(&p.manifest), digest_of(want), "{platform}");
        // Only the chosen platform's blobs were fetched.
        let other = if want == &arm { &amd } else { &arm };
        assert!(!dst.contains(&digest_of(other)));
        assert_eq!(p.blobs_fetched, 2);
    }
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Store::open(dst_dir.path()).unwrap();
    let opts = PullOptions {
        platform: Some(Platform::parse("linux/s390x").unwrap()),
    };
    let err = pull::pull(&client(), &dst, &target, &opts, &Progress::quiet()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("linux/s390x") && msg.contains("linux/amd64, linux/arm64"),
        "{msg}"
    );
}

#[test]
fn second_push_sends_only_the_changed_layer_and_mounts_across_repos() {
    let reg = Registry::start();
    let src_dir = tempfile::tempdir().unwrap();
    let src = Store::open(src_dir.path()).unwrap();
    let base = [noise(31, 2 << 20), noise(32, 3 << 20), noise(33, 100_000)];
    let v1 = build_image(&src, &base, "amd64");
    let mut changed = base.clone();
    changed[2] = noise(34, 100_000);
    let v2 = build_image(&src, &changed, "amd64");
    let target = r(&format!("{}/kiln/app:v1", reg.addr));
    let first = push::push(
        &client(),
        &src,
        &v1,
        &target,
        &PushOptions::default(),
        &Progress::quiet(),
    )
    .unwrap();
    assert_eq!((first.blobs_sent, first.blobs_skipped), (4, 0));
    let second = push::push(
        &client(),
        &src,
        &v2,
        &target.with_tag("v2"),
        &PushOptions::default(),
        &Progress::quiet(),
    )
    .unwrap();
    // One layer + config uploaded; the two shared layers skipped.
    assert_eq!(
        (
            second.blobs_sent,
            second.blobs_skipped,
            second.manifests_pushed
        ),
        (2, 2, 1),
        "{second:?}"
    );
    let changed_layer = blobs_of(&src, &digest_of(&v2))[3].clone();
    let config = blobs_of(&src, &digest_of(&v2))[0].clone();
    assert_eq!(
        second.bytes_sent,
        src.size(&changed_layer).unwrap() + src.size(&config).unwrap()
    );
    // The registry's access log agrees: exactly two blob uploads finished for v2.
    let puts = reg
        .log()
        .iter()
        .filter(|l| l.contains("\"PUT /v2/kiln/app/blobs/uploads/"))
        .count();
    assert_eq!(puts, 6, "4 + 2 blob PUTs expected in the access log");

    // The same image into another repository: every blob mounted, none sent.
    let other = r(&format!("{}/kiln/copy:v2", reg.addr));
    let opts = PushOptions {
        mount_from: vec!["kiln/app".into()],
        ..PushOptions::default()
    };
    let third = push::push(&client(), &src, &v2, &other, &opts, &Progress::quiet()).unwrap();
    assert_eq!(
        (third.blobs_sent, third.blobs_mounted, third.bytes_sent),
        (0, 4, 0),
        "{third:?}"
    );
    let (ok, _, err) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{other}"),
    ]);
    assert!(ok, "{err}");
}

// ---------- auth ----------

#[test]
fn basic_auth_works_and_a_wrong_password_is_a_clear_error_without_the_secret() {
    let reg = Registry::start_with_basic_auth("kiln", "right-pass-123");
    let src_dir = tempfile::tempdir().unwrap();
    let src = Store::open(src_dir.path()).unwrap();
    let image = build_image(&src, &[noise(41, 1000)], "amd64");
    let target = r(&format!("{}/kiln/auth:v1", reg.addr));

    let bad = client_with(Some(Credentials::basic("kiln", "wrong-pass-456")));
    let err = push::push(
        &bad,
        &src,
        &image,
        &target,
        &PushOptions::default(),
        &Progress::quiet(),
    )
    .unwrap_err();
    let msg = format!("{err:#} {err:?}");
    assert!(msg.contains(&reg.addr), "registry not named: {msg}");
    assert!(
        msg.contains("authentication failed") && msg.contains("kiln login"),
        "{msg}"
    );
    assert!(!msg.contains("wrong-pass-456"), "password echoed: {msg}");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode("kiln:wrong-pass-456");
    assert!(!msg.contains(&b64), "encoded credentials echoed: {msg}");

    let anon = client_with(None);
    let err = push::push(
        &anon,
        &src,
        &image,
        &target,
        &PushOptions::default(),
        &Progress::quiet(),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("authentication failed"),
        "{err:#}"
    );

    let good = client_with(Some(Credentials::basic("kiln", "right-pass-123")));
    let s = push::push(
        &good,
        &src,
        &image,
        &target,
        &PushOptions::default(),
        &Progress::quiet(),
    )
    .unwrap();
    assert_eq!(s.blobs_sent, 2);
}

#[test]
fn login_and_logout_through_the_cli_write_docker_config() {
    let reg = Registry::start_with_basic_auth("kiln", "right-pass-123");
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("docker");
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = kiln_bin()
            .args(args)
            .env("DOCKER_CONFIG", &cfg)
            .env_remove("REGISTRY_AUTH_FILE")
            .env("HOME", home.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = run(
        &["login", &reg.addr, "-u", "kiln", "--password-stdin"],
        "nope-999\n",
    );
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains(&reg.addr) && !out.contains("nope-999"),
        "{out}"
    );
    assert!(
        !cfg.join("config.json").exists()
            || !std::fs::read_to_string(cfg.join("config.json"))
                .unwrap()
                .contains(&reg.addr)
    );

    let (code, out) = run(
        &["login", &reg.addr, "-u", "kiln", "--password-stdin"],
        "right-pass-123\n",
    );
    assert_eq!(code, Some(0), "{out}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cfg.join("config.json")).unwrap()).unwrap();
    use base64::Engine;
    let expect = base64::engine::general_purpose::STANDARD.encode("kiln:right-pass-123");
    assert_eq!(written["auths"][&reg.addr]["auth"], expect.as_str());
    let (code, out) = run(&["logout", &reg.addr], "");
    assert_eq!(code, Some(0), "{out}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cfg.join("config.json")).unwrap()).unwrap();
    assert!(written["auths"].get(&reg.addr).is_none(), "{written}");
}

/// A bearer-token front: `/token` implements the token protocol (basic
/// auth checked, one opaque token per request, scopes recorded) and every
/// `/v2/` request must carry a token whose scopes cover it, else 401 with
/// the challenge a real registry sends. Behind it, an anonymous registry.
struct TokenFront {
    proxy: Proxy,
    token_requests: Arc<AtomicUsize>,
    scopes_asked: Arc<Mutex<Vec<String>>>,
}

fn token_front(reg: &Registry, user: &'static str, pass: &'static str) -> TokenFront {
    let tokens: Arc<Mutex<HashMap<String, BTreeSet<String>>>> = Default::default();
    let token_requests = Arc::new(AtomicUsize::new(0));
    let scopes_asked: Arc<Mutex<Vec<String>>> = Default::default();
    let next = Arc::new(AtomicU64::new(1));
    let addr_cell: Arc<Mutex<String>> = Default::default();
    let (t2, tr2, sa2, ac2) = (
        tokens.clone(),
        token_requests.clone(),
        scopes_asked.clone(),
        addr_cell.clone(),
    );
    let proxy = Proxy::start(&reg.addr, move |req: &Request| {
        use base64::Engine;
        let realm = format!("http://{}/token", ac2.lock().unwrap());
        if req.path() == "/token" && req.method == "POST" {
            // OAuth2 refresh-token grant (docker's identity tokens).
            tr2.fetch_add(1, Ordering::SeqCst);
            let f = req.form();
            let field = |k: &str| {
                f.iter()
                    .find(|(x, _)| x == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            if field("grant_type") != "refresh_token" || field("refresh_token") != "refresh-xyz" {
                return Action::status(401);
            }
            let scopes: BTreeSet<String> = field("scope")
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            sa2.lock().unwrap().extend(scopes.iter().cloned());
            let tok = format!("oauth-{}", next.fetch_add(1, Ordering::SeqCst));
            t2.lock().unwrap().insert(tok.clone(), scopes);
            return Action::Respond {
                status: 200,
                headers: vec![],
                body: serde_json::json!({"access_token": tok, "expires_in": 300})
                    .to_string()
                    .into_bytes(),
            };
        }
        if req.path() == "/token" {
            tr2.fetch_add(1, Ordering::SeqCst);
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
            );
            if req.header("authorization") != Some(want.as_str()) {
                return Action::status(401);
            }
            let q = req.query();
            if !q.iter().any(|(k, v)| k == "service" && v == "kiln-test") {
                return Action::status(400);
            }
            let scopes: BTreeSet<String> = q
                .iter()
                .filter(|(k, _)| k == "scope")
                .map(|(_, v)| v.clone())
                .collect();
            sa2.lock().unwrap().extend(scopes.iter().cloned());
            let tok = format!("tok-{}", next.fetch_add(1, Ordering::SeqCst));
            t2.lock().unwrap().insert(tok.clone(), scopes);
            return Action::Respond {
                status: 200,
                headers: vec![],
                body: serde_json::json!({"token": tok, "expires_in": 300})
                    .to_string()
                    .into_bytes(),
            };
        }
        let granted = req
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .and_then(|t| t2.lock().unwrap().get(t).cloned());
        let mut needed = Vec::new();
        if let Some(repo) = repository_of(req.path()) {
            let action = if matches!(req.method.as_str(), "GET" | "HEAD") {
                "pull"
            } else {
                "push"
            };
            needed.push((repo, action.to_string()));
        }
        for (k, v) in req.query() {
            if k == "from" {
                needed.push((v, "pull".into()));
            }
        }
        let allowed = |g: &BTreeSet<String>| {
            needed.iter().all(|(repo, action)| {
                g.iter().any(|s| {
                    s.strip_prefix(&format!("repository:{repo}:"))
                        .is_some_and(|acts| acts.split(',').any(|a| a == action))
                })
            })
        };
        match granted {
            Some(g) if allowed(&g) => Action::Forward,
            _ => {
                let mut challenge = format!("Bearer realm=\"{realm}\",service=\"kiln-test\"");
                if let Some((repo, action)) = needed.first() {
                    let acts = if action == "push" {
                        "pull,push"
                    } else {
                        "pull"
                    };
                    challenge.push_str(&format!(",scope=\"repository:{repo}:{acts}\""));
                }
                Action::Respond {
                    status: 401,
                    headers: vec![("WWW-Authenticate".into(), challenge)],
                    body: br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_vec(),
                }
            }
        }
    });
    *addr_cell.lock().unwrap() = proxy.addr.clone();
    TokenFront {
        proxy,
        token_requests,
        scopes_asked,
    }
}

#[test]
fn bearer_token_flow_with_scope_merging_and_token_reuse() {
    let reg = Registry::start();
    let front = token_front(&reg, "tokuser", "tokpass");
    let src_dir = tempfile::tempdir().unwrap();
    let src = Store::open(src_dir.path()).unwrap();
    let image = build_image(
        &src,
        &[noise(51, 1000), noise(52, 2000), noise(53, 3000)],
        "amd64",
    );
    let target = r(&format!("{}/team/app:v1", front.proxy.addr));
    let c = client_with(Some(Credentials::basic("tokuser", "tokpass")));
    let s = push::push(
        &c,
        &src,
        &image,
        &target,
        &PushOptions::default(),
        &Progress::quiet(),
    )
    .unwrap();
    assert_eq!(s.blobs_sent, 4);
    let after_push = front.token_requests.load(Ordering::SeqCst);
    let total = front.proxy.requests.load(Ordering::SeqCst);
    // One token served the whole push (HEAD/POST/PUT for 4 blobs + manifest).
    assert!(
        after_push <= 2 && total > 10,
        "token requests {after_push}, requests {total}"
    );
    assert!(
        front
            .scopes_asked
            .lock()
            .unwrap()
            .iter()
            .any(|s| s == "repository:team/app:pull,push")
    );

    // A mount from another repository needs pull on it: scopes are merged
    // into one token request covering both repositories.
    let other = r(&format!("{}/team/copy:v1", front.proxy.addr));
    let c2 = client_with(Some(Credentials::basic("tokuser", "tokpass")));
    let opts = PushOptions {
        mount_from: vec!["team/app".into()],
        ..PushOptions::default()
    };
    let m = push::push(&c2, &src, &image, &other, &opts, &Progress::quiet()).unwrap();
    assert_eq!(m.blobs_mounted, 4, "{m:?}");
    let asked = front.scopes_asked.lock().unwrap().clone();
    assert!(
        asked.iter().any(|s| s == "repository:team/copy:pull,push")
            && asked.iter().any(|s| s == "repository:team/app:pull"),
        "{asked:?}"
    );

    // Pull through the front with a fresh client.
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Store::open(dst_dir.path()).unwrap();
    let p = pull::pull(
        &client_with(Some(Credentials::basic("tokuser", "tokpass"))),
        &dst,
        &target,
        &PullOptions::default(),
        &Progress::quiet(),
    )
    .unwrap();
    assert_eq!(p.resolved, digest_of(&image));

    // An identity token (OAuth2 refresh token) is traded with a POST.
    let dst3_dir = tempfile::tempdir().unwrap();
    let dst3 = Store::open(dst3_dir.path()).unwrap();
    let oauth = client_with(Some(Credentials::IdentityToken("refresh-xyz".into())));
    let p = pull::pull(
        &oauth,
        &dst3,
        &target,
        &PullOptions::default(),
        &Progress::quiet(),
    )
    .unwrap();
    assert_eq!(p.resolved, digest_of(&image));
    let stale = client_with(Some(Credentials::IdentityToken("refresh-old".into())));
    let err = pull::pull(
        &stale,
        &dst3,
        &target.with_tag("other"),
        &PullOptions::default(),
        &Progress::quiet(),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("refused") && !format!("{err:#}").contains("refresh-old"),
        "{err:#}"
    );

    // Wrong credentials: the token server refuses; clear error, no secret.
    let bad = client_with(Some(Credentials::basic("tokuser", "not-the-pass")));
    let err = pull::pull(
        &bad,
        &dst,
        &target,
        &PullOptions::default(),
        &Progress::quiet(),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&front.proxy.addr) && msg.contains("refused") && msg.contains("kiln login"),
        "{msg}"
    );
    assert!(!msg.contains("not-the-pass"), "{msg}");
}

// ---------- faults ----------

#[test]
fn push_survives_dropped_connections_500s_and_429s() {
    let reg = Registry::start();
    let src_dir = tempfile::tempdir().unwrap();
    let src = Store::open(src_dir.path()).unwrap();
    // ~200 MB in 5 layers, plus small ones (monolithic PUT path).
    let sizes = [
        60 << 20,
        50 << 20,
        40 << 20,
        30 << 20,
        20 << 20,
        100_000,
        2000,
    ];
    let contents: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, s)| noise(60 + i as u64, *s))
        .collect();
    let image = build_image(&src, &contents, "amd64");

    let injected = Arc::new(AtomicUsize::new(0));
    let seed = Arc::new(Mutex::new(0x2545_F491_4F6C_DD1Du64));
    let streak = Arc::new(AtomicUsize::new(0));
    let inj = injected.clone();
    let proxy = Proxy::start(&reg.addr, move |req: &Request| {
        let roll = {
            let mut x = seed.lock().unwrap();
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            *x
        };
        // Never fail more than 3 requests in a row, never the ping.
        if req.path() == "/v2/" || streak.load(Ordering::SeqCst) >= 3 {
            streak.store(0, Ordering::SeqCst);
            return Action::Forward;
        }
        let action = match roll % 100 {
            0..=4 => Action::status(500),
            5..=8 => Action::Respond {
                status: 429,
                headers: vec![("Retry-After".into(), "0".into())],
                body: vec![],
            },
            9..=12 => Action::Drop,
            13..=17 => Action::ForwardCut((roll >> 8) % (8 << 20)),
            _ => {
                streak.store(0, Ordering::SeqCst);
                return Action::Forward;
            }
        };
        streak.fetch_add(1, Ordering::SeqCst);
        inj.fetch_add(1, Ordering::SeqCst);
        action
    });
    let target = r(&format!("{}/kiln/faulty:v1", proxy.addr));
    let s = push::push(
        &client(),
        &src,
        &image,
        &target,
        &PushOptions::default(),
        &Progress::quiet(),
    )
    .unwrap();
    assert_eq!(s.manifests_pushed, 1);
    assert!(
        injected.load(Ordering::SeqCst) >= 3,
        "the proxy injected too few faults to mean anything"
    );

    // The registry's content verifies: pull directly (not through the
    // proxy) into a fresh store, and check every blob by digest.
    let direct = r(&format!("{}/kiln/faulty:v1", reg.addr));
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Store::open(dst_dir.path()).unwrap();
    let p = pull::pull(
        &client(),
        &dst,
        &direct,
        &PullOptions::default(),
        &Progress::quiet(),
    )
    .unwrap();
    assert_eq!(p.resolved, digest_of(&image));
    assert_eq!(p.blobs_fetched, sizes.len() + 1);
    assert!(dst.verify(false).unwrap().is_ok());
    let (ok, _, err) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{direct}"),
    ]);
    assert!(ok, "{err}");

    // A pull through the faulty proxy completes too.
    let dst2_dir = tempfile::tempdir().unwrap();
    let dst2 = Store::open(dst2_dir.path()).unwrap();
    let p2 = pull::pull(
        &client(),
        &dst2,
        &target,
        &PullOptions::default(),
        &Progress::quiet(),
    )
    .unwrap();
    assert_eq!(p2.resolved, digest_of(&image));
    assert!(dst2.verify(false).unwrap().is_ok());
}

// ---------- bad input ----------

/// The registry's on-disk file for a blob.
fn registry_blob(reg: &Registry, d: &Digest) -> std::path::PathBuf {
    reg.storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&d.hex()[..2])
        .join(d.hex())
        .join("data")
}

fn corrupt(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn corrupted_manifest_and_layer_are_refused_and_nothing_unverified_is_stored() {
    let reg = Registry::start();
    let src_dir = tempfile::tempdir().unwrap();
    let src = Store::open(src_dir.path()).unwrap();
    let image = build_image(&src, &[noise(71, 50_000)], "amd64");
    let target = r(&format!("{}/kiln/bad:v1", reg.addr));
    push::push(
        &client(),
        &src,
        &image,
        &target,
        &PushOptions::default(),
        &Progress::quiet(),
    )
    .unwrap();

    // A layer whose bytes do not match its digest.
    let layer = blobs_of(&src, &digest_of(&image))[1].clone();
    corrupt(&registry_blob(&reg, &layer));
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Store::open(dst_dir.path()).unwrap();
    let err = pull::pull(
        &client(),
        &dst,
        &target,
        &PullOptions::default(),
        &Progress::quiet(),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&layer.to_string()) && msg.contains("do not match"),
        "{msg}"
    );
    assert!(!dst.contains(&layer));
    assert!(dst.verify(false).unwrap().is_ok());
    assert_eq!(
        std::fs::read_dir(dst_dir.path().join("ingest"))
            .unwrap()
            .count(),
        0
    );

    // A manifest whose bytes do not match the digest it is served under.
    corrupt(&registry_blob(&reg, &digest_of(&image)));
    let dst2_dir = tempfile::tempdir().unwrap();
    let dst2 = Store::open(dst2_dir.path()).unwrap();
    let err = pull::pull(
        &client(),
        &dst2,
        &target,
        &PullOptions::default(),
        &Progress::quiet(),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("does not match") && msg.contains(&digest_of(&image).to_string()),
        "{msg}"
    );
    assert!(
        dst2.list().unwrap().is_empty(),
        "something entered the store"
    );
}

#[test]
fn a_server_answering_html_is_a_clear_error() {
    let html = || Action::Respond {
        status: 200,
        headers: vec![("Content-Type".into(), "text/html".into())],
        body: b"<!doctype html><html><body>Welcome to nginx!</body></html>".to_vec(),
    };
    let proxy = Proxy::start("", move |_req: &Request| html());
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Store::open(dst_dir.path()).unwrap();
    let target = r(&format!("{}/some/image:v1", proxy.addr));
    let err = pull::pull(
        &client(),
        &dst,
        &target,
        &PullOptions::default(),
        &Progress::quiet(),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("HTML") && msg.contains(&proxy.addr), "{msg}");
    assert!(dst.list().unwrap().is_empty());

    // And one answering 404 HTML at /v2/.
    let proxy404 = Proxy::start("", |_req: &Request| Action::Respond {
        status: 404,
        headers: vec![("Content-Type".into(), "text/html".into())],
        body: b"<html>not found</html>".to_vec(),
    });
    let target = r(&format!("{}/some/image:v1", proxy404.addr));
    let err = pull::pull(
        &client(),
        &dst,
        &target,
        &PullOptions::default(),
        &Progress::quiet(),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("does not answer the registry API"), "{msg}");
}

#[test]
fn malformed_references_and_missing_images_through_the_cli() {
    for bad in [
        "Bad/Name",
        "app:",
        "a//b",
        "x@sha256:123",
        "host:notaport/app",
    ] {
        let out = kiln_bin().args(["pull", bad]).output().unwrap();
        assert!(!out.status.success(), "{bad} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("invalid image reference"), "{bad}: {err}");
    }
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let out = kiln_bin()
        .args(["pull", &format!("{}/no/such:tag", reg.addr)])
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CACHE_HOME", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not found") && err.contains(&reg.addr),
        "{err}"
    );
}

// ---------- the CLI over the local image store ----------

#[test]
fn cli_push_pull_with_a_credential_helper_and_no_secret_in_json_progress() {
    let reg = Registry::start_with_basic_auth("kiln", "helper-pass-789");
    let tmp = tempfile::tempdir().unwrap();
    let (bin, cfg, helper_state) = (
        tmp.path().join("bin"),
        tmp.path().join("docker"),
        tmp.path().join("helper"),
    );
    for d in [&bin, &cfg, &helper_state] {
        std::fs::create_dir_all(d).unwrap();
    }
    // A credential helper speaking docker's protocol, keeping one secret in a file.
    let helper = bin.join("docker-credential-kilntest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nstate={}\ncase \"$1\" in\n  store) cat > \"$state/creds.json\" ;;\n  get) read url; echo \"$url\" > \"$state/asked\"; if [ -f \"$state/creds.json\" ]; then cat \"$state/creds.json\"; else echo 'credentials not found in native keychain'; exit 1; fi ;;\n  erase) read url; rm -f \"$state/creds.json\" ;;\nesac\n",
            helper_state.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        cfg.join("config.json"),
        r#"{"credsStore":"kilntest","experimental":"keep-me"}"#,
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kiln = |data: &str, args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = kiln_bin()
            .args(args)
            .env("PATH", &path)
            .env("DOCKER_CONFIG", &cfg)
            .env_remove("REGISTRY_AUTH_FILE")
            .env("HOME", tmp.path())
            .env("KILN_DATA_DIR", tmp.path().join(data))
            .env("KILN_CACHE_DIR", tmp.path().join("cache"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "kiln {args:?} failed:\n{o}\n{e}");
        (o, e)
    };
    kiln(
        "d1",
        &["login", &reg.addr, "-u", "kiln", "--password-stdin"],
        "helper-pass-789\n",
    );
    let stored = std::fs::read_to_string(helper_state.join("creds.json")).unwrap();
    assert!(stored.contains("helper-pass-789") && stored.contains(&reg.addr));
    let config = std::fs::read_to_string(cfg.join("config.json")).unwrap();
    assert!(
        !config.contains("helper-pass-789") && config.contains("keep-me"),
        "{config}"
    );

    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("app")).unwrap();
    std::fs::write(rootfs.join("app/hello.txt"), noise(90, 300_000)).unwrap();
    kiln(
        "d1",
        &["image", "from-dir", rootfs.to_str().unwrap(), "-t", "app:1"],
        "",
    );
    let target = format!("{}/team/app:1", reg.addr);
    let (out, events) = kiln(
        "d1",
        &["--progress=json", "push", "app:1", &target, "--json"],
        "",
    );
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["blobs_sent"], 2, "{summary}");
    assert_eq!(
        std::fs::read_to_string(helper_state.join("asked"))
            .unwrap()
            .trim(),
        reg.addr
    );
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode("kiln:helper-pass-789");
    assert!(
        events.contains("\"event\":\"bytes\""),
        "no byte progress in {events}"
    );
    assert!(
        !events.contains("helper-pass-789") && !events.contains(&b64),
        "secret in progress output"
    );

    // Pull into another local store: same digest under the full name.
    let (out, _) = kiln("d2", &["pull", &target], "");
    assert!(out.contains(summary["digest"].as_str().unwrap()), "{out}");
    let (list, _) = kiln("d2", &["images", "--json"], "");
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == target.as_str())
        .expect("pulled image listed");
    assert_eq!(entry["digest"], summary["digest"]);

    // Pushing the pulled image to another repository mounts every blob.
    let other = format!("{}/other/app:1", reg.addr);
    let (out, _) = kiln("d2", &["push", &target, &other, "--json"], "");
    let s2: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (s2["blobs_mounted"].as_u64(), s2["blobs_sent"].as_u64()),
        (Some(2), Some(0)),
        "{s2}"
    );

    // The local name says nothing about the registry, but kiln remembers
    // that team/app holds these blobs: pushing elsewhere there mounts them.
    let third = format!("{}/third/app:1", reg.addr);
    let (out, _) = kiln("d1", &["push", "app:1", &third, "--json"], "");
    let s3: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (s3["blobs_mounted"].as_u64(), s3["blobs_sent"].as_u64()),
        (Some(2), Some(0)),
        "{s3}"
    );

    kiln("d1", &["logout", &reg.addr], "");
    assert!(!helper_state.join("creds.json").exists());
}

// ---------- stalls ----------

/// Runs `kiln` to completion, killing it (and failing the test) if it is
/// still running after `limit`; returns (exit ok, stderr, elapsed).
fn kiln_within(cmd: &mut Command, limit: Duration) -> (bool, String, Duration) {
    let start = std::time::Instant::now();
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Drain stderr on a thread so a chatty child cannot block on the pipe.
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.success(), reader.join().unwrap(), start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kiln hung for more than {limit:?} (no stall timeout?):\n{}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A home with `app:1` (one small layer) in its local image store.
fn home_with_app() -> support::kiln::Kiln {
    let env = support::kiln::Kiln::new();
    let root = env.path("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello"), noise(7, 64 * 1024)).unwrap();
    env.ok(&["image", "from-dir", root.to_str().unwrap(), "-t", "app:1"]);
    env
}

#[test]
fn push_to_a_registry_that_never_answers_fails_within_the_stall_timeout() {
    // Accepts connections, reads nothing, answers nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
        }
    });
    let env = home_with_app();
    let target = format!("{addr}/app:1");
    let (ok, err, took) = kiln_within(
        env.cmd()
            .args(["push", "app:1", &target])
            .env("KILN_NET_TIMEOUT", "1"),
        Duration::from_secs(60),
    );
    assert!(!ok, "push to a silent server succeeded:\n{err}");
    assert!(
        err.contains(&format!("waiting for {addr}: no bytes for 1 s")) && err.contains("retry 2/3"),
        "no stall progress:\n{err}"
    );
    assert!(
        err.contains("gave up after 3 attempts") && err.contains("no answer for 1 s"),
        "{err}"
    );
    // 3 attempts × (HTTPS + HTTP) × 1 s, plus backoff.
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn push_through_a_proxy_that_stalls_uploads_fails_and_tags_nothing() {
    let reg = Registry::start();
    for (what, stall) in [
        ("blob upload", "/blobs/uploads/"),
        ("manifest", "/manifests/"),
    ] {
        let stalled = Arc::new(AtomicUsize::new(0));
        let seen = stalled.clone();
        let proxy = Proxy::start(&reg.addr, move |req: &Request| {
            if matches!(req.method.as_str(), "PUT" | "PATCH") && req.path().contains(stall) {
                seen.fetch_add(1, Ordering::SeqCst);
                Action::Stall
            } else {
                Action::Forward
            }
        });
        let env = home_with_app();
        let target = format!("{}/stall/app:1", proxy.addr);
        let (ok, err, took) = kiln_within(
            env.cmd()
                .args(["push", "app:1", &target, "--net-timeout", "1"]),
            Duration::from_secs(90),
        );
        assert!(
            !ok,
            "{what}: push through a stalling proxy succeeded:\n{err}"
        );
        assert!(
            err.contains(&format!(
                "waiting for {}: no bytes for 1 s (PUT",
                proxy.addr
            )) && err.contains("retry 3/3"),
            "{what}: no stall progress:\n{err}"
        );
        assert!(err.contains("gave up after 3 attempts"), "{what}: {err}");
        assert!(
            stalled.load(Ordering::SeqCst) >= 3,
            "{what}: the proxy stalled nothing"
        );
        assert!(took < Duration::from_secs(40), "{what}: took {took:?}");
        // Nothing is tagged in the registry behind the proxy.
        let tags = reg
            .storage()
            .join("docker/registry/v2/repositories/stall/_manifests/tags");
        assert!(!tags.join("1").exists(), "{what}: the tag was pushed");
        let out = env
            .cmd()
            .args(["pull", &format!("{}/stall/app:1", reg.addr)])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{what}: the registry has the tag");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not found"),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
