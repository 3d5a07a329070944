#![cfg(feature = "e2e")]
//! The registry as kiln's shared step cache (issue 18): two kiln homes
//! ("machines") and a real registry on 127.0.0.1. Home A builds with
//! `--cache-to`; home B, empty, builds the same source with `--cache-from`
//! and runs nothing, downloading about the final image's size; a broken
//! or missing cache is a miss with a warning.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use support::auto::{example, host_ca_args};
use support::kiln::Kiln;
use support::registry::Registry;

/// `kiln --progress json build DIR -t NAME --json EXTRA…`: the digest,
/// the progress events and stderr.
fn build(
    home: &Kiln,
    dir: &Path,
    name: &str,
    extra: &[&str],
) -> (String, Vec<serde_json::Value>, String) {
    let mut args: Vec<String> = ["--progress", "json", "build"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(dir.display().to_string());
    args.extend(["-t".into(), name.into(), "--json".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(host_ca_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = home.ok(&args);
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let events = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (
        result["digest"].as_str().unwrap().to_string(),
        events,
        stderr,
    )
}

/// The build's steps (the `step` tasks: package sets and shown steps) by
/// name, with the status they finished with.
fn steps(events: &[serde_json::Value]) -> BTreeMap<String, String> {
    let names: BTreeMap<u64, String> = events
        .iter()
        .filter(|e| e["event"] == "start" && e["step"] == true)
        .filter_map(|e| Some((e["id"].as_u64()?, e["name"].as_str()?.to_string())))
        .collect();
    events
        .iter()
        .filter(|e| e["event"] == "finish")
        .filter_map(|e| {
            let name = names.get(&e["id"].as_u64()?)?;
            Some((name.clone(), e["status"].as_str()?.to_string()))
        })
        .collect()
}

fn warnings(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "message" && e["level"] == "warn")
        .filter_map(|e| e["text"].as_str())
        .map(str::to_string)
        .collect()
}

/// Bytes the registry sent in answer to blob GETs from log line `from` on
/// (its access log: `"GET /v2/…/blobs/sha256:… HTTP/1.1" 200 BYTES`).
fn blob_bytes_sent(reg: &Registry, from: usize) -> u64 {
    reg.log()[from..]
        .iter()
        .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
        .filter_map(|l| {
            let after = l.split("HTTP/1.1\" ").nth(1)?;
            let mut parts = after.split_whitespace();
            let status = parts.next()?;
            (status == "200").then(|| parts.next()?.parse::<u64>().ok())?
        })
        .sum()
}

/// Config + layer sizes of image `name` in `home`'s store.
fn image_size(home: &Kiln, name: &str) -> u64 {
    let raw = support::kiln::run(
        "skopeo",
        &["inspect", "--raw", &format!("{}:{name}", home.layout())],
    );
    let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
    m["config"]["size"].as_u64().unwrap()
        + m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .sum::<u64>()
}

#[test]
fn a_fresh_builder_runs_nothing_with_a_warm_registry_cache() {
    let reg = Registry::start();
    let cache = format!("{}/cache/node-npm:main", reg.addr);
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("node-npm", tmp.path());

    // Machine A (the suites' warm cache) exports every stage's steps.
    let a = Kiln::shared();
    let to = format!("type=registry,ref={cache},mode=max");
    let (digest_a, _, _) = build(&a, &dir, "regcache:a", &["--cache-to", &to]);

    // Machine B, empty, imports it: every step CACHED, the same image. It
    // exports every stage to another ref too, without downloading the
    // build stage's layers (mounted from the first cache).
    let b = Kiln::new();
    let from = format!("type=registry,ref={cache}");
    let other = format!("{}/cache/other:main", reg.addr);
    let to_other = format!("type=registry,ref={other},mode=max");
    let log_at = reg.log().len();
    let started = std::time::Instant::now();
    let (digest_b, events, stderr) = build(
        &b,
        &dir,
        "regcache:b",
        &["--cache-from", &from, "--cache-to", &to_other],
    );
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(digest_b, digest_a, "the same image on both machines");
    let all = steps(&events);
    // The package sets and the runtime's steps: the build stage, which
    // only the cached COPY --from reads, is not built at all.
    assert!(
        all.keys().any(|n| n.starts_with("[packages]")) && all.len() >= 5,
        "{all:?}"
    );
    assert!(
        infos(&events).iter().any(|t| t == SKIPPED_BUILD),
        "{stderr}"
    );
    let not_cached: Vec<_> = all.iter().filter(|(_, s)| *s != "cached").collect();
    assert!(
        not_cached.is_empty(),
        "steps not cached: {not_cached:?}\n{stderr}"
    );
    // What B downloaded: the final image's layers, not the build stage's.
    let fetched = blob_bytes_sent(&reg, log_at);
    let size = image_size(&b, "regcache:b");
    eprintln!(
        "machine B: {seconds:.1} s, fetched {fetched} blob bytes from the registry; the image is {size} bytes; steps: {all:?}"
    );
    assert!(
        fetched * 10 <= size * 11,
        "fetched {fetched} bytes for an image of {size} bytes"
    );
    assert!(fetched * 10 >= size * 9, "the image's layers were fetched");
    // B's export is complete (the skipped build stage's records too): a
    // third empty machine runs nothing from it, and after a change to the
    // app's source only the steps after it.
    let c = Kiln::new();
    let (digest_c, events, stderr) = build(&c, &dir, "regcache:c", &["--cache-from", &other]);
    assert_eq!(digest_c, digest_a);
    let not_cached: Vec<_> = steps(&events)
        .into_iter()
        .filter(|(_, s)| s != "cached")
        .collect();
    assert!(not_cached.is_empty(), "{not_cached:?}\n{stderr}");

    // A one-line change: only the steps after it run on B.
    let js = dir.join("index.js");
    let text = std::fs::read_to_string(&js).unwrap();
    std::fs::write(&js, text.replace("Hello from node-npm", "Hello again")).unwrap();
    let (digest_d, events, stderr) = build(&b, &dir, "regcache:d", &["--cache-from", &from]);
    assert_ne!(digest_d, digest_b);
    let all = steps(&events);
    let ran: Vec<&String> = all
        .iter()
        .filter(|(_, s)| *s == "done")
        .map(|(n, _)| n)
        .collect();
    for (name, status) in &all {
        if name.starts_with("[packages]") || name.contains("npm ci") {
            assert_eq!(status, "cached", "{name} comes before the change\n{stderr}");
        }
    }
    assert!(
        ran.iter().any(|n| n.contains("COPY . /app")),
        "the changed source is copied again: {all:?}"
    );
    eprintln!("after a one-line change, machine B ran {ran:?}");
    // The source copy and what stands on it; nothing before it.
    assert!(
        ran.iter()
            .all(|n| n.starts_with("[build 5/5]") || n.starts_with("[runtime ")),
        "only the steps after the change run: {ran:?}"
    );
}

#[test]
fn a_missing_foreign_or_damaged_cache_is_a_miss_with_a_warning() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = small_app(tmp.path());
    let cache = format!("{}/cache/app:main", reg.addr);
    let image = format!("{}/app:1", reg.addr);

    let a = Kiln::new();
    let to = format!("type=registry,ref={cache}");
    let (digest_a, _, _) = build(&a, &dir, &image, &["--push", "--cache-to", &to]);

    // No such cache, and an image that is no kiln cache: misses, warned.
    let b = Kiln::new();
    let missing = format!("{}/cache/none:main", reg.addr);
    let (digest_b, events, stderr) = build(
        &b,
        &dir,
        "miss:1",
        &["--cache-from", &missing, "--cache-from", &image],
    );
    assert_eq!(digest_b, digest_a);
    let all = steps(&events);
    assert!(all.values().all(|s| s == "done"), "{all:?}");
    let w = warnings(&events).join("\n");
    assert!(
        w.contains(&format!("--cache-from {missing}")),
        "{w}\n{stderr}"
    );
    assert!(w.contains("not a kiln cache"), "{w}\n{stderr}");

    // The cache's second layer deleted from the registry's storage: the
    // first step is still cached, the second runs.
    let two = support::kiln::run(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{cache}"),
        ],
    );
    let m: serde_json::Value = serde_json::from_str(&two).unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "record + two layers: {m}");
    assert_eq!(m["artifactType"], "application/vnd.kiln.cache.v1+json");
    let gone = layers[2]["digest"].as_str().unwrap();
    let hex = gone.strip_prefix("sha256:").unwrap();
    let blob_dir = reg
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    std::fs::remove_dir_all(&blob_dir).unwrap();
    let c = Kiln::new();
    let from = format!("type=registry,ref={cache}");
    let (digest_c, events, stderr) = build(&c, &dir, "miss:2", &["--cache-from", &from]);
    assert_eq!(digest_c, digest_a);
    let all = steps(&events);
    let status: Vec<&str> = all.values().map(String::as_str).collect();
    assert_eq!(status, ["cached", "done"], "{all:?}\n{stderr}");
    let w = warnings(&events).join("\n");
    assert!(w.contains("1 of its layers are gone"), "{w}\n{stderr}");
}

