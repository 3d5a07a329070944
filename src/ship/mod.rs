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
use crate::oci::image::{self, is_index};
use crate::platform::Platform;
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
    /// The platform a destination that holds one image's files (docker
    /// archive, root filesystem) takes from an image index (`kiln save
    /// --platform`); without it an index must have exactly one manifest.
    pub platform: Option<Platform>,
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
            let m = one_platform(store, manifest, name, "a docker archive", opts)?;
            export::to_docker_archive(store, &m, &[name.to_string()], f)?
        }
        Destination::RootfsDir(d) => {
            let m = one_platform(store, manifest, name, "a root filesystem", opts)?;
            export::to_rootfs_dir(store, &m, d)?
        }
        Destination::RootfsTar(f) => {
            let m = one_platform(store, manifest, name, "a root filesystem", opts)?;
            export::to_rootfs_tar(store, &m, f)?
        }
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

/// The one manifest a destination holding one image's files takes: the
/// manifest itself, the `--platform` entry of an index, or the only entry
/// of a one-platform index. An index of several platforms without
/// `--platform` is an error naming them (never the host's, silently).
fn one_platform(
    store: &Store,
    desc: &Descriptor,
    name: &str,
    what: &str,
    opts: &ShipOptions<'_>,
) -> Result<Descriptor> {
    if !is_index(desc.media_type()) {
        return Ok(desc.clone());
    }
    if let Some(p) = &opts.platform {
        return Ok(image::read_image(store, desc, Some(p))?.manifest_desc);
    }
    let digest = image::desc_digest(desc)?;
    let index: oci_spec::image::ImageIndex = image::read_json(store, &digest)?;
    match index.manifests().as_slice() {
        [one] => Ok(one.clone()),
        many => {
            let offered: Vec<String> = many
                .iter()
                .map(|m| match m.platform() {
                    Some(p) => Platform::from_oci(p).to_string(),
                    None => "(no platform)".to_string(),
                })
                .collect();
            bail!(
                "{name} is an image index of {} platforms ({}), and {what} holds one: pick it with --platform (e.g. `kiln save --platform {} {name} -o …`), or use type=oci (an OCI layout holds the index)",
                many.len(),
                offered.join(", "),
                offered.first().map(String::as_str).unwrap_or("linux/amd64"),
            )
        }
    }
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

#[cfg(test)]
mod index_tests {
    use super::*;
    use crate::oci::image::{ImageBuilder, write_index};

    /// A store holding an index over (empty) amd64 and arm64 images, and
    /// the arm64 manifest's descriptor.
    fn two_platforms(dir: &std::path::Path) -> (Store, Descriptor, Descriptor) {
        let store = Store::open(dir.join("store")).unwrap();
        let mut entries = Vec::new();
        for arch in ["amd64", "arm64"] {
            let p = Platform::linux(arch, None);
            let img = ImageBuilder::scratch(p.clone()).write(&store, 0).unwrap();
            let mut d = img.manifest_desc.clone();
            d.set_platform(Some(p.to_oci()));
            entries.push(d);
        }
        let arm64 = entries[1].clone();
        let (index, _) = write_index(&store, entries).unwrap();
        (store, index, arm64)
    }

    /// A docker archive (or root filesystem) holds one platform: an index
    /// of two is refused with both names and the flag that picks one, and
    /// with `--platform` the archive holds that platform's image.
    #[test]
    fn a_docker_archive_of_an_index_needs_a_platform() {
        let dir = tempfile::tempdir().unwrap();
        let (store, index, arm64) = two_platforms(dir.path());
        let out = dir.path().join("app.tar");
        let dest = Destination::DockerArchive(out.clone());
        let quiet = Progress::quiet();
        let e = ship(
            &store,
            &index,
            "app:1",
            &dest,
            &ShipOptions::default(),
            &quiet,
        )
        .unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("app:1 is an image index of 2 platforms (linux/amd64, linux/arm64)")
                && e.contains("--platform")
                && e.contains("type=oci"),
            "{e}"
        );
        assert!(!out.exists());
        let tar = dir.path().join("root.tar");
        let e = ship(
            &store,
            &index,
            "app:1",
            &Destination::RootfsTar(tar.clone()),
            &ShipOptions::default(),
            &quiet,
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("a root filesystem holds one"),
            "{e:#}"
        );
        assert!(!tar.exists());

        let opts = ShipOptions {
            platform: Some(Platform::linux("arm64", None)),
            ..ShipOptions::default()
        };
        ship(&store, &index, "app:1", &dest, &opts, &quiet).unwrap();
        let mut archive = tar::Archive::new(std::fs::File::open(&out).unwrap());
        let mut manifest = String::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().to_str() == Some("manifest.json") {
                std::io::Read::read_to_string(&mut entry, &mut manifest).unwrap();
            }
        }
        let arm64_img = image::read_image(&store, &arm64, None).unwrap();
        let config = image::desc_digest(arm64_img.manifest.config()).unwrap();
        assert!(
            manifest.contains(&format!("{}.json", config.hex())),
            "{manifest}"
        );
    }
}
