//! `kiln deploy` end to end against a real registry on loopback: lttle,
//! compose and FTL files are built, pushed, and written back with
//! `image: REF:TAG@sha256:…`; every reference is checked with skopeo and
//! run under podman until the app answers HTTP. Also: a re-run pushes
//! nothing, and bad input (syntax, build modes, paths, credentials) fails
//! with the resource named and no output written.
//!
//! The lttle test's `build: auto` / `options` resources need the auto
//! builder (plan → graph); the others use Dockerfile builds only.
#![cfg(feature = "e2e")]

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;

use support::kiln::{Kiln, run};
use support::registry::{Registry, free_port};

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(Registry::start)
}

/// A kiln home whose image store has `debian:bookworm` (the Dockerfile
/// fixtures' base).
fn home() -> Kiln {
    let k = Kiln::new();
    support::base::local_debian(&k.path("data"));
    k
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let dst = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &dst);
        } else {
            fs::copy(&p, &dst).unwrap();
        }
    }
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// The perl HTTP app (a Dockerfile build) at `dir`.
fn perl_app(dir: &Path) {
    copy_dir(&fixture("tests/deploy/perl-http"), dir);
}

fn deploy(k: &Kiln, args: &[&str]) -> Output {
    let mut all = vec!["--progress", "plain", "deploy"];
    all.extend_from_slice(args);
    k.kiln(&all)
}

/// [`deploy`] with the build cache in a dir kept between test runs: the
/// auto builds download Node and Python from Debian (minutes on a shared
/// machine the first time), which a re-run of the suite need not repeat.
fn deploy_cached(k: &Kiln, args: &[&str]) -> Output {
    let cache = support::shared_cache();
    let mut all = vec!["--progress", "plain", "deploy"];
    all.extend_from_slice(args);
    k.cmd()
        .env("KILN_CACHE_DIR", cache)
        .args(&all)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kiln deploy failed:\n{err}");
    err
}

/// What kiln printed per resource: label → (reference, digest, blobs sent).
fn printed(stderr: &str) -> BTreeMap<String, (String, String, usize)> {
    let mut out = BTreeMap::new();
    for line in stderr.lines() {
        let Some((label, rest)) = line.split_once(": ") else {
            continue;
        };
        let Some((reference, counts)) = rest.split_once(" (") else {
            continue;
        };
        let Some((_, digest)) = reference.split_once('@') else {
            continue;
        };
        let Some(sent) = counts.split(' ').next().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if counts.contains("blobs sent") {
            out.insert(
                label.to_string(),
                (reference.to_string(), digest.to_string(), sent),
            );
        }
    }
    out
}

