//! Plan and Dockerfile snapshots for every app in `examples/`, and the
//! digest of each one's build graph (what `kiln build` runs: the same graph
//! gives the same cache keys and the same image), so a refactor of the
//! plan's printers that changes any example's build shows here.
//!
//! `KILN_UPDATE_SNAPSHOTS=1 cargo test --test plan_examples` rewrites the
//! snapshots; review the diff before committing.

use std::path::{Path, PathBuf};

use kiln::plan::{self, Options};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compares `actual` with the snapshot file, or writes it when updating.
fn snapshot(path: &Path, actual: &str) -> Result<(), String> {
    if std::env::var_os("KILN_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: {e} (run with KILN_UPDATE_SNAPSHOTS=1 to create it)",
            path.display()
        )
    })?;
    if expected != actual {
        return Err(format!(
            "{} differs from the generated output:\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        ));
    }
    Ok(())
}

fn examples() -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().into_string().unwrap(), e.path()))
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_matches_its_plan_and_dockerfile_snapshots() {
    let mut failures = Vec::new();
    let examples = examples();
    assert!(
        examples.len() >= 40,
        "examples/ lost apps: {}",
        examples.len()
    );
    for (name, dir) in examples {
        let result = plan::generate(&dir, &[], &Options::default())
            .map_err(|e| format!("{name}: {e:#}"))
            .and_then(|p| {
                let json = serde_json::to_string_pretty(&p).unwrap() + "\n";
                snapshot(
                    &root().join(format!("tests/snapshots/plan/{name}.json")),
                    &json,
                )?;
                let df = kiln::plan::dockerfile::generate(&p, &Default::default())
                    .map_err(|e| format!("{name}: {e:#}"))?;
                snapshot(
                    &root().join(format!("tests/snapshots/dockerfile/{name}.Dockerfile")),
                    &df.dockerfile,
                )
            });
        if let Err(e) = result {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// One line per example: its name and the sha256 of its lowered graph's
/// JSON (host CA on, as `kiln build` does by default), or the lowering's
/// error. On a difference, `KILN_DUMP_GRAPHS=DIR` writes the graphs.
#[test]
fn every_examples_build_graph_matches_its_digest() {
    use kiln::plan::lower::{LowerOptions, context_ignore, lower};
    let mut lines = String::new();
    for (name, dir) in examples() {
        let line = plan::generate(&dir, &[], &Options::default())
            .and_then(|p| {
                let (matcher, _) = context_ignore(&dir)?;
                let ctx = kiln::context::Context::open(&dir, matcher)?;
                let opts = LowerOptions {
                    platform: "linux/amd64".into(),
                    build_ca: Vec::new(),
                    host_ca: true,
                };
                lower(&p, &ctx, &opts)
            })
            .map(|g| {
                let json = serde_json::to_string_pretty(&g).unwrap();
                if let Some(d) = std::env::var_os("KILN_DUMP_GRAPHS") {
                    let d = Path::new(&d);
                    std::fs::create_dir_all(d).unwrap();
                    std::fs::write(d.join(format!("{name}.json")), &json).unwrap();
                }
                kiln::oci::Digest::of(json.as_bytes()).hex().to_string()
            })
            .unwrap_or_else(|e| format!("error: {}", format!("{e:#}").lines().next().unwrap_or("")));
        lines.push_str(&format!("{name} {line}\n"));
    }
    if let Err(e) = snapshot(&root().join("tests/snapshots/graphs.sha256"), &lines) {
        panic!("{e}");
    }
}

/// Each provider example is detected as that provider.
#[test]
fn examples_detect_as_their_provider() {
    let cases = [
        ("clojure", "clojure"),
        ("cobol", "cobol"),
        ("crystal", "crystal"),
        ("csharp-cli", "c#"),
        ("dart", "dart"),
        ("deno", "deno"),
        ("elixir-phoenix", "elixir"),
        ("fsharp", "f#"),
        ("gleam", "gleam"),
        ("go-mod", "go"),
        ("go-cmd", "go"),
        ("haskell-stack", "haskell"),
        ("java-gradle", "java"),
        ("java-maven", "java"),
        ("lunatic", "lunatic"),
        ("node-npm", "node"),
        ("php-laravel", "php"),
        ("php-vanilla", "php"),
        ("python-flask", "python"),
        ("ruby-rails", "ruby"),
        ("rust-cargo", "rust"),
        ("scala-sbt", "scala"),
        ("scheme-haunt", "scheme"),
        ("staticfile", "staticfile"),
        ("swift", "swift"),
        ("zig", "zig"),
    ];
    for (dir, provider) in cases {
        let d = plan::detect(&root().join("examples").join(dir), &[], &Options::default()).unwrap();
        assert_eq!(
            d.first().map(|d| d.provider.as_str()),
            Some(provider),
            "{dir}"
        );
    }
}
