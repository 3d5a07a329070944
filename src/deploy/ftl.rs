//! FTL-style `ftl.yaml`: `project: {name}` and `services:` as a list of
//! `{name, image, path, build}`. `build:` is a path (the context) or
//! `{context, dockerfile, args, target}`; a service with only `path:` builds
//! that directory with the platform priority (Dockerfile there, else auto).
//! With `image:` the image is pushed there; without, it stays in the local
//! store as `PROJECT-SERVICE:latest` (FTL ships those over SSH — see
//! [`super::Destination`]).

use anyhow::{Context as _, bail};
use serde_norway::Value;

use super::yaml::{self, Fields};
use super::{BuildSpec, Naming, Resource, Seg, Target, sanitize};
use crate::Result;

pub fn resources(docs: &[Value], naming: &Naming) -> Result<Vec<Resource>> {
    let mut out = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let Some(Value::Sequence(services)) = doc.get("services") else {
            continue;
        };
        let project = match doc.get("project").and_then(|p| p.get("name")) {
            Some(Value::String(n)) => sanitize(n),
            _ => "ftl".to_string(),
        };
        for (j, body) in services.iter().enumerate() {
            let Value::Mapping(body) = body else {
                bail!("{}: services[{j}] must be a mapping", naming.file.display());
            };
            let f = Fields::new(body, format!("services[{j}]"));
            if f.get("build").is_none() && f.get("path").is_none() {
                continue;
            }
            let name = f.string("name")?.with_context(|| {
                format!("{}: services[{j}].name is missing", naming.file.display())
            })?;
            let label = format!("{project}/{name}");
            let (spec, target) = spec(&f, &project, &name, naming)
                .with_context(|| format!("{label} ({})", naming.file.display()))?;
            out.push(Resource {
                file: naming.file.to_path_buf(),
                label,
                spec,
                target,
                doc: i,
                at: vec![Seg::Key("services".into()), Seg::Index(j)],
            });
        }
    }
    Ok(out)
}

fn spec(f: &Fields, project: &str, name: &str, naming: &Naming) -> Result<(BuildSpec, Target)> {
    let service_dir = f.string("path")?;
    let spec = match f.get("build") {
        None => BuildSpec {
            context: naming.path(service_dir.as_deref().unwrap_or(".")),
            ..BuildSpec::default()
        },
        Some(Value::String(ctx)) => BuildSpec {
            context: naming.path(ctx),
            ..BuildSpec::default()
        },
        Some(Value::Mapping(m)) => {
            let b = Fields::new(m, format!("{}.build", f.path));
            b.only(&[
                "context",
                "dockerfile",
                "args",
                "target",
                "dockerfileContent",
            ])?;
            let default_ctx = service_dir.clone().unwrap_or_else(|| ".".into());
            let context = naming.path(&b.string("context")?.unwrap_or(default_ctx));
            BuildSpec {
                dockerfile: b
                    .string("dockerfile")?
                    .map(|d| super::clean(&context.join(d))),
                context,
                dockerfile_content: b.string("dockerfileContent")?,
                args: b.args("args")?,
                target: b.string("target")?,
                ..BuildSpec::default()
            }
        }
        Some(other) => bail!(
            "{}.build must be a path or a mapping, found {}",
            f.path,
            yaml::kind(other)
        ),
    };
    let target = match f.string("image")? {
        Some(image) => Target::Registry(naming.reference(
            Some(&image),
            name,
            "latest",
            &format!("{}.image", f.path),
        )?),
        None => Target::Local(format!("{project}-{}:latest", sanitize(name))),
    };
    Ok((spec, target))
}