/// A small Dockerfile app (no network, no base image): two COPY layers.
fn small_app(parent: &Path) -> std::path::PathBuf {
    let dir = parent.join("app");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY one /one\nCOPY two /two\n",
    )
    .unwrap();
    std::fs::write(dir.join("one"), "first layer\n").unwrap();
    std::fs::write(dir.join("two"), "second layer\n").unwrap();
    dir
}

#[test]
fn the_cache_goes_through_a_registry_that_drops_and_fails_requests() {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use support::proxy::{Action, Proxy, Request};

    let reg = Registry::start();
    // Every blob check, blob read, upload start and manifest request fails
    // the first time it is made: a 500, a dropped connection, or (blob
    // reads) a body cut short, in turn. Retries reach the registry.
    let seen: Arc<Mutex<HashSet<String>>> = Default::default();
    let faults = Arc::new(AtomicUsize::new(0));
    let (seen2, faults2) = (seen.clone(), faults.clone());
    let proxy = Proxy::start(&reg.addr, move |req: &Request| {
        let path = req.path().to_string();
        let faulty = path.contains("/manifests/")
            || path.ends_with("/blobs/uploads/")
            || (path.contains("/blobs/sha256:") && req.method != "PUT");
        if !faulty
            || !seen2
                .lock()
                .unwrap()
                .insert(format!("{} {path}", req.method))
        {
            return Action::Forward;
        }
        let n = faults2.fetch_add(1, Ordering::SeqCst);
        match (n % 3, req.method.as_str()) {
            (0, _) => Action::status(500),
            (1, _) => Action::Drop,
            (_, "GET") => Action::ForwardCut(5),
            _ => Action::status(503),
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let dir = small_app(tmp.path());
    let through = format!("{}/cache/app:main", proxy.addr);

    let a = Kiln::new();
    let to = format!("type=registry,ref={through},mode=max");
    let (digest_a, _, _) = build(&a, &dir, "faults:a", &["--cache-to", &to]);
    let b = Kiln::new();
    let (digest_b, events, stderr) = build(&b, &dir, "faults:b", &["--cache-from", &through]);
    assert_eq!(digest_b, digest_a);
    let all = steps(&events);
    assert!(
        !all.is_empty() && all.values().all(|s| s == "cached"),
        "{all:?}\n{stderr}"
    );
    assert!(
        faults.load(Ordering::SeqCst) >= 8,
        "faults injected: {}",
        faults.load(Ordering::SeqCst)
    );

    // Readable afterwards, straight from the registry.
    let c = Kiln::new();
    let direct = format!("{}/cache/app:main", reg.addr);
    let (digest_c, events, _) = build(&c, &dir, "faults:c", &["--cache-from", &direct]);
    assert_eq!(digest_c, digest_a);
    assert!(steps(&events).values().all(|s| s == "cached"));
}

#[test]
fn cache_mount_contents_travel_with_cache_mounts_true() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    std::fs::create_dir_all(&dir).unwrap();
    // The step records whether its cache mount had something in it.
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM debian:bookworm\nARG V=1\n\
         RUN --mount=type=cache,target=/c sh -c 'if test -e /c/warm; then echo warm; else echo cold; fi > /state; echo \"$V\" >> /c/warm'\n",
    )
    .unwrap();
    let with = format!("{}/cache/mounts:with", reg.addr);
    let without = format!("{}/cache/mounts:without", reg.addr);
    let a = Kiln::new();
    support::base::local_debian(&a.data());
    let to = format!("type=registry,ref={with},cache-mounts=true");
    build(&a, &dir, "mounts:a", &["--cache-to", &to]);
    let to = format!("type=registry,ref={without}");
    build(&a, &dir, "mounts:a", &["--cache-to", &to]);

    // A new value of V runs the step again on each fresh machine.
    let state = |home: &Kiln, from: &str, v: &str| {
        support::base::local_debian(&home.data());
        let out = home.path("out");
        let o = format!("type=local,dest={}", out.display());
        let arg = format!("V={v}");
        let (_, events, stderr) = build(
            home,
            &dir,
            "mounts:x",
            &["--cache-from", from, "--build-arg", &arg, "-o", &o],
        );
        let ran: Vec<String> = steps(&events)
            .into_iter()
            .filter(|(_, s)| s == "done")
            .map(|(n, _)| n)
            .collect();
        assert_eq!(ran.len(), 1, "{ran:?}\n{stderr}");
        std::fs::read_to_string(out.join("state")).unwrap()
    };
    assert_eq!(state(&Kiln::new(), &with, "2"), "warm\n");
    assert_eq!(state(&Kiln::new(), &without, "3"), "cold\n");
}

fn infos(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "message" && e["level"] == "info")
        .filter_map(|e| e["text"].as_str())
        .map(str::to_string)
        .collect()
}

