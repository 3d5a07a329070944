//! Node.js (`package.json`): package manager, version, install/build/start
//! as Nixpacks picks them, with its defects fixed (dependency checks on
//! parsed names in both dependency maps, install inputs limited to
//! manifests and lockfiles, a version that resolves or fails, the Yarn
//! Berry cache), plus framework starts (Next.js standalone, static SPAs
//! served by Caddy, Nuxt/SvelteKit/Remix node servers).

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Cross, CrossBuild, Provider, VersionReq, env_version, existing, tool_versions, version_file};
use crate::plan::context::{Ctx, jstr, locate};
use crate::plan::model::{BuildPlan, Phase, StartPhase};
use crate::plan::native::{self, Ecosystem};
use crate::plan::versions::{Kind, node_alias};

pub struct Node;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pm {
    Npm,
    Pnpm,
    Yarn,
    YarnBerry,
    Bun,
}

impl Pm {
    pub fn cmd(self) -> &'static str {
        match self {
            Pm::Npm => "npm",
            Pm::Pnpm => "pnpm",
            Pm::Yarn | Pm::YarnBerry => "yarn",
            Pm::Bun => "bun",
        }
    }

    fn dlx(self) -> &'static str {
        match self {
            Pm::Pnpm => "pnpx",
            Pm::Yarn | Pm::YarnBerry => "yarn",
            _ => "npx",
        }
    }
}

/// What the provider reads from the app, parsed once.
pub struct App {
    pub pkg: Value,
    pub pm: Pm,
    pub deps: BTreeSet<String>,
}

impl App {
    pub fn load(ctx: &Ctx) -> crate::Result<App> {
        let pkg = ctx.json("package.json")?.unwrap_or(Value::Null);
        let mut deps = BTreeSet::new();
        for k in ["dependencies", "devDependencies"] {
            if let Some(m) = pkg.get(k).and_then(Value::as_object) {
                deps.extend(m.keys().cloned());
            }
        }
        let pm = package_manager(ctx, &pkg);
        Ok(App { pkg, pm, deps })
    }

    pub fn has(&self, dep: &str) -> bool {
        self.deps.contains(dep)
    }

    pub fn script(&self, name: &str) -> Option<&str> {
        jstr(&self.pkg, &format!("scripts.{name}"))
    }
}

fn package_manager(ctx: &Ctx, pkg: &Value) -> Pm {
    let declared = jstr(pkg, "packageManager").unwrap_or("");
    let berry = ctx.is_file(".yarnrc.yml")
        || declared
            .strip_prefix("yarn@")
            .is_some_and(|v| !v.starts_with('1'));
    match declared.split('@').next().unwrap_or("") {
        "pnpm" => return Pm::Pnpm,
        "yarn" if berry => return Pm::YarnBerry,
        "yarn" => return Pm::Yarn,
        "bun" => return Pm::Bun,
        "npm" => return Pm::Npm,
        _ => {}
    }
    if ctx.is_file("pnpm-lock.yaml") {
        Pm::Pnpm
    } else if ctx.is_file("yarn.lock") {
        if berry { Pm::YarnBerry } else { Pm::Yarn }
    } else if ctx.is_file("bun.lockb") || ctx.is_file("bun.lock") {
        Pm::Bun
    } else {
        Pm::Npm
    }
}

/// The Node version request, first source wins.
pub fn version(ctx: &Ctx, app: &App) -> Option<VersionReq> {
    if let Some(v) = env_version(ctx, "NODE_VERSION") {
        return Some(v);
    }
    if let Some(r) = jstr(&app.pkg, "engines.node").filter(|r| !r.trim().is_empty()) {
        let src = ctx
            .read("package.json")
            .map(|t| locate(&t, "package.json", "\"node\""))
            .unwrap_or_else(|| "package.json".into());
        return Some(VersionReq::new(
            r,
            format!("{src} (engines.node)"),
            Kind::Range,
        ));
    }
    for f in [".nvmrc", ".node-version"] {
        if let Some(mut v) = version_file(ctx, f) {
            if let Some(range) = node_alias(&v.text) {
                v.text = range.to_string();
                v.kind = Kind::Range;
            } else {
                v.text = v.text.trim_start_matches(['v', 'V']).to_string();
            }
            return Some(v);
        }
    }
    tool_versions(ctx, "nodejs").or_else(|| tool_versions(ctx, "node"))
}

