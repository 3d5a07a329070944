//! The TLS trust every connection uses.

use std::sync::LazyLock;

use ureq::tls::{Certificate, RootCerts};

/// The system's trust store (`/etc/ssl/certs`, as curl and apt use it; a
/// `SSL_CERT_FILE` override is honoured), so a mirror, `ADD https://…` or a
/// registry works behind a TLS-intercepting proxy whose CA the host
/// trusts; ureq's bundled web roots when the system has none.
static SYSTEM_ROOTS: LazyLock<RootCerts> = LazyLock::new(|| {
    let system: Vec<Certificate<'static>> = rustls_native_certs::load_native_certs()
        .unwrap_or_default()
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    if system.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::new_with_certs(&system)
    }
});

pub(super) fn system_roots() -> RootCerts {
    SYSTEM_ROOTS.clone()
}
