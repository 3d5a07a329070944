//! Package URLs (<https://github.com/package-url/purl-spec>): what both
//! SBOM formats use to name a package across tools.
//!
//! Hand-written (a dozen lines) rather than the `packageurl` crate: kiln
//! only builds purls, never parses them, and needs only the percent
//! encoding and the per-type name rules below.

/// Percent-encodes everything but the purl spec's unreserved characters
/// (`A-Z a-z 0-9 . - _ ~`): a Debian epoch's `:` or a `+` in a version
/// become `%3A`, `%2B`, an npm scope's `@` becomes `%40`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=DISTRO`.
pub fn deb(name: &str, version: &str, arch: &str, distro: &str) -> String {
    format!(
        "pkg:deb/debian/{}@{}?arch={}&distro={}",
        encode(name),
        encode(version),
        encode(arch),
        encode(distro)
    )
}

/// A purl of `ty` whose name may hold `/`-separated namespace segments
/// (npm's `@scope/name`, Go module paths, composer's `vendor/name`): each
/// segment is encoded on its own.
pub fn with_namespace(ty: &str, name: &str, version: &str) -> String {
    let path: Vec<String> = name.split('/').map(encode).collect();
    format!("pkg:{ty}/{}@{}", path.join("/"), encode(version))
}

/// PyPI names are normalised (PEP 503: lower case, runs of `-_.` → `-`).
pub fn pypi(name: &str, version: &str) -> String {
    format!("pkg:pypi/{}@{}", encode(&pep503(name)), encode(version))
}

/// PEP 503 normalisation of a Python distribution name.
pub fn pep503(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
            continue;
        }
        if sep && !out.is_empty() {
            out.push('-');
        }
        sep = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_epochs_and_plus_signs_are_escaped() {
        assert_eq!(
            deb("libc6", "2.41-12", "amd64", "debian-13"),
            "pkg:deb/debian/libc6@2.41-12?arch=amd64&distro=debian-13"
        );
        assert_eq!(
            deb("libgcc-s1", "14.2.0-19", "amd64", "debian-13"),
            "pkg:deb/debian/libgcc-s1@14.2.0-19?arch=amd64&distro=debian-13"
        );
        assert_eq!(
            deb("libstdc++6", "1:2.3+dfsg~1", "arm64", "debian-12"),
            "pkg:deb/debian/libstdc%2B%2B6@1%3A2.3%2Bdfsg~1?arch=arm64&distro=debian-12"
        );
    }

    #[test]
    fn npm_scopes_and_go_paths_keep_their_slashes() {
        assert_eq!(
            with_namespace("npm", "@babel/core", "7.0.0"),
            "pkg:npm/%40babel/core@7.0.0"
        );
        assert_eq!(
            with_namespace("golang", "github.com/a b/c", "v1.2.3+incompatible"),
            "pkg:golang/github.com/a%20b/c@v1.2.3%2Bincompatible"
        );
    }

    #[test]
    fn pypi_names_are_normalised() {
        assert_eq!(
            pypi("Flask_SQLAlchemy", "3.1.1"),
            "pkg:pypi/flask-sqlalchemy@3.1.1"
        );
        assert_eq!(pep503("zope.interface"), "zope-interface");
        assert_eq!(pep503("A__b-.C"), "a-b-c");
    }
}
