//! Shipping an image to a server over SSH, sending only the blobs it lacks.
//!
//! Agentless: the server needs `sh` and coreutils, nothing else. Over one
//! multiplexed `ssh` connection ([`ssh`]) kiln runs small scripts
//! ([`script`]) that list the blobs of the remote OCI layout, receive each
//! missing blob into a temp name, check its sha256 on the server and rename
//! it into place, and finally replace `index.json` (with the tag) by an
//! atomic rename after checking that every blob is there. An interrupted
//! transfer therefore never leaves a tag pointing at missing blobs, and a
//! rerun sends only the blobs that did not arrive. The protocol, its
//! guarantees and what the server needs are in `docs/transfer.md`.
//!
//! ```no_run
//! use kiln::oci::ImageStore;
//! use kiln::progress::Progress;
//! use kiln::transfer::{self, Engine, SshTarget, TransferOptions};
//!
//! let images = ImageStore::open_default()?;
//! let manifest = images.resolve("app:1")?;
//! let target = SshTarget::parse("ssh://deploy@web1:2222/srv/images")?;
//! let opts = TransferOptions { load: Some(Engine::Podman), ..Default::default() };
//! let summary = transfer::send(images.blobs(), &manifest, "app:1", &target, &opts, &Progress::quiet())?;
//! println!("{} blobs sent ({} bytes)", summary.blobs_sent, summary.bytes_sent);
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`target`] | `ssh://[USER@]HOST[:PORT][/PATH]` URLs |
//! | [`ssh`] | the ControlMaster connection and running commands over it |
//! | [`script`] | the server-side shell scripts and their quoting |
//! | [`load`] | `--load podman|docker` on the server |

pub mod load;
pub mod script;
pub mod ssh;
pub mod target;

use std::collections::HashSet;
use std::io::Read;

use anyhow::{Context, bail};
use oci_spec::image::Descriptor;

use crate::Result;
use crate::oci::image::{self, is_index, is_manifest};
use crate::oci::layout::REF_NAME;
use crate::oci::{Digest, Store};
use crate::progress::{Progress, Task};

pub use load::Engine;
pub use ssh::{Connection, SshOptions};
pub use target::{DEFAULT_REMOTE_STORE, SshTarget};

/// How to transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferOptions {
    pub ssh: SshOptions,
    /// Make the image available to this engine on the server afterwards.
    pub load: Option<Engine>,
}

/// What a transfer did, from kiln's own counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransferSummary {
    /// The target URL.
    pub target: String,
    /// The OCI layout on the server (as the server's shell expanded it).
    pub remote_path: String,
    /// The name in the remote layout's index.json.
    pub tag: String,
    /// The manifest (or index) digest the tag points at.
    pub digest: String,
    /// Blobs sent (the manifest and config count as blobs).
    pub blobs_sent: usize,
    /// Blobs the server had already.
    pub blobs_present: usize,
    /// Blob bytes sent.
    pub bytes_sent: u64,
    /// The command run on the server by `--load`, if any.
    pub loaded: Option<String>,
    /// Every blob of the image, in the order sent.
    #[serde(skip)]
    pub blobs: Vec<Digest>,
}

