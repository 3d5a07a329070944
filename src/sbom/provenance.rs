//! SLSA v1 provenance (<https://slsa.dev/spec/v1.0/provenance>) as an
//! in-toto Statement v1, from a record: the subject is the image manifest;
//! the external parameters are what the user gave (frontend, build
//! arguments, secret *ids*: never their values); the resolved
//! dependencies are the build context (its digest), `kiln.lock` and the
//! Debian package sets (the resolved archive state, by their lock digest
//! and `Release` date). Deterministic like the SBOMs: no wall-clock time,
//! only the image's `created`.

use serde_json::{Value, json};

use super::{Record, image_hex, to_json};
use crate::Result;

/// The artifact type of an attached statement.
pub const MEDIA_TYPE: &str = "application/vnd.in-toto+json";
/// The predicate type.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// kiln's build type (what `externalParameters` and
/// `internalParameters` hold).
pub const BUILD_TYPE: &str = "https://kiln.dev/provenance/build/v1";

fn sha256(digest: &str) -> Value {
    json!({"sha256": digest.strip_prefix("sha256:").unwrap_or(digest)})
}

/// The statement's JSON bytes.
pub fn statement(r: &Record) -> Result<Vec<u8>> {
    let b = &r.build;
    let mut deps = Vec::new();
    if let Some(d) = &b.context_digest {
        deps.push(json!({"uri": "context:.", "digest": sha256(d)}));
    }
    if let Some(d) = &b.kiln_lock {
        deps.push(json!({"uri": "context:kiln.lock", "digest": sha256(d)}));
    }
    for s in &b.package_sets {
        deps.push(json!({
            "uri": format!("{}/dists/{}", s.mirror.trim_end_matches('/'), s.suite),
            "digest": sha256(&s.digest),
            "annotations": {
                "arch": s.arch,
                "releaseDate": s.release_date,
                "inImage": s.in_image,
                "digestOf": "the package set as a kiln.lock [[set]] (every .deb with its sha256 from the signed index)",
            },
        }));
    }
    let mut external = json!({
        "frontend": b.frontend,
        "arguments": b.arguments,
        "secrets": b.secret_ids,
    });
    if !b.providers.is_empty() {
        external["providers"] = json!(b.providers);
    }
    let mut internal = json!({});
    if let Some(p) = &b.plan {
        internal["plan"] = p.clone();
    }
    let doc = json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{
            "name": r.app.name,
            "digest": {"sha256": image_hex(r)},
        }],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": internal,
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": format!("https://kiln.dev/kiln@{}", b.kiln_version),
                    "version": {"kiln": b.kiln_version},
                },
                "metadata": {
                    "invocationId": format!("sha256:{}", image_hex(r)),
                    "finishedOn": r.image.created,
                },
            },
        },
    });
    to_json(&doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbom::fixture::record;

    #[test]
    fn statement_names_the_image_and_its_inputs_without_secret_values() {
        let mut r = record();
        r.build.context_digest = Some(format!("sha256:{}", "12".repeat(32)));
        r.build.kiln_lock = Some(format!("sha256:{}", "34".repeat(32)));
        r.build
            .arguments
            .insert("build-arg:VERSION".into(), "2".into());
        r.build.secret_ids = vec!["npmrc".into()];
        r.build.package_sets.push(crate::sbom::PackageSetInfo {
            suite: "trixie".into(),
            arch: "amd64".into(),
            release_date: "Sat, 08 Nov 2025 10:00:00 UTC".into(),
            mirror: "http://deb.debian.org/debian".into(),
            digest: format!("sha256:{}", "56".repeat(32)),
            in_image: true,
            request: None,
        });
        let bytes = statement(&r).unwrap();
        assert_eq!(bytes, statement(&r).unwrap());
        let s: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(s["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(s["predicateType"], PREDICATE_TYPE);
        assert_eq!(s["subject"][0]["digest"]["sha256"], "ab".repeat(32));
        let def = &s["predicate"]["buildDefinition"];
        assert_eq!(def["externalParameters"]["secrets"][0], "npmrc");
        assert_eq!(
            def["externalParameters"]["arguments"]["build-arg:VERSION"],
            "2"
        );
        let deps = def["resolvedDependencies"].as_array().unwrap();
        assert_eq!(deps.len(), 3);
        assert_eq!(deps[0]["digest"]["sha256"], "12".repeat(32));
        assert_eq!(deps[2]["uri"], "http://deb.debian.org/debian/dists/trixie");
        assert_eq!(
            s["predicate"]["runDetails"]["builder"]["version"]["kiln"],
            "0.1.0"
        );
    }
}
