//! End to end: `kiln build DIR` on apps without a Dockerfile (the auto
//! build). Each example is built by kiln from Debian's archive and the
//! registries its language uses, loaded into podman, started with
//! `--network host -e PORT=…`, asked over HTTP, then sent SIGTERM and
//! expected to exit within 10 s.
//!
//! Builds that need no empty cache share one kiln cache
//! (`support::shared_cache()`), so a rerun is warm; the reproducibility
//! test uses fresh homes in different dirs.
#![cfg(feature = "e2e")]

mod support;

use support::kiln::Kiln;

use support::auto::{build_and_serve, example, host_ca_args, layers, serve_and_stop, step_status};

const EXAMPLES: &[(&str, &str)] = &[
    ("node-npm", "Hello from node-npm"),
    ("node-pnpm", "Hello"),
    ("node-yarn", "Hello"),
    ("python-flask", "Hello"),
    ("go-mod", "Hello from go-mod"),
    ("staticfile", "<"),
];

#[test]
fn examples_build_and_answer_http() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    let only = std::env::var("KILN_AUTO_EXAMPLES").ok();
    for (name, expect) in EXAMPLES {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|x| x == *name))
        {
            continue;
        }
        let size = build_and_serve(&home, tmp.path(), name, expect);
        if *name == "node-npm" {
            // Production dependencies only: Express (a dependency) is in
            // the image, nodemon (a dev dependency) and its own
            // dependencies are not.
            let ls = home.stdout(&[
                "--progress",
                "quiet",
                "run",
                "node-npm:1",
                "ls",
                "/app/node_modules",
            ]);
            let mods: Vec<&str> = ls.lines().collect();
            assert!(mods.contains(&"express"), "{ls}");
            assert!(
                !mods.contains(&"nodemon") && !mods.contains(&"chokidar"),
                "dev dependencies in the image:\n{ls}"
            );
        }
        if *name == "go-mod" {
            assert!(size <= 30_000_000, "go image is {size} bytes, goal ≤ 30 MB");
        }
    }
}

/// `--target build` stops at the plan's build stage: the toolchain (npm)
/// and the app with production dependencies only, not the runtime image.
#[test]
fn target_build_gives_the_build_stage() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("node-npm", tmp.path());
    let mut args: Vec<String> = ["--progress", "quiet", "build", dir.to_str().unwrap()]
        .map(String::from)
        .to_vec();
    args.extend(host_ca_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut build = args.clone();
    build.extend(["--target", "build", "-t", "stage-build:1"]);
    home.ok(&build);
    let run_sh = |image: &str, script: &str| {
        home.kiln(&[
            "--progress",
            "quiet",
            "run",
            "-w",
            "/app",
            image,
            "sh",
            "-c",
            script,
        ])
    };
    let out = run_sh(
        "stage-build:1",
        "npm --version && test -d node_modules/express && test ! -d node_modules/nodemon",
    );
    assert!(out.status.success(), "not the build stage: {out:?}");
    let mut runtime = args.clone();
    runtime.extend(["-t", "stage-runtime:1"]);
    home.ok(&runtime);
    let out = run_sh("stage-runtime:1", "command -v node && ! command -v npm");
    assert!(
        out.status.success(),
        "the runtime image must have node and no npm: {out:?}"
    );
}

/// A one-line source change: the dependency install step is CACHED and
/// exactly one layer (the app's) changes.
#[test]
fn one_line_change_reuses_the_install_step() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("node-npm", tmp.path());
    let (first, _) = home.build(&dir, "edit:1");
    let before = layers(&home, "edit:1");
    let src = std::fs::read_to_string(dir.join("index.js")).unwrap();
    std::fs::write(
        dir.join("index.js"),
        src.replace("Hello from node-npm", "Hello again from node-npm"),
    )
    .unwrap();
    let (second, events) = home.build(&dir, "edit:2");
    assert_ne!(first, second, "the source change must change the image");
    assert_eq!(
        step_status(&events, "npm ci --omit=dev"),
        vec!["cached"],
        "npm ci must be cached after a source edit"
    );
    // No command of the build stage runs after the source copy (no build
    // script, production dependencies installed as such): the edit costs
    // a copy, not a prune of the dev dependencies. (The runtime's check of
    // the copied files' shared libraries does run again.)
    let ran = support::auto::commands_run(&events);
    assert!(
        ran.iter()
            .all(|n| n.contains("check that the shared libraries")),
        "a command ran after a source edit: {ran:?}"
    );
    let after = layers(&home, "edit:2");
    assert_eq!(before.len(), after.len());
    let changed: Vec<usize> = (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect();
    assert_eq!(
        changed,
        vec![before.len() - 1],
        "only the app layer changes"
    );
    serve_and_stop(&home, "edit:2", "Hello again from node-npm");
    // Touching without changing re-runs nothing.
    let now = std::time::SystemTime::now();
    std::fs::File::options()
        .append(true)
        .open(dir.join("index.js"))
        .unwrap()
        .set_modified(now)
        .unwrap();
    let (third, events) = home.build(&dir, "edit:3");
    assert_eq!(third, second);
    assert!(
        support::auto::ran_nothing(&events),
        "a touch must not re-run any step"
    );
}

