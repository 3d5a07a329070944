//! Tools the start command runs at run time.
//!
//! The runtime stage carries the language runtime only (`nodejs`,
//! `python3`), not the package manager or toolchain that built the app. A
//! start command that runs one (`pnpm start`, `npx prisma migrate deploy &&
//! node server.js`, `go run .`), whoever wrote it (provider, Procfile,
//! `kiln.toml`, `NIXPACKS_START_CMD`, `-s`), keeps that tool in the
//! runtime: its Debian packages, and the files a build step installed it
//! into (`npm install -g pnpm` writes `/usr/local`). For a Node app whose
//! start goes through the package manager (`npm start`), the `start`
//! script and its pre/post scripts count too. Apps that need everything
//! the build had use `[start] runtime = "build"` instead.

use super::context::Ctx;
use super::model::{BuildPlan, RUNTIME_BUILD, RUNTIME_SLIM, StartPhase};

/// A command word and what the runtime needs to run it: Debian packages,
/// and paths (absolute, or relative to the app) copied from the build stage.
struct Tool {
    words: &'static [&'static str],
    packages: &'static [&'static str],
    copies: &'static [&'static str],
}

/// Node package managers other than npm are installed by the build with
/// `npm install -g` (under `/usr/local`); npm and npx are Debian's `npm`.
const TOOLS: &[Tool] = &[
    Tool {
        words: &["npm", "npx"],
        packages: &["nodejs", "npm"],
        copies: &[],
    },
    Tool {
        words: &["pnpm", "pnpx", "yarn", "bun", "bunx", "corepack"],
        packages: &["nodejs"],
        copies: &["/usr/local"],
    },
    Tool {
        words: &["yarnpkg"],
        packages: &["nodejs", "yarnpkg"],
        copies: &[],
    },
    Tool {
        words: &["go"],
        packages: &["golang-go"],
        copies: &["."],
    },
];

/// The words of a shell command line that can be commands: every word
/// after an operator or at the start, past `VAR=value` assignments and
/// `exec`/`env`. Good enough for start commands; a tool named as an
/// argument (`echo npm`) only adds a package.
fn command_words(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in cmd.split(['&', '|', ';', '(', ')', '\n', '`']) {
        let words = part
            .split_whitespace()
            .map(|w| w.trim_matches(['"', '\'']))
            .skip_while(|w| w.contains('=') || matches!(*w, "exec" | "env" | "time" | "nohup"));
        if let Some(first) = words.clone().next() {
            out.push(first.rsplit('/').next().unwrap_or(first).to_string());
        }
        // `python -m pip`, `python3 -m pip`.
        let v: Vec<&str> = words.collect();
        if let [py, "-m", module, ..] = v.as_slice()
            && py.starts_with("python")
        {
            out.push(format!("-m {module}"));
        }
    }
    out
}

/// The start command plus, when it runs a Node package manager's `start`,
/// the package.json scripts it runs.
fn start_texts(plan: &BuildPlan, ctx: &Ctx, cmd: &str) -> Vec<String> {
    let mut texts = vec![cmd.to_string()];
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let runs_start = words
        .windows(2)
        .any(|w| matches!(w[0], "npm" | "pnpm" | "yarn" | "bun") && w[1] == "start")
        || words.windows(3).any(|w| {
            matches!(w[0], "npm" | "pnpm" | "yarn" | "bun") && w[1] == "run" && w[2] == "start"
        });
    if runs_start
        && plan.providers.iter().flatten().any(|p| p == "node")
        && let Ok(Some(pkg)) = ctx.json("package.json")
    {
        for s in ["prestart", "start", "poststart"] {
            if let Some(t) = pkg
                .get("scripts")
                .and_then(|x| x.get(s))
                .and_then(|x| x.as_str())
            {
                texts.push(t.to_string());
            }
        }
    }
    texts
}

/// Adds to `plan.start` what its command runs at run time (module doc).
pub fn add(plan: &mut BuildPlan, ctx: &Ctx) -> crate::Result<()> {
    let Some(cmd) = plan.start_cmd().map(String::from) else {
        return Ok(());
    };
    let start = plan.start.clone().unwrap_or_default();
    if start.is_build_runtime() || start.run_image.is_some() {
        return Ok(());
    }
    let mut words: Vec<String> = Vec::new();
    for t in start_texts(plan, ctx, &cmd) {
        words.extend(command_words(&t));
    }
    let mut packages: Vec<&str> = Vec::new();
    let mut copies: Vec<&str> = Vec::new();
    for tool in TOOLS {
        if words.iter().any(|w| tool.words.contains(&w.as_str())) {
            packages.extend(tool.packages);
            copies.extend(tool.copies);
        }
    }
    // pip is in the venv (/opt/venv); without one, Debian's.
    let venv = start
        .only_include_files
        .iter()
        .flatten()
        .any(|f| f == "/opt/venv");
    if !venv
        && words
            .iter()
            .any(|w| w == "pip" || w == "pip3" || w == "-m pip")
    {
        packages.extend(["python3", "python3-pip"]);
    }
    if packages.is_empty() && copies.is_empty() {
        return Ok(());
    }
    let s = plan.start.get_or_insert_with(StartPhase::default);
    let apt = s.apt_pkgs.get_or_insert_with(Vec::new);
    for p in packages {
        if !apt.iter().any(|a| a == p) {
            apt.push(p.to_string());
        }
    }
    // Unset means the whole app; keep that when adding to it.
    if let Some(include) = s.only_include_files.as_mut() {
        for c in copies {
            if !include.iter().any(|i| i == c) {
                include.push(c.to_string());
            }
        }
    } else if copies.iter().any(|c| *c != ".") {
        let mut include = vec![".".to_string()];
        include.extend(copies.iter().filter(|c| **c != ".").map(|c| c.to_string()));
        s.only_include_files = Some(include);
    }
    Ok(())
}

