//! Where an image goes, and sending it there.
//!
//! One [`Destination`] names every place kiln ships an image to: the local
//! image store, an OCI layout (dir or tar), a `docker save` archive, the
//! root filesystem (dir or tar), a registry, or a server over SSH. It is
//! parsed in one place for each way users spell it: buildx's
//! `-o type=…,dest=…` ([`Destination::parse_output`]), `kiln push`'s
//! target ([`Destination::parse_push`]) and `kiln deploy --ssh`
//! ([`Destination::ssh_host`]). One [`ship`] sends an image there, for
//! `kiln build` (`-o`, `--push`), `kiln push`, `kiln save` and `kiln deploy`.
//!
//! | `-o` | destination |
//! |---|---|
//! | `DIR` or `type=oci,dest=DIR` | an OCI image layout directory (added to if it exists) |
//! | `type=oci-archive,dest=FILE.tar` (or `type=oci,dest=FILE.tar`) | an OCI layout as a tar |
//! | `type=docker,dest=FILE.tar` | a `docker save` archive |
//! | `type=local,dest=DIR` | the image's root filesystem, unpacked |
//! | `type=tar,dest=FILE.tar` | that root filesystem as one tar |
//! | `type=registry[,name=REF]` / `type=image,push=true[,name=REF]` | a registry push (to REF, else to the `-t` names) |
//! | `type=ssh,dest=[ssh://][USER@]HOST[:PORT][/PATH]` | the server's OCI layout over SSH ([`crate::transfer`]) |

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use oci_spec::image::Descriptor;

use crate::Result;
use crate::oci::Store;
use crate::oci::export;
use crate::progress::Progress;
use crate::registry::{self, Client, PushOptions, PushSummary, Reference};
use crate::transfer::{self, SshTarget, TransferOptions, TransferSummary};

pub mod stored;

pub use stored::PushRequest;

/// Where an image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Kept in kiln's local image store under its name (nothing to send).
    LocalStore,
    OciDir(PathBuf),
    OciArchive(PathBuf),
    DockerArchive(PathBuf),
    /// The root filesystem, unpacked into a directory (buildx's `type=local`).
    RootfsDir(PathBuf),
    /// The root filesystem as one tar (buildx's `type=tar`).
    RootfsTar(PathBuf),
    /// A registry push to this reference; `None`: to the image's own names
    /// (`-t`), as `--push` does. Parsed when the destination is, so a bad
    /// name fails before the build.
    Registry(Option<Reference>),
    /// A server's OCI layout over SSH: only the blobs it lacks are sent.
    Ssh {
        target: SshTarget,
        options: TransferOptions,
    },
}

/// The `-o` keys kiln reads.
const KEYS: &str = "type, dest, name, push";
const TYPES: &str = "oci, oci-archive, docker, local, tar, registry or ssh";

impl Destination {
    /// Parses buildx's `type=…,dest=…`, or the `-o DIR` shorthand: kiln
    /// reads a bare path as an OCI layout dir (`type=oci,dest=DIR`).
    pub fn parse_output(spec: &str) -> Result<Destination> {
        if !spec.contains('=') {
            return Ok(Destination::OciDir(PathBuf::from(spec)));
        }
        let mut fields = BTreeMap::new();
        for part in spec.split(',') {
            let (k, v) = part.split_once('=').with_context(|| {
                format!("--output {spec:?}: {part:?} is not KEY=VALUE (e.g. type=oci,dest=out)")
            })?;
            fields.insert(k.trim().to_string(), v.trim().to_string());
        }
        let ty = fields
            .remove("type")
            .with_context(|| format!("--output {spec:?} has no type=: use type={TYPES}"))?;
        let dest = fields.remove("dest");
        let push = fields.remove("push");
        let name = fields
            .remove("name")
            .filter(|n| !n.is_empty())
            .map(|n| Reference::parse(&n).with_context(|| format!("--output {spec:?}: name=")))
            .transpose()?;
        if let Some(k) = fields.keys().next() {
            bail!("--output {spec:?}: unknown key {k:?} (kiln knows {KEYS})");
        }
        let push = match push.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => bail!("--output {spec:?}: push={v:?} is not true or false"),
        };
        let need = |what: &str| {
            dest.clone()
                .filter(|d| !d.is_empty())
                .with_context(|| format!("--output {spec:?}: type={ty} needs dest={what}"))
        };
        let path = |what: &str| need(what).map(PathBuf::from);
        Ok(match ty.as_str() {
            "oci" => {
                let d = path("PATH")?;
                if d.extension().is_some_and(|e| e == "tar") {
                    Destination::OciArchive(d)
                } else {
                    Destination::OciDir(d)
                }
            }
            "oci-archive" => Destination::OciArchive(path("FILE.tar")?),
            "tar" => Destination::RootfsTar(path("FILE.tar")?),
            "docker" | "docker-archive" => Destination::DockerArchive(path("FILE.tar")?),
            "local" => Destination::RootfsDir(path("DIR")?),
            "registry" => Destination::Registry(name),
            "image" if push => Destination::Registry(name),
            "image" => bail!(
                "--output {spec:?}: type=image without push=true would only name the image: use -t NAME, or add push=true"
            ),
            "ssh" => Destination::ssh_host(
                &need("[USER@]HOST[:PORT][/PATH]")?,
                TransferOptions::default(),
            )
            .with_context(|| format!("--output {spec:?}: dest="))?,
            other => bail!("--output {spec:?}: type={other} is not supported: use {TYPES}"),
        })
    }

    /// `kiln push NAME [TARGET]`: an `ssh://` URL, else a registry reference.
    pub fn parse_push(target: &str, options: TransferOptions) -> Result<Destination> {
        if SshTarget::is_ssh_url(target) {
            return Ok(Destination::Ssh {
                target: SshTarget::parse(target)?,
                options,
            });
        }
        Ok(Destination::Registry(Some(Reference::parse(target)?)))
    }

    /// `--ssh HOST` (or `-o type=ssh,dest=HOST`): a host as ssh takes it
    /// (`web1`, `deploy@web1:2222`) or a full `ssh://` URL.
    pub fn ssh_host(host: &str, options: TransferOptions) -> Result<Destination> {
        let url = if SshTarget::is_ssh_url(host) {
            host.to_string()
        } else {
            format!("ssh://{host}")
        };
        Ok(Destination::Ssh {
            target: SshTarget::parse(&url)?,
            options,
        })
    }

    /// True for a destination [`ship`] sends to a registry.
    pub fn is_registry(&self) -> bool {
        matches!(self, Destination::Registry(_))
    }
}

