//! Hermetic tests: parsing each format into resources, and rewriting the
//! documents (text kept, `build:` → `image:`). No build runs here.

use std::fs;
use std::path::Path;

use super::*;

const REG: &str = "reg.test:5000/team";

fn parse_str(dir: &Path, name: &str, text: &str) -> Result<Parsed> {
    let f = dir.join(name);
    fs::write(&f, text).unwrap();
    parse(&f, text, REG)
}

fn built(r: &Resource, digest: &str) -> Built {
    let digest: Digest = format!("sha256:{}", digest.repeat(64 / digest.len()))
        .parse()
        .unwrap();
    Built {
        label: r.label.clone(),
        file: r.file.clone(),
        reference: pinned(r.target.name(), &digest),
        digest,
        pushed: true,
        blobs_sent: 0,
        blobs_skipped: 0,
    }
}

fn resolve_all(p: &Parsed) -> String {
    let b: Vec<Built> = p.resources.iter().map(|r| built(r, "ab")).collect();
    let pairs: Vec<(&Resource, &Built)> = p.resources.iter().zip(b.iter()).collect();
    rewrite::resolve(p, &pairs).unwrap()
}

const LTTLE: &str = "\
# the web app
app:
  name: web
  build: auto
  command: [node, --experimental-modules, server.mjs]
  resources:
    cpu: 1 # one core
---
machine:
  name: api
  namespace: prod
  build:
    options:
      dir: ./apps/api
      tag: v1
  environment:
    PORT: \"8000\"
---
machine:
  name: worker
  build:
    docker:
      context: ./worker
      dockerfile: Dockerfile.prod
      name: my-worker
      args:
        A: one
        B: 2
---
volume:
  name: data
  size: 1Gi
";

#[test]
fn lttle_resources_and_defaults() {
    let d = tempfile::tempdir().unwrap();
    let p = parse_str(d.path(), "lttle.yaml", LTTLE).unwrap();
    assert_eq!(p.resources.len(), 3);
    let web = &p.resources[0];
    assert_eq!(web.label, "default/web");
    assert!(web.spec.auto);
    assert_eq!(web.spec.context, d.path());
    assert_eq!(
        web.spec.start_cmd.as_deref(),
        Some("node --experimental-modules server.mjs")
    );
    // Generated names are UUIDs, stable for the same file and resource.
    let name = web.target.name();
    let uuid = name
        .strip_prefix("reg.test:5000/team/")
        .and_then(|n| n.strip_suffix(":latest"))
        .unwrap();
    assert_eq!(uuid.len(), 36, "{uuid}");
    assert_eq!(&uuid[14..15], "5");
    let again = parse_str(d.path(), "lttle.yaml", LTTLE).unwrap();
    assert_eq!(again.resources[0].target, web.target);
    assert_ne!(p.resources[1].target.name(), name);

    let api = &p.resources[1];
    assert_eq!(api.label, "prod/api");
    assert!(!api.spec.auto, "options use the platform priority");
    assert_eq!(api.spec.context, d.path().join("apps/api"));
    assert!(api.target.name().ends_with(":v1"));
    assert_eq!(api.spec.dockerfile, None);

    let w = &p.resources[2];
    assert_eq!(
        w.target,
        Target::Registry("reg.test:5000/team/my-worker:latest".into())
    );
    assert_eq!(
        w.spec.dockerfile,
        Some(d.path().join("worker/Dockerfile.prod"))
    );
    assert_eq!(w.spec.args.get("A").map(String::as_str), Some("one"));
    assert_eq!(w.spec.args.get("B").map(String::as_str), Some("2"));
}

