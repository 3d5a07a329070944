//! Python (`requirements.txt`, `pyproject.toml`, `Pipfile`, `main.py`):
//! a venv in `/opt/venv`, the package manager Nixpacks would pick, and
//! framework starts (Django and Flask under gunicorn, FastAPI under
//! uvicorn) bound to `0.0.0.0:$PORT`. Fixes: one ordered version lookup,
//! install inputs limited to manifests (project installed after the full
//! copy), pip's cache used rather than disabled, current tool flags.

use std::collections::BTreeSet;

use super::{
    Cross, CrossBuild, Provider, VersionReq, env_version, existing, tool_versions, version_file,
};
use crate::plan::context::{Ctx, locate, tstr};
use crate::plan::model::{BuildPlan, Phase, StartPhase};
use crate::plan::native::{self, Ecosystem};
use crate::plan::versions::Kind;

pub struct Python;

const VENV: &str = "python3 -m venv /opt/venv && . /opt/venv/bin/activate && ";
/// The tools kiln installs with pip, each with its dependency closure at
/// exact versions and the sha256 of every file pip may pick (made by
/// `scripts/pin-python-tools` and `scripts/hash-python-pins`), installed
/// with `--require-hashes`: a new release of a tool's dependency cannot
/// break a plan that worked (PDM 2.25 failed with hishel 2), and a file
/// that is not the one pinned fails the install. uv is one wheel without
/// dependencies. gunicorn and uvicorn are not pinned this way: they go
/// into the app's environment, whose versions are the app's.
const POETRY_PINS: &str = include_str!("pins/poetry.txt");
const PDM_PINS: &str = include_str!("pins/pdm.txt");
const UV_PINS: &str = include_str!("pins/uv.txt");
const PIPENV_PINS: &str = include_str!("pins/pipenv.txt");
const BUILD_PINS: &str = include_str!("pins/build.txt");

/// The `name==version --hash=sha256:…` lines of a pins file.
fn pin_lines(pins: &str) -> impl Iterator<Item = &str> {
    pins.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Installs the tool and its closure from `pins` in pip's hash-checking
/// mode: the requirements file is written by the step itself, so the plan
/// shows every version and hash and needs no extra input.
fn pinned_install(tool: &str, pins: &str) -> String {
    let file = format!("/tmp/kiln-pins-{tool}.txt");
    let lines: Vec<String> = pin_lines(pins).map(|l| format!("'{l}'")).collect();
    format!(
        "printf '%s\\n' {} > {file} && pip install --require-hashes -r {file}",
        lines.join(" ")
    )
}
/// pip's install for another architecture, run by the build machine's
/// python3 (see the script's header and docs/platforms.md).
const PIP_CROSS: &str = include_str!("pip_cross.py");

/// The variable of the build stage that holds [`PIP_CROSS`].
const PIP_CROSS_VAR: &str = "KILN_PIP_CROSS";

/// The install command pip's plan gives (requirements.txt, then the
/// server the start command needs): its requirement arguments, or `None`
/// for any other command (the user's own, another package manager).
fn pip_requirements(cmd: &str) -> Option<Vec<String>> {
    let rest = cmd.strip_prefix(&format!("{VENV}pip install -r requirements.txt"))?;
    let mut reqs = vec!["-r".to_string(), "requirements.txt".to_string()];
    if rest.is_empty() {
        return Some(reqs);
    }
    let extra = rest.strip_prefix(" && pip install ")?;
    for word in extra.split(' ') {
        // Only `name==version` pins kiln adds: anything else is not ours.
        let plain = !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.=".contains(c));
        if !plain || word.starts_with('-') {
            return None;
        }
        reqs.push(word.to_string());
    }
    Some(reqs)
}

const GUNICORN: &str = "23.0.0";
const UVICORN: &str = "0.35.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pm {
    Pip,
    Poetry,
    Pdm,
    Uv,
    Setuptools,
    Pipenv,
    Skip,
}

