//! Language dependencies from the lockfiles in a build context: what the
//! auto plan's install step installs (`npm ci`, `pip install -r`, `uv
//! sync`, `cargo build --locked`…). Each reader takes the file's text and
//! returns the packages it pins, with the hashes the file records.
//!
//! Packages a lockfile marks as development-only (`"dev": true` in
//! `package-lock.json`) are left out when the plan prunes them (`omit_dev`).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;

use super::{LangPackage, purl};
use crate::Result;

/// The lockfiles kiln reads, at the root of the context.
pub const FILES: &[&str] = &[
    "package-lock.json",
    "npm-shrinkwrap.json",
    "pnpm-lock.yaml",
    "yarn.lock",
    "requirements.txt",
    "uv.lock",
    "poetry.lock",
    "pdm.lock",
    "go.sum",
    "Cargo.lock",
    "Gemfile.lock",
    "composer.lock",
];

/// Every package the lockfiles at the root of `dir` pin, sorted, one entry
/// per purl. A lockfile that cannot be read is an error naming it.
pub fn read_dir(dir: &Path, omit_dev: bool) -> Result<Vec<LangPackage>> {
    let mut out = BTreeSet::new();
    for name in FILES {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} for the SBOM", path.display()))?;
        let found = parse(name, &text, omit_dev)
            .with_context(|| format!("{}: cannot read it for the SBOM", path.display()))?;
        out.extend(found);
    }
    let mut seen = BTreeSet::new();
    Ok(out
        .into_iter()
        .filter(|p| seen.insert(p.purl.clone()))
        .collect())
}

/// The packages of one lockfile, by its file name.
pub fn parse(file: &str, text: &str, omit_dev: bool) -> Result<Vec<LangPackage>> {
    match file {
        "package-lock.json" | "npm-shrinkwrap.json" => npm(file, text, omit_dev),
        "pnpm-lock.yaml" => pnpm(file, text),
        "yarn.lock" => Ok(yarn(file, text)),
        "requirements.txt" => Ok(requirements(file, text)),
        "uv.lock" | "poetry.lock" | "pdm.lock" => python_toml(file, text),
        "go.sum" => Ok(go_sum(file, text)),
        "Cargo.lock" => cargo(file, text),
        "Gemfile.lock" => Ok(gemfile(file, text)),
        "composer.lock" => composer(file, text),
        _ => Ok(Vec::new()),
    }
}

fn package(
    ecosystem: &str,
    name: &str,
    version: &str,
    purl: String,
    hashes: Vec<(String, String)>,
    file: &str,
) -> LangPackage {
    LangPackage {
        ecosystem: ecosystem.into(),
        name: name.into(),
        version: version.into(),
        purl,
        hashes,
        license: None,
        lockfile: file.into(),
    }
}

/// An SRI string (`sha512-BASE64`) as (SPDX algorithm, hex).
fn sri(integrity: &str) -> Option<(String, String)> {
    let (alg, b64) = integrity.split_whitespace().next()?.split_once('-')?;
    let alg = match alg {
        "sha512" => "SHA512",
        "sha384" => "SHA384",
        "sha256" => "SHA256",
        "sha1" => "SHA1",
        _ => return None,
    };
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some((alg.into(), hex::encode(bytes)))
}

/// `sha256:HEX` as (SPDX algorithm, hex).
fn prefixed(h: &str) -> Option<(String, String)> {
    let (alg, hex) = h.split_once(':')?;
    let alg = match alg {
        "sha256" => "SHA256",
        "sha384" => "SHA384",
        "sha512" => "SHA512",
        "sha1" => "SHA1",
        "md5" => "MD5",
        _ => return None,
    };
    hex.bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then(|| (alg.to_string(), hex.to_ascii_lowercase()))
}

