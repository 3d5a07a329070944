//! `kiln rebase IMAGE [-t NEW]`: the image's Debian package layers
//! composed again from the suite's current index, under the same app
//! layers, without running any build step (Cloud Native Buildpacks'
//! `rebase`, for package layers).
//!
//! It is valid because an auto build's runtime stage is its package base
//! plus files copied from the build stage: the app layers do not depend
//! on the package layers' bytes, only on what they provide at run time,
//! which [`assumptions`] checks. So:
//!
//! 1. the image's [`Record`] names its package set and the request it was
//!    resolved from ([`crate::sbom::SetRequest`], kept since record
//!    version 2); the set's layers must be the image's bottom layers, and
//!    no layer above them may come from a step that ran on them (`RUN`:
//!    its files may derive from the packages' content);
//! 2. the request is resolved against the suite's current indexes (what
//!    `--pull` does) and compared with the record: nothing changed, the
//!    image stays as it is;
//! 3. the new set is composed (same compression and epoch as the image),
//!    the app layers' needs are checked against the old and new package
//!    trees (sonames, interpreters, link targets, `#!` lines, the
//!    command), and a set that breaks one is refused;
//! 4. the new image is the new package layers, then the old image's other
//!    layers (same blobs, same digests) and history; its config keeps
//!    everything else. Its record is the old one with the set's packages
//!    replaced.

pub mod assumptions;
pub mod elf;

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};

use crate::Result;
use crate::oci::ImageStore;
use crate::oci::image::{Image, ImageBuilder, desc_digest, is_index, read_image};
use crate::oci::layer::{Compression, LayerOptions};
use crate::oci::store::Store;
use crate::oci::{Digest, images::normalize_name};
use crate::packages::compose::{self, ComposeOptions, PackageLayer};
use crate::packages::image::PackagesRequest;
use crate::packages::lock::Lockfile;
use crate::packages::repo::RepoConfig;
use crate::platform::Platform;
use crate::progress::Progress;
use crate::sandbox::Snapshots;
use crate::sbom::{self, Record};
use assumptions::{AppNeeds, Problem, Tree};

/// The label the package base sets to its suite's Release date.
const RELEASE_DATE_LABEL: &str = "dev.kiln.debian.release-date";

/// One package whose version the rebase changes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub name: String,
    /// The version in the image; `None` for a package the new set adds.
    pub old: Option<String>,
    /// The version now; `None` for a package the new set no longer has.
    pub new: Option<String>,
    /// The archive the new version comes from (`trixie-security`…).
    pub archive: Option<String>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let old = self.old.as_deref().unwrap_or("(not installed)");
        let new = self.new.as_deref().unwrap_or("(removed)");
        write!(f, "{}: {old} → {new}", self.name)?;
        if let Some(a) = &self.archive {
            write!(f, " ({a})")?;
        }
        Ok(())
    }
}

/// What a rebase did.
#[derive(Debug, Clone)]
pub struct Rebased {
    /// The image rebased (its manifest digest).
    pub from: Digest,
    /// The result: the same image when nothing changed.
    pub image: Image,
    pub digest: Digest,
    /// Empty when the suite has nothing newer.
    pub changes: Vec<Change>,
    /// Names given to the result in the local store.
    pub names: Vec<String>,
    pub record: Record,
    /// The package layers now, how many of them are new blobs (a layer
    /// of unchanged packages keeps its digest), and the app layers kept.
    pub package_layers: usize,
    pub new_layers: usize,
    pub layers_kept: usize,
    /// `Date:` of the suite's Release the set was resolved against.
    pub release_date: String,
    pub suite: String,
    /// How many Debian packages the set has now.
    pub packages: usize,
}

/// Where a rebase reads and writes: the local image store, the build
/// cache's blob store (package downloads and layers) and its snapshots.
pub struct Stores<'a> {
    pub images: &'a ImageStore,
    pub cache: &'a Store,
    pub snapshots: &'a Snapshots,
}

/// [`rebase`] on kiln's default stores (what `kiln rebase` uses).
pub fn rebase_default(reference: &str, tag: Option<&str>, progress: &Progress) -> Result<Rebased> {
    let images = ImageStore::open_default()?;
    let cache = crate::oci::cache_store()?;
    let snapshots = Snapshots::open_default()?;
    let stores = Stores {
        images: &images,
        cache: &cache,
        snapshots: &snapshots,
    };
    rebase(&stores, reference, tag, progress)
}

