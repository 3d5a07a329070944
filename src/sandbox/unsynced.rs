//! Snapshots are published without fsync; a reboot is what can lose them.
//!
//! A snapshot (a layer unpacked, or a RUN step's upper dir moved in) is
//! derived data: its layer blob, fsynced in the store, is the truth, and
//! the snapshot can always be unpacked from it again. Syncing snapshots
//! would put the disk on every step's path: while steps' overlays were
//! mounted without `volatile`, each step's unmount ran `syncfs` on the
//! whole cache filesystem, which was 2.5 s of a cold python-flask build
//! (the package base's 300 MB of snapshots, just written, flushed before
//! `pip install` could end).
//!
//! A killed kiln loses nothing (the kernel still has the pages); a machine
//! that goes down can: a snapshot renamed into place may hold files whose
//! data never reached the disk. So before a boot's first snapshot is
//! published, the cache records that boot and the time (`.unsynced` in
//! the snapshot dir, written durably, once per boot). A kiln that finds
//! the record of another boot moves aside every snapshot changed since
//! that time (their ctime, set when they were made and renamed in), to be
//! unpacked again from their blobs, and removes the record.
//!
//! A clean reboot cannot be told from a crash, so it would cost the same
//! re-unpacks; to keep that to the last minutes before it, a build that
//! finds its boot's record older than [`SYNC_AFTER`] starts a process that
//! syncs the cache filesystem and then moves the record's time up to when
//! that sync began (everything older is on disk).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::Result;

/// The record's file name, in the snapshot dir (a dot name: not a snapshot).
const RECORD: &str = ".unsynced";
/// Held while the record is read and changed by one kiln at a time.
const LOCK: &str = ".unsynced.lock";
/// How old a record must be before a build syncs in the background: the
/// kernel writes dirty pages back within 30 s, so an older sync has little
/// left to write.
pub const SYNC_AFTER: Duration = Duration::from_secs(120);

/// Whether a name in the snapshot dir is this module's (the record and its
/// lock): neither a snapshot nor a leftover to collect.
pub fn is_own_file(name: &str) -> bool {
    name == RECORD || name == LOCK
}

/// The boot a snapshot dir's unsynced snapshots were published in, and
/// since when (ns since the epoch; snapshots changed earlier are on disk).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    boot: String,
    since_ns: u128,
}

impl Record {
    fn parse(text: &str) -> Option<Record> {
        let mut lines = text.lines();
        let boot = lines.next()?.trim().to_string();
        let since_ns = lines.next()?.trim().parse().ok()?;
        (!boot.is_empty()).then_some(Record { boot, since_ns })
    }

    fn render(&self) -> String {
        format!("{}\n{}\n", self.boot, self.since_ns)
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
fn current_boot() -> Result<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .context("reading /proc/sys/kernel/random/boot_id")?;
    Ok(id.trim().to_string())
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Roots whose record already names this boot, as this process saw them.
static MARKED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn marked(root: &Path) -> bool {
    MARKED
        .lock()
        .map(|m| m.iter().any(|r| r == root))
        .unwrap_or(false)
}

fn remember(root: &Path) {
    if let Ok(mut m) = MARKED.lock()
        && !m.iter().any(|r| r == root)
    {
        m.push(root.to_path_buf());
    }
}

/// Called before a snapshot is renamed into `root`: makes sure the record
/// names this boot (recovering another boot's snapshots first).
pub(crate) fn before_publish(root: &Path) -> Result<()> {
    if marked(root) {
        return Ok(());
    }
    mark(root, &current_boot()?)?;
    remember(root);
    Ok(())
}

/// Called when a build opens `root`: recovers after a reboot, and starts
/// the background sync of an old record of this boot.
pub(crate) fn on_open(root: &Path) -> Result<()> {
    if !root.is_dir() {
        return Ok(());
    }
    let boot = current_boot()?;
    let rec = {
        let _lock = lock(root)?;
        recover(root, &boot)?;
        read(root)
    };
    if let Some(rec) = rec
        && rec.boot == boot
        && now_ns().saturating_sub(rec.since_ns) > SYNC_AFTER.as_nanos()
    {
        // Not waited for: the build goes on, and exits, while it syncs.
        let _ = spawn_sync(root, &boot);
    }
    Ok(())
}

fn mark(root: &Path, boot: &str) -> Result<()> {
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let _lock = lock(root)?;
    recover(root, boot)?;
    if read(root).is_some_and(|r| r.boot == boot) {
        return Ok(());
    }
    // A little before now: ctimes and this clock may round differently.
    let since_ns = now_ns().saturating_sub(Duration::from_secs(2).as_nanos());
    write(
        root,
        &Record {
            boot: boot.to_string(),
            since_ns,
        },
    )
}

/// With the lock held: if the record is another boot's, moves aside the
/// snapshots changed since its time and removes it. Returns how many.
fn recover(root: &Path, boot: &str) -> Result<usize> {
    let Some(rec) = read(root) else {
        return Ok(0);
    };
    if rec.boot == boot {
        return Ok(0);
    }
    let mut moved = 0;
    let entries = fs::read_dir(root).with_context(|| format!("reading {}", root.display()))?;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let Ok(m) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        let ctime_ns = (m.ctime().max(0) as u128) * 1_000_000_000 + m.ctime_nsec().max(0) as u128;
        if ctime_ns < rec.since_ns {
            continue;
        }
        // A temp name first, so no reader ever sees a half-removed snapshot.
        let aside = root.join(format!(".tmp-unsynced-{name}"));
        if fs::rename(e.path(), &aside).is_ok() {
            super::run::remove_tree(&aside);
            moved += 1;
        }
    }
    fs::remove_file(root.join(RECORD))
        .with_context(|| format!("removing {}", root.join(RECORD).display()))?;
    File::open(root)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", root.display()))?;
    Ok(moved)
}

/// Starts `syncfs` on the snapshot dir's filesystem (`sync -f`) in a
/// process of its own, which then moves the record's time up to when the
/// sync began (a record written beforehand, renamed over the old one if
/// that still names this boot). A process, not a thread: a process cannot
/// exit while one of its threads waits in `syncfs`, and a warm rebuild
/// must not wait for the disk. If it dies first, the record stays as it
/// was (and its temp file is collected by `kiln cache prune`).
fn spawn_sync(root: &Path, boot: &str) -> Result<std::process::Child> {
    let began = now_ns().saturating_sub(Duration::from_secs(2).as_nanos());
    let next = Record {
        boot: boot.to_string(),
        since_ns: began,
    };
    let tmp = synced_temp(root, &next)?.into_temp_path().keep()?;
    let spawned = std::process::Command::new("sh")
        .args([
            "-c",
            r#"sync -f -- "$1" && [ "$(head -n 1 -- "$3")" = "$4" ] && exec mv -f -- "$2" "$3"; rm -f -- "$2""#,
            "sh",
        ])
        .arg(root)
        .arg(&tmp)
        .arg(root.join(RECORD))
        .arg(boot)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match spawned {
        Ok(child) => Ok(child),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e).context("starting `sync -f` for the snapshot dir")
        }
    }
}

