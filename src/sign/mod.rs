//! Image signatures in cosign's format, the one cosign, containers/image
//! (skopeo and podman: a `sigstoreSigned` policy with
//! `use-sigstore-attachments`) and admission controllers read.
//!
//! A signature is cosign's "simple signing" payload — the image's manifest
//! digest and repository — signed with ECDSA P-256 over SHA-256, stored in
//! the image's repository as an OCI manifest tagged `sha256-<hex>.sig`
//! whose one layer is the payload and carries the signature (base64, DER)
//! in the `dev.cosignproject.cosign/signature` annotation.
//!
//! Key-based only: keyless signing needs Fulcio and Rekor, which kiln does
//! not talk to. The key is a PKCS#8 PEM EC P-256 private key (`openssl
//! genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`); cosign's own
//! encrypted key format is not read. Signing is `ring`'s (already in the
//! dependency tree through rustls), PEM decoding `rustls-pki-types`'.

use anyhow::Context as _;
use base64::Engine as _;
use oci_spec::image::{DescriptorBuilder, MediaType};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject as _;
use serde::Serialize;

use crate::Result;
use crate::oci::{Digest, Store};
use crate::progress::Progress;
use crate::registry::manifest;
use crate::registry::push::{PushOptions, push};
use crate::registry::{Client, Reference};

/// The media type of the payload layer.
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The payload layer's annotation that holds the signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// An ECDSA P-256 private key.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl SigningKey {
    /// Reads a PKCS#8 PEM private key; `file` names it in errors.
    pub fn from_pem(pem: &[u8], file: &str) -> Result<SigningKey> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|e| {
            anyhow::anyhow!(
                "{file}: not a PKCS#8 PEM private key ({e:?}); make one with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {file}` (cosign's encrypted keys are not read)"
            )
        })?;
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der.secret_pkcs8_der(), &rng)
            .map_err(|e| anyhow::anyhow!("{file}: not an EC P-256 private key ({e}); kiln signs with ECDSA P-256, as cosign does"))?;
        Ok(SigningKey { pair, rng })
    }

    /// The public key, uncompressed SEC1 bytes.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// ECDSA P-256 SHA-256 signature of `msg`, ASN.1 DER (cosign's form).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let sig = self
            .pair
            .sign(&self.rng, msg)
            .map_err(|_| anyhow::anyhow!("signing failed"))?;
        Ok(sig.as_ref().to_vec())
    }
}

#[derive(Serialize)]
struct Payload<'a> {
    critical: Critical<'a>,
    optional: Optional,
}

#[derive(Serialize)]
struct Critical<'a> {
    identity: Identity<'a>,
    image: PayloadImage,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Identity<'a> {
    #[serde(rename = "docker-reference")]
    docker_reference: &'a str,
}

#[derive(Serialize)]
struct PayloadImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

#[derive(Serialize)]
struct Optional {
    creator: &'static str,
}

/// The simple-signing payload for the manifest `digest` in `repository`
/// (`registry/path`, no tag: cosign's identity).
pub fn payload(repository: &str, digest: &Digest) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&Payload {
        critical: Critical {
            identity: Identity {
                docker_reference: repository,
            },
            image: PayloadImage {
                docker_manifest_digest: digest.to_string(),
            },
            kind: "cosign container image signature",
        },
        optional: Optional {
            creator: concat!("kiln/", env!("CARGO_PKG_VERSION")),
        },
    })?)
}

/// The tag cosign keeps an image's signatures under.
pub fn signature_tag(digest: &Digest) -> String {
    format!("{}-{}.sig", digest.algorithm(), digest.hex())
}

/// What [`sign`] did.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The signed image manifest.
    pub image: Digest,
    /// Where the signature is: `REGISTRY/REPO:sha256-<hex>.sig`.
    pub signature: Reference,
}

/// Signs the image `target` names on its registry (a tag is resolved to
/// its manifest digest first, and the digest is what is signed) and
/// pushes the signature next to it. The `.sig` tag holds this signature
/// only: signing again replaces it (cosign appends).
pub fn sign(
    client: &Client,
    target: &Reference,
    key: &SigningKey,
    progress: &Progress,
) -> Result<Signed> {
    let session = client.session(&target.registry)?;
    let tmp = tempfile::tempdir().context("a temporary blob store")?;
    let store = Store::open(tmp.path().join("store"))?;
    let reference = match (&target.digest, &target.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".to_string(),
    };
    let fetched = manifest::fetch(client, &session, &store, target, &reference)
        .with_context(|| format!("resolving {target} to sign it"))?;
    let image = fetched.digest;
    let repository = format!("{}/{}", target.registry, target.repository);
    let body = payload(&repository, &image)?;
    let signature = key.sign(&body)?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&signature);

    let payload_blob = store.put(&body)?;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [payload_blob.digest.to_string()]},
    }))?;
    let config_blob = store.put(&config)?;
    let layer = DescriptorBuilder::default()
        .media_type(MediaType::Other(PAYLOAD_MEDIA_TYPE.to_string()))
        .digest(payload_blob.digest.to_oci())
        .size(payload_blob.size)
        .annotations(
            [(SIGNATURE_ANNOTATION.to_string(), b64)]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()?;
    let config_desc = DescriptorBuilder::default()
        .media_type(MediaType::ImageConfig)
        .digest(config_blob.digest.to_oci())
        .size(config_blob.size)
        .build()?;
    let manifest = oci_spec::image::ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_desc)
        .layers(vec![layer])
        .build()?;
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_blob = store.put(&manifest_bytes)?;
    let root = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(manifest_blob.digest.to_oci())
        .size(manifest_blob.size)
        .build()?;
    let at = Reference {
        tag: Some(signature_tag(&image)),
        digest: None,
        ..target.clone()
    };
    push(
        client,
        &store,
        &root,
        &at,
        &PushOptions::default(),
        progress,
    )
    .with_context(|| format!("pushing the signature of {repository}@{image}"))?;
    Ok(Signed {
        image,
        signature: at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};

    /// A P-256 PKCS#8 key made with openssl, for tests only.
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgdX2/ObviUDx+gh2M
DuqzjwHRMP8IgaSe6NB4BxS8aa6hRANCAAR/2AhlQAXvymPsLew66/cy4qL/pDFF
ctyoMm70gpSHZQGu5YlYy8tT2RXmldppZcZMHRWwOX3DbumknF90HUt8
-----END PRIVATE KEY-----
";

    #[test]
    fn the_payload_is_cosigns_and_the_signature_verifies() {
        let key = SigningKey::from_pem(KEY.as_bytes(), "k.pem").unwrap();
        let digest = Digest::of(b"manifest");
        let body = payload("127.0.0.1:5000/app", &digest).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["critical"]["identity"]["docker-reference"],
            "127.0.0.1:5000/app"
        );
        assert_eq!(
            v["critical"]["image"]["docker-manifest-digest"],
            digest.to_string()
        );
        assert_eq!(v["critical"]["type"], "cosign container image signature");
        let sig = key.sign(&body).unwrap();
        let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.public_key());
        assert!(public.verify(&body, &sig).is_ok());
        assert!(public.verify(b"other", &sig).is_err());
        assert_eq!(
            signature_tag(&digest),
            format!("sha256-{}.sig", digest.hex())
        );
    }

    #[test]
    fn a_key_that_is_not_pkcs8_p256_is_named_with_the_fix() {
        let e = format!(
            "{:#}",
            SigningKey::from_pem(b"not a key", "cosign.key")
                .err()
                .unwrap()
        );
        assert!(
            e.contains("cosign.key") && e.contains("openssl genpkey"),
            "{e}"
        );
    }
}
