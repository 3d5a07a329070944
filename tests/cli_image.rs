//! `kiln image from-dir` and friends through the binary: reproducible
//! digests, the local image store, exports, and bad input.

mod support;

use std::fs;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};
use support::kiln::Kiln as Env;

fn app_tree(root: &Path, when: SystemTime, main: &str) {
    fs::create_dir_all(root.join("app/lib")).unwrap();
    fs::write(root.join("app/main.js"), main).unwrap();
    fs::write(root.join("app/lib/util.js"), "module.exports = 1;\n").unwrap();
    symlink("main.js", root.join("app/index.js")).unwrap();
    for p in ["app/main.js", "app/lib/util.js"] {
        fs::File::options()
            .write(true)
            .open(root.join(p))
            .unwrap()
            .set_modified(when)
            .unwrap();
    }
}

fn digest_of(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .nth(1)
        .expect("NAME DIGEST on stdout")
        .to_string()
}

#[test]
fn same_inputs_same_digest_in_other_dirs_and_times_one_byte_differs() {
    let build = |main: &str, when: SystemTime| {
        let env = Env::new();
        let src = env.dir.path().join("src");
        app_tree(&src, when, main);
        let out = env.stdout(&[
            "image",
            "from-dir",
            src.to_str().unwrap(),
            "-t",
            "app:1",
            "--owner",
            "0:0",
            "--cmd",
            r#"["node","/app/main.js"]"#,
            "--env",
            "PORT=8080",
            "--expose",
            "8080",
            "--label",
            "b=2",
            "--label",
            "a=1",
        ]);
        digest_of(&out)
    };
    let now = SystemTime::now();
    let a = build("console.log('hi')\n", now);
    let b = build(
        "console.log('hi')\n",
        now - Duration::from_secs(86_400 * 400),
    );
    let c = build("console.log('hj')\n", now);
    assert!(a.starts_with("sha256:"), "{a}");
    assert_eq!(
        a, b,
        "same inputs at other times and places must give the same image"
    );
    assert_ne!(a, c, "a one-byte change must change the digest");
}

