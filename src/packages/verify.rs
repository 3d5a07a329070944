//! OpenPGP verification of `InRelease` files against the Debian archive
//! keys that kiln ships as data (`data/keyrings/*.gpg`, copied from
//! `debian-archive-keyring`), plus any keyrings the user adds
//! (`KILN_DEBIAN_KEYRINGS`, colon-separated, or [`super::repo::RepoConfig`]).
//!
//! Verification runs `gpgv` as a subprocess, exactly as apt does. The pure
//! Rust alternative (`pgp`/rpgp) was not used: it adds ~60 crypto crates to
//! a build that several jobs share on small CI machines, and apt's own
//! choice means gpgv's semantics (expired or revoked keys, subkeys, several
//! signatures of which one good one suffices) are the ones Debian's archive
//! is signed for. gpgv ships in every Debian and Ubuntu base system
//! (package `gpgv`); elsewhere install it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::Result;

/// The keyrings kiln ships: (file name, bytes).
pub const SHIPPED: &[(&str, &[u8])] = &[
    (
        "debian-archive-bookworm-automatic.gpg",
        include_bytes!("../../data/keyrings/debian-archive-bookworm-automatic.gpg"),
    ),
    (
        "debian-archive-bookworm-security-automatic.gpg",
        include_bytes!("../../data/keyrings/debian-archive-bookworm-security-automatic.gpg"),
    ),
    (
        "debian-archive-bookworm-stable.gpg",
        include_bytes!("../../data/keyrings/debian-archive-bookworm-stable.gpg"),
    ),
    (
        "debian-archive-trixie-automatic.gpg",
        include_bytes!("../../data/keyrings/debian-archive-trixie-automatic.gpg"),
    ),
    (
        "debian-archive-trixie-security-automatic.gpg",
        include_bytes!("../../data/keyrings/debian-archive-trixie-security-automatic.gpg"),
    ),
    (
        "debian-archive-trixie-stable.gpg",
        include_bytes!("../../data/keyrings/debian-archive-trixie-stable.gpg"),
    ),
];

/// A signature check failed: the file must not be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "{file}: the OpenPGP signature does not verify against the Debian archive keys ({detail}): refused. The mirror may be tampered with or the file corrupt; try another mirror (KILN_DEBIAN_MIRROR), or add the signing key with KILN_DEBIAN_KEYRINGS"
)]
pub struct BadSignature {
    pub file: String,
    pub detail: String,
}

/// Writes the shipped keyrings under `dir` (once) and returns every keyring path to trust.
pub fn keyrings(dir: &Path, extra: &[PathBuf]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut out = Vec::new();
    for (name, bytes) in SHIPPED {
        let p = dir.join(name);
        if std::fs::read(&p).ok().as_deref() != Some(*bytes) {
            let tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::fs::write(tmp.path(), bytes)
                .with_context(|| format!("writing {}", tmp.path().display()))?;
            tmp.persist(&p).map_err(|e| e.error)?;
        }
        out.push(p);
    }
    for e in extra {
        let abs = std::path::absolute(e)?;
        if !abs.is_file() {
            bail!(
                "keyring {} (from KILN_DEBIAN_KEYRINGS or config) does not exist",
                abs.display()
            );
        }
        out.push(abs);
    }
    Ok(out)
}

/// Verifies a clearsigned file and returns the signed text (without the
/// armor), and the fingerprints of the valid signatures.
pub fn clearsigned(
    file: &Path,
    keyrings: &[PathBuf],
    label: &str,
) -> Result<(String, Vec<String>)> {
    let out_dir = tempfile::tempdir().context("creating a temp dir for gpgv")?;
    let out_path = out_dir.path().join("signed.txt");
    let mut cmd = Command::new("gpgv");
    cmd.arg("--status-fd").arg("1");
    for k in keyrings {
        cmd.arg("--keyring").arg(k);
    }
    cmd.arg("--output").arg(&out_path).arg(file);
    let output = cmd.output().map_err(|e| {
        anyhow::anyhow!(
            "cannot run gpgv to verify {label}: {e}. Install it (Debian/Ubuntu: apt-get install gpgv)"
        )
    })?;
    let status = String::from_utf8_lossy(&output.stdout);
    let valid: Vec<String> = status
        .lines()
        .filter_map(|l| l.strip_prefix("[GNUPG:] VALIDSIG "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    // As apt: one good signature by a trusted key suffices (archives are
    // signed by several keys, some of which may be older than the shipped
    // keyrings), but any bad signature refuses the file.
    let bad = status.lines().any(|l| l.starts_with("[GNUPG:] BADSIG"));
    if bad || valid.is_empty() {
        let detail = status
            .lines()
            .filter_map(|l| l.strip_prefix("[GNUPG:] "))
            .filter(|l| {
                [
                    "BADSIG",
                    "NO_PUBKEY",
                    "EXPKEYSIG",
                    "REVKEYSIG",
                    "ERRSIG",
                    "NODATA",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            })
            .collect::<Vec<_>>()
            .join("; ");
        let detail = if detail.is_empty() {
            String::from_utf8_lossy(&output.stderr).trim().to_string()
        } else {
            detail
        };
        bail!(BadSignature {
            file: label.to_string(),
            detail
        });
    }
    let text = std::fs::read_to_string(&out_path)
        .with_context(|| format!("reading the verified text of {label}"))?;
    Ok((text, valid))
}
