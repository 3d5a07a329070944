"""Verifies a cosign key-based image signature the way `cosign verify --key`
does, with PyPI's `cryptography` and the registry API only (no kiln, no
skopeo): tests/e2e_sign.rs runs it as an implementation independent of kiln.

sigstore-python (4.x) cannot do this: its Verifier checks Sigstore bundles
whose signing certificate chains to Fulcio and whose entry is in Rekor; it
has no path for a bare public key and cosign's `.sig` tag. So this follows
cosign's own key-based check (pkg/cosign/verify.go):

1. the image manifest the tag names now, and its digest;
2. the manifest tagged `sha256-<hex>.sig` in the same repository (none:
   no signature for that digest);
3. for each simple-signing layer: the payload blob (its sha256 must be the
   descriptor's), the base64 DER signature of its
   `dev.cosignproject.cosign/signature` annotation, verified as ECDSA
   P-256 with SHA-256 over the payload bytes with the public key;
4. the payload's `critical.type` is "cosign container image signature"
   and its `critical.image.docker-manifest-digest` is the image's digest.

Usage: cosign_verify.py REGISTRY_URL REPOSITORY TAG PUBLIC_KEY_PEM
Exit 0 and "Verified OK" when one signature verifies; 1 and the reason
otherwise.
"""

import base64
import hashlib
import json
import sys
import urllib.error
import urllib.request

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

MANIFESTS = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
PAYLOAD = "application/vnd.dev.cosign.simplesigning.v1+json"
ANNOTATION = "dev.cosignproject.cosign/signature"


def get(url, accept=None):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def fail(why):
    print(why)
    sys.exit(1)


def main():
    registry, repo, tag, key_file = sys.argv[1:5]
    with open(key_file, "rb") as f:
        key = serialization.load_pem_public_key(f.read())
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        fail(f"{key_file}: not an EC P-256 public key")
    image = get(f"{registry}/v2/{repo}/manifests/{tag}", MANIFESTS)
    digest = "sha256:" + hashlib.sha256(image).hexdigest()
    try:
        sig = json.loads(
            get(f"{registry}/v2/{repo}/manifests/sha256-{digest[7:]}.sig", MANIFESTS)
        )
    except urllib.error.HTTPError as e:
        if e.code == 404:
            fail(f"no signature for {digest}")
        raise
    reasons = []
    for layer in sig.get("layers", []):
        if layer.get("mediaType") != PAYLOAD:
            continue
        payload = get(f"{registry}/v2/{repo}/blobs/{layer['digest']}")
        if "sha256:" + hashlib.sha256(payload).hexdigest() != layer["digest"]:
            reasons.append(f"payload blob {layer['digest']} does not match its digest")
            continue
        b64 = layer.get("annotations", {}).get(ANNOTATION)
        if not b64:
            reasons.append("a payload layer without a signature annotation")
            continue
        try:
            key.verify(base64.b64decode(b64), payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            reasons.append("signature does not verify with the public key")
            continue
        critical = json.loads(payload).get("critical", {})
        if critical.get("type") != "cosign container image signature":
            reasons.append(f"not a cosign container image signature: {critical}")
            continue
        signed = critical.get("image", {}).get("docker-manifest-digest")
        if signed != digest:
            reasons.append(f"the signature is of {signed}, not of {digest}")
            continue
        print(f"Verified OK: {repo}@{digest}, identity {critical.get('identity')}")
        return
    fail("; ".join(reasons) or f"no simple-signing layer in the signature of {digest}")


main()
