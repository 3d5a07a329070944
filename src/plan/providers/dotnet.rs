//! C# and F# (`*.csproj` / `*.fsproj`): the .NET SDK (not in Debian:
//! Microsoft's install script at a pinned channel), restore on project
//! files only, publish, start the executable project. The project is read
//! from the files (OutputType Exe, not a test project) and an ambiguous
//! choice is an error rather than "the first in walk order".

use anyhow::bail;

use super::{Provider, upstream};
use crate::plan::context::{Ctx, jstr};
use crate::plan::model::{BuildPlan, Phase, StartPhase};

pub struct CSharp;
pub struct FSharp;

fn sdk_channel(ctx: &Ctx) -> crate::Result<(String, String)> {
    if let Some((v, k)) = ctx.env.option("CSHARP_SDK_VERSION") {
        return Ok((v, k));
    }
    if let Some(g) = ctx.json("global.json")?
        && let Some(v) = jstr(&g, "sdk.version")
    {
        let mut parts = v.split('.');
        let major = parts.next().unwrap_or("8");
        let minor = parts.next().unwrap_or("0");
        return Ok((
            format!("{major}.{minor}"),
            "global.json (sdk.version)".into(),
        ));
    }
    Ok(("8.0".into(), "default".into()))
}

fn plan(ctx: &Ctx, ext: &str) -> crate::Result<BuildPlan> {
    let projects: Vec<String> = ctx.with_ext(ext).into_iter().map(String::from).collect();
    let exes: Vec<&String> = projects
        .iter()
        .filter(|p| {
            let lower = p.to_ascii_lowercase();
            !lower.contains("test")
                && ctx.read(p).is_some_and(|t| {
                    t.contains("<OutputType>Exe</OutputType>")
                        || t.contains("Sdk=\"Microsoft.NET.Sdk.Web\"")
                })
        })
        .collect();
    let project = match exes.as_slice() {
        [one] => (*one).clone(),
        [] if projects.len() == 1 => projects[0].clone(),
        [] => bail!(
            "no executable .NET project found among {}: set <OutputType>Exe</OutputType>",
            projects.join(", ")
        ),
        many => bail!(
            "several executable .NET projects ({}): choose one with a start command (-s) and build command (-b)",
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let name = project
        .rsplit('/')
        .next()
        .unwrap_or(&project)
        .trim_end_matches(&format!(".{ext}"))
        .to_string();
    let (channel, source) = sdk_channel(ctx)?;
    let mut plan = BuildPlan::default();
    plan.add_phase(Phase::new("setup").apt(&["libicu-dev"]));
    upstream(
        &mut plan,
        "dotnet",
        &channel,
        &source,
        format!(
            "curl -fsSL https://dot.net/v1/dotnet-install.sh | bash -s -- --channel {channel} --install-dir /usr/share/dotnet"
        ),
    );
    plan.phase_mut("setup").paths = Some(vec!["/usr/share/dotnet".into()]);
    let mut files: Vec<String> = projects.clone();
    for f in ctx.with_ext("sln") {
        files.push(f.to_string());
    }
    for f in [
        "global.json",
        "nuget.config",
        "NuGet.Config",
        "Directory.Build.props",
        "Directory.Packages.props",
    ] {
        if ctx.is_file(f) {
            files.push(f.into());
        }
    }
    plan.add_phase(
        Phase::new("install")
            .cmd(format!("dotnet restore {project}"))
            .cache(&["/root/.nuget/packages"])
            .files(files),
    );
    plan.add_phase(Phase::new("build").cmd(format!(
        "dotnet publish {project} --no-restore -c Release -o out"
    )));
    plan.set_var("ASPNETCORE_ENVIRONMENT", "Production");
    plan.set_var("DOTNET_ROOT", "/usr/share/dotnet");
    plan.set_start(
        StartPhase::cmd(format!(
            "ASPNETCORE_URLS=http://0.0.0.0:${{PORT:-3000}} ./out/{name}"
        ))
        .runtime(&["libicu76", "ca-certificates"])
        .include(&["out", "/usr/share/dotnet"]),
    );
    Ok(plan)
}

impl Provider for CSharp {
    fn name(&self) -> &'static str {
        "c#"
    }
    fn looks_for(&self) -> &'static str {
        "a *.csproj file"
    }
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(ctx.with_ext("csproj").first().map(|s| s.to_string()))
    }
    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        plan(ctx, "csproj")
    }
}

impl Provider for FSharp {
    fn name(&self) -> &'static str {
        "f#"
    }
    fn looks_for(&self) -> &'static str {
        "a *.fsproj file"
    }
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(ctx.with_ext("fsproj").first().map(|s| s.to_string()))
    }
    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        plan(ctx, "fsproj")
    }
}
