//! End to end: real apps that Nixpacks builds and runs, built by kiln and
//! run under podman (issue 16). Each test builds one example (or a variant
//! of one) with the suites' shared warm cache and asserts what the app
//! does at run time, not only that the build succeeded.
#![cfg(feature = "e2e")]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use support::auto::{build_and_serve, example, run};
use support::kiln::Kiln;

/// A Cargo workspace whose binary is a glob member (`crates/*`) next to a
/// library member: kiln builds it with `--package server` and starts it
/// (before: `error: no start command`).
#[test]
fn rust_workspace_builds_and_answers() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    build_and_serve(
        &home,
        tmp.path(),
        "rust-workspace",
        "Hello from rust-workspace (/)",
    );
}

/// A container of an image in the home's store, removed on drop.
struct Running {
    container: String,
    tag: String,
    port: u16,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Running {
    /// Loads `name` into podman and runs it with `PORT`, until it answers
    /// HTTP 200 with `expect` in the body.
    fn start(home: &Kiln, name: &str, expect: &str) -> Running {
        let slug = name.replace(':', "-");
        let tag = format!("localhost/kiln-e2e-apps-{slug}");
        let container = format!("kiln-e2e-apps-{slug}-{}", std::process::id());
        let lock = support::podman::lock();
        run(Command::new("skopeo").args([
            "copy",
            "-q",
            &format!("{}:{name}", home.layout()),
            &format!("containers-storage:{tag}"),
        ]));
        let port = support::registry::free_port();
        let running = Running {
            container,
            tag,
            port,
            _lock: lock,
        };
        run(support::podman::run_cmd().args([
            "-d",
            "--name",
            &running.container,
            "-e",
            &format!("PORT={port}"),
            &running.tag,
        ]));
        support::podman::wait_for_http(&running.container, port, expect, name);
        running
    }

    /// `GET path` with extra request header lines; the raw response.
    fn get(&self, path: &str, headers: &[String]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n");
        for h in headers {
            req.push_str(&format!("{h}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        buf
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = support::podman::podman()
            .args(["rm", "-f", &self.container])
            .output();
        let _ = support::podman::podman()
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

/// The value of response header `name` (case-insensitive).
fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.split("\r\n\r\n")
        .next()?
        .lines()
        .skip(1)
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

fn status(resp: &str) -> &str {
    resp.lines().next().unwrap_or("")
}

/// Builds `example` (after `prepare`), then again after `file` changes
/// `old` → `new` (same size), and asks `path` of the second image with the
/// validators the first image gave (when it gave none: `If-Modified-Since`
/// the layers' epoch, what they would have been). Every file of an image has the
/// reproducible mtime, so a server's own `mtime-size` ETag and
/// `Last-Modified` are the same before and after: a browser or CDN
/// revalidating must still get the new content, not a 304.
fn assert_same_size_change_is_served(
    example_name: &str,
    prepare: impl Fn(&std::path::Path),
    file: &str,
    path: &str,
    (old, new): (&str, &str),
) {
    assert_eq!(old.len(), new.len());
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = example(example_name, tmp.path());
    prepare(&dir);
    let tag = |n: u8| format!("stale-{example_name}:{n}");
    home.build(&dir, &tag(1));
    let first = Running::start(&home, &tag(1), "").get(path, &[]);
    assert!(
        status(&first).contains(" 200 ") && first.contains(old),
        "{first}"
    );
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    std::fs::write(dir.join(file), text.replace(old, new)).unwrap();
    home.build(&dir, &tag(2));
    let c = Running::start(&home, &tag(2), "");
    let plain = c.get(path, &[]);
    if let (Some(a), Some(b)) = (header(&first, "ETag"), header(&plain, "ETag")) {
        assert_ne!(a, b, "same ETag for different content");
    }
    assert!(
        header(&plain, "Last-Modified").is_none(),
        "Last-Modified is the reproducible epoch, not a change time:\n{plain}"
    );
    let mut conditional = Vec::new();
    if let Some(etag) = header(&first, "ETag") {
        conditional.push(format!("If-None-Match: {etag}"));
    }
    if let Some(lm) = header(&first, "Last-Modified") {
        conditional.push(format!("If-Modified-Since: {lm}"));
    }
    if conditional.is_empty() {
        // The server's own validator would have been the layers' epoch.
        let epoch = kiln::oci::layer::source_date_epoch().unwrap();
        let date = chrono::DateTime::from_timestamp(epoch, 0).unwrap();
        conditional.push(format!(
            "If-Modified-Since: {}",
            date.format("%a, %d %b %Y %H:%M:%S GMT")
        ));
    }
    let again = c.get(path, &conditional);
    assert!(
        status(&again).contains(" 200 ") && again.contains(new),
        "revalidation with the old validators ({conditional:?}) must give the new content:\n{again}"
    );
}

/// Caddy (the staticfile provider; Node SPAs share its Caddyfile).
#[test]
fn static_site_change_of_the_same_size_is_not_served_stale() {
    assert_same_size_change_is_served(
        "staticfile",
        |_| {},
        "site/index.html",
        "/index.html",
        ("Hello from staticfile", "Howdy from staticfile"),
    );
}

/// nginx in front of php-fpm serves the app's static files.
#[test]
fn php_static_file_change_of_the_same_size_is_not_served_stale() {
    assert_same_size_change_is_served(
        "php-vanilla",
        |dir| std::fs::write(dir.join("style.css"), "h1 { color: red; }\n").unwrap(),
        "style.css",
        "/style.css",
        ("red;", "tan;"),
    );
}

/// A Node app whose build runs Python (`providers = ["...", "python"]`, no
/// Python manifest): Python gives its toolchain only (before: the runtime
/// copied a `/opt/venv` nothing made).
#[test]
fn node_app_with_python_named_builds_with_python() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    build_and_serve(
        &home,
        tmp.path(),
        "node-python",
        "Hello from node-python (built by Python 3)",
    );
}

/// A Python app that runs Node (`providers = ["node", "python"]`, no
/// package.json): Node gives its toolchain and runtime only (before: `npm
/// i` failed on the missing package.json).
#[test]
fn python_app_with_node_named_runs_node() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    build_and_serve(
        &home,
        tmp.path(),
        "python-node",
        "Hello from python-node, node v",
    );
}

/// The output of an image's own command (`podman run --rm IMAGE`).
fn image_output(home: &Kiln, name: &str) -> String {
    let tag = format!("localhost/kiln-e2e-apps-{}", name.replace(':', "-"));
    let _lock = support::podman::lock();
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        &format!("{}:{name}", home.layout()),
        &format!("containers-storage:{tag}"),
    ]));
    let out = support::podman::run_cmd()
        .args(["--rm", &tag])
        .output()
        .unwrap();
    let _ = support::podman::podman().args(["rmi", "-f", &tag]).output();
    assert!(out.status.success(), "{name}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Swift from Debian's swiftlang, whose tools are in /usr/libexec/swift/bin
/// (before: `swift: not found` in the install step).
#[test]
fn swift_package_builds_and_runs() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("swift", tmp.path());
    home.build(&dir, "swift:1");
    assert_eq!(image_output(&home, "swift:1"), "hello\n");
}

/// No plan that fails later because its toolchain was never installed: for
/// every example and every Debian suite kiln plans for, either planning
/// fails (with the message naming the suites that have the toolchain), or
/// every package of the build stage and of the runtime stage is in that
/// suite's index. The indexes are Debian's (fetched once into the shared
/// cache).
#[test]
fn every_planned_package_exists_in_its_suite() {
    use kiln::packages::repo::{Repo, RepoConfig};
    let config = RepoConfig {
        cache: Some(support::shared_cache().join("packages")),
        ..RepoConfig::from_env()
    };
    let repo = Repo::new(config, &kiln::progress::Progress::quiet()).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut examples: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    examples.sort();
    // Provider branches the examples do not take: PHP extensions, native
    // dependencies of Node, Python and Ruby apps, Rust with OpenSSL.
    let synthetic = tempfile::tempdir().unwrap();
    let apps: &[(&str, &[(&str, &str)])] = &[
        (
            "php-extensions",
            &[(
                "composer.json",
                r#"{"require": {"php": ">=8.1", "ext-pdo_mysql": "*", "ext-pdo_pgsql": "*",
                   "ext-pdo_sqlite": "*", "ext-mbstring": "*", "ext-intl": "*", "ext-gd": "*",
                   "ext-zip": "*", "ext-bcmath": "*", "ext-curl": "*", "ext-dom": "*",
                   "ext-xml": "*", "ext-redis": "*", "ext-sodium": "*", "ext-iconv": "*",
                   "ext-json": "*", "ext-openssl": "*", "ext-zlib": "*", "ext-gmp": "*",
                   "ext-imagick": "*", "ext-soap": "*", "ext-mysqli": "*", "ext-exif": "*"}}"#,
            )],
        ),
        (
            "node-native",
            &[(
                "package.json",
                r#"{"name": "x", "scripts": {"start": "node index.js"},
                   "dependencies": {"canvas": "2", "puppeteer": "22", "prisma": "5",
                   "bcrypt": "5", "argon2": "0", "better-sqlite3": "11", "sqlite3": "5",
                   "node-pty": "1", "cpu-features": "0"}}"#,
            )],
        ),
        (
            "python-native",
            &[(
                "requirements.txt",
                "psycopg2\npsycopg\npsycopg-c\nmysqlclient\npycairo\npydub\npdf2image\nflask\n\
                 Pillow\nlxml\ncffi\npyodbc\npython-magic\nweasyprint\nopencv-python\n",
            )],
        ),
        (
            "ruby-native",
            &[
                (
                    "Gemfile",
                    "source \"https://rubygems.org\"\ngem \"pg\"\ngem \"mysql2\"\ngem \"mini_magick\"\n\
                     gem \"ruby-vips\"\ngem \"charlock_holmes\"\ngem \"sqlite3\"\ngem \"execjs\"\n",
                ),
                ("config.ru", "run ->(_) { [200, {}, [\"ok\"]] }\n"),
            ],
        ),
        (
            "rust-openssl",
            &[
                (
                    "Cargo.toml",
                    "[package]\nname = \"x\"\nversion = \"0.1.0\"\n[dependencies]\nopenssl = \"0.10\"\n",
                ),
                ("src/main.rs", "fn main() {}\n"),
            ],
        ),
    ];
    for (name, files) in apps {
        let dir = synthetic.path().join(name);
        for (f, text) in *files {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        examples.push(dir);
    }
    let mut missing = Vec::new();
    let mut checked = 0;
    for suite in kiln::plan::versions::SUITES {
        let idx = repo.load_suite(suite).unwrap();
        for dir in &examples {
            let name = dir.file_name().unwrap().to_string_lossy();
            let env = [format!("KILN_SUITE={suite}")];
            let plan = match kiln::plan::generate(dir, &env, &Default::default()) {
                Ok(p) => p,
                Err(e) => {
                    // A toolchain the suite lacks is refused when planning.
                    let msg = format!("{e:#}");
                    assert!(
                        msg.contains("does not satisfy the toolchain requests")
                            || msg.contains("is not available"),
                        "{name} ({suite}): {msg}"
                    );
                    continue;
                }
            };
            let runtime = plan
                .start
                .as_ref()
                .and_then(|s| s.apt_pkgs.clone())
                .unwrap_or_default();
            for (stage, pkgs) in [("build", plan.all_apt_pkgs()), ("runtime", runtime)] {
                for p in pkgs {
                    checked += 1;
                    if !idx.knows(&p) {
                        missing.push(format!("{name} ({suite}, {stage} stage): {p}"));
                    }
                }
            }
        }
    }
    assert!(checked > 300, "only {checked} packages checked");
    assert!(
        missing.is_empty(),
        "packages not in the suite:\n{}",
        missing.join("\n")
    );
}

