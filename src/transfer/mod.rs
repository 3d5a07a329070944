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
#[derive(Debug, Clone, Default)]
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
        Some(script::exit::NOT_A_LAYOUT) => bail!(
            "{target}: the directory exists and is not an OCI image layout: give an empty or new directory, or an existing kiln store"
        ),
        _ => bail!(remote_failure(target, "preparing the image store", &reply)),
    }
    let text = String::from_utf8_lossy(&reply.stdout);
    let mut lines = text.lines();
    let remote_path = lines
        .next()
        .and_then(|l| l.strip_prefix("root "))
        .with_context(|| format!("{target}: unexpected answer from the server: {text:?}"))?
        .to_string();
    if !remote_path.starts_with('/') {
        bail!(
            "{target}: the remote store path {remote_path:?} is not absolute (is $HOME set for the ssh user?)"
        );
    }
    let present: HashSet<&str> = lines
        .filter(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();

    let mut summary = TransferSummary {
        target: target.to_string(),
        remote_path: remote_path.clone(),
        tag: tag.clone(),
        digest: root_digest.to_string(),
        blobs: blobs.iter().map(|(d, _)| d.clone()).collect(),
        ..Default::default()
    };
    for (digest, size) in &blobs {
        let task = progress.task(format!("send {}", digest.short()));
        if present.contains(digest.hex()) {
            summary.blobs_present += 1;
            task.finish("skipped");
            continue;
        }
        let file = store.open_blob(digest)?;
        let mut reader = Progressing {
            inner: file,
            done: 0,
            total: *size,
            task: &task,
            last: std::time::Instant::now(),
        };
        let reply = conn.run(
            &script::receive_blob(),
            &[&remote_path, digest.hex()],
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
        if reader.done != *size {
            bail!(
                "blob {digest} in the local store is {} bytes, its descriptor says {size}: run `kiln cache verify`",
                reader.done
            );
        }
        task.bytes(*size, Some(*size));
        task.finish("done");
        summary.blobs_sent += 1;
        summary.bytes_sent += *size;
    }

    tag_remote(&conn, target, &remote_path, &tag, manifest, &blobs)?;
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

/// Points `tag` at `manifest` in the remote index.json: read it, edit it
/// here, write it back only if every blob is in place and nobody changed
/// the index meanwhile (retried a few times if somebody did).
fn tag_remote(
    conn: &Connection,
    target: &SshTarget,
    root: &str,
    tag: &str,
    manifest: &Descriptor,
    blobs: &[(Digest, u64)],
) -> Result<()> {
    let mut entry = manifest.clone();
    entry.set_annotations(Some(
        [(REF_NAME.to_string(), tag.to_string())]
            .into_iter()
            .collect(),
    ));
    let entry = serde_json::to_value(&entry)?;
    for _ in 0..5 {
        let reply = conn.run(&script::read_index(), &[root], None)?;
        if !reply.ok() {
            bail!(remote_failure(target, "reading index.json", &reply));
        }
        let old = Digest::of(&reply.stdout);
        let mut index: serde_json::Value =
            serde_json::from_slice(&reply.stdout).with_context(|| {
                format!("{target}: {root}/index.json is not valid JSON; fix or remove it")
            })?;
        let list = index
            .get_mut("manifests")
            .and_then(|m| m.as_array_mut())
            .with_context(|| format!("{target}: {root}/index.json has no manifests list"))?;
        list.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag));
        list.push(entry.clone());
        let bytes = serde_json::to_vec_pretty(&index)?;
        let mut args = vec![root, old.hex()];
        args.extend(blobs.iter().map(|(d, _)| d.hex()));
        let reply = conn.run(&script::write_index(), &args, Some(&mut bytes.as_slice()))?;
        match reply.code {
            Some(0) => return Ok(()),
            Some(script::exit::INDEX_CHANGED) => continue,
            Some(script::exit::MISSING_BLOB) => bail!(
                "{target}: blob {} vanished from {root} before the tag was written (another process pruning?); the tag was not written: rerun the transfer",
                reply.stderr.trim()
            ),
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

/// Reports bytes read through it (the blob's progress).
struct Progressing<'a, R> {
    inner: R,
    done: u64,
    total: u64,
    task: &'a Task,
    last: std::time::Instant,
}

impl<R: Read> Read for Progressing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.last.elapsed().as_millis() >= 100 {
            self.last = std::time::Instant::now();
            self.task.bytes(self.done, Some(self.total));
        }
        Ok(n)
    }
}