/// Sends the image whose manifest (or index) is `manifest` from `store` to
/// `target`, names it `tag` in the remote layout, and loads it into an
/// engine if `opts.load` asks.
pub fn send(
    store: &Store,
    manifest: &Descriptor,
    tag: &str,
    target: &SshTarget,
    opts: &TransferOptions,
    progress: &Progress,
) -> Result<TransferSummary> {
    let tag = crate::oci::images::normalize_name(tag)?;
    let blobs = blobs_in_order(store, manifest)?;
    let root_digest = image::desc_digest(manifest)?;
    let conn = Connection::open(target, &opts.ssh)?;
    let arg_path = target.path.clone().unwrap_or_default();

    let reply = conn.run(&script::prepare(), &[&arg_path], None)?;
    match reply.code {
        Some(0) => {}
        Some(script::exit::MISSING_TOOL) => bail!(
            "the server {target} lacks `{}`, which kiln's transfer needs (it uses only sh and coreutils: sha256sum, mv, mkdir, cat, ls, rm): install coreutils there or fix the PATH of the ssh user",
            reply.stderr.trim()
        ),
        Some(script::exit::SYMLINKED) => bail!(
            "{target}: {} is a symbolic link: kiln writes the remote store only into real directories and files (remove the link, or give another path)",
            reply.stderr.trim()
        ),
        Some(script::exit::NOT_A_LAYOUT) => bail!(
            "{target}: the directory exists and is not an OCI image layout: give an empty or new directory, or an existing kiln store"
        ),
        _ => bail!(remote_failure(target, "preparing the image store", &reply)),
    }
    let remote = Prepared::parse(&reply.stdout)
        .with_context(|| format!("{target}: unexpected answer from the server"))?;
    let remote_path = remote.root.clone();
    if !remote_path.starts_with('/') {
        bail!(
            "{target}: the remote store path {remote_path:?} is not absolute (is $HOME set for the ssh user?)"
        );
    }

    let mut summary = TransferSummary {
        target: target.to_string(),
        remote_path: remote_path.clone(),
        tag: tag.clone(),
        digest: root_digest.to_string(),
        blobs: blobs.iter().map(|(d, _)| d.clone()).collect(),
        ..Default::default()
    };
    let mut missing = Vec::new();
    for (digest, size) in &blobs {
        if remote.blobs.contains(digest.hex()) {
            summary.blobs_present += 1;
            progress
                .task(format!("send {}", digest.short()))
                .finish("skipped");
        } else {
            missing.push((digest.clone(), *size));
        }
    }
    summary.blobs_sent = missing.len();
    summary.bytes_sent = missing.iter().map(|(_, n)| n).sum();
    let entry = index_entry(manifest, &tag)?;
    let tagged = if remote.gnu_head {
        // Blobs and the tag in one round trip, unless index.json changed.
        let (old, bytes) = (
            Digest::of(&remote.index),
            edit_index(&remote.index, &tag, &entry)
                .with_context(|| format!("{target}: {remote_path}/index.json"))?,
        );
        send_batch(
            &conn,
            target,
            store,
            &remote_path,
            &missing,
            &blobs,
            &old,
            &bytes,
            progress,
        )?
    } else {
        for blob in &missing {
            send_one(&conn, target, store, &remote_path, blob, progress)?;
        }
        false
    };
    if !tagged {
        tag_remote(&conn, target, &remote_path, &tag, &entry, &blobs)?;
    }
    if let Some(engine) = opts.load {
        summary.loaded = Some(load::load(
            &conn,
            target,
            &remote_path,
            &tag,
            engine,
            store,
            manifest,
            progress,
        )?);
    }
    Ok(summary)
}

/// Every blob of the image with its size, layers and configs first, then
/// manifests, then indexes, so the top-level manifest arrives last.
fn blobs_in_order(store: &Store, root: &Descriptor) -> Result<Vec<(Digest, u64)>> {
    let mut items = image::closure(store, root)?;
    items.sort_by_key(|(_, mt)| {
        if is_index(mt) {
            2
        } else if is_manifest(mt) {
            1
        } else {
            0
        }
    });
    let mut out = Vec::new();
    for (d, _) in items {
        if !store.contains(&d) {
            bail!(
                "blob {d} of the image is not in the local store {}: pull or rebuild the image",
                store.root().display()
            );
        }
        let size = store.size(&d)?;
        out.push((d, size));
    }
    Ok(out)
}

/// What the prepare script reported.
struct Prepared {
    root: String,
    gnu_head: bool,
    blobs: HashSet<String>,
    index: Vec<u8>,
}

impl Prepared {
    fn parse(out: &[u8]) -> Result<Prepared> {
        let text = String::from_utf8_lossy(out);
        let (head, index) = text
            .split_once("\nindex\n")
            .context("no index.json in the answer")?;
        let (head, listing) = head.split_once("\nblobs\n").unwrap_or((head, ""));
        let mut lines = head.lines();
        let root = lines
            .next()
            .and_then(|l| l.strip_prefix("root "))
            .context("no store path in the answer")?
            .to_string();
        let gnu_head = lines.any(|l| l == "head gnu");
        let blobs = listing
            .lines()
            .filter(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_string)
            .collect();
        Ok(Prepared {
            root,
            gnu_head,
            blobs,
            index: index.as_bytes().to_vec(),
        })
    }
}