/// `name@version` of the package manager to install globally with npm.
fn pm_package(ctx: &Ctx, app: &App) -> Option<String> {
    let declared =
        jstr(&app.pkg, "packageManager").map(|d| d.split('+').next().unwrap_or(d).to_string());
    let from_decl = |name: &str| {
        declared
            .as_deref()
            .and_then(|d| d.strip_prefix(&format!("{name}@")))
            .map(|v| v.to_string())
    };
    match app.pm {
        Pm::Npm => None,
        Pm::Pnpm => {
            let v = from_decl("pnpm").unwrap_or_else(|| {
                let lock = ctx.read("pnpm-lock.yaml").unwrap_or_default();
                let head = lock.lines().next().unwrap_or("");
                if head.contains("5.3") {
                    "6.35.1"
                } else if head.contains("5.4") {
                    "7.33.7"
                } else if head.contains("6.") {
                    "8.15.9"
                } else {
                    "9.15.9"
                }
                .to_string()
            });
            Some(format!("pnpm@{v}"))
        }
        Pm::Yarn => Some(format!(
            "yarn@{}",
            from_decl("yarn").unwrap_or_else(|| "1.22.22".into())
        )),
        Pm::YarnBerry => Some(format!(
            "@yarnpkg/cli-dist@{}",
            from_decl("yarn").unwrap_or_else(|| "4.9.2".into())
        )),
        Pm::Bun => Some(format!(
            "bun@{}",
            from_decl("bun").unwrap_or_else(|| "1.2.19".into())
        )),
    }
}

/// The `setup` and `install` phases (also embedded by PHP and Ruby).
pub fn setup_and_install(ctx: &Ctx, app: &App) -> (Phase, Phase) {
    let mut setup = Phase::new("setup").apt(&["nodejs", "npm"]);
    if let Some(p) = pm_package(ctx, app) {
        setup = setup.cmd(format!("npm install -g {p}"));
    }
    // Native addons: compilers and -dev packages (the runtime libraries
    // are added to the start phase by the provider).
    for n in native::lookup(Ecosystem::Node, |d| app.has(d)) {
        setup = setup.apt(n.build);
    }

    let install_cmd = match app.pm {
        Pm::Pnpm => "pnpm i --frozen-lockfile",
        Pm::YarnBerry => "yarn install --immutable",
        Pm::Yarn => "yarn install --frozen-lockfile",
        Pm::Npm if ctx.is_file("package-lock.json") => NPM_CI,
        Pm::Bun if ctx.is_file("bun.lockb") || ctx.is_file("bun.lock") => "bun i --no-save",
        Pm::Npm | Pm::Bun => "npm i",
    };
    let cache = match app.pm {
        Pm::Npm => "/root/.npm",
        Pm::Pnpm => "/root/.local/share/pnpm/store",
        Pm::Yarn => "/usr/local/share/.cache/yarn/v6",
        Pm::YarnBerry => "/root/.yarn/berry/cache",
        Pm::Bun => "/root/.bun/install/cache",
    };
    let mut files = existing(
        ctx,
        &[
            "package.json",
            "package-lock.json",
            "npm-shrinkwrap.json",
            "yarn.lock",
            "pnpm-lock.yaml",
            "pnpm-workspace.yaml",
            "bun.lockb",
            "bun.lock",
            ".npmrc",
            ".yarnrc",
            ".yarnrc.yml",
            ".yarn/releases",
            ".yarn/plugins",
            ".yarn/patches",
            ".pnpmfile.cjs",
            "patches",
            "prisma",
        ],
    );
    // Workspaces need every member's manifest to install.
    if app.pkg.get("workspaces").is_some() || ctx.is_file("pnpm-workspace.yaml") {
        for f in ctx.files() {
            if f.ends_with("/package.json") && !files.contains(f) {
                files.push(f.clone());
            }
        }
    }
    let mut install = Phase::new("install")
        .cmd(install_cmd)
        .cache(&[cache])
        .path("/app/node_modules/.bin");
    // A native addon of the app itself (`binding.gyp` at the root) is
    // compiled by the install (node-gyp), from sources only the whole app
    // holds.
    if !ctx.is_file("binding.gyp") {
        install = install.files(files);
    }
    if app.has("cypress") {
        install = install.cache(&["/root/.cache/Cypress"]);
    }
    (setup, install)
}

