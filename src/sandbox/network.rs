//! The step's private network: its own network namespace, given outbound
//! access by a user-mode network stack running on the host side.
//!
//! BuildKit's default: a build step cannot reach the host's loopback
//! services (databases, the Docker socket's TCP twin, metadata proxies…)
//! but can download from registries and package indexes. The namespace is
//! made by the sandbox (process A unshares it); the parent then attaches a
//! helper to it before the step starts:
//!
//! - `pasta` (Debian package `passt`): preferred when kiln runs rootless.
//!   Started with every port forward off (`-t/-u/-T/-U none`: by default it
//!   would make the host's bound loopback ports appear in the namespace)
//!   and `--no-map-gw` (by default the gateway address leads to the host's
//!   loopback).
//! - `slirp4netns`: preferred as root, because Debian 12's pasta
//!   (2023-03-09) drops to `nobody` before it opens the namespace and so
//!   cannot join a root-owned one. `--disable-host-loopback` keeps
//!   10.0.2.2 from leading to the host's loopback; `--enable-seccomp` (and,
//!   as root, `--enable-sandbox`) confine it.
//!
//! Either runs as the grandchild of kiln under a small watchdog process
//! (forked, never exec'd) that holds the read end of a "lifeline" pipe: it
//! kills the helper when kiln says so at the end of the step, and also
//! when kiln dies (the pipe's write end closes). A parent-death signal on
//! the helper itself would not do: pasta changes its uid, which clears it.
//! The watchdog is in its own process group so a terminal's Ctrl-C goes to
//! kiln (which cancels the step and then stops the helper), not to it.
//!
//! Readiness: both write to a FIFO in the run dir once the namespace is
//! configured (pasta's `--pid` file, slirp4netns' `--ready-fd`). The step
//! waits for that; a helper that exits first, or takes longer than
//! [`READY_TIMEOUT`], fails the step with the helper's own message.

use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};

use crate::Result;

/// How long a helper may take to configure the namespace (it takes tens
/// of milliseconds).
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Forces a helper (`pasta` or `slirp4netns`) instead of the automatic choice.
pub const HELPER_ENV: &str = "KILN_NETWORK_HELPER";

/// slirp4netns' built-in DNS forwarder, as seen from the namespace.
const SLIRP_DNS: &str = "10.0.2.3";

/// The user-mode network stack behind a private network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Pasta,
    Slirp4netns,
}

impl Backend {
    fn program(self) -> &'static str {
        match self {
            Backend::Pasta => "pasta",
            Backend::Slirp4netns => "slirp4netns",
        }
    }

    /// The helper to use: `KILN_NETWORK_HELPER` if set, else the first of
    /// the preferred order (see the module doc) found in `PATH`.
    pub(crate) fn choose(rootless: bool) -> Result<(Backend, PathBuf)> {
        choose_in(
            rootless,
            std::env::var_os("PATH").as_deref(),
            std::env::var(HELPER_ENV).ok().as_deref(),
        )
    }

    /// The helper's arguments, attaching it to the namespaces of `pid`
    /// (process A) and announcing readiness on `ready` (a FIFO; slirp4netns
    /// gets it as fd 3).
    fn args(self, pid: Pid, rootless: bool, ready: &Path) -> Vec<OsString> {
        let ns = |kind: &str| format!("/proc/{}/ns/{kind}", pid.as_raw());
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        match self {
            Backend::Pasta => {
                for s in ["--foreground", "--quiet", "--config-net"] {
                    push(s);
                }
                // No port forwarding in either direction: "auto" (the
                // default) would bind the host's listening ports inside.
                for s in ["-t", "none", "-u", "none", "-T", "none", "-U", "none"] {
                    push(s);
                }
                // The gateway address must not lead to the host's loopback.
                push("--no-map-gw");
                if rootless {
                    push("--userns");
                    push(&ns("user"));
                }
                push("--netns");
                push(&ns("net"));
                push("--pid");
                a.push(ready.as_os_str().to_owned());
            }
            Backend::Slirp4netns => {
                for s in [
                    "--configure",
                    "--mtu=65520",
                    "--disable-host-loopback",
                    "--enable-seccomp",
                    "--ready-fd=3",
                    "--netns-type=path",
                ] {
                    push(s);
                }
                if rootless {
                    push(&format!("--userns-path={}", ns("user")));
                } else {
                    // Its own mount namespace and pivot_root: root only
                    // (started outside a user namespace, it fails rootless).
                    push("--enable-sandbox");
                }
                push(&ns("net"));
                push("tap0");
            }
        }
        a
    }
}