fn read(root: &Path) -> Option<Record> {
    Record::parse(&fs::read_to_string(root.join(RECORD)).ok()?)
}

/// Writes the record durably (temp file, fsync, rename, dir fsync): the
/// record must be on disk before any snapshot it covers is.
fn write(root: &Path, rec: &Record) -> Result<()> {
    let path = root.join(RECORD);
    synced_temp(root, rec)?
        .persist(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    File::open(root)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", root.display()))?;
    Ok(())
}

/// The record in a temp file beside it (a `.tmp` name, which prune
/// collects if it is left), its bytes on disk.
fn synced_temp(root: &Path, rec: &Record) -> Result<tempfile::NamedTempFile> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-unsynced-record-")
        .tempfile_in(root)
        .with_context(|| format!("creating a temp file in {}", root.display()))?;
    tmp.write_all(rec.render().as_bytes())?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}

fn lock(root: &Path) -> Result<File> {
    let path = root.join(LOCK);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(root: &Path, name: &str) {
        fs::create_dir_all(root.join(name).join("usr")).unwrap();
        fs::write(root.join(name).join("usr/file"), b"x").unwrap();
    }

    #[test]
    fn another_boots_snapshots_since_its_record_are_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        snapshot(root, "before");
        let m = fs::metadata(root.join("before")).unwrap();
        let before_ctime = m.ctime() as u128 * 1_000_000_000 + m.ctime_nsec() as u128;
        write(
            root,
            &Record {
                boot: "old-boot".into(),
                since_ns: before_ctime + 1,
            },
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        snapshot(root, "after");
        mark(root, "new-boot").unwrap();
        assert!(root.join("before").is_dir(), "made before the record: kept");
        assert!(!root.join("after").exists(), "made after it: moved aside");
        let names: Vec<String> = fs::read_dir(root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-"))
            .collect();
        assert!(names.is_empty(), "nothing left aside: {names:?}");
        let rec = read(root).unwrap();
        assert_eq!(rec.boot, "new-boot");
    }

    #[test]
    fn the_same_boot_keeps_its_snapshots_and_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        mark(root, "this-boot").unwrap();
        let first = read(root).unwrap();
        snapshot(root, "a");
        mark(root, "this-boot").unwrap();
        assert_eq!(read(root).unwrap(), first, "one record per boot");
        assert!(root.join("a").is_dir());
        assert_eq!(recover(root, "this-boot").unwrap(), 0);
    }

    #[test]
    fn a_cut_record_moves_nothing_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        snapshot(root, "a");
        // What a crash may leave of a record written without its fsync:
        // an empty file reads as no record (it is only ever written whole).
        fs::write(root.join(RECORD), b"").unwrap();
        mark(root, "b").unwrap();
        assert!(root.join("a").is_dir());
        assert_eq!(read(root).unwrap().boot, "b");
    }

    #[test]
    fn a_sync_moves_the_record_up() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            &Record {
                boot: "b".into(),
                since_ns: 1,
            },
        )
        .unwrap();
        let synced = |root: &Path| {
            let status = spawn_sync(root, "b").unwrap().wait().unwrap();
            assert!(status.success() || status.code() == Some(1), "{status}");
        };
        synced(root);
        assert!(read(root).unwrap().since_ns > 1);
        // Another boot's record is left to recovery.
        write(
            root,
            &Record {
                boot: "other".into(),
                since_ns: 1,
            },
        )
        .unwrap();
        synced(root);
        assert_eq!(read(root).unwrap().since_ns, 1);
        // The temp record is gone either way.
        let left: Vec<_> = fs::read_dir(root)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