struct Spa {
    out_dir: String,
}

fn vite_out_dir(ctx: &Ctx, app: &App) -> String {
    for f in [
        "vite.config.js",
        "vite.config.ts",
        "vite.config.mjs",
        "vite.config.mts",
    ] {
        if let Some(t) = ctx.read(f)
            && let Some(i) = t.find("outDir")
        {
            let rest = &t[i + 6..];
            let q: Vec<&str> = rest.splitn(3, ['"', '\'', '`']).collect();
            if q.len() == 3 && q[0].trim_start().starts_with(':') {
                return q[1].to_string();
            }
        }
    }
    if let Some(b) = app.script("build")
        && let Some(i) = b.find("--outDir")
        && let Some(d) = b[i + 8..].split_whitespace().next()
    {
        return d.trim_start_matches('=').to_string();
    }
    "dist".into()
}

fn spa(ctx: &Ctx, app: &App) -> Option<Spa> {
    let caddy_off = ctx
        .env
        .opt("SPA_CADDY")
        .is_some_and(|v| v.eq_ignore_ascii_case("false") || v == "0");
    if caddy_off {
        return None;
    }
    if let Some(d) = ctx.env.opt("SPA_OUT_DIR") {
        return Some(Spa { out_dir: d });
    }
    let vite = app.has("vite")
        || [
            "vite.config.js",
            "vite.config.ts",
            "vite.config.mjs",
            "vite.config.mts",
        ]
        .iter()
        .any(|f| ctx.is_file(f))
        || app
            .script("build")
            .is_some_and(|b| b.contains("vite build"));
    let allow =
        (app.has("react") && !app.has("@remix-run/react") && !app.has("@react-router/node"))
            || app.has("vue")
            || (app.has("svelte") && !app.has("@sveltejs/kit"))
            || app.has("preact")
            || app.has("lit")
            || app.has("solid-js")
            || app.has("@builder.io/qwik");
    if vite && allow && !app.has("next") && !app.has("nuxt") {
        return Some(Spa {
            out_dir: vite_out_dir(ctx, app),
        });
    }
    if app.has("react-scripts") {
        return Some(Spa {
            out_dir: "build".into(),
        });
    }
    if app.has("astro")
        && !app
            .deps
            .iter()
            .any(|d| d.starts_with("@astrojs/") && d.ends_with("node"))
    {
        let server = ["astro.config.mjs", "astro.config.ts", "astro.config.js"]
            .iter()
            .any(|f| ctx.contains(f, "output: 'server'") || ctx.contains(f, "output: \"server\""));
        if !server {
            return Some(Spa {
                out_dir: "dist".into(),
            });
        }
    }
    None
}

fn next_standalone(ctx: &Ctx) -> bool {
    [
        "next.config.js",
        "next.config.mjs",
        "next.config.ts",
        "next.config.cjs",
    ]
    .iter()
    .any(|f| ctx.read(f).is_some_and(|t| t.contains("standalone")))
}

