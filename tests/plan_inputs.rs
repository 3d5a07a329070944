//! Plan generation from real directories: bad inputs give file:line errors,
//! priorities and merge rules hold, versions resolve or fail.

use std::path::Path;

use kiln::error::code;
use kiln::failure::exit_code;
use kiln::plan::{self, BuildPlan, Options};

fn app(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let p = d.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    d
}

fn make_plan(dir: &Path, env: &[&str], opts: &Options) -> kiln::Result<BuildPlan> {
    let env: Vec<String> = env.iter().map(|s| s.to_string()).collect();
    plan::generate(dir, &env, opts)
}

fn err(dir: &Path, env: &[&str]) -> String {
    format!(
        "{:#}",
        make_plan(dir, env, &Options::default()).unwrap_err()
    )
}

fn cmds(p: &BuildPlan, phase: &str) -> Vec<String> {
    p.phase(phase)
        .and_then(|p| p.cmds.clone())
        .unwrap_or_default()
}

fn apt(p: &BuildPlan, phase: &str) -> Vec<String> {
    p.phase(phase)
        .and_then(|p| p.apt_pkgs.clone())
        .unwrap_or_default()
}

#[test]
fn malformed_manifests_name_file_and_line() {
    let d = app(&[(
        "package.json",
        "{\n  \"name\": \"x\",\n  \"scripts\": { \"start\": }\n}\n",
    )]);
    let e = err(d.path(), &[]);
    assert!(e.contains("package.json:3:"), "{e}");
    let d = app(&[("pyproject.toml", "[project]\nname = \n")]);
    let e = err(d.path(), &[]);
    assert!(e.contains("pyproject.toml:2:"), "{e}");
    let d = app(&[
        ("main.py", ""),
        ("nixpacks.toml", "[start]\ncmd = \"a\"\n[start\n"),
    ]);
    let e = err(d.path(), &[]);
    assert!(e.contains("nixpacks.toml:3:"), "{e}");
    let d = app(&[
        ("main.py", ""),
        ("Procfile", "web: python main.py\nthis is not a process\n"),
    ]);
    let e = err(d.path(), &[]);
    assert!(e.contains("Procfile:2:"), "{e}");
    let d = app(&[("go.mod", "module x\n\ngo\n")]);
    let e = err(d.path(), &[]);
    assert!(e.contains("go.mod:3:"), "{e}");
}

#[test]
fn no_provider_has_its_own_exit_code_and_says_what_was_looked_for() {
    let d = app(&[("README.md", "hi")]);
    let e = make_plan(d.path(), &[], &Options::default()).unwrap_err();
    assert_eq!(exit_code(&e), code::NO_PROVIDER);
    let msg = format!("{e:#}");
    assert!(
        msg.contains("No compatible providers found for auto-build"),
        "{msg}"
    );
    assert!(
        msg.contains("node: package.json") && msg.contains("go: go.mod or main.go"),
        "{msg}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["plan", d.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(code::NO_PROVIDER as i32));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No compatible providers found"));
}

#[test]
fn node_versions_resolve_to_a_suite_or_fail() {
    let d = app(&[
        ("package.json", "{}"),
        ("index.js", ""),
        (".nvmrc", "v18.17.0\n"),
    ]);
    let p = make_plan(d.path(), &[], &Options::default()).unwrap();
    assert_eq!(p.suite.as_deref(), Some("bookworm"));
    let t = &p.toolchains.unwrap()[0];
    assert_eq!(
        (t.version.as_deref(), t.source.as_deref()),
        (Some("18.20.4"), Some(".nvmrc:1"))
    );

    let d = app(&[("package.json", "{}"), ("index.js", ""), (".nvmrc", "23\n")]);
    let e = err(d.path(), &[]);
    assert!(
        e.contains("node 23 (from .nvmrc:1) is not available") && e.contains("20.19.2 (trixie)"),
        "{e}"
    );

    // The env request wins over files, and is the one used (no split brain).
    let d = app(&[
        ("package.json", "{\"engines\":{\"node\":\"18\"}}"),
        ("index.js", ""),
    ]);
    let p = make_plan(d.path(), &["NIXPACKS_NODE_VERSION=24"], &Options::default()).unwrap();
    assert_eq!(p.suite.as_deref(), Some("sid"));
}