fn pm(ctx: &Ctx) -> Pm {
    if let Some(v) = ctx.env.opt("PYTHON_PACKAGE_MANAGER") {
        match v.to_ascii_lowercase().as_str() {
            "requirements" | "pip" => return Pm::Pip,
            "poetry" => return Pm::Poetry,
            "pdm" => return Pm::Pdm,
            "uv" => return Pm::Uv,
            "setuptools" => return Pm::Setuptools,
            "pipenv" => return Pm::Pipenv,
            "skip" => return Pm::Skip,
            _ => {}
        }
    }
    let py = ctx.is_file("pyproject.toml");
    if ctx.is_file("requirements.txt") {
        Pm::Pip
    } else if py && ctx.is_file("poetry.lock") {
        Pm::Poetry
    } else if py && ctx.is_file("pdm.lock") {
        Pm::Pdm
    } else if py && ctx.is_file("uv.lock") {
        Pm::Uv
    } else if py {
        Pm::Setuptools
    } else if ctx.is_file("Pipfile") {
        Pm::Pipenv
    } else {
        Pm::Skip
    }
}

fn norm(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('_', "-")
}

/// The name part of a requirement line (`Flask[async]>=3 ; python_version…`).
fn req_name(line: &str) -> Option<String> {
    let line = line.split('#').next()?.trim();
    if line.is_empty() || line.starts_with('-') {
        return None;
    }
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .unwrap_or(line.len());
    (end > 0).then(|| norm(&line[..end]))
}

/// Dependency names of a requirements file and of the files it includes
/// (`-r base.txt`, `--requirement`: Django projects keep their
/// dependencies in `requirements/base.txt`), each file read once; `seen`
/// gets every file read (the install copies them).
fn requirements(ctx: &Ctx, file: &str, out: &mut BTreeSet<String>, seen: &mut Vec<String>) {
    if seen.iter().any(|s| s == file) {
        return;
    }
    let Some(text) = ctx.read(file) else { return };
    seen.push(file.to_string());
    let dir = file.rsplit_once('/').map_or("", |(d, _)| d);
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let included = line
            .strip_prefix("--requirement")
            .or_else(|| line.strip_prefix("-r"))
            .map(|r| r.trim_start_matches('=').trim().trim_start_matches("./"));
        match included {
            Some(inc) if !inc.is_empty() && !inc.contains("://") => {
                let path = if dir.is_empty() {
                    inc.to_string()
                } else {
                    format!("{dir}/{inc}")
                };
                requirements(ctx, &path, out, seen);
            }
            _ => out.extend(req_name(line)),
        }
    }
}

/// What the install copies: the manifests in `files` that exist, and
/// every requirements file `requirements.txt` includes, wherever it is.
fn install_files(ctx: &Ctx, files: &[&str]) -> Vec<String> {
    let mut out = existing(ctx, files);
    let mut seen = Vec::new();
    requirements(ctx, "requirements.txt", &mut BTreeSet::new(), &mut seen);
    for f in seen {
        let covered = out
            .iter()
            .any(|o| f == *o || f.starts_with(&format!("{o}/")));
        if !covered {
            out.push(f);
        }
    }
    out
}

/// Dependency names from requirements.txt, pyproject.toml and Pipfile.
fn deps(ctx: &Ctx, pyproject: Option<&toml::Table>) -> crate::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    requirements(ctx, "requirements.txt", &mut out, &mut Vec::new());
    if let Some(p) = pyproject {
        if let Some(list) = p
            .get("project")
            .and_then(|x| x.get("dependencies"))
            .and_then(|d| d.as_array())
        {
            out.extend(list.iter().filter_map(|d| d.as_str()).filter_map(req_name));
        }
        if let Some(t) = p
            .get("tool")
            .and_then(|x| x.get("poetry"))
            .and_then(|x| x.get("dependencies"))
            .and_then(|d| d.as_table())
        {
            out.extend(t.keys().map(|k| norm(k)));
        }
    }
    if let Some(p) = ctx.toml("Pipfile")?
        && let Some(t) = p.get("packages").and_then(|x| x.as_table())
    {
        out.extend(t.keys().map(|k| norm(k)));
    }
    Ok(out)
}