fn start_cmd(ctx: &Ctx, app: &App) -> Option<String> {
    let pm = app.pm;
    if let Some(s) = app.script("start") {
        // `"start": "node server.js"` runs as itself: the runtime image
        // needs no package manager (npm alone is ~400 Debian packages) and
        // node is PID 1's direct process. Anything else goes through the
        // package manager, which also runs pre/post scripts.
        let plain = s.starts_with("node ")
            && !s.contains([
                '$', '&', '|', ';', '<', '>', '(', ')', '`', '*', '"', '\'', '\\',
            ])
            && app.script("prestart").is_none()
            && app.script("poststart").is_none();
        if plain {
            return Some(s.trim().to_string());
        }
        return Some(format!("{} run start", pm.cmd()));
    }
    if app.has("nuxt") {
        return Some("node .output/server/index.mjs".into());
    }
    if app.has("@sveltejs/adapter-node") {
        return Some("node build".into());
    }
    if app.has("@remix-run/serve") {
        return Some("npx remix-serve ./build/server/index.js".into());
    }
    let runner = if pm == Pm::Bun { "bun" } else { "node" };
    if let Some(main) = jstr(&app.pkg, "main").filter(|m| ctx.is_file(m)) {
        return Some(format!("{runner} {main}"));
    }
    if ctx.is_file("index.js") {
        return Some(format!("{runner} index.js"));
    }
    if pm == Pm::Bun && ctx.is_file("index.ts") {
        return Some("bun index.ts".into());
    }
    None
}

/// moon: `KILN_/NIXPACKS_MOON_APP_NAME` plus `.moon/workspace.yml`.
fn moon(ctx: &Ctx) -> Option<String> {
    ctx.env
        .opt("MOON_APP_NAME")
        .filter(|_| ctx.is_file(".moon/workspace.yml"))
}

/// Nx: the app from the env or `nx.json` `defaultProject`, with its project.json.
fn nx(ctx: &Ctx) -> crate::Result<Option<(String, Value)>> {
    let Some(nx) = ctx.json("nx.json")? else {
        return Ok(None);
    };
    let app = ctx
        .env
        .opt("NX_APP_NAME")
        .or_else(|| jstr(&nx, "defaultProject").map(String::from));
    let Some(app) = app else { return Ok(None) };
    let rel = format!("apps/{app}/project.json");
    Ok(ctx.json(&rel)?.map(|p| (app, p)))
}

fn nx_start(app: &str, project: &Value, dlx: &str) -> String {
    let targets = project.get("targets");
    if let Some(start) = targets.and_then(|t| t.get("start")) {
        let prod = start
            .get("configurations")
            .and_then(|c| c.get("production"))
            .is_some();
        return format!(
            "{dlx} nx run {app}:start{}",
            if prod { ":production" } else { "" }
        );
    }
    let build = targets.and_then(|t| t.get("build"));
    let out = build
        .and_then(|b| jstr(b, "options.outputPath"))
        .map(String::from)
        .unwrap_or_else(|| format!("dist/apps/{app}"));
    let executor = build.and_then(|b| jstr(b, "executor")).unwrap_or("");
    if executor == "@nx/next:build" || executor == "@nrwl/next:build" {
        return format!("cd {out} && npm run start");
    }
    match build.and_then(|b| jstr(b, "options.main")) {
        Some(main) => {
            let stem = main.rsplit('/').next().unwrap_or(main);
            let stem = stem.rsplit_once('.').map_or(stem, |(s, _)| s);
            format!("node {out}/{stem}.js")
        }
        None => format!("node {out}/index.js"),
    }
}

/// Turbo's start for a workspace app, by package manager.
fn turbo_start(ctx: &Ctx, app: &App) -> Option<String> {
    let name = ctx.env.opt("TURBO_APP_NAME")?;
    let found = ctx
        .files()
        .iter()
        .filter(|f| f.ends_with("/package.json"))
        .any(|f| {
            ctx.json(f)
                .ok()
                .flatten()
                .is_some_and(|p| jstr(&p, "name") == Some(name.as_str()))
        });
    if !found {
        return None;
    }
    Some(match app.pm {
        Pm::Pnpm => format!("pnpm --filter {name} run start"),
        Pm::Yarn | Pm::YarnBerry => format!("yarn workspace {name} run start"),
        _ => format!("npm --workspace {name} run start"),
    })
}

