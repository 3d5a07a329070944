//! SPDX 2.3 JSON (<https://spdx.github.io/spdx-spec/v2.3/>) from a record.
//!
//! One package for the image (`primaryPackagePurpose: CONTAINER`), which
//! the document describes and which `CONTAINS` the app, every Debian
//! package and every language dependency. The namespace is derived from
//! the image digest and `created` is the image's own: the same image gives
//! the same bytes.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{Record, image_hex, purl, to_json};
use crate::Result;

/// The artifact type of an attached SPDX document.
pub const MEDIA_TYPE: &str = "application/spdx+json";

/// `text` with every character outside `[A-Za-z0-9.-]` as `-`: SPDX's
/// idstring, the tail of `SPDXRef-…` and `LicenseRef-…` ids.
pub fn idstring(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// An SPDX id (`SPDXRef-` + `[A-Za-z0-9.-]`).
fn spdx_id(kind: &str, name: &str, n: usize) -> String {
    format!("SPDXRef-{kind}-{n}-{}", idstring(name))
}

fn checksums(hashes: &[(String, String)]) -> Value {
    Value::Array(
        hashes
            .iter()
            .map(|(alg, v)| json!({"algorithm": alg, "checksumValue": v}))
            .collect(),
    )
}

fn purl_ref(purl: &str) -> Value {
    json!([{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl}])
}

/// The SPDX 2.3 JSON document of a record.
pub fn document(r: &Record) -> Result<Vec<u8>> {
    let hex = image_hex(r);
    let image_id = "SPDXRef-image".to_string();
    let mut packages = vec![json!({
        "SPDXID": image_id,
        "name": format!("{}@sha256:{hex}", r.app.name),
        "versionInfo": r.image.digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
        "externalRefs": purl_ref(&format!(
            "pkg:oci/{}@{}",
            purl::encode(&r.app.name.rsplit('/').next().unwrap_or("app").to_ascii_lowercase()),
            purl::encode(&r.image.digest)
        )),
    })];
    let mut rels = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    let mut refs = BTreeSet::new();
    let contains = |id: &str, rels: &mut Vec<Value>| {
        rels.push(json!({
            "spdxElementId": image_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    };

    let app_id = "SPDXRef-app".to_string();
    let mut app = json!({
        "SPDXID": app_id,
        "name": r.app.name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "APPLICATION",
    });
    if let Some(v) = &r.app.version {
        app["versionInfo"] = json!(v);
    }
    if let Some(p) = &r.app.purl {
        app["externalRefs"] = purl_ref(p);
    }
    packages.push(app);
    contains(&app_id, &mut rels);

    for (n, p) in r.debian.iter().enumerate() {
        let id = spdx_id("deb", &p.name, n);
        let license = p.license.clone().unwrap_or_else(|| "NOASSERTION".into());
        refs.extend(license_refs(&license));
        packages.push(json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "supplier": "Organization: Debian",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": checksums(&[("SHA256".into(), p.sha256.clone())]),
            "sourceInfo": format!("built package from: {} {}", p.source, p.source_version),
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": license,
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "LIBRARY",
            "comment": format!("layer {}; {} from {}", p.layer, p.filename, p.archive),
            "externalRefs": purl_ref(&purl::deb(&p.name, &p.version, &p.arch, &p.distro)),
        }));
        contains(&id, &mut rels);
    }
    for (n, p) in r.languages.iter().enumerate() {
        let id = spdx_id(&p.ecosystem, &p.name, n);
        let mut pkg = json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "LIBRARY",
            "comment": format!("from {}", p.lockfile),
            "externalRefs": purl_ref(&p.purl),
        });
        if !p.hashes.is_empty() {
            pkg["checksums"] = checksums(&p.hashes);
        }
        packages.push(pkg);
        contains(&id, &mut rels);
    }
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}@sha256:{hex}", r.app.name),
        "documentNamespace": format!("https://kiln.dev/spdx/sha256-{hex}"),
        "creationInfo": {
            "created": r.image.created,
            "creators": [format!("Tool: kiln-{}", r.build.kiln_version)],
        },
        "packages": packages,
        "relationships": rels,
    });
    if !refs.is_empty() {
        doc["hasExtractedLicensingInfos"] = Value::Array(
            refs.iter()
                .map(|id| {
                    json!({
                        "licenseId": id,
                        "name": id.trim_start_matches("LicenseRef-"),
                        "extractedText": format!(
                            "A license named {:?} in a Debian machine-readable copyright file (no SPDX identifier); see /usr/share/doc/PACKAGE/copyright in the image.",
                            id.trim_start_matches("LicenseRef-")
                        ),
                    })
                })
                .collect(),
        );
    }
    to_json(&doc)
}

/// The `LicenseRef-…` ids an expression uses.
fn license_refs(expr: &str) -> Vec<String> {
    expr.split([' ', '(', ')'])
        .filter(|w| w.starts_with("LicenseRef-"))
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbom::fixture::record;

    #[test]
    fn golden_small_document() {
        let doc: Value = serde_json::from_slice(&document(&record()).unwrap()).unwrap();
        let hex = "ab".repeat(32);
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(
            doc["documentNamespace"],
            format!("https://kiln.dev/spdx/sha256-{hex}")
        );
        assert_eq!(doc["creationInfo"]["created"], "2024-01-02T03:04:05Z");
        let pkgs = doc["packages"].as_array().unwrap();
        assert_eq!(pkgs.len(), 4);
        let libc = &pkgs[2];
        assert_eq!(libc["SPDXID"], "SPDXRef-deb-0-libc6");
        assert_eq!(libc["sourceInfo"], "built package from: glibc 2.41-12");
        assert_eq!(libc["checksums"][0]["checksumValue"], "cd".repeat(32));
        assert_eq!(
            libc["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/libc6@2.41-12?arch=amd64&distro=debian-13"
        );
        assert_eq!(
            libc["licenseDeclared"],
            "LGPL-2.1-or-later AND LicenseRef-public-domain"
        );
        assert_eq!(
            doc["hasExtractedLicensingInfos"][0]["licenseId"],
            "LicenseRef-public-domain"
        );
        let express = &pkgs[3];
        assert_eq!(express["SPDXID"], "SPDXRef-npm-0-express");
        assert_eq!(express["checksums"][0]["algorithm"], "SHA512");
        assert_eq!(
            pkgs[1]["externalRefs"][0]["referenceLocator"],
            "pkg:npm/%40acme/web@1.0.0"
        );
        // The document describes the image, which contains everything else.
        let rels = doc["relationships"].as_array().unwrap();
        assert_eq!(rels.len(), 4);
        assert_eq!(rels[0]["relationshipType"], "DESCRIBES");
        assert!(
            rels[1..]
                .iter()
                .all(|r| r["relationshipType"] == "CONTAINS")
        );
    }

    #[test]
    fn same_record_same_bytes() {
        assert_eq!(document(&record()).unwrap(), document(&record()).unwrap());
        let mut other = record();
        other.image.digest = format!("sha256:{}", "cd".repeat(32));
        assert_ne!(document(&record()).unwrap(), document(&other).unwrap());
    }
}
