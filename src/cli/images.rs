//! `kiln images`, `inspect`, `rmi`, `load`, `save`, `image from-dir`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::Result;
use crate::oci::from_dir::{FromDirOptions, image_from_dir, normalize_port, parse_command};
use crate::oci::layer::{Compression, LayerOptions, Ownership, source_date_epoch};
use crate::oci::{ImageStore, cache_store, import};
use crate::platform::Platform;
use crate::progress::{Progress, human_bytes};
use crate::ship::{Destination, ShipOptions, ship};

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn images(args: ImagesArgs) -> Result<()> {
    let store = ImageStore::open_default()?;
    let list = store.list()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let width = list.iter().map(|i| i.name.len()).max().unwrap_or(4).max(4);
    // Blob bytes as stored and pushed (gzip/zstd): not the unpacked size
    // docker shows.
    println!(
        "{:width$}  {:12}  {:>17}  {:14}  PLATFORMS",
        "NAME", "DIGEST", "SIZE (compressed)", "CREATED"
    );
    let now = chrono::Utc::now();
    for i in list {
        println!(
            "{:width$}  {:12}  {:>17}  {:14}  {}",
            i.name,
            i.digest.short(),
            human_bytes(i.size),
            ago(&i.created, now),
            i.platforms.join(",")
        );
    }
    Ok(())
}

/// `5 minutes ago` for an RFC 3339 time (docker's CREATED column); the
/// text as it is when it is not one.
fn ago(time: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(time) else {
        return if time.is_empty() {
            "-".into()
        } else {
            time.into()
        };
    };
    let secs = (now - t.with_timezone(&chrono::Utc)).num_seconds().max(0);
    let (n, unit) = match secs {
        0..60 => (secs, "second"),
        60..3600 => (secs / 60, "minute"),
        3600..86_400 => (secs / 3600, "hour"),
        86_400..2_592_000 => (secs / 86_400, "day"),
        _ => return t.format("%Y-%m-%d").to_string(),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ago_reads_like_docker() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-05T13:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(super::ago("2026-12-05T12:59:59Z", now), "1 second ago");
        assert_eq!(super::ago("2026-12-05T12:55:00Z", now), "5 minutes ago");
        assert_eq!(super::ago("2026-12-05T10:00:00+00:00", now), "3 hours ago");
        assert_eq!(super::ago("2026-12-01T13:00:00Z", now), "4 days ago");
        assert_eq!(super::ago("1970-01-01T00:00:00Z", now), "1970-01-01");
        assert_eq!(super::ago("", now), "-");
    }
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Image name, name:tag, or manifest digest (prefix).
    pub name: String,
    /// Platform to show when the image is an index (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
}