/// Sends one blob in its own remote command (servers without GNU head).
fn send_one(
    conn: &Connection,
    target: &SshTarget,
    store: &Store,
    root: &str,
    (digest, size): &(Digest, u64),
    progress: &Progress,
) -> Result<()> {
    let task = progress.task(format!("send {}", digest.short()));
    let mut reader = crate::progress::Reading::new(store.open_blob(digest)?, *size, &task);
    let reply = conn.run(
        &script::receive_blob(),
        &[root, digest.hex()],
        Some(&mut reader),
    )?;
    match reply.code {
        Some(0) => {}
        Some(script::exit::DIGEST_MISMATCH) => bail!(
            "{target}: blob {digest} arrived corrupted ({}); nothing was renamed into place: rerun the transfer",
            reply.stderr.trim()
        ),
        _ => bail!(remote_failure(
            target,
            &format!("sending blob {digest}"),
            &reply
        )),
    }
    check_size(digest, *size, reader.done())?;
    task.bytes(*size, Some(*size));
    task.finish("done");
    Ok(())
}

/// Sends all missing blobs back to back, then the edited index.json, in
/// one remote command. Returns false when index.json changed on the server
/// meanwhile (the blobs are in place; the caller retags).
#[allow(clippy::too_many_arguments)]
fn send_batch(
    conn: &Connection,
    target: &SshTarget,
    store: &Store,
    root: &str,
    missing: &[(Digest, u64)],
    all: &[(Digest, u64)],
    old_index: &Digest,
    index: &[u8],
    progress: &Progress,
) -> Result<bool> {
    let sizes: Vec<String> = missing.iter().map(|(_, n)| n.to_string()).collect();
    let (isize, count) = (index.len().to_string(), missing.len().to_string());
    let mut args = vec![root, old_index.hex(), &isize, &count];
    for ((d, _), n) in missing.iter().zip(&sizes) {
        args.push(d.hex());
        args.push(n);
    }
    args.extend(all.iter().map(|(d, _)| d.hex()));
    let mut reader = Batch {
        store,
        blobs: missing,
        next: 0,
        current: None,
        progress,
    }
    .chain(index);
    let reply = conn.run(&script::receive_and_tag(), &args, Some(&mut reader))?;
    let placed = String::from_utf8_lossy(&reply.stdout)
        .lines()
        .filter(|l| l.starts_with("ok "))
        .count();
    match reply.code {
        Some(0) if placed == missing.len() => Ok(true),
        Some(script::exit::INDEX_CHANGED) if placed == missing.len() => Ok(false),
        Some(script::exit::DIGEST_MISMATCH) => bail!(
            "{target}: a blob arrived corrupted ({}); {placed} blobs before it were verified and kept, nothing corrupt was renamed into place: rerun the transfer",
            reply.stderr.trim()
        ),
        Some(script::exit::MISSING_BLOB) => bail!(vanished(target, root, &reply)),
        _ => bail!(remote_failure(
            target,
            &format!("sending blobs ({placed} of {} in place)", missing.len()),
            &reply
        )),
    }
}

fn vanished(target: &SshTarget, root: &str, reply: &ssh::Reply) -> String {
    format!(
        "{target}: blob {} vanished from {root} before the tag was written (another process pruning?); the tag was not written: rerun the transfer",
        reply.stderr.trim()
    )
}

/// The index.json entry naming the image.
fn index_entry(manifest: &Descriptor, tag: &str) -> Result<serde_json::Value> {
    let mut entry = manifest.clone();
    entry.set_annotations(Some(
        [(REF_NAME.to_string(), tag.to_string())]
            .into_iter()
            .collect(),
    ));
    Ok(serde_json::to_value(&entry)?)
}