/// `package-lock.json` v2/v3 (the `packages` map; v1's `dependencies` tree
/// is read when there is no `packages`).
fn npm(file: &str, text: &str, omit_dev: bool) -> Result<Vec<LangPackage>> {
    let v: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
    let mut out = Vec::new();
    let mut add = |name: &str, e: &serde_json::Value| {
        let Some(version) = e.get("version").and_then(|v| v.as_str()) else {
            return;
        };
        if e.get("link").and_then(|l| l.as_bool()) == Some(true)
            || (omit_dev && e.get("dev").and_then(|d| d.as_bool()) == Some(true))
        {
            return;
        }
        let hashes = e
            .get("integrity")
            .and_then(|i| i.as_str())
            .and_then(sri)
            .into_iter()
            .collect();
        let mut p = package(
            "npm",
            name,
            version,
            purl::with_namespace("npm", name, version),
            hashes,
            file,
        );
        p.license = e.get("license").and_then(|l| l.as_str()).map(String::from);
        out.push(p);
    };
    if let Some(pkgs) = v.get("packages").and_then(|p| p.as_object()) {
        for (path, e) in pkgs {
            let Some(at) = path.rfind("node_modules/") else {
                continue; // "" is the project itself; workspaces are its own code
            };
            let name = e
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or(&path[at + "node_modules/".len()..]);
            add(name, e);
        }
    } else if let Some(deps) = v.get("dependencies").and_then(|d| d.as_object()) {
        fn walk(
            deps: &serde_json::Map<String, serde_json::Value>,
            add: &mut dyn FnMut(&str, &serde_json::Value),
        ) {
            for (name, e) in deps {
                add(name, e);
                if let Some(d) = e.get("dependencies").and_then(|d| d.as_object()) {
                    walk(d, add);
                }
            }
        }
        walk(deps, &mut add);
    }
    Ok(out)
}

/// `name@version` (a scoped name keeps its leading `@`), without pnpm's
/// peer suffix `(…)`.
fn split_at_version(spec: &str) -> Option<(&str, &str)> {
    let spec = spec.trim_start_matches('/');
    let spec = spec.split('(').next()?;
    let at = spec[1..].find('@')? + 1;
    Some((&spec[..at], &spec[at + 1..]))
}

/// `pnpm-lock.yaml` (v6: `/name@version` keys, v9: `name@version`).
fn pnpm(file: &str, text: &str) -> Result<Vec<LangPackage>> {
    let v: serde_norway::Value = serde_norway::from_str(text).context("not YAML")?;
    let mut out = Vec::new();
    let Some(pkgs) = v.get("packages").and_then(|p| p.as_mapping()) else {
        return Ok(out);
    };
    for (k, e) in pkgs {
        let Some((name, version)) = k.as_str().and_then(split_at_version) else {
            continue;
        };
        let hashes = e
            .get("resolution")
            .and_then(|r| r.get("integrity"))
            .and_then(|i| i.as_str())
            .and_then(sri)
            .into_iter()
            .collect();
        out.push(package(
            "npm",
            name,
            version,
            purl::with_namespace("npm", name, version),
            hashes,
            file,
        ));
    }
    Ok(out)
}

/// `yarn.lock`, classic (`version "1.2.3"`, `integrity sha512-…`) and
/// berry (`version: 1.2.3`; its `checksum` is yarn's own, not a file hash).
fn yarn(file: &str, text: &str) -> Vec<LangPackage> {
    let mut out = Vec::new();
    let mut flush =
        |name: &Option<String>, version: &Option<String>, hash: &Option<(String, String)>| {
            if let (Some(n), Some(v)) = (name, version) {
                out.push(package(
                    "npm",
                    n,
                    v,
                    purl::with_namespace("npm", n, v),
                    hash.iter().cloned().collect(),
                    file,
                ));
            }
        };
    let (mut name, mut version, mut hash) = (None, None, None);
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            flush(&name, &version, &hash);
            version = None;
            hash = None;
            let first = line.trim_end_matches(':').split(',').next().unwrap_or("");
            let first = first.trim().trim_matches('"');
            name = split_at_version(first)
                .filter(|(_, range)| {
                    !range.starts_with("workspace:") && !range.starts_with("link:")
                })
                .map(|(n, _)| n.to_string())
                .filter(|n| n != "__metadata");
            continue;
        }
        let l = line.trim();
        if let Some(v) = l
            .strip_prefix("version ")
            .or_else(|| l.strip_prefix("version: "))
        {
            version = Some(v.trim().trim_matches('"').to_string());
        } else if let Some(i) = l.strip_prefix("integrity ") {
            hash = sri(i.trim().trim_matches('"'));
        }
    }
    flush(&name, &version, &hash);
    out
}