/// Rebases the local image `reference`, naming the result `tag` (default:
/// `reference` itself, which must then be a name).
pub fn rebase(
    stores: &Stores<'_>,
    reference: &str,
    tag: Option<&str>,
    progress: &Progress,
) -> Result<Rebased> {
    let images = stores.images;
    let desc = images.resolve(reference)?;
    if is_index(desc.media_type()) {
        bail!(
            "{reference} is a multi-platform index: rebase one platform's image (kiln build --platform … -t NAME)"
        );
    }
    let names = match tag {
        Some(t) => vec![normalize_name(t)?],
        None if is_digest_like(reference) => bail!(
            "{reference} names the image by digest: give the rebased image a name with -t NAME"
        ),
        None => vec![normalize_name(reference)?],
    };
    let old = read_image(images.blobs(), &desc, None)?;
    let from = old.digest()?;
    let record = sbom::load(&from)?;
    let (set_index, set) = one_set(&record, reference)?;
    let Some(request) = set.request.clone() else {
        bail!(
            "the SBOM record of {reference} was written by an older kiln (record version {}), which did not keep its package set's request: rebuild the image once with this kiln to enable rebase",
            record.version
        );
    };
    let layers: Vec<Digest> = old
        .manifest
        .layers()
        .iter()
        .map(desc_digest)
        .collect::<Result<_>>()?;
    let base = request.layers.len();
    let bottom: Vec<String> = layers.iter().take(base).map(|d| d.to_string()).collect();
    if base == 0 || bottom != request.layers {
        bail!(
            "the package layers of {reference} are not its bottom layers (the record names {}): kiln rebases only images whose base is the package set",
            request.layers.join(", ")
        );
    }
    refuse_steps_on_base(
        old.config.history().as_deref().unwrap_or_default(),
        base,
        reference,
    )?;

    // The request, resolved against the suite now.
    let platform = Platform::parse(&record.image.platform)
        .map_err(|e| anyhow::anyhow!("the record's platform {:?}: {e}", record.image.platform))?;
    let req = PackagesRequest {
        repo: RepoConfig {
            arch: platform.debian_arch()?.to_string(),
            ..RepoConfig::from_env()
        },
        suite: Some(set.suite.clone()),
        base: request.base,
        recommends: request.recommends,
        packages: request.requests.clone(),
        pull: true,
    };
    let res = crate::packages::image::resolve(&req, progress).with_context(|| {
        format!(
            "resolving {} against {} now",
            request.requests.join(" "),
            set.suite
        )
    })?;
    let lock = Lockfile::from_resolution(&res, request.base, request.recommends, &request.requests);
    let changes = changes(&record, &request.layers, &lock);
    if changes.is_empty() {
        for n in &names {
            images.tag(n, &desc)?;
        }
        return Ok(Rebased {
            from: from.clone(),
            digest: from,
            image: old,
            changes,
            names,
            record,
            package_layers: base,
            new_layers: 0,
            layers_kept: layers.len() - base,
            release_date: lock.release_date,
            suite: lock.suite,
            packages: lock.packages.len(),
        });
    }

    // The new set, written as the old one was.
    let compression = Compression::from_media_type(old.manifest.layers()[0].media_type().as_ref())
        .context("the package layers have an unknown media type")?;
    let created = old.config.created().clone().unwrap_or_default();
    let epoch = chrono::DateTime::parse_from_rfc3339(&created)
        .with_context(|| format!("the image's created time {created:?}"))?
        .timestamp();
    let task = progress.for_steps().task(format!(
        "[packages] {} ({})",
        request.requests.join(" "),
        set.suite
    ));
    let composed = compose::compose(
        &req.repo,
        &crate::packages::fetch::Http::new(),
        stores.cache,
        &lock,
        &ComposeOptions {
            layer: LayerOptions { compression, epoch },
            extra_ca: request
                .extra_ca
                .iter()
                .map(|(n, pem)| (n.clone(), pem.clone().into_bytes()))
                .collect(),
            snapshots: Some(stores.snapshots.clone()),
            ..ComposeOptions::default()
        },
        &progress.under(&task),
    )
    .with_context(|| {
        format!(
            "composing {} from {}",
            request.requests.join(" "),
            set.suite
        )
    })?;
    task.finish(if composed.cached { "cached" } else { "done" });

    // What the app layers need, against the old and the new set.
    let unpack = |store: &Store, d: &Digest, c: Compression| {
        stores.snapshots.ensure(store, d, c).map(|(dir, _)| dir)
    };
    let compression_of = |i: usize| {
        Compression::from_media_type(old.manifest.layers()[i].media_type().as_ref())
            .with_context(|| format!("layer {} has an unknown media type", layers[i]))
    };
    let old_dirs = (0..base)
        .map(|i| unpack(images.blobs(), &layers[i], compression_of(i)?))
        .collect::<Result<Vec<_>>>()?;
    let new_dirs = composed
        .layers
        .iter()
        .map(|l| unpack(stores.cache, &l.blob, l.compression))
        .collect::<Result<Vec<_>>>()?;
    let app_dirs = (base..layers.len())
        .map(|i| unpack(images.blobs(), &layers[i], compression_of(i)?))
        .collect::<Result<Vec<_>>>()?;
    let old_tree = Tree::of_dirs(&old_dirs).context("reading the old package layers")?;
    let new_tree = Tree::of_dirs(&new_dirs).context("reading the new package layers")?;
    let mut needs = AppNeeds::of_dirs(&app_dirs).context("reading the app layers")?;
    if let Some(c) = old.config.config() {
        let path = c
            .env()
            .iter()
            .flatten()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(crate::packages::image::PATH)
            .to_string();
        needs.add_config(
            c.entrypoint().as_deref().unwrap_or_default(),
            c.cmd().as_deref().unwrap_or_default(),
            &path,
            &old_tree,
        );
    }
    let problems = assumptions::check(&old_tree, &new_tree, &needs);
    if !problems.is_empty() {
        bail!("{}", refusal(reference, &problems, &changes));
    }

    // The new image: new package layers, the old app layers and config.
    let mut builder = ImageBuilder::from_image(&old);
    let new_layers: Vec<_> = composed
        .layers
        .iter()
        .map(|l| (l.to_layer(), crate::packages::image::layer_history(l)))
        .collect();
    builder.replace_bottom_layers(base, &new_layers)?;
    if let Some(labels) = builder.config_mut().labels_mut().as_mut()
        && let Some(date) = labels.get_mut(RELEASE_DATE_LABEL)
        && *date == set.release_date
    {
        *date = lock.release_date.clone();
    }
    let image = builder.write(stores.cache, epoch)?;
    let digest = image.digest()?;
    for d in &layers[base..] {
        stores.cache.import_from(images.blobs(), d)?;
    }
    let record = rebased_record(
        &record,
        set_index,
        &image,
        &lock,
        &composed.layers,
        &new_dirs,
        &req.repo.mirror,
    )?;
    sbom::save(&record)?;
    for n in &names {
        images.import(stores.cache, &image.manifest_desc, n)?;
    }
    Ok(Rebased {
        from,
        digest,
        image,
        changes,
        names,
        record,
        package_layers: composed.layers.len(),
        new_layers: composed
            .layers
            .iter()
            .filter(|l| !layers[..base].contains(&l.blob))
            .count(),
        layers_kept: layers.len() - base,
        release_date: lock.release_date,
        suite: lock.suite,
        packages: lock.packages.len(),
    })
}