/// A two-stage Dockerfile app on the local debian:bookworm: the runtime
/// stage copies the build stage's output (`R` changes a runtime step
/// before that copy, `B` a build step).
fn two_stage_app(parent: &Path) -> std::path::PathBuf {
    let dir = parent.join("two-stage");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM debian:bookworm AS build\nARG B=1\nRUN echo \"built $B\" > /out\n\
         FROM debian:bookworm\nARG R=1\nRUN echo \"runtime $R\" > /r\n\
         COPY --from=build /out /out\nRUN cat /out /r > /both\n",
    )
    .unwrap();
    dir
}

/// The steps that ran (finished `done`).
fn ran(events: &[serde_json::Value]) -> Vec<String> {
    steps(events)
        .into_iter()
        .filter(|(_, s)| s == "done")
        .map(|(n, _)| n)
        .collect()
}

const SKIPPED_BUILD: &str = "[build] skipped: every step that reads it is cached";

#[test]
fn a_mode_min_cache_skips_the_build_stage_on_a_fresh_builder() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = two_stage_app(tmp.path());
    let cache = format!("{}/cache/lazy:min", reg.addr);

    let a = Kiln::new();
    support::base::local_debian(&a.data());
    let to = format!("type=registry,ref={cache},mode=min");
    let (digest_a, _, _) = build(&a, &dir, "lazy:a", &["--cache-to", &to]);

    // The cache has only the runtime stage's steps: B runs none, and the
    // build stage, which only the cached COPY --from reads, not at all.
    let b = Kiln::new();
    support::base::local_debian(&b.data());
    let (digest_b, events, stderr) = build(&b, &dir, "lazy:b", &["--cache-from", &cache]);
    assert_eq!(digest_b, digest_a, "the same image on both machines");
    let all = steps(&events);
    assert!(
        all.keys().any(|n| n.contains("COPY --from=build")),
        "{all:?}"
    );
    assert!(
        all.values().all(|s| s == "cached"),
        "steps not cached: {all:?}\n{stderr}"
    );
    assert!(
        !all.keys().any(|n| n.starts_with("[build ")),
        "the build stage shows no step: {all:?}"
    );
    assert!(
        infos(&events).iter().any(|t| t == SKIPPED_BUILD),
        "the skipped stage has its line\n{stderr}"
    );

    // A miss in the runtime stage before the copy: the build stage is
    // built (from nothing: the cache does not have it), the image right.
    let out = b.path("out");
    let o = format!("type=local,dest={}", out.display());
    let (_, events, stderr) = build(
        &b,
        &dir,
        "lazy:c",
        &["--cache-from", &cache, "--build-arg", "R=2", "-o", &o],
    );
    let ran = ran(&events);
    assert!(
        ran.iter()
            .any(|n| n.starts_with("[build ") && n.contains("echo")),
        "the build stage runs: {ran:?}\n{stderr}"
    );
    assert!(!infos(&events).iter().any(|t| t == SKIPPED_BUILD));
    assert_eq!(
        std::fs::read_to_string(out.join("both")).unwrap(),
        "built 1\nruntime 2\n"
    );
}

