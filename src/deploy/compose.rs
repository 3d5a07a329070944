//! compose files: `services.NAME.build` as a string (the context) or
//! `{context, dockerfile, args, target}`; `image:` names what is pushed.
//! A service without `image:` is pushed as `REGISTRY/PROJECT-SERVICE:latest`
//! (compose's own `PROJECT-SERVICE` naming; the project is the top-level
//! `name:` or the file's directory name). Without `dockerfile:` the
//! platform priority applies (Dockerfile in the context, else auto).
//! `dockerfile_inline:` (compose's) and `dockerfileContent:` (kiln's) give
//! the Dockerfile inline.

use anyhow::{Context as _, bail};
use serde_norway::Value;

use super::yaml::{self, Fields};
use super::{BuildSpec, Naming, Resource, Seg, Target, sanitize};
use crate::Result;

pub fn resources(docs: &[Value], naming: &Naming) -> Result<Vec<Resource>> {
    let mut out = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let Some(Value::Mapping(services)) = doc.get("services") else {
            continue;
        };
        let project = project_name(doc, naming);
        for (svc, body) in services {
            let svc = yaml::scalar(svc).unwrap_or_default();
            let Value::Mapping(body) = body else { continue };
            let Some(build) = body.get("build").filter(|b| !b.is_null()) else {
                continue;
            };
            let label = format!("{project}/{svc}");
            let f = Fields::new(body, format!("services.{svc}"));
            let (spec, target) = spec(build, &f, &project, &svc, naming)
                .with_context(|| format!("{label} ({})", naming.file.display()))?;
            out.push(Resource {
                file: naming.file.to_path_buf(),
                label,
                spec,
                target,
                doc: i,
                at: vec![Seg::Key("services".into()), Seg::Key(svc.clone())],
            });
        }
    }
    Ok(out)
}

fn project_name(doc: &Value, naming: &Naming) -> String {
    if let Some(Value::String(n)) = doc.get("name") {
        return sanitize(n);
    }
    let dir = std::fs::canonicalize(naming.base).unwrap_or_else(|_| naming.base.to_path_buf());
    sanitize(
        &dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    )
}

fn spec(
    build: &Value,
    svc: &Fields,
    project: &str,
    name: &str,
    naming: &Naming,
) -> Result<(BuildSpec, Target)> {
    let path = format!("{}.build", svc.path);
    let spec = match build {
        Value::String(ctx) => BuildSpec {
            context: naming.path(ctx),
            ..BuildSpec::default()
        },
        Value::Mapping(m) => {
            let b = Fields::new(m, path.clone());
            b.only(&[
                "context",
                "dockerfile",
                "args",
                "target",
                "dockerfile_inline",
                "dockerfileContent",
            ])?;
            let context = naming.path(&b.string("context")?.unwrap_or_else(|| ".".into()));
            let dockerfile = b
                .string("dockerfile")?
                .map(|d| super::clean(&context.join(d)));
            let inline = match b.string("dockerfileContent")? {
                Some(t) => Some(t),
                None => b.string("dockerfile_inline")?,
            };
            BuildSpec {
                context,
                dockerfile,
                dockerfile_content: inline,
                args: b.args("args")?,
                target: b.string("target")?,
                ..BuildSpec::default()
            }
        }
        other => bail!(
            "{path} must be a path or a mapping, found {}",
            yaml::kind(other)
        ),
    };
    let image = svc.string("image")?;
    let reference = naming.reference(
        image.as_deref(),
        &format!("{project}-{}", sanitize(name)),
        "latest",
        &format!("{}.image", svc.path),
    )?;
    Ok((spec, Target::Registry(reference)))
}