#[test]
fn images_inspect_save_load_rmi() {
    let env = Env::new();
    let src = env.dir.path().join("src");
    app_tree(&src, SystemTime::now(), "x");
    let digest = digest_of(&env.stdout(&[
        "image",
        "from-dir",
        "src",
        "-t",
        "demo",
        "--cmd",
        "node /app/main.js",
        "--owner",
        "0:0",
    ]));
    let list = env.stdout(&["images"]);
    assert!(
        list.contains("demo:latest") && list.contains(&digest[7..19]),
        "{list}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&env.stdout(&["inspect", "demo"])).unwrap();
    assert_eq!(inspect["digest"], digest);
    assert_eq!(
        inspect["config"]["config"]["Cmd"],
        serde_json::json!(["/bin/sh", "-c", "node /app/main.js"])
    );
    assert_eq!(inspect["config"]["created"], "1970-01-01T00:00:01Z");

    // Export both archive kinds, remove the image, load them back.
    env.stdout(&["save", "demo", "-o", "type=docker,dest=d.tar"]);
    env.stdout(&["save", "demo", "-o", "type=oci-archive,dest=o.tar"]);
    env.stdout(&["rmi", "demo"]);
    assert!(!env.stdout(&["images"]).contains("demo"));
    let out = env.kiln(&["inspect", "demo"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the local image store"));

    let loaded = env.stdout(&["load", "o.tar"]);
    assert!(
        loaded.contains(&digest),
        "OCI archive reloads to the same digest: {loaded}"
    );
    let loaded = env.stdout(&["load", "d.tar"]);
    assert!(loaded.contains("demo:latest"), "{loaded}");
    // A docker archive carries uncompressed layers: same config, same content.
    let a: serde_json::Value =
        serde_json::from_str(&env.stdout(&["inspect", "demo:latest"])).unwrap();
    assert_eq!(a["config"]["rootfs"], inspect["config"]["rootfs"]);
    let v = env.stdout(&["cache", "verify"]);
    assert!(v.contains("0 corrupt"), "{v}");
}

#[test]
fn bad_input_gives_clear_errors() {
    let env = Env::new();
    let err = |args: &[&str]| {
        let out = env.kiln(args);
        assert!(!out.status.success(), "kiln {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = err(&["image", "from-dir", "nope", "-t", "x"]);
    assert!(e.contains("nope") && e.contains("No such file"), "{e}");
    fs::write(env.dir.path().join("file"), "x").unwrap();
    let e = err(&["image", "from-dir", "file", "-t", "x"]);
    assert!(e.contains("is not a directory"), "{e}");
    fs::create_dir(env.dir.path().join("d")).unwrap();
    let e = err(&["image", "from-dir", "d", "-t", "x", "--expose", "99999"]);
    assert!(e.contains("invalid port \"99999\""), "{e}");
    let e = err(&["image", "from-dir", "d", "-t", "x", "--cmd", "[1,2]"]);
    assert!(e.contains("JSON array"), "{e}");
    let e = err(&["image", "from-dir", "d", "-t", "x", "-o", "type=zip,dest=a"]);
    assert!(e.contains("type=zip is not supported"), "{e}");
    let e = err(&["image", "from-dir", "d", "-t", "x", "--env", "NOVALUE"]);
    assert!(e.contains("KEY=VALUE"), "{e}");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["image", "from-dir", "d", "-t", "x"])
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .env("KILN_CACHE_DIR", env.dir.path().join("c"))
        .env("KILN_DATA_DIR", env.dir.path().join("c"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SOURCE_DATE_EPOCH"));
    let e = err(&["load", "file"]);
    assert!(
        e.contains("file is not a valid tar archive") || e.contains("neither"),
        "{e}"
    );
    let e = err(&["frobnicate"]);
    assert!(e.contains("unrecognized subcommand"), "{e}");
    assert_eq!(env.kiln(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn odd_trees_have_documented_behaviour() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let src = env.dir.path().join("odd");
    fs::create_dir(&src).unwrap();
    // A symlink loop is archived as two symlinks (links are never followed).
    symlink("b", src.join("a")).unwrap();
    symlink("a", src.join("b")).unwrap();
    // A name that is not UTF-8 is kept byte for byte.
    fs::write(src.join(std::ffi::OsStr::from_bytes(b"caf\xe9")), "latin1").unwrap();
    // A socket is skipped with a warning, as tar does.
    let _sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    // A fifo is archived as a fifo.
    let c = std::ffi::CString::new(src.join("fifo").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let out = env.kiln(&[
        "image",
        "from-dir",
        "odd",
        "-t",
        "odd",
        "-o",
        "type=oci,dest=out",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("skipped") && stderr.contains("sock") && stderr.contains("socket"),
        "{stderr}"
    );
    // Read the layer back and list it.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(env.dir.path().join("out/index.json")).unwrap()).unwrap();
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let blobs = env.dir.path().join("out/blobs/sha256");
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blobs.join(mdigest)).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(
        fs::File::open(blobs.join(layer)).unwrap(),
    ));
    let mut seen = Vec::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        seen.push((e.path_bytes().into_owned(), e.header().entry_type()));
    }
    assert_eq!(
        seen,
        vec![
            (b"a".to_vec(), tar::EntryType::Symlink),
            (b"b".to_vec(), tar::EntryType::Symlink),
            (b"caf\xe9".to_vec(), tar::EntryType::Regular),
            (b"fifo".to_vec(), tar::EntryType::Fifo),
        ]
    );
}

/// The size of a file `pid` has open under `dir`, if any.
fn open_file_under(pid: u32, dir: &Path) -> Option<u64> {
    for fd in fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let Ok(target) = fs::read_link(fd.path()) else {
            continue;
        };
        if target.starts_with(dir) {
            // Through the fd: works for an unnamed (O_TMPFILE) file too.
            return fs::metadata(fd.path()).ok().map(|m| m.len());
        }
    }
    None
}

#[test]
fn killed_export_leaves_no_file_behind() {
    let env = Env::new();
    let src = env.path("big");
    fs::create_dir_all(&src).unwrap();
    // 160 MiB that do not compress, stored uncompressed: the export takes
    // long enough to be killed in the middle.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut data = Vec::with_capacity(160 << 20);
    while data.len() < 160 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    fs::write(src.join("blob.bin"), &data).unwrap();
    drop(data);
    env.ok(&[
        "image",
        "from-dir",
        src.to_str().unwrap(),
        "-t",
        "big:1",
        "--compression",
        "none",
    ]);
    for ty in ["oci-archive", "docker"] {
        let out = env.path(&format!("out-{ty}"));
        fs::create_dir_all(&out).unwrap();
        let dest = out.join("img.tar");
        let mut child = env
            .cmd()
            .args([
                "save",
                "big:1",
                "-o",
                &format!("type={ty},dest={}", dest.display()),
            ])
            .spawn()
            .unwrap();
        // Kill it once it has written a good part of the archive.
        let killed = loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{ty}: the export ended ({status}) before it could be killed");
            }
            if open_file_under(child.id(), &out).is_some_and(|n| n > 16 << 20) {
                // SAFETY: our own child, not yet reaped.
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&killed),
            Some(libc::SIGKILL)
        );
        let left: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{ty}: a killed export left {left:?}");
        // And the next export works.
        env.ok(&[
            "save",
            "big:1",
            "-o",
            &format!("type={ty},dest={}", dest.display()),
        ]);
        let left: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["img.tar"], "{ty}");
    }
}

#[test]
fn cache_prune_says_what_it_waits_for_and_stops_on_ctrl_c() {
    use std::io::BufRead;
    use std::process::Stdio;
    let env = Env::new();
    let store = env.cache().join("store");
    fs::create_dir_all(&store).unwrap();
    let lock = store.join("lock");
    fs::write(&lock, "").unwrap();
    // Stands for a running build: holds the store lock shared (no fork:
    // killing it releases the lock).
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let holder = KillOnDrop(
        Command::new("flock")
            .args(["--no-fork", "-s", lock.to_str().unwrap(), "sleep", "120"])
            .spawn()
            .unwrap(),
    );
    let holder_pid = holder.0.id();
    // Wait until the lock is really held.
    let start = std::time::Instant::now();
    while !fs::read_to_string("/proc/locks")
        .unwrap()
        .contains(&format!(" {holder_pid} "))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "flock did not lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let prune = |env: &Env| {
        let mut c = env
            .cmd()
            .args(["cache", "prune"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let err = c.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines() {
                let _ = tx.send(line.unwrap());
            }
        });
        (c, rx)
    };
    let (waiting, lines) = prune(&env);
    let mut waiting = KillOnDrop(waiting);
    let line = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("kiln cache prune said nothing while waiting for the lock");
    assert!(
        line.contains("waiting for the build cache lock")
            && line.contains(&format!("pid {holder_pid}: sleep 120"))
            && line.contains("Ctrl-C"),
        "{line}"
    );
    // Ctrl-C ends the wait.
    // SAFETY: our own child, not yet reaped.
    unsafe { libc::kill(waiting.0.id() as i32, libc::SIGINT) };
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = waiting.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "kiln cache prune ignored SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    // Once the build is gone, prune runs.
    let (waiting, _lines) = prune(&env);
    std::thread::sleep(Duration::from_millis(500));
    drop(holder);
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to remove"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `-o type=oci,dest=DIR` into an existing directory someone else made: a
/// symlink where kiln writes is refused, and nothing lands where it points.
#[test]
fn an_existing_layout_with_symlinked_dirs_is_refused() {
    let env = Env::new();
    app_tree(&env.path("app"), SystemTime::UNIX_EPOCH, "x");
    let canary = env.path("canary");
    fs::create_dir_all(&canary).unwrap();
    for (name, link) in [("blobs", "blobs"), ("index", "index.json")] {
        let dest = env.path(&format!("dest-{name}"));
        fs::create_dir_all(&dest).unwrap();
        fs::write(dest.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        std::os::unix::fs::symlink(&canary, dest.join(link)).unwrap();
        let out = env.kiln(&[
            "image",
            "from-dir",
            "app",
            "-t",
            "linked:1",
            "-o",
            &format!("type=oci,dest={}", dest.display()),
        ]);
        assert!(
            !out.status.success(),
            "{name}: kiln wrote through a symlink"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is a symbolic link"), "{err}");
        assert_eq!(fs::read_dir(&canary).unwrap().count(), 0, "{name}");
    }
}

#[test]
fn sbom_of_an_image_kiln_did_not_build_says_why_it_has_none() {
    let env = Env::new();
    let src = env.dir.path().join("src");
    app_tree(&src, SystemTime::UNIX_EPOCH + Duration::from_secs(1), "x");
    env.ok(&["image", "from-dir", src.to_str().unwrap(), "-t", "plain:1"]);
    let out = env.kiln(&["sbom", "plain:1"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("no SBOM record for image sha256:") && e.contains("kiln build"),
        "{e}"
    );
    let out = env.kiln(&["sbom", "missing:1", "--format", "cyclonedx"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing:1"));
}