#[test]
fn python_version_precedence_is_one_ordered_list() {
    let d = app(&[
        ("requirements.txt", ""),
        ("main.py", ""),
        ("runtime.txt", "python-3.13.1\n"),
    ]);
    let p = make_plan(
        d.path(),
        &["NIXPACKS_PYTHON_VERSION=3.11"],
        &Options::default(),
    )
    .unwrap();
    assert_eq!(p.suite.as_deref(), Some("bookworm"));
    let p = make_plan(d.path(), &[], &Options::default()).unwrap();
    assert_eq!(p.suite.as_deref(), Some("trixie"));
    let d = app(&[("main.py", ""), (".python-version", "3.9\n")]);
    assert!(err(d.path(), &[]).contains("python 3.9 (from .python-version:1) is not available"));
}

#[test]
fn incompatible_toolchains_are_an_error() {
    let d = app(&[
        ("package.json", "{}"),
        ("index.js", ""),
        (".nvmrc", "18"),
        ("requirements.txt", ""),
        (".python-version", "3.13"),
        ("nixpacks.toml", "providers = [\"...\", \"python\"]\n"),
    ]);
    let e = err(d.path(), &[]);
    assert!(e.contains("no Debian suite satisfies"), "{e}");
    let e = err(d.path(), &["KILN_SUITE=trixie"]);
    assert!(e.contains("does not satisfy"), "{e}");
}

#[test]
fn priority_provider_procfile_config_env_cli() {
    let files = [
        ("package.json", "{\"scripts\":{\"start\":\"node a.js\"}}"),
        ("Procfile", "web: node procfile.js\n"),
        ("nixpacks.toml", "[start]\ncmd = \"node config.js\"\n"),
    ];
    let d = app(&files);
    let start = |env: &[&str], opts: &Options| {
        make_plan(d.path(), env, opts)
            .unwrap()
            .start
            .unwrap()
            .cmd
            .unwrap()
    };
    assert_eq!(start(&[], &Options::default()), "node config.js");
    assert_eq!(
        start(&["NIXPACKS_START_CMD=node env.js"], &Options::default()),
        "node env.js"
    );
    assert_eq!(
        start(
            &[
                "NIXPACKS_START_CMD=node env.js",
                "KILN_START_CMD=node kiln.js"
            ],
            &Options::default()
        ),
        "node kiln.js"
    );
    let cli = Options {
        start_cmd: Some("node cli.js".into()),
        ..Options::default()
    };
    assert_eq!(
        start(&["NIXPACKS_START_CMD=node env.js"], &cli),
        "node cli.js"
    );
    std::fs::remove_file(d.path().join("nixpacks.toml")).unwrap();
    assert_eq!(start(&[], &Options::default()), "node procfile.js");
}

#[test]
fn overrides_change_cmds_only_and_extensions_splice_once() {
    let d = app(&[
        ("go.mod", "module x\n\ngo 1.21\n"),
        ("main.go", "package main"),
    ]);
    let p = make_plan(d.path(), &["NIXPACKS_BUILD_CMD=make"], &Options::default()).unwrap();
    assert_eq!(cmds(&p, "build"), vec!["make"]);
    assert_eq!(
        p.phase("build").unwrap().depends_on.clone().unwrap(),
        vec!["install", "setup"]
    );

    let d = app(&[
        ("package.json", "{}"),
        ("index.js", ""),
        (
            "nixpacks.toml",
            "[phases.setup]\nnixPkgs = [\"...\", \"cowsay\"]\n",
        ),
    ]);
    let opts = Options {
        apt: vec!["curl".into(), "cowsay".into()],
        ..Options::default()
    };
    let p = make_plan(d.path(), &["NIXPACKS_PKGS=sl,cowsay"], &opts).unwrap();
    assert_eq!(
        apt(&p, "setup"),
        vec!["nodejs", "npm", "curl", "cowsay", "sl"]
    );
    // Cache dirs work without the matching *_CMD.
    let p = make_plan(
        d.path(),
        &["NIXPACKS_INSTALL_CACHE_DIRS=/root/.x"],
        &Options::default(),
    )
    .unwrap();
    let caches = p
        .phase("install")
        .unwrap()
        .cache_directories
        .clone()
        .unwrap();
    assert!(
        caches.contains(&"/root/.x".to_string()) && caches.contains(&"/root/.npm".to_string()),
        "{caches:?}"
    );
}