pub fn inspect(args: InspectArgs) -> Result<()> {
    let store = ImageStore::open_default()?;
    let platform = args.platform.as_deref().map(Platform::parse).transpose()?;
    let img = store.image(&args.name, platform.as_ref())?;
    let out = serde_json::json!({
        "name": args.name,
        "digest": img.digest()?.to_string(),
        "size": img.size(),
        "manifest": img.manifest,
        "config": img.config,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Names of the images to remove.
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub fn rmi(args: RmiArgs) -> Result<()> {
    let store = ImageStore::open_default()?;
    for n in &args.names {
        let removed = store.remove(n)?;
        println!("Untagged: {removed}");
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// An OCI layout directory, an OCI archive, or a `docker save` archive.
    pub path: PathBuf,
}

pub fn load(args: LoadArgs) -> Result<()> {
    let store = ImageStore::open_default()?;
    for l in import::load(&args.path, &store)? {
        println!("Loaded image: {} ({})", l.name, l.digest);
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// The image to export.
    pub name: String,
    /// Destination, buildx syntax: type=oci,dest=DIR | type=oci-archive,dest=F.tar | type=docker,dest=F.tar
    #[arg(short, long)]
    pub output: String,
    /// For a multi-platform image (an index) saved as a docker archive:
    /// the platform to save (an OCI layout keeps every platform).
    #[arg(long)]
    pub platform: Option<String>,
}

pub fn save(args: SaveArgs, progress: &Progress) -> Result<()> {
    let output = Destination::parse_output(&args.output)?;
    let store = ImageStore::open_default()?;
    let desc = store.resolve(&args.name)?;
    let name = crate::oci::images::normalize_name(&args.name)?;
    let opts = ShipOptions {
        platform: args
            .platform
            .as_deref()
            .map(Platform::parse)
            .transpose()
            .context("--platform")?,
        ..ShipOptions::default()
    };
    ship(store.blobs(), &desc, &name, &output, &opts, progress)?;
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build a one-layer image from a directory (a root filesystem or an app dir).
    ///
    /// Example: kiln image from-dir ./rootfs -t hello:1 --cmd '["/hello"]' --output type=oci,dest=out
    FromDir(FromDirArgs),
    /// Build an image from Debian packages (resolved by kiln, no apt, no base image).
    ///
    /// Example: kiln image packages -t node:20 --suite trixie nodejs
    Packages(super::packages::ImagePackagesArgs),
}

#[derive(Args, Debug)]
pub struct FromDirArgs {
    /// The directory that becomes the image's only layer.
    pub dir: PathBuf,
    /// Name of the image in the local store (NAME[:TAG]).
    #[arg(short, long)]
    pub tag: String,
    /// Command: a JSON array (exec form) or a string (run with /bin/sh -c).
    #[arg(long)]
    pub cmd: Option<String>,
    /// Entrypoint: a JSON array or a string (run with /bin/sh -c).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User (name, uid or uid:gid).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Port to expose, PORT[/tcp|udp] (repeatable).
    #[arg(long)]
    pub expose: Vec<String>,
    /// Label KEY=VALUE (repeatable).
    #[arg(long)]
    pub label: Vec<String>,
    /// Owner of every file, UID:GID (default: keep the files' owners).
    #[arg(long)]
    pub owner: Option<String>,
    /// Layer compression.
    #[arg(long, value_enum, default_value_t = Compression::Gzip)]
    pub compression: Compression,
    /// Platform recorded in the image (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Also export: type=oci,dest=DIR | type=oci-archive,dest=F.tar | type=docker,dest=F.tar
    #[arg(short, long)]
    pub output: Option<String>,
}

pub fn image(cmd: ImageCommand, progress: &Progress) -> Result<()> {
    match cmd {
        ImageCommand::FromDir(a) => from_dir(a, progress),
        ImageCommand::Packages(a) => super::packages::image_packages(a, progress),
    }
}

fn from_dir(a: FromDirArgs, progress: &Progress) -> Result<()> {
    // Validate everything before doing any work.
    let output = a
        .output
        .as_deref()
        .map(Destination::parse_output)
        .transpose()?;
    let ownership = match &a.owner {
        None => Ownership::Preserve,
        Some(s) => {
            let (u, g) = s.split_once(':').unwrap_or((s, s));
            let parse = |v: &str| {
                v.parse::<u32>()
                    .with_context(|| format!("--owner {s:?}: expected numeric UID:GID"))
            };
            Ownership::Fixed(parse(u)?, parse(g)?)
        }
    };
    let labels = a
        .label
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--label {l:?} is not KEY=VALUE"))
        })
        .collect::<Result<Vec<_>>>()?;
    for p in &a.expose {
        normalize_port(p)?;
    }
    let opts = FromDirOptions {
        layer: LayerOptions {
            compression: a.compression,
            epoch: source_date_epoch()?,
        },
        ownership,
        platform: a.platform.as_deref().map(Platform::parse).transpose()?,
        cmd: a.cmd.as_deref().map(parse_command).transpose()?,
        entrypoint: a.entrypoint.as_deref().map(parse_command).transpose()?,
        env: a.env,
        workdir: a.workdir,
        user: a.user,
        expose: a.expose,
        labels,
    };
    let name = crate::oci::images::normalize_name(&a.tag)?;
    let cache = cache_store()?;
    let img = image_from_dir(&cache, &a.dir, &opts, progress)?;
    let images = ImageStore::open_default()?;
    images.import(&cache, &img.manifest_desc, &name)?;
    if let Some(out) = output {
        ship(
            &cache,
            &img.manifest_desc,
            &name,
            &out,
            &ShipOptions::default(),
            progress,
        )?;
    }
    println!("{name} {}", img.digest()?);
    Ok(())
}