#[test]
/// Without a registry cache stages start as soon as their bases are ready
/// (docs/cache.md): laziness is not decided, so a local rebuild whose
/// build-stage records were pruned builds that stage again, to the same
/// image.
fn a_local_rebuild_without_the_build_stage_records_builds_it_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = two_stage_app(tmp.path());
    let a = Kiln::new();
    support::base::local_debian(&a.data());
    let (digest, _, _) = build(&a, &dir, "lazy:a", &[]);

    // The build stage's step keys: what a home that built only it cached.
    let x = Kiln::new();
    support::base::local_debian(&x.data());
    build(&x, &dir, "lazy:x", &["--target", "build"]);
    let keys: Vec<_> = std::fs::read_dir(x.cache().join("steps"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!keys.is_empty());
    let mut deleted = 0;
    for k in &keys {
        if std::fs::remove_file(a.cache().join("steps").join(k)).is_ok() {
            deleted += 1;
        }
    }
    assert!(deleted > 0, "A had the build stage's records");

    let (again, events, stderr) = build(&a, &dir, "lazy:b", &[]);
    assert_eq!(again, digest);
    let rerun = ran(&events);
    assert!(
        rerun.iter().any(|n| n.starts_with("[build ")),
        "{rerun:?}\n{stderr}"
    );
    assert!(
        !infos(&events).iter().any(|t| t == SKIPPED_BUILD),
        "{stderr}"
    );

    // The build stage's output changes (B): its copy misses, so it runs.
    let (changed, events, stderr) = build(&a, &dir, "lazy:c", &["--build-arg", "B=2"]);
    assert_ne!(changed, digest);
    let ran = ran(&events);
    assert!(
        ran.iter().any(|n| n.starts_with("[build ")) && ran.iter().any(|n| n.contains("cat /out")),
        "{ran:?}\n{stderr}"
    );
}

