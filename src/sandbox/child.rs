//! The processes on the far side of `fork`: everything here runs in the
//! sandbox's children and never returns to the caller.
//!
//! ```text
//! kiln ──fork──► A: [unshare user ns, wait for the id maps], unshare mount/pid/ipc/uts[/net] ns
//!                └─fork──► B: PID 1 of the new pid ns: mounts, pivot_root, then the reaper
//!                          └─fork──► C: the step: user, capabilities, workdir, execve
//! ```
//!
//! A stays outside the new pid namespace so that kiln has a normal child to
//! wait for; B is the "tiny init": it reaps every zombie and, when the step
//! (C) exits, exits too, which makes the kernel kill whatever the step left
//! running. Every mount is made in B's private mount namespace, so the host
//! never sees one and nothing is left to unmount when the namespace dies.
//!
//! `fork` (not raw `clone`) is used because glibc's fork resets malloc's
//! locks in the child, which makes allocating here safe even though kiln is
//! multi-threaded. Setup errors are written to the error pipe as `E<text>`
//! lines; mount points B had to create are reported as `S<path>` lines so
//! the parent can remove them from the upper dir.

use std::ffi::CString;
use std::fs;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid};

use super::spec::Network;
use crate::oci::unpack::secure_join;

/// A mount B makes, with host paths already prepared by the parent.
#[derive(Debug, Clone)]
pub(crate) enum PlannedMount {
    /// Bind `source` (host) at `target` (in the image).
    Bind {
        source: PathBuf,
        target: PathBuf,
        readonly: bool,
        /// chown the target to this after mounting (a fresh cache dir).
        chown: Option<(u32, u32, u32)>,
    },
    Tmpfs {
        target: PathBuf,
        size: Option<u64>,
    },
    /// Written into the staging tmpfs then bound read-only at `target`.
    Secret {
        target: PathBuf,
        value: Vec<u8>,
        uid: u32,
        gid: u32,
        mode: u32,
    },
}

/// Everything the children need, prepared before `fork`.
pub(crate) struct Plan {
    pub rootless: bool,
    /// Only uid/gid 0 are mapped (no setgroups, no other ids).
    pub single_id: bool,
    pub network: Network,
    /// `RUN --security=insecure` with the entitlement granted: every
    /// capability and an unmasked, writable /proc (see `docs/sandbox.md`).
    pub privileged: bool,
    pub hostname: String,
    /// The run dir: `l/` (lower symlinks), `upper/`, `work/`, `merged/`,
    /// `files/` (hosts, resolv.conf), `secrets/` (staging mount point).
    pub dir: PathBuf,
    pub lower_count: usize,
    pub mounts: Vec<PlannedMount>,
    pub argv: Vec<CString>,
    pub env: Vec<(String, String)>,
    pub workdir: PathBuf,
    pub user: Option<String>,
    // Pipe ends (raw: the parent owns them; the children only use them).
    pub ready_w: RawFd,
    pub go_r: RawFd,
    pub err_w: RawFd,
    pub out_w: Option<RawFd>,
}

fn write_all(fd: RawFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: writing a valid buffer to an fd we own.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        buf = &buf[n as usize..];
    }
}

fn report(plan: &Plan, msg: &str) {
    let line = format!("E{}\n", msg.replace('\n', " "));
    write_all(plan.err_w, line.as_bytes());
}

fn die(plan: &Plan, code: i32, msg: &str) -> ! {
    report(plan, msg);
    // SAFETY: _exit skips atexit handlers and destructors of the parent's state.
    unsafe { libc::_exit(code) }
}

/// Signal dispositions and mask as a fresh process has them (kiln may have
/// installed handlers, and Rust ignores SIGPIPE).
fn reset_signals() {
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL is always sound.
        unsafe {
            let _ = nix::sys::signal::signal(sig, SigHandler::SigDfl);
        }
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

fn exit_code(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, c) => c,
        WaitStatus::Signaled(_, s, _) => 128 + s as i32,
        _ => 1,
    }
}