#[test]
fn unmappable_nix_package_suggests_apt_pkgs() {
    let d = app(&[("main.py", "")]);
    let opts = Options {
        pkgs: vec!["frobnicator".into()],
        ..Options::default()
    };
    let e = format!("{:#}", make_plan(d.path(), &[], &opts).unwrap_err());
    assert!(e.contains("frobnicator") && e.contains("aptPkgs"), "{e}");
}

/// `-e` is Nixpacks' `--env`: a variable of the build steps and the image
/// (ENV); `--build-env` is build-only (ARG); `KILN_*`/`NIXPACKS_*`
/// configure the plan and reach neither; secrets are names only.
#[test]
fn env_secrets_and_variables_are_kept_apart() {
    let d = app(&[("package.json", "{}"), ("index.js", "")]);
    let opts = Options {
        secrets: vec!["NPM_TOKEN".into()],
        build_env: vec!["BUILD_ONLY=yes".into()],
        ..Options::default()
    };
    let p = make_plan(
        d.path(),
        &["NODE_ENV=test", "FEATURE=on", "NIXPACKS_NO_CACHE=1"],
        &opts,
    )
    .unwrap();
    let vars = p.variables.clone().unwrap();
    assert_eq!(vars["NODE_ENV"], "test");
    assert_eq!(vars["FEATURE"], "on");
    assert!(!vars.contains_key("NIXPACKS_NO_CACHE") && !vars.contains_key("BUILD_ONLY"));
    let build = p.build_variables.clone().unwrap();
    assert_eq!(build["BUILD_ONLY"], "yes");
    assert!(!build.contains_key("FEATURE"));
    assert_eq!(p.secrets.clone().unwrap(), vec!["NPM_TOKEN"]);
    let df = kiln::plan::dockerfile::generate(&p, &Default::default())
        .unwrap()
        .dockerfile;
    assert!(df.contains("--mount=type=secret,id=NPM_TOKEN"), "{df}");
    assert!(
        df.contains("ENV FEATURE=\"on\"") && df.contains("ARG BUILD_ONLY=\"yes\""),
        "{df}"
    );
    assert!(!df.contains("ENV BUILD_ONLY"), "{df}");
}