/// PHP's generated `/assets/start.sh` (nginx template rendered with `sed`,
/// php-fpm next to nginx) runs in the runtime image and the app answers
/// (before: `/assets/start.sh: sed: not found`).
#[test]
fn php_start_script_runs_in_the_runtime_image() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    build_and_serve(&home, tmp.path(), "php-vanilla", "Hello from php");
}

/// A package the config asks for (`aptPkgs = ["...", "cowsay"]`) is in the
/// runtime image and on `PATH` (Debian puts cowsay in /usr/games); before,
/// it reached the build stage only.
#[test]
fn requested_packages_reach_the_runtime_image() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    build_and_serve(
        &home,
        tmp.path(),
        "python-cowsay",
        "< Hello from python-cowsay >",
    );
}

/// The script kiln writes for `start.user` (the account appended to
/// /etc/passwd, as `minimal` has no useradd) runs in the runtime image,
/// and the app runs as that user.
#[test]
fn start_user_script_runs_in_the_runtime_image() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("python-node", tmp.path());
    let config = dir.join("nixpacks.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[start]\nuser = \"app\"\n")).unwrap();
    home.build(&dir, "user:1");
    let who = home.stdout(&[
        "--progress",
        "quiet",
        "run",
        "user:1",
        "sh",
        "-c",
        "id -un; echo ~",
    ]);
    assert_eq!(who, "app\n/home/app\n");
    support::auto::serve_and_stop(&home, "user:1", "Hello from python-node, node v");
}