/// Process A. Never returns.
pub(crate) fn run_a(plan: &Plan) -> ! {
    reset_signals();
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if plan.rootless {
        if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER) {
            die(
                plan,
                125,
                &format!(
                    "cannot create a user namespace: {e}: unprivileged user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone / user.max_user_namespaces)"
                ),
            );
        }
        write_all(plan.ready_w, b"u");
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into a valid buffer.
        let n = unsafe { libc::read(plan.go_r, b.as_mut_ptr().cast(), 1) };
        if n != 1 {
            die(plan, 125, "the id mapping of the user namespace failed");
        }
        if let Err(e) = nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .and_then(|_| {
                nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            })
        {
            die(
                plan,
                125,
                &format!("becoming root in the user namespace: {e}"),
            );
        }
    }
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if plan.network != Network::Host {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if let Err(e) = unshare(flags) {
        die(
            plan,
            125,
            &format!("cannot create the sandbox namespaces: {e}"),
        );
    }
    if plan.network == Network::Private {
        // The parent attaches the network helper to the new namespace; the
        // step must not start before its network is up.
        write_all(plan.ready_w, b"n");
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into a valid buffer.
        if unsafe { libc::read(plan.go_r, b.as_mut_ptr().cast(), 1) } != 1 {
            die(plan, 125, "the step's network could not be set up");
        }
    }
    // SAFETY: this process is single-threaded (a fork child).
    match unsafe { nix::unistd::fork() } {
        Err(e) => die(plan, 125, &format!("fork: {e}")),
        Ok(ForkResult::Child) => run_b(plan),
        Ok(ForkResult::Parent { child }) => {
            write_all(plan.ready_w, &child.as_raw().to_le_bytes());
            if let Some(fd) = plan.out_w {
                // SAFETY: closing our copy so the parent sees EOF when the step ends.
                unsafe { libc::close(fd) };
            }
            let code = loop {
                match waitpid(child, None) {
                    Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                        break exit_code(s);
                    }
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break 125,
                }
            };
            // SAFETY: see die().
            unsafe { libc::_exit(code) }
        }
    }
}

/// Process B: PID 1. Never returns.
fn run_b(plan: &Plan) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // A session of its own, without a controlling terminal, for B and so
    // for the step: otherwise the step shares kiln's terminal, can open it
    // as /dev/tty and push input into it with TIOCSTI (bubblewrap's
    // CVE-2017-5226). B is not a process group leader (a fresh fork), so
    // setsid cannot fail; C is then not a session leader and cannot take
    // a terminal as its controlling one (TIOCSCTTY) either.
    if let Err(e) = nix::unistd::setsid() {
        die(plan, 125, &format!("setsid: {e}"));
    }
    let root = plan.dir.join("merged");
    if let Err(e) = setup_root(plan, &root) {
        die(plan, 125, &e);
    }
    let (user, workdir) = match prepare_user_and_workdir(plan) {
        Ok(v) => v,
        Err(e) => die(plan, 125, &e),
    };
    // SAFETY: single-threaded.
    match unsafe { nix::unistd::fork() } {
        Err(e) => die(plan, 125, &format!("fork: {e}")),
        Ok(ForkResult::Child) => run_c(plan, user, &workdir),
        Ok(ForkResult::Parent { child }) => {
            if let Some(fd) = plan.out_w {
                // SAFETY: closing our copy of the output pipe.
                unsafe { libc::close(fd) };
            }
            reap(child)
        }
    }
}

/// The init loop: reap everything; leave when the step itself exits.
fn reap(step: Pid) -> ! {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(s @ (WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)))
                if pid == step =>
            {
                // SAFETY: see die(). Exiting as PID 1 kills the rest of the namespace.
                unsafe { libc::_exit(exit_code(s)) }
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            // SAFETY: as above.
            Err(_) => unsafe { libc::_exit(125) },
        }
    }
}

fn err<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e}")
}

/// What kind of mount point to create.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stub {
    Dir,
    File,
}

