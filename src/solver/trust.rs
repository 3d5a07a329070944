//! Networks that intercept TLS: the host's CA bundle for auto builds'
//! steps, and what a step's certificate failure should tell the user.
//!
//! kiln's own downloads trust the host's store (`rustls-native-certs`:
//! `SSL_CERT_FILE`/`SSL_CERT_DIR`, else OpenSSL's default bundle and
//! directory). Auto builds give their steps the same certificates, read
//! once when the build starts ([`host_bundle`]) and bind-mounted read-only
//! over the step's system bundle ([`crate::graph::HOST_CA_BUNDLE`], see
//! [`crate::graph::Mount::HostCa`]): never in a layer, the image or a key.
//! Re-encoding the certificates (rather than copying one file) is what
//! makes the bundle the store kiln trusts, whichever files it came from.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// Opts out of the host's CA bundle in auto builds (as `--no-host-ca`).
pub const NO_HOST_CA_ENV: &str = "KILN_NO_HOST_CA";

/// The host's trusted certificates as one PEM bundle, followed by `extra`
/// (`--ca-cert` files, so they stay trusted under the mount); `None` when
/// the host has no store (the steps then use the image's bundle).
pub fn host_bundle(extra: &[(String, String)]) -> Option<Vec<u8>> {
    let certs = rustls_native_certs::load_native_certs().unwrap_or_default();
    let der: Vec<&[u8]> = certs.iter().map(|c| c.as_ref()).collect();
    bundle(&der, extra)
}

/// `certs` (DER) as PEM, then `extra` (PEM text); `None` without `certs`.
fn bundle(certs: &[&[u8]], extra: &[(String, String)]) -> Option<Vec<u8>> {
    if certs.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for c in certs {
        out.extend(pem(c).into_bytes());
    }
    for (_, text) in extra {
        out.extend(text.trim_end().as_bytes());
        out.push(b'\n');
    }
    Some(out)
}

/// A DER certificate as PEM: base64 in 64-column lines, as OpenSSL writes.
fn pem(der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 is ASCII, so every chunk is valid UTF-8.
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

/// What tools print when they do not trust a server's certificate (npm,
/// Python, OpenSSL, curl, Go, git/GnuTLS, Rust's TLS stacks).
const MARKERS: &[&str] = &[
    "SELF_SIGNED_CERT_IN_CHAIN",
    "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
    "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
    "CERTIFICATE_VERIFY_FAILED",
    "certificate verify failed",
    "self-signed certificate in certificate chain",
    "self signed certificate in certificate chain",
    "unable to get local issuer certificate",
    "x509: certificate signed by unknown authority",
    "server certificate verification failed",
    "UnknownIssuer",
    "invalid peer certificate",
];

/// The advice for a failed step whose output shows a certificate error,
/// given whether the step trusted the host's CA bundle.
pub fn certificate_hint(output: &str, host_ca: bool) -> Option<String> {
    let hit = MARKERS.iter().find(|m| output.contains(*m))?;
    let what = if host_ca {
        "  The step trusted the host's CA store, so the server's CA is in neither it nor the image's:\n  \
         add it with --ca-cert FILE (PEM; or KILN_CA_CERTS=FILE:FILE).\n"
    } else {
        "  The step did not trust the host's CA store.\n  \
         Auto build: its steps do unless --no-host-ca or KILN_NO_HOST_CA=1 is given; --ca-cert FILE adds a CA the host lacks.\n  \
         Dockerfile: RUN steps see only the image's CAs; add the proxy's CA there (COPY it into /usr/local/share/ca-certificates/ and RUN update-ca-certificates).\n"
    };
    Some(format!(
        "hint: the step failed verifying a TLS certificate ({hit}): the network may intercept TLS.\n{what}  See docs/auto.md, \"Networks that intercept TLS\"."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npm_self_signed_output_gets_the_hint() {
        let out = "npm error code SELF_SIGNED_CERT_IN_CHAIN\nnpm error errno SELF_SIGNED_CERT_IN_CHAIN\nnpm error request to https://registry.npmjs.org/express failed, reason: self-signed certificate in certificate chain";
        let off = certificate_hint(out, false).unwrap();
        assert!(off.contains("SELF_SIGNED_CERT_IN_CHAIN"), "{off}");
        assert!(off.contains("unless --no-host-ca"), "{off}");
        assert!(off.contains("update-ca-certificates"), "{off}");
        assert!(off.contains("--ca-cert FILE"), "{off}");
        assert!(off.contains("docs/auto.md"), "{off}");
        let on = certificate_hint(out, true).unwrap();
        assert!(on.contains("--ca-cert FILE") && !on.contains("--no-host-ca"));
    }

    #[test]
    fn other_tools_errors_are_recognised() {
        for out in [
            "pip._vendor.urllib3.exceptions.SSLError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate (_ssl.c:1000)",
            "go: example.com/x: Get \"https://proxy.golang.org/x\": tls: failed to verify certificate: x509: certificate signed by unknown authority",
            "curl: (60) SSL certificate problem: unable to get local issuer certificate",
            "fatal: unable to access 'https://github.com/x/y/': server certificate verification failed. CAfile: none CRLfile: none",
            "error: invalid peer certificate: UnknownIssuer",
        ] {
            assert!(certificate_hint(out, true).is_some(), "{out}");
        }
    }

    #[test]
    fn other_failures_get_no_hint() {
        assert_eq!(
            certificate_hint("npm error code E404\nnpm error 404 Not Found", false),
            None
        );
        assert_eq!(certificate_hint("", true), None);
    }

    #[test]
    fn pem_wraps_at_64_columns() {
        let der: Vec<u8> = (0..100u8).collect();
        let p = pem(&der);
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
        assert_eq!(lines[1].len(), 64);
        assert_eq!(B64.decode(lines[1..lines.len() - 1].concat()).unwrap(), der);
    }

    #[test]
    fn extra_certificates_follow_the_host_store() {
        let extra = vec![(
            "proxy.crt".to_string(),
            "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n\n".to_string(),
        )];
        let text = String::from_utf8(bundle(&[b"\x30\x03abc"], &extra).unwrap()).unwrap();
        assert_eq!(
            text,
            "-----BEGIN CERTIFICATE-----\nMANhYmM=\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(bundle(&[], &extra), None, "no host store, no bundle");
    }
}
