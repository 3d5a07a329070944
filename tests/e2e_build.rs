//! `kiln build` end to end on a real Debian base from a local registry:
//! the step cache, failure reports, bad input, kill -9, and a corpus of
//! Dockerfiles built by kiln and by buildah whose root filesystems and
//! configs must match. Runs as root (CI does).
#![cfg(feature = "e2e")]

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use support::kiln::run;
use support::registry::Registry;

/// One registry with the base image for the whole test binary.
fn base() -> &'static (Registry, String) {
    static BASE: OnceLock<(Registry, String)> = OnceLock::new();
    BASE.get_or_init(|| {
        let reg = Registry::start();
        let dir = tempfile::tempdir().unwrap().keep();
        let reference = support::base::push_debian(&reg, &dir.join("data"), &dir.join("cache"));
        (reg, reference)
    })
}

/// A kiln home whose image store has `debian:bookworm`.
struct Env(support::kiln::Kiln);

impl std::ops::Deref for Env {
    type Target = support::kiln::Kiln;
    fn deref(&self) -> &support::kiln::Kiln {
        &self.0
    }
}

impl Env {
    fn new() -> Env {
        let k = support::kiln::Kiln::new();
        support::base::local_debian(&k.path("data"));
        Env(k)
    }

    /// Builds `dir` with JSON progress; returns (step name → status).
    fn build_events(&self, dir: &Path, extra: &[&str]) -> Vec<(String, String)> {
        let base_arg = "BASE=debian:bookworm".to_string();
        let mut args = vec![
            "--progress",
            "json",
            "build",
            dir.to_str().unwrap(),
            "--build-arg",
            &base_arg,
        ];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        let mut names = BTreeMap::new();
        let mut done = Vec::new();
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            match v["event"].as_str() {
                Some("start") => {
                    names.insert(
                        v["id"].as_u64().unwrap(),
                        v["name"].as_str().unwrap().to_string(),
                    );
                }
                Some("finish") => {
                    let name = names
                        .get(&v["id"].as_u64().unwrap())
                        .cloned()
                        .unwrap_or_default();
                    if name.starts_with('[') {
                        done.push((name, v["status"].as_str().unwrap().to_string()));
                    }
                }
                _ => {}
            }
        }
        done
    }
}

fn app(dir: &Path) {
    fs::create_dir_all(dir.join("src")).unwrap();
    fs::write(dir.join("package.json"), "{\"name\":\"x\"}\n").unwrap();
    fs::write(dir.join("src/main.txt"), "v1\n").unwrap();
    fs::write(
        dir.join("Dockerfile"),
        "ARG BASE\nFROM $BASE AS deps\nWORKDIR /app\nCOPY package.json ./\nRUN cp package.json deps.txt\n\nFROM deps\nCOPY src ./src\nRUN cat src/main.txt > out.txt\nCMD [\"cat\", \"/app/out.txt\"]\n",
    )
    .unwrap();
}

