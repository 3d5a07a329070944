//! Go (`go.mod` or `main.go`): the `go`/`toolchain` directives are
//! minimums resolved against Debian's Go (an error when none is new
//! enough), the module cache and build cache are both cached, install
//! reads go.mod/go.sum only, and the runtime stage gets the binary only.

use anyhow::bail;

use super::{Cross, CrossBuild, Provider, VersionReq, env_version, existing};
use crate::plan::context::Ctx;
use crate::plan::model::{BuildPlan, Phase, StartPhase};
use crate::plan::versions::Kind;

pub struct Go;

const CACHES: &[&str] = &["/root/.cache/go-build", "/root/go/pkg/mod"];

/// The version request from go.mod (`toolchain` wins over `go`).
fn version(ctx: &Ctx) -> crate::Result<Option<VersionReq>> {
    if let Some(v) = env_version(ctx, "GO_VERSION") {
        return Ok(Some(v));
    }
    let Some(text) = ctx.read("go.mod") else {
        return Ok(None);
    };
    let mut go = None;
    for (i, line) in text.lines().enumerate() {
        let mut it = line.split_whitespace();
        match (it.next(), it.next()) {
            (Some("toolchain"), Some(v)) => {
                let v = v.trim_start_matches("go");
                return Ok(Some(VersionReq::new(
                    v,
                    format!("go.mod:{} (toolchain)", i + 1),
                    Kind::Minimum,
                )));
            }
            (Some("go"), Some(v)) => {
                if !v
                    .split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
                {
                    bail!(
                        "go.mod:{}: `go {v}` is not a Go version: write e.g. `go 1.22`",
                        i + 1
                    );
                }
                go = Some(VersionReq::new(
                    v,
                    format!("go.mod:{} (go)", i + 1),
                    Kind::Minimum,
                ));
            }
            (Some("go"), None) => bail!(
                "go.mod:{}: the `go` directive has no version: write e.g. `go 1.22`",
                i + 1
            ),
            _ => {}
        }
    }
    Ok(go)
}

impl Provider for Go {
    fn name(&self) -> &'static str {
        "go"
    }

    fn looks_for(&self) -> &'static str {
        "go.mod or main.go"
    }

    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(["go.mod", "main.go"]
            .into_iter()
            .find(|f| ctx.is_file(f))
            .map(String::from))
    }

    /// With `CGO_ENABLED=0` (the default) the binary is static.
    fn static_runtime(&self, plan: &BuildPlan) -> bool {
        plan.variables
            .as_ref()
            .and_then(|v| v.get("CGO_ENABLED"))
            .is_some_and(|v| v == "0")
    }

    /// Go cross-compiles any pure-Go program (`CGO_ENABLED=0`, the
    /// default, and a static runtime): `GOOS`/`GOARCH` (`GOARM` for 32-bit
    /// arm) of the target. With cgo the C toolchain would need the
    /// target's, so it runs emulated.
    fn cross_build(
        &self,
        plan: &BuildPlan,
        target: &crate::platform::Platform,
        _read: &dyn Fn(&str) -> Option<String>,
    ) -> Cross {
        if !crate::plan::recipe::is_static(plan) {
            return Cross::No;
        }
        let mut env = vec![
            ("GOOS".to_string(), target.os.clone()),
            ("GOARCH".to_string(), target.architecture.clone()),
        ];
        if target.architecture == "arm" {
            let v = target.variant.as_deref().unwrap_or("v7");
            env.push(("GOARM".to_string(), v.trim_start_matches('v').to_string()));
        }
        Cross::Build(CrossBuild {
            env,
            cmds: Vec::new(),
        })
    }

    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let mut plan = BuildPlan::default();
        plan.add_toolchain("go", version(ctx)?);
        let cgo = ctx.env.var("CGO_ENABLED") == Some("1");
        let mut setup = Phase::new("setup").apt(&["golang-go", "ca-certificates", "git"]);
        if cgo {
            setup = setup.apt(&["gcc", "libc6-dev"]);
        }
        plan.add_phase(setup);
        let has_mod = ctx.is_file("go.mod");
        if has_mod {
            plan.add_phase(
                Phase::new("install")
                    .cmd("go mod download")
                    .cache(CACHES)
                    .files(existing(ctx, &["go.mod", "go.sum"])),
            );
        }
        let build = if let Some(bin) = ctx.env.opt("GO_BIN") {
            format!("go build -o out ./cmd/{bin}")
        } else if has_mod && !ctx.root_with_ext("go").is_empty() {
            "go build -o out".to_string()
        } else if let Some(sub) = first_subdir(ctx, "cmd") {
            format!("go build -o out ./cmd/{sub}")
        } else if has_mod {
            "go build -o out".to_string()
        } else {
            "go build -o out main.go".to_string()
        };
        plan.add_phase(
            Phase::new("build")
                .cmd(build)
                .cache(CACHES)
                .depends(&["install", "setup"]),
        );
        if !cgo {
            plan.set_var("CGO_ENABLED", "0");
        }
        plan.set_start(
            StartPhase::cmd("./out")
                .runtime(&["ca-certificates", "tzdata"])
                .include(&["out"]),
        );
        Ok(plan)
    }
}

fn first_subdir(ctx: &Ctx, dir: &str) -> Option<String> {
    let mut v: Vec<String> = std::fs::read_dir(ctx.path(dir))
        .ok()?
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v.into_iter().next()
}
