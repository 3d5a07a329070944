//! A Debian bookworm minbase root filesystem for sandbox tests: made once
//! with `mmdebstrap` (~20 s) and cached under /var/tmp/kiln-e2e-cache across
//! test runs, stored as an uncompressed layer and unpacked as a snapshot.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln::oci::Digest;
use kiln::oci::layer::Compression;
use kiln::oci::store::Store;
use kiln::sandbox::Snapshots;

pub const CACHE: &str = "/var/tmp/kiln-e2e-cache";

/// Serialises the slow one-time preparation across test processes.
fn locked<T>(f: impl FnOnce() -> T) -> T {
    fs::create_dir_all(CACHE).expect("create the e2e cache dir");
    let lock = fs::File::create(Path::new(CACHE).join(".lock")).expect("lock file");
    let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the e2e cache");
    let out = f();
    drop(lock);
    out
}

/// The minbase tarball (made with mmdebstrap when missing).
pub fn tarball() -> PathBuf {
    let tar = Path::new(CACHE).join("bookworm-minbase.tar");
    if tar.exists() {
        return tar;
    }
    locked(|| {
        if !tar.exists() {
            let part = tar.with_extension("part");
            let dir = Path::new(CACHE).join("rootfs-tmp");
            let _ = fs::remove_dir_all(&dir);
            let st = Command::new("mmdebstrap")
                .args(["--variant=minbase", "--quiet", "bookworm"])
                .arg(&dir)
                .status()
                .expect("mmdebstrap is installed by ./scripts/test (apt-get install mmdebstrap)");
            assert!(st.success(), "mmdebstrap failed");
            // Archive the top-level names, not ".": kiln's unpacker refuses
            // an entry for the root itself ("./").
            let st = Command::new("sh")
                .arg("-c")
                .arg(r#"cd "$1" && tar --numeric-owner -cf "$2" $(ls -A)"#)
                .args(["sh"])
                .arg(&dir)
                .arg(&part)
                .status()
                .expect("tar");
            assert!(st.success(), "tar of the rootfs failed");
            fs::remove_dir_all(&dir).expect("remove the temp rootfs");
            fs::rename(&part, &tar).expect("rename the tarball");
        }
    });
    tar
}

/// The blob store the base layer lives in (shared, cached).
pub fn store() -> Store {
    Store::open(Path::new(CACHE).join("store")).expect("open the e2e store")
}

/// The base layer's digest in [`store`] (uncompressed tar).
pub fn base_layer() -> Digest {
    let tar = tarball();
    let memo = Path::new(CACHE).join("bookworm-minbase.digest");
    let store = store();
    if let Ok(hex) = fs::read_to_string(&memo)
        && let Ok(d) = Digest::from_hex(hex.trim())
        && store.contains(&d)
    {
        return d;
    }
    locked(|| {
        let f = fs::File::open(&tar).expect("open the tarball");
        let mut w = store.writer().expect("blob writer");
        std::io::copy(&mut std::io::BufReader::new(f), &mut w).expect("copy the tarball");
        let info = w.commit().expect("commit the base layer");
        fs::write(&memo, info.digest.hex()).expect("write the digest memo");
        info.digest
    })
}

/// Snapshots of the e2e cache.
pub fn snapshots() -> Snapshots {
    Snapshots::new(Path::new(CACHE).join("snapshots"))
}

/// The base layer unpacked as an overlay lower dir (through kiln's snapshots).
pub fn base_rootfs() -> PathBuf {
    let d = base_layer();
    let (dir, _) = snapshots()
        .ensure(&store(), &d, Compression::None)
        .expect("snapshot of the base layer");
    dir
}

/// [`base_rootfs`] where other users can reach it (for `kiln run --rootfs`
/// as an unprivileged user): kiln keeps its snapshots dir 0700, so this is
/// a hard-linked copy (`cp -al`, made once) under the world-readable cache.
pub fn rootfs_for_users() -> PathBuf {
    let dest = Path::new(CACHE).join("rootfs-for-users");
    if dest.is_dir() {
        return dest;
    }
    let src = base_rootfs();
    locked(|| {
        if !dest.is_dir() {
            let part = Path::new(CACHE).join("rootfs-for-users.part");
            let _ = fs::remove_dir_all(&part);
            let st = Command::new("cp")
                .arg("-al")
                .arg(&src)
                .arg(&part)
                .status()
                .expect("cp");
            assert!(st.success(), "cp -al of the base rootfs failed");
            fs::rename(&part, &dest).expect("rename the users' rootfs");
        }
    });
    dest
}