#[test]
fn warm_rebuild_reruns_only_what_a_change_reaches() {
    let env = Env::new();
    let dir = env.path("app");
    app(&dir);
    let first = env.build_events(&dir, &["-t", "app:1"]);
    assert!(first.iter().all(|(_, s)| s == "done"), "{first:?}");
    // Touching without changing re-runs nothing.
    let f = fs::File::options()
        .write(true)
        .open(dir.join("src/main.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    let touched = env.build_events(&dir, &["-t", "app:1"]);
    assert!(touched.iter().all(|(_, s)| s == "cached"), "{touched:?}");
    // A source change re-runs from the COPY that sees it; deps stay cached.
    fs::write(dir.join("src/main.txt"), "v2\n").unwrap();
    let changed = env.build_events(&dir, &["-t", "app:2"]);
    let status = |needle: &str| {
        changed
            .iter()
            .find(|(n, _)| n.contains(needle))
            .map(|(_, s)| s.clone())
            .unwrap()
    };
    assert_eq!(status("COPY package.json"), "cached");
    assert_eq!(status("RUN cp package.json"), "cached");
    assert_eq!(status("COPY src"), "done");
    assert_eq!(status("RUN cat src/main.txt"), "done");
    // The new image runs the new content.
    let out = env.ok(&["run", "app:2"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v2\n");
}

#[test]
fn failing_run_reports_command_exit_code_and_tail_and_tags_nothing() {
    let env = Env::new();
    let dir = env.path("fail");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nRUN echo first-step > /ok\nRUN for i in $(seq 1 50); do echo line-$i; done; exit 3\n",
    )
    .unwrap();
    let base_arg = "BASE=debian:bookworm".to_string();
    let out = env.kiln(&[
        "--progress",
        "quiet",
        "build",
        dir.to_str().unwrap(),
        "--build-arg",
        &base_arg,
        "-t",
        "broken:1",
    ]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "a failed step exits with code 4"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exit code 3"), "{err}");
    assert!(
        err.contains("for i in $(seq 1 50)"),
        "the command is shown: {err}"
    );
    assert!(
        err.contains("line-50") && err.contains("line-21") && !err.contains("line-20\n"),
        "the last 30 lines: {err}"
    );
    assert!(err.contains("Dockerfile:4"), "the Dockerfile line: {err}");
    let images = String::from_utf8_lossy(&env.ok(&["images"]).stdout).into_owned();
    assert!(!images.contains("broken"), "{images}");
    // The completed step is cached: the rerun resumes after it.
    fs::write(
        dir.join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nRUN echo first-step > /ok\nRUN cat /ok\n",
    )
    .unwrap();
    let events = env.build_events(&dir, &["-t", "fixed:1"]);
    assert_eq!(events[0].1, "cached", "{events:?}");
}

#[test]
fn bad_dockerfiles_give_located_errors() {
    let env = Env::new();
    let base_arg = "BASE=debian:bookworm".to_string();
    let case = |name: &str, text: &str, files: &[&str]| -> String {
        let dir = env.path(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("Dockerfile"), text).unwrap();
        for f in files {
            fs::write(dir.join(f), "x").unwrap();
        }
        let out = env.kiln(&["build", dir.to_str().unwrap(), "--build-arg", &base_arg]);
        assert!(!out.status.success(), "{name} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = case("syntax", "ARG BASE\nFROM $BASE\nRUN [\"unterminated\n", &[]);
    assert!(e.contains("Dockerfile:3"), "{e}");
    let e = case("unknown", "ARG BASE\nFROM $BASE\nCOPPY a /b\n", &[]);
    assert!(e.contains("COPPY") && e.contains("Dockerfile:3"), "{e}");
    let e = case(
        "nostage",
        "ARG BASE\nFROM $BASE\nCOPY --from=nowhere /a /b\n",
        &[],
    );
    assert!(e.contains("nowhere"), "{e}");
    let e = case(
        "missing",
        "ARG BASE\nFROM $BASE\nCOPY missing.txt /x\n",
        &[],
    );
    assert!(
        e.contains("file not found in build context: missing.txt"),
        "{e}"
    );
    let e = case("outside", "ARG BASE\nFROM $BASE\nCOPY ../x /x\n", &[]);
    assert!(e.contains("outside the build context"), "{e}");
    let out = env.kiln(&["build", env.path("nothing-here").to_str().unwrap()]);
    assert!(!out.status.success());
    let dir = env.path("nodockerfile");
    fs::create_dir_all(&dir).unwrap();
    // No Dockerfile in the context: the auto plan runs, and an empty dir
    // has no provider (exit code 3).
    let out = env.kiln(&["build", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No compatible providers found"));
    // An explicit -f that is missing is an error, never a fallback.
    let missing = dir.join("Dockerfile.missing");
    let out = env.kiln(&[
        "build",
        dir.to_str().unwrap(),
        "-f",
        missing.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("Dockerfile not found: {}", missing.display())),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kill_9_during_a_build_then_rebuild_completes_and_the_store_verifies() {
    let env = Env::new();
    let dir = env.path("slow");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nRUN head -c 10000000 /dev/urandom > /big1\nRUN sleep 2 && head -c 10000000 /dev/urandom > /big2\nRUN echo done > /done\n",
    )
    .unwrap();
    let base_arg = "BASE=debian:bookworm".to_string();
    for delay in [300u64, 1500, 2600] {
        let mut child = env
            .cmd()
            .args([
                "build",
                dir.to_str().unwrap(),
                "--build-arg",
                &base_arg,
                "-t",
                "slow:1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
    }
    let events = env.build_events(&dir, &["-t", "slow:1"]);
    assert_eq!(events.len(), 3, "{events:?}");
    let out = env.ok(&["run", "slow:1", "cat", "/done"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    let verify = String::from_utf8_lossy(&env.ok(&["cache", "verify"]).stdout).into_owned();
    assert!(verify.lines().all(|l| l.contains(" 0 corrupt")), "{verify}");
}

// ---------------------------------------------------------------------------
// kiln vs buildah on the Dockerfile corpus.

#[derive(Debug, Clone, PartialEq)]
enum Node {
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        sha: String,
    },
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink {
        target: PathBuf,
        uid: u32,
        gid: u32,
    },
    Other {
        mode: u32,
    },
}

type Tree = BTreeMap<PathBuf, Node>;

/// An image's root filesystem, read from an OCI layout with the `tar`
/// crate (an independent reader of kiln's layers): `base` (the shared base
/// image's tree, read once) with the layers above the base applied in
/// order, whiteouts and opaque directories included. Both builders start
/// from the same base layer (asserted by diff_id), so only the layers they
/// wrote are read.
fn layout_tree(layout: &Path, tag: &str, base: &Tree, base_diff_id: &str) -> Tree {
    let (manifest, config) = layout_image(layout, tag);
    let blob = |d: &str| layout_blob(layout, d);
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(
        diff_ids[0].as_str(),
        Some(base_diff_id),
        "{}: the image does not start from the shared base layer",
        layout.display()
    );
    let mut t = base.clone();
    for l in &manifest["layers"].as_array().unwrap()[1..] {
        apply_layer(
            &mut t,
            fs::File::open(blob(l["digest"].as_str().unwrap())).unwrap(),
        );
    }
    t
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// A blob of an OCI layout, by digest.
fn layout_blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The manifest and config of the image tagged `tag` in an OCI layout.
fn layout_image(layout: &Path, tag: &str) -> (serde_json::Value, serde_json::Value) {
    let index = read_json(&layout.join("index.json"));
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag))
        .unwrap_or_else(|| panic!("{}: no image tagged {tag}", layout.display()));
    let manifest = read_json(&layout_blob(layout, entry["digest"].as_str().unwrap()));
    let config = read_json(&layout_blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    (manifest, config)
}

/// A layer blob's tar stream (uncompressed, gzip or zstd, by content).
fn decompress(mut f: fs::File) -> Box<dyn std::io::Read> {
    use std::io::{Read, Seek};
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).unwrap();
    f.seek(std::io::SeekFrom::Start(0)).unwrap();
    let f = std::io::BufReader::new(f);
    match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(f)),
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(zstd::stream::read::Decoder::with_buffer(f).unwrap()),
        _ => Box::new(f),
    }
}

/// Applies one layer to `t` as an OCI runtime unpacks it: whiteouts and
/// opaque markers delete from the layers below, then entries replace.
fn apply_layer(t: &mut Tree, blob: fs::File) {
    use std::io::Read;
    let mut ar = tar::Archive::new(decompress(blob));
    let mut adds: Vec<(PathBuf, Node)> = Vec::new();
    let remove_under = |t: &mut Tree, dir: &Path, keep_dir: bool| {
        let doomed: Vec<PathBuf> = t
            .range(dir.to_path_buf()..)
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(dir))
            .filter(|p| !(keep_dir && *p == dir))
            .cloned()
            .collect();
        for p in doomed {
            t.remove(&p);
        }
    };
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path: PathBuf = e
            .path()
            .unwrap()
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
        match name.as_deref() {
            Some(".wh..wh..opq") => {
                for p in t
                    .keys()
                    .filter(|p| p.parent() == Some(parent.as_path()))
                    .cloned()
                    .collect::<Vec<_>>()
                {
                    remove_under(t, &p, false);
                }
                continue;
            }
            Some(n) if n.starts_with(".wh.") => {
                remove_under(t, &parent.join(&n[4..]), false);
                continue;
            }
            _ => {}
        }
        let h = e.header().clone();
        let (mode, uid, gid) = (
            h.mode().unwrap() & 0o7777,
            h.uid().unwrap() as u32,
            h.gid().unwrap() as u32,
        );
        let ty = h.entry_type();
        let node = if ty.is_dir() {
            Node::Dir { mode, uid, gid }
        } else if ty.is_symlink() {
            Node::Symlink {
                target: e.link_name().unwrap().unwrap().into_owned(),
                uid,
                gid,
            }
        } else if ty.is_hard_link() {
            let target: PathBuf = e
                .link_name()
                .unwrap()
                .unwrap()
                .components()
                .filter(|c| matches!(c, std::path::Component::Normal(_)))
                .collect();
            adds.iter()
                .rev()
                .find(|(p, _)| *p == target)
                .map(|(_, n)| n)
                .or_else(|| t.get(&target))
                .map(|n| match n {
                    Node::File { sha, .. } => Node::File {
                        mode,
                        uid,
                        gid,
                        sha: sha.clone(),
                    },
                    other => panic!("hard link {} to {other:?}", path.display()),
                })
                .unwrap_or_else(|| panic!("hard link {} to a missing file", path.display()))
        } else if ty.is_file() {
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            Node::File {
                mode,
                uid,
                gid,
                sha: kiln::oci::Digest::of(&bytes).to_string(),
            }
        } else {
            Node::Other {
                mode: mode | (h.as_bytes()[156] as u32) << 16,
            }
        };
        adds.push((path, node));
    }
    for (p, n) in adds {
        if p.as_os_str().is_empty() {
            continue;
        }
        // A non-directory replaces whatever was there, children included.
        if !matches!(n, Node::Dir { .. }) {
            remove_under(t, &p, false);
        }
        t.insert(p, n);
    }
}

/// The base image's tree, read once from the shared store.
fn base_tree() -> &'static (Tree, String) {
    static TREE: OnceLock<(Tree, String)> = OnceLock::new();
    TREE.get_or_init(|| {
        let d = support::debian::base_layer();
        let mut t = Tree::new();
        apply_layer(&mut t, support::debian::store().open_blob(&d).unwrap());
        (t, d.to_string())
    })
}

/// Paths buildah's chroot isolation leaves in images that kiln does not
/// (documented in docs/dockerfile.md): run-time mount points it creates.
const BUILDAH_ONLY: &[&str] = &[
    "run/.containerenv",
    "etc/hostname",
    "etc/hosts",
    "etc/resolv.conf",
];

/// The compared config fields, read by skopeo from `image` (`oci:DIR:TAG`).
fn config_of(image: &str) -> serde_json::Value {
    let text = run("skopeo", &["inspect", "--config", image]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let c = &v["config"];
    let mut labels = c["Labels"].as_object().cloned().unwrap_or_default();
    labels.remove("io.buildah.version");
    serde_json::json!({
        "Env": c["Env"], "Cmd": c["Cmd"], "Entrypoint": c["Entrypoint"],
        "WorkingDir": c["WorkingDir"].as_str().unwrap_or(""), "User": c["User"].as_str().unwrap_or(""),
        "ExposedPorts": c["ExposedPorts"], "Labels": labels,
    })
}

/// Differences between kiln and buildah 1.28 that are known, per corpus
/// case and path (or `config`), with the reason. Each is either a buildah
/// deviation from Docker's documented behaviour or a kiln gap tracked in
/// issue 7; any other difference fails the test.
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[
    (
        "12-user-env-workdir-interplay",
        "home/app",
        "buildah creates a WORKDIR when a step first runs in it, owned by that step's USER; BuildKit and kiln create it at WORKDIR, owned by the USER then (root here)",
    ),
    (
        "09-workdir-relative",
        "a/b",
        "kiln gap: WORKDIR of a relative path creates an extra directory",
    ),
    (
        "36-expose",
        "config",
        "buildah keeps EXPOSE ranges as 7000-7002/tcp; Docker and kiln expand them",
    ),
    (
        "42-shell-instruction",
        "bash-major",
        "buildah 1.28 ignores SHELL for RUN; Docker and kiln honour it",
    ),
    (
        "42-shell-instruction",
        "config",
        "buildah 1.28 ignores SHELL for CMD's shell form; Docker and kiln honour it",
    ),
    (
        "53-run-mount-cache",
        "var/cache/app",
        "buildah leaves mount-point directories in the layer; kiln and BuildKit do not",
    ),
    (
        "53-run-mount-cache",
        "listing",
        "kiln gap: the cache mount id is shared by every case of this run",
    ),
    (
        "54-run-mount-secret",
        "run/secrets",
        "buildah leaves mount-point directories in the layer; kiln and BuildKit do not",
    ),
];

fn known_difference(case: &str, what: &str) -> bool {
    KNOWN_DIFFERENCES
        .iter()
        .any(|(c, p, _)| *c == case && *p == what)
}

/// Corpus cases buildah 1.28 cannot build (heredocs): checked by the
/// hermetic corpus test against their expectations instead.
fn buildah_can_build(dockerfile: &str) -> bool {
    !dockerfile.contains("<<")
}

/// What comparing one corpus case gave.
enum Outcome {
    /// Not for buildah (heredocs, `"buildah": false`).
    Skipped,
    /// buildah 1.28 refused to build it.
    Refused,
    /// Compared: the paths kiln's image changes above the base, and the
    /// differences found (none when they match).
    Compared(usize, Vec<String>),
    /// kiln failed to build it.
    KilnFailed(String),
}

/// Builds `case` with kiln (in `env`) and buildah, and compares the two
/// images above the shared base.
fn compare_case(env: &Env, case: &Path, base_ref: &str, buildah_layout: &Path) -> Outcome {
    let name = case.file_name().unwrap().to_string_lossy().into_owned();
    let expect: serde_json::Value = fs::read(case.with_extension("expect.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let dockerfile = case.join(expect["dockerfile"].as_str().unwrap_or("Dockerfile"));
    let text = fs::read_to_string(&dockerfile).unwrap();
    if !buildah_can_build(&text) || expect["buildah"].as_bool() == Some(false) {
        return Outcome::Skipped;
    }
    let mut args: Vec<String> = vec![format!("BASE={base_ref}")];
    if let Some(m) = expect["build_args"].as_object() {
        for (k, v) in m {
            args.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    let target = expect["target"].as_str().map(str::to_string);
    let secrets: Vec<String> = expect["secrets"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(id, f)| {
                    format!(
                        "id={id},src={}",
                        case.join(f.as_str().unwrap_or_default()).display()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut common: Vec<String> = Vec::new();
    for a in &args {
        common.extend(["--build-arg".into(), a.clone()]);
    }
    if let Some(t) = &target {
        common.extend(["--target".into(), t.clone()]);
    }
    common.extend(["-f".into(), dockerfile.to_string_lossy().into()]);
    for sec in &secrets {
        common.extend(["--secret".into(), sec.clone()]);
    }
    // kiln
    let kdir = env.path(&format!("k-{name}"));
    let mut kargs: Vec<String> = vec![
        "--progress".into(),
        "quiet".into(),
        "build".into(),
        case.to_string_lossy().into(),
        "-t".into(),
        format!("cmp-{name}:latest"),
        "-o".into(),
        format!("type=oci,dest={}", kdir.display()),
    ];
    kargs.extend(common.iter().cloned());
    let out = env.cmd().args(&kargs).output().unwrap();
    if !out.status.success() {
        return Outcome::KilnFailed(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    // buildah, same base, same args
    let tag = format!("localhost/kiln-cmp-{}", name.to_lowercase());
    let mut bargs: Vec<String> = [
        "bud",
        "--isolation",
        "chroot",
        "--layers",
        "--tls-verify=false",
        "-q",
        "-t",
        &tag,
    ]
    .map(String::from)
    .to_vec();
    bargs.extend(common);
    bargs.push(case.to_string_lossy().into());
    let bout = Command::new("buildah")
        .args(&bargs)
        .output()
        .expect("buildah: run ./scripts/test");
    if !bout.status.success() {
        // buildah 1.28 lags BuildKit's syntax (e.g. ${V+x}); such cases
        // are checked against their expectations by the hermetic corpus test.
        let err = String::from_utf8_lossy(&bout.stderr);
        eprintln!(
            "{name}: buildah cannot build it, skipped: {}",
            err.lines().last().unwrap_or_default()
        );
        return Outcome::Refused;
    }
    // One layout for every buildah image: the base layer is written once
    // and skipped after ("already exists"). Pushes into it take turns.
    static PUSH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    {
        let _turn = PUSH.lock().unwrap_or_else(|e| e.into_inner());
        run(
            "buildah",
            &[
                "push",
                "-q",
                "--disable-compression",
                &tag,
                &format!("oci:{}:{name}", buildah_layout.display()),
            ],
        );
    }
    run("buildah", &["rmi", "-f", &tag]);
    let (base, base_diff_id) = base_tree();
    let mut k = layout_tree(&kdir, "latest", base, base_diff_id);
    let mut b = layout_tree(buildah_layout, &name, base, base_diff_id);
    for p in BUILDAH_ONLY {
        if !k.contains_key(Path::new(p)) {
            b.remove(Path::new(p));
        }
    }
    // The base's /etc/hostname etc. are identical in both; keep them.
    k.retain(|p, _| !p.starts_with("proc") && !p.starts_with("sys"));
    b.retain(|p, _| !p.starts_with("proc") && !p.starts_with("sys"));
    let mut failures = Vec::new();
    let diffs: Vec<String> = k
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|p| k.get(*p) != b.get(*p))
        .filter(|p| !known_difference(&name, &p.to_string_lossy()))
        .map(|p| {
            format!(
                "  {}: kiln {:?} / buildah {:?}",
                p.display(),
                k.get(p),
                b.get(p)
            )
        })
        .collect();
    if !diffs.is_empty() {
        failures.push(format!(
            "{name}: root filesystems differ:\n{}",
            diffs.join("\n")
        ));
    }
    let (kc, bc) = (
        config_of(&format!("oci:{}:latest", kdir.display())),
        config_of(&format!("oci:{}:{name}", buildah_layout.display())),
    );
    if kc != bc && !known_difference(&name, "config") {
        failures.push(format!(
            "{name}: configs differ:\n  kiln    {kc}\n  buildah {bc}"
        ));
    }
    let _ = fs::remove_dir_all(&kdir);
    let changed = k.iter().filter(|(p, n)| base.get(*p) != Some(*n)).count();
    Outcome::Compared(changed, failures)
}

#[test]
fn corpus_matches_buildah() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dockerfiles");
    let base_ref = base().1.clone();
    // KILN_CORPUS_CASES bounds the run while iterating; CI runs them all.
    let max_cases: usize = std::env::var("KILN_CORPUS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    // Builds mostly wait on processes (buildah, kiln's sandbox, fsync), so
    // a few cases at once use the cores better than one.
    let jobs: usize = std::env::var("KILN_CORPUS_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut cases: Vec<PathBuf> = fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    // KILN_CORPUS_ONLY=12,27 compares only the cases whose names contain one of these.
    let only = std::env::var("KILN_CORPUS_ONLY").ok();
    if let Some(only) = &only {
        cases.retain(|c| {
            let n = c.file_name().unwrap().to_string_lossy();
            only.split(',').any(|o| n.contains(o))
        });
    }
    let started = std::time::Instant::now();
    let layouts = tempfile::tempdir().unwrap();
    let buildah_layout = layouts.path().join("buildah");
    let queue = std::sync::Mutex::new(cases.into_iter());
    let results = std::sync::Mutex::new(Vec::<(String, Outcome)>::new());
    let compared_count = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                // Each worker has its own kiln home: builds share nothing.
                let env = Env::new();
                loop {
                    if compared_count.load(std::sync::atomic::Ordering::SeqCst) >= max_cases {
                        break;
                    }
                    let Some(case) = queue.lock().unwrap().next() else {
                        break;
                    };
                    let t = std::time::Instant::now();
                    let name = case.file_name().unwrap().to_string_lossy().into_owned();
                    let outcome = compare_case(&env, &case, &base_ref, &buildah_layout);
                    if let Outcome::Compared(changed, _) = &outcome {
                        compared_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        eprintln!(
                            "{name}: compared in {:.1}s ({changed} paths above the base)",
                            t.elapsed().as_secs_f64()
                        );
                    }
                    results.lock().unwrap().push((name, outcome));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let mut compared = 0;
    let mut failures = Vec::new();
    let mut refused = Vec::new();
    for (name, o) in results {
        match o {
            Outcome::Skipped => {}
            Outcome::Refused => refused.push(name),
            Outcome::KilnFailed(err) => failures.push(format!("{name}: kiln failed: {err}")),
            Outcome::Compared(_, f) => {
                compared += 1;
                failures.extend(f);
            }
        }
    }
    eprintln!(
        "compared {compared} cases with buildah in {:.0}s ({jobs} at a time); buildah refused {}: {refused:?}",
        started.elapsed().as_secs_f64(),
        refused.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {compared} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        refused.len() <= 5,
        "buildah refused more cases than expected: {refused:?}"
    );
    assert!(
        compared >= if only.is_some() { 1 } else { 20.min(max_cases) },
        "only {compared} corpus cases were compared"
    );
}

/// A loopback HTTP server for `ADD <url>`: serves `files` (path → body),
/// 404 otherwise, and counts the requests it answered.
fn serve(
    files: Vec<(&'static str, Vec<u8>)>,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // Skip the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (status, body) = match files.iter().find(|(p, _)| *p == path) {
                Some((_, b)) => ("200 OK", b.clone()),
                None => ("404 Not Found", b"not found\n".to_vec()),
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body);
        }
    });
    (port, hits)
}

/// The layer digests and root filesystem of the image tagged `tag` in
/// the OCI layout `layout` (every layer applied, from empty).
fn image_layers(layout: &Path, tag: &str) -> (Vec<String>, Tree) {
    let (manifest, _) = layout_image(layout, tag);
    let blob = |d: &str| layout_blob(layout, d);
    let mut t = Tree::new();
    let mut digests = Vec::new();
    for l in manifest["layers"].as_array().unwrap() {
        let d = l["digest"].as_str().unwrap();
        digests.push(d.to_string());
        apply_layer(&mut t, fs::File::open(blob(d)).unwrap());
    }
    (digests, t)
}

#[test]
fn add_url_downloads_verifies_the_checksum_and_is_keyed_by_it() {
    use std::sync::atomic::Ordering::SeqCst;
    let env = Env::new();
    let body = b"echo hi\n".to_vec();
    let sum = kiln::oci::Digest::of(&body).to_string();
    let (port, hits) = serve(vec![
        ("/files/tool.sh", body.clone()),
        ("/other.bin", b"other\n".to_vec()),
    ]);
    let url = format!("http://127.0.0.1:{port}/files/tool.sh");
    let dir = env.path("add");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM scratch\nADD --checksum={sum} {url} /opt/\nADD {url} /named\nADD --chmod=0755 --chown=1000:1000 {url} /x/run\n"
        ),
    )
    .unwrap();
    let layout = env.path("add-layout");
    let o = format!("type=oci,dest={}", layout.display());
    let first = env.build_events(&dir, &["-t", "add:latest", "-o", &o]);
    assert!(first.iter().all(|(_, s)| s == "done"), "{first:?}");
    let (_, tree) = image_layers(&layout, "latest");
    let file = |mode, uid| Node::File {
        mode,
        uid,
        gid: uid,
        sha: sum.clone(),
    };
    // Into a directory: the URL's file name; mode 0600 unless --chmod.
    assert_eq!(tree.get(Path::new("opt/tool.sh")), Some(&file(0o600, 0)));
    assert_eq!(tree.get(Path::new("named")), Some(&file(0o600, 0)));
    assert_eq!(tree.get(Path::new("x/run")), Some(&file(0o755, 1000)));
    // Unpinned: one download per URL, before keying; the pinned step finds
    // its content (the same bytes) already stored and downloads nothing.
    assert_eq!(hits.load(SeqCst), 1);
    // Warm: the pinned ADD needs no download; unpinned ones are re-read
    // (their key is their content) and hit the cache.
    let warm = env.build_events(&dir, &["-t", "add:latest"]);
    let steps: Vec<_> = warm
        .iter()
        .filter(|(n, _)| !n.starts_with("[download]"))
        .collect();
    assert!(steps.iter().all(|(_, s)| s == "cached"), "{warm:?}");
    assert_eq!(hits.load(SeqCst), 2);

    // A mismatch names the line, the URL and both digests; nothing is
    // tagged and the bytes are not stored.
    let other = format!("http://127.0.0.1:{port}/other.bin");
    let got = kiln::oci::Digest::of(b"other\n");
    // (A checksum whose content is already stored needs no download, as
    // in BuildKit: name content that is not.)
    let sum = kiln::oci::Digest::of(b"what the author expected").to_string();
    fs::write(
        dir.join("Dockerfile"),
        format!("FROM scratch\nADD --checksum={sum} {other} /o\n"),
    )
    .unwrap();
    let out = env.kiln(&["build", dir.to_str().unwrap(), "-t", "bad:latest"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains(&other), "{err}");
    assert!(err.contains(&format!("expected {sum}")), "{err}");
    assert!(err.contains(&format!("got {got}")), "{err}");
    let images = String::from_utf8_lossy(&env.ok(&["images"]).stdout).into_owned();
    assert!(!images.contains("bad"), "{images}");
    assert!(
        !env.path("cache/store/blobs/sha256")
            .join(got.hex())
            .exists(),
        "a mismatching download is not stored"
    );
    // --checksum on a local source is refused when parsing.
    fs::write(dir.join("local.txt"), "x").unwrap();
    fs::write(
        dir.join("Dockerfile"),
        format!("FROM scratch\nADD --checksum={sum} local.txt /l\n"),
    )
    .unwrap();
    let out = env.kiln(&["build", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--checksum can only be used"), "{err}");
}

#[test]
fn copy_link_layer_is_cached_across_a_change_below_it() {
    let env = Env::new();
    let dir = env.path("link");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("f.txt"), "linked\n").unwrap();
    let dockerfile = |v: &str| {
        format!(
            "ARG BASE\nFROM $BASE\nRUN echo {v} > /before\nCOPY --link --chmod=0640 f.txt /opt/app/\nRUN cat /before /opt/app/f.txt > /after\n"
        )
    };
    fs::write(dir.join("Dockerfile"), dockerfile("one")).unwrap();
    let layout = |n: &str| env.path(&format!("link-{n}"));
    let o1 = format!("type=oci,dest={}", layout("1").display());
    let first = env.build_events(&dir, &["-t", "link:latest", "-o", &o1]);
    assert!(first.iter().all(|(_, s)| s == "done"), "{first:?}");
    fs::write(dir.join("Dockerfile"), dockerfile("two")).unwrap();
    let o2 = format!("type=oci,dest={}", layout("2").display());
    let second = env.build_events(&dir, &["-t", "link:latest", "-o", &o2]);
    let status = |needle: &str| {
        second
            .iter()
            .find(|(n, _)| n.contains(needle))
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("{needle}: {second:?}"))
    };
    assert_eq!(status("RUN echo two"), "done");
    assert_eq!(status("COPY --link"), "cached");
    // The step after it still sees the change below.
    assert_eq!(status("RUN cat"), "done");
    let (l1, _) = image_layers(&layout("1"), "latest");
    let (l2, t2) = image_layers(&layout("2"), "latest");
    // base, RUN, COPY --link, RUN: the linked layer is the same blob.
    assert_eq!(l1.len(), 4, "{l1:?}");
    assert_eq!(l1[2], l2[2]);
    assert_ne!(l1[1], l2[1]);
    match t2.get(Path::new("after")) {
        Some(Node::File { sha, .. }) => {
            assert_eq!(*sha, kiln::oci::Digest::of(b"two\nlinked\n").to_string())
        }
        other => panic!("/after: {other:?}"),
    }
}

#[test]
fn run_mounts_from_another_stage_and_image() {
    let env = Env::new();
    let dir = env.path("mounts");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("Dockerfile"),
        "ARG BASE\nFROM $BASE AS tools\nRUN mkdir -p /opt/t && echo tool-x > /opt/t/x && ln -s x /opt/t/link\n\
         FROM $BASE\n\
         RUN --mount=type=bind,from=tools,source=/opt/t,target=/mnt cat /mnt/x /mnt/link > /out\n\
         RUN --mount=type=bind,from=tools,source=/opt/t,target=/mnt,rw echo changed > /mnt/x && cat /mnt/x > /rw-saw\n\
         RUN --mount=type=bind,from=tools,source=/opt/t,target=/mnt cat /mnt/x > /out2 && ! touch /mnt/y 2>/dev/null\n\
         RUN --mount=type=bind,from=tools,source=/opt/t/x,target=/one.txt cat /one.txt > /single\n\
         RUN --mount=type=cache,id=seeded,target=/c,from=tools,source=/opt/t cat /c/x > /cached && echo more > /c/new\n\
         RUN --mount=type=bind,from=debian:bookworm,source=/etc/debian_version,target=/dv cat /dv > /dv-copy\n",
    )
    .unwrap();
    let layout = env.path("mounts-layout");
    let o = format!("type=oci,dest={}", layout.display());
    let events = env.build_events(&dir, &["-t", "mounts:latest", "-o", &o]);
    assert!(events.iter().all(|(_, s)| s == "done"), "{events:?}");
    let (_, tree) = image_layers(&layout, "latest");
    let sha = |p: &str| match tree.get(Path::new(p)) {
        Some(Node::File { sha, .. }) => sha.clone(),
        other => panic!("/{p}: {other:?}"),
    };
    let of = |b: &[u8]| kiln::oci::Digest::of(b).to_string();
    assert_eq!(sha("out"), of(b"tool-x\ntool-x\n"));
    assert_eq!(sha("rw-saw"), of(b"changed\n"));
    // The rw write was discarded: neither the stage nor the next mount saw it.
    assert_eq!(sha("out2"), of(b"tool-x\n"));
    assert_eq!(sha("single"), of(b"tool-x\n"));
    // A new cache mount starts with the stage's files.
    assert_eq!(sha("cached"), of(b"tool-x\n"));
    let dv = fs::read(base_debian_version(&env)).unwrap();
    assert_eq!(sha("dv-copy"), of(&dv));
    // Mount points and their contents stay out of the image.
    assert!(!tree.contains_key(Path::new("mnt/x")), "mnt/x leaked");
    assert!(!tree.contains_key(Path::new("c/x")), "c/x leaked");

    // A seeded cache is one per id and source (as BuildKit): the same
    // stage finds its cache as the last step left it, not reseeded; another
    // stage under the same id gets its own, seeded from it.
    fs::write(
        dir.join("Dockerfile"),
        "ARG BASE\nFROM $BASE AS tools\nRUN mkdir -p /opt/t && echo tool-x > /opt/t/x && ln -s x /opt/t/link\n\
         FROM $BASE AS tools2\nRUN mkdir -p /opt/t && echo tool-z > /opt/t/x\n\
         FROM $BASE\n\
         RUN --mount=type=cache,id=seeded,target=/c,from=tools,source=/opt/t cat /c/new > /kept\n\
         RUN --mount=type=cache,id=seeded,target=/c,from=tools2,source=/opt/t cat /c/x > /other && ! test -e /c/new\n",
    )
    .unwrap();
    let layout = env.path("mounts-layout-2");
    let o = format!("type=oci,dest={}", layout.display());
    env.build_events(&dir, &["-t", "mounts:2", "-o", &o]);
    let (_, tree) = image_layers(&layout, "2");
    let sha = |p: &str| match tree.get(Path::new(p)) {
        Some(Node::File { sha, .. }) => sha.clone(),
        other => panic!("/{p}: {other:?}"),
    };
    assert_eq!(sha("kept"), of(b"more\n"));
    assert_eq!(sha("other"), of(b"tool-z\n"));

    // A missing source names itself, the stage and the line.
    fs::write(
        dir.join("Dockerfile"),
        "ARG BASE\nFROM $BASE AS tools\nRUN mkdir -p /opt/t\nFROM $BASE\nRUN --mount=type=bind,from=tools,source=/opt/nope,target=/mnt true\n",
    )
    .unwrap();
    let base_arg = "BASE=debian:bookworm".to_string();
    let out = env.kiln(&["build", dir.to_str().unwrap(), "--build-arg", &base_arg]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/opt/nope: not found in stage tools"), "{err}");
    assert!(err.contains("Dockerfile:5"), "{err}");
}

/// `/etc/debian_version` of the test base, read through a build.
fn base_debian_version(env: &Env) -> PathBuf {
    let dir = env.path("dv");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("Dockerfile"),
        "FROM debian:bookworm\nCMD [\"cat\", \"/etc/debian_version\"]\n",
    )
    .unwrap();
    env.ok(&["build", dir.to_str().unwrap(), "-t", "dv:1"]);
    let out = env.ok(&["run", "dv:1"]);
    let p = env.path("dv/version");
    fs::write(&p, out.stdout).unwrap();
    p
}