/// `requirements.txt`: pinned lines (`name==version`, extras and markers
/// allowed) with their `--hash=` options; unpinned lines have no version
/// to record and are left out.
fn requirements(file: &str, text: &str) -> Vec<LangPackage> {
    let joined = text.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let line = line.split(" #").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('-') {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(spec) = words.next() else { continue };
        let spec = spec.split(';').next().unwrap_or(spec);
        let Some((name, version)) = spec.split_once("==") else {
            continue;
        };
        let name = name.split('[').next().unwrap_or(name).trim();
        let version = version.trim_start_matches('=').trim();
        let hashes = words
            .filter_map(|w| w.strip_prefix("--hash="))
            .filter_map(prefixed)
            .collect();
        out.push(package(
            "pypi",
            &purl::pep503(name),
            version,
            purl::pypi(name, version),
            hashes,
            file,
        ));
    }
    out
}

/// `uv.lock`, `poetry.lock`, `pdm.lock`: `[[package]]` tables with
/// `name`, `version` and the hashes of their files (`sdist`/`wheels` in
/// uv, `files` in poetry and pdm). uv's own project (`source.editable`,
/// `source.virtual`) is the app, not a dependency.
fn python_toml(file: &str, text: &str) -> Result<Vec<LangPackage>> {
    let v: toml::Value = toml::from_str(text).context("not TOML")?;
    let mut out = Vec::new();
    for p in v
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let (Some(name), Some(version)) = (
            p.get("name").and_then(|n| n.as_str()),
            p.get("version").and_then(|n| n.as_str()),
        ) else {
            continue;
        };
        if let Some(src) = p.get("source").and_then(|s| s.as_table())
            && (src.contains_key("editable") || src.contains_key("virtual"))
        {
            continue;
        }
        let mut hashes = BTreeSet::new();
        let mut files: Vec<&toml::Value> = Vec::new();
        files.extend(p.get("sdist"));
        for key in ["wheels", "files"] {
            files.extend(p.get(key).and_then(|w| w.as_array()).into_iter().flatten());
        }
        for f in files {
            if let Some(h) = f.get("hash").and_then(|h| h.as_str()).and_then(prefixed) {
                hashes.insert(h);
            }
        }
        out.push(package(
            "pypi",
            &purl::pep503(name),
            version,
            purl::pypi(name, version),
            hashes.into_iter().collect(),
            file,
        ));
    }
    Ok(out)
}

/// `go.sum`: one module per `path version` (the `/go.mod`-only lines name
/// the same versions). Its `h1:` hashes are of module trees, not files,
/// so they are not given as checksums.
fn go_sum(file: &str, text: &str) -> Vec<LangPackage> {
    let mut seen = BTreeSet::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let (Some(path), Some(version)) = (w.next(), w.next()) else {
            continue;
        };
        let version = version.trim_end_matches("/go.mod");
        seen.insert((path.to_string(), version.to_string()));
    }
    seen.into_iter()
        .map(|(p, v)| {
            package(
                "golang",
                &p,
                &v,
                purl::with_namespace("golang", &p, &v),
                Vec::new(),
                file,
            )
        })
        .collect()
}