/// Makes `rel` exist inside `root` (resolving symlinks inside the root),
/// recording what had to be created. Refuses a final symlink: mounting on
/// it would follow it on the host's side.
fn ensure(plan: &Plan, root: &Path, rel: &Path, kind: Stub) -> Result<PathBuf, String> {
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    let host = secure_join(root, rel).map_err(|e| format!("{e:#}"))?;
    // Parents first.
    if let Some(parent) = host.parent()
        && parent.starts_with(root)
        && parent != root
    {
        let prel = parent.strip_prefix(root).unwrap_or(parent);
        ensure_dir_chain(plan, root, prel)?;
    }
    match fs::symlink_metadata(&host) {
        Ok(m) if m.file_type().is_symlink() => Err(format!(
            "mount target /{} is a symbolic link in the image: mount on the path it points to",
            rel.display()
        )),
        Ok(m) if kind == Stub::Dir && !m.is_dir() => Err(format!(
            "mount target /{} exists in the image and is not a directory",
            rel.display()
        )),
        Ok(m) if kind == Stub::File && m.is_dir() => Err(format!(
            "mount target /{} is a directory in the image but the mount is a file",
            rel.display()
        )),
        Ok(_) => Ok(host),
        Err(_) => {
            let r = match kind {
                Stub::Dir => fs::DirBuilder::new().mode(0o755).create(&host),
                Stub::File => fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&host)
                    .map(|_| ()),
            };
            r.map_err(err(format!("creating mount point /{}", rel.display())))?;
            stub(plan, root, &host);
            Ok(host)
        }
    }
}

fn ensure_dir_chain(plan: &Plan, root: &Path, rel: &Path) -> Result<(), String> {
    let mut cur = PathBuf::new();
    for c in rel.components() {
        cur.push(c);
        let host = secure_join(root, &cur).map_err(|e| format!("{e:#}"))?;
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "/{} is not a directory in the image",
                    cur.display()
                ));
            }
            Err(_) => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&host)
                    .map_err(err(format!("creating /{}", cur.display())))?;
                stub(plan, root, &host);
            }
        }
    }
    Ok(())
}

fn stub(plan: &Plan, root: &Path, host: &Path) {
    if let Ok(rel) = host.strip_prefix(root) {
        let mut line = b"S".to_vec();
        line.extend_from_slice(rel.as_os_str().as_bytes());
        line.push(b'\n');
        write_all(plan.err_w, &line);
    }
}

/// Bind-mounts `source` on `target`, then remounts the bind with `flags`
/// (`MS_NODEV`, `MS_RDONLY`…) when there are any. Host device nodes are
/// bound with no flags; every other bind gets at least `MS_NODEV`.
fn bind(source: &Path, target: &Path, flags: MsFlags) -> Result<(), String> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err(format!("bind-mounting {}", source.display())))?;
    if !flags.is_empty() {
        // A remount must keep the flags the kernel locked on the source
        // mount (in a user namespace), so read them first.
        let st = nix::sys::statvfs::statvfs(target).map_err(err("statvfs"))?;
        let mut all = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags;
        use nix::sys::statvfs::FsFlags;
        for (f, m) in [
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if st.flags().contains(f) {
                all |= m;
            }
        }
        mount(None::<&str>, target, None::<&str>, all, None::<&str>)
            .map_err(err(format!("remounting {} ({flags:?})", target.display())))?;
    }
    Ok(())
}

/// Flags of a bind of data (not a device): never `dev`, read-only if asked.
fn data_flags(readonly: bool) -> MsFlags {
    if readonly {
        MsFlags::MS_NODEV | MsFlags::MS_RDONLY
    } else {
        MsFlags::MS_NODEV
    }
}

/// /proc files and dirs bound read-only onto themselves: runc's (and
/// containerd's, which BuildKit uses) `readonlyPaths`. `sys` is the one
/// that matters: a root step could otherwise set host sysctls
/// (`kernel.core_pattern` runs a program as host root).
const PROC_READONLY: [&str; 5] = ["bus", "fs", "irq", "sys", "sysrq-trigger"];