/// `kiln build --plan FILE`: a plan `kiln plan` wrote reads back as the
/// same plan; a Nixpacks plan gets its Nix names mapped and loses
/// Nixpacks' build image; CLI flags still rank above the file.
#[test]
fn plan_files_read_back() {
    let d = app(&[
        ("package.json", r#"{"name":"a","version":"1.0.0"}"#),
        ("index.js", ""),
    ]);
    let written = make_plan(d.path(), &["GREETING=hi"], &Options::default()).unwrap();
    let files = tempfile::tempdir().unwrap();
    let json = files.path().join("plan.json");
    std::fs::write(&json, serde_json::to_string_pretty(&written).unwrap()).unwrap();
    let toml_file = files.path().join("plan.toml");
    std::fs::write(&toml_file, toml::to_string_pretty(&written).unwrap()).unwrap();
    for f in [&json, &toml_file] {
        let back = plan::from_file(f, &[], &Options::default()).unwrap();
        assert_eq!(back, written, "{}", f.display());
    }
    let over = plan::from_file(
        &json,
        &["EXTRA=1".to_string()],
        &Options {
            start_cmd: Some("node other.js".into()),
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(over.start_cmd(), Some("node other.js"));
    assert_eq!(over.variables.unwrap()["EXTRA"], "1");

    let nix = files.path().join("nixpacks.json");
    std::fs::write(
        &nix,
        r#"{
  "providers": [],
  "buildImage": "ghcr.io/railwayapp/nixpacks:ubuntu-1716249803",
  "variables": { "NIXPACKS_METADATA": "node", "NODE_ENV": "production" },
  "phases": { "setup": { "nixPkgs": ["nodejs_20"] } },
  "start": { "cmd": "node index.js" }
}"#,
    )
    .unwrap();
    let p = plan::from_file(&nix, &[], &Options::default()).unwrap();
    assert_eq!(p.build_image, None);
    let vars = p.variables.clone().unwrap();
    assert!(vars.contains_key("NODE_ENV") && !vars.contains_key("NIXPACKS_METADATA"));
    let setup = p.phase("setup").unwrap().apt_pkgs.clone().unwrap();
    assert!(setup.contains(&"nodejs".to_string()), "{setup:?}");
    assert!(p.suite.is_some());
}

/// A plan file with a bad field: the error names the file, the line and
/// the key; a wrong value type names the line's text.
#[test]
fn plan_file_errors_name_the_file_and_field() {
    let files = tempfile::tempdir().unwrap();
    let f = files.path().join("p.json");
    std::fs::write(&f, "{\n  \"start\": {\n    \"comand\": \"x\"\n  }\n}\n").unwrap();
    let e = format!(
        "{:#}",
        plan::from_file(&f, &[], &Options::default()).unwrap_err()
    );
    assert!(
        e.contains("p.json:3: unknown key `start.comand`: did you mean `cmd`?"),
        "{e}"
    );
    std::fs::write(&f, "{\n  \"start\": {\n    \"cmd\": 5\n  }\n}\n").unwrap();
    let e = format!(
        "{:#}",
        plan::from_file(&f, &[], &Options::default()).unwrap_err()
    );
    assert!(
        e.contains("p.json:3:") && e.contains(r#"`"cmd": 5`"#),
        "{e}"
    );
    let t = files.path().join("p.toml");
    std::fs::write(&t, "[start]\ncmd = 5\n").unwrap();
    let e = format!(
        "{:#}",
        plan::from_file(&t, &[], &Options::default()).unwrap_err()
    );
    assert!(e.contains("p.toml:2:") && e.contains("cmd = 5"), "{e}");
    let e = format!(
        "{:#}",
        plan::from_file(&files.path().join("none.json"), &[], &Options::default()).unwrap_err()
    );
    assert!(e.contains("--plan") && e.contains("none.json"), "{e}");
}

#[test]
fn kiln_toml_rejects_unknown_keys() {
    let d = app(&[
        ("main.py", ""),
        ("kiln.toml", "[start]\ncmd = \"x\"\nusr = \"app\"\n"),
    ]);
    let e = err(d.path(), &[]);
    assert!(
        e.contains("kiln.toml:3: unknown key `start.usr`: did you mean `user`?"),
        "{e}"
    );
}

#[test]
fn config_file_from_env_must_exist() {
    let d = app(&[("main.py", "")]);
    let e = err(d.path(), &["NIXPACKS_CONFIG_FILE=ci/nixpacks.json"]);
    assert!(e.contains("ci/nixpacks.json"), "{e}");
    let d = app(&[
        ("main.py", ""),
        ("ci/x.json", "{\"start\":{\"cmd\":\"python x.py\"}}"),
    ]);
    let p = make_plan(
        d.path(),
        &["NIXPACKS_CONFIG_FILE=ci/x.json"],
        &Options::default(),
    )
    .unwrap();
    assert_eq!(p.start.unwrap().cmd.unwrap(), "python x.py");
}

#[test]
fn phase_cycles_are_errors() {
    let d = app(&[
        ("main.py", ""),
        (
            "nixpacks.toml",
            "[phases.a]\ncmds=[\"x\"]\ndependsOn=[\"b\"]\n[phases.b]\ncmds=[\"y\"]\ndependsOn=[\"a\"]\n",
        ),
    ]);
    assert!(err(d.path(), &[]).contains("cycle"));
}

fn kiln(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["--progress", "quiet"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn cli_detect_info_plan_and_dockerfile() {
    let (rc, out, _) = kiln(&["detect", &example("node-npm"), "--explain"]);
    assert_eq!((rc, out.as_str()), (0, "node\tpackage.json\n"));

    let (rc, out, err) = kiln(&["info", &example("python-flask")]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.starts_with("providers  python\n"), "{out}");
    assert!(
        out.contains("start        │ gunicorn --bind 0.0.0.0:${PORT:-8000} app:app"),
        "{out}"
    );

    // JSON and TOML print the same plan.
    let (_, json, _) = kiln(&["plan", &example("go-mod")]);
    let (_, toml_text, _) = kiln(&["plan", &example("go-mod"), "-f", "toml"]);
    let a: BuildPlan = serde_json::from_str(&json).unwrap();
    let b: BuildPlan = toml::from_str(&toml_text).unwrap();
    assert_eq!(a, b);
    assert_eq!(cmds(&a, "build"), vec!["go build -o out"]);

    // CLI overrides and secrets.
    let (rc, json, err) = kiln(&[
        "plan",
        &example("node-npm"),
        "-b",
        "npm run compile",
        "--apt",
        "curl",
        "-e",
        "TOKEN_HINT=x",
        "--secret",
        "id=NPM_TOKEN,src=/dev/null",
    ]);
    assert_eq!(rc, 0, "{err}");
    let p: BuildPlan = serde_json::from_str(&json).unwrap();
    assert_eq!(cmds(&p, "build"), vec!["npm run compile"]);
    assert!(apt(&p, "setup").contains(&"curl".to_string()));
    assert_eq!(p.secrets.unwrap(), vec!["NPM_TOKEN"]);
    assert!(!json.contains("/dev/null"));

    let (rc, df, err) = kiln(&[
        "dockerfile",
        &example("go-mod"),
        "-o",
        "-",
        "--base-image",
        "registry.local/debian:trixie",
    ]);
    assert_eq!(rc, 0, "{err}");
    assert!(
        df.contains("FROM registry.local/debian:trixie AS build"),
        "{df}"
    );
    assert!(df.contains("RUN --mount=type=cache,target=/root/.cache/go-build --mount=type=cache,target=/root/go/pkg/mod go mod download"), "{df}");
    assert!(
        df.contains("COPY --from=build /app/out /app/out")
            && df.trim_end().ends_with("CMD [\"./out\"]"),
        "{df}"
    );
}

#[test]
fn node_dev_dependencies_are_pruned_unless_the_start_needs_them() {
    let pkg = |start: &str| {
        format!(
            r#"{{"scripts": {{"build": "tsc", "start": "{start}"}},
               "dependencies": {{"express": "4"}},
               "devDependencies": {{"typescript": "5", "@types/node": "20", "ts-node": "10"}}}}"#
        )
    };
    let prune =
        |d: &Path, env: &[&str]| cmds(&make_plan(d, env, &Options::default()).unwrap(), "prune");
    let d = app(&[
        ("package.json", &pkg("node dist/index.js")),
        ("package-lock.json", "{}"),
    ]);
    assert_eq!(
        prune(d.path(), &[]),
        ["NPM_CONFIG_PRODUCTION=true npm prune --omit=dev --no-audit --no-fund"]
    );
    let p = make_plan(d.path(), &[], &Options::default()).unwrap();
    assert_eq!(
        p.phase("prune").unwrap().depends_on.as_deref(),
        Some(&["build".to_string()][..])
    );
    // Opt-out, a custom command.
    assert!(prune(d.path(), &["KILN_NODE_PRUNE_DEPS=false"]).is_empty());
    assert_eq!(
        prune(d.path(), &["KILN_NODE_PRUNE_CMD=npm prune --production"]),
        ["npm prune --production"]
    );
    // A start that runs a dev dependency keeps them: the start script, or a
    // start command given outside package.json.
    let d = app(&[("package.json", &pkg("ts-node src/index.ts"))]);
    assert!(prune(d.path(), &[]).is_empty());
    let d = app(&[
        ("package.json", &pkg("node dist/index.js")),
        ("Procfile", "web: npx ts-node src/index.ts\n"),
    ]);
    assert!(prune(d.path(), &[]).is_empty());
    let d = app(&[("package.json", &pkg("node dist/index.js"))]);
    assert!(
        prune(
            d.path(),
            &["NIXPACKS_START_CMD=node -r ts-node/register src/index.ts"]
        )
        .is_empty()
    );
    // Package managers.
    let d = app(&[
        ("package.json", &pkg("node dist/index.js")),
        ("pnpm-lock.yaml", ""),
    ]);
    assert_eq!(prune(d.path(), &[]), ["pnpm prune --prod"]);
    let d = app(&[
        ("package.json", &pkg("node dist/index.js")),
        ("yarn.lock", ""),
    ]);
    assert_eq!(
        prune(d.path(), &[]),
        ["yarn install --production --frozen-lockfile --ignore-scripts --prefer-offline"]
    );
    // Nothing to prune.
    let d = app(&[("package.json", r#"{"scripts": {"start": "node index.js"}}"#)]);
    assert!(prune(d.path(), &[]).is_empty());
}

/// With no build command, nothing needs the dev dependencies after the
/// install: npm installs production ones only and there is no prune
/// (which, after the source copy, reran on every one-line change).
#[test]
fn node_without_a_build_installs_production_dependencies_only() {
    let pkg = |scripts: &str| {
        format!(
            r#"{{"scripts": {{"start": "node index.js"{scripts}}},
               "dependencies": {{"express": "4"}},
               "devDependencies": {{"nodemon": "3"}}}}"#
        )
    };
    let plan = |files: &[(&str, &str)], env: &[&str]| {
        let d = app(files);
        let p = make_plan(d.path(), env, &Options::default()).unwrap();
        (cmds(&p, "install"), cmds(&p, "prune"))
    };
    const CI_PROD: &str = "NPM_CONFIG_PRODUCTION=true npm ci --omit=dev --no-audit --no-fund";
    const PRUNE: &str = "NPM_CONFIG_PRODUCTION=true npm prune --omit=dev --no-audit --no-fund";
    let lock = ("package-lock.json", "{}");
    let (install, prune) = plan(&[("package.json", &pkg("")), lock], &[]);
    assert_eq!(install, [CI_PROD]);
    assert!(prune.is_empty(), "{prune:?}");

    // Anything that could use a dev dependency after the install keeps the
    // full install and the prune: a build script, a build command given
    // outside package.json, a lifecycle script of the package.
    let (install, prune) = plan(&[("package.json", &pkg(r#", "build": "tsc""#)), lock], &[]);
    assert_eq!(
        (install, prune),
        (vec!["npm ci".into()], vec![PRUNE.to_string()])
    );
    let (install, prune) = plan(
        &[("package.json", &pkg("")), lock],
        &["NIXPACKS_BUILD_CMD=npx nodemon --version"],
    );
    assert_eq!(
        (install, prune),
        (vec!["npm ci".into()], vec![PRUNE.to_string()])
    );
    let (install, prune) = plan(
        &[("package.json", &pkg(r#", "prepare": "husky""#)), lock],
        &[],
    );
    assert_eq!(
        (install, prune),
        (vec!["npm ci".into()], vec![PRUNE.to_string()])
    );
    // The user's install command, prune command or opt-out stay as given.
    let (install, prune) = plan(
        &[("package.json", &pkg("")), lock],
        &["NIXPACKS_INSTALL_CMD=npm ci --foreground-scripts"],
    );
    assert_eq!(install, ["npm ci --foreground-scripts"]);
    assert_eq!(prune, [PRUNE]);
    let (install, prune) = plan(
        &[("package.json", &pkg("")), lock],
        &["KILN_NODE_PRUNE_DEPS=false"],
    );
    assert_eq!((install, prune), (vec!["npm ci".into()], vec![]));
    // A start that runs a dev dependency keeps them all.
    let (install, prune) = plan(
        &[
            ("package.json", &pkg("")),
            lock,
            ("Procfile", "web: nodemon index.js\n"),
        ],
        &[],
    );
    assert_eq!((install, prune), (vec!["npm ci".into()], vec![]));
}

fn runtime(p: &BuildPlan) -> Vec<String> {
    p.start
        .as_ref()
        .and_then(|s| s.apt_pkgs.clone())
        .unwrap_or_default()
}

/// Packages the user asks for, by any channel, are run-time needs too:
/// they reach the runtime stage (Nix names as mapped for the runtime),
/// unless listed in `buildOnlyPkgs` / `KILN_BUILD_ONLY_PKGS`.
#[test]
fn requested_packages_reach_the_runtime_stage() {
    let d = app(&[
        ("main.py", ""),
        (
            "nixpacks.toml",
            "[phases.setup]\naptPkgs = [\"...\", \"cowsay\"]\nnixPkgs = [\"...\", \"sl\"]\n",
        ),
    ]);
    let opts = Options {
        apt: vec!["curl".into()],
        pkgs: vec!["nodejs_20".into()],
        ..Options::default()
    };
    let p = make_plan(
        d.path(),
        &["NIXPACKS_APT_PKGS=fortune-mod", "NIXPACKS_PKGS=ffmpeg"],
        &opts,
    )
    .unwrap();
    let rt = runtime(&p);
    for want in [
        "python3",
        "cowsay",
        "sl",
        "curl",
        "nodejs",
        "fortune-mod",
        "ffmpeg",
    ] {
        assert!(rt.iter().any(|r| r == want), "{want} missing: {rt:?}");
    }
    // nodejs_20 is npm too in the build, not at run time.
    assert!(!rt.iter().any(|r| r == "npm"), "{rt:?}");
    assert!(apt(&p, "setup").iter().any(|a| a == "npm"));

    let p = make_plan(
        d.path(),
        &["KILN_BUILD_ONLY_PKGS=cowsay,ffmpeg"],
        &Options::default(),
    )
    .unwrap();
    let rt = runtime(&p);
    assert!(rt.iter().any(|r| r == "sl"), "{rt:?}");
    assert!(!rt.iter().any(|r| r == "cowsay" || r == "ffmpeg"), "{rt:?}");
    assert!(apt(&p, "setup").iter().any(|a| a == "cowsay"));

    let d = app(&[
        ("main.py", ""),
        (
            "kiln.toml",
            "buildOnlyPkgs = [\"libpq-dev\"]\n[phases.setup]\naptPkgs = [\"...\", \"libpq-dev\", \"libpq5\"]\n",
        ),
    ]);
    let rt = runtime(&make_plan(d.path(), &[], &Options::default()).unwrap());
    assert!(rt.iter().any(|r| r == "libpq5"), "{rt:?}");
    assert!(!rt.iter().any(|r| r == "libpq-dev"), "{rt:?}");
}

/// A static Go binary runs from scratch, unless the user asked for a
/// package the app needs at run time: then the runtime is Debian.
#[test]
fn requested_packages_give_go_a_debian_runtime() {
    let d = app(&[
        ("go.mod", "module example.com/app\n\ngo 1.22\n"),
        ("main.go", "package main\nfunc main() {}\n"),
    ]);
    let p = make_plan(d.path(), &[], &Options::default()).unwrap();
    assert!(kiln::plan::recipe::is_static(&p));
    let p = make_plan(d.path(), &["KILN_APT_PKGS=ffmpeg"], &Options::default()).unwrap();
    assert!(!kiln::plan::recipe::is_static(&p));
}

/// The static runtime is the Go provider's decision (`static_runtime`):
/// `CGO_ENABLED=0` by default, a Debian runtime with cgo, and never when a
/// second provider or a runtime package joins.
#[test]
fn go_static_runtime_follows_the_provider_hook() {
    let go = app(&[
        ("go.mod", "module example.com/app\n\ngo 1.19\n"),
        ("main.go", "package main\nfunc main() {}\n"),
    ]);
    let plain = make_plan(go.path(), &[], &Options::default()).unwrap();
    assert!(kiln::plan::recipe::is_static(&plain));
    let cgo = make_plan(go.path(), &["CGO_ENABLED=1"], &Options::default()).unwrap();
    assert!(!kiln::plan::recipe::is_static(&cgo));
    let pkgs = make_plan(
        go.path(),
        &["NIXPACKS_APT_PKGS=ffmpeg"],
        &Options::default(),
    )
    .unwrap();
    assert!(!kiln::plan::recipe::is_static(&pkgs));
    let mut two = plain.clone();
    two.providers = Some(vec!["go".into(), "node".into()]);
    assert!(!kiln::plan::recipe::is_static(&two));
}