fn turbo_task(ctx: &Ctx, task: &str) -> bool {
    ctx.json("turbo.json").ok().flatten().is_some_and(|t| {
        ["pipeline", "tasks"]
            .iter()
            .any(|k| t.get(k).and_then(|p| p.get(task)).is_some())
    })
}

fn turbo_build(ctx: &Ctx) -> bool {
    ctx.json("turbo.json").ok().flatten().is_some_and(|t| {
        ["pipeline", "tasks"]
            .iter()
            .any(|k| t.get(k).and_then(|p| p.get("build")).is_some())
    })
}

impl Provider for Node {
    fn name(&self) -> &'static str {
        "node"
    }

    fn looks_for(&self) -> &'static str {
        "package.json"
    }

    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(ctx
            .is_file("package.json")
            .then(|| "package.json".to_string()))
    }

    /// Dev dependencies are pruned unless the final start command needs
    /// one; a `prune` phase the user wrote stays as written.
    fn finish(&self, plan: &mut BuildPlan, user: &BuildPlan, ctx: &Ctx) -> crate::Result<()> {
        if user.phase("prune").is_some() {
            return Ok(());
        }
        keep_dev_deps_for(plan, ctx)?;
        install_production_only(plan, ctx)
    }

    /// npm's install of pure-JavaScript dependencies writes the same
    /// `node_modules` on any machine, and the build (`npm run build`) then
    /// makes JavaScript: both run natively, and the target's runtime
    /// (its `nodejs`) runs the result. Debian's npm (9.2) has no
    /// `--cpu`/`--os` to pick another platform's optional packages, so
    /// only a lockfile without them qualifies: a package for some CPUs
    /// only (esbuild's, swc's binaries), one with an install script
    /// (`hasInstallScript`: node-gyp builds, downloads of binaries), the
    /// app's own install scripts or `binding.gyp` build on the target,
    /// emulated, with the package named.
    fn cross_build(
        &self,
        plan: &BuildPlan,
        _target: &crate::platform::Platform,
        read: &dyn Fn(&str) -> Option<String>,
    ) -> Cross {
        let npm_ci = matches!(
            plan.phase("install").and_then(|p| p.cmds.as_deref()),
            Some([cmd]) if cmd.contains("npm ci")
        );
        let setup_runs = plan
            .phase("setup")
            .is_some_and(|p| p.cmds.iter().flatten().next().is_some());
        let start = plan.start.clone().unwrap_or_default();
        let only_app = crate::plan::recipe::runtime_copies(&start, false)
            .iter()
            .all(|c| c == "/app" || c.starts_with("/app/"));
        let Some(lock) = read("package-lock.json").filter(|_| npm_ci && !setup_runs && only_app)
        else {
            return Cross::No;
        };
        if read("binding.gyp").is_some() {
            return Cross::Emulate(
                "binding.gyp: the app's native addon is compiled by its install".into(),
            );
        }
        let pkg: Value = read("package.json")
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        for script in ["preinstall", "install", "postinstall"] {
            if pkg.get("scripts").and_then(|s| s.get(script)).is_some() {
                return Cross::Emulate(format!("package.json runs a `{script}` script"));
            }
        }
        let Ok(lock) = serde_json::from_str::<Value>(&lock) else {
            return Cross::No;
        };
        // Lockfile v2/v3's flat list; v1 (npm 6) has none: not read.
        let Some(packages) = lock.get("packages").and_then(Value::as_object) else {
            return Cross::No;
        };
        for (path, entry) in packages.iter().filter(|(p, _)| !p.is_empty()) {
            let name = path.rsplit("node_modules/").next().unwrap_or(path);
            if entry.get("hasInstallScript") == Some(&Value::Bool(true)) {
                return Cross::Emulate(format!(
                    "package-lock.json: {name} runs an install script"
                ));
            }
            if let Some(cpu) = entry.get("cpu") {
                return Cross::Emulate(format!(
                    "package-lock.json: {name} is for some CPUs only ({cpu})"
                ));
            }
        }
        Cross::Build(CrossBuild::default())
    }

    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let app = App::load(ctx)?;
        let mut plan = BuildPlan::default();
        plan.add_toolchain("node", version(ctx, &app));
        let (setup, install) = setup_and_install(ctx, &app);
        plan.add_phase(setup);
        plan.add_phase(install);

        let mut build = Phase::new("build");
        let dlx = app.pm.dlx();
        let nx = nx(ctx)?;
        if let Some(m) = moon(ctx) {
            let task = ctx
                .env
                .opt("MOON_BUILD_TASK")
                .unwrap_or_else(|| "build".into());
            build = build
                .cmd(format!("{dlx} @moonrepo/cli run {m}:{task}"))
                .cache(&[".moon/cache/outputs"]);
        } else if let Some((a, _)) = &nx {
            build = build.cmd(format!("{dlx} nx run {a}:build:production"));
        } else if turbo_build(ctx) {
            build = build.cmd("npx turbo run build");
        } else if let Some(t) = ctx
            .env
            .opt("TURBO_APP_NAME")
            .filter(|_| ctx.is_file("turbo.json"))
        {
            build = build.cmd(format!("{dlx} turbo run {t}:build"));
        } else if app.script("build").is_some() {
            build = build.cmd(format!("{} run build", app.pm.cmd()));
        }
        let standalone = app.has("next") && next_standalone(ctx);
        if app.has("next") {
            build = build.cache(&[".next/cache"]);
            if standalone {
                build = build.cmd("cp -r .next/static .next/standalone/.next/static");
                if ctx.is_dir("public") {
                    build = build.cmd("cp -r public .next/standalone/public");
                }
            }
        }
        if build.cmds.is_some() {
            build = build.cache(&["node_modules/.cache"]);
        }
        if let Some(dirs) = app.pkg.get("cacheDirectories").and_then(Value::as_array) {
            let dirs: Vec<&str> = dirs.iter().filter_map(Value::as_str).collect();
            build = build.cache(&dirs);
        }
        plan.add_phase(build);

        for (k, v) in [
            ("NODE_ENV", "production"),
            ("NPM_CONFIG_PRODUCTION", "false"),
            ("CI", "true"),
        ] {
            plan.set_var(k, v);
        }

        let global_pm = app.pm != Pm::Npm;
        let mono = if let Some(m) = moon(ctx) {
            let task = ctx
                .env
                .opt("MOON_START_TASK")
                .unwrap_or_else(|| "start".into());
            Some(format!("{dlx} @moonrepo/cli run {m}:{task}"))
        } else if let Some((a, p)) = &nx {
            Some(nx_start(a, p, dlx))
        } else if let Some(t) = turbo_start(ctx, &app) {
            Some(t)
        } else if turbo_task(ctx, "start") {
            // Turbo 2 runs tasks with only the variables turbo.json
            // declares (strict mode, for its cache's keys): a `start`
            // would not see `PORT` or the deployment's other settings.
            Some("npx turbo run start --env-mode=loose".to_string())
        } else {
            None
        };
        let is_mono = mono.is_some();
        let mut copies_app = true;
        let start = if let Some(cmd) = mono {
            let mut s = StartPhase::cmd(cmd).runtime(&["nodejs", "npm"]);
            if global_pm {
                s = s.include(&[".", "/usr/local"]);
            }
            s
        } else if let Some(s) = spa(ctx, &app) {
            copies_app = false;
            plan.add_asset(
                "Caddyfile",
                super::staticfile::caddyfile(&format!("/app/{}", s.out_dir), true, false),
            );
            StartPhase::cmd("caddy run --config /assets/Caddyfile --adapter caddyfile")
                .runtime(&["caddy"])
                .include(&[s.out_dir.as_str()])
        } else if standalone {
            copies_app = false;
            plan.set_var("HOSTNAME", "0.0.0.0");
            StartPhase::cmd("node .next/standalone/server.js")
                .runtime(&["nodejs"])
                .include(&[".next/standalone"])
        } else {
            match start_cmd(ctx, &app) {
                Some(cmd) => {
                    let uses_pm = !cmd.starts_with("node ");
                    let mut s = StartPhase::cmd(cmd).runtime(&["nodejs"]);
                    if uses_pm {
                        s = s.runtime(&["npm"]);
                        if global_pm {
                            s = s.include(&[".", "/usr/local"]);
                        }
                    }
                    s
                }
                None => StartPhase::default().runtime(&["nodejs"]),
            }
        };
        // The shared libraries of native addons, where node_modules goes.
        let start = if copies_app || standalone {
            let libs: Vec<&str> = native::lookup(Ecosystem::Node, |d| app.has(d))
                .flat_map(|n| n.runtime.iter().copied())
                .collect();
            start.runtime(&libs)
        } else {
            start
        };
        if copies_app
            && !is_mono
            && let Some(prune) = prune_phase(ctx, &app, start.cmd.as_deref())
        {
            plan.add_phase(prune);
        }
        plan.set_start(start);
        Ok(plan)
    }
}