fn find_in(path: Option<&OsStr>, program: &str) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .map(|d| d.join(program))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn missing_message() -> String {
    "steps (RUN, kiln run) get their own network namespace, with outbound access through pasta or slirp4netns, and neither is installed: install them (apt-get install passt slirp4netns), or opt into the host's network with --network host (kiln build: --network host for every step, or --allow network.host for RUN --network=host)".to_string()
}

fn choose_in(
    rootless: bool,
    path: Option<&OsStr>,
    forced: Option<&str>,
) -> Result<(Backend, PathBuf)> {
    let order = match forced.map(str::trim).filter(|s| !s.is_empty()) {
        Some("pasta") => vec![Backend::Pasta],
        Some("slirp4netns") => vec![Backend::Slirp4netns],
        Some(other) => bail!("{HELPER_ENV}={other:?}: use pasta or slirp4netns"),
        None if rootless => vec![Backend::Pasta, Backend::Slirp4netns],
        None => vec![Backend::Slirp4netns, Backend::Pasta],
    };
    for b in &order {
        if let Some(p) = find_in(path, b.program()) {
            return Ok((*b, p));
        }
    }
    if let (Some(_), [b]) = (forced, order.as_slice()) {
        bail!(
            "{HELPER_ENV} asks for {}, which is not in PATH: {}",
            b.program(),
            missing_message()
        );
    }
    bail!("{}", missing_message())
}

fn nameservers(conf: &str) -> impl Iterator<Item = &str> {
    conf.lines().filter_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("nameserver")).then(|| w.next()).flatten()
    })
}

fn is_loopback(addr: &str) -> bool {
    // Drop a zone (`fe80::1%eth0`) before parsing.
    let a = addr.split('%').next().unwrap_or(addr);
    a.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The step's /etc/resolv.conf from the host's `etc` (and systemd-resolved's
/// list of upstream servers, `upstream`, when there is one). A loopback
/// resolver (systemd-resolved's 127.0.0.53, dnsmasq…) is the host's
/// loopback, which the step cannot reach: the upstream servers are used
/// instead (as Docker does), else slirp4netns' forwarder.
pub(crate) fn resolv_conf(etc: &str, upstream: Option<&str>, backend: Backend) -> String {
    let without_loopback = |conf: &str| -> String {
        conf.lines()
            .filter(|l| {
                let mut w = l.split_whitespace();
                !(w.next() == Some("nameserver") && w.next().is_some_and(is_loopback))
            })
            .map(|l| format!("{l}\n"))
            .collect()
    };
    if nameservers(etc).any(|n| !is_loopback(n)) {
        return without_loopback(etc);
    }
    if let Some(up) = upstream.filter(|u| nameservers(u).any(|n| !is_loopback(n))) {
        return without_loopback(up);
    }
    match backend {
        Backend::Slirp4netns => format!("{}nameserver {SLIRP_DNS}\n", without_loopback(etc)),
        Backend::Pasta => etc.to_string(),
    }
}

/// A running helper (under its watchdog). Dropping it stops both.
pub(crate) struct Helper {
    watchdog: Pid,
    lifeline: Option<fs::File>,
}

fn cstr(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).context("a network helper argument contains a NUL byte")
}

impl Helper {
    /// Starts `backend` (at `program`) on the namespaces of `pid` and waits
    /// until it has configured them. `dir` is the step's run dir (the
    /// readiness FIFO and the helper's log go there).
    pub(crate) fn start(
        backend: Backend,
        program: &Path,
        pid: Pid,
        rootless: bool,
        dir: &Path,
    ) -> Result<Helper> {
        let ready = dir.join("net-ready");
        let log = dir.join("net.log");
        nix::unistd::mkfifo(&ready, Mode::from_bits_truncate(0o600))
            .with_context(|| format!("creating {}", ready.display()))?;
        // Opened before the helper starts, non-blocking: the helper's open
        // for writing then never waits, and a read before it writes is empty.
        let mut ready_r = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&ready)
            .with_context(|| format!("opening {}", ready.display()))?;
        let mut argv = vec![cstr(program.as_os_str())?];
        for a in backend.args(pid, rootless, &ready) {
            argv.push(cstr(&a)?);
        }
        let exe = cstr(program.as_os_str())?;
        let log_c = cstr(log.as_os_str())?;
        let ready_c = cstr(ready.as_os_str())?;
        let (life_r, life_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .context("creating the network helper's pipe")?;
        let slirp = backend == Backend::Slirp4netns;
        // Built before fork: the watchdog only makes system calls.
        let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        // SAFETY: the child only runs `watchdog`, which ends in _exit.
        let watchdog = match unsafe { nix::unistd::fork() }.context("fork")? {
            ForkResult::Child => watchdog(life_r.as_raw_fd(), &exe, &ptrs, &log_c, &ready_c, slirp),
            ForkResult::Parent { child } => child,
        };
        drop(life_r);
        let helper = Helper {
            watchdog,
            lifeline: Some(fs::File::from(life_w)),
        };
        let failed = |why: &str| -> anyhow::Error {
            let out = fs::read_to_string(&log).unwrap_or_default();
            // Without syslog noise and slirp4netns' banner ("* Gateway: …").
            let out: Vec<&str> = out
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.contains("syslog") && !l.starts_with('*'))
                .collect();
            let tail = out[out.len().saturating_sub(5)..].join("; ");
            let hint = if backend == Backend::Pasta && !rootless {
                " (as root, Debian 12's pasta cannot join the step's namespace: apt-get install slirp4netns)"
            } else if rootless && tail.to_lowercase().contains("tun") {
                " (rootless, the helper opens /dev/net/tun, which must be readable and writable by your user: udev on Debian makes it mode 0666)"
            } else {
                ""
            };
            anyhow::anyhow!(
                "the step's private network: {} {why}{}{hint}; or opt into the host's network with --network host",
                program.display(),
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(": {tail}")
                }
            )
        };
        let pidfd = super::run::pidfd_open(watchdog)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut buf = [0u8; 64];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(failed(&format!(
                    "did not set up the network within {}s",
                    READY_TIMEOUT.as_secs()
                )));
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [
                PollFd::new(ready_r.as_fd(), PollFlags::POLLIN),
                PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e).context("waiting for the network helper"));
                }
            }
            let readable = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let (data, exited) = (readable(&fds[0]), readable(&fds[1]));
            if data {
                match ready_r.read(&mut buf) {
                    Ok(n) if n > 0 => return Ok(helper),
                    // The helper closed the FIFO without a word: it is
                    // exiting; its message is in the log.
                    Ok(_) => return Err(failed("exited before setting up the network")),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        return Err(
                            anyhow::Error::new(e).context("reading the network helper's readiness")
                        );
                    }
                }
            }
            if exited {
                return Err(failed("exited before setting up the network"));
            }
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Some(mut w) = self.lifeline.take() {
            // Any byte tells the watchdog to stop the helper (other forked
            // sandboxes may still hold copies of the write end).
            let _ = std::io::Write::write_all(&mut w, b"q");
        }
        loop {
            match waitpid(self.watchdog, None) {
                Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => break,
                Err(_) => {
                    let _ = kill(self.watchdog, Signal::SIGKILL);
                    break;
                }
            }
        }
    }
}