#[test]
fn an_inline_cache_travels_in_the_pushed_image() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = two_stage_app(tmp.path());
    let image = format!("{}/lazy/app:1", reg.addr);
    let a = Kiln::new();
    support::base::local_debian(&a.data());
    // Only type=inline changes the image (its config): a registry cache
    // or no cache leave it as it was.
    let (plain, _, _) = build(&a, &dir, "inline:plain", &[]);
    let to = format!("type=registry,ref={}/cache/lazy:1", reg.addr);
    let (with_registry_cache, _, _) = build(&a, &dir, "inline:reg", &["--cache-to", &to]);
    assert_eq!(with_registry_cache, plain);
    let (digest_a, _, _) = build(&a, &dir, &image, &["--push", "--cache-to", "type=inline"]);
    assert_ne!(digest_a, plain);
    let skopeo = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&support::kiln::run("skopeo", args)).unwrap()
    };
    let remote = format!("docker://{image}");
    let local = format!("{}:inline:plain", a.layout());
    let pushed = skopeo(&["inspect", "--tls-verify=false", "--raw", &remote]);
    let without = skopeo(&["inspect", "--raw", &local]);
    assert_eq!(pushed["layers"], without["layers"], "the same layers");
    let config = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--config",
        "--raw",
        &remote,
    ]);
    let record = &config["kiln.cache"];
    assert_eq!(record["version"], 2, "{config}");
    assert!(
        record["steps"].as_object().is_some_and(|s| s.len() >= 3),
        "{record}"
    );

    // A fresh machine reading the image's inline cache runs nothing and
    // skips the build stage; without type=inline its image is the plain
    // one, with it the pushed one.
    let from = format!("type=registry,ref={image}");
    for (extra, want) in [(None, &plain), (Some("type=inline"), &digest_a)] {
        let b = Kiln::new();
        support::base::local_debian(&b.data());
        let mut args = vec!["--cache-from", from.as_str()];
        if let Some(to) = extra {
            args.extend(["--cache-to", to]);
        }
        let (digest_b, events, stderr) = build(&b, &dir, "inline:b", &args);
        assert_eq!(&digest_b, want, "--cache-to {extra:?}");
        let all = steps(&events);
        assert!(
            !all.is_empty() && all.values().all(|s| s == "cached"),
            "{all:?}\n{stderr}"
        );
        assert!(
            infos(&events).iter().any(|t| t == SKIPPED_BUILD),
            "{stderr}"
        );
        assert!(warnings(&events).is_empty(), "{:?}", warnings(&events));
    }
}

