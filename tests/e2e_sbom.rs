//! End to end: the SBOM kiln records at build time against the image
//! itself and the lockfiles, checked by the reference validators; the
//! `--sbom`/`--provenance` attachments on a real registry and in an OCI
//! layout.
//!
//! The validators are PyPI's `spdx-tools` (`pyspdxtools -i`) and
//! `cyclonedx-python-lib` (its JSON schema validator), installed once in a
//! venv under the shared test cache ([`validators`]).
#![cfg(feature = "e2e")]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::auto::{example, host_ca_args, run};
use support::kiln::Kiln;
use support::registry::Registry;

/// The venv holding the validators, made on first use.
fn validators() -> PathBuf {
    support::pyvenv::venv(
        "sbom-validators",
        &["spdx-tools", "cyclonedx-python-lib[json-validation]"],
    )
}

/// Fails the test unless both reference validators accept the documents.
fn validate(spdx: &Path, cyclonedx: &Path) {
    let venv = validators();
    run(Command::new(venv.join("bin/pyspdxtools"))
        .arg("-i")
        .arg(spdx));
    let script = "import sys\nfrom cyclonedx.schema import SchemaVersion\nfrom cyclonedx.validation.json import JsonStrictValidator\ne = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\nif e:\n    print(e)\n    sys.exit(1)\n";
    run(Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .arg(cyclonedx));
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// (purl type, `name version`) of every package of an SPDX document.
fn spdx_packages(doc: &serde_json::Value, ty: &str) -> BTreeSet<String> {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["externalRefs"][0]["referenceLocator"]
                .as_str()
                .is_some_and(|l| l.starts_with(&format!("pkg:{ty}/")))
        })
        .filter(|p| p["primaryPackagePurpose"] != "APPLICATION")
        .map(|p| {
            format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                p["versionInfo"].as_str().unwrap()
            )
        })
        .collect()
}

/// The same from a CycloneDX document.
fn cdx_packages(doc: &serde_json::Value, ty: &str) -> BTreeSet<String> {
    doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "library")
        .filter(|c| {
            c["purl"]
                .as_str()
                .is_some_and(|l| l.starts_with(&format!("pkg:{ty}/")))
        })
        .map(|c| {
            format!(
                "{} {}",
                c["name"].as_str().unwrap(),
                c["version"].as_str().unwrap()
            )
        })
        .collect()
}

/// Loads `name` into podman and gives (the image's `dpkg-query -W` over its
/// own dpkg database, `app` files read through the mount).
fn in_podman<T>(home: &Kiln, name: &str, read: impl FnOnce(&Path) -> T) -> (BTreeSet<String>, T) {
    let tag = format!("localhost/kiln-e2e-sbom-{}", name.replace(':', "-"));
    let _podman = support::podman::lock();
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        &format!("{}:{name}", home.layout()),
        &format!("containers-storage:{tag}"),
    ]));
    let mnt = run(support::podman::podman().args(["image", "mount", &tag]));
    let root = PathBuf::from(mnt.trim());
    // The image has no dpkg of its own (a `minimal` set): the host's reads
    // the database kiln wrote into it.
    let listed = run(Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Package} ${Version}\n"]));
    let extra = read(&root);
    run(support::podman::podman().args(["image", "unmount", &tag]));
    run(support::podman::podman().args(["rmi", "-f", &tag]));
    (listed.lines().map(String::from).collect(), extra)
}