/// What [`ship`] needs besides the image, for the destinations that use it.
#[derive(Default)]
pub struct ShipOptions<'a> {
    /// The registry client (required for [`Destination::Registry`]).
    pub client: Option<&'a Client>,
    /// How to push to a registry.
    pub push: PushOptions,
}

/// What [`ship`] did.
#[derive(Debug)]
pub enum Shipped {
    /// Written to a file or directory (or kept in the local store).
    Written,
    /// Pushed to this reference.
    Pushed(Reference, PushSummary),
    /// Sent over SSH.
    Sent(TransferSummary),
}

/// Sends the image whose manifest (or index) is `manifest` in `store`,
/// named `name` (`repo/name:tag`), to `dest`.
pub fn ship(
    store: &Store,
    manifest: &Descriptor,
    name: &str,
    dest: &Destination,
    opts: &ShipOptions<'_>,
    progress: &Progress,
) -> Result<Shipped> {
    match dest {
        Destination::LocalStore => {}
        Destination::OciDir(d) => export::to_oci_dir(store, manifest, name, d)?,
        Destination::OciArchive(f) => export::to_oci_archive(store, manifest, name, f)?,
        Destination::DockerArchive(f) => {
            export::to_docker_archive(store, manifest, &[name.to_string()], f)?
        }
        Destination::RootfsDir(d) => export::to_rootfs_dir(store, manifest, d)?,
        Destination::RootfsTar(f) => export::to_rootfs_tar(store, manifest, f)?,
        Destination::Registry(to) => {
            let Some(client) = opts.client else {
                bail!("a registry output is a push: use `kiln push` or --push");
            };
            let reference = match to {
                Some(r) => r.clone(),
                None => Reference::parse(name)?,
            };
            let summary =
                registry::push::push(client, store, manifest, &reference, &opts.push, progress)?;
            return Ok(Shipped::Pushed(reference, summary));
        }
        Destination::Ssh { target, options } => {
            // An unnamed image is named after its digest on the server
            // (a layout name cannot hold ':' in that place).
            let tag = match name.strip_prefix("sha256:") {
                Some(hex) => format!("sha256-{hex}"),
                None => name.to_string(),
            };
            let summary = transfer::send(store, manifest, &tag, target, options, progress)?;
            return Ok(Shipped::Sent(summary));
        }
    }
    Ok(Shipped::Written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Destination {
        Destination::parse_output(s).unwrap_or_else(|e| panic!("{s}: {e:#}"))
    }

    fn reference(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    fn error(s: &str) -> String {
        format!("{:#}", Destination::parse_output(s).unwrap_err())
    }

    fn ssh(user: Option<&str>, host: &str, port: Option<u16>, path: Option<&str>) -> Destination {
        Destination::Ssh {
            target: SshTarget {
                user: user.map(String::from),
                host: host.into(),
                port,
                path: path.map(String::from),
            },
            options: TransferOptions::default(),
        }
    }

    #[test]
    fn every_output_form() {
        use Destination::*;
        assert_eq!(parse("out"), OciDir("out".into()));
        assert_eq!(parse("type=oci,dest=out"), OciDir("out".into()));
        assert_eq!(parse("type=oci,dest=o.tar"), OciArchive("o.tar".into()));
        assert_eq!(parse("type=oci-archive,dest=o"), OciArchive("o".into()));
        assert_eq!(
            parse("type=docker,dest=i.tar"),
            DockerArchive("i.tar".into())
        );
        assert_eq!(
            parse("type=docker-archive,dest=i.tar"),
            DockerArchive("i.tar".into())
        );
        assert_eq!(parse("type=local,dest=root"), RootfsDir("root".into()));
        assert_eq!(
            parse("type=tar,dest=root.tar"),
            RootfsTar("root.tar".into())
        );
        assert_eq!(parse("type=registry"), Registry(None));
        assert_eq!(
            parse("type=registry,name=localhost:5000/a:1"),
            Registry(Some(reference("localhost:5000/a:1")))
        );
        assert_eq!(parse("type=image,push=true"), Registry(None));
        assert_eq!(
            parse("type=image,name=r.io/x,push=true"),
            Registry(Some(reference("r.io/x")))
        );
        assert_eq!(parse(" type = oci , dest = out "), OciDir("out".into()));
        assert_eq!(parse("type=ssh,dest=web1"), ssh(None, "web1", None, None));
        assert_eq!(
            parse("type=ssh,dest=deploy@web1:2222"),
            ssh(Some("deploy"), "web1", Some(2222), None)
        );
        assert_eq!(
            parse("type=ssh,dest=ssh://deploy@[::1]:22/srv/images"),
            ssh(Some("deploy"), "::1", Some(22), Some("/srv/images"))
        );
    }

    #[test]
    fn bad_outputs_name_the_field() {
        let e = error("type=zip,dest=x");
        assert!(
            e.contains("type=zip is not supported") && e.contains("ssh"),
            "{e}"
        );
        let e = error("dest=x");
        assert!(e.contains("has no type="), "{e}");
        for (spec, what) in [
            ("type=oci", "type=oci needs dest=PATH"),
            ("type=oci-archive", "needs dest=FILE.tar"),
            ("type=docker,dest=", "type=docker needs dest=FILE.tar"),
            ("type=local", "type=local needs dest=DIR"),
            ("type=tar", "type=tar needs dest=FILE.tar"),
            ("type=ssh", "type=ssh needs dest=[USER@]HOST"),
        ] {
            let e = error(spec);
            assert!(e.contains(what), "{spec}: {e}");
        }
        let e = error("type=oci,dest=x,color=red");
        assert!(
            e.contains("unknown key \"color\"") && e.contains(KEYS),
            "{e}"
        );
        let e = error("type=oci,dest");
        assert!(e.contains("\"dest\" is not KEY=VALUE"), "{e}");
        let e = error("type=image");
        assert!(e.contains("add push=true"), "{e}");
        let e = error("type=image,push=maybe");
        assert!(e.contains("push=\"maybe\""), "{e}");
        let e = error("type=ssh,dest=web1:99999");
        assert!(e.contains("dest=") && e.contains("invalid port"), "{e}");
        // A bad registry name fails when the flag is read, not after the
        // build.
        let e = error("type=registry,name=Bad Name");
        assert!(e.contains("name=") && e.contains("Bad Name"), "{e}");
        let e = error("type=ssh,dest=-oProxyCommand=x");
        assert!(e.contains("invalid host"), "{e}");
    }

    #[test]
    fn push_targets() {
        let opts = TransferOptions::default();
        assert_eq!(
            Destination::parse_push("ssh://web1/srv", opts.clone()).unwrap(),
            ssh(None, "web1", None, Some("/srv"))
        );
        assert_eq!(
            Destination::parse_push("localhost:5000/app:1", opts.clone()).unwrap(),
            Destination::Registry(Some(reference("localhost:5000/app:1")))
        );
        assert!(Destination::parse_push("ssh://", opts.clone()).is_err());
        assert!(Destination::parse_push("Bad Name", opts).is_err());
    }

    #[test]
    fn deploy_ssh_hosts() {
        let opts = TransferOptions::default();
        assert_eq!(
            Destination::ssh_host("deploy@web1", opts.clone()).unwrap(),
            ssh(Some("deploy"), "web1", None, None)
        );
        assert_eq!(
            Destination::ssh_host("ssh://web1:2222", opts.clone()).unwrap(),
            ssh(None, "web1", Some(2222), None)
        );
        assert!(Destination::ssh_host("", opts).is_err());
    }
}