#[test]
fn lttle_rewrite_keeps_text_comments_and_other_kinds() {
    let d = tempfile::tempdir().unwrap();
    let p = parse_str(d.path(), "lttle.yaml", LTTLE).unwrap();
    let out = resolve_all(&p);
    let digest = format!("sha256:{}", "ab".repeat(32));
    assert!(
        out.starts_with("# the web app\napp:\n  name: web\n  image: reg.test:5000/team/"),
        "{out}"
    );
    assert!(
        out.contains(&format!(":latest@{digest}\n  command:")),
        "{out}"
    );
    assert!(out.contains("cpu: 1 # one core"), "{out}");
    assert!(out.contains(&format!(
        "  image: reg.test:5000/team/my-worker:latest@{digest}\n"
    )));
    assert!(out.contains("volume:\n  name: data\n  size: 1Gi\n"));
    assert!(!out.contains("build:"), "{out}");
    assert_eq!(out.matches("\n---\n").count(), 3);
    // It is still the same documents, with image: in build:'s place.
    let docs = yaml::load(Path::new("out"), &out).unwrap();
    assert_eq!(docs.len(), 4);
    let keys: Vec<&str> = docs[1]["machine"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(keys, ["name", "namespace", "image", "environment"]);
}

#[test]
fn flow_style_falls_back_to_values() {
    let d = tempfile::tempdir().unwrap();
    let text = "app: {name: x, build: {options: {dir: .}}, port: 80}\n";
    let p = parse_str(d.path(), "f.yaml", text).unwrap();
    let out = resolve_all(&p);
    let docs = yaml::load(Path::new("out"), &out).unwrap();
    let app = docs[0]["app"].as_mapping().unwrap();
    let keys: Vec<&str> = app.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(keys, ["name", "image", "port"]);
    assert!(app["image"].as_str().unwrap().contains("@sha256:abab"));
}

fn err(dir: &Path, text: &str) -> String {
    format!("{:#}", parse_str(dir, "bad.yaml", text).unwrap_err())
}

#[test]
fn lttle_bad_input_names_the_resource() {
    let d = tempfile::tempdir().unwrap();
    let e = err(
        d.path(),
        "app:\n  name: x\n  build:\n    options: {}\n    docker: {}\n",
    );
    assert!(
        e.contains("default/x") && e.contains("both options and docker"),
        "{e}"
    );
    let e = err(d.path(), "app:\n  name: x\n  build: nixpacks\n");
    assert!(
        e.contains("default/x") && e.contains("unknown build mode \"nixpacks\""),
        "{e}"
    );
    let e = err(d.path(), "app:\n  name: x\n  build:\n    kaniko: {}\n");
    assert!(e.contains("unknown build mode \"kaniko\""), "{e}");
    let e = err(
        d.path(),
        "app:\n  name: x\n  build:\n    options:\n      folder: .\n",
    );
    assert!(
        e.contains("unknown field machine.build.options.folder")
            || e.contains("app.build.options.folder"),
        "{e}"
    );
    let e = err(d.path(), "app:\n  build: auto\n");
    assert!(e.contains("app.name is missing"), "{e}");
    let e = err(
        d.path(),
        "app:\n  name: x\n  build:\n    options:\n      image: a/b@sha256:00\n",
    );
    assert!(e.contains("options.image"), "{e}");
}

#[test]
fn invalid_yaml_reports_file_line_column() {
    let d = tempfile::tempdir().unwrap();
    let e = err(d.path(), "app:\n  name: x\n  build: [auto\n---\n");
    let want = format!("{}:", d.path().join("bad.yaml").display());
    assert!(e.starts_with(&want), "{e}");
    let rest = &e[want.len()..];
    let mut it = rest.splitn(3, ':');
    let line: usize = it.next().unwrap().parse().unwrap();
    let col: usize = it.next().unwrap().parse().unwrap();
    assert!(line >= 3 && col >= 1, "{e}");
    assert!(rest.contains("invalid YAML"), "{e}");
}

#[test]
fn missing_dir_and_dockerfile_are_reported_before_building() {
    let d = tempfile::tempdir().unwrap();
    let p = parse_str(
        d.path(),
        "l.yaml",
        "app:\n  name: gone\n  build:\n    options:\n      dir: ./nowhere\n",
    )
    .unwrap();
    let e = format!("{:#}", check(&p.resources[0]).unwrap_err());
    assert!(
        e.contains("default/gone") && e.contains("nowhere") && e.contains("does not exist"),
        "{e}"
    );
    let p = parse_str(
        d.path(),
        "l.yaml",
        "app:\n  name: nodf\n  build:\n    docker:\n      dockerfile: Dockerfile.prod\n",
    )
    .unwrap();
    let e = check(&p.resources[0]).unwrap_err();
    let want = format!(
        "Dockerfile not found: {}",
        d.path().join("Dockerfile.prod").display()
    );
    assert_eq!(e.root_cause().to_string(), want);
    assert!(format!("{e:#}").contains("default/nodf"), "{e:#}");
}

const COMPOSE: &str = "\
name: Shop
services:
  web:
    # built from ./web
    build: ./web
    ports: [\"8080:80\"]
  api:
    image: api-image:2
    build:
      context: ./api
      dockerfile: Dockerfile.dev
      args:
        - VERSION=3
        - MODE=prod
      target: runtime
  db:
    image: postgres:16
";

#[test]
fn compose_services_and_rewrite() {
    let d = tempfile::tempdir().unwrap();
    let p = parse_str(d.path(), "compose.yaml", COMPOSE).unwrap();
    assert_eq!(p.resources.len(), 2);
    let web = &p.resources[0];
    assert_eq!(web.label, "shop/web");
    assert_eq!(web.target.name(), "reg.test:5000/team/shop-web:latest");
    assert_eq!(web.spec.context, d.path().join("web"));
    assert_eq!(web.spec.dockerfile, None);
    let api = &p.resources[1];
    assert_eq!(api.target.name(), "reg.test:5000/team/api-image:2");
    assert_eq!(api.spec.target.as_deref(), Some("runtime"));
    assert_eq!(api.spec.args.get("VERSION").map(String::as_str), Some("3"));
    assert_eq!(
        api.spec.dockerfile,
        Some(d.path().join("api/Dockerfile.dev"))
    );
    let out = resolve_all(&p);
    let digest = format!("sha256:{}", "ab".repeat(32));
    assert!(out.contains(&format!("    # built from ./web\n    image: reg.test:5000/team/shop-web:latest@{digest}\n    ports:")), "{out}");
    assert!(
        out.contains(&format!(
            "  api:\n    image: reg.test:5000/team/api-image:2@{digest}\n  db:"
        )),
        "{out}"
    );
    assert!(out.contains("    image: postgres:16\n"));
}

#[test]
fn compose_registry_image_kept_and_bad_build() {
    let d = tempfile::tempdir().unwrap();
    let p = parse_str(
        d.path(),
        "c.yaml",
        "services:\n  a:\n    image: other.io/x/y\n    build: .\n",
    )
    .unwrap();
    assert_eq!(p.resources[0].target.name(), "other.io/x/y:latest");
    let e = err(
        d.path(),
        "services:\n  a:\n    build:\n      context: .\n      cache_to: x\n",
    );
    assert!(e.contains("services.a.build.cache_to"), "{e}");
}

const FTL: &str = "\
project:
  name: my-project
  domain: example.com
services:
  - name: web
    image: web-img:1
    path: ./web
    port: 80
  - name: backend
    build:
      context: ./backend
      dockerfile: Dockerfile
  - name: redis
    image: redis:7
";

#[test]
fn ftl_services_and_rewrite() {
    let d = tempfile::tempdir().unwrap();
    let p = parse_str(d.path(), "ftl.yaml", FTL).unwrap();
    assert_eq!(p.resources.len(), 2);
    assert_eq!(p.resources[0].label, "my-project/web");
    assert_eq!(
        p.resources[0].target,
        Target::Registry("reg.test:5000/team/web-img:1".into())
    );
    assert_eq!(p.resources[0].spec.context, d.path().join("web"));
    assert_eq!(
        p.resources[1].target,
        Target::Local("my-project-backend:latest".into())
    );
    let out = resolve_all(&p);
    let digest = format!("sha256:{}", "ab".repeat(32));
    // `path:` is not a build: it stays; image: takes the new value.
    assert!(
        out.contains(&format!(
            "  - name: web\n    image: reg.test:5000/team/web-img:1@{digest}\n    path: ./web\n"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "  - name: backend\n    image: my-project-backend:latest@{digest}\n  - name: redis\n"
        )),
        "{out}"
    );
    assert!(out.contains("    image: redis:7\n"));
}

#[test]
fn item_whose_first_key_is_build() {
    let d = tempfile::tempdir().unwrap();
    let text = "services:\n  - build: ./a\n    name: a\n    image: x/a\n";
    let p = parse_str(d.path(), "ftl.yaml", text).unwrap();
    let out = resolve_all(&p);
    let docs = yaml::load(Path::new("o"), &out).unwrap();
    let svc = docs[0]["services"][0].as_mapping().unwrap();
    let keys: Vec<&str> = svc.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(keys, ["name", "image"]);
}

#[test]
fn references_follow_dockers_host_rule() {
    assert!(has_registry_host("localhost/x"));
    assert!(has_registry_host("127.0.0.1:5000/x"));
    assert!(has_registry_host("ghcr.io/a/b"));
    assert!(!has_registry_host("custom/name"));
    assert!(!has_registry_host("name"));
    let n = Naming {
        file: Path::new("f.yaml"),
        base: Path::new("."),
        registry: "",
    };
    let e = format!(
        "{:#}",
        n.reference(None, "x", "latest", "app.build").unwrap_err()
    );
    assert!(e.contains("--registry"), "{e}");
}

#[test]
fn each_resource_of_a_deploy_gets_its_own_cache_tag() {
    assert_eq!(
        resource_cache_ref("reg.example/cache:main", "reg.example/shop/api:abc123"),
        "reg.example/cache:main-api"
    );
    assert_eq!(
        resource_cache_ref("127.0.0.1:5000/cache", "127.0.0.1:5000/team/web"),
        "127.0.0.1:5000/cache:latest-web"
    );
}