/// The watchdog (kiln's forked child): starts the helper, then kills it
/// when the lifeline becomes readable (a byte, or EOF when kiln is gone).
/// Never returns.
fn watchdog(
    lifeline: RawFd,
    exe: &CString,
    argv: &[*const libc::c_char],
    log: &CString,
    ready: &CString,
    slirp: bool,
) -> ! {
    // SAFETY: this process is a fork child: only its own fds and signal
    // state are touched, and it ends in _exit.
    unsafe {
        for sig in nix::sys::signal::Signal::iterator() {
            if !matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
                let _ = nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl);
            }
        }
        let _ = nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&nix::sys::signal::SigSet::empty()),
            None,
        );
        libc::setpgid(0, 0);
        // Everything kiln had open (other steps' pipes among them) is
        // closed, so that no pipe stays open because of this process.
        if lifeline > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (lifeline - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (lifeline + 1) as u32, u32::MAX, 0u32);
        let helper = libc::fork();
        if helper < 0 {
            libc::_exit(125);
        }
        if helper == 0 {
            libc::close(lifeline);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            let out = libc::open(
                log.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
                0o600,
            );
            if null < 0 || out < 0 {
                libc::_exit(125);
            }
            libc::dup2(null, 0);
            libc::dup2(out, 1);
            libc::dup2(out, 2);
            if slirp {
                // Does not block: kiln holds the read end open.
                let r = libc::open(ready.as_ptr(), libc::O_WRONLY);
                if r < 0 || libc::dup2(r, 3) < 0 {
                    libc::_exit(125);
                }
            }
            libc::execv(exe.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
        let pidfd = libc::syscall(libc::SYS_pidfd_open, helper, 0) as i32;
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: lifeline,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: pidfd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let n = libc::poll(fds.as_mut_ptr(), if pidfd >= 0 { 2 } else { 1 }, -1);
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            if fds[0].revents != 0 {
                break;
            }
            if pidfd >= 0 && fds[1].revents != 0 {
                // The helper exited on its own.
                let mut st = 0;
                libc::waitpid(helper, &mut st, 0);
                libc::_exit(1);
            }
        }
        libc::kill(helper, libc::SIGKILL);
        let mut st = 0;
        while libc::waitpid(helper, &mut st, 0) < 0
            && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {}
        libc::_exit(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_are_chosen_by_privilege_and_presence_and_a_missing_one_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path();
        let path = bin.as_os_str();
        let err = choose_in(false, Some(path), None).unwrap_err().to_string();
        assert!(err.contains("apt-get install passt"), "{err}");
        assert!(err.contains("--network host"), "{err}");
        let make = |name: &str| {
            use std::os::unix::fs::PermissionsExt;
            let p = bin.join(name);
            fs::write(&p, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        };
        make("pasta");
        assert_eq!(
            choose_in(false, Some(path), None).unwrap().0,
            Backend::Pasta
        );
        assert_eq!(choose_in(true, Some(path), None).unwrap().0, Backend::Pasta);
        make("slirp4netns");
        assert_eq!(choose_in(true, Some(path), None).unwrap().0, Backend::Pasta);
        assert_eq!(
            choose_in(false, Some(path), None).unwrap().0,
            Backend::Slirp4netns
        );
        assert_eq!(
            choose_in(false, Some(path), Some("pasta")).unwrap(),
            (Backend::Pasta, bin.join("pasta"))
        );
        assert!(choose_in(false, Some(path), Some("vde")).is_err());
        let empty = tempfile::tempdir().unwrap();
        let err = choose_in(false, Some(empty.path().as_os_str()), Some("slirp4netns"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("KILN_NETWORK_HELPER") && err.contains("apt-get install passt"));
    }

    #[test]
    fn helpers_never_forward_the_hosts_loopback() {
        let ready = Path::new("/run/x/net-ready");
        let pasta: Vec<String> = Backend::Pasta
            .args(Pid::from_raw(42), false, ready)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = pasta.join(" ");
        for want in [
            "-t none",
            "-u none",
            "-T none",
            "-U none",
            "--no-map-gw",
            "--netns /proc/42/ns/net",
            "--pid /run/x/net-ready",
        ] {
            assert!(joined.contains(want), "{want} missing in {joined}");
        }
        assert!(!joined.contains("--userns"));
        let rootless = Backend::Pasta.args(Pid::from_raw(42), true, ready);
        assert!(rootless.iter().any(|a| a == "/proc/42/ns/user"));
        let slirp: Vec<String> = Backend::Slirp4netns
            .args(Pid::from_raw(7), true, ready)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert!(slirp.contains(&"--disable-host-loopback".to_string()));
        assert!(slirp.contains(&"--userns-path=/proc/7/ns/user".to_string()));
        assert!(!slirp.contains(&"--enable-sandbox".to_string()));
        let as_root = Backend::Slirp4netns.args(Pid::from_raw(7), false, ready);
        assert!(as_root.iter().any(|a| a == "--enable-sandbox"));
        assert!(
            !as_root
                .iter()
                .any(|a| a.to_string_lossy().contains("userns"))
        );
        assert_eq!(&slirp[slirp.len() - 2..], ["/proc/7/ns/net", "tap0"]);
    }

    #[test]
    fn loopback_resolvers_are_replaced_by_reachable_ones() {
        let host = "search example\nnameserver 10.255.255.53\nnameserver 127.0.0.1\n";
        assert_eq!(
            resolv_conf(host, None, Backend::Pasta),
            "search example\nnameserver 10.255.255.53\n"
        );
        let resolved = "nameserver 127.0.0.53\noptions edns0\n";
        let upstream = "nameserver 192.0.2.1\nnameserver ::1\n";
        assert_eq!(
            resolv_conf(resolved, Some(upstream), Backend::Pasta),
            "nameserver 192.0.2.1\n"
        );
        assert_eq!(
            resolv_conf(resolved, None, Backend::Slirp4netns),
            "options edns0\nnameserver 10.0.2.3\n"
        );
        assert!(is_loopback("::1") && is_loopback("127.0.0.53") && !is_loopback("fe80::1%eth0"));
    }
}
