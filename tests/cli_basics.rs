//! The binary's manners: pipes closed early, interruption, help text.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use support::kiln::Kiln;

/// `kiln completions bash | head -1`: the reader goes away after one line;
/// kiln stops quietly instead of panicking on the broken pipe.
#[test]
fn a_pipe_closed_early_is_not_a_panic() {
    let k = Kiln::new();
    let mut child = k
        .cmd()
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader (and the pipe) is dropped here.
    let out = child.wait_with_output().unwrap();
    assert!(first.contains("kiln"), "{first}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "{:?} {err}", out.status);
}

/// Ctrl-C during a build exits 130, as shells and docs/sandbox.md say.
/// (Needs root for the step's sandbox.)
#[cfg(feature = "e2e")]
#[test]
fn an_interrupted_build_exits_130() {
    use std::time::{Duration, Instant};
    use support::hostile::{busybox_layer, oci_layout};
    let k = Kiln::new();
    oci_layout(&k.path("bb"), &[busybox_layer()], "bb:1");
    k.ok(&["load", k.path("bb").to_str().unwrap()]);
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM bb:1\nRUN echo started && /bin/busybox sleep 60\n",
    )
    .unwrap();
    let mut child = k
        .cmd()
        .args(["build", "ctx", "--progress", "plain"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the step runs.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let start = Instant::now();
    let mut seen = String::new();
    let mut line = String::new();
    while err.read_line(&mut line).unwrap_or(0) > 0 {
        seen.push_str(&line);
        if line.contains("started") {
            break;
        }
        line.clear();
        assert!(start.elapsed() < Duration::from_secs(60), "{seen}");
    }
    assert!(seen.contains("started"), "the step never ran: {seen}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(
        start.elapsed() < Duration::from_secs(50),
        "kiln waited for the step"
    );
}

#[test]
fn build_help_leads_with_the_auto_build() {
    let k = Kiln::new();
    let help = k.stdout(&["build", "--help"]);
    let first = help.lines().next().unwrap_or_default();
    assert!(first.contains("app's source"), "{first}");
}

/// `KILN_START_CMD='node server.js' kiln build .` (Nixpacks reads its
/// variables from the environment); `-e` still wins over the environment.
#[test]
fn plan_options_come_from_the_environment_and_e_wins() {
    let k = Kiln::new();
    let app = k.path("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("package.json"),
        r#"{"name":"a","version":"1.0.0"}"#,
    )
    .unwrap();
    let plan = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["plan", "app", "--format", "json"];
        args.extend_from_slice(extra);
        let out = k
            .cmd()
            .args(&args)
            .env("KILN_START_CMD", "node server.js")
            .env("NIXPACKS_APT_PKGS", "cowsay")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let p = plan(&[]);
    assert_eq!(p["start"]["cmd"], "node server.js", "{p}");
    assert!(p.to_string().contains("cowsay"), "{p}");
    let p = plan(&["-e", "KILN_START_CMD=node other.js"]);
    assert_eq!(p["start"]["cmd"], "node other.js", "{p}");
}

/// `--progress json`: every line has a time; the last one is the result,
/// on success and on failure (docs/build.md, "JSON progress").
#[test]
fn json_progress_has_times_and_ends_with_the_result() {
    let k = Kiln::new();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("a"), "a\n").unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY a /a\n").unwrap();
    let events = |out: &std::process::Output| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let out = k.kiln(&["build", "ctx", "-t", "json-result:1", "--progress", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&out);
    assert!(ev.len() > 2);
    for e in &ev {
        let t = e["time"].as_str().unwrap_or_else(|| panic!("no time: {e}"));
        assert!(t.ends_with('Z') && t.contains('T'), "{t}");
    }
    let last = ev.last().unwrap();
    assert_eq!(last["event"], "result", "{last}");
    assert_eq!(last["ok"], true);
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(last["digest"], digest.as_str());
    assert!(last["size"].as_u64().unwrap() > 0);
    assert!(
        last["names"].to_string().contains("json-result:1"),
        "{last}"
    );
    assert!(last["seconds"].as_f64().is_some());

    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY missing /m\n").unwrap();
    let out = k.kiln(&["build", "ctx", "--progress", "json"]);
    assert!(!out.status.success());
    let last = events(&out).pop().unwrap();
    assert_eq!(last["event"], "result", "{last}");
    assert_eq!(last["ok"], false);
    assert!(
        last["error"].as_str().unwrap().contains("missing"),
        "{last}"
    );
    assert_eq!(
        last["exit_code"].as_i64(),
        out.status.code().map(i64::from),
        "{last}"
    );
}

/// buildx's `--label`, `--iidfile` and `--metadata-file` on `kiln build`.
#[test]
fn labels_iidfile_and_metadata_file() {
    let k = Kiln::new();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("a"), "a\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nLABEL team=web stage=dockerfile\nCOPY a /a\n",
    )
    .unwrap();
    let digest = k.stdout(&[
        "build",
        "ctx",
        "-t",
        "labelled:1",
        "--label",
        "stage=cli",
        "--label",
        "org.opencontainers.image.source=https://example.invalid/app",
        "--iidfile",
        "iid",
        "--metadata-file",
        "meta.json",
    ]);
    let digest = digest.trim();
    assert_eq!(std::fs::read_to_string(k.path("iid")).unwrap(), digest);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(k.path("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["containerimage.digest"], digest);
    let inspect: serde_json::Value =
        serde_json::from_str(&k.stdout(&["inspect", "labelled:1"])).unwrap();
    let labels = inspect.to_string();
    assert!(labels.contains(r#""stage":"cli""#), "{labels}");
    assert!(labels.contains(r#""team":"web""#), "{labels}");
    assert!(labels.contains("example.invalid/app"), "{labels}");
    let bad = k.kiln(&["build", "ctx", "--label", "novalue"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("KEY=VALUE"));
}

/// `kiln info --format json`: the summary's facts, as JSON.
#[test]
fn info_prints_json() {
    let k = Kiln::new();
    let app = k.path("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("Procfile"), "web: sh -c 'echo hi'\n").unwrap();
    let out = k.stdout(&[
        "info",
        "app",
        "--format",
        "json",
        "-e",
        "GREETING=hi",
        "--build-env",
        "TOKEN=x",
        "-b",
        "make",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["start"]["cmd"], "sh -c 'echo hi'", "{v}");
    assert_eq!(v["imageEnv"], serde_json::json!(["GREETING"]), "{v}");
    assert_eq!(v["buildEnv"], serde_json::json!(["TOKEN"]), "{v}");
    assert!(v["suite"].is_string(), "{v}");
    let build = v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "build")
        .unwrap_or_else(|| panic!("no build phase: {v}"));
    assert_eq!(build["cmds"], serde_json::json!(["make"]), "{v}");
}

/// Bad flag values fail before any work, naming the flag (or the plan
/// file's field) and exiting non-zero.
#[test]
fn bad_flag_values_are_named() {
    let k = Kiln::new();
    let app = k.path("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("Procfile"), "web: sh -c 'echo hi'\n").unwrap();
    let fails = |args: &[&str], needle: &str| {
        let out = k.kiln(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    std::fs::write(
        k.path("plan.json"),
        "{\n  \"start\": {\n    \"comand\": \"x\"\n  }\n}\n",
    )
    .unwrap();
    fails(
        &["build", "app", "--plan", "plan.json"],
        "plan.json:3: unknown key `start.comand`: did you mean `cmd`?",
    );
    fails(&["build", "app", "--plan", "nope.json"], "--plan nope.json");
    fails(
        &["build", "app", "--build-env", "KILN_START_CMD=x"],
        "--build-env KILN_START_CMD",
    );
    fails(
        &["build", "app", "--build-env", "=x"],
        "invalid --build-env entry",
    );
}

/// buildx's `--output type=local|tar` (the root filesystem, not an image
/// layout) and `--build-context NAME=DIR` (`FROM NAME`, `COPY --from=NAME`).
#[test]
fn rootfs_outputs_and_named_contexts() {
    let k = Kiln::new();
    let ctx = k.path("ctx");
    let assets = k.path("assets");
    let base = k.path("base");
    for d in [&ctx, &assets, &base] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(ctx.join("a"), "from the context\n").unwrap();
    std::fs::write(assets.join("logo.txt"), "from assets\n").unwrap();
    std::fs::write(base.join("base.txt"), "from base\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM base\nCOPY a /a\nCOPY --from=assets logo.txt /static/logo.txt\n",
    )
    .unwrap();
    k.ok(&[
        "--progress",
        "plain",
        "build",
        "ctx",
        "--build-context",
        "assets=assets",
        "--build-context",
        "base=base",
        "-o",
        "type=local,dest=rootfs",
        "-o",
        "type=tar,dest=rootfs.tar",
    ]);
    let read = |p: &str| std::fs::read_to_string(k.path("rootfs").join(p)).unwrap();
    assert_eq!(read("a"), "from the context\n");
    assert_eq!(read("static/logo.txt"), "from assets\n");
    assert_eq!(read("base.txt"), "from base\n");
    // Not an OCI layout: the files themselves.
    assert!(!k.path("rootfs/index.json").exists());
    let mut names = Vec::new();
    let mut tar = tar::Archive::new(std::fs::File::open(k.path("rootfs.tar")).unwrap());
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        if path == "static/logo.txt" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            assert_eq!(s, "from assets\n");
        }
        names.push(path);
    }
    for want in ["a", "base.txt", "static/logo.txt"] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    // The context's content is the image's: a changed file changes it.
    std::fs::write(assets.join("logo.txt"), "new logo\n").unwrap();
    k.ok(&[
        "build",
        "ctx",
        "--build-context",
        "assets=assets",
        "--build-context",
        "base=base",
        "-o",
        "type=local,dest=rootfs2",
    ]);
    assert_eq!(
        std::fs::read_to_string(k.path("rootfs2/static/logo.txt")).unwrap(),
        "new logo\n"
    );
}

/// Malformed buildx flags: the flag is named, the exit is non-zero.
#[test]
fn bad_buildx_flags_are_named() {
    let k = Kiln::new();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\n").unwrap();
    let fails = |args: &[&str], code: i32, needle: &str| {
        let out = k.kiln(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    fails(&["build", "ctx", "--add-host", "db"], 2, "HOST:IP");
    fails(
        &["build", "ctx", "--add-host", "db:10.0.0.300"],
        2,
        "HOST:IP",
    );
    fails(
        &["build", "ctx", "--build-context", "x=docker-image://alpine"],
        2,
        "only local directories",
    );
    fails(&["build", "ctx", "--build-context", "nodir"], 2, "NAME=DIR");
    fails(
        &["build", "ctx", "--build-context", "x=missing-dir"],
        1,
        "--build-context x=missing-dir: not a directory",
    );
    fails(&["build", "ctx", "-o", "type=local"], 1, "needs dest=");
    fails(&["build", "ctx", "-o", "type=tar"], 1, "needs dest=");
}

/// `kiln images`: CREATED is when kiln named the image (a built image's
/// config says 1970, its reproducible epoch), SIZE says it is compressed.
#[test]
fn images_show_when_kiln_named_them() {
    let k = Kiln::new();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("a"), "a\n").unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY a /a\n").unwrap();
    let before = std::time::SystemTime::now();
    k.ok(&["build", "ctx", "-t", "dated:1"]);
    let table = k.stdout(&["images"]);
    let header = table.lines().next().unwrap();
    assert!(header.contains("SIZE (compressed)"), "{table}");
    let row = table.lines().find(|l| l.starts_with("dated:1")).unwrap();
    assert!(row.contains(" ago"), "{table}");
    assert!(!row.contains("1970"), "{table}");
    let list: serde_json::Value = serde_json::from_str(&k.stdout(&["images", "--json"])).unwrap();
    let created = list[0]["created"].as_str().unwrap().to_string();
    let secs = created_secs(&created);
    let since = before
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(secs >= since - 1, "{created} is before the build");
    // The image itself stays reproducible.
    let inspect: serde_json::Value =
        serde_json::from_str(&k.stdout(&["inspect", "dated:1"])).unwrap();
    let config_created = inspect["config"]["created"].as_str().unwrap_or_default();
    assert!(config_created.starts_with("1970-01-01"), "{inspect}");
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SSZ`.
fn created_secs(t: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

/// `kiln save` archives are 0644 under the usual umask (docker's mode),
/// not 0600.
#[test]
fn saved_archives_are_world_readable() {
    use std::os::unix::fs::PermissionsExt;
    let k = Kiln::new();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("a"), "a\n").unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY a /a\n").unwrap();
    k.ok(&["build", "ctx", "-t", "saved:1"]);
    k.ok(&["save", "saved:1", "-o", "type=docker,dest=saved.tar"]);
    let mode = std::fs::metadata(k.path("saved.tar"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    // SAFETY: umask is process-wide; set and restored at once to read it.
    let umask = unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    };
    assert_eq!(mode, 0o666 & !(umask as u32), "{mode:o}");
}

/// `RUN` for a platform this machine cannot execute: without a registered
/// qemu-user handler the build fails before any work, naming the packages
/// and commands that fix it, and tags nothing; with one (a machine set up
/// for issue 19's arm64 builds) the check passes and the step itself runs.
#[test]
fn a_foreign_platform_without_qemu_names_the_fix() {
    let k = Kiln::new();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nRUN true\n").unwrap();
    let foreign = if cfg!(target_arch = "aarch64") {
        ("linux/amd64", "x86_64")
    } else {
        ("linux/arm64", "aarch64")
    };
    let out = k.kiln(&["build", "ctx", "--platform", foreign.0, "-t", "foreign:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let handler = std::fs::read_to_string(format!("/proc/sys/fs/binfmt_misc/qemu-{}", foreign.1))
        .unwrap_or_default();
    let registered = handler.starts_with("enabled")
        && handler
            .lines()
            .any(|l| l.starts_with("flags:") && l.contains('F'));
    if registered {
        // Past the check: scratch has no `true` to run.
        assert!(!err.contains("binfmt"), "{err}");
    } else {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!(
                "stage 0: its RUN steps run {} programs",
                foreign.0
            )) && err.contains("qemu-user-static")
                && err.contains(&format!("qemu-{}", foreign.1)),
            "{err}"
        );
        assert!(!err.contains("not an executable format"), "{err}");
    }
    let images = k.stdout(&["images"]);
    assert!(!images.contains("foreign"), "{images}");
}
