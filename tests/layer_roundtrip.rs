//! Property tests: a layer written from a tree unpacks to the same tree
//! (types, modes, contents, symlinks, hard links), and whiteouts delete.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use kiln::oci::layer::{
    Compression, Entry, EntryKind, LayerOptions, Meta, ScanOptions, scan_dir, write_layer,
};
use kiln::oci::store::Store;
use kiln::oci::unpack::{UnpackOptions, Whiteouts, unpack_blob};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Node {
    File {
        data: Vec<u8>,
        mode: u32,
    },
    Dir {
        mode: u32,
    },
    Symlink(String),
    /// A hard link to the n-th file created so far (if any).
    Hardlink(usize),
}

fn name() -> impl Strategy<Value = OsString> {
    prop_oneof![
        4 => "[a-e]{1,3}".prop_map(OsString::from),
        // `-` and `.` sort before `/`: `t-x/f` comes before `t/f` in a
        // layer, though a directory walk meets `t/f` first.
        3 => "[a-c](-[a-c]|\\.[a-c])?".prop_map(OsString::from),
        1 => Just(OsString::from("x".repeat(120))),
        1 => Just(OsString::from_vec(vec![b'n', 0xff, b'8'])), // not UTF-8
        1 => Just(OsString::from("ü ñ")),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    prop_oneof![
        4 => (proptest::collection::vec(any::<u8>(), 0..3000), prop_oneof![Just(0o644), Just(0o755), Just(0o600), Just(0o4755)])
            .prop_map(|(data, mode)| Node::File { data, mode }),
        2 => prop_oneof![Just(0o755), Just(0o700), Just(0o1777)].prop_map(|mode| Node::Dir { mode }),
        1 => prop_oneof![Just("a".to_string()), Just("../b/c".to_string()), Just("/etc/passwd".to_string()), Just("y".repeat(150))].prop_map(Node::Symlink),
        1 => (0usize..8).prop_map(Node::Hardlink),
    ]
}

fn tree() -> impl Strategy<Value = Vec<(Vec<OsString>, Node)>> {
    proptest::collection::vec((proptest::collection::vec(name(), 1..4), node()), 1..25)
}

fn materialize(root: &Path, spec: &[(Vec<OsString>, Node)]) {
    let mut files: Vec<PathBuf> = Vec::new();
    for (parts, node) in spec {
        let path: PathBuf = parts.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        // Parents must be directories we can enter.
        let mut ok = true;
        let mut cur = root.to_path_buf();
        for c in &parts[..parts.len() - 1] {
            cur = cur.join(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => ok = false,
                Err(_) => {
                    // Explicit mode: the test must not depend on the umask.
                    fs::create_dir(&cur).unwrap();
                    fs::set_permissions(&cur, fs::Permissions::from_mode(0o755)).unwrap();
                }
            }
            if !ok {
                break;
            }
        }
        if !ok || fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        match node {
            Node::File { data, mode } => {
                fs::write(&path, data).unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
                files.push(path);
            }
            Node::Dir { mode } => {
                fs::create_dir(&path).unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
            }
            Node::Symlink(t) => symlink(t, &path).unwrap(),
            Node::Hardlink(i) => {
                if let Some(src) = files.get(i % files.len().max(1)) {
                    fs::hard_link(src, &path).unwrap();
                }
            }
        }
    }
}

/// Everything observable about a tree, keyed by relative path.
#[derive(Debug, PartialEq)]
enum Seen {
    File {
        data: Vec<u8>,
        mode: u32,
        group: usize,
    },
    Dir {
        mode: u32,
    },
    Symlink(PathBuf),
}

fn observe(root: &Path) -> BTreeMap<Vec<u8>, Seen> {
    let mut out = BTreeMap::new();
    // Hard-link groups numbered in path order, so both trees number alike.
    let mut groups: HashMap<u64, usize> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut all = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            all.push(p);
        }
    }
    all.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    for p in all {
        let rel = p
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let m = fs::symlink_metadata(&p).unwrap();
        let seen = if m.file_type().is_symlink() {
            Seen::Symlink(fs::read_link(&p).unwrap())
        } else if m.is_dir() {
            Seen::Dir {
                mode: m.mode() & 0o7777,
            }
        } else {
            let n = groups.len();
            let group = *groups.entry(m.ino()).or_insert(n);
            Seen::File {
                data: fs::read(&p).unwrap(),
                mode: m.mode() & 0o7777,
                group,
            }
        };
        out.insert(rel, seen);
    }
    out
}