/// Every `image:` value in the documents, in order.
fn images_in(text: &str) -> Vec<String> {
    fn walk(v: &serde_norway::Value, out: &mut Vec<String>) {
        match v {
            serde_norway::Value::Mapping(m) => {
                for (k, v) in m {
                    if k.as_str() == Some("image")
                        && let Some(s) = v.as_str()
                    {
                        out.push(s.to_string());
                    }
                    walk(v, out);
                }
            }
            serde_norway::Value::Sequence(s) => s.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for de in serde_norway::Deserializer::from_str(text) {
        let v = <serde_norway::Value as serde::Deserialize>::deserialize(de).unwrap();
        walk(&v, &mut out);
    }
    out
}

/// `REPO:TAG@DIGEST` → (REPO, TAG, DIGEST).
fn split(reference: &str) -> (String, String, String) {
    let (name, digest) = reference.split_once('@').unwrap();
    let (repo, tag) = name.rsplit_once(':').unwrap();
    assert!(!tag.contains('/'), "{reference} has no tag");
    (repo.into(), tag.into(), digest.into())
}

fn skopeo_digest(reference: &str) -> String {
    let out = run(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["Digest"].as_str().unwrap().to_string()
}

/// The reference's tag and its digest both resolve, to the digest kiln printed.
fn assert_resolves(reference: &str, printed_digest: &str) {
    let (repo, tag, digest) = split(reference);
    assert_eq!(digest, printed_digest, "{reference}");
    assert_eq!(
        skopeo_digest(&format!("{repo}:{tag}")),
        digest,
        "{reference}"
    );
    assert_eq!(
        skopeo_digest(&format!("{repo}@{digest}")),
        digest,
        "{reference}"
    );
}

/// Removes the container and image even when an assertion fails.
struct Cleanup(String, String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = support::podman::podman()
            .args(["rm", "-f", &self.0])
            .output();
        let _ = support::podman::podman()
            .args(["rmi", "-f", &self.1])
            .output();
    }
}

/// Pulls `reference` (by digest) with podman, runs it with `PORT`, and
/// waits for an HTTP 200 whose body contains `expect`.
fn assert_answers(reference: &str, expect: &str) {
    // One test at a time (nextest runs tests as separate processes): podman
    // removing one test's image while another pulls the same base layer
    // fails with "layer not known".
    let _lock = support::podman::lock();
    let (repo, _, digest) = split(reference);
    let by_digest = format!("{repo}@{digest}");
    run(
        "podman",
        &[
            "--cgroup-manager",
            "cgroupfs",
            "pull",
            "-q",
            "--tls-verify=false",
            &by_digest,
        ],
    );
    let port = free_port();
    let name = format!("kiln-e2e-deploy-{}-{port}", std::process::id());
    let _cleanup = Cleanup(name.clone(), by_digest.clone());
    let out = support::podman::run_cmd()
        .args([
            "-d",
            "--name",
            &name,
            "-e",
            &format!("PORT={port}"),
            &by_digest,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman run {by_digest}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    support::podman::wait_for_http(&name, port, expect, reference);
}

/// Checks that the output references exactly what kiln printed, each
/// resolvable; returns label → reference.
fn check_output(text: &str, stderr: &str, labels: &[&str]) -> BTreeMap<String, String> {
    let printed = printed(stderr);
    let images = images_in(text);
    let mut by_label = BTreeMap::new();
    for l in labels {
        let (reference, digest, _) = printed
            .get(*l)
            .unwrap_or_else(|| panic!("no result line for {l} in:\n{stderr}"));
        assert!(
            images.contains(reference),
            "{reference} is not in the output:\n{text}"
        );
        assert_resolves(reference, digest);
        by_label.insert(l.to_string(), reference.clone());
    }
    by_label
}

#[test]
fn lttle_file_builds_auto_options_and_docker_resources() {
    let k = home();
    let root = k.path("project");
    // A monorepo: the Node app at the root (build: auto builds the deploy
    // file's directory), a Python app in apps/api, a Dockerfile app in worker/.
    copy_dir(&fixture("examples/node-npm"), &root);
    copy_dir(&fixture("tests/deploy/py-http"), &root.join("apps/api"));
    perl_app(&root.join("worker"));
    fs::write(
        root.join("lttle.yaml"),
        "# the node app\napp:\n  name: web\n  build: auto\n  resources:\n    cpu: 1\n---\n\
         machine:\n  name: api\n  build:\n    options:\n      dir: ./apps/api\n      tag: v1\n  command: [python3, main.py]\n---\n\
         machine:\n  name: worker\n  namespace: jobs\n  build:\n    docker:\n      context: ./worker\n      name: worker\n      args:\n        GREETING: hi\n        MESSAGE: from-lttle\n---\n\
         volume:\n  name: data\n",
    )
    .unwrap();
    let out_file = root.join("resolved.yaml");
    let reg = format!("{}/team", registry().addr);
    let out = deploy_cached(
        &k,
        &[
            root.join("lttle.yaml").to_str().unwrap(),
            "--registry",
            &reg,
            "-o",
            out_file.to_str().unwrap(),
        ],
    );
    let stderr = ok(&out);
    for l in ["default/web", "default/api", "jobs/worker"] {
        assert!(
            stderr.contains(&format!("Building image for {l}\n")),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("Successfully built and pushed image for {l}")),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("Auto-build using providers: node"),
        "{stderr}"
    );
    let text = fs::read_to_string(&out_file).unwrap();
    assert!(!text.contains("build:"), "{text}");
    assert!(
        text.starts_with("# the node app\napp:\n  name: web\n  image: "),
        "{text}"
    );
    assert!(text.contains("volume:\n  name: data\n"), "{text}");
    let refs = check_output(
        &text,
        &stderr,
        &["default/web", "default/api", "jobs/worker"],
    );
    assert!(refs["default/api"].contains(":v1@sha256:"));
    assert!(refs["jobs/worker"].starts_with(&format!("{reg}/worker:latest@")));
    assert_answers(&refs["default/web"], "Hello from node-npm");
    // command: became the start command.
    let (repo, _, digest) = split(&refs["default/api"]);
    let config = run(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--tls-verify=false",
            &format!("docker://{repo}@{digest}"),
        ],
    );
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["python3", "main.py"]),
        "{config}"
    );
    assert_answers(&refs["default/api"], "Hello from py-http");
    assert_answers(&refs["jobs/worker"], "hi from-lttle");
}

#[test]
fn compose_file_builds_two_services_and_a_rerun_pushes_nothing() {
    let k = home();
    let root = k.path("shop");
    perl_app(&root.join("web"));
    perl_app(&root.join("api"));
    fs::write(
        root.join("compose.yaml"),
        "name: shop\nservices:\n  web:\n    build: ./web   # context only\n    ports: [\"8080:8080\"]\n  api:\n    image: api:v2\n    build:\n      context: ./api\n      dockerfile: Dockerfile\n      args:\n        GREETING: hi\n        MESSAGE: compose-api\n  db:\n    image: postgres:16\n",
    )
    .unwrap();
    let reg = format!("{}/team", registry().addr);
    let file = root.join("compose.yaml");
    let first_out = root.join("first.yaml");
    let args = |o: &Path| {
        vec![
            file.to_str().unwrap().to_string(),
            "--registry".into(),
            reg.clone(),
            "-o".into(),
            o.to_str().unwrap().to_string(),
        ]
    };
    let a1 = args(&first_out);
    let stderr = ok(&deploy(
        &k,
        &a1.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let text = fs::read_to_string(&first_out).unwrap();
    assert!(text.contains("    ports: [\"8080:8080\"]\n"), "{text}");
    assert!(text.contains("    image: postgres:16\n"), "{text}");
    let refs = check_output(&text, &stderr, &["shop/web", "shop/api"]);
    assert!(refs["shop/web"].starts_with(&format!("{reg}/shop-web:latest@")));
    assert!(refs["shop/api"].starts_with(&format!("{reg}/api:v2@")));
    assert!(printed(&stderr).values().any(|(_, _, sent)| *sent > 0));
    assert_answers(&refs["shop/web"], "hello from-dockerfile");
    assert_answers(&refs["shop/api"], "hi compose-api");

    // Nothing changed: every blob is already there, same documents.
    let second_out = root.join("second.yaml");
    let mut a2 = args(&second_out);
    a2.push("--debug-build".into());
    let stderr2 = ok(&deploy(
        &k,
        &a2.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let p2 = printed(&stderr2);
    assert_eq!(p2.len(), 2, "{stderr2}");
    for (l, (_, _, sent)) in &p2 {
        assert_eq!(*sent, 0, "{l} pushed blobs on a re-run:\n{stderr2}");
    }
    assert!(stderr2.contains("2 images, 0 blobs sent"), "{stderr2}");
    assert!(
        stderr2.contains(&format!(
            "Generated image reference: {reg}/shop-web:latest\n"
        )),
        "{stderr2}"
    );
    assert!(
        stderr2.contains(&format!(
            "Building image for path: {}",
            root.join("web").display()
        )),
        "{stderr2}"
    );
    assert_eq!(fs::read_to_string(&second_out).unwrap(), text);
}

#[test]
fn ftl_file_builds_two_services_and_keeps_one_without_image_locally() {
    let k = home();
    let root = k.path("ftl");
    perl_app(&root.join("web"));
    perl_app(&root.join("backend"));
    fs::rename(
        root.join("backend/Dockerfile"),
        root.join("backend/Dockerfile.alt"),
    )
    .unwrap();
    perl_app(&root.join("worker"));
    let reg = registry().addr.clone();
    fs::write(
        root.join("ftl.yaml"),
        format!(
            "project:\n  name: my-project\n  domain: example.com\nservices:\n  - name: web\n    image: {reg}/ftl/web:1\n    path: ./web\n    port: 8080\n  - name: backend\n    image: {reg}/ftl/backend:2\n    build:\n      context: ./backend\n      dockerfile: Dockerfile.alt\n      args:\n        MESSAGE: ftl-backend\n  - name: worker\n    path: ./worker\n"
        ),
    )
    .unwrap();
    let out = deploy(
        &k,
        &[root.join("ftl.yaml").to_str().unwrap(), "--jobs", "3"],
    );
    let stderr = ok(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    let refs = check_output(&text, &stderr, &["my-project/web", "my-project/backend"]);
    assert!(refs["my-project/web"].starts_with(&format!("{reg}/ftl/web:1@")));
    assert!(text.contains("    path: ./web\n"), "{text}");
    assert!(
        stderr.contains("kept in the local store as my-project-worker:latest"),
        "{stderr}"
    );
    assert!(
        text.contains("    image: my-project-worker:latest@sha256:"),
        "{text}"
    );
    let images = k.stdout(&["images"]);
    assert!(images.contains("my-project-worker"), "{images}");
    assert_answers(&refs["my-project/web"], "hello from-dockerfile");
    assert_answers(&refs["my-project/backend"], "hello ftl-backend");
}

fn assert_fails(k: &Kiln, root: &Path, name: &str, text: &str, needles: &[&str]) {
    let file = root.join(name);
    fs::write(&file, text).unwrap();
    let out_file = root.join(format!("{name}.out"));
    let out = deploy(
        k,
        &[
            file.to_str().unwrap(),
            "--registry",
            &registry().addr,
            "-o",
            out_file.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{name} was accepted:\n{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{name}: no {n:?} in:\n{stderr}");
    }
    assert!(
        !stderr.contains("Building image for"),
        "{name} started a build:\n{stderr}"
    );
    assert!(!out_file.exists(), "{name}: output written");
}

#[test]
fn bad_input_is_refused_before_anything_is_built() {
    let k = home();
    let root = k.path("bad");
    perl_app(&root.join("app"));
    let f = |n: &str| root.join(n).display().to_string();
    assert_fails(
        &k,
        &root,
        "syntax.yaml",
        "app:\n  name: x\n  build: auto\n---\nmachine:\n  name: y\n  - item\n  build: auto\n",
        &[&format!("{}:7:3: invalid YAML", f("syntax.yaml"))],
    );
    assert_fails(
        &k,
        &root,
        "both.yaml",
        "app:\n  name: both\n  build:\n    options:\n      dir: ./app\n    docker:\n      context: ./app\n",
        &["default/both", "both options and docker", &f("both.yaml")],
    );
    assert_fails(
        &k,
        &root,
        "mode.yaml",
        "app:\n  name: m\n  build: kaniko\n",
        &["default/m", "unknown build mode \"kaniko\"", "build: auto"],
    );
    assert_fails(
        &k,
        &root,
        "dir.yaml",
        "app:\n  name: gone\n  build:\n    options:\n      dir: ./nowhere\n",
        &["default/gone", "nowhere does not exist"],
    );
    assert_fails(
        &k,
        &root,
        "dockerfile.yaml",
        "app:\n  name: nodf\n  build:\n    docker:\n      context: ./app\n      dockerfile: Dockerfile.prod\n",
        &[
            &format!(
                "Dockerfile not found: {}",
                root.join("app/Dockerfile.prod").display()
            ),
            "default/nodf",
        ],
    );
}

#[test]
fn refused_credentials_leave_pushed_images_valid_and_no_output() {
    let k = home();
    let locked = Registry::start_with_basic_auth("deployer", "s3cret");
    let root = k.path("creds");
    perl_app(&root.join("app"));
    let good = format!("{}/creds/good:1", registry().addr);
    let bad = format!("{}/creds/bad:1", locked.addr);
    fs::write(
        root.join("lttle.yaml"),
        format!(
            "app:\n  name: good\n  build:\n    docker:\n      context: ./app\n      image: {good}\n---\napp:\n  name: bad\n  build:\n    docker:\n      context: ./app\n      image: {bad}\n      args:\n        MESSAGE: other\n"
        ),
    )
    .unwrap();
    // A previous output must survive a failed deploy untouched.
    let out_file = root.join("resolved.yaml");
    fs::write(&out_file, "previous\n").unwrap();
    let out = deploy(
        &k,
        &[
            root.join("lttle.yaml").to_str().unwrap(),
            "--jobs",
            "1",
            "-o",
            out_file.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 of 2 resources failed; no documents were written"),
        "{stderr}"
    );
    assert!(stderr.contains("default/bad"), "{stderr}");
    assert!(
        stderr.contains("pushing the image for default/bad"),
        "{stderr}"
    );
    assert!(
        stderr.contains("401") || stderr.to_lowercase().contains("unauthorized"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(&out_file).unwrap(), "previous\n");
    // The resource that was pushed before the failure is intact.
    let line = stderr
        .lines()
        .find(|l| l.contains("already pushed"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let pushed = line.rsplit(": ").next().unwrap().trim();
    let (_, _, digest) = split(pushed);
    assert!(pushed.starts_with(&good), "{pushed}");
    assert_resolves(pushed, &digest);
}

/// Needs the auto builder: its no-provider error, wrapped with the
/// resource and the file.
#[test]
fn auto_build_without_providers_names_the_resource_and_file() {
    let k = home();
    let root = k.path("empty");
    fs::create_dir_all(root.join("docs")).unwrap();
    fs::write(root.join("docs/notes.txt"), "nothing to detect\n").unwrap();
    let file = root.join("lttle.yaml");
    fs::write(
        &file,
        "app:\n  name: blank\n  build:\n    options:\n      dir: ./docs\n",
    )
    .unwrap();
    let out_file = root.join("out.yaml");
    let out = deploy(
        &k,
        &[
            file.to_str().unwrap(),
            "--registry",
            &registry().addr,
            "-o",
            out_file.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("No compatible providers found for auto-build"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("building default/blank ({})", file.display())),
        "{stderr}"
    );
    assert!(!out_file.exists());
}
