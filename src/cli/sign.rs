//! `kiln sign`: a cosign-format signature of an image on a registry.

use anyhow::Context as _;
use clap::Args;

use super::registry::RegistryFlags;
use crate::Result;
use crate::progress::Progress;
use crate::registry::{CredentialSource, Reference};
use crate::sign::{SigningKey, sign};

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The image on its registry: HOST[:PORT]/NAME[:TAG] or NAME@sha256:…
    /// (a tag is resolved; its manifest digest is what is signed).
    pub reference: String,
    /// The private key: PKCS#8 PEM, EC P-256 (`openssl genpkey -algorithm
    /// EC -pkeyopt ec_paramgen_curve:P-256 -out cosign.pem`).
    #[arg(long, value_name = "FILE")]
    pub key: std::path::PathBuf,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

pub fn run(a: SignArgs, progress: &Progress) -> Result<()> {
    let target = Reference::parse(&a.reference)?;
    let pem = std::fs::read(&a.key).with_context(|| format!("--key {}", a.key.display()))?;
    let key = SigningKey::from_pem(&pem, &a.key.display().to_string())?;
    let client = a.registry.client(CredentialSource::Files, progress);
    let signed = sign(&client, &target, &key, progress)?;
    println!(
        "signed {}/{}@{} (signature: {})",
        target.registry, target.repository, signed.image, signed.signature
    );
    Ok(())
}
