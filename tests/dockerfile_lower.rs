//! Lowering semantics: Docker's variable scoping, stage resolution, and the
//! errors users see.

use std::collections::BTreeMap;
use std::path::Path;

use kiln::dockerfile::{self, BaseResolver, BuildArgs, SyntaxError};
use kiln::graph::{Base, ConfigChange, CopyFrom, CopyItem, Graph, ImageConfig, Mount, Network, Op};
use kiln::platform::Platform;

struct Debian;

impl BaseResolver for Debian {
    fn image_config(&self, _: &str, _: &Platform) -> kiln::Result<Option<ImageConfig>> {
        let mut c = ImageConfig::default();
        c.env_set(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        Ok(Some(c))
    }
}

fn ctx(files: &[(&str, &str)]) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for (p, c) in files {
        let full = t.path().join(p);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, c).unwrap();
    }
    t
}

fn lower_in(
    dir: &Path,
    df: &str,
    args: &[(&str, &str)],
    target: Option<&str>,
) -> kiln::Result<dockerfile::Loaded> {
    std::fs::write(dir.join("Dockerfile"), df).unwrap();
    let args = BuildArgs {
        args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: target.map(str::to_string),
        platform: Some("linux/arm64".into()),
        build_platform: Some("linux/amd64".into()),
        ..Default::default()
    };
    dockerfile::load_with(dir, &dir.join("Dockerfile"), &args, &Debian)
}

fn graph(df: &str, args: &[(&str, &str)]) -> Graph {
    let t = ctx(&[("a.txt", "a"), ("src/m.c", "m")]);
    lower_in(t.path(), df, args, None)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .lowered
        .graph
}

fn err(df: &str) -> String {
    let t = ctx(&[("a.txt", "a")]);
    format!("{:#}", lower_in(t.path(), df, &[], None).unwrap_err())
}

fn configs(g: &Graph, stage: usize) -> Vec<ConfigChange> {
    g.stages[stage]
        .steps
        .iter()
        .filter_map(|s| {
            if let Op::Config(c) = &s.op {
                Some(c.clone())
            } else {
                None
            }
        })
        .collect()
}

fn runs(g: &Graph, stage: usize) -> Vec<kiln::graph::Run> {
    g.stages[stage]
        .steps
        .iter()
        .filter_map(|s| {
            if let Op::Run(r) = &s.op {
                Some(r.clone())
            } else {
                None
            }
        })
        .collect()
}

fn env_of(g: &Graph, stage: usize) -> BTreeMap<String, String> {
    let mut c = ImageConfig::default();
    for ch in configs(g, stage) {
        c.apply(&ch);
    }
    c.env.into_iter().collect()
}

#[test]
fn global_args_only_in_from_unless_redeclared() {
    let g = graph(
        "ARG BASE=localhost:5000/debian:bookworm\nARG V=1\nFROM $BASE\nENV A=${V:-unset}\nARG V\nENV B=$V\n",
        &[],
    );
    assert_eq!(
        g.stages[0].base,
        Base::Image {
            reference: "localhost:5000/debian:bookworm".into()
        }
    );
    let env = env_of(&g, 0);
    assert_eq!(env["A"], "unset");
    assert_eq!(env["B"], "1");
}

#[test]
fn build_args_override_defaults_and_env_wins_over_arg() {
    let g = graph(
        "FROM scratch\nARG X=default\nENV FROM_ARG=$X\nARG Y=y\nENV Y=env\nRUN echo $Y\nARG Z\nENV Z_IS=${Z:-none}\n",
        &[("X", "cli"), ("UNUSED", "1")],
    );
    let env = env_of(&g, 0);
    assert_eq!(env["FROM_ARG"], "cli");
    assert_eq!(env["Z_IS"], "none");
    let run = &runs(&g, 0)[0];
    // ENV Y shadows ARG Y, so it is not passed as a build arg.
    assert_eq!(run.build_args, vec![("X".to_string(), "cli".to_string())]);
    assert_eq!(run.command, vec!["/bin/sh", "-c", "echo $Y"]);
    let t = ctx(&[]);
    let l = lower_in(t.path(), "FROM scratch\n", &[("UNUSED", "1")], None).unwrap();
    assert!(l.lowered.warnings.iter().any(|w| w.contains("UNUSED")));
}