/// The `prune` phase: once the build has used them, dev dependencies are
/// removed, so the runtime's copy of `/app` holds production dependencies
/// only (Nixpacks ships them, dev tools and all, in every Node image). Heroku's Node
/// buildpack does the same by default. `KILN_NODE_PRUNE_DEPS=false` keeps
/// them, `KILN_NODE_PRUNE_CMD` replaces the command. There is no prune
/// when it cannot help or could break the start: no `devDependencies`, a
/// start command or `start` script that names one (`vite preview`,
/// `nodemon`, `ts-node`), and package managers without an offline prune
/// that works across their versions (Yarn Berry, Bun). The caller skips
/// monorepo task runners and starts that copy only build outputs.
fn prune_phase(ctx: &Ctx, app: &App, start: Option<&str>) -> Option<Phase> {
    if ctx
        .env
        .opt("NODE_PRUNE_DEPS")
        .is_some_and(|v| v == "0" || v == "false")
    {
        return None;
    }
    if dev_dependencies(app).is_empty() || start_names_a_dev_dependency(app, start) {
        return None;
    }
    let (cmd, cache) = match (ctx.env.opt("NODE_PRUNE_CMD"), app.pm) {
        (Some(c), _) => (c, None),
        // The plan's NPM_CONFIG_PRODUCTION=false (for the install) would
        // make npm keep dev dependencies despite --omit=dev.
        (None, Pm::Npm) => (NPM_PRUNE.into(), None),
        (None, Pm::Pnpm) => (
            "pnpm prune --prod".into(),
            Some("/root/.local/share/pnpm/store"),
        ),
        (None, Pm::Yarn) => (
            "yarn install --production --frozen-lockfile --ignore-scripts --prefer-offline".into(),
            Some("/usr/local/share/.cache/yarn/v6"),
        ),
        (None, Pm::YarnBerry | Pm::Bun) => return None,
    };
    let mut phase = Phase::new("prune").depends(&["build"]).cmd(cmd);
    if let Some(c) = cache {
        phase = phase.cache(&[c]);
    }
    Some(phase)
}

