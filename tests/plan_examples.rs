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
                    platform: kiln::platform::Platform::parse("linux/amd64").unwrap(),
                    build_ca: Vec::new(),
                    host_ca: true,
                    ..Default::default()
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
            .unwrap_or_else(|e| {
                format!("error: {}", format!("{e:#}").lines().next().unwrap_or(""))
            });
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

/// The two printers of a plan's recipe agree, for every example: the
/// Dockerfile `kiln dockerfile` writes, read back by kiln's Dockerfile
/// frontend, has the same stages as the graph `kiln build` runs: the same
/// Debian packages (apt-get there, package bases here), the same commands
/// in the same order, the same copies, and the same final image config
/// (entrypoint, command, environment, working dir, user, ports).
#[test]
fn every_examples_dockerfile_agrees_with_its_build_graph() {
    use kiln::graph::{Base, CopyFrom, CopyItem, Graph, ImageConfig, Op};
    use kiln::plan::lower::{LowerOptions, context_ignore, lower};

    /// A stage as the printers both express it.
    #[derive(Debug, PartialEq)]
    struct Shape {
        base: String,
        packages: Vec<String>,
        steps: Vec<String>,
    }
    fn config(g: &Graph, i: usize) -> ImageConfig {
        let st = &g.stages[i];
        let mut c = match st.base {
            Base::Stage(b) => config(g, b),
            _ => ImageConfig::default(),
        };
        for s in &st.steps {
            if let Op::Config(change) = &s.op {
                c.apply(change);
            }
        }
        c
    }
    fn shape(g: &Graph, i: usize, scripts: &[(String, String)]) -> Shape {
        let st = &g.stages[i];
        let (base, mut packages) = match &st.base {
            Base::Packages(p) => ("debian".to_string(), p.packages.clone()),
            // The printed Dockerfile's Debian base: its packages are the
            // apt-get line's.
            Base::Image { reference } if reference.starts_with("debian:") => {
                ("debian".to_string(), Vec::new())
            }
            Base::Image { reference } => (reference.clone(), Vec::new()),
            Base::Stage(s) => (format!("stage {s}"), Vec::new()),
            Base::Scratch => ("scratch".to_string(), Vec::new()),
        };
        let mut steps = Vec::new();
        for s in &st.steps {
            match &s.op {
                Op::Run(r) => {
                    let cmd = r.command.last().cloned().unwrap_or_default();
                    if let Some(list) = cmd
                        .split("apt-get install -y --no-install-recommends ")
                        .nth(1)
                    {
                        packages = list.split_whitespace().map(String::from).collect();
                        continue;
                    }
                    // A multi-line script is a bind-mounted file there.
                    let cmd = if cmd == "sh /run/kiln-script.sh" {
                        r.mounts
                            .iter()
                            .find_map(|m| match m {
                                kiln::graph::Mount::Bind { source, .. } => scripts
                                    .iter()
                                    .find(|(path, _)| path == source)
                                    .map(|(_, text)| text.clone()),
                                _ => None,
                            })
                            .unwrap_or(cmd)
                    } else {
                        cmd
                    };
                    steps.push(format!("RUN {cmd}"));
                }
                Op::Copy(c) => {
                    let from = match &c.from {
                        CopyFrom::Context => "context".to_string(),
                        CopyFrom::Stage(s) => format!("stage {s}"),
                        other => format!("{other:?}"),
                    };
                    let items: Vec<String> = c
                        .items
                        .iter()
                        .map(|it| match it {
                            CopyItem::Path(p) => p.clone(),
                            CopyItem::Inline { .. } => "(assets)".to_string(),
                            other => format!("{other:?}"),
                        })
                        .collect();
                    // Inline assets are files of the context there.
                    let items = if items
                        .iter()
                        .any(|i| i.starts_with(".kiln/assets") || i == "(assets)")
                    {
                        vec!["(assets)".to_string()]
                    } else {
                        items
                    };
                    steps.push(format!(
                        "COPY {from} {} {} {:?}",
                        items.join(","),
                        c.dest.trim_end_matches('/'),
                        c.chmod
                    ));
                }
                _ => {}
            }
        }
        Shape {
            base,
            packages,
            steps,
        }
    }

    let mut failures = Vec::new();
    let mut compared = 0;
    for (name, dir) in examples() {
        let Ok(plan) = plan::generate(&dir, &[], &Options::default()) else {
            continue;
        };
        let (matcher, _) = context_ignore(&dir).unwrap();
        let ctx = kiln::context::Context::open(&dir, matcher).unwrap();
        let opts = LowerOptions {
            platform: kiln::platform::Platform::parse("linux/amd64").unwrap(),
            build_ca: Vec::new(),
            host_ca: false,
            ..Default::default()
        };
        let Ok(built) = lower(&plan, &ctx, &opts) else {
            continue; // no start command: no image to compare
        };
        let generated = kiln::plan::dockerfile::generate(
            &plan,
            &kiln::plan::dockerfile::Options {
                base_image: None,
                context: Some(dir.clone()),
            },
        )
        .unwrap();
        // The Dockerfile's context: the app with the files it writes.
        let tmp = tempfile::tempdir().unwrap();
        copy_tree(&dir, tmp.path());
        let df = tmp.path().join("Dockerfile.kiln");
        generated.write(tmp.path(), &df).unwrap();
        let printed = kiln::dockerfile::load(tmp.path(), &df, &Default::default())
            .unwrap_or_else(|e| panic!("{name}: the generated Dockerfile does not build: {e:#}"));
        compared += 1;
        if printed.stages.len() != built.stages.len() {
            failures.push(format!(
                "{name}: {} stages, the graph has {}",
                printed.stages.len(),
                built.stages.len()
            ));
            continue;
        }
        for i in 0..built.stages.len() {
            let (a, b) = (shape(&built, i, &[]), shape(&printed, i, &generated.assets));
            if a != b {
                failures.push(format!(
                    "{name}, stage {i}:\n  graph:      {a:?}\n  Dockerfile: {b:?}"
                ));
            }
        }
        let (a, b) = (
            config(&built, built.target),
            config(&printed, printed.target),
        );
        if a != b {
            failures.push(format!(
                "{name}: image config\n  graph:      {a:?}\n  Dockerfile: {b:?}"
            ));
        }
    }
    assert!(compared >= 40, "only {compared} examples compared");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dest) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_tree(&src, &dest);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dest).unwrap();
        } else {
            std::fs::copy(&src, &dest).unwrap();
        }
    }
}