#[test]
fn env_values_see_previous_environment() {
    let g = graph(
        "FROM scratch\nENV A=1\nENV A=2 B=$A\nENV PATH=/opt/bin:$PATH\n",
        &[],
    );
    let env = env_of(&g, 0);
    assert_eq!(env["B"], "1");
    // scratch has no PATH.
    assert_eq!(env["PATH"], "/opt/bin:");
    let g = graph("FROM debian\nENV PATH=/opt/bin:$PATH\n", &[]);
    assert_eq!(
        env_of(&g, 0)["PATH"],
        "/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
}

#[test]
fn platform_args() {
    let g = graph(
        "FROM --platform=$BUILDPLATFORM scratch AS b\nARG TARGETARCH\nARG BUILDOS\nENV T=$TARGETARCH O=$BUILDOS N=${TARGETPLATFORM:-notdeclared}\nFROM scratch\n",
        &[],
    );
    assert_eq!(g.stages[0].platform, "linux/amd64");
    assert_eq!(g.stages[1].platform, "linux/arm64");
    let env = env_of(&g, 0);
    assert_eq!(env["T"], "arm64");
    assert_eq!(env["O"], "linux");
    assert_eq!(env["N"], "notdeclared");
}

#[test]
fn workdir_user_copy_dest() {
    let g = graph(
        "FROM scratch\nWORKDIR /app\nWORKDIR sub/../src\nENV D=/data\nWORKDIR $D/x\nCOPY a.txt .\nCOPY a.txt rel\nCOPY a.txt src/ /abs/\nUSER ${U:-1000}:1000\n",
        &[],
    );
    let c = configs(&g, 0);
    assert_eq!(c[0], ConfigChange::WorkingDir("/app".into()));
    assert_eq!(c[1], ConfigChange::WorkingDir("/app/src".into()));
    assert_eq!(c[3], ConfigChange::WorkingDir("/data/x".into()));
    assert_eq!(c[4], ConfigChange::User("1000:1000".into()));
    let dests: Vec<String> = g.stages[0]
        .steps
        .iter()
        .filter_map(|s| {
            if let Op::Copy(c) = &s.op {
                Some(c.dest.clone())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(dests, vec!["/data/x/", "/data/x/rel", "/abs/"]);
}

#[test]
fn multi_stage_resolution_and_unused_stages() {
    let t = ctx(&[("a.txt", "a")]);
    let df = "FROM scratch AS Base\nCOPY a.txt /\nFROM base AS build\nRUN --mount=type=bind,from=base,target=/b true\nFROM scratch AS unused\nCOPY missing /\nFROM scratch\nCOPY --from=build /x /x\nCOPY --from=0 /a.txt /y\nCOPY --from=localhost:5000/img:1 /z /z\n";
    let l = lower_in(t.path(), df, &[], None).unwrap().lowered;
    let g = &l.graph;
    assert_eq!(g.stages[1].base, Base::Stage(0));
    assert_eq!(g.stages[0].name.as_deref(), Some("base"));
    assert_eq!(l.order, vec![0, 1, 3]);
    let froms: Vec<CopyFrom> = g.stages[3]
        .steps
        .iter()
        .filter_map(|s| {
            if let Op::Copy(c) = &s.op {
                Some(c.from.clone())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        froms,
        vec![
            CopyFrom::Stage(1),
            CopyFrom::Stage(0),
            CopyFrom::Image("localhost:5000/img:1".into())
        ]
    );
    // The unused stage's missing file is only an error when it is the target.
    let e = format!(
        "{:#}",
        lower_in(t.path(), df, &[], Some("unused")).unwrap_err()
    );
    assert!(
        e.contains("file not found in build context: missing"),
        "{e}"
    );
    assert!(e.contains("Dockerfile:6"), "{e}");
    let e = format!(
        "{:#}",
        lower_in(t.path(), df, &[], Some("nope")).unwrap_err()
    );
    assert!(
        e.contains("no stage named \"nope\"") && e.contains("base, build, unused"),
        "{e}"
    );
}

#[test]
fn from_errors() {
    let e = err("FROM scratch AS builder\nFROM scratch\nCOPY --from=buidler /a /a\n");
    assert!(
        e.contains("Dockerfile:3:6") && e.contains("no stage named \"buidler\""),
        "{e}"
    );
    assert!(e.contains("did you mean --from=builder?"), "{e}");
    let e = err("FROM scratch\nCOPY --from=0 /a /a\n");
    assert!(
        e.contains("refers to the stage being built") || e.contains("earlier stage"),
        "{e}"
    );
    let e = err("ARG B\nFROM $B\n");
    assert!(e.contains("should not be blank"), "{e}");
    let e = err("RUN x\nFROM scratch\n");
    assert!(e.contains("before the first FROM"), "{e}");
    let e = err("FROM scratch AS a\nFROM scratch AS A\n");
    assert!(e.contains("duplicate stage name"), "{e}");
    let e = err("FROM scratch\nCOPY ../etc/passwd /p\n");
    assert!(e.contains("outside the build context"), "{e}");
    let e = err("FROM scratch\nCOPY a.txt a.txt /notdir\n");
    assert!(e.contains("must be a directory and end with a /"), "{e}");
    let e = err("FROM scratch\nEXPOSE 80/xyz\n");
    assert!(e.contains("invalid proto"), "{e}");
    let e = err("FROM scratch\nRUN --network=bridge true\n");
    assert!(e.contains("unsupported network mode"), "{e}");
    let e = err("FROM scratch\nADD --checksum=md5:abc https://example.com/x /x\n");
    assert!(e.contains("invalid --checksum"), "{e}");
    let sum = format!("sha256:{}", "a".repeat(64));
    graph(
        &format!("FROM scratch\nADD --checksum={sum} https://example.com/x.tgz /x\n"),
        &[],
    );
    let e = err(&format!("FROM scratch\nADD --checksum={sum} a.txt /x\n"));
    assert!(e.contains("only be used with HTTP"), "{e}");
    let e = err("FROM scratch\nCOPY --chmod=999 a.txt /\n");
    assert!(e.contains("invalid --chmod"), "{e}");
    let e = err("FROM scratch\nENV X=\"${Y:?must be set}\"\n");
    assert!(
        e.contains("Y: must be set") && e.contains("Dockerfile:2"),
        "{e}"
    );
}

#[test]
fn syntax_errors_are_typed() {
    let t = ctx(&[]);
    let e = lower_in(t.path(), "FROM scratch\nFORM x\n", &[], None).unwrap_err();
    let s = e.downcast_ref::<SyntaxError>().expect("a SyntaxError");
    assert_eq!((s.location.line, s.location.column), (2, 1));
    assert!(s.hint.as_deref().unwrap().contains("did you mean FROM?"));
}

#[test]
fn copy_missing_and_ignored_files() {
    let t = ctx(&[
        ("a.txt", "a"),
        ("secret", "s"),
        (".dockerignore", "secret\n"),
    ]);
    let e = format!(
        "{:#}",
        lower_in(t.path(), "FROM scratch\nCOPY nope /\n", &[], None).unwrap_err()
    );
    assert!(e.contains("file not found in build context: nope"), "{e}");
    let e = format!(
        "{:#}",
        lower_in(t.path(), "FROM scratch\nCOPY secret /\n", &[], None).unwrap_err()
    );
    assert!(e.contains("excluded by .dockerignore"), "{e}");
}

#[test]
fn run_forms_heredocs_and_mounts() {
    let g = graph(
        "FROM scratch\nSHELL [\"/bin/bash\", \"-eu\", \"-c\"]\nRUN echo hi\nRUN [\"/bin/true\"]\nRUN <<EOF\necho a\nEOF\nRUN <<EOT\n#!/bin/sh\necho b\nEOT\nRUN <<-T\n\t#!/bin/sh\n\techo c\n\tT\nRUN cat <<A > /x && cat <<B\n1\nA\n2\nB\nRUN --mount=type=cache,target=/c --mount=type=secret,id=tok --mount=type=bind,source=src,target=/s --network=none true\n",
        &[],
    );
    let r = runs(&g, 0);
    assert_eq!(r[0].command, vec!["/bin/bash", "-eu", "-c", "echo hi"]);
    assert_eq!(r[1].command, vec!["/bin/true"]);
    assert_eq!(r[2].command, vec!["/bin/bash", "-eu", "-c", "echo a\n"]);
    assert_eq!(r[3].command, vec!["/dev/pipes/EOT"]);
    assert!(
        matches!(&r[3].mounts[0], Mount::Inline { content, mode: 0o755, .. } if content == "#!/bin/sh\necho b\n")
    );
    // A tab before `#!` means no script file (BuildKit checks before chomping).
    assert_eq!(
        r[4].command,
        vec!["/bin/bash", "-eu", "-c", "#!/bin/sh\necho c\n"]
    );
    assert_eq!(r[5].command[3], "cat <<A > /x && cat <<B\n1\nA\n2\nB");
    assert_eq!(r[6].network, Network::None);
    assert_eq!(r[6].mounts.len(), 3);
    assert!(
        r[6].context_digest.is_some(),
        "bind mount of the context is digested"
    );
}

#[test]
fn copy_heredocs_expand_unless_quoted() {
    let g = graph(
        "FROM scratch\nARG NAME=world\nCOPY <<EOF <<'RAW' /out/\nhello $NAME \"q\"\nEOF\nraw $NAME\nRAW\n",
        &[],
    );
    let Op::Copy(c) = &g.stages[0].steps[0].op else {
        panic!()
    };
    assert_eq!(
        c.items,
        vec![
            CopyItem::Inline {
                name: "EOF".into(),
                content: "hello world \"q\"\n".into()
            },
            CopyItem::Inline {
                name: "RAW".into(),
                content: "raw $NAME\n".into()
            }
        ]
    );
    assert!(c.context_digest.is_none());
}

#[test]
fn cmd_entrypoint_interplay() {
    let g = graph(
        "FROM scratch\nENTRYPOINT [\"e\"]\nCMD [\"c\"]\nENTRYPOINT e2\n",
        &[],
    );
    let c = configs(&g, 0);
    assert_eq!(
        c[0],
        ConfigChange::Entrypoint {
            args: vec!["e".into()],
            reset_cmd: true
        }
    );
    assert_eq!(
        c[2],
        ConfigChange::Entrypoint {
            args: vec!["/bin/sh".into(), "-c".into(), "e2".into()],
            reset_cmd: false
        }
    );
}

#[test]
fn onbuild_triggers_of_a_stage_base_run_in_the_child() {
    let g = graph(
        "FROM scratch AS lib\nONBUILD ENV FROM_TRIGGER=1\nFROM lib\nENV AFTER=$FROM_TRIGGER\n",
        &[],
    );
    let c = configs(&g, 1);
    assert_eq!(
        c[0],
        ConfigChange::Env(vec![("FROM_TRIGGER".into(), "1".into())])
    );
    assert_eq!(env_of(&g, 1)["AFTER"], "1");
}

#[test]
fn expose_label_volume_stopsignal_healthcheck() {
    let g = graph(
        "FROM scratch\nARG P=8080\nEXPOSE $P 53/udp 7000-7001\nLABEL \"a b\"=\"c d\" x=$P\nVOLUME [\"/v1\"]\nVOLUME /v2 /v3\nSTOPSIGNAL SIGINT\nHEALTHCHECK --retries=2 CMD [\"/bin/check\"]\nMAINTAINER me\n",
        &[],
    );
    let c = configs(&g, 0);
    assert_eq!(
        c[0],
        ConfigChange::ExposedPorts(vec![
            "8080/tcp".into(),
            "53/udp".into(),
            "7000/tcp".into(),
            "7001/tcp".into()
        ])
    );
    assert_eq!(
        c[1],
        ConfigChange::Labels(vec![
            ("a b".into(), "c d".into()),
            ("x".into(), "8080".into())
        ])
    );
    assert_eq!(
        c[3],
        ConfigChange::Volumes(vec!["/v2".into(), "/v3".into()])
    );
    assert_eq!(c[4], ConfigChange::StopSignal("SIGINT".into()));
    let ConfigChange::Healthcheck(h) = &c[5] else {
        panic!()
    };
    assert_eq!(h.test, vec!["CMD", "/bin/check"]);
    assert_eq!(h.retries, Some(2));
    assert_eq!(c[6], ConfigChange::Author("me".into()));
}

#[test]
fn cache_keys_change_only_after_the_copy_that_sees_a_change() {
    let t = ctx(&[("a.txt", "a"), ("b.txt", "b")]);
    let df = "FROM scratch\nCOPY a.txt /\nRUN true\nCOPY b.txt /\nRUN true\n";
    let keys = |dir: &Path| {
        let g = lower_in(dir, df, &[], None).unwrap().lowered.graph;
        kiln::graph::key::compute(&g, g.target, &Default::default())
            .unwrap()
            .stages[0]
            .clone()
            .unwrap()
    };
    let k1 = keys(t.path());
    std::fs::write(t.path().join("b.txt"), "b").unwrap(); // touch: same content
    assert_eq!(k1, keys(t.path()));
    std::fs::write(t.path().join("b.txt"), "B").unwrap();
    let k2 = keys(t.path());
    assert_eq!(k1.steps[..2], k2.steps[..2]);
    assert_ne!(k1.steps[2], k2.steps[2]);
    assert_ne!(k1.steps[3], k2.steps[3]);
    // Editing a comment in the Dockerfile changes nothing.
    let g = lower_in(t.path(), &format!("# note\n{df}"), &[], None)
        .unwrap()
        .lowered
        .graph;
    let k3 = kiln::graph::key::compute(&g, g.target, &Default::default())
        .unwrap()
        .stages[0]
        .clone()
        .unwrap();
    assert_eq!(k2.steps, k3.steps);
}

#[test]
fn graph_round_trips_through_json() {
    let g = graph(
        "FROM debian AS a\nRUN --mount=type=cache,target=/c true\nFROM scratch\nCOPY --from=a / /\n",
        &[],
    );
    let json = serde_json::to_string(&g).unwrap();
    let back: Graph = serde_json::from_str(&json).unwrap();
    assert_eq!(g, back);
}

/// A base image with ONBUILD triggers and its own WORKDIR/USER.
struct WithTriggers;

impl BaseResolver for WithTriggers {
    fn image_config(&self, reference: &str, _: &Platform) -> kiln::Result<Option<ImageConfig>> {
        if reference == "broken" {
            anyhow::bail!("registry said no");
        }
        Ok(Some(ImageConfig {
            working_dir: "/base".into(),
            user: "app".into(),
            on_build: vec!["COPY a.txt .".into(), "ENV TRIGGERED=yes".into()],
            ..ImageConfig::default()
        }))
    }
}

#[test]
fn base_image_triggers_run_first_and_are_not_inherited() {
    let t = ctx(&[("a.txt", "a")]);
    std::fs::write(t.path().join("Dockerfile"), "FROM withtriggers\nRUN true\n").unwrap();
    let l = dockerfile::load_with(
        t.path(),
        &t.path().join("Dockerfile"),
        &BuildArgs::default(),
        &WithTriggers,
    )
    .unwrap();
    let steps = &l.lowered.graph.stages[0].steps;
    let Op::Copy(c) = &steps[0].op else {
        panic!("{steps:?}")
    };
    assert_eq!(
        c.dest, "/base/",
        "relative dest uses the base image's WORKDIR"
    );
    assert!(c.context_digest.is_some());
    assert_eq!(
        steps[1].op,
        Op::Config(ConfigChange::Env(vec![("TRIGGERED".into(), "yes".into())]))
    );
    assert!(matches!(steps[2].op, Op::Run(_)));
    let o = steps[0].origin.as_ref().unwrap();
    assert_eq!((o.line, o.text.as_str()), (1, "ONBUILD COPY a.txt ."));
    std::fs::write(t.path().join("Dockerfile"), "FROM broken\n").unwrap();
    let e = format!(
        "{:#}",
        dockerfile::load_with(
            t.path(),
            &t.path().join("Dockerfile"),
            &BuildArgs::default(),
            &WithTriggers
        )
        .unwrap_err()
    );
    assert!(
        e.contains("Dockerfile:1") && e.contains("broken") && e.contains("registry said no"),
        "{e}"
    );
}
