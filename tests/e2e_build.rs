//! `kiln build` end to end on a real Debian base from a local registry:
//! the step cache, failure reports, bad input, kill -9, and a corpus of
//! Dockerfiles built by kiln and by buildah whose root filesystems and
//! configs must match. Runs as root (CI does).
#![cfg(feature = "e2e")]

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
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
    let out = env.kiln(&["build", dir.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Dockerfile not found"));
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

#[derive(Debug, PartialEq)]
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

fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let node = if m.file_type().is_symlink() {
                Node::Symlink {
                    target: fs::read_link(&p).unwrap(),
                    uid: m.uid(),
                    gid: m.gid(),
                }
            } else if m.is_dir() {
                stack.push(p.clone());
                Node::Dir {
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                }
            } else if m.is_file() {
                let bytes = fs::read(&p).unwrap();
                Node::File {
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    sha: kiln::oci::Digest::of(&bytes).to_string(),
                }
            } else {
                Node::Other { mode: m.mode() }
            };
            out.insert(rel, node);
        }
    }
    out
}

/// Paths buildah's chroot isolation leaves in images that kiln does not
/// (documented in docs/dockerfile.md): run-time mount points it creates.
const BUILDAH_ONLY: &[&str] = &[
    "run/.containerenv",
    "etc/hostname",
    "etc/hosts",
    "etc/resolv.conf",
];

fn config_of(layout: &Path) -> serde_json::Value {
    let text = run(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("oci:{}:latest", layout.display()),
        ],
    );
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
        "09-workdir-relative",
        "a/b",
        "kiln gap: WORKDIR of a relative path creates an extra directory",
    ),
    (
        "12-user-env-workdir-interplay",
        "home/app",
        "kiln gap: WORKDIR creates its directory root-owned; Docker gives it to USER",
    ),
    (
        "13-copy-chown",
        "app",
        "kiln gap: directories COPY --chown creates stay root-owned",
    ),
    (
        "13-copy-chown",
        "owned",
        "kiln gap: directories COPY --chown creates stay root-owned",
    ),
    (
        "13-copy-chown",
        "owned/a",
        "kiln gap: --chown=UID without a group must use GID=UID",
    ),
    (
        "13-copy-chown",
        "owned/sub",
        "kiln gap: --chown=UID without a group must use GID=UID",
    ),
    (
        "13-copy-chown",
        "owned/sub/b",
        "kiln gap: --chown=UID without a group must use GID=UID",
    ),
    (
        "27-add-local-tar",
        "x/archive.tar",
        "kiln gap: ADD does not extract local tars yet",
    ),
    (
        "27-add-local-tar",
        "x/b.txt",
        "kiln gap: ADD does not extract local tars yet",
    ),
    (
        "27-add-local-tar",
        "x/inner",
        "kiln gap: ADD does not extract local tars yet",
    ),
    (
        "27-add-local-tar",
        "x/inner/a.txt",
        "kiln gap: ADD does not extract local tars yet",
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

#[test]
fn corpus_matches_buildah() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dockerfiles");
    let base_ref = &base().1;
    let env = Env::new();
    let mut compared = 0;
    let mut failures = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    // KILN_CORPUS_CASES bounds the run while the comparison is being
    // completed (issue 7); CI runs the default.
    let max_cases: usize = std::env::var("KILN_CORPUS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    let mut cases: Vec<PathBuf> = fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let expect: serde_json::Value = fs::read(case.with_extension("expect.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let text =
            fs::read_to_string(case.join(expect["dockerfile"].as_str().unwrap_or("Dockerfile")))
                .unwrap();
        let started = std::time::Instant::now();
        if !buildah_can_build(&text) || expect["buildah"].as_bool() == Some(false) {
            continue;
        }
        let mut args: Vec<String> = vec![format!("BASE={base_ref}")];
        if let Some(m) = expect["build_args"].as_object() {
            for (k, v) in m {
                args.push(format!("{k}={}", v.as_str().unwrap_or_default()));
            }
        }
        let target = expect["target"].as_str().map(str::to_string);
        let dockerfile = case.join(expect["dockerfile"].as_str().unwrap_or("Dockerfile"));
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
        for a in &args {
            kargs.extend(["--build-arg".into(), a.clone()]);
        }
        if let Some(t) = &target {
            kargs.extend(["--target".into(), t.clone()]);
        }
        kargs.extend(["-f".into(), dockerfile.to_string_lossy().into()]);
        for sec in &secrets {
            kargs.extend(["--secret".into(), sec.clone()]);
        }
        let out = env.cmd().args(&kargs).output().unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{name}: kiln failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        // buildah, same base, same args
        let tag = format!("localhost/kiln-cmp-{}", name.to_lowercase());
        let mut bargs: Vec<String> = vec![
            "bud".into(),
            "--isolation".into(),
            "chroot".into(),
            "--layers".into(),
            "--tls-verify=false".into(),
            "-q".into(),
            "-t".into(),
            tag.clone(),
        ];
        for a in &args {
            bargs.extend(["--build-arg".into(), a.clone()]);
        }
        if let Some(t) = &target {
            bargs.extend(["--target".into(), t.clone()]);
        }
        bargs.extend(["-f".into(), dockerfile.to_string_lossy().into()]);
        for sec in &secrets {
            bargs.extend(["--secret".into(), sec.clone()]);
        }
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
            refused.push(name.clone());
            continue;
        }
        let bdir = env.path(&format!("b-{name}"));
        run(
            "buildah",
            &[
                "push",
                "-q",
                // Compressing the base layer again for every case costs more
                // than the whole comparison.
                "--disable-compression",
                &tag,
                &format!("oci:{}:latest", bdir.display()),
            ],
        );
        run("buildah", &["rmi", "-f", &tag]);
        for (layout, bundle) in [(&kdir, "kb"), (&bdir, "bb")] {
            run(
                "umoci",
                &[
                    "unpack",
                    "--image",
                    &format!("{}:latest", layout.display()),
                    env.path(&format!("{bundle}-{name}")).to_str().unwrap(),
                ],
            );
        }
        let mut k = tree(&env.path(&format!("kb-{name}/rootfs")));
        let mut b = tree(&env.path(&format!("bb-{name}/rootfs")));
        for p in BUILDAH_ONLY {
            if !k.contains_key(Path::new(p)) {
                b.remove(Path::new(p));
            }
        }
        // The base's /etc/hostname etc. are identical in both; keep them.
        k.retain(|p, _| !p.starts_with("proc") && !p.starts_with("sys"));
        b.retain(|p, _| !p.starts_with("proc") && !p.starts_with("sys"));
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
        let (kc, bc) = (config_of(&kdir), config_of(&bdir));
        if kc != bc && !known_difference(&name, "config") {
            failures.push(format!(
                "{name}: configs differ:\n  kiln    {kc}\n  buildah {bc}"
            ));
        }
        // Each case unpacks two full root filesystems: free them now.
        for d in [
            kdir.clone(),
            bdir.clone(),
            env.path(&format!("kb-{name}")),
            env.path(&format!("bb-{name}")),
        ] {
            let _ = fs::remove_dir_all(d);
        }
        compared += 1;
        eprintln!(
            "{name}: compared in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        if compared >= max_cases {
            break;
        }
    }
    eprintln!(
        "compared {compared} cases with buildah; buildah refused {}: {refused:?}",
        refused.len()
    );
    assert!(
        refused.len() <= 5,
        "buildah refused more cases than expected: {refused:?}"
    );
    assert!(
        compared >= 20.min(max_cases),
        "only {compared} corpus cases were compared"
    );
    assert!(
        failures.is_empty(),
        "{} of {compared} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
