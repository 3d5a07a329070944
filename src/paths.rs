//! Where kiln keeps its state: XDG base directories, overridable.
//!
//! | what | default | override |
//! |---|---|---|
//! | blob store + step cache | `$XDG_CACHE_HOME/kiln` (`~/.cache/kiln`) | `KILN_CACHE_DIR` |
//! | local image store (an OCI layout) | `$XDG_DATA_HOME/kiln/images` (`~/.local/share/kiln/images`) | `KILN_DATA_DIR` (the parent) |

use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::Result;

fn home() -> Result<PathBuf> {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => Ok(PathBuf::from(h)),
        _ => bail!("HOME is not set: set HOME, or KILN_CACHE_DIR and KILN_DATA_DIR"),
    }
}

fn xdg(var: &str, fallback: &str) -> Result<PathBuf> {
    match std::env::var_os(var) {
        // The XDG spec says relative values are invalid and must be ignored.
        Some(v) if PathBuf::from(&v).is_absolute() => Ok(PathBuf::from(v)),
        _ => Ok(home()
            .context("finding the XDG directories")?
            .join(fallback)),
    }
}

/// Root of the blob store and step cache.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("KILN_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    Ok(xdg("XDG_CACHE_HOME", ".cache")?.join("kiln"))
}

/// Root of kiln's persistent data (the local image store lives below it).
pub fn data_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("KILN_DATA_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    Ok(xdg("XDG_DATA_HOME", ".local/share")?.join("kiln"))
}