/// /proc entries hidden (runc's and containerd's `maskedPaths`): files get
/// /dev/null bound over them, dirs an empty read-only tmpfs. They show
/// host kernel state (keyrings, kernel memory, timers, hardware).
const PROC_MASKED: [&str; 9] = [
    "acpi",
    "asound",
    "kcore",
    "keys",
    "latency_stats",
    "sched_debug",
    "scsi",
    "timer_list",
    "timer_stats",
];

/// Applies [`PROC_READONLY`] and [`PROC_MASKED`] to the step's /proc
/// (`proc_` is its host path, before pivot_root). Entries this kernel does
/// not have are skipped.
fn harden_proc(proc_: &Path) -> Result<(), String> {
    for name in PROC_READONLY {
        let p = proc_.join(name);
        if fs::symlink_metadata(&p).is_err() {
            continue;
        }
        bind(&p, &p, MsFlags::MS_RDONLY | MsFlags::MS_NODEV)
            .map_err(|e| format!("making /proc/{name} read-only: {e}"))?;
    }
    for name in PROC_MASKED {
        let p = proc_.join(name);
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            mount(
                Some("tmpfs"),
                &p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0,mode=0555"),
            )
            .map_err(err(format!("masking /proc/{name}")))?;
        } else {
            bind(Path::new("/dev/null"), &p, MsFlags::empty())
                .map_err(|e| format!("masking /proc/{name}: {e}"))?;
        }
    }
    Ok(())
}

