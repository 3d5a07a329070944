//! The parent side of a step: prepares the run dir and pipes, forks the
//! sandbox (see [`super::child`]), streams its output, waits, cleans up.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{Context, bail};
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use super::child::{self, Plan, PlannedMount};
use super::idmap::IdMap;
use super::network;
use super::spec::{Io, Mount, Network, RunSpec, Sharing};
use super::{Cancelled, RunOutput, Sandbox, SetupError};
use crate::Result;
use crate::progress::Task;

/// A run dir: removed (even if read-only or mode 0 inside) when dropped.
pub(crate) struct RunDir {
    pub path: PathBuf,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        remove_tree(&self.path);
    }
}

/// `rm -rf` that also gets through mode-0 dirs (overlay's work dir).
pub(crate) fn remove_tree(path: &Path) {
    if fs::remove_dir_all(path).is_ok() || !path.exists() {
        return;
    }
    fn open_up(p: &Path) {
        if let Ok(m) = fs::symlink_metadata(p)
            && m.is_dir()
        {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    open_up(&e.path());
                }
            }
        }
    }
    open_up(path);
    let _ = fs::remove_dir_all(path);
}

/// Removes run dirs left by a kiln that was killed (SIGKILL, power loss):
/// their owner process is gone. Dirs too young to have an owner file yet
/// belong to a run that is starting.
fn remove_stale(runs: &Path) {
    let Ok(rd) = fs::read_dir(runs) else { return };
    for ent in rd.flatten() {
        let p = ent.path();
        let owner = fs::read_to_string(p.join("owner")).ok();
        let alive = match owner.and_then(|o| o.trim().parse::<u32>().ok()) {
            Some(pid) => Path::new(&format!("/proc/{pid}")).exists(),
            None => ent
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default().as_secs() < 60),
        };
        if !alive {
            remove_tree(&p);
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).context("creating a pipe")
}

pub(super) fn pidfd_open(pid: Pid) -> Result<OwnedFd> {
    // nix has no pidfd_open yet.
    // SAFETY: plain syscall; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("pidfd_open");
    }
    // SAFETY: fd is valid and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Locks held for the duration of a run (locked cache mounts).
type Locks = Vec<Flock<fs::File>>;

pub(crate) fn sanitize_id(id: &str) -> String {
    // The id becomes one path component: keep it readable, make it safe,
    // and keep distinct ids distinct with a short hash.
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    let h = crate::oci::Digest::of(id.as_bytes());
    format!("{}-{}", clean.trim_start_matches('.'), &h.hex()[..12])
}

