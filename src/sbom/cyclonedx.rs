//! CycloneDX 1.6 JSON (<https://cyclonedx.org/docs/1.6/json/>) from a
//! record: the image is `metadata.component` (type `container`), every
//! package a component with its purl as `bom-ref`. The serial number is
//! a UUID made from the image digest and the timestamp is the image's
//! `created`: the same image gives the same bytes.

use serde_json::{Value, json};

use super::{Record, image_hex, purl, to_json};
use crate::Result;

/// The artifact type of an attached CycloneDX document.
pub const MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";

/// A version-5-shaped UUID from the first 16 bytes of the digest.
fn serial(hex: &str) -> String {
    let mut h: Vec<char> = format!("{hex:0<32}").chars().take(32).collect();
    h[12] = '5';
    h[16] = match h[16].to_digit(16).unwrap_or(0) & 0x3 {
        0 => '8',
        1 => '9',
        2 => 'a',
        _ => 'b',
    };
    let s: String = h.into_iter().collect::<String>().to_ascii_lowercase();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &s[0..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    )
}

/// SPDX algorithm names → CycloneDX's.
fn hashes(h: &[(String, String)]) -> Value {
    Value::Array(
        h.iter()
            .filter_map(|(alg, v)| {
                let alg = match alg.as_str() {
                    "SHA1" => "SHA-1",
                    "SHA256" => "SHA-256",
                    "SHA384" => "SHA-384",
                    "SHA512" => "SHA-512",
                    "MD5" => "MD5",
                    _ => return None,
                };
                Some(json!({"alg": alg, "content": v}))
            })
            .collect(),
    )
}

fn prop(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

/// The CycloneDX 1.6 JSON document of a record.
pub fn document(r: &Record) -> Result<Vec<u8>> {
    let hex = image_hex(r);
    let mut components = Vec::new();
    let mut app = json!({
        "type": "application",
        "bom-ref": "app",
        "name": r.app.name,
    });
    if let Some(v) = &r.app.version {
        app["version"] = json!(v);
    }
    if let Some(p) = &r.app.purl {
        app["purl"] = json!(p);
    }
    components.push(app);
    for p in &r.debian {
        let purl = purl::deb(&p.name, &p.version, &p.arch, &p.distro);
        let mut c = json!({
            "type": "library",
            "bom-ref": purl,
            "supplier": {"name": "Debian"},
            "name": p.name,
            "version": p.version,
            "purl": purl,
            "hashes": hashes(&[("SHA256".into(), p.sha256.clone())]),
            "properties": [
                prop("kiln:layer", &p.layer),
                prop("kiln:debian:archive", &p.archive),
                prop("kiln:debian:filename", &p.filename),
                prop("kiln:debian:source", &p.source),
                prop("kiln:debian:source-version", &p.source_version),
            ],
        });
        if let Some(l) = &p.license {
            c["licenses"] = json!([{"expression": l}]);
        }
        components.push(c);
    }
    for p in &r.languages {
        let mut c = json!({
            "type": "library",
            "bom-ref": p.purl,
            "name": p.name,
            "version": p.version,
            "purl": p.purl,
            "properties": [prop("kiln:lockfile", &p.lockfile)],
        });
        if !p.hashes.is_empty() {
            c["hashes"] = hashes(&p.hashes);
        }
        components.push(c);
    }
    let doc = json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": serial(hex),
        "version": 1,
        "metadata": {
            "timestamp": r.image.created,
            "tools": {"components": [{
                "type": "application",
                "name": "kiln",
                "version": r.build.kiln_version,
            }]},
            "component": {
                "type": "container",
                "bom-ref": "image",
                "name": r.app.name,
                "version": r.image.digest,
                "properties": [prop("kiln:platform", &r.image.platform)],
            },
        },
        "components": components,
        "dependencies": [{
            "ref": "image",
            "dependsOn": components.iter().map(|c| c["bom-ref"].clone()).collect::<Vec<_>>(),
        }],
    });
    to_json(&doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbom::fixture::record;

    #[test]
    fn golden_small_document() {
        let doc: Value = serde_json::from_slice(&document(&record()).unwrap()).unwrap();
        assert_eq!(doc["specVersion"], "1.6");
        assert_eq!(
            doc["serialNumber"],
            "urn:uuid:abababab-abab-5bab-abab-abababababab"
        );
        assert_eq!(doc["metadata"]["timestamp"], "2024-01-02T03:04:05Z");
        assert_eq!(doc["metadata"]["component"]["type"], "container");
        let c = doc["components"].as_array().unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(
            c[1]["purl"],
            "pkg:deb/debian/libc6@2.41-12?arch=amd64&distro=debian-13"
        );
        assert_eq!(c[1]["hashes"][0]["alg"], "SHA-256");
        assert_eq!(
            c[1]["licenses"][0]["expression"],
            "LGPL-2.1-or-later AND LicenseRef-public-domain"
        );
        assert_eq!(c[2]["hashes"][0]["alg"], "SHA-512");
        assert_eq!(
            doc["dependencies"][0]["dependsOn"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn serials_are_uuids_from_the_digest() {
        let s = serial(&"0".repeat(64));
        assert_eq!(s, "urn:uuid:00000000-0000-5000-8000-000000000000");
        assert_eq!(document(&record()).unwrap(), document(&record()).unwrap());
    }
}
