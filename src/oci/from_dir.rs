//! One-layer images from a directory (`kiln image from-dir`): the simplest
//! end-to-end use of the core, and the plumbing under `COPY`-only images.

use std::path::Path;

use anyhow::{Context, bail};
use oci_spec::image::Config;

use super::image::{Image, ImageBuilder, host_platform, set_env};
use super::layer::{LayerOptions, Ownership, ScanOptions, scan_dir, write_layer};
use super::store::Store;
use crate::Result;
use crate::platform::Platform;
use crate::progress::Progress;

/// What goes into the image besides the directory.
#[derive(Debug, Clone, Default)]
pub struct FromDirOptions {
    pub layer: LayerOptions,
    pub ownership: Ownership,
    pub platform: Option<Platform>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// `K=V` entries, in order; later ones win.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// `8080`, `8080/tcp`, `53/udp`.
    pub expose: Vec<String>,
    pub labels: Vec<(String, String)>,
}

/// Builds a one-layer image of `dir` into `store`.
pub fn image_from_dir(
    store: &Store,
    dir: &Path,
    opts: &FromDirOptions,
    progress: &Progress,
) -> Result<Image> {
    let task = progress.task(format!("layer from {}", dir.display()));
    let scan = scan_dir(
        dir,
        &ScanOptions {
            ownership: opts.ownership,
            prefix: None,
        },
    )?;
    for (path, why) in &scan.skipped {
        progress.warn(format!("skipped {}: {why}", path.display()));
    }
    let count = scan.entries.len();
    let layer = write_layer(store, scan.entries, opts.layer)?;
    task.log(&format!(
        "{count} entries, {} bytes, {}",
        layer.blob.size, layer.blob.digest
    ));
    task.finish("done");

    let mut b = ImageBuilder::scratch(opts.platform.clone().unwrap_or_else(host_platform));
    b.add_layer(
        &layer,
        &format!(
            "kiln image from-dir {}",
            dir.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ),
    );
    let config: &mut Config = b.config_mut();
    for kv in &opts.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env {kv:?} is not KEY=VALUE"))?;
        if k.is_empty() {
            bail!("--env {kv:?} has an empty name");
        }
        set_env(config, k, v);
    }
    if let Some(cmd) = &opts.cmd {
        config.set_cmd(Some(cmd.clone()));
    }
    if let Some(ep) = &opts.entrypoint {
        config.set_entrypoint(Some(ep.clone()));
    }
    if let Some(w) = &opts.workdir {
        config.set_working_dir(Some(w.clone()));
    }
    if let Some(u) = &opts.user {
        config.set_user(Some(u.clone()));
    }
    if !opts.expose.is_empty() {
        let mut ports: Vec<String> = opts
            .expose
            .iter()
            .map(|p| normalize_port(p))
            .collect::<Result<_>>()?;
        ports.sort();
        ports.dedup();
        config.set_exposed_ports(Some(ports));
    }
    if !opts.labels.is_empty() {
        config.set_labels(Some(opts.labels.iter().cloned().collect()));
    }
    b.write(store, opts.layer.epoch)
}

/// `8080` → `8080/tcp`; checks the number and protocol.
pub fn normalize_port(p: &str) -> Result<String> {
    let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let ok_num = num.parse::<u16>().is_ok_and(|n| n > 0);
    if !ok_num || !matches!(proto, "tcp" | "udp" | "sctp") {
        bail!("invalid port {p:?}: expected PORT[/tcp|udp|sctp] with PORT in 1-65535");
    }
    Ok(format!("{num}/{proto}"))
}

/// A command given as a JSON array (exec form) or a string (shell form,
/// run with `/bin/sh -c`), as in a Dockerfile.
pub fn parse_command(s: &str) -> Result<Vec<String>> {
    let t = s.trim();
    if t.starts_with('[') {
        return serde_json::from_str::<Vec<String>>(t)
            .with_context(|| format!("{s:?} looks like a JSON array but is not one of strings"));
    }
    if t.is_empty() {
        bail!("empty command");
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), s.to_string()])
}