fn setup_root(plan: &Plan, root: &Path) -> Result<(), String> {
    // Nothing below may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(err("making mounts private"))?;

    // The overlay. Lower dirs are short relative names of symlinks in l/
    // ("0" is the top-most), so hundreds of layers fit in one page of
    // mount options. The upper and work dirs are relative too: the step
    // reads these options in /proc/self/mountinfo and must not learn the
    // host's paths from them.
    let ldir = plan.dir.join("l");
    nix::unistd::chdir(&ldir).map_err(err(format!("entering {}", ldir.display())))?;
    let lowers: Vec<String> = (0..plan.lower_count).map(|i| i.to_string()).collect();
    let mut opts = format!(
        "lowerdir={},upperdir=../upper,workdir=../work",
        lowers.join(":"),
    );
    if plan.rootless {
        opts.push_str(",userxattr");
    } else {
        // Plain copy-ups only, so the upper dir is a simple diff to read.
        opts.push_str(",index=off,redirect_dir=off,metacopy=off");
    }
    // nodev: a device node the step makes (it keeps CAP_MKNOD, as in
    // Docker) or an image ships cannot be opened, so `mknod /tmp/disk b 254
    // 0` gives no access to the host's disk. This, with nodev on every
    // other writable mount, stands in for runc's device cgroup.
    let overlay = |opts: &str| {
        mount(
            Some("overlay"),
            root,
            Some("overlay"),
            MsFlags::MS_NODEV,
            Some(opts),
        )
    };
    // volatile: the unmount when the step ends does not `syncfs` the
    // cache's whole filesystem (seconds, after a package base was just
    // written); the upper dir becomes a snapshot, which kiln keeps safe
    // across a crash of the machine itself (`sandbox::unsynced`). Kernels
    // before 5.10 do not know the option: they mount without it.
    overlay(&format!("{opts},volatile"))
        .or_else(|e| {
            if e == nix::errno::Errno::EINVAL {
                overlay(&opts)
            } else {
                Err(e)
            }
        })
        .map_err(err(format!(
            "mounting the overlay ({} layers) on {}",
            plan.lower_count,
            root.display()
        )))?;

    // /proc of the new pid namespace.
    let proc_ = ensure(plan, root, Path::new("proc"), Stub::Dir)?;
    mount(
        Some("proc"),
        &proc_,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(err("mounting /proc"))?;
    if !plan.privileged {
        harden_proc(&proc_)?;
    }

    setup_dev(plan, root)?;

    files_to_tmpfs(plan)?;
    // /etc/hosts and /etc/resolv.conf: copies of the host's (made by the
    // parent), bound over the image's. An image whose file is a symlink
    // keeps it (mounting on it would follow the link outside the root).
    for name in ["hosts", "resolv.conf"] {
        let src = plan.dir.join("files").join(name);
        if !src.exists() {
            continue;
        }
        let rel = Path::new("etc").join(name);
        let in_root = secure_join(root, &rel).map_err(|e| format!("{e:#}"))?;
        if fs::symlink_metadata(&in_root).is_ok_and(|m| m.file_type().is_symlink()) {
            continue;
        }
        // Best effort: a rootless step on a rootfs it does not own cannot
        // create the file, and a step can live without the host's copy.
        let Ok(target) = ensure(plan, root, &rel, Stub::File) else {
            continue;
        };
        bind(&src, &target, data_flags(false))?;
    }

    // The step's own mounts, parents before children.
    let mut mounts = plan.mounts.clone();
    mounts.sort_by_key(|m| match m {
        PlannedMount::Bind { target, .. }
        | PlannedMount::Tmpfs { target, .. }
        | PlannedMount::Secret { target, .. } => target.components().count(),
    });
    let mut staging_ready = false;
    for (i, m) in mounts.iter().enumerate() {
        match m {
            PlannedMount::Bind {
                source,
                target,
                readonly,
                chown,
            } => {
                let kind = if source.is_dir() {
                    Stub::Dir
                } else {
                    Stub::File
                };
                let t = ensure(plan, root, target, kind)?;
                bind(source, &t, data_flags(*readonly))?;
                if let Some((uid, gid, mode)) = chown {
                    std::os::unix::fs::chown(&t, Some(*uid), Some(*gid))
                        .map_err(err(format!("chown of cache dir {}", target.display())))?;
                    fs::set_permissions(&t, fs::Permissions::from_mode(*mode))
                        .map_err(err(format!("chmod of cache dir {}", target.display())))?;
                }
            }
            PlannedMount::Tmpfs { target, size } => {
                let t = ensure(plan, root, target, Stub::Dir)?;
                let mut o = "mode=1777".to_string();
                if let Some(s) = size {
                    o.push_str(&format!(",size={s}"));
                }
                mount(
                    Some("tmpfs"),
                    &t,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(o.as_str()),
                )
                .map_err(err(format!("mounting a tmpfs on {}", target.display())))?;
            }
            PlannedMount::Secret {
                target,
                value,
                uid,
                gid,
                mode,
            } => {
                // Secrets live in a tmpfs outside the rootfs, never on disk.
                let staging = plan.dir.join("secrets");
                if !staging_ready {
                    mount(
                        Some("tmpfs"),
                        &staging,
                        Some("tmpfs"),
                        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                        Some("mode=0755,size=16m"),
                    )
                    .map_err(err("mounting the secrets tmpfs"))?;
                    staging_ready = true;
                }
                let file = staging.join(i.to_string());
                {
                    use std::io::Write;
                    let mut f = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&file)
                        .map_err(err("creating a secret file"))?;
                    f.write_all(value).map_err(err("writing a secret file"))?;
                }
                std::os::unix::fs::chown(&file, Some(*uid), Some(*gid))
                    .map_err(err(format!("chown of secret {}", target.display())))?;
                fs::set_permissions(&file, fs::Permissions::from_mode(*mode))
                    .map_err(err("chmod of a secret"))?;
                let t = ensure(plan, root, target, Stub::File)?;
                bind(&file, &t, data_flags(true))?;
            }
        }
    }

    if plan.network != Network::Host {
        loopback_up().map_err(err("bringing up lo in the private network"))?;
    }
    nix::unistd::sethostname(&plan.hostname).map_err(err("setting the hostname"))?;

    // pivot_root(".", ".") stacks the old root under the new one; detaching
    // it leaves only the new root (runc's trick: no put_old dir needed).
    nix::unistd::chdir(root).map_err(err("entering the root"))?;
    nix::unistd::pivot_root(".", ".").map_err(err("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(err("detaching the host's root"))?;
    nix::unistd::chdir("/").map_err(err("chdir /"))?;
    Ok(())
}

/// Moves the run dir's `files/` (hosts, resolv.conf) into a tmpfs of the
/// step's mount namespace before they are bound: /proc/self/mountinfo
/// shows a bind's source path within its filesystem, and on the host's
/// disk that is the path of kiln's cache dir; in the tmpfs it is `/hosts`.
fn files_to_tmpfs(plan: &Plan) -> Result<(), String> {
    let dir = plan.dir.join("files");
    let mut files = Vec::new();
    for e in fs::read_dir(&dir).map_err(err("reading files/"))?.flatten() {
        let data = fs::read(e.path()).map_err(err(format!("reading {}", e.path().display())))?;
        files.push((e.file_name(), data));
    }
    mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=1m"),
    )
    .map_err(err("mounting a tmpfs on files/"))?;
    for (name, data) in files {
        fs::write(dir.join(&name), data).map_err(err(format!("writing files/{name:?}")))?;
    }
    Ok(())
}

fn setup_dev(plan: &Plan, root: &Path) -> Result<(), String> {
    let dev = ensure(plan, root, Path::new("dev"), Stub::Dir)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        // nodev: the only usable devices are the binds below (each its
        // own mount, with the host /dev's flags) and /dev/pts; a node the
        // step makes here cannot be opened.
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(err("mounting /dev"))?;
    // Host devices are bound rather than created, which also works in a
    // user namespace where mknod is not allowed. runc's default set; /dev/tty
    // is the opener's controlling terminal, and the step has none (see
    // run_b), so opening it fails with ENXIO as in runc without a tty.
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let t = dev.join(name);
        fs::File::create(&t).map_err(err(format!("creating /dev/{name}")))?;
        bind(&Path::new("/dev").join(name), &t, MsFlags::empty())?;
    }
    let pts = dev.join("pts");
    fs::create_dir(&pts).map_err(err("creating /dev/pts"))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        flags,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .or_else(|_| {
        mount(
            Some("devpts"),
            &pts,
            Some("devpts"),
            flags,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )
    })
    .map_err(err("mounting /dev/pts"))?;
    symlink("pts/ptmx", dev.join("ptmx")).map_err(err("linking /dev/ptmx"))?;
    let shm = dev.join("shm");
    fs::create_dir(&shm).map_err(err("creating /dev/shm"))?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(err("mounting /dev/shm"))?;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(name)).map_err(err(format!("linking /dev/{name}")))?;
    }
    Ok(())
}

