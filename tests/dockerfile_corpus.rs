//! Parses and lowers every Dockerfile of the corpus in `tests/dockerfiles/`
//! and checks the properties its `NN-name.expect.json` states. The same
//! corpus is built by kiln and buildah in the end-to-end tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln::dockerfile::{self, BaseResolver, BuildArgs};
use kiln::graph::{Base, CopyFrom, CopyItem, Graph, ImageConfig, Mount, Network, Op};
use kiln::platform::Platform;
use serde_json::Value;

/// Stands in for `debian:bookworm`'s config.
struct Debian;

impl BaseResolver for Debian {
    fn image_config(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> kiln::Result<Option<ImageConfig>> {
        assert_eq!(reference, "localhost:5000/debian:bookworm");
        assert_eq!(platform, "linux/amd64");
        let mut c = ImageConfig::default();
        c.env_set(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        c.cmd = Some(vec!["bash".into()]);
        Ok(Some(c))
    }
}

fn corpus() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dockerfiles");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn expect_of(dir: &Path) -> Value {
    let p = dir.with_file_name(format!(
        "{}.expect.json",
        dir.file_name().unwrap().to_string_lossy()
    ));
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

fn args_of(expect: &Value) -> BuildArgs {
    let mut args = BTreeMap::new();
    if let Some(m) = expect["build_args"].as_object() {
        for (k, v) in m {
            args.insert(k.clone(), v.as_str().unwrap().to_string());
        }
    }
    BuildArgs {
        args,
        target: expect["target"].as_str().map(str::to_string),
        platform: Some("linux/amd64".into()),
        build_platform: Some("linux/amd64".into()),
        ..Default::default()
    }
}

fn final_config(g: &Graph, stage: usize) -> ImageConfig {
    let s = &g.stages[stage];
    let mut c = match &s.base {
        Base::Image { reference } => Debian
            .image_config(reference, &s.platform)
            .unwrap()
            .unwrap(),
        Base::Stage(i) => final_config(g, *i),
        _ => ImageConfig::default(),
    };
    c.on_build.clear();
    for step in &s.steps {
        if let Op::Config(ch) = &step.op {
            c.apply(ch);
        }
    }
    c
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

fn opt_strs(v: &Value) -> Option<Vec<String>> {
    if v.is_null() { None } else { Some(strs(v)) }
}

fn check(dir: &Path) {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let expect = expect_of(dir);
    let dockerfile = dir.join(expect["dockerfile"].as_str().unwrap_or("Dockerfile"));
    let args = args_of(&expect);
    let loaded = dockerfile::load_with(dir, &dockerfile, &args, &Debian)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let l = &loaded.lowered;
    let g = &l.graph;
    let t = g.target;
    let stage = &g.stages[t];
    // Every corpus file is based on the BASE build arg's default (directly or via a stage).
    let mut root = t;
    while let Base::Stage(i) = g.stages[root].base {
        root = i;
    }
    assert_eq!(
        g.stages[root].base,
        Base::Image {
            reference: "localhost:5000/debian:bookworm".into()
        },
        "{name}: base"
    );
    if let Some(n) = expect["stages"].as_u64() {
        assert_eq!(g.stages.len() as u64, n, "{name}: stages");
    }
    if let Some(o) = expect["order"].as_array() {
        let o: Vec<usize> = o.iter().map(|x| x.as_u64().unwrap() as usize).collect();
        assert_eq!(l.order, o, "{name}: order");
    }
    let kinds: Vec<&str> = stage
        .steps
        .iter()
        .map(|s| match s.op {
            Op::Run(_) => "run",
            Op::Copy(_) => "copy",
            Op::Config(_) => "config",
        })
        .collect();
    if expect["ops"].is_array() {
        assert_eq!(kinds, strs(&expect["ops"]), "{name}: ops");
    }
    let runs: Vec<&kiln::graph::Run> = stage
        .steps
        .iter()
        .filter_map(|s| {
            if let Op::Run(r) = &s.op {
                Some(r)
            } else {
                None
            }
        })
        .collect();
    let copies: Vec<&kiln::graph::Copy> = stage
        .steps
        .iter()
        .filter_map(|s| {
            if let Op::Copy(c) = &s.op {
                Some(c)
            } else {
                None
            }
        })
        .collect();
    if let Some(rc) = expect["run_commands"].as_array() {
        let want: Vec<Vec<String>> = rc.iter().map(strs).collect();
        let got: Vec<Vec<String>> = runs.iter().map(|r| r.command.clone()).collect();
        assert_eq!(got, want, "{name}: run commands");
    }
    if let Some(ba) = expect["run_build_args"].as_array() {
        let want: Vec<Vec<(String, String)>> = ba
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
                    .collect()
            })
            .collect();
        let got: Vec<Vec<(String, String)>> = runs
            .iter()
            .map(|r| {
                r.build_args
                    .iter()
                    .filter(|(k, _)| k != "BASE")
                    .cloned()
                    .collect()
            })
            .collect();
        assert_eq!(got, want, "{name}: run build args");
    }
    if let Some(m) = expect["mounts"].as_array() {
        let want: Vec<Vec<String>> = m.iter().map(strs).collect();
        let got: Vec<Vec<String>> = runs
            .iter()
            .map(|r| {
                r.mounts
                    .iter()
                    .map(|m| {
                        match m {
                            Mount::Bind { .. } => "bind",
                            Mount::Cache { .. } => "cache",
                            Mount::Tmpfs { .. } => "tmpfs",
                            Mount::Secret { .. } => "secret",
                            Mount::Ssh { .. } => "ssh",
                            Mount::Inline { .. } => "inline",
                            // Auto builds only: a Dockerfile RUN never gets it.
                            Mount::HostCa { .. } => "host-ca",
                        }
                        .to_string()
                    })
                    .collect()
            })
            .collect();
        assert_eq!(got, want, "{name}: mounts");
    }
    if let Some(n) = expect["network"].as_array() {
        let got: Vec<&str> = runs
            .iter()
            .map(|r| match r.network {
                Network::Default => "default",
                Network::None => "none",
                Network::Host => "host",
            })
            .collect();
        assert_eq!(got, strs(&Value::Array(n.clone())), "{name}: network");
    }
    if let Some(d) = expect["run_context_digest"].as_array() {
        let got: Vec<bool> = runs.iter().map(|r| r.context_digest.is_some()).collect();
        let want: Vec<bool> = d.iter().map(|b| b.as_bool().unwrap()).collect();
        assert_eq!(got, want, "{name}: run context digests");
    }
    if expect["copy_dests"].is_array() {
        let got: Vec<String> = copies.iter().map(|c| c.dest.clone()).collect();
        assert_eq!(got, strs(&expect["copy_dests"]), "{name}: copy dests");
    }
    if expect["copy_chmod"].is_array() {
        let got: Vec<String> = copies.iter().filter_map(|c| c.chmod.clone()).collect();
        assert_eq!(got, strs(&expect["copy_chmod"]), "{name}: chmod");
    }
    if let Some(v) = expect["copy_link"].as_array() {
        let got: Vec<bool> = copies.iter().map(|c| c.link).collect();
        assert_eq!(
            got,
            v.iter().map(|b| b.as_bool().unwrap()).collect::<Vec<_>>(),
            "{name}: link"
        );
    }
    if let Some(v) = expect["copy_parents"].as_array() {
        let got: Vec<bool> = copies.iter().map(|c| c.parents).collect();
        assert_eq!(
            got,
            v.iter().map(|b| b.as_bool().unwrap()).collect::<Vec<_>>(),
            "{name}: parents"
        );
    }
    if let Some(v) = expect["copy_exclude"].as_array() {
        let got: Vec<Vec<String>> = copies.iter().map(|c| c.exclude.clone()).collect();
        assert_eq!(
            got,
            v.iter().map(strs).collect::<Vec<_>>(),
            "{name}: exclude"
        );
    }
    if let Some(v) = expect["add"].as_array() {
        let got: Vec<bool> = copies.iter().map(|c| c.add.is_some()).collect();
        assert_eq!(
            got,
            v.iter().map(|b| b.as_bool().unwrap()).collect::<Vec<_>>(),
            "{name}: add"
        );
    }
    if let Some(v) = expect["copy_from"].as_array() {
        let got: Vec<CopyFrom> = copies.iter().map(|c| c.from.clone()).collect();
        let want: Vec<CopyFrom> = v
            .iter()
            .map(|f| CopyFrom::Stage(f["stage"].as_u64().unwrap() as usize))
            .collect();
        assert_eq!(got, want, "{name}: copy from");
    }
    if let Some(m) = expect["inline"].as_object() {
        let got: BTreeMap<String, String> = copies
            .iter()
            .flat_map(|c| c.items.iter())
            .filter_map(|i| {
                if let CopyItem::Inline { name, content } = i {
                    Some((name.clone(), content.clone()))
                } else {
                    None
                }
            })
            .collect();
        let want: BTreeMap<String, String> = m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        assert_eq!(got, want, "{name}: inline files");
    }
    if expect["context_files"].is_array() {
        let got: Vec<String> = loaded
            .context
            .entries()
            .filter(|e| e.kind != kiln::context::EntryKind::Dir)
            .map(|e| e.path.clone())
            .collect();
        assert_eq!(got, strs(&expect["context_files"]), "{name}: context files");
    }
    // Every needed step that reads the context carries a content digest.
    for &si in &l.order {
        for step in &g.stages[si].steps {
            if let Op::Copy(c) = &step.op
                && c.from == CopyFrom::Context
                && c.items.iter().any(|i| matches!(i, CopyItem::Path(_)))
            {
                assert!(
                    c.context_digest.is_some(),
                    "{name}: COPY without a context digest"
                );
            }
        }
    }
    let cfg = final_config(g, t);
    let want = &expect["config"];
    if let Some(env) = want["env"].as_object() {
        for (k, v) in env {
            assert_eq!(cfg.env_get(k), v.as_str(), "{name}: env {k}");
        }
    }
    if want.get("cmd").is_some() {
        assert_eq!(cfg.cmd, opt_strs(&want["cmd"]), "{name}: cmd");
    }
    if want.get("entrypoint").is_some() {
        assert_eq!(
            cfg.entrypoint,
            opt_strs(&want["entrypoint"]),
            "{name}: entrypoint"
        );
    }
    if let Some(w) = want["workdir"].as_str() {
        assert_eq!(cfg.working_dir, w, "{name}: workdir");
    }
    if let Some(u) = want["user"].as_str() {
        assert_eq!(cfg.user, u, "{name}: user");
    }
    if want["exposed"].is_array() {
        assert_eq!(
            cfg.exposed_ports.iter().cloned().collect::<Vec<_>>(),
            strs(&want["exposed"]),
            "{name}: ports"
        );
    }
    if let Some(m) = want["labels"].as_object() {
        let w: BTreeMap<String, String> = m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().into()))
            .collect();
        assert_eq!(cfg.labels, w, "{name}: labels");
    }
    if want["volumes"].is_array() {
        assert_eq!(
            cfg.volumes.iter().cloned().collect::<Vec<_>>(),
            strs(&want["volumes"]),
            "{name}: volumes"
        );
    }
    if let Some(s) = want["stop_signal"].as_str() {
        assert_eq!(cfg.stop_signal.as_deref(), Some(s), "{name}: stop signal");
    }
    if want["healthcheck"].is_array() {
        assert_eq!(
            cfg.healthcheck.as_ref().map(|h| h.test.clone()),
            Some(strs(&want["healthcheck"])),
            "{name}: healthcheck"
        );
    }
    if want["on_build"].is_array() {
        assert_eq!(cfg.on_build, strs(&want["on_build"]), "{name}: onbuild");
    }
    if let Some(a) = want["author"].as_str() {
        assert_eq!(cfg.author.as_deref(), Some(a), "{name}: author");
    }
    // Keys are computable and deterministic.
    let k1 = kiln::graph::key::compute(g, t, &Default::default()).unwrap();
    let again = dockerfile::load_with(dir, &dockerfile, &args, &Debian)
        .unwrap()
        .lowered
        .graph;
    let k2 = kiln::graph::key::compute(&again, t, &Default::default()).unwrap();
    assert_eq!(k1, k2, "{name}: cache keys are deterministic");
}

#[test]
fn corpus_has_at_least_40_dockerfiles_and_all_lower() {
    let dirs = corpus();
    assert!(dirs.len() >= 40, "only {} corpus entries", dirs.len());
    for d in &dirs {
        check(d);
    }
}

#[test]
fn corpus_covers_every_instruction() {
    let mut seen = std::collections::BTreeSet::new();
    for d in corpus() {
        let expect = expect_of(&d);
        let df = d.join(expect["dockerfile"].as_str().unwrap_or("Dockerfile"));
        let text = std::fs::read_to_string(&df).unwrap();
        for i in dockerfile::parse(&df.display().to_string(), &text)
            .unwrap()
            .instructions
        {
            seen.insert(i.keyword.clone());
            if let dockerfile::ast::Kind::Onbuild(_, inner) = &i.kind {
                seen.insert(format!("ONBUILD {}", inner.keyword));
            }
        }
    }
    for k in dockerfile::parse::INSTRUCTIONS {
        assert!(seen.contains(*k), "no corpus Dockerfile uses {k}");
    }
}