/// `Cargo.lock`: packages from a registry or git (`source`), with the
/// registry's sha256 `checksum`; the workspace's own crates have no source.
fn cargo(file: &str, text: &str) -> Result<Vec<LangPackage>> {
    let v: toml::Value = toml::from_str(text).context("not TOML")?;
    let mut out = Vec::new();
    for p in v
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let (Some(name), Some(version)) = (
            p.get("name").and_then(|n| n.as_str()),
            p.get("version").and_then(|n| n.as_str()),
        ) else {
            continue;
        };
        if p.get("source").is_none() {
            continue;
        }
        let hashes = p
            .get("checksum")
            .and_then(|c| c.as_str())
            .map(|c| ("SHA256".to_string(), c.to_ascii_lowercase()))
            .into_iter()
            .collect();
        out.push(package(
            "cargo",
            name,
            version,
            purl::with_namespace("cargo", name, version),
            hashes,
            file,
        ));
    }
    Ok(out)
}

/// `Gemfile.lock`: the `specs:` of its `GEM` sections (`    name (version)`).
fn gemfile(file: &str, text: &str) -> Vec<LangPackage> {
    let mut out = Vec::new();
    let mut in_gem = false;
    for line in text.lines() {
        if !line.starts_with(' ') {
            in_gem = line.trim() == "GEM";
            continue;
        }
        // Exactly four spaces: a spec; six are its dependencies.
        if !in_gem || !line.starts_with("    ") || line.starts_with("     ") {
            continue;
        }
        let Some((name, rest)) = line.trim().split_once(" (") else {
            continue;
        };
        let version = rest.trim_end_matches(')');
        // A platform gem is `1.2.3-x86_64-linux`; the purl keeps it as the
        // version, as Bundler names it.
        out.push(package(
            "gem",
            name,
            version,
            purl::with_namespace("gem", name, version),
            Vec::new(),
            file,
        ));
    }
    out
}