fn version(ctx: &Ctx, pyproject: Option<&toml::Table>) -> crate::Result<Option<VersionReq>> {
    if let Some(v) = env_version(ctx, "PYTHON_VERSION") {
        return Ok(Some(v));
    }
    if let Some(v) = version_file(ctx, ".python-version") {
        return Ok(Some(v));
    }
    if let Some(mut v) = version_file(ctx, "runtime.txt") {
        v.text = v.text.trim_start_matches("python-").to_string();
        return Ok(Some(v));
    }
    if let Some(r) = pyproject.and_then(|p| tstr(p, "project.requires-python")) {
        let src = ctx
            .read("pyproject.toml")
            .map(|t| locate(&t, "pyproject.toml", "requires-python"))
            .unwrap_or_default();
        return Ok(Some(VersionReq::new(
            r,
            format!("{src} (requires-python)"),
            Kind::Range,
        )));
    }
    if let Some(p) = ctx.toml("Pipfile")? {
        for k in ["python_full_version", "python_version"] {
            if let Some(v) = p
                .get("requires")
                .and_then(|r| r.get(k))
                .and_then(|v| v.as_str())
            {
                return Ok(Some(VersionReq::new(
                    v,
                    format!("Pipfile ([requires] {k})"),
                    Kind::Pin,
                )));
            }
        }
    }
    Ok(tool_versions(ctx, "python"))
}

/// `module:variable` of the first file that creates an app with `ctor`.
fn find_app(ctx: &Ctx, ctor: &str) -> Option<String> {
    for file in [
        "main.py",
        "app.py",
        "wsgi.py",
        "asgi.py",
        "server.py",
        "app/main.py",
        "src/main.py",
    ] {
        if let Some(text) = ctx.read(file) {
            for line in text.lines() {
                let line = line.trim();
                if let Some((lhs, rhs)) = line.split_once('=') {
                    let var = lhs.trim();
                    if rhs.trim_start().starts_with(ctor)
                        && !var.is_empty()
                        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        let module = file.trim_end_matches(".py").replace('/', ".");
                        return Some(format!("{module}:{var}"));
                    }
                }
            }
        }
    }
    None
}

/// The Django WSGI module from `WSGI_APPLICATION = "<m>.application"`.
fn django_wsgi(ctx: &Ctx) -> crate::Result<String> {
    for f in ctx.with_ext("py") {
        if let Some(t) = ctx.read(f)
            && let Some(i) = t.find("WSGI_APPLICATION")
        {
            let rest = &t[i..];
            let q: Vec<&str> = rest.splitn(3, ['"', '\'']).collect();
            if q.len() == 3 {
                return Ok(q[1].trim_end_matches(".application").to_string());
            }
        }
    }
    anyhow::bail!(
        "Django app without WSGI_APPLICATION: set `WSGI_APPLICATION = \"<project>.wsgi.application\"` in settings.py, or give a start command"
    )
}

const BIND: &str = "0.0.0.0:${PORT:-8000}";

