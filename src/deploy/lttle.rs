//! lttle-style resource documents: each document is `KIND: {name,
//! namespace, build, command, …}` (`machine:`, `app:`, or any other kind);
//! a resource with `build:` is built, everything else passes through.
//!
//! `build:` is one of
//! - `auto`: the auto plan of the deploy file's directory;
//! - `{options: {dir, name, tag, image}}`: `dir` (default `.`) is built
//!   with the platform priority (inline > Dockerfile in `dir` > auto);
//! - `{docker: {context, dockerfile, name, tag, image, args}}`: a
//!   Dockerfile build; `dockerfile` is relative to `context`.
//!
//! `dockerfileContent:` inside `options`/`docker` gives the Dockerfile
//! inline (kiln's extension for platforms).

use serde_norway::Value;

use anyhow::{Context as _, anyhow, bail};

use super::yaml::{self, Fields};
use super::{BuildSpec, Naming, Resource, Seg, Target};
use crate::Result;

pub fn resources(docs: &[Value], naming: &Naming) -> Result<Vec<Resource>> {
    let mut out = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let Value::Mapping(top) = doc else { continue };
        for (kind, body) in top {
            let Value::Mapping(body) = body else { continue };
            if body.get("build").is_none_or(Value::is_null) {
                continue;
            }
            let kind = yaml::scalar(kind).unwrap_or_else(|_| "resource".into());
            let f = Fields::new(body, kind.clone());
            out.push(resource(&f, &kind, i, naming).with_context(|| {
                format!("{}: document {}: {kind}", naming.file.display(), i + 1)
            })?);
        }
    }
    Ok(out)
}

fn resource(f: &Fields, kind: &str, doc: usize, naming: &Naming) -> Result<Resource> {
    let name = f
        .string("name")?
        .with_context(|| format!("{kind}.name is missing: a resource with build: needs a name"))?;
    let namespace = f.string("namespace")?.unwrap_or_else(|| "default".into());
    let label = format!("{namespace}/{name}");
    let start_cmd = match f.get("command") {
        Some(v) => Some(yaml::command(v, &format!("{kind}.command"))?),
        None => None,
    };
    let build = f.get("build").context("build: is missing")?;
    let with_label = |e: anyhow::Error| e.context(format!("{label} ({})", naming.file.display()));
    let (spec, target) = build_spec(build, kind, &label, naming).map_err(with_label)?;
    Ok(Resource {
        file: naming.file.to_path_buf(),
        label,
        spec: BuildSpec { start_cmd, ..spec },
        target,
        doc,
        at: vec![Seg::Key(kind.to_string())],
    })
}

fn build_spec(
    build: &Value,
    kind: &str,
    label: &str,
    naming: &Naming,
) -> Result<(BuildSpec, Target)> {
    let path = format!("{kind}.build");
    let modes = "expected build: auto, build: {options: …} or build: {docker: …}";
    let generated = || naming.generated_name(kind, label);
    match build {
        Value::String(s) if s == "auto" => {
            let reference = naming.reference(None, &generated(), "latest", &path)?;
            Ok((
                BuildSpec {
                    context: naming.base.to_path_buf(),
                    auto: true,
                    ..BuildSpec::default()
                },
                Target::Registry(reference),
            ))
        }
        Value::String(s) => bail!("{path}: unknown build mode {s:?}; {modes}"),
        Value::Mapping(m) => {
            let f = Fields::new(m, path.clone());
            let options = f.get("options");
            let docker = f.get("docker");
            match (options, docker) {
                (Some(_), Some(_)) => {
                    bail!("{path} has both options and docker; choose one ({modes})")
                }
                (Some(Value::Mapping(o)), None) => {
                    f.only(&["options"])?;
                    let o = Fields::new(o, format!("{path}.options"));
                    o.only(&["dir", "name", "tag", "image", "dockerfileContent"])?;
                    let dir = o.string("dir")?.unwrap_or_else(|| ".".into());
                    let name = o.string("name")?.unwrap_or_else(generated);
                    let tag = o.string("tag")?.unwrap_or_else(|| "latest".into());
                    let image = o.string("image")?;
                    let reference = naming.reference(
                        image.as_deref(),
                        &name,
                        &tag,
                        &format!("{}.image", o.path),
                    )?;
                    Ok((
                        BuildSpec {
                            context: naming.path(&dir),
                            dockerfile_content: o.string("dockerfileContent")?,
                            ..BuildSpec::default()
                        },
                        Target::Registry(reference),
                    ))
                }
                (None, Some(Value::Mapping(d))) => {
                    f.only(&["docker"])?;
                    let d = Fields::new(d, format!("{path}.docker"));
                    d.only(&[
                        "context",
                        "dockerfile",
                        "name",
                        "tag",
                        "image",
                        "args",
                        "target",
                        "dockerfileContent",
                    ])?;
                    let context = naming.path(&d.string("context")?.unwrap_or_else(|| ".".into()));
                    let dockerfile = super::clean(
                        &context.join(
                            d.string("dockerfile")?
                                .unwrap_or_else(|| "Dockerfile".into()),
                        ),
                    );
                    let name = d.string("name")?.unwrap_or_else(generated);
                    let tag = d.string("tag")?.unwrap_or_else(|| "latest".into());
                    let image = d.string("image")?;
                    let reference = naming.reference(
                        image.as_deref(),
                        &name,
                        &tag,
                        &format!("{}.image", d.path),
                    )?;
                    Ok((
                        BuildSpec {
                            context,
                            dockerfile: Some(dockerfile),
                            dockerfile_content: d.string("dockerfileContent")?,
                            args: d.args("args")?,
                            target: d.string("target")?,
                            ..BuildSpec::default()
                        },
                        Target::Registry(reference),
                    ))
                }
                (Some(v), None) => {
                    bail!("{path}.options must be a mapping, found {}", yaml::kind(v))
                }
                (None, Some(v)) => {
                    bail!("{path}.docker must be a mapping, found {}", yaml::kind(v))
                }
                (None, None) => {
                    let keys: Vec<String> = m
                        .keys()
                        .map(|k| yaml::scalar(k).unwrap_or_default())
                        .collect();
                    Err(anyhow!(
                        "{path}: unknown build mode {:?}; {modes}",
                        keys.join(", ")
                    ))
                }
            }
        }
        other => bail!("{path} is {}; {modes}", yaml::kind(other)),
    }
}