#[test]
fn a_mode_min_cache_rebuilds_an_auto_app_without_its_build_stage_or_toolchain() {
    let reg = Registry::start();
    let cache = format!("{}/cache/node-npm:min", reg.addr);
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("node-npm", tmp.path());
    let a = Kiln::shared();
    let to = format!("type=registry,ref={cache},mode=min");
    let (digest_a, _, _) = build(&a, &dir, "regmin:a", &["--cache-to", &to]);

    // The cache has the runtime's steps and base, and the build stage's
    // base by its resolution only: nothing runs or is composed on B.
    let b = Kiln::new();
    let log_at = reg.log().len();
    let (digest_b, events, stderr) = build(&b, &dir, "regmin:b", &["--cache-from", &cache]);
    assert_eq!(digest_b, digest_a);
    let all = steps(&events);
    assert_eq!(
        all.keys().filter(|n| n.starts_with("[packages]")).count(),
        2,
        "both package sets are listed: {all:?}"
    );
    assert!(
        all.values().all(|s| s == "cached"),
        "steps not cached: {all:?}\n{stderr}"
    );
    assert!(
        infos(&events).iter().any(|t| t == SKIPPED_BUILD),
        "{stderr}"
    );
    let fetched = blob_bytes_sent(&reg, log_at);
    let size = image_size(&b, "regmin:b");
    assert!(
        fetched * 10 <= size * 11,
        "fetched {fetched} bytes for an image of {size} bytes"
    );
}

/// The case for `cache-mounts=true`: a fresh builder whose
/// lockfile gained one dependency runs `npm ci` against the npm cache
/// another builder exported, and downloads that one package, not the
/// seventy it already had. Counted from npm's own log
/// (`NPM_CONFIG_LOGLEVEL=http`: a line per tarball, `(cache miss)` when it
/// came over the network, `(cache hit)` / `(cache revalidated)` when not).
#[test]
fn a_fresh_builder_downloads_only_the_dependency_its_lockfile_added() {
    let reg = Registry::start();
    let cache = format!("{}/cache/node-npm:mounts", reg.addr);
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("node-npm", tmp.path());
    let a = Kiln::new();
    let to = format!("type=registry,ref={cache},mode=max,cache-mounts=true");
    build(&a, &dir, "mounts:a", &["--cache-to", &to]);

    // One dependency more: is-number 7.0.0, which has none of its own.
    let edit = |file: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let path = dir.join(file);
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    };
    edit("package.json", &|v| {
        v["dependencies"]["is-number"] = "^7.0.0".into();
    });
    edit("package-lock.json", &|v| {
        v["packages"][""]["dependencies"]["is-number"] = "^7.0.0".into();
        v["packages"]["node_modules/is-number"] = serde_json::json!({
            "version": "7.0.0",
            "resolved": "https://registry.npmjs.org/is-number/-/is-number-7.0.0.tgz",
            "integrity": "sha512-41Cifkg6e8TylSpdtTpeLVMqvSBEVzTttHvERD741+pnZ8ANv0004MRL43QKPDlK9cGvNp6NZWZUBlbGXYxxng==",
            "license": "MIT",
            "engines": { "node": ">=0.12.0" }
        });
    });
    let fresh = |from: Option<&str>| {
        let mut extra = vec!["--build-env", "NPM_CONFIG_LOGLEVEL=http"];
        if let Some(from) = from {
            extra.extend(["--cache-from", from]);
        }
        let (_, events, stderr) = build(&Kiln::new(), &dir, "mounts:b", &extra);
        let tarballs: Vec<String> = events
            .iter()
            .filter(|e| e["event"] == "log")
            .filter_map(|e| e["line"].as_str())
            .filter(|l| l.contains("http fetch GET") && l.contains(".tgz"))
            .map(str::to_string)
            .collect();
        assert!(
            tarballs.len() >= 70,
            "npm logged {} tarballs\n{stderr}",
            tarballs.len()
        );
        let missed: Vec<String> = tarballs
            .iter()
            .filter(|l| l.contains("(cache miss)"))
            .cloned()
            .collect();
        (tarballs.len(), missed)
    };
    let (total, missed) = fresh(Some(&cache));
    assert_eq!(
        missed.len(),
        1,
        "of {total} tarballs, downloaded: {missed:#?}"
    );
    assert!(
        missed[0].contains("/is-number/-/is-number-7.0.0.tgz"),
        "{missed:?}"
    );
    // Without the cache, every one is downloaded: the count measures.
    let (total, missed) = fresh(None);
    assert_eq!(missed.len(), total, "{missed:#?}");
}

