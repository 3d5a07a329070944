//! What kiln writes, read by independent tools (skopeo, umoci, podman),
//! and the store surviving SIGKILL. Needs root, podman, skopeo, umoci and
//! busybox-static (installed by ./scripts/test).
#![cfg(feature = "e2e")]

mod support;

use support::kiln::{Kiln as Env, run};

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn podman(args: &[&str]) -> String {
    let mut full = vec!["--cgroup-manager", "cgroupfs"];
    full.extend_from_slice(args);
    run("podman", &full)
}

/// A tiny root filesystem: static busybox, a shell link, a hard link.
fn busybox_root(root: &Path) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static: run ./scripts/test");
    fs::copy(bb, root.join("bin/busybox")).unwrap();
    symlink("busybox", root.join("bin/sh")).unwrap();
    fs::write(root.join("etc/greeting"), "hello from kiln\n").unwrap();
    fs::hard_link(root.join("etc/greeting"), root.join("etc/greeting.link")).unwrap();
}

#[test]
fn skopeo_umoci_and_podman_read_every_format() {
    let env = Env::new();
    busybox_root(&env.path("root"));
    for compression in ["gzip", "zstd"] {
        let name = format!("kiln-e2e-{compression}:1");
        env.stdout(&[
            "image",
            "from-dir",
            "root",
            "-t",
            &name,
            "--owner",
            "0:0",
            "--compression",
            compression,
            "--cmd",
            r#"["/bin/busybox","cat","/etc/greeting"]"#,
            "--env",
            "A=1",
            "--expose",
            "8080",
            "-o",
            &format!("type=oci,dest=layout-{compression}"),
        ]);
        // skopeo reads the layout and the local image store.
        let inspect = run(
            "skopeo",
            &[
                "inspect",
                &format!(
                    "oci:{}:1",
                    env.path(&format!("layout-{compression}")).display()
                ),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        assert_eq!(v["Env"], serde_json::json!(["A=1"]));
        run(
            "skopeo",
            &[
                "inspect",
                &format!("oci:{}:{name}", env.path("data/images").display()),
            ],
        );
        env.stdout(&[
            "save",
            &name,
            "-o",
            &format!("type=docker,dest=docker-{compression}.tar"),
        ]);
        env.stdout(&[
            "save",
            &name,
            "-o",
            &format!("type=oci-archive,dest=oci-{compression}.tar"),
        ]);
        // podman loads both archive kinds and runs the image.
        for archive in [
            format!("docker-{compression}.tar"),
            format!("oci-{compression}.tar"),
        ] {
            let loaded = podman(&["load", "-i", env.path(&archive).to_str().unwrap()]);
            let id = loaded
                .lines()
                .find_map(|l| l.strip_prefix("Loaded image: "))
                .map(str::trim)
                .map(str::to_string);
            let tag = format!(
                "localhost/kiln-e2e-{compression}-{}",
                archive.replace('.', "-")
            );
            match id {
                Some(id) => {
                    podman(&["tag", &id, &tag]);
                }
                None => panic!("podman load printed no image for {archive}: {loaded}"),
            }
            let out = support::podman::run_cmd()
                .args(["--rm", &tag])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "podman run {tag}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let out = String::from_utf8_lossy(&out.stdout).into_owned();
            assert_eq!(out, "hello from kiln\n", "{archive}");
            podman(&["rmi", "-f", &tag]);
        }
    }
    // umoci unpacks the gzip layout (umoci 0.4.7 predates zstd layers) and
    // finds the tree, hard link included.
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:1", env.path("layout-gzip").display()),
            env.path("bundle").to_str().unwrap(),
        ],
    );
    let rootfs = env.path("bundle/rootfs");
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/greeting")).unwrap(),
        "hello from kiln\n"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(rootfs.join("etc/greeting")).unwrap().ino(),
        fs::metadata(rootfs.join("etc/greeting.link"))
            .unwrap()
            .ino()
    );
    assert_eq!(
        fs::read_link(rootfs.join("bin/sh")).unwrap(),
        PathBuf::from("busybox")
    );
}

