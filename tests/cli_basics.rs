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