/// A Dockerfile app of `layers` COPY steps whose files all say `variant`:
/// two variants share no step.
fn many_layer_app(parent: &Path, variant: &str, layers: usize) -> std::path::PathBuf {
    let dir = parent.join(variant);
    std::fs::create_dir_all(&dir).unwrap();
    let mut dockerfile = String::from("FROM scratch\n");
    for i in 0..layers {
        std::fs::write(dir.join(format!("f{i}")), format!("{variant} {i}\n")).unwrap();
        dockerfile.push_str(&format!("COPY f{i} /f{i}\n"));
    }
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    dir
}

#[test]
/// Two builders export different caches to one ref at the same time, three
/// times over: the ref always names a complete cache (the last complete
/// writer's), which a fresh builder reads without a warning: one
/// variant's steps all cached, the other's all run, each to its image.
fn builders_writing_one_cache_ref_at_once_leave_a_complete_cache() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let apps = [
        many_layer_app(tmp.path(), "left", 12),
        many_layer_app(tmp.path(), "right", 12),
    ];
    let cache = format!("{}/cache/race:main", reg.addr);
    let to = format!("type=registry,ref={cache},mode=max");
    let homes = [Kiln::new(), Kiln::new()];
    let mut digests = [String::new(), String::new()];
    for round in 0..3 {
        // A new image each round (a build arg in no step's key would not
        // do: the file contents change), so each round exports again.
        for (app, variant) in apps.iter().zip(["left", "right"]) {
            std::fs::write(app.join("f0"), format!("{variant} round {round}\n")).unwrap();
        }
        let built: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = homes
                .iter()
                .zip(&apps)
                .map(|(home, app)| {
                    let to = &to;
                    s.spawn(move || build(home, app, "race:1", &["--cache-to", to]).0)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        digests = [built[0].clone(), built[1].clone()];
    }

    let mut cached_variants = 0;
    for (app, digest) in apps.iter().zip(&digests) {
        let fresh = Kiln::new();
        let (got, events, stderr) = build(&fresh, app, "race:fresh", &["--cache-from", &cache]);
        assert_eq!(&got, digest, "the same image as its writer built");
        assert!(warnings(&events).is_empty(), "{stderr}");
        let all = steps(&events);
        assert_eq!(all.len(), 12, "{all:?}");
        let cached = all.values().filter(|s| *s == "cached").count();
        assert!(
            cached == 0 || cached == all.len(),
            "one writer's cache, whole: {all:?}"
        );
        if cached == all.len() {
            cached_variants += 1;
        }
    }
    assert_eq!(
        cached_variants, 1,
        "the ref names exactly one writer's cache"
    );
}

/// The architecture this machine's images are not for, as kiln names it.
fn other_arch() -> &'static str {
    if std::env::consts::ARCH == "aarch64" {
        "amd64"
    } else {
        "arm64"
    }
}