/// A Node app with its own native addon (`binding.gyp`): node-gyp runs at
/// `npm install` with Python named without a manifest, over the whole
/// source; python3, g++ and make stay out of the runtime (`buildOnlyPkgs`).
#[test]
fn node_gyp_addon_builds_with_python_and_runs() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    build_and_serve(
        &home,
        tmp.path(),
        "node-gyp-addon",
        "Hello from node-gyp-addon (native)",
    );
    let out = home.kiln(&[
        "--progress",
        "quiet",
        "run",
        "node-gyp-addon:1",
        "sh",
        "-c",
        "command -v python3 g++ make",
    ]);
    assert!(
        out.stdout.is_empty(),
        "build-only packages in the runtime image: {out:?}"
    );
}

/// A start command that runs npx and pnpm (a Procfile over the pnpm
/// example: `npx --version && pnpm start`) keeps npm and the global pnpm
/// install in the runtime image (before: `npx: not found`, the runtime
/// had `nodejs` only).
#[test]
fn start_command_running_npx_and_pnpm_keeps_them_in_the_runtime() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("node-pnpm", tmp.path());
    std::fs::write(dir.join("Procfile"), "web: npx --version && pnpm start\n").unwrap();
    home.build(&dir, "pnpm-start:1");
    support::auto::serve_and_stop(&home, "pnpm-start:1", "Hello from node-npm");
}

