use std::time::{Duration, SystemTime};

use super::*;

const T0: u64 = 1_700_000_000;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + secs)
}

fn e(kind: Kind, name: &str, bytes: u64, used: u64) -> CacheEntry {
    CacheEntry {
        kind,
        name: name.to_string(),
        path: PathBuf::from(name),
        bytes,
        snapshot_bytes: 0,
        last_used: at(used),
        shared: false,
    }
}

fn names(u: &Usage, order: &[usize]) -> Vec<String> {
    order.iter().map(|&i| u.entries[i].name.clone()).collect()
}

/// Three layers used at 10, 20, 30 s, a step record naming the oldest,
/// a cache mount used at 25 s and a resolved set used at 0 s.
fn cache() -> (Usage, Vec<Vec<usize>>) {
    let u = Usage {
        entries: vec![
            e(Kind::Blob, "old", 100, 10),
            e(Kind::Blob, "mid", 100, 20),
            e(Kind::Blob, "new", 100, 30),
            e(Kind::Step, "step-old", 1, 40),
            e(Kind::CacheMount, "npm", 50, 25),
            e(Kind::Resolved, "set", 1, 0),
        ],
        fixed: 10,
    };
    let mut deps = vec![Vec::new(); u.entries.len()];
    deps[0].push(3);
    (u, deps)
}

#[test]
fn keep_storage_removes_least_recently_used_first_until_it_fits() {
    let (u, deps) = cache();
    assert_eq!(u.total(), 362);
    let opts = Options {
        keep_bytes: Some(200),
        ..Options::default()
    };
    let order = select(&u, &deps, &[], &opts, at(100));
    // old (with the record naming it, removed first), then mid: 362 -
    // 101 - 100 = 161 fits; the cache mount (25 s) and new stay.
    assert_eq!(names(&u, &order), ["step-old", "old", "mid"]);
}

#[test]
fn a_record_goes_before_the_blob_it_names() {
    let (u, deps) = cache();
    let order = select(&u, &deps, &[], &Options::default(), at(100));
    let pos = |n: &str| names(&u, &order).iter().position(|x| x == n).unwrap();
    assert!(pos("step-old") < pos("old"));
    // Without a bound every candidate goes, but not the resolved set.
    assert_eq!(order.len(), 5);
    assert!(!names(&u, &order).contains(&"set".to_string()));
}

#[test]
fn all_also_removes_resolved_sets() {
    let (u, deps) = cache();
    let opts = Options {
        all: true,
        ..Options::default()
    };
    assert_eq!(select(&u, &deps, &[], &opts, at(100)).len(), 6);
}

#[test]
fn until_spares_entries_used_recently() {
    let (u, deps) = cache();
    // Unused for more than 75 s at t=100: used before 25 s.
    let opts = Options {
        until: Some(Duration::from_secs(75)),
        ..Options::default()
    };
    let order = select(&u, &deps, &[], &opts, at(100));
    assert_eq!(names(&u, &order), ["step-old", "old", "mid"]);
}

#[test]
fn used_before_protects_what_the_running_build_used() {
    let (u, deps) = cache();
    // A bound nothing fits: still only what was used before 30 s goes.
    let opts = Options {
        keep_bytes: Some(0),
        used_before: Some(at(30)),
        ..Options::default()
    };
    let order = select(&u, &deps, &[], &opts, at(100));
    assert!(!names(&u, &order).contains(&"new".to_string()));
    assert_eq!(order.len(), 4);
}

#[test]
fn leftovers_orphans_and_dangling_records_always_go() {
    let (mut u, mut deps) = cache();
    u.entries.push(e(Kind::Temp, "store/ingest/blob-1", 5, 99));
    u.entries.push(e(Kind::Snapshot, "orphan", 70, 99));
    u.entries.push(e(Kind::Step, "dangling", 1, 99));
    deps.resize(u.entries.len(), Vec::new());
    let opts = Options {
        keep_bytes: Some(10_000),
        ..Options::default()
    };
    let order = select(&u, &deps, &[8], &opts, at(100));
    let mut got = names(&u, &order);
    got.sort();
    assert_eq!(got, ["dangling", "orphan", "store/ingest/blob-1"]);
}

#[test]
fn ties_go_largest_first() {
    let u = Usage {
        entries: vec![e(Kind::Blob, "small", 10, 5), e(Kind::Blob, "big", 90, 5)],
        fixed: 0,
    };
    let opts = Options {
        keep_bytes: Some(50),
        ..Options::default()
    };
    let order = select(&u, &[vec![], vec![]], &[], &opts, at(100));
    assert_eq!(names(&u, &order), ["big"]);
}

#[test]
fn bounds_parse_off_and_sizes() {
    assert_eq!(Bound::parse("off").unwrap(), Bound::Off);
    assert_eq!(Bound::parse("0").unwrap(), Bound::Off);
    assert_eq!(Bound::parse("2GB").unwrap(), Bound::Bytes(2 << 30));
    assert!(Bound::parse("lots").is_err());
    let t = tempfile::tempdir().unwrap();
    let d = default_bound(&t.path().join("not/yet"));
    assert!(d > 0 && d <= DEFAULT_CAP);
}