/// Builds an example, prints both documents twice (same bytes), validates
/// them, and compares their Debian packages with the image's dpkg database.
/// Returns (SPDX, CycloneDX, the image root reader's result).
fn check_example<T>(
    home: &Kiln,
    parent: &Path,
    name: &str,
    read: impl FnOnce(&Path) -> T,
) -> (serde_json::Value, serde_json::Value, PathBuf, T) {
    let dir = example(name, parent);
    let image = format!("{name}:1");
    home.build(&dir, &image);
    let spdx = parent.join(format!("{name}.spdx.json"));
    let cdx = parent.join(format!("{name}.cdx.json"));
    home.ok(&["sbom", &image, "-o", spdx.to_str().unwrap()]);
    home.ok(&[
        "sbom",
        &image,
        "--format",
        "cyclonedx",
        "-o",
        cdx.to_str().unwrap(),
    ]);
    // Deterministic: printed again (stdout), the same bytes.
    assert_eq!(
        home.ok(&["sbom", &image]).stdout,
        std::fs::read(&spdx).unwrap()
    );
    assert_eq!(
        home.ok(&["sbom", &image, "--format", "cyclonedx"]).stdout,
        std::fs::read(&cdx).unwrap()
    );
    validate(&spdx, &cdx);
    let (spdx, cdx) = (json(&spdx), json(&cdx));
    let (dpkg, extra) = in_podman(home, &image, read);
    assert!(dpkg.len() > 10, "{name}: dpkg-query listed only {dpkg:?}");
    assert_eq!(
        spdx_packages(&spdx, "deb"),
        dpkg,
        "{name}: SPDX vs dpkg-query -W"
    );
    assert_eq!(
        cdx_packages(&cdx, "deb"),
        dpkg,
        "{name}: CycloneDX vs dpkg-query -W"
    );
    // Every Debian package names its layer, one of the image's.
    let layers: BTreeSet<String> = support::auto::layers(home, &image).into_iter().collect();
    for c in cdx["components"].as_array().unwrap() {
        if c["purl"]
            .as_str()
            .is_some_and(|p| p.starts_with("pkg:deb/"))
        {
            let layer = c["properties"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "kiln:layer")
                .unwrap()["value"]
                .as_str()
                .unwrap();
            assert!(
                layers.contains(layer),
                "{name}: {c} names a layer the image lacks"
            );
        }
    }
    (spdx, cdx, dir, extra)
}

#[test]
fn sboms_of_node_npm_and_python_flask_list_what_the_images_hold() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();

    // node-npm: the lockfile's packages, less the dev ones the plan prunes;
    // the image's node_modules has exactly those versions.
    let (spdx, cdx, dir, installed) =
        check_example(&home, tmp.path(), "node-npm", |root: &Path| {
            let lock: serde_json::Value =
                serde_json::from_slice(&std::fs::read(root.join("app/package-lock.json")).unwrap())
                    .unwrap();
            let mut found = BTreeSet::new();
            for (path, e) in lock["packages"].as_object().unwrap() {
                if let Ok(b) = std::fs::read(root.join("app").join(path).join("package.json"))
                    && !path.is_empty()
                {
                    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                    assert_eq!(v["version"], e["version"], "{path} in the image");
                    found.insert(path.clone());
                }
            }
            found
        });
    let lock = json(&dir.join("package-lock.json"));
    let mut want = BTreeSet::new();
    let mut prod_paths = BTreeSet::new();
    for (path, e) in lock["packages"].as_object().unwrap() {
        if path.is_empty() || e["dev"] == true {
            continue;
        }
        let name = path.rsplit("node_modules/").next().unwrap();
        want.insert(format!("{name} {}", e["version"].as_str().unwrap()));
        prod_paths.insert(path.clone());
    }
    assert!(
        want.len() > 50,
        "express has dozens of dependencies: {want:?}"
    );
    assert_eq!(
        spdx_packages(&spdx, "npm"),
        want,
        "node-npm: SPDX vs package-lock.json"
    );
    assert_eq!(
        cdx_packages(&cdx, "npm"),
        want,
        "node-npm: CycloneDX vs package-lock.json"
    );
    assert_eq!(
        installed, prod_paths,
        "node-npm: node_modules in the image vs the SBOM"
    );
    let express = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "express")
        .unwrap();
    assert_eq!(
        express["purl"],
        format!("pkg:npm/express@{}", express["version"].as_str().unwrap())
    );
    assert_eq!(express["hashes"][0]["alg"], "SHA-512");
    // The app itself, and the image as the document's subject.
    assert_eq!(cdx["metadata"]["component"]["type"], "container");
    assert!(
        cdx["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "application" && c["name"] == "node-npm")
    );

    // python-flask: requirements.txt pins flask and gunicorn.
    let (spdx, cdx, dir, _) = check_example(&home, tmp.path(), "python-flask", |_| ());
    let want: BTreeSet<String> = std::fs::read_to_string(dir.join("requirements.txt"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once("=="))
        .map(|(n, v)| format!("{} {}", n.to_lowercase(), v.trim()))
        .collect();
    assert_eq!(want.len(), 2);
    assert_eq!(spdx_packages(&spdx, "pypi"), want);
    assert_eq!(cdx_packages(&cdx, "pypi"), want);
    assert!(
        spdx_packages(&spdx, "deb")
            .iter()
            .any(|p| p.starts_with("python3.13 ") || p.starts_with("libpython3"))
    );
}

/// GET with curl: (status, body).
fn get(url: &str, accept: &str) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-H",
            &format!("Accept: {accept}"),
            "-w",
            "\n%{http_code}",
            url,
        ])
        .output()
        .expect("curl");
    let mut body = out.stdout;
    let nl = body.iter().rposition(|b| *b == b'\n').unwrap();
    let code = String::from_utf8_lossy(&body[nl + 1..]).parse().unwrap();
    body.truncate(nl);
    (code, body)
}