/// A small deterministic pseudo-random generator (the seed is printed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn sigkill_while_writing_blobs_never_corrupts_the_store() {
    let env = Env::new();
    let src = env.path("big");
    let mut rng = Lcg(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64);
    eprintln!("seed {}", rng.0);
    for d in 0..8 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..40 {
            let len = 20_000 + (rng.next() % 200_000) as usize;
            let data: Vec<u8> = (0..len)
                .map(|i| {
                    if i % 3 == 0 {
                        rng.next() as u8
                    } else {
                        b'a' + (i % 7) as u8
                    }
                })
                .collect();
            fs::write(src.join(format!("d{d}/f{f}")), data).unwrap();
        }
    }
    // How long a whole build takes, to spread the kills over it.
    let t = Instant::now();
    env.stdout(&["image", "from-dir", "big", "-t", "probe"]);
    let full = t.elapsed().as_millis().max(50) as u64;
    env.stdout(&["rmi", "probe"]);
    env.stdout(&["cache", "prune"]);
    for i in 0..20 {
        // Vary the content so each run writes new blobs.
        fs::write(src.join("d0/f0"), format!("run {i}")).unwrap();
        let mut child = env
            .cmd()
            .args(["image", "from-dir", "big", "-t", &format!("k:{i}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.next() % (full + full / 4)));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    let verify = env.stdout(&["cache", "verify"]);
    assert!(
        verify
            .lines()
            .all(|l| !l.contains("corrupt") || l.contains(" 0 corrupt")),
        "{verify}"
    );
    // Every named image is complete.
    for line in env.stdout(&["images"]).lines().skip(1) {
        let name = line.split_whitespace().next().unwrap();
        env.stdout(&["inspect", name]);
        run(
            "skopeo",
            &[
                "inspect",
                &format!("oci:{}:{name}", env.path("data/images").display()),
            ],
        );
    }
    // The next build succeeds.
    let out = env.stdout(&["image", "from-dir", "big", "-t", "after:1"]);
    assert!(out.contains("after:1 sha256:"), "{out}");
    env.stdout(&["cache", "prune"]);
    assert_eq!(
        fs::read_dir(env.path("cache/store/ingest"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn unreadable_file_is_a_clear_error_and_leaves_nothing() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("ok"), "fine").unwrap();
    fs::write(src.join("secret"), "no").unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    for d in ["cache", "data"] {
        fs::create_dir_all(env.path(d)).unwrap();
        fs::set_permissions(env.path(d), fs::Permissions::from_mode(0o777)).unwrap();
    }
    // Root reads anything: run kiln as nobody.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_kiln"),
            "image",
            "from-dir",
            "src",
            "-t",
            "x",
        ])
        .env("KILN_CACHE_DIR", env.path("cache"))
        .env("KILN_DATA_DIR", env.path("data"))
        .env("HOME", "/nonexistent")
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read") && err.contains("secret") && err.contains("Permission denied"),
        "{err}"
    );
    // No layer blob was stored and no temp file was left.
    assert_eq!(
        fs::read_dir(env.path("cache/store/blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        fs::read_dir(env.path("cache/store/ingest"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn kiln_loads_what_podman_and_skopeo_save() {
    // Real producers' archives pass kiln load's checks: podman's docker
    // archive links its layer under `ID/layer.tar` to `../DIGEST.tar` (a
    // symlink inside the archive), its OCI archive and skopeo's layout
    // carry descriptors and diff_ids kiln verifies.
    let _podman = support::podman::lock();
    let env = Env::new();
    busybox_root(&env.path("root"));
    env.stdout(&[
        "image",
        "from-dir",
        "root",
        "-t",
        "kiln-e2e-roundtrip:1",
        "--cmd",
        r#"["/bin/sh","-c","cat /etc/greeting"]"#,
    ]);
    env.stdout(&[
        "save",
        "kiln-e2e-roundtrip:1",
        "-o",
        "type=docker,dest=k.tar",
    ]);
    let tag = "localhost/kiln-e2e-roundtrip:1";
    podman(&["load", "-i", env.path("k.tar").to_str().unwrap()]);
    podman(&[
        "save",
        "-o",
        env.path("p-docker.tar").to_str().unwrap(),
        tag,
    ]);
    podman(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        env.path("p-oci.tar").to_str().unwrap(),
        tag,
    ]);
    podman(&["rmi", "-f", tag]);
    let listing = run("tar", &["tvf", env.path("p-docker.tar").to_str().unwrap()]);
    assert!(
        listing.contains("/layer.tar -> ../"),
        "podman's archive changed shape:\n{listing}"
    );
    run(
        "skopeo",
        &[
            "copy",
            &format!("docker-archive:{}", env.path("k.tar").display()),
            &format!("oci:{}:v1", env.path("sk-layout").display()),
        ],
    );
    let want = env.stdout(&["inspect", "kiln-e2e-roundtrip:1"]);
    let want: serde_json::Value = serde_json::from_str(&want).unwrap();
    for (source, name) in [
        ("p-docker.tar", tag),
        ("p-oci.tar", tag),
        ("sk-layout", "v1:latest"),
    ] {
        let out = env.stdout(&["load", source]);
        assert!(
            out.contains(&format!("Loaded image: {name} (sha256:")),
            "{source}: {out}"
        );
        let got: serde_json::Value = serde_json::from_str(&env.stdout(&["inspect", name])).unwrap();
        assert_eq!(
            got["config"]["rootfs"], want["config"]["rootfs"],
            "{source}: other layers"
        );
        env.ok(&["rmi", name]);
    }
    env.ok(&["cache", "verify"]);
}

/// npm writes `node_modules/turbo-linux-64/bin/turbo` and
/// `node_modules/turbo/bin/turbo` as one inode. In a layer the first sorts
/// before the second (`-` < `/`), though a directory walk meets the second
/// first: the earlier entry must carry the content and the later one be
/// the link, or no unpacker can make the link. kiln itself (a `RUN` on the
/// image, which unpacks it as a snapshot), umoci and podman read it.
#[test]
fn a_hard_link_that_sorts_before_its_target_unpacks_everywhere() {
    let env = Env::new();
    let root = env.path("root");
    busybox_root(&root);
    let nm = root.join("node_modules");
    fs::create_dir_all(nm.join("turbo/bin")).unwrap();
    fs::create_dir_all(nm.join("turbo-linux-64/bin")).unwrap();
    fs::write(nm.join("turbo/bin/turbo"), "turbo binary\n").unwrap();
    fs::hard_link(
        nm.join("turbo/bin/turbo"),
        nm.join("turbo-linux-64/bin/turbo"),
    )
    .unwrap();
    env.stdout(&[
        "image",
        "from-dir",
        "root",
        "-t",
        "kiln-e2e-hardlink:1",
        "--owner",
        "0:0",
        "-o",
        "type=oci,dest=layout",
    ]);
    // kiln: a build step on the image unpacks it as a snapshot.
    let ctx = env.path("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln-e2e-hardlink:1\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"test $(/bin/busybox stat -c %i /node_modules/turbo/bin/turbo) = $(/bin/busybox stat -c %i /node_modules/turbo-linux-64/bin/turbo) && /bin/busybox cat /node_modules/turbo-linux-64/bin/turbo\"]\n",
    )
    .unwrap();
    env.ok(&["build", "ctx", "--progress", "plain"]);
    // umoci: an independent unpacker.
    let bundle = env.path("bundle");
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:1", env.path("layout").display()),
            bundle.to_str().unwrap(),
        ],
    );
    let a = fs::metadata(bundle.join("rootfs/node_modules/turbo/bin/turbo")).unwrap();
    let b = fs::metadata(bundle.join("rootfs/node_modules/turbo-linux-64/bin/turbo")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(a.ino(), b.ino(), "umoci made one inode");
    assert_eq!(
        fs::read_to_string(bundle.join("rootfs/node_modules/turbo-linux-64/bin/turbo")).unwrap(),
        "turbo binary\n"
    );
    // podman runs it.
    run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &format!("oci:{}:1", env.path("layout").display()),
            "containers-storage:localhost/kiln-e2e-hardlink:1",
        ],
    );
    let out = support::podman::run_cmd()
        .args([
            "--rm",
            "localhost/kiln-e2e-hardlink:1",
            "/bin/busybox",
            "cat",
            "/node_modules/turbo/bin/turbo",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "turbo binary\n");
    podman(&["rmi", "-f", "localhost/kiln-e2e-hardlink:1"]);
}
