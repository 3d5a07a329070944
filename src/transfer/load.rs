//! `--load podman|docker`: after the transfer, make the image available to
//! the server's engine. With skopeo on the server the layout is copied
//! there (`skopeo copy oci:PATH:TAG containers-storage:NAME` or
//! `docker-daemon:NAME`); without it kiln streams a docker-archive over the
//! same connection into `podman load` / `docker load`.

use anyhow::{Context, bail};
use oci_spec::image::Descriptor;

use super::script::{self, quote};
use super::ssh::Connection;
use super::target::SshTarget;
use crate::Result;
use crate::oci::Store;
use crate::progress::Progress;

/// A container engine on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Podman,
    Docker,
}

impl Engine {
    fn program(self) -> &'static str {
        match self {
            Engine::Podman => "podman",
            Engine::Docker => "docker",
        }
    }

    fn skopeo_dest(self, name: &str) -> String {
        match self {
            Engine::Podman => format!("containers-storage:{}", podman_name(name)),
            Engine::Docker => format!("docker-daemon:{name}"),
        }
    }
}

/// The name podman gives a local image: `app:1` is `localhost/app:1` (as
/// `podman build -t app:1` names it); containers-storage would otherwise
/// file a short name under docker.io/library/.
pub fn podman_name(name: &str) -> String {
    let first = name.split('/').next().unwrap_or(name);
    let has_domain = name.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    if has_domain {
        name.to_string()
    } else {
        format!("localhost/{name}")
    }
}

/// Loads `tag` of the layout at `root` into `engine`; returns the command
/// it ran on the server (as a shell line, for the user to see).
#[allow(clippy::too_many_arguments)]
pub fn load(
    conn: &Connection,
    target: &SshTarget,
    root: &str,
    tag: &str,
    engine: Engine,
    store: &Store,
    manifest: &Descriptor,
    progress: &Progress,
) -> Result<String> {
    let reply = conn.run(
        &script::which_first(),
        &[root, "skopeo", engine.program()],
        None,
    )?;
    let found = String::from_utf8_lossy(&reply.stdout).trim().to_string();
    if !reply.ok() || found.is_empty() {
        bail!(
            "{target}: neither skopeo nor {} is installed on the server, so --load {} cannot load the image (it is in {root} as {tag})",
            engine.program(),
            engine.program()
        );
    }
    let task = progress.task(format!("load into {}", engine.program()));
    let (argv, reply) = if found == "skopeo" {
        // skopeo's oci: transport splits DIR from the tag at the first ':'.
        if root.contains(':') {
            bail!(
                "{target}: the remote path {root} contains ':', which skopeo's oci: transport cannot read; choose another path"
            );
        }
        let argv = vec![
            "skopeo".to_string(),
            "copy".to_string(),
            format!("oci:{root}:{tag}"),
            engine.skopeo_dest(tag),
        ];
        let mut args = vec![root];
        args.extend(argv.iter().map(String::as_str));
        let reply = conn.run(&script::run_if_present(), &args, None)?;
        (argv, reply)
    } else {
        // No skopeo: build a docker-archive here and stream it. It holds
        // one platform: of an index, the server's (`uname -m`).
        let one = if crate::oci::image::is_index(manifest.media_type()) {
            let reply = conn.run(&script::run_if_present(), &[root, "uname", "-m"], None)?;
            let machine = String::from_utf8_lossy(&reply.stdout).trim().to_string();
            if !reply.ok() || machine.is_empty() {
                bail!(
                    "{target}: cannot tell the server's architecture (`uname -m` failed), so --load {} cannot pick a platform of the image index (it is in {root} as {tag})",
                    engine.program()
                );
            }
            let platform = crate::platform::Platform::parse(&format!("linux/{machine}"))?;
            crate::oci::image::read_image(store, manifest, Some(&platform))
                .with_context(|| format!("{target} is {platform}"))?
                .manifest_desc
        } else {
            manifest.clone()
        };
        let tmp = tempfile::NamedTempFile::new()
            .context("creating a temp file for the docker archive")?;
        crate::oci::export::to_docker_archive(store, &one, &[tag.to_string()], tmp.path())?;
        let mut file = std::fs::File::open(tmp.path())?;
        let argv = vec![engine.program().to_string(), "load".to_string()];
        let reply = conn.run(
            &script::run_if_present(),
            &[root, engine.program(), "load"],
            Some(&mut file),
        )?;
        (argv, reply)
    };
    let line = argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ");
    if !reply.ok() {
        bail!(
            "{target}: `{line}` failed on the server (exit {}): {}",
            reply.code.map_or("signal".into(), |c| c.to_string()),
            reply.stderr.trim()
        );
    }
    task.finish("done");
    progress.info(format!("ran on {target}: {line}"));
    Ok(line)
}

#[cfg(test)]
mod tests {
    #[test]
    fn podman_names() {
        use super::podman_name;
        assert_eq!(podman_name("app:1"), "localhost/app:1");
        assert_eq!(podman_name("acme/app:1"), "localhost/acme/app:1");
        assert_eq!(podman_name("localhost/app:1"), "localhost/app:1");
        assert_eq!(
            podman_name("reg.example:5000/app:1"),
            "reg.example:5000/app:1"
        );
    }
}
