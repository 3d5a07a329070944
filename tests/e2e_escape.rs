//! Escape attempts from a RUN step, each of which must fail (issue 23):
//! host sysctls through /proc/sys, host kernel state in /proc, the user's
//! terminal (/dev/tty, TIOCSTI), a host disk through a device node the step
//! makes, image trees reachable by other users through kiln's state dirs,
//! and `RUN --security=insecure` without the entitlement. Needs root,
//! mmdebstrap and perl-base in the image (see tests/support/debian.rs).
#![cfg(feature = "e2e")]

mod support;

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln::sandbox::{
    BindMount, CacheMount, IdMap, Mount, RunSpec, Sandbox, StepCommand, TmpfsMount,
};
use support::debian;
use support::kiln::Kiln;

/// A sandbox with its own run and cache-mount dirs.
fn sandbox(dir: &Path) -> Sandbox {
    Sandbox {
        runs: dir.join("runs"),
        cache_mounts: dir.join("cache-mounts"),
        idmap: IdMap::Host,
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kiln-e2e-escape-")
        .tempdir_in("/var/tmp")
        .unwrap()
}

/// Runs a step on the Debian rootfs; returns (exit code, output lines).
fn run_sh(sb: &Sandbox, spec: RunSpec) -> (i32, Vec<String>) {
    support::sandbox::run(sb, &spec)
}

fn sh(script: &str) -> RunSpec {
    RunSpec::new(
        vec![debian::base_rootfs()],
        StepCommand::Shell(script.into()),
    )
}

const BURST: &str = "/proc/sys/kernel/printk_ratelimit_burst";

/// Puts a sysctl back if a failing run changed it.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = fs::write(BURST, &self.0);
    }
}

#[test]
fn proc_sys_is_read_only_and_host_kernel_state_is_masked() {
    let tmp = tempdir();
    let sb = sandbox(tmp.path());
    let before = fs::read_to_string(BURST).unwrap();
    let _restore = Restore(before.clone());
    let new: u32 = before.trim().parse::<u32>().unwrap() + 7;
    // The step prints only what it managed to do, then a last line.
    let script = format!(
        r#"
{{ echo {new} > {BURST}; }} 2>/dev/null && echo "WROTE {BURST}"
for f in /proc/sys/kernel/core_pattern /proc/sysrq-trigger /proc/sys/vm/drop_caches; do
  perl -e 'use Fcntl; sysopen(F, $ARGV[0], O_WRONLY) and print "OPENED $ARGV[0] for writing\n"' $f
done
for f in /proc/keys /proc/kcore /proc/timer_list /proc/sched_debug; do
  n=$(head -c 4096 $f 2>/dev/null | wc -c)
  [ "$n" = 0 ] || echo "READ $n bytes of $f"
done
for d in /proc/acpi /proc/scsi; do
  [ -z "$(ls -A $d 2>/dev/null)" ] || echo "LISTED $d"
done
grep -E -q 'upperdir=/|/sandbox/run-' /proc/self/mountinfo && echo "HOST PATH in mountinfo"
echo END
"#
    );
    let (code, lines) = run_sh(&sb, sh(&script));
    assert_eq!((code, lines), (0, vec!["END".to_string()]));
    assert_eq!(
        fs::read_to_string(BURST).unwrap(),
        before,
        "host sysctl changed"
    );
    // The host's own /proc still shows what the step could not see.
    assert!(!fs::read("/proc/keys").unwrap().is_empty());
    assert!(!fs::read("/proc/timer_list").unwrap().is_empty());
    // Masking keeps /proc usable for what builds read.
    let (code, lines) = run_sh(
        &sb,
        sh(
            "cat /proc/sys/kernel/hostname; grep -c ^processor /proc/cpuinfo >/dev/null && echo cpuinfo",
        ),
    );
    assert_eq!((code, lines), (0, vec!["kiln".into(), "cpuinfo".into()]));
}

/// A block device the host can read: a loop device over a file starting
/// with [`DISK_MARKER`], standing for the host's disk (the machine this
/// runs on may forbid opening its real disk even to root). Detached on drop.
struct LoopDisk {
    dev: PathBuf,
}

const DISK_MARKER: &[u8] = b"KILN-HOST-DISK-CONTENT";

impl LoopDisk {
    fn new(dir: &Path) -> LoopDisk {
        let img = dir.join("disk.img");
        let mut data = DISK_MARKER.to_vec();
        data.resize(1 << 20, 0);
        fs::write(&img, data).unwrap();
        let dev = support::kiln::run("losetup", &["-f", "--show", img.to_str().unwrap()]);
        LoopDisk {
            dev: PathBuf::from(dev.trim()),
        }
    }