/// Same source, same kiln.lock, empty caches, different directories ⇒
/// same digest; a kiln.lock the plan no longer matches is an error.
#[test]
fn clean_builds_are_reproducible() {
    // KILN_REPRO_EXAMPLES=a,b narrows the set (each example is two cold builds).
    let names = std::env::var("KILN_REPRO_EXAMPLES")
        .unwrap_or_else(|_| "node-npm,python-flask,go-mod,staticfile".into());
    for name in names.split(',').filter(|n| !n.is_empty()) {
        // The package sets are locked once (`kiln lock --auto`), as a
        // project commits its kiln.lock; both builds compose exactly those
        // files.
        let locker = Kiln::new();
        let tmp = tempfile::tempdir().unwrap();
        let locked = example(name, tmp.path());
        locker.ok(&[
            "--progress",
            "quiet",
            "lock",
            "--auto",
            locked.to_str().unwrap(),
        ]);
        let lock = std::fs::read_to_string(locked.join("kiln.lock")).unwrap();
        assert!(lock.contains("[[set]]"), "{name}: {lock}");
        let mut digests = Vec::new();
        let mut last = None;
        for _ in 0..2 {
            let home = Kiln::new();
            let tmp = tempfile::tempdir().unwrap();
            let dir = example(name, tmp.path());
            std::fs::write(dir.join("kiln.lock"), &lock).unwrap();
            digests.push(home.build(&dir, "repro:1").0);
            if last.is_none() && name == "node-npm" {
                // Package bases snapshot as they compress, RUN steps keep
                // their upper dirs (npm ci): all of it must be
                // what an unpack gives. One example: each check unpacks
                // every blob again.
                let n = support::snapshot::assert_all_match_their_blobs(home.cache());
                assert!(n > 2, "{name}: only {n} snapshots");
            }
            last = Some((home, tmp, dir));
        }
        assert_eq!(digests[0], digests[1], "{name}: two clean builds differ");
        if name != "node-npm" {
            continue;
        }
        // A plan that no longer matches the lock is refused, not resolved
        // silently against today's archive.
        let (home, _tmp, dir) = last.unwrap();
        let out = home.kiln(&[
            "build",
            dir.to_str().unwrap(),
            "-a",
            "curl",
            "-t",
            "stale:1",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a stale kiln.lock was accepted");
        assert!(
            err.contains("kiln.lock: no set for the build stage's packages")
                && err.contains("kiln lock --auto"),
            "{err}"
        );
    }
}

/// A failing build script: the failure report, exit code 4, nothing
/// tagged, and the rerun resumes from the cached steps.
#[test]
fn failing_build_script_reports_and_resumes() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("node-npm", tmp.path());
    let pkg = std::fs::read_to_string(dir.join("package.json")).unwrap();
    std::fs::write(
        dir.join("package.json"),
        pkg.replace(
            "\"start\": \"node index.js\"",
            "\"start\": \"node index.js\", \"build\": \"echo compiling && echo broken >&2 && exit 7\"",
        ),
    )
    .unwrap();
    let mut args: Vec<String> = [
        "--progress",
        "plain",
        "build",
        dir.to_str().unwrap(),
        "-t",
        "broken:1",
    ]
    .map(String::from)
    .to_vec();
    args.extend(host_ca_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = home.kiln(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("RUN npm run build"), "{err}");
    assert!(err.contains("exit code 7"), "{err}");
    assert!(err.contains("broken"), "the output tail is shown:\n{err}");
    let images = String::from_utf8_lossy(&home.ok(&["images"]).stdout).into_owned();
    assert!(!images.contains("broken"), "nothing is tagged:\n{images}");
    let mut args = args.clone();
    args[1] = "json";
    let out = home.kiln(&args);
    assert_eq!(out.status.code(), Some(4));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(step_status(&events, "RUN npm ci"), vec!["cached"]);
}