fn short(s: &Seen) -> String {
    match s {
        Seen::File { data, mode, .. } => format!("file {} bytes {mode:o}", data.len()),
        Seen::Dir { mode } => format!("dir {mode:o}"),
        Seen::Symlink(t) => format!("link {}", t.display()),
    }
}

fn roundtrip(spec: &[(Vec<OsString>, Node)], compression: Compression) {
    let src = tempfile::tempdir().unwrap();
    materialize(src.path(), spec);
    let cache = tempfile::tempdir().unwrap();
    let store = Store::open(cache.path()).unwrap();
    let scan = scan_dir(src.path(), &ScanOptions::default()).unwrap();
    let layer = write_layer(
        &store,
        scan.entries,
        LayerOptions {
            compression,
            epoch: 1,
        },
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("root");
    unpack_blob(
        &store,
        &layer.blob.digest,
        compression,
        &dest,
        UnpackOptions::new(Whiteouts::Apply),
    )
    .unwrap();
    assert_eq!(observe(src.path()), observe(&dest));
    // Every mtime is clamped to the epoch.
    for e in fs::read_dir(&dest).unwrap() {
        let m = fs::symlink_metadata(e.unwrap().path()).unwrap();
        assert_eq!(m.mtime(), 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn layer_roundtrips_gzip(spec in tree()) {
        roundtrip(&spec, Compression::Gzip);
    }

    #[test]
    fn layer_roundtrips_zstd(spec in tree()) {
        roundtrip(&spec, Compression::Zstd);
    }

    /// A second layer of whiteouts deletes exactly the paths it names.
    #[test]
    fn whiteouts_delete(spec in tree(), pick in proptest::collection::vec(any::<proptest::sample::Index>(), 0..5)) {
        let src = tempfile::tempdir().unwrap();
        materialize(src.path(), &spec);
        let before = observe(src.path());
        let paths: Vec<&Vec<u8>> = before.keys().collect();
        let cache = tempfile::tempdir().unwrap();
        let store = Store::open(cache.path()).unwrap();
        let opts = LayerOptions { compression: Compression::Gzip, epoch: 1 };
        let scanned = scan_dir(src.path(), &ScanOptions::default()).unwrap().entries;
        let base = write_layer(&store, scanned.clone(), opts).unwrap();
        let mut deleted: Vec<Vec<u8>> = Vec::new();
        let mut entries = Vec::new();
        if !paths.is_empty() {
            for i in &pick {
                let p = paths[i.index(paths.len())].clone();
                let path = PathBuf::from(OsString::from_vec(p.clone()));
                // A real producer (the sandbox's upper dir) carries the parent
                // directories with their metadata; implicit parents would be 0755.
                for anc in path.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()) {
                    if let Some(e) = scanned.iter().find(|e| e.path == anc) {
                        entries.push(e.clone());
                    }
                }
                deleted.push(p);
            }
            // A deleted directory is a whiteout, not a parent.
            entries.retain(|e| !deleted.iter().any(|d| e.path.as_os_str().as_bytes() == d.as_slice()));
            for d in &deleted {
                entries.push(Entry::new(OsString::from_vec(d.clone()), EntryKind::Whiteout, Meta::root(0)).unwrap());
            }
        }
        let upper = write_layer(&store, entries, opts).unwrap();
        let dest = cache.path().join("root");
        for l in [&base, &upper] {
            unpack_blob(&store, &l.blob.digest, Compression::Gzip, &dest, UnpackOptions::new(Whiteouts::Apply)).unwrap();
        }
        let mut expected = before;
        expected.retain(|k, _| !deleted.iter().any(|d| k == d || (k.starts_with(d) && k.get(d.len()) == Some(&b'/'))));
        // Hard-link group numbers may shift when a group's first member is deleted.
        let strip = |m: BTreeMap<Vec<u8>, Seen>| m.into_iter().map(|(k, v)| match v {
            Seen::File { data, mode, .. } => (k, Seen::File { data, mode, group: 0 }),
            v => (k, v),
        }).collect::<BTreeMap<_, _>>();
        let (want, got) = (strip(expected), strip(observe(&dest)));
        let diff: Vec<String> = want.keys().chain(got.keys()).filter(|k| want.get(*k) != got.get(*k))
            .map(|k| format!("{:?}: want {:?} got {:?}", String::from_utf8_lossy(k), want.get(k).map(short), got.get(k).map(short))).collect();
        prop_assert!(diff.is_empty(), "deleted {:?}: {}", deleted.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect::<Vec<_>>(), diff.join("; "));
    }
}

#[test]
fn opaque_dir_hides_lower_contents_but_keeps_its_own() {
    let cache = tempfile::tempdir().unwrap();
    let store = Store::open(cache.path()).unwrap();
    let opts = LayerOptions::default();
    let file = |p: &str, data: &str| {
        Entry::new(
            p,
            EntryKind::File(kiln::oci::layer::FileSource::Bytes(data.as_bytes().into())),
            Meta::root(0o644),
        )
        .unwrap()
    };
    let lower = write_layer(
        &store,
        vec![file("d/old", "1"), file("d/sub/x", "2"), file("keep", "3")],
        opts,
    )
    .unwrap();
    let upper = write_layer(
        &store,
        vec![
            Entry::new("d", EntryKind::Opaque, Meta::root(0o755)).unwrap(),
            file("d/-new", "4"),
            file("d/new", "5"),
        ],
        opts,
    )
    .unwrap();
    let dest = cache.path().join("root");
    for l in [&lower, &upper] {
        unpack_blob(
            &store,
            &l.blob.digest,
            Compression::Gzip,
            &dest,
            UnpackOptions::new(Whiteouts::Apply),
        )
        .unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(dest.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["-new", "new"]);
    assert_eq!(fs::read_to_string(dest.join("keep")).unwrap(), "3");
}

#[test]
fn same_entries_same_digest_and_one_byte_changes_it() {
    let cache = tempfile::tempdir().unwrap();
    let store = Store::open(cache.path()).unwrap();
    let mk = |data: &str| {
        vec![
            Entry::new(
                "app/b",
                EntryKind::File(kiln::oci::layer::FileSource::Bytes(data.as_bytes().into())),
                Meta::root(0o644),
            )
            .unwrap(),
            Entry::new("app/a", EntryKind::Symlink("b".into()), Meta::root(0o777)).unwrap(),
        ]
    };
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let opts = LayerOptions {
            compression: c,
            epoch: 1,
        };
        let a = write_layer(&store, mk("hello"), opts).unwrap();
        let b = write_layer(&store, mk("hello"), opts).unwrap();
        let c2 = write_layer(&store, mk("hellp"), opts).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.diff_id, c2.diff_id);
        assert_ne!(a.blob.digest, c2.blob.digest);
    }
}

#[test]
fn a_directory_and_its_opaque_marker_are_both_written() {
    let cache = tempfile::tempdir().unwrap();
    let store = Store::open(cache.path()).unwrap();
    let entries = vec![
        Entry::new(
            "d",
            EntryKind::Dir,
            Meta {
                mode: 0o700,
                uid: 7,
                gid: 8,
                mtime: 0,
                xattrs: Vec::new(),
            },
        )
        .unwrap(),
        Entry::new("d", EntryKind::Opaque, Meta::root(0)).unwrap(),
    ];
    let layer = write_layer(
        &store,
        entries,
        LayerOptions {
            compression: Compression::None,
            epoch: 1,
        },
    )
    .unwrap();
    let mut ar = tar::Archive::new(store.open_blob(&layer.blob.digest).unwrap());
    let seen: Vec<(String, u32, u64)> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.header().mode().unwrap(),
                e.header().uid().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("d/".to_string(), 0o700, 7),
            ("d/.wh..wh..opq".to_string(), 0, 0)
        ]
    );
}
