//! Rust (`Cargo.toml`): Debian's rustc/cargo, with `rust-toolchain(.toml)`
//! pins, `rust-version` minimums and `KILN_RUST_VERSION` resolved against
//! the suites (an error when unsatisfiable); binaries copied to `bin/`;
//! the runtime stage gets only them. The musl target follows Nixpacks only
//! when asked (`KILN_RUST_TARGET`), so it never depends on the host arch.
//! Workspaces: the member with a binary (`default-members` first, glob
//! members expanded) is built with `--package`, or the one
//! `KILN_CARGO_WORKSPACE`/`NIXPACKS_CARGO_WORKSPACE` names.

use anyhow::bail;

use super::{Provider, VersionReq, env_version};
use crate::plan::context::{Ctx, locate, tstr};
use crate::plan::model::{BuildPlan, Phase, StartPhase};
use crate::plan::versions::Kind;

pub struct Rust;

fn version(ctx: &Ctx, rust_version: Option<&str>) -> crate::Result<Option<VersionReq>> {
    if let Some(v) = env_version(ctx, "RUST_VERSION") {
        return Ok(Some(v));
    }
    for f in ["rust-toolchain.toml", "rust-toolchain"] {
        let Some(text) = ctx.read(f) else { continue };
        let channel = if text.contains("[toolchain]") {
            let t = ctx.toml(f)?.unwrap_or_default();
            tstr(&t, "toolchain.channel").map(String::from)
        } else {
            text.lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(String::from)
        };
        let Some(channel) = channel else { continue };
        let src = locate(&text, f, &channel);
        if channel == "stable" {
            return Ok(Some(VersionReq::new("*", src, Kind::Range)));
        }
        if channel.starts_with("nightly") || channel.starts_with("beta") {
            bail!(
                "{src}: the `{channel}` Rust channel is not available from Debian: pin a stable version (e.g. `1.85`) or use `buildImage` with your own toolchain"
            );
        }
        return Ok(Some(VersionReq::new(channel, src, Kind::Pin)));
    }
    if let Some(v) = rust_version {
        let src = ctx
            .read("Cargo.toml")
            .map(|t| locate(&t, "Cargo.toml", "rust-version"))
            .unwrap_or_default();
        return Ok(Some(VersionReq::new(v, src, Kind::Minimum)));
    }
    Ok(None)
}

/// A Cargo package of the app: the root package or a workspace member.
#[derive(Debug)]
struct Package {
    /// Its directory, relative to the app (`""` for the root).
    dir: String,
    name: String,
    /// Binary targets: the package when `src/main.rs` exists, `[[bin]]`
    /// names, `src/bin/*`.
    bins: Vec<String>,
    default_run: Option<String>,
    rust_version: Option<String>,
}

/// The package whose manifest is `dir/Cargo.toml`, if it has `[package]`.
fn package_at(ctx: &Ctx, dir: &str) -> crate::Result<Option<Package>> {
    let join = |f: &str| {
        if dir.is_empty() {
            f.to_string()
        } else {
            format!("{dir}/{f}")
        }
    };
    let Some(cargo) = ctx.toml(&join("Cargo.toml"))? else {
        return Ok(None);
    };
    let Some(name) = tstr(&cargo, "package.name") else {
        return Ok(None);
    };
    let mut bins = Vec::new();
    if ctx.is_file(&join("src/main.rs")) {
        bins.push(name.to_string());
    }
    for b in cargo
        .get("bin")
        .and_then(|b| b.as_array())
        .into_iter()
        .flatten()
    {
        if let Some(n) = b.get("name").and_then(|n| n.as_str()) {
            bins.push(n.to_string());
        }
    }
    if let Ok(rd) = std::fs::read_dir(ctx.path(&join("src/bin"))) {
        let mut v: Vec<String> = rd
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|f| f.trim_end_matches(".rs").to_string())
            .collect();
        v.sort();
        bins.extend(v);
    }
    bins.dedup();
    Ok(Some(Package {
        dir: dir.to_string(),
        name: name.to_string(),
        bins,
        default_run: tstr(&cargo, "package.default-run").map(String::from),
        // `rust-version.workspace = true` is a table, not a string: the
        // workspace's value applies then.
        rust_version: tstr(&cargo, "package.rust-version").map(String::from),
    }))
}

