//! End to end: `kiln sign` on a real registry, its signature checked
//! without kiln by two independent implementations — skopeo reads the
//! image and cosign's `sha256-<hex>.sig` manifest and openssl verifies the
//! ECDSA signature; and `support/cosign_verify.py`, cosign's key-based
//! check written with PyPI's `cryptography` over the registry API — and
//! not verifying once the tag points at other content or with another
//! key's signature.
//!
//! Not sigstore-python: its `Verifier` (4.x) verifies Sigstore bundles
//! whose certificate chains to Fulcio and whose entry is in Rekor, and
//! has no way to verify with a bare public key (what `cosign verify --key`
//! does), so the script follows cosign's own steps instead.
#![cfg(feature = "e2e")]

mod support;

use std::path::Path;
use std::process::Command;

use support::kiln::{Kiln, run};
use support::registry::Registry;

/// A one-file image pushed to `reference`.
fn push_image(k: &Kiln, dir: &Path, content: &str, reference: &str) {
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/content"), content).unwrap();
    let name = format!("local-{}:1", content.trim());
    k.ok(&["image", "from-dir", dir.to_str().unwrap(), "-t", &name]);
    k.ok(&["push", &name, reference]);
}

/// `cryptography`, pinned (as in scripts/install-test-deps).
const CRYPTOGRAPHY: &str = "cryptography==51.0.1";

/// The cosign check of `support/cosign_verify.py` (no kiln, no skopeo):
/// `Err` says why it does not verify.
fn verify_py(reg: &Registry, reference: &str, public: &Path) -> Result<(), String> {
    let venv = support::pyvenv::venv("cosign-verifier", &[CRYPTOGRAPHY]);
    let (repo, tag) = reference.rsplit_once(':').unwrap();
    let path = repo.split_once('/').unwrap().1;
    let out = Command::new(venv.join("bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/cosign_verify.py"))
        .args([&reg.url(), path, tag])
        .arg(public)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) if said.starts_with("Verified OK") => Ok(()),
        Some(1) => Err(said),
        _ => panic!("cosign_verify.py failed to run: {said}"),
    }
}

/// A P-256 private key made by openssl.
fn genkey(path: &Path) {
    run(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            path.to_str().unwrap(),
        ],
    );
}

/// Verifies the cosign signature of what `reference` names now, without
/// kiln: `Err` says why it does not verify.
fn verify(reg: &Registry, reference: &str, public: &Path, t: &Path) -> Result<(), String> {
    let inspect = |r: &str| {
        Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{r}"),
            ])
            .output()
            .unwrap()
    };
    let image = inspect(reference);
    assert!(
        image.status.success(),
        "{}",
        String::from_utf8_lossy(&image.stderr)
    );
    let digest = kiln::oci::Digest::of(&image.stdout).to_string();
    let repo = reference.rsplit_once(':').unwrap().0;
    let sig = inspect(&format!("{repo}:sha256-{}.sig", &digest[7..]));
    if !sig.status.success() {
        return Err(format!("no signature for {digest}"));
    }
    let manifest: serde_json::Value = serde_json::from_slice(&sig.stdout).unwrap();
    let layer = &manifest["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    let path = repo.split_once('/').unwrap().1;
    let payload = Command::new("curl")
        .args([
            "-sSf",
            &format!(
                "{}/v2/{path}/blobs/{}",
                reg.url(),
                layer["digest"].as_str().unwrap()
            ),
        ])
        .output()
        .unwrap();
    assert!(payload.status.success());
    let body: serde_json::Value = serde_json::from_slice(&payload.stdout).unwrap();
    if body["critical"]["image"]["docker-manifest-digest"] != digest.as_str() {
        return Err(format!("the signature is of another digest: {body}"));
    }
    assert_eq!(body["critical"]["identity"]["docker-reference"], repo);
    assert_eq!(body["critical"]["type"], "cosign container image signature");
    std::fs::write(t.join("payload"), &payload.stdout).unwrap();
    let b64 = layer["annotations"]["dev.cosignproject.cosign/signature"]
        .as_str()
        .unwrap();
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    std::fs::write(t.join("sig.der"), der).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(t.join("sig.der"))
        .arg(t.join("payload"))
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() && said.contains("Verified OK") {
        Ok(())
    } else {
        Err(said)
    }
}

#[test]
fn a_kiln_signature_verifies_without_kiln_and_fails_after_a_retag() {
    let k = Kiln::new();
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let reference = format!("{}/signed/app:1", reg.addr);
    push_image(&k, &t.join("a"), "a\n", &reference);

    // A P-256 key pair, made by openssl.
    let key = t.join("cosign.pem");
    let public = t.join("cosign.pub");
    genkey(&key);
    run(
        "openssl",
        &[
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
    );
    let out = k.stdout(&["sign", &reference, "--key", key.to_str().unwrap()]);
    assert!(out.contains("signed") && out.contains(".sig"), "{out}");

    // Checked by other implementations: skopeo reads the image's digest
    // and cosign's `.sig` manifest from the registry, curl fetches the
    // payload blob, openssl verifies the ECDSA signature with the public
    // key. (Debian's skopeo has its own sigstore verification disabled.)
    assert_eq!(verify(&reg, &reference, &public, t), Ok(()));
    assert_eq!(verify_py(&reg, &reference, &public), Ok(()));

    // The tag now names other content: its digest has no signature.
    push_image(&k, &t.join("b"), "b\n", &reference);
    let e = verify(&reg, &reference, &public, t).unwrap_err();
    assert!(e.contains("no signature"), "{e}");
    let e = verify_py(&reg, &reference, &public).unwrap_err();
    assert!(e.contains("no signature for sha256:"), "{e}");

    // Signed again with another key: the public key does not verify it.
    let other = t.join("other.pem");
    genkey(&other);
    k.ok(&["sign", &reference, "--key", other.to_str().unwrap()]);
    let e = verify(&reg, &reference, &public, t).unwrap_err();
    assert!(e.contains("Verification failure"), "{e}");
    let e = verify_py(&reg, &reference, &public).unwrap_err();
    assert!(
        e.contains("signature does not verify with the public key"),
        "{e}"
    );

    // A key file that is not a P-256 PKCS#8 key: named, exit 1.
    std::fs::write(t.join("bad.pem"), "nope").unwrap();
    let out = k.kiln(&[
        "sign",
        &reference,
        "--key",
        t.join("bad.pem").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.pem"));
}