#[test]
fn push_with_sbom_and_provenance_attaches_referrers_and_leaves_the_image_alone() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    let host = reg.url().trim_start_matches("http://").to_string();
    let dir = example("node-npm", tmp.path());
    let image = format!("{host}/sbom/app:1");
    let layout = tmp.path().join("layout");
    let mut args = vec![
        "build".to_string(),
        dir.to_str().unwrap().into(),
        "-t".into(),
        image.clone(),
        "--push".into(),
        "--sbom".into(),
        "--provenance".into(),
        "-o".into(),
        format!("type=oci,dest={}", layout.display()),
        "--build-arg".into(),
        "NPM_TOKEN=hunter2-not-in-provenance".into(),
    ];
    args.extend(host_ca_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let digest = String::from_utf8(home.ok(&args).stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");

    // The image on the registry is the one built: same manifest digest.
    let inspect: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ])))
    .unwrap();
    assert_eq!(inspect["Digest"], digest.as_str());

    // docker-registry 2.8 has no referrers API: the fallback tag lists all three.
    let base = format!("{}/v2/sbom/app", reg.url());
    let index_type = "application/vnd.oci.image.index.v1+json";
    let (code, _) = get(&format!("{base}/referrers/{digest}"), index_type);
    assert_eq!(
        code, 404,
        "this registry was expected to lack the referrers API"
    );
    let tag = digest.replace(':', "-");
    let (code, body) = get(&format!("{base}/manifests/{tag}"), index_type);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let types = artifact_types(&index);
    assert_eq!(
        types,
        BTreeSet::from([
            "application/spdx+json",
            "application/vnd.cyclonedx+json",
            "application/vnd.in-toto+json"
        ])
    );
    let manifest_type = "application/vnd.oci.image.manifest.v1+json";
    for m in index["manifests"].as_array().unwrap() {
        let (code, body) = get(
            &format!("{base}/manifests/{}", m["digest"].as_str().unwrap()),
            manifest_type,
        );
        assert_eq!(code, 200);
        let art: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(art["subject"]["digest"], digest.as_str());
        assert_eq!(art["artifactType"], m["artifactType"]);
        let (code, doc) = get(
            &format!(
                "{base}/blobs/{}",
                art["layers"][0]["digest"].as_str().unwrap()
            ),
            "*/*",
        );
        assert_eq!(code, 200);
        // The attached document is what `kiln sbom` prints.
        let want = match m["artifactType"].as_str().unwrap() {
            "application/spdx+json" => home.ok(&["sbom", &image]).stdout,
            "application/vnd.cyclonedx+json" => {
                home.ok(&["sbom", &image, "--format", "cyclonedx"]).stdout
            }
            _ => home.ok(&["sbom", &image, "--provenance"]).stdout,
        };
        assert_eq!(doc, want, "{} on the registry", m["artifactType"]);
        if m["artifactType"] == "application/vnd.in-toto+json" {
            let text = String::from_utf8(doc).unwrap();
            assert!(
                !text.contains("hunter2"),
                "a credential-named build arg leaked:\n{text}"
            );
            let s: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                s["subject"][0]["digest"]["sha256"],
                digest.trim_start_matches("sha256:")
            );
            assert_eq!(s["predicateType"], "https://slsa.dev/provenance/v1");
            let deps = s["predicate"]["buildDefinition"]["resolvedDependencies"]
                .as_array()
                .unwrap();
            assert!(deps.iter().any(|d| d["uri"] == "context:."));
            assert!(
                deps.iter()
                    .any(|d| d["uri"].as_str().unwrap().ends_with("/dists/trixie"))
            );
        }
    }

    // `kiln push --sbom` of the stored image to another repository: the
    // same image, with the SBOM (only) attached there.
    let other = format!("{host}/sbom/copy:1");
    home.ok(&["push", &image, &other, "--sbom"]);
    let (code, body) = get(
        &format!("{}/v2/sbom/copy/manifests/{tag}", reg.url()),
        index_type,
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let types = artifact_types(&index);
    assert_eq!(
        types,
        BTreeSet::from(["application/spdx+json", "application/vnd.cyclonedx+json"])
    );

    // The OCI layout: the image plus one artifact entry per document, and
    // the image read from it is the same manifest.
    let idx = json(&layout.join("index.json"));
    let arts: Vec<&serde_json::Value> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["artifactType"].is_string())
        .collect();
    assert_eq!(arts.len(), 3, "{idx}");
    for a in arts {
        assert_eq!(a["annotations"]["dev.kiln.subject"], digest.as_str());
        let d = a["digest"].as_str().unwrap().trim_start_matches("sha256:");
        let art = json(&layout.join("blobs/sha256").join(d));
        assert_eq!(art["subject"]["digest"], digest.as_str());
    }
    assert!(
        idx["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["digest"] == digest.as_str())
    );
    // Such a layout still loads: the image, not its artifacts.
    let fresh = Kiln::new();
    let loaded = fresh.stdout(&["load", layout.to_str().unwrap()]);
    assert_eq!(loaded.lines().count(), 1, "{loaded}");
    assert!(loaded.contains(&digest), "{loaded}");

    // `kiln push --sbom` of the local image to another repository.
    home.ok(&["push", &image, &format!("{host}/sbom/other:1"), "--sbom"]);
    let (code, body) = get(
        &format!("{}/v2/sbom/other/manifests/{tag}", reg.url()),
        index_type,
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
}

/// `kiln outdated` against the suite's real indexes: a package whose
/// recorded version the suite has moved past is listed with the suite's
/// version, one the suite no longer has is listed as removed, the rest
/// are not; an image kiln did not build is a clear error.
#[test]
fn outdated_lists_the_packages_the_suite_has_moved_past() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("python-flask", tmp.path());
    home.build(&dir, "flask:1");
    // The record as the build wrote it, then aged: one package older than
    // any the suite has, one the suite never had.
    let records: Vec<PathBuf> = std::fs::read_dir(home.data().join("sbom"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let mut record = json(&records[0]);
    let debian = record["debian"].as_array_mut().unwrap();
    let packages = debian.len();
    assert!(packages > 10, "{packages} packages");
    let aged = debian
        .iter_mut()
        .find(|p| p["name"] == "libpython3.13-minimal" || p["name"] == "tzdata")
        .unwrap();
    let aged_name = aged["name"].as_str().unwrap().to_string();
    aged["version"] = "0.0.1-1".into();
    let mut gone = debian[0].clone();
    gone["name"] = "kiln-test-no-such-package".into();
    debian.push(gone);
    std::fs::write(&records[0], serde_json::to_vec(&record).unwrap()).unwrap();

    let out = home.stdout(&["outdated", "flask:1", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["suite"], "trixie", "{out}");
    let updates = report["updates"].as_array().unwrap();
    let find = |n: &str| updates.iter().find(|u| u["name"] == n);
    let u = find(&aged_name).unwrap_or_else(|| panic!("{aged_name} not listed: {out}"));
    assert_eq!(u["installed"], "0.0.1-1");
    assert!(
        u["available"].as_str().is_some_and(|v| v != "0.0.1-1"),
        "{u}"
    );
    let g = find("kiln-test-no-such-package").unwrap();
    assert!(g["available"].is_null(), "{g}");
    // The packages the build just resolved are current (a few may have
    // moved on since, never most of them).
    assert!(updates.len() < packages / 2, "{out}");
    // Security updates come first.
    let sec: Vec<bool> = updates
        .iter()
        .map(|u| u["security"].as_bool().unwrap())
        .collect();
    assert!(sec.windows(2).all(|w| w[0] >= w[1]), "{out}");

    // The table says the same, for people.
    let table = home.stdout(&["outdated", "flask:1"]);
    assert!(
        table.starts_with("PACKAGE") && table.contains(&aged_name) && table.contains("(removed)"),
        "{table}"
    );
    assert!(table.contains("rebuild with --pull"), "{table}");

    // An image kiln did not build has no record: said, exit non-zero.
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hostname"), "x\n").unwrap();
    home.ok(&[
        "image",
        "from-dir",
        rootfs.to_str().unwrap(),
        "-t",
        "plain:1",
    ]);
    let out = home.kiln(&["outdated", "plain:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no SBOM record"), "{err}");
    let out = home.kiln(&["outdated", "nosuch:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch"));
}

/// The `artifactType`s a referrers index lists.
fn artifact_types(index: &serde_json::Value) -> BTreeSet<&str> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["artifactType"].as_str().unwrap())
        .collect()
}

/// `--sbom` with several platforms: each platform's manifest in the index
/// gets its own SBOM, attached to that manifest (as buildx attaches one
/// attestation per platform), and `kiln sbom --platform` prints it.
#[test]
fn each_platform_of_an_index_gets_its_own_sbom() {
    let home = Kiln::new();
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    let host = reg.url().trim_start_matches("http://").to_string();
    let dir = tmp.path().join("app");
    std::fs::create_dir_all(&dir).unwrap();
    // No RUN step: nothing runs emulated, the test needs no binfmt.
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nARG TARGETARCH\nCOPY hello /hello-$TARGETARCH\n",
    )
    .unwrap();
    std::fs::write(dir.join("hello"), "hello\n").unwrap();
    let image = format!("{host}/sbom/multi:1");
    let index_digest = String::from_utf8(
        home.ok(&[
            "build",
            dir.to_str().unwrap(),
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &image,
            "--push",
            "--sbom",
        ])
        .stdout,
    )
    .unwrap()
    .trim()
    .to_string();

    let base = format!("{}/v2/sbom/multi", reg.url());
    let index_type = "application/vnd.oci.image.index.v1+json";
    let (code, body) = get(&format!("{base}/manifests/{index_digest}"), index_type);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{index}");
    let mut documents = BTreeSet::new();
    for m in manifests {
        let digest = m["digest"].as_str().unwrap();
        let arch = m["platform"]["architecture"].as_str().unwrap();
        let tag = digest.replace(':', "-");
        let (code, body) = get(&format!("{base}/manifests/{tag}"), index_type);
        assert_eq!(
            code,
            200,
            "no referrers for {arch}: {}",
            String::from_utf8_lossy(&body)
        );
        let referrers: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            artifact_types(&referrers),
            BTreeSet::from(["application/spdx+json", "application/vnd.cyclonedx+json"]),
            "{arch}"
        );
        // The SPDX document on the registry is this platform's: it names
        // this platform's manifest and is what `kiln sbom --platform` prints.
        let spdx = referrers["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["artifactType"] == "application/spdx+json")
            .unwrap();
        let (_, art) = get(
            &format!("{base}/manifests/{}", spdx["digest"].as_str().unwrap()),
            "application/vnd.oci.image.manifest.v1+json",
        );
        let art: serde_json::Value = serde_json::from_slice(&art).unwrap();
        assert_eq!(art["subject"]["digest"], digest);
        let (_, doc) = get(
            &format!(
                "{base}/blobs/{}",
                art["layers"][0]["digest"].as_str().unwrap()
            ),
            "*/*",
        );
        let platform = format!("linux/{arch}");
        let printed = home.ok(&["sbom", &image, "--platform", &platform]).stdout;
        assert_eq!(doc, printed, "{arch}");
        assert!(
            String::from_utf8_lossy(&doc).contains(digest.trim_start_matches("sha256:")),
            "the {arch} SBOM does not name its manifest"
        );
        documents.insert(doc);
    }
    assert_eq!(documents.len(), 2, "both platforms got the same document");
}