fn dev_dependencies(app: &App) -> Vec<&String> {
    app.pkg
        .get("devDependencies")
        .and_then(Value::as_object)
        .map(|m| m.keys().collect())
        .unwrap_or_default()
}

/// Whether the start command or the `start` script names a dev
/// dependency: a word that is the package's name, or starts with it as a
/// path (`ts-node/register`), or ends with it (`node_modules/.bin/nodemon`).
fn start_names_a_dev_dependency(app: &App, start: Option<&str>) -> bool {
    let started = format!(
        "{} {}",
        start.unwrap_or(""),
        app.script("start").unwrap_or("")
    );
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for w in started
        .split(|c: char| !(c.is_ascii_alphanumeric() || "@/._-".contains(c)))
        .filter(|w| !w.is_empty())
    {
        names.insert(w);
        let parts: Vec<&str> = w.split('/').collect();
        names.insert(parts[parts.len() - 1]);
        let head = if w.starts_with('@') { 2 } else { 1 };
        if parts.len() > head {
            let end: usize = parts[..head].iter().map(|p| p.len()).sum::<usize>() + head - 1;
            names.insert(&w[..end]);
        }
    }
    dev_dependencies(app)
        .iter()
        .any(|d| names.contains(d.as_str()))
}

/// npm's install command, and the one that installs production
/// dependencies only (`NPM_CONFIG_PRODUCTION=true` for the same reason as
/// the prune's).
const NPM_CI: &str = "npm ci";
const NPM_CI_PRODUCTION: &str = "NPM_CONFIG_PRODUCTION=true npm ci --omit=dev --no-audit --no-fund";
const NPM_PRUNE: &str = "NPM_CONFIG_PRODUCTION=true npm prune --omit=dev --no-audit --no-fund";

