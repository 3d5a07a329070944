//! Swift (`Package.swift`): Debian's swiftlang, resolve on the manifests,
//! a release build with the Swift stdlib linked statically.

use anyhow::bail;

use super::{Provider, VersionReq, existing, first_file, version_file};
use crate::plan::context::Ctx;
use crate::plan::model::{BuildPlan, Phase, StartPhase};
use crate::plan::versions::Kind;

pub struct Swift;

/// Where Debian's swiftlang puts `swift`, `swiftc` and `swift-build`.
pub const SWIFT_BIN: &str = "/usr/libexec/swift/bin";

fn exe_name(ctx: &Ctx) -> Option<String> {
    let text = ctx.read("Package.swift")?;
    if let Some(i) = text.find(".executableTarget(") {
        let rest = &text[i..];
        let j = rest.find("name:")?;
        let q: Vec<&str> = rest[j..].splitn(3, '"').collect();
        if q.len() == 3 {
            return Some(q[1].to_string());
        }
    }
    ctx.files()
        .iter()
        .filter(|f| f.starts_with("Sources/") && f.ends_with("/main.swift"))
        .find_map(|f| f.split('/').nth(1).map(String::from))
}

impl Provider for Swift {
    fn name(&self) -> &'static str {
        "swift"
    }
    fn looks_for(&self) -> &'static str {
        "Package.swift"
    }
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(first_file(ctx, &["Package.swift"]))
    }
    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let Some(name) = exe_name(ctx) else {
            bail!(
                "Package.swift: no executable target (an .executableTarget or Sources/<name>/main.swift) to start"
            );
        };
        let req = version_file(ctx, ".swift-version").or_else(|| {
            let t = ctx.read("Package.swift")?;
            let v = t
                .lines()
                .next()?
                .split("swift-tools-version:")
                .nth(1)?
                .trim()
                .to_string();
            Some(VersionReq::new(
                format!(">={v}"),
                "Package.swift:1 (swift-tools-version)",
                Kind::Range,
            ))
        });
        let mut plan = BuildPlan::default();
        plan.add_toolchain("swift", req);
        // Debian's swiftlang installs its tools in /usr/libexec/swift/bin;
        // its postinst (which kiln does not run) would link only `swift`
        // into /usr/bin, so the directory goes on PATH.
        plan.add_phase(
            Phase::new("setup")
                .apt(&[
                    "swiftlang",
                    "clang",
                    "zlib1g-dev",
                    "libcurl4-openssl-dev",
                    "libxml2-dev",
                ])
                .path(SWIFT_BIN),
        );
        plan.add_phase(
            Phase::new("install")
                .cmd("swift package resolve")
                .files(existing(ctx, &["Package.swift", "Package.resolved"])),
        );
        plan.add_phase(
            Phase::new("build")
                .cmd("swift build -c release --static-swift-stdlib")
                .cmd(format!(
                    "cp ./.build/release/{name} ./{name} && rm -rf ./.build"
                )),
        );
        // `--static-swift-stdlib` still links the C++ runtime dynamically.
        plan.set_start(
            StartPhase::cmd(format!("./{name}"))
                .include(&[&name])
                .runtime(&["libstdc++6"]),
        );
        Ok(plan)
    }
}