/// `node -e 'console.log(process.arch)'` in `home`'s image `name` for
/// `platform` (under qemu-user when foreign).
fn node_arch(home: &Kiln, name: &str, platform: &str) -> String {
    let out = home.ok(&[
        "run",
        "--platform",
        platform,
        name,
        "node",
        "-e",
        "console.log(process.arch)",
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
/// A package set's reference names no architecture. A builder for the
/// other architecture that reads a cache this machine's build wrote takes
/// none of its packages (version 1 of the format gave it this machine's
/// package base, and an image of the wrong architecture); one
/// `--cache-to` of a two-platform build holds both platforms, and a fresh
/// builder rebuilds the index from it with no step run.
fn one_cache_holds_each_platform_with_its_own_packages() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("node-npm", tmp.path());
    let other = format!("linux/{}", other_arch());
    let node_other = if other_arch() == "arm64" {
        "arm64"
    } else {
        "x64"
    };

    let a = Kiln::shared();
    let native_cache = format!("{}/cache/node-npm:native", reg.addr);
    let to = format!("type=registry,ref={native_cache},mode=max");
    build(&a, &dir, "regarch:native", &["--cache-to", &to]);

    let b = Kiln::new();
    let (_, events, stderr) = build(
        &b,
        &dir,
        "regarch:other",
        &["--platform", &other, "--cache-from", &native_cache],
    );
    let all = steps(&events);
    let runtime_set = all
        .iter()
        .find(|(n, _)| n.starts_with("[packages]") && n.contains("tini"))
        .unwrap_or_else(|| panic!("no runtime package set: {all:?}"));
    assert_eq!(
        runtime_set.1, "done",
        "composed for {other}: {all:?}\n{stderr}"
    );
    assert_eq!(node_arch(&b, "regarch:other", &other), node_other);

    // Both platforms, one cache.
    let both = format!("{}/cache/node-npm:both", reg.addr);
    let to = format!("type=registry,ref={both},mode=max");
    let platforms = "linux/amd64,linux/arm64";
    let (index_a, _, stderr) = build(
        &a,
        &dir,
        "regarch:both",
        &["--platform", platforms, "--cache-to", &to],
    );
    assert!(stderr.contains("exported the build cache"), "{stderr}");
    let c = Kiln::new();
    let (index_c, events, stderr) = build(
        &c,
        &dir,
        "regarch:both",
        &["--platform", platforms, "--cache-from", &both],
    );
    assert_eq!(index_c, index_a, "the same index on both machines");
    let all = steps(&events);
    assert!(
        !all.is_empty() && all.values().all(|s| s == "cached"),
        "steps not cached: {all:?}\n{stderr}"
    );
    assert_eq!(node_arch(&c, "regarch:both", &other), node_other);
}

#[test]
/// `--cache-to type=inline` with several platforms: each platform's image
/// carries its own steps, and `--cache-from` of the pushed index reads
/// them all (before, an index was a miss with a warning).
fn the_inline_cache_of_a_pushed_index_serves_every_platform() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = small_app(tmp.path());
    let image = format!("{}/multi/app:1", reg.addr);
    let platforms = "linux/amd64,linux/arm64";
    let a = Kiln::new();
    let (index_a, _, _) = build(
        &a,
        &dir,
        &image,
        &[
            "--platform",
            platforms,
            "--push",
            "--cache-to",
            "type=inline",
        ],
    );
    let b = Kiln::new();
    let from = format!("type=registry,ref={image}");
    let (index_b, events, stderr) = build(
        &b,
        &dir,
        "multi:b",
        &[
            "--platform",
            platforms,
            "--cache-from",
            &from,
            "--cache-to",
            "type=inline",
        ],
    );
    assert_eq!(index_b, index_a, "the same index on both machines");
    assert!(warnings(&events).is_empty(), "{stderr}");
    let done: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "finish" && e["status"] == "done")
        .filter(|e| e["name"].as_str().is_some_and(|n| n.contains("COPY")))
        .collect();
    let cached = events
        .iter()
        .filter(|e| e["event"] == "finish" && e["status"] == "cached")
        .count();
    assert!(done.is_empty() && cached >= 4, "{stderr}");
}