/// Directories matching a workspace member pattern (`crates/*`, `app`),
/// relative to the app, sorted. Cargo's patterns are globs per path
/// segment; only directories holding a `Cargo.toml` count.
fn expand_member(ctx: &Ctx, pattern: &str) -> Vec<String> {
    let mut dirs = vec![String::new()];
    for seg in pattern.trim_end_matches('/').split('/') {
        if seg.is_empty() || seg == "." {
            continue;
        }
        let mut next = Vec::new();
        for d in &dirs {
            if !seg.contains(['*', '?', '[']) {
                next.push(join_rel(d, seg));
                continue;
            }
            let pat: Vec<char> = seg.chars().collect();
            let mut names: Vec<String> = std::fs::read_dir(ctx.path(d))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| {
                    let chars: Vec<char> = n.chars().collect();
                    crate::context::glob_match(&pat, &chars)
                })
                .collect();
            names.sort();
            next.extend(names.iter().map(|n| join_rel(d, n)));
        }
        dirs = next;
    }
    dirs.retain(|d| ctx.is_file(&join_rel(d, "Cargo.toml")));
    dirs
}

fn join_rel(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The list of strings at `key` of the `[workspace]` table.
fn workspace_list(cargo: &toml::Table, key: &str) -> Option<Vec<String>> {
    let list = cargo.get("workspace")?.get(key)?.as_array()?;
    Some(
        list.iter()
            .filter_map(|v| v.as_str())
            .map(|s| s.trim_start_matches("./").trim_end_matches('/').to_string())
            .collect(),
    )
}

/// What to build: the package (`--package`, for workspaces) and the
/// binaries to copy to `bin/`.
struct Selection {
    package: Option<String>,
    bins: Vec<String>,
    default_run: Option<String>,
    rust_version: Option<String>,
}

/// Picks the binary package. A plain package is itself. In a workspace:
/// `KILN_CARGO_WORKSPACE`/`NIXPACKS_CARGO_WORKSPACE` names it; else the
/// members listed in `default-members` (what `cargo build` builds) that
/// have a binary; else the members that have one. Exactly one such member
/// is built with `--package`; several are all built (`KILN_RUST_BIN`
/// picks the start).
fn select(ctx: &Ctx, cargo: &toml::Table) -> crate::Result<Selection> {
    let ws = ctx.env.option("CARGO_WORKSPACE");
    let root = package_at(ctx, "")?;
    if !cargo.contains_key("workspace") {
        let root = root.unwrap_or(Package {
            dir: String::new(),
            name: String::new(),
            bins: Vec::new(),
            default_run: None,
            rust_version: None,
        });
        return Ok(Selection {
            bins: match &ws {
                Some((w, _)) => vec![w.clone()],
                None => root.bins,
            },
            package: ws.map(|(w, _)| w),
            default_run: root.default_run,
            rust_version: root.rust_version,
        });
    }
    let exclude = workspace_list(cargo, "exclude").unwrap_or_default();
    let mut dirs: Vec<String> = Vec::new();
    for m in workspace_list(cargo, "members").unwrap_or_default() {
        for d in expand_member(ctx, &m) {
            if !exclude.contains(&d) && !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    let mut members: Vec<Package> = root.into_iter().collect();
    for d in &dirs {
        members.extend(package_at(ctx, d)?);
    }
    let ws_version = tstr(cargo, "workspace.package.rust-version").map(String::from);
    let chosen: Vec<&Package> = if let Some((w, key)) = &ws {
        let Some(p) = members.iter().find(|p| p.name == *w) else {
            let names: Vec<&str> = members.iter().map(|p| p.name.as_str()).collect();
            bail!(
                "{key} names the package `{w}`, but the workspace in Cargo.toml has: {}",
                names.join(", ")
            );
        };
        vec![p]
    } else {
        let defaults = workspace_list(cargo, "default-members").map(|list| {
            list.iter()
                .flat_map(|m| expand_member(ctx, m))
                .collect::<Vec<String>>()
        });
        members
            .iter()
            .filter(|p| !p.bins.is_empty())
            .filter(|p| defaults.as_ref().is_none_or(|d| d.contains(&p.dir)))
            .collect()
    };
    let rust_version = |p: &Package| p.rust_version.clone().or_else(|| ws_version.clone());
    Ok(match chosen.as_slice() {
        [one] => Selection {
            package: Some(one.name.clone()),
            bins: one.bins.clone(),
            default_run: one.default_run.clone(),
            rust_version: rust_version(one),
        },
        many => Selection {
            package: None,
            bins: many.iter().flat_map(|p| p.bins.clone()).collect(),
            default_run: None,
            rust_version: ws_version.clone(),
        },
    })
}

pub fn plan(ctx: &Ctx) -> crate::Result<BuildPlan> {
    let cargo = ctx.toml("Cargo.toml")?.unwrap_or_default();
    let sel = select(ctx, &cargo)?;
    let mut plan = BuildPlan::default();
    plan.add_toolchain("rust", version(ctx, sel.rust_version.as_deref())?);
    let openssl = ["dependencies", "dev-dependencies", "build-dependencies"]
        .iter()
        .any(|k| cargo.get(*k).and_then(|d| d.get("openssl")).is_some())
        || ctx
            .read("Cargo.lock")
            .is_some_and(|l| l.contains("name = \"openssl-sys\""));
    let mut setup = Phase::new("setup").apt(&["rustc", "cargo", "gcc", "libc6-dev", "pkg-config"]);
    let mut runtime = vec!["ca-certificates"];
    if openssl {
        setup = setup.apt(&["libssl-dev"]);
        runtime.push("libssl3t64");
    }
    plan.add_phase(setup);

    let target = ctx.env.opt("RUST_TARGET");
    let mut build = Phase::new("build").depends(&["setup"]).cmd("mkdir -p bin");
    let mut cargo_cmd = "cargo build --release".to_string();
    if let Some(p) = &sel.package {
        cargo_cmd.push_str(&format!(" --package {p}"));
    }
    if let Some(t) = &target {
        cargo_cmd.push_str(&format!(" --target {t}"));
    }
    build = build.cmd(cargo_cmd);
    let dir = match &target {
        Some(t) => format!("target/{t}/release"),
        None => "target/release".into(),
    };
    let bins = sel.bins;
    for b in &bins {
        build = build.cmd(format!("cp {dir}/{b} bin"));
    }
    // The target dir stays outside the mount so `cp` above sees the binaries;
    // the registry and git caches are what save time.
    build = build.cache(&["/root/.cargo/git", "/root/.cargo/registry"]);
    plan.add_phase(build);
    plan.set_var("ROCKET_ADDRESS", "0.0.0.0");

    let chosen = if let Some(b) = ctx.env.opt("RUST_BIN") {
        if !bins.contains(&b) {
            bail!(
                "KILN_RUST_BIN/NIXPACKS_RUST_BIN names `{b}`, but the binaries are: {}",
                bins.join(", ")
            );
        }
        Some(b)
    } else if bins.len() == 1 {
        bins.first().cloned()
    } else {
        sel.default_run
    };
    let start = match chosen {
        Some(b) => StartPhase::cmd(format!("./bin/{b}")).include(&["bin"]),
        None => StartPhase::default().include(&["bin"]),
    };
    plan.set_start(start.runtime(&runtime));
    Ok(plan)
}

impl Provider for Rust {
    fn name(&self) -> &'static str {
        "rust"
    }

    fn looks_for(&self) -> &'static str {
        "Cargo.toml"
    }

    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(ctx.is_file("Cargo.toml").then(|| "Cargo.toml".to_string()))
    }

    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        plan(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::context::Env;

    fn write(dir: &std::path::Path, files: &[(&str, &str)]) {
        for (f, text) in files {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    fn member(name: &str, bin: bool) -> [(String, String); 2] {
        [
            (
                format!("crates/{name}/Cargo.toml"),
                format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\n"),
            ),
            (
                format!(
                    "crates/{name}/src/{}",
                    if bin { "main.rs" } else { "lib.rs" }
                ),
                String::new(),
            ),
        ]
    }

    fn plan_for(
        root: &str,
        members: &[(&str, bool)],
        env: &[(&str, &str)],
    ) -> crate::Result<BuildPlan> {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), &[("Cargo.toml", root)]);
        for (name, bin) in members {
            for (f, text) in member(name, *bin) {
                write(tmp.path(), &[(f.as_str(), text.as_str())]);
            }
        }
        let env = Env {
            vars: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        plan(&Ctx::new(tmp.path(), &env))
    }

    fn cmds(plan: &BuildPlan) -> Vec<String> {
        plan.phase("build").unwrap().cmds.clone().unwrap()
    }

    #[test]
    fn glob_members_give_the_single_binary_member() {
        let p = plan_for(
            "[workspace]\nmembers = [\"crates/*\"]\n",
            &[("lib", false), ("api", true)],
            &[],
        )
        .unwrap();
        assert_eq!(
            cmds(&p),
            [
                "mkdir -p bin",
                "cargo build --release --package api",
                "cp target/release/api bin"
            ]
        );
        assert_eq!(p.start_cmd(), Some("./bin/api"));
    }

    #[test]
    fn default_members_choose_among_binaries() {
        let p = plan_for(
            "[workspace]\nmembers = [\"crates/*\"]\ndefault-members = [\"crates/web\"]\n",
            &[("cli", true), ("web", true)],
            &[],
        )
        .unwrap();
        assert_eq!(cmds(&p)[1], "cargo build --release --package web");
        assert_eq!(p.start_cmd(), Some("./bin/web"));
    }

    #[test]
    fn the_workspace_variable_names_the_member() {
        let root = "[workspace]\nmembers = [\"crates/cli\", \"crates/web\"]\n";
        let p = plan_for(
            root,
            &[("cli", true), ("web", true)],
            &[("NIXPACKS_CARGO_WORKSPACE", "cli")],
        )
        .unwrap();
        assert_eq!(cmds(&p)[1], "cargo build --release --package cli");
        assert_eq!(p.start_cmd(), Some("./bin/cli"));
        let err = plan_for(
            root,
            &[("cli", true), ("web", true)],
            &[("KILN_CARGO_WORKSPACE", "nope")],
        )
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "KILN_CARGO_WORKSPACE names the package `nope`, but the workspace in Cargo.toml has: cli, web"
        );
    }

    #[test]
    fn several_binary_members_build_all_and_rust_bin_picks() {
        let root = "[workspace]\nmembers = [\"crates/*\"]\nexclude = [\"crates/old\"]\n";
        let members = [("cli", true), ("web", true), ("old", true)];
        let p = plan_for(root, &members, &[]).unwrap();
        assert_eq!(
            cmds(&p),
            [
                "mkdir -p bin",
                "cargo build --release",
                "cp target/release/cli bin",
                "cp target/release/web bin"
            ]
        );
        assert_eq!(p.start_cmd(), None);
        let p = plan_for(root, &members, &[("KILN_RUST_BIN", "web")]).unwrap();
        assert_eq!(p.start_cmd(), Some("./bin/web"));
    }
}