impl Provider for Python {
    fn name(&self) -> &'static str {
        "python"
    }

    fn looks_for(&self) -> &'static str {
        "main.py, requirements.txt, pyproject.toml or Pipfile"
    }

    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(["main.py", "requirements.txt", "pyproject.toml", "Pipfile"]
            .into_iter()
            .find(|f| ctx.is_file(f))
            .map(String::from))
    }

    fn metadata(&self, ctx: &Ctx) -> Vec<String> {
        let mut m = Vec::new();
        if ctx.is_file("manage.py") {
            m.push("django".into());
        }
        match pm(ctx) {
            Pm::Poetry => m.push("poetry".into()),
            Pm::Pdm => m.push("pdm".into()),
            _ => {}
        }
        m
    }

    /// pip installs wheels for another architecture (`--platform`, run by
    /// the build machine's python3 of the same suite): the install phase
    /// runs natively and the venv, pure Python and the target's wheels, is
    /// copied into the target's runtime. Only pip's own plan (the install
    /// command as the provider wrote it, no other phase with commands,
    /// nothing but the app and the venv copied into the runtime): any
    /// other command might run the venv's programs, which are the
    /// target's. A requirement without a wheel for the target ends the
    /// step with [`super::EMULATE_MARKER`]: built again, emulated.
    fn cross_build(
        &self,
        plan: &BuildPlan,
        target: &crate::platform::Platform,
        _read: &dyn Fn(&str) -> Option<String>,
    ) -> Cross {
        let machine = match (target.os.as_str(), target.architecture.as_str()) {
            ("linux", "amd64") => "x86_64",
            ("linux", "arm64") => "aarch64",
            _ => return Cross::No,
        };
        let mut reqs = None;
        for (name, phase) in plan.phases.iter().flatten() {
            match phase.cmds.as_deref() {
                None | Some([]) => {}
                Some([cmd]) if name == "install" => match pip_requirements(cmd) {
                    Some(r) => reqs = Some(r),
                    None => return Cross::No,
                },
                Some(_) => return Cross::No,
            }
        }
        let Some(reqs) = reqs else {
            return Cross::No;
        };
        let start = plan.start.clone().unwrap_or_default();
        let copies = crate::plan::recipe::runtime_copies(&start, false);
        if !copies
            .iter()
            .all(|c| c == "/app" || c.starts_with("/app/") || c == "/opt/venv")
        {
            return Cross::No;
        }
        Cross::Build(CrossBuild {
            env: vec![(PIP_CROSS_VAR.to_string(), PIP_CROSS.to_string())],
            cmds: vec![(
                "install".to_string(),
                vec![format!(
                    "{VENV}python3 -c \"${PIP_CROSS_VAR}\" {machine} {}",
                    reqs.join(" ")
                )],
            )],
        })
    }

    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let pyproject = ctx.toml("pyproject.toml")?;
        let deps = deps(ctx, pyproject.as_ref())?;
        let has = |d: &str| deps.contains(d);
        let pm = pm(ctx);
        let mut plan = BuildPlan::default();
        plan.add_toolchain("python", version(ctx, pyproject.as_ref())?);

        let mut setup = Phase::new("setup").apt(&["python3", "python3-venv", "python3-dev", "gcc"]);
        let mut runtime: Vec<&str> = vec!["python3"];
        // Native dependencies: -dev packages to build, libraries to run.
        for n in native::lookup(Ecosystem::Python, has) {
            setup = setup.apt(n.build);
            runtime.extend(n.runtime);
        }
        plan.add_phase(setup);

        let django = ctx.is_file("manage.py") && has("django");
        let flask = !django && has("flask");
        let fastapi = !django && has("fastapi");
        let mut extra: Vec<String> = Vec::new();
        if (django || flask) && !has("gunicorn") {
            extra.push(format!("gunicorn=={GUNICORN}"));
        }
        if fastapi && !has("uvicorn") {
            extra.push(format!("uvicorn=={UVICORN}"));
        }
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(" && pip install {}", extra.join(" "))
        };

        let pip_cache = "/root/.cache/pip";
        let (cmd, files, caches): (Option<String>, Vec<&str>, Vec<&str>) = match pm {
            Pm::Pip => (
                Some(format!("{VENV}pip install -r requirements.txt{extra}")),
                vec!["requirements.txt", "requirements", "constraints.txt"],
                vec![pip_cache],
            ),
            Pm::Poetry => (
                Some(format!(
                    "{VENV}{} && poetry install --only main --no-root --no-interaction --no-ansi{extra}",
                    pinned_install("poetry", POETRY_PINS)
                )),
                vec!["pyproject.toml", "poetry.lock", "poetry.toml"],
                vec![pip_cache, "/root/.cache/pypoetry"],
            ),
            Pm::Pdm => (
                Some(format!(
                    "{VENV}{} && pdm install --prod --no-self{extra}",
                    pinned_install("pdm", PDM_PINS)
                )),
                vec!["pyproject.toml", "pdm.lock"],
                vec![pip_cache, "/root/.cache/pdm"],
            ),
            Pm::Uv => (
                Some(format!(
                    "{VENV}{} && uv sync --no-dev --frozen --no-install-project{extra}",
                    pinned_install("uv", UV_PINS)
                )),
                vec!["pyproject.toml", "uv.lock"],
                vec![pip_cache, "/root/.cache/uv"],
            ),
            Pm::Setuptools => {
                let listed: Vec<String> = pyproject
                    .as_ref()
                    .and_then(|p| p.get("project")?.get("dependencies")?.as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|d| d.as_str())
                    .map(|d| format!("'{}'", d.replace('\'', "")))
                    .collect();
                let deps = if listed.is_empty() {
                    String::new()
                } else {
                    format!(" && pip install {}", listed.join(" "))
                };
                (
                    Some(format!(
                        "{VENV}{}{deps}{extra}",
                        pinned_install("build", BUILD_PINS)
                    )),
                    vec!["pyproject.toml"],
                    vec![pip_cache],
                )
            }
            Pm::Pipenv => (
                Some({
                    let pipenv = pinned_install("pipenv", PIPENV_PINS);
                    let how = if ctx.is_file("Pipfile.lock") {
                        "--deploy"
                    } else {
                        "--skip-lock"
                    };
                    format!("{VENV}{pipenv} && pipenv install {how} --system{extra}")
                }),
                vec!["Pipfile", "Pipfile.lock"],
                vec![pip_cache],
            ),
            Pm::Skip => (None, vec![], vec![]),
        };
        // No dependencies to install (a lone main.py): no /opt/venv, so
        // Debian's `python3` runs the app.
        let venv = cmd.is_some();
        if venv {
            // manylinux wheels link the system's libstdc++ (the policy
            // lets them: RapidFuzz in Poetry, pandas, grpcio…), which
            // Debian's python3 does not pull in.
            runtime.push("libstdc++6");
        }
        if let Some(cmd) = cmd {
            plan.add_phase(
                Phase::new("install")
                    .cmd(cmd)
                    .cache(&caches)
                    .path("/opt/venv/bin")
                    .files(install_files(ctx, &files)),
            );
        }
        if pm == Pm::Setuptools {
            plan.add_phase(
                Phase::new("build").cmd(". /opt/venv/bin/activate && pip install --no-deps ."),
            );
        }
        if pm == Pm::Uv {
            plan.set_var("UV_PROJECT_ENVIRONMENT", "/opt/venv");
        }

        let start = if django {
            Some(format!("gunicorn --bind {BIND} {}", django_wsgi(ctx)?))
        } else if let Some(app) = fastapi.then(|| find_app(ctx, "FastAPI(")).flatten() {
            Some(format!(
                "uvicorn {app} --host 0.0.0.0 --port ${{PORT:-8000}}"
            ))
        } else if let Some(app) = flask.then(|| find_app(ctx, "Flask(")).flatten() {
            Some(format!("gunicorn --bind {BIND} {app}"))
        } else if ctx.is_file("main.py") {
            Some(
                if venv {
                    "python main.py"
                } else {
                    "python3 main.py"
                }
                .to_string(),
            )
        } else if let Some(p) = &pyproject {
            let project = p.get("project");
            let first = |k: &str| {
                project
                    .and_then(|x| x.get(k))
                    .and_then(|x| x.as_array())
                    .and_then(|a| a.first())
                    .and_then(|x| x.as_str())
                    .map(String::from)
            };
            first("packages")
                .or_else(|| first("py_modules"))
                .or_else(|| {
                    project
                        .and_then(|x| x.get("name"))
                        .and_then(|n| n.as_str())
                        .map(String::from)
                })
                .map(|m| format!("python -m {}", m.replace('-', "_")))
        } else {
            None
        };
        let mut s = StartPhase {
            cmd: start,
            ..StartPhase::default()
        }
        .runtime(&runtime);
        s = if venv {
            s.include(&[".", "/opt/venv"])
        } else {
            s.include(&["."])
        };
        plan.set_start(s);

        for (k, v) in [
            ("PYTHONFAULTHANDLER", "1"),
            ("PYTHONUNBUFFERED", "1"),
            ("PYTHONHASHSEED", "random"),
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
            ("PIP_DEFAULT_TIMEOUT", "100"),
        ] {
            plan.set_var(k, v);
        }
        if venv {
            plan.set_var("VIRTUAL_ENV", "/opt/venv");
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_PINS: [(&str, &str); 5] = [
        ("poetry", POETRY_PINS),
        ("pdm", PDM_PINS),
        ("uv", UV_PINS),
        ("pipenv", PIPENV_PINS),
        ("build", BUILD_PINS),
    ];

    /// Every pinned Python requirement is `name==version` and the sha256
    /// of at least one file (pip's `--require-hashes` refuses a line
    /// without one), each package once, the tool itself included.
    #[test]
    fn every_python_pin_has_hashes() {
        for (tool, pins) in ALL_PINS {
            let mut names = Vec::new();
            for l in pin_lines(pins) {
                let mut words = l.split_whitespace();
                let req = words.next().unwrap();
                let (name, version) = req
                    .split_once("==")
                    .unwrap_or_else(|| panic!("{tool}: {l:?} is not name==version"));
                assert!(
                    !version.is_empty() && !version.contains([';', '<', '>', '*']),
                    "{tool}: {req:?}"
                );
                let hashes: Vec<&str> = words.collect();
                assert!(!hashes.is_empty(), "{tool}: {req} has no hash");
                for h in hashes {
                    let hex = h
                        .strip_prefix("--hash=sha256:")
                        .unwrap_or_else(|| panic!("{tool}: {req}: {h:?} is not --hash=sha256:…"));
                    assert!(
                        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                        "{tool}: {req}: {h:?}"
                    );
                }
                let name = norm(name);
                assert!(!names.contains(&name), "{tool}: {name} twice");
                names.push(name);
            }
            assert!(
                names.iter().any(|n| n == tool),
                "{tool}: the tool is not pinned"
            );
        }
        // The closure that broke PDM 2.25 (hishel 2) is pinned below it.
        assert!(pin_lines(PDM_PINS).any(|l| l.starts_with("hishel==0.1.2 --hash=sha256:")));
    }

    /// Only the install command pip's plan writes is recognised, with the
    /// pins kiln adds; any other command (the user's) is not.
    #[test]
    fn pip_requirements_reads_only_the_providers_command() {
        assert_eq!(
            pip_requirements(&format!("{VENV}pip install -r requirements.txt")).unwrap(),
            ["-r", "requirements.txt"]
        );
        assert_eq!(
            pip_requirements(&format!(
                "{VENV}pip install -r requirements.txt && pip install gunicorn==23.0.0 uvicorn==0.35.0"
            ))
            .unwrap(),
            ["-r", "requirements.txt", "gunicorn==23.0.0", "uvicorn==0.35.0"]
        );
        for other in [
            "pip install -r requirements.txt".to_string(),
            format!("{VENV}pip install -r requirements.txt && python manage.py migrate"),
            format!("{VENV}pip install -r requirements.txt && pip install --no-binary :all: x"),
            format!("{VENV}pip install -r requirements.txt; rm -rf /"),
            format!("{VENV}pip install -r requirements.txt && pip install x && echo"),
        ] {
            assert_eq!(pip_requirements(&other), None, "{other}");
        }
    }

    /// Runs the cross install script with the host's python3 in a fresh
    /// venv whose `pip` is `fake_main` (the body of pip's `main()`, which
    /// reads `sys.argv[1:]`), for `requirements.txt`: (exit status,
    /// stdout and stderr, the temporary dir with `venv` in it).
    fn run_pip_cross(fake_main: &str) -> (i32, String, tempfile::TempDir) {
        use std::process::Command;
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("venv");
        let made = Command::new("python3")
            .args(["-m", "venv", "--without-pip"])
            .arg(&venv)
            .status()
            .expect("python3 (the host's) runs the cross install script in this test");
        assert!(made.success());
        let fake = dir.path().join("fake/pip/_internal/cli");
        std::fs::create_dir_all(&fake).unwrap();
        for d in ["pip", "pip/_internal", "pip/_internal/cli"] {
            std::fs::write(dir.path().join("fake").join(d).join("__init__.py"), "").unwrap();
        }
        std::fs::write(
            dir.path().join("fake/pip/__main__.py"),
            "import sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n",
        )
        .unwrap();
        std::fs::write(
            fake.join("main.py"),
            format!("import os, platform, sys\ndef main():\n    args = sys.argv[1:]\n{fake_main}"),
        )
        .unwrap();
        let out = Command::new(venv.join("bin/python3"))
            .args(["-c", PIP_CROSS, "aarch64", "-r", "requirements.txt"])
            .env("PYTHONPATH", dir.path().join("fake"))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
            dir,
        )
    }

    /// pip failing for want of a wheel (an sdist-only requirement) whose
    /// sdist builds to this machine's platform wheel (a C extension): the
    /// script fails and its last line asks for the emulated build, naming
    /// the requirement and why.
    #[test]
    fn pip_cross_without_a_wheel_asks_for_the_emulated_build() {
        let (code, out, _dir) = run_pip_cross(
            "    if args[0] == 'wheel':\n        w = args[args.index('-w') + 1]\n        open(w + '/native-1.0-cp313-cp313-linux_x86_64.whl', 'w').close()\n        return 0\n    print('ERROR: Could not find a version that satisfies the requirement native==1.0 (from versions: none)', file=sys.stderr)\n    print('ERROR: No matching distribution found for native==1.0', file=sys.stderr)\n    return 1\n",
        );
        assert_eq!(code, 1, "{out}");
        let reason = super::super::emulate_reason(&out).unwrap_or_else(|| panic!("{out}"));
        assert!(
            reason.starts_with("pip cannot install the requirements for aarch64 (Python 3.")
                && reason.ends_with("from wheels alone: No matching distribution found for native==1.0 (its wheel native-1.0-cp313-cp313-linux_x86_64.whl is this machine's, not pure Python)"),
            "{reason}"
        );
        assert!(out.trim_end().ends_with(&reason), "{out}");
    }

    /// An sdist-only requirement that builds to a pure-Python wheel (no
    /// wheel on the index, like docopt) is built here and offered to the
    /// target's install, which then succeeds: no emulation.
    #[test]
    fn pip_cross_builds_pure_python_sdists_natively() {
        let (code, out, _dir) = run_pip_cross(
            "    if args[0] == 'wheel':\n        w = args[args.index('-w') + 1]\n        open(w + '/docopt-0.6.2-py2.py3-none-any.whl', 'w').close()\n        return 0\n    if '--find-links' in args and os.listdir(args[args.index('--find-links') + 1]):\n        return 0\n    print('ERROR: No matching distribution found for docopt==0.6.2', file=sys.stderr)\n    return 1\n",
        );
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("no wheel of docopt==0.6.2 for aarch64: building one here"),
            "{out}"
        );
        assert_eq!(super::super::emulate_reason(&out), None, "{out}");
    }

    /// pip gets the target's tags, wheels only, into the venv's
    /// site-packages, and sees the target's machine in markers; the
    /// console scripts it writes to TARGET/bin move to the venv's bin.
    #[test]
    fn pip_cross_passes_the_targets_tags_and_moves_the_scripts() {
        let (code, err, dir) = run_pip_cross(
            "    t = args[args.index('--target') + 1]\n    os.makedirs(t + '/bin')\n    open(t + '/bin/gunicorn', 'w').write('#!/opt/venv/bin/python3\\n')\n    open(t + '/args', 'w').write(' '.join(args) + ' machine=' + platform.machine())\n    os.makedirs(t + '/pkg')\n    open(t + '/pkg/__init__.py', 'w').write('x = 1\\n')\n    return 0\n",
        );
        assert_eq!(code, 0, "{err}");
        let venv = dir.path().join("venv");
        let site = std::fs::read_dir(venv.join("lib"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("site-packages");
        let args = std::fs::read_to_string(site.join("args")).unwrap();
        for want in [
            "install --target ",
            " --only-binary=:all: --no-compile --implementation cp --python-version 3.",
            " --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 --platform linux_aarch64 -r requirements.txt machine=aarch64",
        ] {
            assert!(args.contains(want), "{want:?} not in {args}");
        }
        assert!(!args.contains("x86_64"), "{args}");
        assert_eq!(
            std::fs::read_to_string(venv.join("bin/gunicorn")).unwrap(),
            "#!/opt/venv/bin/python3\n"
        );
        assert!(!site.join("bin").exists());
        // Compiled where it is now, not in pip's temporary directory.
        let pyc = std::fs::read_dir(site.join("pkg/__pycache__"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let bytes = std::fs::read(pyc).unwrap();
        let path = site.join("pkg/__init__.py").display().to_string();
        assert!(
            bytes.windows(path.len()).any(|w| w == path.as_bytes()),
            "the .pyc does not name {path}"
        );
    }

    #[test]
    fn pinned_install_checks_the_hashes_it_writes() {
        let cmd = pinned_install(
            "pdm",
            "# c\nhishel==0.1.2 --hash=sha256:ab\npdm==2.25.4 --hash=sha256:cd --hash=sha256:ef\n",
        );
        assert_eq!(
            cmd,
            "printf '%s\\n' 'hishel==0.1.2 --hash=sha256:ab' 'pdm==2.25.4 --hash=sha256:cd --hash=sha256:ef' > /tmp/kiln-pins-pdm.txt && pip install --require-hashes -r /tmp/kiln-pins-pdm.txt"
        );
    }
}