/// `ip link set lo up`, by ioctl: the one thing a fresh network namespace needs.
fn loopback_up() -> Result<(), std::io::Error> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq we own.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let r = if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) < 0 {
            -1
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &req)
        };
        let e = std::io::Error::last_os_error();
        libc::close(s);
        if r < 0 { Err(e) } else { Ok(()) }
    }
}

/// Resolves the user and makes sure the working directory is usable (both
/// in the new root).
fn prepare_user_and_workdir(plan: &Plan) -> Result<(super::user::User, PathBuf), String> {
    let user = match &plan.user {
        None => super::user::User {
            uid: 0,
            gid: 0,
            groups: vec![0],
            home: "/root".into(),
        },
        Some(spec) => {
            let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
            let group = fs::read_to_string("/etc/group").unwrap_or_default();
            super::user::resolve(spec, &passwd, &group).map_err(|e| format!("{e:#}"))?
        }
    };
    if plan.single_id && (user.uid != 0 || user.gid != 0) {
        return Err(format!(
            "user {} ({}:{}) cannot be used: rootless without /etc/subuid and /etc/subgid ranges maps only root; add ranges for your user (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER)",
            plan.user.as_deref().unwrap_or("root"),
            user.uid,
            user.gid
        ));
    }
    let w = &plan.workdir;
    match fs::metadata(w) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "working directory {} is not a directory in the image: pick a directory (WORKDIR / -w)",
                w.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(w)
                .map_err(err(format!("creating working directory {}", w.display())))?;
        }
        Err(e) => {
            return Err(format!("working directory {}: {e}", w.display()));
        }
    }
    Ok((user, w.clone()))
}