/// When nothing between the install and the runtime copy could use a dev
/// dependency, installing production dependencies only gives the same
/// `node_modules` as installing everything and pruning, without the prune.
/// It matters for the warm rebuild: the prune runs after the source copy,
/// so a one-line change reran it (0.45 s of node-npm's 0.6 s), while the
/// install is keyed by the manifests only and stays cached.
/// That holds when the final plan (after `kiln.toml`, Nixpacks files and
/// env) still has the provider's `npm ci` and prune commands, no build
/// command and no other phase with commands, and the package runs no
/// lifecycle script of its own at install (`prepare`, `postinstall`…,
/// which may call a dev dependency such as husky) nor a `binding.gyp`
/// build.
fn install_production_only(plan: &mut BuildPlan, ctx: &Ctx) -> crate::Result<()> {
    let is = |plan: &BuildPlan, phase: &str, cmd: &str| {
        plan.phase(phase).and_then(|p| p.cmds.as_deref()) == Some(&[cmd.to_string()][..])
    };
    if !is(plan, "prune", NPM_PRUNE) || !is(plan, "install", NPM_CI) {
        return Ok(());
    }
    let others_run = plan.phases.iter().flatten().any(|(name, p)| {
        !matches!(name.as_str(), "setup" | "install" | "prune")
            && p.cmds.as_ref().is_some_and(|c| !c.is_empty())
    });
    if others_run || ctx.is_file("binding.gyp") {
        return Ok(());
    }
    let app = App::load(ctx)?;
    const LIFECYCLE: [&str; 7] = [
        "preinstall",
        "install",
        "postinstall",
        "prepublish",
        "preprepare",
        "prepare",
        "postprepare",
    ];
    if LIFECYCLE.iter().any(|s| app.script(s).is_some()) {
        return Ok(());
    }
    if let Some(phases) = plan.phases.as_mut() {
        phases.remove("prune");
    }
    plan.phase_mut("install").cmds = Some(vec![NPM_CI_PRODUCTION.to_string()]);
    Ok(())
}

/// Drops the provider's `prune` phase when the plan's final start command
/// (a Procfile, `NIXPACKS_START_CMD` or `kiln.toml` may have replaced the
/// provider's) names a dev dependency.
fn keep_dev_deps_for(plan: &mut BuildPlan, ctx: &Ctx) -> crate::Result<()> {
    let Some(phases) = plan.phases.as_mut() else {
        return Ok(());
    };
    if !phases.contains_key("prune") {
        return Ok(());
    }
    let app = App::load(ctx)?;
    let start = plan.start.as_ref().and_then(|s| s.cmd.as_deref());
    if start_names_a_dev_dependency(&app, start) {
        phases.remove("prune");
    }
    Ok(())
}