/// `composer.lock`: `packages` (not `packages-dev`), with `dist.shasum`
/// (sha1) when set.
fn composer(file: &str, text: &str) -> Result<Vec<LangPackage>> {
    let v: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
    let mut out = Vec::new();
    for p in v
        .get("packages")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let (Some(name), Some(version)) = (
            p.get("name").and_then(|n| n.as_str()),
            p.get("version").and_then(|n| n.as_str()),
        ) else {
            continue;
        };
        let hashes = p
            .pointer("/dist/shasum")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .map(|s| ("SHA1".to_string(), s.to_ascii_lowercase()))
            .into_iter()
            .collect();
        out.push(package(
            "composer",
            name,
            version,
            purl::with_namespace("composer", name, version),
            hashes,
            file,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &[LangPackage]) -> Vec<String> {
        p.iter()
            .map(|p| format!("{} {}", p.purl, p.hashes.len()))
            .collect()
    }

    #[test]
    fn npm_v3_skips_the_root_links_and_pruned_dev_packages() {
        let text = r#"{"lockfileVersion":3,"packages":{
            "":{"name":"app","version":"1.0.0"},
            "node_modules/express":{"version":"4.21.2","integrity":"sha512-AAAA","license":"MIT"},
            "node_modules/@types/node":{"version":"20.1.0","dev":true},
            "node_modules/a/node_modules/@s/b":{"version":"1.0.0"},
            "node_modules/local":{"resolved":"libs/local","link":true}}}"#;
        let p = npm("package-lock.json", text, true).unwrap();
        assert_eq!(
            names(&p),
            vec!["pkg:npm/%40s/b@1.0.0 0", "pkg:npm/express@4.21.2 1"]
        );
        assert_eq!(p[1].hashes, vec![("SHA512".into(), "000000".into())]);
        assert_eq!(p[1].license.as_deref(), Some("MIT"));
        assert_eq!(npm("package-lock.json", text, false).unwrap().len(), 3);
    }

    #[test]
    fn requirements_keep_pins_extras_markers_and_hashes() {
        let text = "# top\nFlask==3.1.1\ngunicorn[gevent]==23.0.0 ; python_version >= '3.8' \\\n    --hash=sha256:ABCD --hash=sha256:ef01\nrequests>=2\n-r other.txt\n";
        let p = requirements("requirements.txt", text);
        assert_eq!(
            names(&p),
            vec!["pkg:pypi/flask@3.1.1 0", "pkg:pypi/gunicorn@23.0.0 2"]
        );
        assert_eq!(p[1].hashes[0], ("SHA256".into(), "abcd".into()));
    }

    #[test]
    fn uv_lock_leaves_out_the_project_itself() {
        let text = r#"
version = 1
[[package]]
name = "app"
version = "0.1.0"
source = { editable = "." }
[[package]]
name = "Jinja2"
version = "3.1.4"
source = { registry = "https://pypi.org/simple" }
sdist = { url = "x", hash = "sha256:aa" }
wheels = [{ url = "y", hash = "sha256:bb" }]
"#;
        let p = python_toml("uv.lock", text).unwrap();
        assert_eq!(names(&p), vec!["pkg:pypi/jinja2@3.1.4 2"]);
    }

    #[test]
    fn go_sum_gives_one_module_per_version() {
        let text = "github.com/a/b v1.0.0 h1:x=\ngithub.com/a/b v1.0.0/go.mod h1:y=\ngolang.org/x/sys v0.1.0/go.mod h1:z=\n";
        assert_eq!(
            names(&go_sum("go.sum", text)),
            vec![
                "pkg:golang/github.com/a/b@v1.0.0 0",
                "pkg:golang/golang.org/x/sys@v0.1.0 0"
            ]
        );
    }

    #[test]
    fn cargo_lock_skips_workspace_crates() {
        let text = "version = 3\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n[[package]]\nname = \"itoa\"\nversion = \"1.0.11\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"49F1\"\n";
        let p = cargo("Cargo.lock", text).unwrap();
        assert_eq!(names(&p), vec!["pkg:cargo/itoa@1.0.11 1"]);
        assert_eq!(p[0].hashes[0].1, "49f1");
    }

    #[test]
    fn yarn_pnpm_gemfile_and_composer() {
        let y = "# yarn lockfile v1\n\n\"@babel/core@^7.0.0\", \"@babel/core@^7.1.0\":\n  version \"7.2.0\"\n  integrity sha1-AAAA\n\nleft-pad@1:\n  version \"1.3.0\"\n";
        assert_eq!(
            names(&yarn("yarn.lock", y)),
            vec!["pkg:npm/%40babel/core@7.2.0 1", "pkg:npm/left-pad@1.3.0 0"]
        );
        let p = "lockfileVersion: '9.0'\npackages:\n  '@a/b@1.0.0':\n    resolution: {integrity: sha512-AAAA}\n  c@2.0.0(react@18.0.0):\n    resolution: {integrity: sha512-AAAA}\n";
        assert_eq!(
            names(&pnpm("pnpm-lock.yaml", p).unwrap()),
            vec!["pkg:npm/%40a/b@1.0.0 1", "pkg:npm/c@2.0.0 1"]
        );
        let g = "GEM\n  remote: https://rubygems.org/\n  specs:\n    rack (3.0.8)\n    rails (7.1.0)\n      rack (>= 2)\n\nPLATFORMS\n  ruby\n";
        assert_eq!(
            names(&gemfile("Gemfile.lock", g)),
            vec!["pkg:gem/rack@3.0.8 0", "pkg:gem/rails@7.1.0 0"]
        );
        let c = r#"{"packages":[{"name":"monolog/monolog","version":"3.5.0","dist":{"shasum":""}}],"packages-dev":[{"name":"x/y","version":"1"}]}"#;
        assert_eq!(
            names(&composer("composer.lock", c).unwrap()),
            vec!["pkg:composer/monolog/monolog@3.5.0 0"]
        );
    }

    #[test]
    fn a_broken_lockfile_is_an_error() {
        assert!(parse("Cargo.lock", "[[package", false).is_err());
        assert!(parse("package-lock.json", "{", false).is_err());
    }
}