/// Process C: becomes the step. Never returns.
fn run_c(plan: &Plan, user: super::user::User, workdir: &Path) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if let Some(out) = plan.out_w {
        // SAFETY: dup2 onto the standard fds; /dev/null for stdin.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            if null >= 0 {
                libc::dup2(null, 0);
            }
            libc::dup2(out, 1);
            libc::dup2(out, 2);
        }
    }
    // A privileged step (granted `security.insecure`) keeps every
    // capability kiln has; otherwise only Docker's default set survives.
    if !plan.privileged
        && let Err(e) = super::caps::drop_bounding()
    {
        die(plan, 125, &e);
    }
    if !plan.single_id {
        let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        if let Err(e) = nix::unistd::setgroups(&groups) {
            die(
                plan,
                125,
                &format!("setting supplementary groups {:?}: {e}", user.groups),
            );
        }
    }
    let (u, g) = (Uid::from_raw(user.uid), Gid::from_raw(user.gid));
    if let Err(e) = nix::unistd::setresgid(g, g, g) {
        die(
            plan,
            125,
            &format!("switching to gid {}: {e}: is the gid mapped?", user.gid),
        );
    }
    if let Err(e) = nix::unistd::setresuid(u, u, u) {
        die(
            plan,
            125,
            &format!("switching to uid {}: {e}: is the uid mapped?", user.uid),
        );
    }
    if user.uid == 0
        && !plan.privileged
        && let Err(e) = super::caps::set_root_caps()
    {
        die(plan, 125, &e);
    }
    if let Err(e) = nix::unistd::chdir(workdir) {
        die(
            plan,
            125,
            &format!("cannot enter working directory {}: {e}", workdir.display()),
        );
    }
    // Build the environment with defaults.
    let mut env = plan.env.clone();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push((
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ));
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), user.home.clone()));
    }
    if !env.iter().any(|(k, _)| k == "HOSTNAME") {
        env.push(("HOSTNAME".into(), plan.hostname.clone()));
    }
    let envp: Vec<CString> = env
        .iter()
        .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
        .collect();
    let prog = plan.argv[0].to_bytes();
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let program: PathBuf = if prog.contains(&b'/') {
        PathBuf::from(std::ffi::OsStr::from_bytes(prog))
    } else {
        let found = path_var.split(':').filter(|d| !d.is_empty()).find_map(|d| {
            let p = Path::new(d).join(std::ffi::OsStr::from_bytes(prog));
            fs::metadata(&p)
                .ok()
                .filter(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .map(|_| p)
        });
        match found {
            Some(p) => p,
            None => die(
                plan,
                127,
                &format!(
                    "command not found: {:?} is not in PATH={path_var} inside the image",
                    String::from_utf8_lossy(prog)
                ),
            ),
        }
    };
    let Ok(cprog) = CString::new(program.as_os_str().as_bytes()) else {
        die(plan, 127, "program path contains a NUL byte");
    };
    // Nothing of kiln's may leak into the step.
    // SAFETY: close_range with CLOEXEC only flags fds.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    let e = nix::unistd::execve(&cprog, &plan.argv, &envp).unwrap_err();
    let why = match e {
        nix::errno::Errno::ENOENT => format!(
            "command not found: {} does not exist in the image",
            program.display()
        ),
        nix::errno::Errno::EACCES => format!(
            "cannot execute {}: permission denied (is it executable by uid {}?)",
            program.display(),
            user.uid
        ),
        nix::errno::Errno::ENOEXEC => format!(
            "cannot execute {}: not an executable format for this machine (wrong architecture, or a script without #!)",
            program.display()
        ),
        e => format!("cannot execute {}: {e}", program.display()),
    };
    die(plan, 127, &why)
}
