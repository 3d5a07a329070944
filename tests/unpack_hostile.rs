//! Hostile layers: whatever a layer tar says, unpacking it (one layer onto
//! a root, or layers in sequence, with either whiteout mode) never writes,
//! deletes or changes anything outside the destination. A canary directory
//! beside the destination must be byte-identical afterwards.
//!
//! The named cases are the escapes found against kiln's earlier unpacker
//! (a symlinked parent, relative and absolute, a hard link through it, a
//! whiteout or opaque marker under it, metadata set through a symlink that
//! replaced a directory) plus the classics (chains, loops, magic links,
//! long paths). The property test throws random sequences of such entries
//! at the unpacker; `PROPTEST_CASES=20000 cargo test --test unpack_hostile`
//! is the longer run.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use kiln::oci::unpack::{UnpackOptions, Whiteouts, unpack};
use proptest::prelude::*;
use support::hostile::{Canary, Item, tar_of};

fn both_modes() -> [UnpackOptions; 2] {
    [
        UnpackOptions::new(Whiteouts::Apply),
        UnpackOptions::new(Whiteouts::Overlay),
    ]
}

/// Unpacks each layer in order into a fresh `dest` beside the canary;
/// returns the per-layer results (errors are allowed, escapes are not).
fn unpack_all(layers: &[Vec<Item>], opts: UnpackOptions) -> (Canary, PathBuf, Vec<String>) {
    let canary = Canary::new();
    let dest = canary.dest();
    let mut outcomes = Vec::new();
    for layer in layers {
        let bytes = tar_of(layer, &canary);
        outcomes.push(match unpack(&bytes[..], &dest, opts) {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("{e:#}"),
        });
    }
    (canary, dest, outcomes)
}

fn assert_contained(layers: &[Vec<Item>]) {
    for opts in both_modes() {
        let (canary, _dest, outcomes) = unpack_all(layers, opts);
        canary.assert_untouched(&format!("{:?} {layers:?} → {outcomes:?}", opts.whiteouts));
    }
}

use Item::*;

#[test]
fn absolute_symlink_parent_then_file() {
    assert_contained(&[vec![SymlinkToCanary("esc"), File("esc/pwned", b"x")]]);
}

#[test]
fn relative_symlink_parent_then_file() {
    assert_contained(&[vec![SymlinkUpToCanary("esc"), File("esc/pwned", b"x")]]);
}

#[test]
fn symlink_to_canary_file_then_file_of_that_name() {
    // The last component: the file replaces the link, never writes through it.
    assert_contained(&[vec![SymlinkToCanaryVictim("v"), File("v", b"x")]]);
    assert_contained(&[vec![SymlinkToCanaryVictim("v")], vec![File("v", b"x")]]);
}

#[test]
fn hard_link_through_a_symlinked_parent() {
    assert_contained(&[vec![
        SymlinkToCanary("esc"),
        Hardlink("stolen", "esc/victim"),
    ]]);
    assert_contained(&[vec![
        Dir("d"),
        File("d/f", b"in"),
        SymlinkToCanary("esc"),
        Hardlink("esc/linked", "d/f"),
    ]]);
}

#[test]
fn whiteout_under_a_symlink() {
    assert_contained(&[vec![SymlinkToCanary("esc")], vec![Whiteout("esc/victim")]]);
    assert_contained(&[vec![SymlinkUpToCanary("esc"), Whiteout("esc/victim")]]);
}

#[test]
fn opaque_marker_under_a_symlink() {
    assert_contained(&[vec![SymlinkToCanary("esc")], vec![Opaque("esc")]]);
    assert_contained(&[vec![SymlinkUpToCanary("esc"), Opaque("esc")]]);
}

#[test]
fn symlink_chains_and_loops() {
    assert_contained(&[vec![
        Symlink("a", "b"),
        Symlink("b", "/c"),
        SymlinkToCanary("c"),
        File("a/pwned", b"x"),
    ]]);
    assert_contained(&[vec![
        Symlink("a", "b"),
        Symlink("b", "a"),
        File("a/pwned", b"x"),
    ]]);
    assert_contained(&[vec![Symlink("self", "self/self"), File("self/x", b"x")]]);
}

#[test]
fn a_symlink_replaces_a_directory_between_layers() {
    assert_contained(&[
        vec![Dir("d"), File("d/x", b"lower")],
        vec![
            SymlinkToCanary("d"),
            File("d/y", b"upper"),
            Whiteout("d/victim"),
        ],
    ]);
}

#[test]
fn directory_metadata_is_not_set_through_a_symlink_that_replaced_it() {
    // The unpacker sets a directory's mode and mtime after the whole
    // layer; by then the name is a symlink to the canary.
    assert_contained(&[vec![DirMode("d", 0o777), SymlinkToCanary("d")]]);
}

