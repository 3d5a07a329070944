//! A malicious-image corpus, made by the test (OCI layouts and docker
//! archives written by hand, one also pushed to a real registry), taken
//! through every path by which kiln reads an image's layers: `load`,
//! `pull`, `run`, `FROM`, `COPY --from` and `ADD` of the layer tar. After
//! each, a canary directory outside kiln's dirs (the files the layers aim
//! at, by absolute path and by `../` chains) is byte-identical.
#![cfg(feature = "e2e")]

mod support;

use std::fs;
use std::process::Command;

use support::hostile::{Canary, Item, busybox_layer, docker_archive, oci_layout, tar_of};
use support::kiln::Kiln;
use support::registry::Registry;

use Item::*;

/// A path of 300 directories below `deep` (a link to the canary).
const LONG: &str = concat!(
    "deep/",
    "d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/",
    "d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/",
    "d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/",
    "f"
);

/// The corpus: name → layers above the busybox base.
fn corpus() -> Vec<(&'static str, Vec<Vec<Item>>)> {
    vec![
        (
            "abs-parent",
            vec![vec![SymlinkToCanary("esc"), File("esc/pwned", b"x")]],
        ),
        (
            "rel-parent",
            vec![vec![SymlinkUpToCanary("esc"), File("esc/pwned", b"x")]],
        ),
        (
            "hardlink-via-parent",
            vec![vec![
                SymlinkToCanary("esc"),
                Hardlink("stolen", "esc/victim"),
                Dir("d"),
                File("d/f", b"in"),
                Hardlink("esc/linked", "d/f"),
            ]],
        ),
        (
            "whiteout-under-link",
            vec![vec![SymlinkToCanary("esc")], vec![Whiteout("esc/victim")]],
        ),
        (
            "opaque-under-link",
            vec![
                vec![SymlinkUpToCanary("esc")],
                vec![Opaque("esc"), File("esc/n", b"n")],
            ],
        ),
        (
            "chain-and-loop",
            vec![vec![
                Symlink("a", "b"),
                Symlink("b", "/c"),
                SymlinkToCanary("c"),
                File("a/pwned", b"x"),
                Symlink("l1", "l2"),
                Symlink("l2", "l1"),
                File("l1/x", b"x"),
            ]],
        ),
        (
            "dir-becomes-link",
            vec![
                vec![DirMode("d", 0o777), File("d/x", b"lower")],
                vec![
                    SymlinkToCanary("d"),
                    File("d/y", b"upper"),
                    Whiteout("d/victim"),
                ],
            ],
        ),
        (
            "magic-link",
            vec![vec![Symlink("m", "/proc/self/root"), File("m/pwned", b"x")]],
        ),
        (
            // Not escapes by themselves: a host disk's node, a setuid-root
            // file and a deep path under a link to the canary must stay
            // inside kiln's 0700 dirs and nodev mounts.
            "devices-setuid-long",
            vec![vec![
                Dir("dev"),
                Device("dev/disk", true, 254, 0),
                Device("dev/mem", false, 1, 1),
                FileMode("setuid-sh", b"#!/bin/sh\n", 0o4755),
                SymlinkToCanary("deep"),
                File(LONG, b"x"),
            ]],
        ),
        (
            "link-to-victim-file",
            vec![
                vec![SymlinkToCanaryVictim("v"), Hardlink("h", "v")],
                vec![File("v", b"x")],
            ],
        ),
    ]
}

struct Case {
    name: &'static str,
    canary: Canary,
    /// Uncompressed layer tars, busybox first.
    layers: Vec<Vec<u8>>,
}

fn cases() -> Vec<Case> {
    corpus()
        .into_iter()
        .map(|(name, layers)| {
            let canary = Canary::new();
            let mut tars = vec![busybox_layer()];
            tars.extend(layers.iter().map(|l| tar_of(l, &canary)));
            Case {
                name,
                canary,
                layers: tars,
            }
        })
        .collect()
}