/// Checks `start.runtime` (`kiln.toml` `[start] runtime`, `KILN_RUNTIME`).
pub fn check(start: &StartPhase) -> crate::Result<()> {
    match start.runtime.as_deref() {
        None | Some(RUNTIME_SLIM) => Ok(()),
        Some(RUNTIME_BUILD) if start.run_image.is_some() => anyhow::bail!(
            "start.runtime = \"build\" and start.runImage are both set: the image is either the build stage or a stage FROM runImage; drop one"
        ),
        Some(RUNTIME_BUILD) => Ok(()),
        Some(other) => anyhow::bail!(
            "start.runtime = {other:?} (`[start] runtime` in kiln.toml, or KILN_RUNTIME): use \"build\" (the image is the build stage, toolchain and all, as Nixpacks ships it) or \"slim\" (the default: a runtime stage with what the start command needs)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_words_of_start_commands() {
        assert_eq!(
            command_words("npx prisma migrate deploy && node server.js"),
            ["npx", "node"]
        );
        assert_eq!(command_words("PORT=1 exec pnpm start"), ["pnpm"]);
        assert_eq!(
            command_words("python -m pip list; /usr/bin/go run ."),
            ["python", "-m pip", "go"]
        );
        assert_eq!(command_words("node index.js --npm"), ["node"]);
    }

    fn plan_for(files: &[(&str, &str)], env: &[&str]) -> BuildPlan {
        let dir = tempfile::tempdir().unwrap();
        for (f, t) in files {
            std::fs::write(dir.path().join(f), t).unwrap();
        }
        let env: Vec<String> = env.iter().map(|s| s.to_string()).collect();
        crate::plan::generate(dir.path(), &env, &Default::default()).unwrap()
    }

    const PNPM_APP: &str =
        r#"{"name": "x", "packageManager": "pnpm@9.4.0", "scripts": {"start": "node index.js"}}"#;

    /// A Procfile start that runs npx and pnpm keeps npm and the global
    /// pnpm install (`/usr/local`) in the runtime.
    #[test]
    fn start_that_runs_npx_and_pnpm_keeps_them() {
        let plan = plan_for(
            &[
                ("package.json", PNPM_APP),
                ("index.js", ""),
                ("Procfile", "web: npx --version && pnpm start\n"),
            ],
            &[],
        );
        let start = plan.start.unwrap();
        let apt = start.apt_pkgs.unwrap();
        assert!(apt.contains(&"npm".to_string()), "{apt:?}");
        assert!(apt.contains(&"nodejs".to_string()), "{apt:?}");
        assert_eq!(start.only_include_files.unwrap(), [".", "/usr/local"]);
    }

    /// `npm start` whose script runs npx: npm is there for both.
    #[test]
    fn start_script_words_count() {
        let plan = plan_for(
            &[(
                "package.json",
                r#"{"name": "x", "packageManager": "pnpm@9.4.0", "scripts": {"start": "npx prisma migrate deploy && node index.js"}}"#,
            )],
            &[],
        );
        let start = plan.start.unwrap();
        assert_eq!(start.cmd.as_deref(), Some("pnpm run start"));
        assert!(start.apt_pkgs.unwrap().contains(&"npm".to_string()));
    }

    #[test]
    fn plain_node_start_gets_no_tools() {
        let plan = plan_for(&[("package.json", PNPM_APP), ("index.js", "")], &[]);
        let start = plan.start.unwrap();
        assert_eq!(start.apt_pkgs.unwrap(), ["nodejs"]);
        assert!(start.only_include_files.is_none());
    }

    #[test]
    fn runtime_values_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.py"), "").unwrap();
        let env = vec!["KILN_RUNTIME=fat".to_string()];
        let e = crate::plan::generate(dir.path(), &env, &Default::default()).unwrap_err();
        assert!(format!("{e:#}").contains("KILN_RUNTIME"), "{e:#}");
        let env = vec!["KILN_RUNTIME=build".to_string()];
        let plan = crate::plan::generate(dir.path(), &env, &Default::default()).unwrap();
        assert!(plan.start.unwrap().is_build_runtime());
    }
}
