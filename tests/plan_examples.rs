//! Plan and Dockerfile snapshots for every app in `examples/`.
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