/// `[start] runtime = "build"`: the image is the build stage, so an app
/// that runs npm from its code (not its start command) has it (before:
/// kiln.toml's unknown key `runtime` was an error).
#[test]
fn runtime_build_switch_ships_the_build_stage() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    build_and_serve(
        &home,
        tmp.path(),
        "node-runtime-build",
        "Hello from node-runtime-build, npm 9.",
    );
}

/// psycopg2 (no wheels: compiled by pip) listed in a requirements file that
/// requirements.txt includes (`-r requirements/base.txt`): libpq-dev in the
/// build, libpq5 in the runtime, from the native-dependency table (before:
/// the included file was not read and pip failed on `pg_config`).
#[test]
fn python_psycopg2_from_source_builds_and_loads_libpq() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    build_and_serve(
        &home,
        tmp.path(),
        "python-psycopg2",
        "Hello from python-psycopg2, libpq 1",
    );
}

/// A library the runtime lacks is a build error naming it, the file that
/// needs it and its package (the runtime stage checks every shared object
/// it copied), not an app that dies at start: psycopg2 with libpq5 kept
/// out of the runtime (`buildOnlyPkgs`).
#[test]
fn missing_runtime_library_fails_the_build_naming_it() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("python-psycopg2", tmp.path());
    std::fs::write(dir.join("kiln.toml"), "buildOnlyPkgs = [\"libpq5\"]\n").unwrap();
    let mut args = vec![
        "build".to_string(),
        dir.display().to_string(),
        "-t".into(),
        "nolibpq:1".into(),
    ];
    args.extend(support::auto::host_ca_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = home.kiln(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let line = err
        .lines()
        .find(|l| {
            l.contains("/opt/venv/lib/python3.13/site-packages/psycopg2/_psycopg.cpython-313-")
        })
        .unwrap_or_else(|| panic!("no line names psycopg2's extension:\n{err}"));
    assert!(
        line.trim_end()
            .ends_with(".so needs libpq.so.5 (Debian package libpq5)"),
        "{err}"
    );
}

/// bcrypt compiled by node-gyp (`build-from-source` in .npmrc): python3,
/// g++ and make in the build from the native-dependency table (before:
/// `gyp ERR! not found: make`), none of them in the runtime.
#[test]
fn node_bcrypt_compiled_by_node_gyp_answers_a_hash() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    build_and_serve(
        &home,
        tmp.path(),
        "node-bcrypt",
        "Hello from node-bcrypt, verified $2b$04$",
    );
    let out = home.kiln(&[
        "--progress",
        "quiet",
        "run",
        "node-bcrypt:1",
        "sh",
        "-c",
        "command -v python3 g++ make",
    ]);
    assert!(out.stdout.is_empty(), "build tools in the runtime: {out:?}");
}