#[test]
fn magic_links_resolve_inside_the_root() {
    assert_contained(&[vec![Symlink("m", "/proc/self/root"), File("m/pwned", b"x")]]);
    assert_contained(&[vec![
        Symlink("fd", "/proc/self/cwd"),
        File("fd/kiln-magic-pwned", b"x"),
    ]]);
    // /proc/self/cwd on the host is the test's working directory.
    assert!(!Path::new("kiln-magic-pwned").exists());
}

#[test]
fn long_paths() {
    let deep = "d/".repeat(300) + "f";
    let deep: &'static str = Box::leak(deep.into_boxed_str());
    assert_contained(&[vec![SymlinkToCanary("d"), File(deep, b"x")]]);
}

#[test]
fn hard_links_to_symlinks_link_the_symlink() {
    let (canary, dest, outcomes) = unpack_all(
        &[vec![SymlinkToCanaryVictim("s"), Hardlink("h", "s")]],
        UnpackOptions::new(Whiteouts::Apply),
    );
    canary.assert_untouched("hard link to a symlink");
    assert_eq!(outcomes, ["ok"]);
    let m = fs::symlink_metadata(dest.join("h")).unwrap();
    assert!(m.file_type().is_symlink(), "the link is the symlink itself");
}

#[test]
fn a_legitimate_symlinked_parent_still_works_inside_the_root() {
    // Debian's merged /usr: `lib -> usr/lib`, then files under lib/.
    let (canary, dest, outcomes) = unpack_all(
        &[
            vec![Dir("usr"), Dir("usr/lib"), Symlink("lib", "usr/lib")],
            vec![
                File("lib/libc.so", b"elf"),
                Symlink("abs", "/usr"),
                File("abs/lib/x", b"y"),
            ],
        ],
        UnpackOptions::new(Whiteouts::Apply),
    );
    canary.assert_untouched("merged usr");
    assert_eq!(outcomes, ["ok", "ok"]);
    assert_eq!(fs::read(dest.join("usr/lib/libc.so")).unwrap(), b"elf");
    assert_eq!(fs::read(dest.join("usr/lib/x")).unwrap(), b"y");
}

#[test]
fn whiteouts_and_opaque_markers_still_apply_inside() {
    let (canary, dest, outcomes) = unpack_all(
        &[
            vec![
                Dir("d"),
                File("d/a", b"a"),
                File("d/b", b"b"),
                File("gone", b"g"),
            ],
            vec![Whiteout("gone"), Opaque("d"), File("d/c", b"c")],
        ],
        UnpackOptions::new(Whiteouts::Apply),
    );
    canary.assert_untouched("whiteouts inside");
    assert_eq!(outcomes, ["ok", "ok"]);
    assert!(!dest.join("gone").exists());
    let mut names: Vec<_> = fs::read_dir(dest.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["c"]);
}

fn item() -> impl Strategy<Value = Item> {
    let names = prop_oneof![
        Just("a"),
        Just("b"),
        Just("esc"),
        Just("d"),
        Just("a/x"),
        Just("esc/x"),
        Just("esc/victim"),
        Just("d/esc"),
        Just("d/esc/victim"),
        Just("victim"),
    ];
    let targets = prop_oneof![
        Just("a"),
        Just("/esc"),
        Just("esc/victim"),
        Just("d/esc"),
        Just("../../.."),
        Just("/proc/self/root"),
        Just("."),
    ];
    (names.clone(), names, targets, 0..10u8).prop_map(|(n, m, t, k)| match k {
        0 => Item::File(n, b"x"),
        1 => Item::Dir(n),
        2 => Item::DirMode(n, 0o777),
        3 => Item::SymlinkToCanary(n),
        4 => Item::SymlinkUpToCanary(n),
        5 => Item::SymlinkToCanaryVictim(n),
        6 => Item::Symlink(n, t),
        7 => Item::Hardlink(n, m),
        8 => Item::Whiteout(n),
        _ => Item::Opaque(n),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn no_layer_sequence_escapes(layers in proptest::collection::vec(proptest::collection::vec(item(), 1..8), 1..4)) {
        assert_contained(&layers);
    }
}

#[test]
fn the_canary_check_detects_a_write() {
    // The invariant's own check must be able to fail.
    let canary = Canary::new();
    fs::write(canary.path().join("victim"), b"changed").unwrap();
    let r = std::panic::catch_unwind(|| canary.assert_untouched("self-test"));
    assert!(r.is_err());
    let canary = Canary::new();
    fs::write(canary.path().join("new"), b"").unwrap();
    assert!(std::panic::catch_unwind(|| canary.assert_untouched("self-test")).is_err());
}