    fn major_minor(&self) -> (u64, u64) {
        let rdev = fs::metadata(&self.dev).unwrap().rdev();
        (libc::major(rdev) as u64, libc::minor(rdev) as u64)
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

#[test]
fn a_device_node_the_step_makes_cannot_be_opened() {
    let tmp = tempdir();
    let sb = sandbox(tmp.path());
    let disk = LoopDisk::new(tmp.path());
    let (major, minor) = disk.major_minor();
    // The host reads the disk through such a node: the step's failure
    // below is the sandbox's doing.
    let node = tmp.path().join("disk");
    support::kiln::run(
        "mknod",
        &[
            node.to_str().unwrap(),
            "b",
            &major.to_string(),
            &minor.to_string(),
        ],
    );
    let mut first = [0u8; DISK_MARKER.len()];
    std::io::Read::read_exact(&mut fs::File::open(&node).unwrap(), &mut first).unwrap();
    assert_eq!(first, DISK_MARKER);
    fs::remove_file(&node).unwrap();

    let rw = tmp.path().join("rw");
    fs::create_dir(&rw).unwrap();
    let mut spec = sh(&format!(
        r#"
for d in /tmp /dev /dev/shm /cache /scratch /rw; do
  mknod $d/disk b {major} {minor} || {{ echo "mknod failed in $d"; continue; }}
  if head -c 64 $d/disk 2>/dev/null | grep -q KILN-HOST-DISK; then echo "READ the disk in $d"
  else echo "$d: made, cannot open"; fi
done
"#
    ));
    spec.mounts = vec![
        Mount::Cache(CacheMount::new("escape", "/cache")),
        Mount::Tmpfs(TmpfsMount {
            target: "/scratch".into(),
            size: None,
        }),
        Mount::Bind(BindMount {
            source: rw.clone(),
            target: "/rw".into(),
            readwrite: true,
        }),
    ];
    let (code, lines) = run_sh(&sb, spec);
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(
        lines,
        ["/tmp", "/dev", "/dev/shm", "/cache", "/scratch", "/rw"]
            .map(|d| format!("{d}: made, cannot open"))
    );
}

/// A pty whose slave is the controlling terminal of what runs in it.
struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

fn pty() -> Pty {
    let p = nix::pty::openpty(None, None).unwrap();
    Pty {
        master: p.master,
        slave: p.slave,
    }
}

impl Pty {
    /// Runs `cmd` in a new session with the slave as its controlling
    /// terminal and stdin/stdout/stderr, as a shell in a terminal would.
    /// Returns everything the master read (all the terminal showed).
    fn run(&self, cmd: &mut Command) -> (std::process::ExitStatus, String) {
        let slave = self.slave.as_raw_fd();
        cmd.stdin(Stdio::from(self.slave.try_clone().unwrap()))
            .stdout(Stdio::from(self.slave.try_clone().unwrap()))
            .stderr(Stdio::from(self.slave.try_clone().unwrap()));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 || libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let mut shown = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut buf = [0u8; 4096];
        let status = loop {
            let exited = child.try_wait().unwrap();
            // Drain what is there (non-blocking).
            loop {
                let mut fds = [libc::pollfd {
                    fd: self.master.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }];
                // SAFETY: poll/read on fds we own into our buffer.
                let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 50) };
                if ready <= 0 {
                    break;
                }
                let n = unsafe {
                    libc::read(self.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                };
                if n <= 0 {
                    break;
                }
                shown.extend_from_slice(&buf[..n as usize]);
            }
            if let Some(s) = exited {
                break s;
            }
            assert!(Instant::now() < deadline, "timed out: {shown:?}");
        };
        (status, String::from_utf8_lossy(&shown).into_owned())
    }

    /// Bytes waiting in the terminal's input queue (typed, or pushed by
    /// TIOCSTI) that nobody read.
    fn pending_input(&self) -> i32 {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        let r = unsafe { libc::ioctl(self.slave.as_raw_fd(), libc::FIONREAD, &mut n) };
        assert_eq!(r, 0);
        n
    }
}

/// Perl run by the step: tries the terminal every way it has and reports
/// what worked on stdout (`kiln run`) or in the log (`kiln build`).
/// TIOCSTI = 0x5412, TIOCSCTTY = 0x540E (x86-64 and arm64).
const TTY_ATTACK: &str = r#"
use POSIX ();
sub sti { my ($fh, $s) = @_; my $ok = 1; for my $c (split //, $s) { ioctl($fh, 0x5412, $c) or $ok = 0 } $ok }
if (open(my $t, "+<", "/dev/tty")) {
  syswrite($t, "WRITTEN-TO-DEV-TTY\n");
  print "STI via /dev/tty\n" if sti($t, "echo INJECTED-1\n");
  print "OPENED /dev/tty\n";
} else { print "dev-tty: $!\n" }
print "STI via stdin\n" if -t STDIN && sti(*STDIN, "echo INJECTED-2\n");
if (fork() == 0) {
  POSIX::setsid();
  print "STOLE the terminal\n" if -t STDIN && ioctl(STDIN, 0x540E, 0) && sti(*STDIN, "echo INJECTED-3\n");
  exit 0;
}
wait;
print "ATTACK-DONE\n";
"#;

#[test]
fn a_step_cannot_type_into_or_write_to_the_users_terminal() {
    // `kiln build`: the step's output goes to the log; it must not reach
    // the terminal by itself.
    let k = Kiln::new();
    support::base::local_debian(&k.data());
    let ctx = k.path("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(ctx.join("attack.pl"), TTY_ATTACK).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM debian:bookworm\nCOPY attack.pl /\nRUN perl /attack.pl\n",
    )
    .unwrap();
    let t = pty();
    let mut cmd = k.cmd();
    cmd.args(["--progress", "plain", "build", "--no-cache", "--debug"])
        .arg(&ctx);
    let (status, shown) = t.run(&mut cmd);
    assert!(status.success(), "{shown}");
    for bad in [
        "WRITTEN-TO-DEV-TTY",
        "INJECTED",
        "STI via",
        "STOLE",
        "OPENED",
    ] {
        assert!(!shown.contains(bad), "{bad} on the terminal:\n{shown}");
    }
    assert_eq!(t.pending_input(), 0, "input was pushed into the terminal");
    // kiln printed the step's report (through its log, --debug shows it all).
    assert!(
        shown.contains("dev-tty: No such device or address"),
        "{shown}"
    );
    assert!(shown.contains("ATTACK-DONE"), "{shown}");

    // `kiln run` shares kiln's terminal as stdin/stdout by design, but
    // the step must not be able to push input into it.
    let t = pty();
    let mut cmd = k.cmd();
    cmd.args(["--progress", "quiet", "run", "--rootfs"])
        .arg(debian::base_rootfs())
        .args(["perl", "-e", TTY_ATTACK]);
    let (status, shown) = t.run(&mut cmd);
    assert!(status.success(), "{shown}");
    let lines: Vec<&str> = shown.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert_eq!(
        lines,
        ["dev-tty: No such device or address", "ATTACK-DONE"],
        "{shown}"
    );
    assert_eq!(t.pending_input(), 0, "input was pushed into the terminal");
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn state_dirs_holding_image_trees_are_private() {
    // An older kiln's cache: world-readable dirs are tightened too.
    let k = Kiln::new();
    support::base::local_debian(&k.data());
    let open = k.cache().join("snapshots");
    fs::create_dir_all(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
    let ctx = k.path("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM debian:bookworm AS a\nRUN echo a > /a\n\
         FROM debian:bookworm\n\
         RUN --mount=type=cache,target=/c --mount=type=bind,from=a,source=/a,target=/m,rw cat /m > /got\n",
    )
    .unwrap();
    k.ok(&["--progress", "quiet", "build", ctx.to_str().unwrap()]);
    let cache = k.cache();
    for d in ["snapshots", "sandbox", "cache-mounts", "mounts"] {
        assert_eq!(mode(&cache.join(d)), 0o700, "{d}");
    }
    // A setuid-root binary of the image is out of other users' reach.
    let su: Vec<PathBuf> = fs::read_dir(cache.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("usr/bin/su"))
        .filter(|p| p.exists())
        .collect();
    assert!(!su.is_empty(), "no snapshot holds usr/bin/su");
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", "test", "-x"])
        .arg(&su[0])
        .status()
        .unwrap();
    assert!(!out.success(), "nobody reaches {}", su[0].display());
}

#[test]
fn run_security_insecure_needs_the_entitlement() {
    let k = Kiln::new();
    support::base::local_debian(&k.data());
    let ctx = k.path("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM debian:bookworm\nRUN echo safe\nRUN --security=insecure grep CapEff /proc/self/status > /caps\n",
    )
    .unwrap();
    let out = k.kiln(&["--progress", "plain", "build", ctx.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(
            "Dockerfile:3: RUN --security=insecure needs the security.insecure entitlement"
        ) && err.contains("--allow security.insecure"),
        "{err}"
    );
    // Refused before any step ran.
    assert!(!err.contains("RUN echo safe"), "{err}");
    // Granted: the step runs privileged (every capability).
    let out = k.kiln(&[
        "--progress",
        "quiet",
        "build",
        "--allow",
        "security.insecure",
        "-t",
        "insecure:1",
        ctx.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = k.stdout(&["--progress", "quiet", "run", "insecure:1", "cat", "/caps"]);
    let hex = got.split_whitespace().nth(1).unwrap();
    let caps = u64::from_str_radix(hex, 16).unwrap();
    assert_ne!(caps & (1 << 21), 0, "no CAP_SYS_ADMIN: {got}");
}