/// A package name as pip compares them.
fn pypi_norm(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['_', '.'], "-")
}

/// Builds `example` (a Python app whose install runs `tool`), checks it
/// answers, and that every package of the tool's pins file
/// (`src/plan/providers/pins/PINS.txt`, installed by pip with
/// `--require-hashes`) that the app's lockfile does not also name is
/// installed at the pinned version.
fn python_tool_closure_is_pinned(example_name: &str, pins: &str, lock: &str, expect: &str) {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    build_and_serve(&home, tmp.path(), example_name, expect);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock =
        std::fs::read_to_string(root.join("examples").join(example_name).join(lock)).unwrap();
    let app_pkgs: Vec<String> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|n| pypi_norm(n.trim_end_matches('"')))
        .collect();
    let pins =
        std::fs::read_to_string(root.join(format!("src/plan/providers/pins/{pins}.txt"))).unwrap();
    let freeze = home.stdout(&[
        "--progress",
        "quiet",
        "run",
        &format!("{example_name}:1"),
        "/opt/venv/bin/pip",
        "freeze",
    ]);
    let installed: Vec<(String, String)> = freeze
        .lines()
        .filter_map(|l| l.split_once("=="))
        .map(|(n, v)| (pypi_norm(n), v.trim().to_string()))
        .collect();
    let mut checked = 0;
    for pin in pins
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        // `name==version --hash=sha256:…`: the hashes were checked by pip.
        let req = pin.split_whitespace().next().unwrap();
        let (name, version) = req.split_once("==").unwrap();
        let name = pypi_norm(name);
        if app_pkgs.contains(&name) {
            continue;
        }
        // Pins for other Pythons or platforms (markers) may be absent.
        if let Some((_, v)) = installed.iter().find(|(n, _)| *n == name) {
            assert_eq!(v, version, "{example_name}: {name}");
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "{example_name}: only {checked} pins found in:\n{freeze}"
    );
}

/// PDM's dependencies come from kiln's pins (PDM's own `locked` set), not
/// the newest releases (before: hishel 2 made `pdm install` fail with
/// `No module named 'hishel._serializers'`).
#[test]
fn python_pdm_installs_with_pinned_dependencies() {
    python_tool_closure_is_pinned(
        "python-pdm",
        "pdm",
        "pdm.lock",
        "Hello from python-pdm, six 1.17.0",
    );
}

/// Poetry's dependencies come from kiln's pins.
#[test]
fn python_poetry_installs_with_pinned_dependencies() {
    python_tool_closure_is_pinned(
        "python-poetry",
        "poetry",
        "poetry.lock",
        "Hello from python-poetry",
    );
}