/// Runs kiln; the outcome does not matter (a refusal is fine), only
/// what it left on the host. Returns its combined output for messages.
fn attempt(kiln: &Kiln, args: &[&str]) -> String {
    let out = kiln.kiln(args);
    format!(
        "kiln {args:?} → {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The name `kiln load` gave, from its "Loaded image: NAME (digest)" line.
fn loaded_name(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
}

#[test]
fn hostile_images_never_touch_the_host() {
    let kiln = Kiln::new();
    for case in cases() {
        let c = &case.canary;
        let work = kiln.path(case.name);
        fs::create_dir_all(&work).unwrap();

        // load: an OCI layout and a docker archive.
        let layout = work.join("layout");
        oci_layout(&layout, &case.layers, &format!("hostile-{}:oci", case.name));
        let out = attempt(&kiln, &["load", layout.to_str().unwrap()]);
        c.assert_untouched(&out);
        let oci_name = loaded_name(&out);
        let archive = work.join("docker.tar");
        docker_archive(
            &archive,
            &case.layers,
            &format!("hostile-{}:docker", case.name),
        );
        let out = attempt(&kiln, &["load", archive.to_str().unwrap()]);
        c.assert_untouched(&out);
        let docker_name = loaded_name(&out);
        let names: Vec<String> = oci_name.into_iter().chain(docker_name).collect();
        assert!(
            !names.is_empty(),
            "{}: kiln loaded neither form of a well-formed image",
            case.name
        );

        for name in &names {
            // run: unpacks every layer as a snapshot.
            let out = attempt(&kiln, &["run", name, "/bin/busybox", "true"]);
            c.assert_untouched(&out);

            // FROM, then a RUN that needs the layers unpacked.
            let ctx = work.join("from");
            fs::create_dir_all(&ctx).unwrap();
            fs::write(
                ctx.join("Dockerfile"),
                format!("FROM {name}\nRUN /bin/busybox true\n"),
            )
            .unwrap();
            let out = attempt(&kiln, &["build", ctx.to_str().unwrap(), "--no-cache"]);
            c.assert_untouched(&out);

            // COPY --from the image, into a stage whose RUN unpacks it.
            let ctx = work.join("copy");
            fs::create_dir_all(&ctx).unwrap();
            fs::write(
                ctx.join("Dockerfile"),
                format!(
                    "FROM {name} AS src\nFROM {name}\nCOPY --from={name} / /copied/\nRUN /bin/busybox true\n"
                ),
            )
            .unwrap();
            let out = attempt(&kiln, &["build", ctx.to_str().unwrap(), "--no-cache"]);
            c.assert_untouched(&out);
        }

        // ADD of each hostile layer tar from the context (extracted by kiln).
        let ctx = work.join("add");
        fs::create_dir_all(&ctx).unwrap();
        let mut dockerfile = String::new();
        for (i, l) in case.layers.iter().enumerate().skip(1) {
            fs::write(ctx.join(format!("l{i}.tar")), l).unwrap();
            dockerfile.push_str(&format!("ADD l{i}.tar /\n"));
        }
        let base = names[0].clone();
        fs::write(
            ctx.join("Dockerfile"),
            format!("FROM {base}\n{dockerfile}RUN /bin/busybox true\n"),
        )
        .unwrap();
        let out = attempt(&kiln, &["build", ctx.to_str().unwrap(), "--no-cache"]);
        c.assert_untouched(&out);
    }
}

#[test]
fn hostile_images_pulled_from_a_registry_never_touch_the_host() {
    let registry = Registry::start();
    let kiln = Kiln::new();
    for case in cases() {
        let layout = kiln.path(&format!("{}-layout", case.name));
        oci_layout(&layout, &case.layers, "1");
        let host = registry.url().trim_start_matches("http://").to_string();
        let reference = format!("{host}/hostile/{}:1", case.name);
        // skopeo, an independent client, pushes the attacker's image.
        let st = Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false", "--quiet"])
            .arg(format!("oci:{}:1", layout.display()))
            .arg(format!("docker://{reference}"))
            .status()
            .unwrap();
        assert!(st.success(), "skopeo copy of {}", case.name);
        let c = &case.canary;
        let out = attempt(&kiln, &["pull", &reference]);
        c.assert_untouched(&out);
        let out = attempt(&kiln, &["run", &reference, "/bin/busybox", "true"]);
        c.assert_untouched(&out);
        let ctx = kiln.path(&format!("{}-ctx", case.name));
        fs::create_dir_all(&ctx).unwrap();
        fs::write(
            ctx.join("Dockerfile"),
            format!("FROM {reference}\nRUN /bin/busybox true\n"),
        )
        .unwrap();
        let out = attempt(&kiln, &["build", ctx.to_str().unwrap(), "--no-cache"]);
        c.assert_untouched(&out);
    }
}

/// The corpus is hostile, not broken: on a layer without tricks the same
/// paths succeed, so the test above exercises the unpacker, not an early
/// refusal.
#[test]
fn the_same_paths_succeed_on_a_benign_image() {
    let kiln = Kiln::new();
    let canary = Canary::new();
    let layers = vec![
        busybox_layer(),
        tar_of(&[Dir("etc"), File("etc/greeting", b"hi\n")], &canary),
    ];
    let layout = kiln.path("benign");
    oci_layout(&layout, &layers, "benign:1");
    let out = attempt(&kiln, &["load", layout.to_str().unwrap()]);
    let name = loaded_name(&out).unwrap_or_else(|| panic!("{out}"));
    let run = kiln.ok(&["run", &name, "/bin/busybox", "cat", "/etc/greeting"]);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hi\n");
    let ctx = kiln.path("benign-ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("l.tar"), &layers[1]).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {name}\nCOPY --from={name} /etc/greeting /copied\nADD l.tar /added/\nRUN /bin/busybox cat /copied /added/etc/greeting\n"
        ),
    )
    .unwrap();
    kiln.ok(&["build", ctx.to_str().unwrap(), "-t", "benign-out:1"]);
    canary.assert_untouched("benign image");
}