/// `sha256:…` or a hex prefix, as [`ImageStore::resolve`] accepts them.
fn is_digest_like(reference: &str) -> bool {
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    reference.starts_with("sha256:")
        || (hex.len() >= 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The one package set the image holds, and its index in the record.
fn one_set<'a>(
    record: &'a Record,
    reference: &str,
) -> Result<(usize, &'a crate::sbom::PackageSetInfo)> {
    let sets: Vec<(usize, &crate::sbom::PackageSetInfo)> = record
        .build
        .package_sets
        .iter()
        .enumerate()
        .filter(|(_, s)| s.in_image)
        .collect();
    match sets.as_slice() {
        [one] => Ok(*one),
        [] => bail!(
            "{reference} holds no Debian package layers kiln composed (its runtime is another image, scratch, or the build stage): there is nothing to rebase; rebuild it with --pull for newer packages"
        ),
        more => bail!(
            "{reference} holds {} Debian package sets; kiln rebase re-composes an image with one",
            more.len()
        ),
    }
}

/// Refuses an image with a layer above the package base that a `RUN` step
/// made: what such a step wrote may depend on the packages' files (a
/// `useradd` appends to their `/etc/passwd`), which a rebase cannot redo.
fn refuse_steps_on_base(
    history: &[oci_spec::image::History],
    base: usize,
    reference: &str,
) -> Result<()> {
    let mut layer = 0;
    for h in history {
        if h.empty_layer() == Some(true) {
            continue;
        }
        layer += 1;
        if layer <= base {
            continue;
        }
        let by = h.created_by().as_deref().unwrap_or("");
        if by.trim_start().to_ascii_uppercase().starts_with("RUN") {
            bail!(
                "layer {layer} of {reference} was written by a step that ran on the package layers ({}): its files may derive from the packages' content, so kiln does not rebase it; rebuild with `kiln build --pull` instead",
                one_line(by)
            );
        }
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > 80 {
        format!("{}…", line.chars().take(80).collect::<String>())
    } else {
        line.to_string()
    }
}

/// The packages whose version differs between the image's set (its
/// record's packages in the set's layers) and `lock`, by name.
pub fn changes(record: &Record, set_layers: &[String], lock: &Lockfile) -> Vec<Change> {
    let old: BTreeMap<&str, &str> = record
        .debian
        .iter()
        .filter(|p| set_layers.contains(&p.layer))
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    let new: BTreeMap<&str, (&str, &str)> = lock
        .packages
        .iter()
        .map(|p| (p.name.as_str(), (p.version.as_str(), p.archive.as_str())))
        .collect();
    let mut names: Vec<&str> = old.keys().chain(new.keys()).copied().collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter_map(|n| {
            let o = old.get(n).copied();
            let nw = new.get(n).copied();
            if o.is_some() && o == nw.map(|(v, _)| v) {
                return None;
            }
            Some(Change {
                name: n.to_string(),
                old: o.map(String::from),
                new: nw.map(|(v, _)| v.to_string()),
                archive: nw.map(|(_, a)| a.to_string()),
            })
        })
        .collect()
}

/// Why the new set is refused, naming each file, what it needs and the
/// package change that takes it away.
fn refusal(reference: &str, problems: &[Problem], changes: &[Change]) -> String {
    let change_of = |p: Option<&str>| {
        p.and_then(|p| changes.iter().find(|c| c.name == p))
            .map(|c| format!(" ({c})"))
            .or_else(|| p.map(|p| format!(" (package {p})")))
            .unwrap_or_default()
    };
    let mut s = format!(
        "not rebasing {reference}: the new Debian packages take away what its app layers need:"
    );
    for p in problems {
        match p {
            Problem::Library {
                soname, by, path, ..
            } => s.push_str(&format!(
                "\n  {by} needs {soname} (ELF NEEDED), which {path}{} provided; no library of that soname is in the new packages",
                change_of(p.package())
            )),
            Problem::File { path, by, .. } => s.push_str(&format!(
                "\n  {by} refers to {path}{}, which the new packages lack",
                change_of(p.package())
            )),
        }
    }
    s.push_str(
        "\nrebuild the image instead (kiln build --pull), so that its files are built against the new packages",
    );
    s
}

/// The record of the rebased image: the old one with the image, the
/// set's packages and the set's resolution replaced.
fn rebased_record(
    old: &Record,
    set_index: usize,
    image: &Image,
    lock: &Lockfile,
    layers: &[PackageLayer],
    dirs: &[std::path::PathBuf],
    mirror: &str,
) -> Result<Record> {
    let mut r = old.clone();
    let set = &mut r.build.package_sets[set_index];
    let old_layers = set
        .request
        .as_ref()
        .map(|q| q.layers.clone())
        .unwrap_or_default();
    set.release_date = lock.release_date.clone();
    set.digest = lock.digest()?.to_string();
    set.mirror = mirror.to_string();
    if let Some(q) = set.request.as_mut() {
        q.layers = layers.iter().map(|l| l.blob.to_string()).collect();
    }
    r.build.package_sets.sort_by(|a, b| a.digest.cmp(&b.digest));
    r.debian.retain(|p| !old_layers.contains(&p.layer));
    r.debian.extend(sbom::debian::packages(lock, layers, dirs));
    r.debian.sort();
    r.image.digest = image.digest()?.to_string();
    r.image.layers = image
        .manifest
        .layers()
        .iter()
        .map(|l| desc_digest(l).map(|d| d.to_string()))
        .collect::<Result<_>>()?;
    r.version = sbom::RECORD_VERSION;
    r.build.rebased_from = Some(old.image.digest.clone());
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::lock::LockedPackage;

    fn locked(name: &str, version: &str, archive: &str) -> LockedPackage {
        LockedPackage {
            name: name.into(),
            version: version.into(),
            arch: "amd64".into(),
            archive: archive.into(),
            filename: format!("pool/main/{name}.deb"),
            sha256: "00".repeat(32),
            size: 1,
        }
    }

    #[test]
    fn changes_are_the_packages_whose_version_differs_by_name() {
        let mut record = crate::sbom::fixture::record();
        let layer = record.debian[0].layer.clone();
        let mut zstd = record.debian[0].clone();
        zstd.name = "libzstd1".into();
        zstd.version = "1.5.7+dfsg-1".into();
        let mut gone = zstd.clone();
        gone.name = "gone".into();
        // A package of another set (another layer) is not this set's.
        let mut other = zstd.clone();
        other.name = "other".into();
        other.layer = format!("sha256:{}", "99".repeat(32));
        record.debian.extend([zstd, gone, other]);
        let lock = Lockfile {
            version: 1,
            suite: "trixie".into(),
            arch: "amd64".into(),
            release_date: "d".into(),
            base: Default::default(),
            recommends: false,
            requests: vec![],
            packages: vec![
                locked("libc6", "2.41-12", "trixie"),
                locked("libzstd1", "1.5.7+dfsg-1+deb13u1", "trixie-security"),
                locked("new", "1", "trixie"),
            ],
        };
        let c: Vec<String> = changes(&record, &[layer], &lock)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            c,
            vec![
                "gone: 1.5.7+dfsg-1 → (removed)",
                "libzstd1: 1.5.7+dfsg-1 → 1.5.7+dfsg-1+deb13u1 (trixie-security)",
                "new: (not installed) → 1 (trixie)",
            ]
        );
    }

    #[test]
    fn a_refusal_names_the_file_the_soname_and_the_package_change() {
        let changes = vec![Change {
            name: "libpq5".into(),
            old: Some("15.1-1".into()),
            new: None,
            archive: None,
        }];
        let text = refusal(
            "app:1",
            &[Problem::Library {
                soname: "libpq.so.5".into(),
                by: "/app/server".into(),
                path: "/usr/lib/x86_64-linux-gnu/libpq.so.5".into(),
                package: Some("libpq5".into()),
            }],
            &changes,
        );
        assert!(
            text.contains("/app/server needs libpq.so.5 (ELF NEEDED)")
                && text.contains("libpq5: 15.1-1 → (removed)")
                && text.contains("kiln build --pull"),
            "{text}"
        );
    }

    #[test]
    fn a_layer_a_run_step_wrote_over_the_packages_is_refused() {
        use oci_spec::image::HistoryBuilder;
        let h = |by: &str, empty: bool| {
            HistoryBuilder::default()
                .created_by(by.to_string())
                .empty_layer(empty)
                .build()
                .unwrap()
        };
        let base = [
            h("kiln packages: libc6", false),
            h("kiln packages: dpkg database and configuration", false),
        ];
        let copies = [
            h("COPY → /app", false),
            h("RUN (check the shared libraries)", true),
            h("CMD", true),
        ];
        let ok: Vec<_> = base.iter().chain(&copies).cloned().collect();
        refuse_steps_on_base(&ok, 2, "app:1").unwrap();
        let mut run = ok.clone();
        run.push(h(
            "RUN sh -c 'echo app:x:1000:1000::/home/app:/bin/sh >> /etc/passwd'",
            false,
        ));
        let e = refuse_steps_on_base(&run, 2, "app:1")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("layer 4 of app:1") && e.contains("RUN sh -c") && e.contains("--pull"),
            "{e}"
        );
        // The package base's own layers are no app layers.
        refuse_steps_on_base(&run, 4, "app:1").unwrap();
    }

    #[test]
    fn digests_need_a_new_name() {
        assert!(is_digest_like("sha256:abc"));
        assert!(is_digest_like("0123abcd"));
        assert!(!is_digest_like("app:1"));
        assert!(!is_digest_like("cafe"));
    }
}