/// A library nothing in kiln's tables maps: the app's own addon links
/// SQLite (`-lsqlite3`, libsqlite3-dev for the build only). The runtime
/// stage's check finds `libsqlite3.so.0` missing, kiln adds the package
/// that ships it and builds the runtime again (before: the build failed
/// naming the library; before the check: the app died at start).
#[test]
fn missing_runtime_library_with_a_known_package_is_added() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("node-gyp-addon", tmp.path());
    std::fs::write(
        dir.join("binding.gyp"),
        r#"{"targets": [{"target_name": "greeting", "sources": ["greeting.c"], "libraries": ["-lsqlite3"]}]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("greeting.c"),
        r#"#include <stdio.h>
#include <node_api.h>
#include <sqlite3.h>

static napi_value greeting(napi_env env, napi_callback_info info) {
  char text[128];
  napi_value s;
  snprintf(text, sizeof text, "Hello from node-gyp-addon (native, sqlite %s)\n", sqlite3_libversion());
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &s);
  return s;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "greeting", NAPI_AUTO_LENGTH, greeting, NULL, &fn);
  napi_set_named_property(env, exports, "greeting", fn);
  return exports;
}
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("kiln.toml"),
        "providers = [\"...\", \"python\"]\nbuildOnlyPkgs = [\"g++\", \"make\", \"python3\", \"libsqlite3-dev\"]\n\n\
         [phases.setup]\naptPkgs = [\"...\", \"g++\", \"make\", \"libsqlite3-dev\"]\n",
    )
    .unwrap();
    let (_, events) = home.build(&dir, "addon-sqlite:1");
    assert!(
        events.iter().any(|e| e["text"]
            .as_str()
            .is_some_and(|t| t.contains("adding libsqlite3-0 to its packages"))),
        "no retry with libsqlite3-0: {events:?}"
    );
    support::auto::serve_and_stop(
        &home,
        "addon-sqlite:1",
        "Hello from node-gyp-addon (native, sqlite 3.",
    );
}

/// The musl build of a native module that npm installs next to the glibc
/// one (rollup's and oxc's `*-linux-x64-musl` optional packages, in every
/// Nuxt app) is not a missing library: the runtime stage's check skips it
/// and the app builds and answers (before: `….node needs libc.so`, the
/// build failed). The object is made here with `cc` (NEEDED `libc.so`,
/// musl's soname, from a stub linked then thrown away) rather than
/// installed from npm, so the test does not depend on which packages ship
/// musl builds. It is an e2e test, not a unit test of the script on the
/// host, because a host with libc6-dev has `/usr/lib/…/libc.so` (a linker
/// script): the host's loader fails on it with `invalid ELF header` and
/// never prints `not found`, so only the runtime image shows the bug.
#[test]
fn musl_native_module_next_to_the_app_is_not_a_missing_library() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("node-npm", tmp.path());
    let stub = tmp.path().join("musl");
    std::fs::create_dir_all(&stub).unwrap();
    std::fs::write(stub.join("stub.c"), "int musl_f(void) { return 1; }\n").unwrap();
    run(Command::new("cc")
        .args(["-shared", "-nostdlib", "-fPIC", "-Wl,-soname,libc.so", "-o"])
        .arg(stub.join("libc.so"))
        .arg(stub.join("stub.c")));
    std::fs::write(
        stub.join("binding.c"),
        "int musl_f(void);\nint binding(void) { return musl_f(); }\n",
    )
    .unwrap();
    let native = dir.join("native");
    std::fs::create_dir_all(&native).unwrap();
    let module = native.join("binding.linux-x64-musl.node");
    run(Command::new("cc")
        .args(["-shared", "-nostdlib", "-fPIC", "-o"])
        .arg(&module)
        .arg(stub.join("binding.c"))
        .arg(stub.join("libc.so")));
    let needed = run(Command::new("readelf").arg("-d").arg(&module));
    assert!(needed.contains("Shared library: [libc.so]"), "{needed}");
    home.build(&dir, "musl-module:1");
    let listed = home.stdout(&[
        "--progress",
        "quiet",
        "run",
        "musl-module:1",
        "ls",
        "/app/native",
    ]);
    assert_eq!(listed, "binding.linux-x64-musl.node\n");
    support::auto::serve_and_stop(&home, "musl-module:1", "Hello from node-npm");
}