/// Fills a new cache dir with a copy of `seed`'s contents (owners, modes,
/// links kept). A failed seed removes the dir, so the next run seeds again.
fn seed_cache(seed: &Path, dir: &Path) -> Result<()> {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", seed.display()))
        .arg(dir)
        .output()
        .context("running cp")?;
    if !out.status.success() {
        let _ = fs::remove_dir_all(dir);
        bail!(
            "cp -a {} {}: {}",
            seed.display(),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn plan_mounts(
    sandbox: &Sandbox,
    spec: &RunSpec,
    dir: &Path,
    locks: &mut Locks,
) -> Result<Vec<PlannedMount>> {
    let mut out = Vec::new();
    for (i, m) in spec.mounts.iter().enumerate() {
        out.push(match m {
            Mount::Cache(c) => {
                let base = sandbox.cache_mounts.join(sanitize_id(&c.id));
                let lock_path = PathBuf::from(format!("{}.lock", base.display()));
                crate::paths::private_dir(&sandbox.cache_mounts)?;
                let mut source = base.clone();
                if c.sharing != Sharing::Shared {
                    let f = fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&lock_path)
                        .with_context(|| format!("opening {}", lock_path.display()))?;
                    let arg = if c.sharing == Sharing::Locked {
                        FlockArg::LockExclusive
                    } else {
                        FlockArg::LockExclusiveNonblock
                    };
                    match Flock::lock(f, arg) {
                        Ok(l) => locks.push(l),
                        Err((_, nix::errno::Errno::EWOULDBLOCK))
                            if c.sharing == Sharing::Private =>
                        {
                            source = dir.join(format!("private-cache-{i}"));
                        }
                        Err((_, e)) => {
                            return Err(e).with_context(|| {
                                format!("locking cache mount {:?} ({})", c.id, lock_path.display())
                            });
                        }
                    }
                }
                let fresh = !source.exists();
                if fresh {
                    fs::create_dir_all(&source)
                        .with_context(|| format!("creating cache dir {}", source.display()))?;
                    if let Some(seed) = &c.seed {
                        seed_cache(seed, &source)
                            .with_context(|| format!("seeding cache mount {:?}", c.id))?;
                    }
                }
                // The dir's mtime is the mount's last use for the cache GC
                // (which measures it again when it is newer than its size).
                crate::paths::touch(&base);
                PlannedMount::Bind {
                    source,
                    target: c.target.clone(),
                    readonly: false,
                    chown: fresh.then_some((c.uid, c.gid, c.mode)),
                }
            }
            Mount::Secret(s) => PlannedMount::Secret {
                target: s.target(),
                value: s.value.clone(),
                uid: s.uid,
                gid: s.gid,
                mode: s.mode,
            },
            Mount::Bind(b) => PlannedMount::Bind {
                source: b
                    .source
                    .canonicalize()
                    .with_context(|| format!("bind mount source {}", b.source.display()))?,
                target: b.target.clone(),
                readonly: !b.readwrite,
                chown: None,
            },
            Mount::Tmpfs(t) => PlannedMount::Tmpfs {
                target: t.target.clone(),
                size: t.size,
            },
        });
    }
    Ok(out)
}

/// Runs one step. See [`Sandbox::run`].
pub(crate) fn run(sandbox: &Sandbox, spec: &RunSpec, task: &Task) -> Result<RunOutput> {
    spec.validate()?;
    for l in &spec.lowers {
        if !l.is_dir() {
            bail!(
                "layer dir {} does not exist or is not a directory",
                l.display()
            );
        }
    }
    crate::paths::private_dir(&sandbox.runs)?;
    remove_stale(&sandbox.runs);
    let path = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&sandbox.runs)
        .with_context(|| format!("creating a run dir in {}", sandbox.runs.display()))?
        .keep();
    let dir = RunDir { path };
    fs::write(dir.path.join("owner"), std::process::id().to_string())?;
    for sub in ["l", "upper", "work", "merged", "files", "secrets"] {
        fs::create_dir(dir.path.join(sub))?;
    }
    // Overlay needs at least one lower dir: an empty one for `scratch`.
    let mut lowers: Vec<PathBuf> = spec.lowers.iter().rev().cloned().collect();
    if lowers.is_empty() {
        let empty = dir.path.join("empty");
        fs::create_dir(&empty)?;
        lowers.push(empty);
    }
    for (i, l) in lowers.iter().enumerate() {
        let abs = l
            .canonicalize()
            .with_context(|| format!("layer dir {}", l.display()))?;
        symlink(&abs, dir.path.join("l").join(i.to_string()))?;
    }
    let files = dir.path.join("files");
    let host_hosts = fs::read_to_string("/etc/hosts");
    if host_hosts.is_ok() || !spec.extra_hosts.is_empty() {
        let mut hosts = host_hosts.unwrap_or_default();
        if !hosts.is_empty() && !hosts.ends_with('\n') {
            hosts.push('\n');
        }
        hosts.push_str(&format!("127.0.1.1\t{}\n", spec.hostname));
        for (name, ip) in &spec.extra_hosts {
            hosts.push_str(&format!("{ip}\t{name}\n"));
        }
        fs::write(files.join("hosts"), hosts)?;
    }
    // The private network's helper is chosen now, so that a missing one
    // fails the step before anything is started.
    let backend = match spec.network {
        Network::Private => Some(network::Backend::choose(sandbox.idmap.is_rootless())?),
        Network::None | Network::Host => None,
    };
    if let Ok(resolv) = fs::read_to_string("/etc/resolv.conf") {
        let resolv = match &backend {
            Some((b, _)) => network::resolv_conf(
                &resolv,
                fs::read_to_string("/run/systemd/resolve/resolv.conf")
                    .ok()
                    .as_deref(),
                *b,
            ),
            None => resolv,
        };
        fs::write(files.join("resolv.conf"), resolv)?;
    }

    let mut locks = Vec::new();
    let mounts = plan_mounts(sandbox, spec, &dir.path, &mut locks)?;
    let argv: Vec<CString> = spec
        .command
        .argv()
        .into_iter()
        .map(|a| CString::new(a).context("a command argument contains a NUL byte"))
        .collect::<Result<_>>()?;
    for (k, v) in &spec.env {
        if v.contains('\0') {
            bail!("environment variable {k} contains a NUL byte");
        }
    }

    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (out_r, out_w) = match spec.io {
        Io::Log => {
            let (r, w) = pipe()?;
            (Some(r), Some(w))
        }
        Io::Inherit => (None, None),
    };
    let plan = Plan {
        rootless: sandbox.idmap.is_rootless(),
        single_id: matches!(sandbox.idmap, IdMap::Single { .. }),
        network: spec.network,
        privileged: spec.privileged,
        hostname: spec.hostname.clone(),
        dir: dir.path.clone(),
        lower_count: lowers.len(),
        mounts,
        argv,
        env: spec.env.clone(),
        workdir: spec.workdir.clone(),
        user: spec.user.clone(),
        ready_w: ready_w.as_raw_fd(),
        go_r: go_r.as_raw_fd(),
        err_w: err_w.as_raw_fd(),
        out_w: out_w.as_ref().map(|f| f.as_raw_fd()),
    };

    // SAFETY: the child only runs child::run_a, which ends in exec or _exit.
    let a = match unsafe { nix::unistd::fork() }.context("fork")? {
        ForkResult::Child => child::run_a(&plan),
        ForkResult::Parent { child } => child,
    };
    drop(plan);
    drop((ready_w, go_r, err_w, out_w));

    let mut ready = fs::File::from(ready_r);
    let mut go = fs::File::from(go_w);
    let mut step_pid: Option<Pid> = None;
    // Stops the network helper when dropped: at the end of this function,
    // whichever way it ends.
    let mut _net: Option<network::Helper> = None;
    let handshake = (|| -> Result<()> {
        if sandbox.idmap.is_rootless() {
            let mut b = [0u8; 1];
            if ready.read(&mut b)? != 1 {
                return Ok(()); // A failed; its error is in the error pipe.
            }
            sandbox.idmap.apply(a.as_raw())?;
            std::io::Write::write_all(&mut go, b"g")?;
        }
        if let Some((backend, program)) = &backend {
            let mut b = [0u8; 1];
            if ready.read(&mut b)? != 1 {
                return Ok(());
            }
            _net = Some(network::Helper::start(
                *backend,
                program,
                a,
                sandbox.idmap.is_rootless(),
                &dir.path,
            )?);
            std::io::Write::write_all(&mut go, b"g")?;
        }
        let mut pid = [0u8; 4];
        if ready.read_exact(&mut pid).is_ok() {
            step_pid = Some(Pid::from_raw(i32::from_le_bytes(pid)));
        }
        Ok(())
    })();
    drop(go);
    if let Err(e) = handshake {
        let _ = kill(a, Signal::SIGKILL);
        let _ = waitpid(a, None);
        return Err(e.context("setting up the sandbox's namespaces"));
    }

    // From here on, an error must not leave the sandbox running.
    let reap_on_error = |e: anyhow::Error| {
        let _ = kill(step_pid.unwrap_or(a), Signal::SIGKILL);
        let _ = kill(a, Signal::SIGKILL);
        let _ = waitpid(a, None);
        e
    };
    let pidfd = pidfd_open(a).map_err(reap_on_error)?;
    let mut out_buf: Vec<u8> = Vec::new();
    let mut err_buf: Vec<u8> = Vec::new();
    let mut out_r = out_r.map(fs::File::from);
    let mut err_r = Some(fs::File::from(err_r));
    let mut cancelled = false;
    let mut exited = false;
    let log_lines = |buf: &mut Vec<u8>, all: bool| {
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            // Secrets are masked by the task (the progress handle's redactor).
            task.log(text.trim_end_matches('\r'));
        }
        if all && !buf.is_empty() {
            let text = String::from_utf8_lossy(buf).into_owned();
            task.log(&text);
            buf.clear();
        }
    };
    let mut chunk = vec![0u8; 64 * 1024];
    while !exited || out_r.is_some() || err_r.is_some() {
        if !cancelled
            && spec
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::SeqCst))
        {
            cancelled = true;
            // Killing PID 1 of the namespace kills every process in it.
            let _ = kill(step_pid.unwrap_or(a), Signal::SIGKILL);
            let _ = kill(a, Signal::SIGKILL);
        }
        let mut fds = Vec::new();
        let out_i = out_r.as_ref().map(|f| {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let err_i = err_r.as_ref().map(|f| {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let pid_i = (!exited).then(|| {
            fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                return Err(reap_on_error(
                    anyhow::Error::new(e).context("waiting for the step"),
                ));
            }
        }
        let ready_of = |i: Option<usize>| {
            i.and_then(|i| fds[i].revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (out_ready, err_ready, pid_ready) = (ready_of(out_i), ready_of(err_i), ready_of(pid_i));
        drop(fds);
        if out_ready && let Some(f) = out_r.as_mut() {
            match f.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    out_r = None;
                    log_lines(&mut out_buf, true);
                }
                Ok(n) => {
                    out_buf.extend_from_slice(&chunk[..n]);
                    log_lines(&mut out_buf, false);
                }
            }
        }
        if err_ready && let Some(f) = err_r.as_mut() {
            match f.read(&mut chunk) {
                Ok(0) | Err(_) => err_r = None,
                Ok(n) => err_buf.extend_from_slice(&chunk[..n]),
            }
        }
        if pid_ready {
            exited = true;
        }
    }
    let status = loop {
        match waitpid(a, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.context("waiting for the sandbox")?,
        }
    };
    let code = match status {
        WaitStatus::Exited(_, c) => c,
        WaitStatus::Signaled(_, s, _) => 128 + s as i32,
        _ => 1,
    };
    drop(locks);

    // Parse the children's reports.
    let mut errors = Vec::new();
    let mut stubs = BTreeSet::new();
    for line in err_buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match line[0] {
            b'E' => errors.push(String::from_utf8_lossy(&line[1..]).into_owned()),
            b'S' => {
                stubs.insert(PathBuf::from(std::ffi::OsStr::from_bytes(&line[1..])));
            }
            _ => {}
        }
    }
    let upper = dir.path.join("upper");
    super::capture::remove_stubs(&upper, &stubs, &lowers);
    if cancelled {
        return Err(Cancelled.into());
    }
    if !errors.is_empty() {
        return Err(SetupError {
            step: spec.name.clone(),
            message: errors.join("; "),
        }
        .into());
    }
    let mut excluded: Vec<PathBuf> = spec
        .mounts
        .iter()
        .map(|m| super::capture::rel(&m.target()))
        .collect();
    excluded.sort();
    Ok(RunOutput {
        exit_code: code,
        excluded,
        dir,
    })
}
