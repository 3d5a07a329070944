//! `kiln sbom` and the `--sbom`/`--provenance` flags of build and push.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::Result;
use crate::progress::Progress;
use crate::sbom::{self, Format};

#[derive(Args, Debug)]
pub struct SbomArgs {
    /// The local image (name, name:tag or digest prefix).
    pub image: String,
    /// spdx (SPDX 2.3 JSON) or cyclonedx (CycloneDX 1.6 JSON).
    #[arg(long, value_enum, default_value_t = Format::Spdx)]
    pub format: Format,
    /// Write to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the SLSA v1 provenance statement instead of an SBOM.
    #[arg(long, conflicts_with = "format")]
    pub provenance: bool,
    /// Of a multi-platform image, the platform whose image to describe
    /// (default: this machine's), e.g. linux/arm64.
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
}

#[derive(Args, Debug)]
pub struct OutdatedArgs {
    /// The local image (name, name:tag or digest prefix).
    pub image: String,
    /// table (for people) or json (for scripts: the suite, the index date
    /// and each update's name, arch, installed, available, archive,
    /// security).
    #[arg(long, value_parser = ["table", "json"], default_value = "table")]
    pub format: String,
    /// Of a multi-platform image, the platform whose packages to check
    /// (default: this machine's).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
}

/// `--platform` as given, parsed.
fn platform_arg(p: &Option<String>) -> Result<Option<crate::platform::Platform>> {
    p.as_deref()
        .map(|s| crate::platform::Platform::parse(s).with_context(|| format!("--platform {s:?}")))
        .transpose()
}

pub fn run_outdated(a: OutdatedArgs, progress: &Progress) -> Result<()> {
    let record = sbom::record_for(&a.image, platform_arg(&a.platform)?.as_ref())?;
    let report = sbom::outdated::check(&record, progress)
        .with_context(|| format!("checking {} for package updates", a.image))?;
    if a.format == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", sbom::outdated::render_table(&report));
    }
    Ok(())
}

/// Attestations a build or push attaches (see docs/sbom.md).
#[derive(Args, Debug, Clone, Default)]
pub struct AttestArgs {
    /// Attach the image's SBOM (SPDX 2.3 and CycloneDX 1.6) as OCI 1.1
    /// referrers when pushing, and to type=oci outputs (buildx's --sbom).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub sbom: Option<bool>,
    /// Attach a SLSA v1 provenance statement the same way (buildx's --provenance).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub provenance: Option<bool>,
}

impl AttestArgs {
    pub fn sbom(&self) -> bool {
        self.sbom == Some(true)
    }
    pub fn provenance(&self) -> bool {
        self.provenance == Some(true)
    }
}

pub fn run(a: SbomArgs, _progress: &Progress) -> Result<()> {
    let record = sbom::record_for(&a.image, platform_arg(&a.platform)?.as_ref())?;
    let bytes = if a.provenance {
        sbom::provenance::statement(&record)?
    } else {
        sbom::render(&record, a.format)?
    };
    match &a.output {
        Some(f) => {
            std::fs::write(f, &bytes).with_context(|| format!("-o: writing {}", f.display()))?
        }
        None => {
            use std::io::Write as _;
            std::io::stdout().write_all(&bytes)?;
        }
    }
    Ok(())
}