/// A real cache dir: a step record naming a layer with a snapshot, and a
/// prune that keeps nothing: the record, the blob and the snapshot go, the
/// snapshot through the trash.
#[test]
fn prune_removes_record_blob_and_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let c = t.path();
    let store = Store::open(c.join("store")).unwrap();
    let blob = store.put(&[1u8; 4096]).unwrap().digest;
    let snap = c.join("snapshots").join(blob.hex());
    fs::create_dir_all(snap.join("usr")).unwrap();
    fs::write(snap.join("usr/f"), b"x").unwrap();
    let steps = crate::solver::cache::StepCache::new(c.join("steps"));
    let key = crate::oci::Digest::of(b"key");
    steps
        .put(
            &key,
            &crate::solver::cache::StepRecord {
                layer: Some(crate::solver::cache::LayerRecord {
                    blob: blob.clone(),
                    size: 4096,
                    diff_id: blob.clone(),
                    compression: crate::oci::layer::Compression::None,
                }),
                content_key: None,
            },
        )
        .unwrap();
    drop(store);
    let dry = prune(
        c,
        &Options {
            dry_run: true,
            ..Options::default()
        },
        |_| unreachable!(),
    )
    .unwrap();
    assert_eq!(dry.removed.len(), 2);
    assert!(snap.is_dir() && c.join("steps").join(key.hex()).is_file());
    let r = prune(c, &Options::default(), |p| Store::open_exclusive(p)).unwrap();
    assert_eq!(r.removed[0].kind, Kind::Step);
    assert_eq!(r.removed[1].kind, Kind::Blob);
    assert!(r.removed_bytes > 4096 && r.after < r.before);
    assert!(!snap.exists() && !c.join("steps").join(key.hex()).exists());
    assert!(!c.join("store/blobs/sha256").join(blob.hex()).exists());
    assert_eq!(fs::read_dir(trash_dir(c)).unwrap().count(), 0);
}

/// Sets `p`'s mtime to `secs_ago` seconds ago.
fn age(p: &Path, secs_ago: u64) {
    let t = SystemTime::now() - Duration::from_secs(secs_ago);
    fs::File::options()
        .read(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn mtime(p: &Path) -> SystemTime {
    fs::metadata(p).unwrap().modified().unwrap()
}

#[test]
fn a_step_cache_hit_records_its_use() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let steps = crate::solver::cache::StepCache::new(t.path().join("steps"));
    let key = crate::oci::Digest::of(b"k");
    let rec = crate::solver::cache::StepRecord {
        layer: None,
        content_key: None,
    };
    steps.put(&key, &rec).unwrap();
    let path = t.path().join("steps").join(key.hex());
    age(&path, 3600);
    let before = mtime(&path);
    assert!(
        steps
            .get(&key, &store, crate::oci::layer::Compression::Gzip)
            .is_some()
    );
    assert!(mtime(&path) > before + Duration::from_secs(3000));
}

/// The end-of-build GC: measured only when an entry dir changed since the
/// last check; over the bound, what was used before the build goes.
#[test]
fn auto_measures_only_when_the_cache_may_have_grown() {
    let t = tempfile::tempdir().unwrap();
    let c = t.path();
    let store = Store::open(c.join("store")).unwrap();
    let old = store.put(&[1u8; 100_000]).unwrap().digest;
    drop(store);
    let old_path = c.join("store/blobs/sha256").join(old.hex());
    age(&old_path, 3600);
    let started = SystemTime::now();
    let within = |o: AutoOutcome| match o {
        AutoOutcome::Within { total } => total,
        o => panic!("{o:?}"),
    };
    assert!(within(auto(c, 1 << 30, started).unwrap()).is_some());
    // Nothing changed (the entry dirs are older than the check): skipped.
    for d in WATCHED {
        let p = c.join(d);
        if p.exists() {
            age(&p, 3600);
        }
    }
    assert_eq!(within(auto(c, 1 << 30, started).unwrap()), None);
    // A new record changes `steps/`: measured again.
    fs::create_dir_all(c.join("steps")).unwrap();
    fs::write(c.join("steps").join("ab".repeat(32)), b"{}").unwrap();
    assert!(within(auto(c, 1 << 30, started).unwrap()).is_some());
    // A bound the old blob does not fit in: it goes, the record (used
    // since the build started) stays.
    let store = Store::open(c.join("store")).unwrap();
    let new = store.put(&[2u8; 100_000]).unwrap().digest;
    drop(store);
    match auto(c, 150_000, started - Duration::from_secs(10)).unwrap() {
        AutoOutcome::Pruned(r) => {
            let names: Vec<&str> = r.removed.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(names, [old.hex()], "{r:?}");
        }
        o => panic!("{o:?}"),
    }
    assert!(!old_path.exists());
    assert!(c.join("store/blobs/sha256").join(new.hex()).exists());
    assert!(c.join("steps").join("ab".repeat(32)).exists());
}