/// `index` with `tag`'s entry replaced by `entry`, other entries and fields kept.
fn edit_index(index: &[u8], tag: &str, entry: &serde_json::Value) -> Result<Vec<u8>> {
    let mut index: serde_json::Value =
        serde_json::from_slice(index).context("not valid JSON; fix or remove it")?;
    let list = index
        .get_mut("manifests")
        .and_then(|m| m.as_array_mut())
        .context("no manifests list; fix or remove it")?;
    list.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag));
    list.push(entry.clone());
    Ok(serde_json::to_vec_pretty(&index)?)
}

fn check_size(digest: &Digest, want: u64, got: u64) -> Result<()> {
    if got != want {
        bail!(
            "blob {digest} in the local store is {got} bytes, its descriptor says {want}: run `kiln cache verify`"
        );
    }
    Ok(())
}

/// The missing blobs as one stream, with a progress task per blob.
struct Batch<'a> {
    store: &'a Store,
    blobs: &'a [(Digest, u64)],
    next: usize,
    current: Option<(std::fs::File, Task, u64, u64, std::time::Instant)>,
    progress: &'a Progress,
}

impl Read for Batch<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.current.is_none() {
                let Some((digest, size)) = self.blobs.get(self.next) else {
                    return Ok(0);
                };
                self.next += 1;
                let file = self
                    .store
                    .open_blob(digest)
                    .map_err(std::io::Error::other)?;
                let task = self.progress.task(format!("send {}", digest.short()));
                self.current = Some((file, task, 0, *size, std::time::Instant::now()));
            }
            let Some((file, task, done, size, last)) = self.current.as_mut() else {
                continue;
            };
            // Never more than the descriptor's size: the server splits on it.
            let room = (*size - *done).min(buf.len() as u64) as usize;
            let n = if room == 0 {
                0
            } else {
                file.read(&mut buf[..room])?
            };
            if n == 0 {
                let (_, task, done, size, _) = self.current.take().expect("current blob");
                let digest = &self.blobs[self.next - 1].0;
                check_size(digest, size, done).map_err(std::io::Error::other)?;
                task.bytes(size, Some(size));
                task.finish("done");
                continue;
            }
            *done += n as u64;
            if last.elapsed().as_millis() >= 100 {
                *last = std::time::Instant::now();
                task.bytes(*done, Some(*size));
            }
            return Ok(n);
        }
    }
}

/// Points `tag` at the image in the remote index.json: read it, edit it
/// here, write it back only if every blob is in place and nobody changed
/// the index meanwhile (retried a few times if somebody did).
fn tag_remote(
    conn: &Connection,
    target: &SshTarget,
    root: &str,
    tag: &str,
    entry: &serde_json::Value,
    blobs: &[(Digest, u64)],
) -> Result<()> {
    for _ in 0..5 {
        let reply = conn.run(&script::read_index(), &[root], None)?;
        if !reply.ok() {
            bail!(remote_failure(target, "reading index.json", &reply));
        }
        let old = Digest::of(&reply.stdout);
        let bytes = edit_index(&reply.stdout, tag, entry)
            .with_context(|| format!("{target}: {root}/index.json"))?;
        let mut args = vec![root, old.hex()];
        args.extend(blobs.iter().map(|(d, _)| d.hex()));
        let reply = conn.run(&script::write_index(), &args, Some(&mut bytes.as_slice()))?;
        match reply.code {
            Some(0) => return Ok(()),
            Some(script::exit::INDEX_CHANGED) => continue,
            Some(script::exit::MISSING_BLOB) => bail!(vanished(target, root, &reply)),
            _ => bail!(remote_failure(target, "writing index.json", &reply)),
        }
    }
    bail!(
        "{target}: {root}/index.json kept changing while kiln tried to tag {tag} (concurrent pushes?): rerun the transfer"
    )
}

fn remote_failure(target: &SshTarget, what: &str, reply: &ssh::Reply) -> String {
    let code = reply
        .code
        .map_or("a signal".to_string(), |c| format!("code {c}"));
    format!(
        "{target}: {what} failed on the server (exit {code}): {}",
        reply.stderr.trim()
    )
}
