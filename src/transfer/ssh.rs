//! One multiplexed connection through the system `ssh`: a ControlMaster
//! started once (so the user's config, agent, known_hosts and jump hosts
//! apply as usual, and authentication happens once), and commands run over
//! its control socket in a private temp dir.
//!
//! Stalls: the master gets `ConnectTimeout` (which also bounds ssh's wait
//! for the server's banner, so a server that accepts and never speaks
//! fails) and `ServerAliveInterval`/`ServerAliveCountMax` (so a connection
//! that goes silent later is closed, failing the commands running over
//! it), both from [`SshOptions::timeout`] (`--net-timeout` /
//! `KILN_NET_TIMEOUT`, 30 s by default). They override the same options of
//! the user's ssh config.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use super::script;
use super::target::SshTarget;
use crate::Result;

/// How to reach the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshOptions {
    /// `ssh -F FILE`.
    pub config: Option<PathBuf>,
    /// The ssh program (default: `ssh` on PATH).
    pub program: Option<PathBuf>,
    /// How long the server may stay silent (default: `KILN_NET_TIMEOUT` or 30 s).
    pub timeout: Option<Duration>,
}

impl SshOptions {
    fn stall_timeout(&self) -> Duration {
        self.timeout.unwrap_or_else(|| {
            crate::http::net_timeout_from_env().unwrap_or(crate::http::DEFAULT_NET_TIMEOUT)
        })
    }
}

/// An open master connection; closed (and its socket dir removed) on drop.
pub struct Connection {
    target: SshTarget,
    opts: SshOptions,
    master: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

/// What a remote command printed.
pub struct Reply {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Reply {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl Connection {
    /// Starts the master (`ssh -M -N`, our child): returns once authenticated.
    pub fn open(target: &SshTarget, opts: &SshOptions) -> Result<Connection> {
        if let Some(cfg) = &opts.config
            && !cfg.exists()
        {
            bail!(
                "ssh config {} does not exist: fix -F / KILN_SSH_CONFIG",
                cfg.display()
            );
        }
        // Unix socket paths are short (~104 bytes): prefer /tmp over a long
        // TMPDIR. tempfile creates the dir 0700, so the socket is private.
        let base = if std::path::Path::new("/tmp").is_dir() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("kiln-ssh-")
            .tempdir_in(&base)
            .with_context(|| {
                format!(
                    "creating a private dir for the ssh socket in {}",
                    base.display()
                )
            })?;
        let mut conn = Connection {
            target: target.clone(),
            opts: opts.clone(),
            master: None,
            dir,
        };
        let log = conn.dir.path().join("master.log");
        let log_file = std::fs::File::create(&log)?;
        // The master runs in the foreground as our child, and dies with us
        // (PR_SET_PDEATHSIG): a killed kiln leaves no ssh behind. Ready is
        // when its control socket appears; failure is the master exiting.
        let mut cmd = conn.ssh();
        // ssh takes whole seconds; keep-alives every third of the timeout,
        // three unanswered ones close the connection.
        let timeout = opts.stall_timeout();
        let connect = timeout.as_secs_f64().ceil().max(1.0) as u64;
        let alive = (timeout.as_secs_f64() / 3.0).ceil().max(1.0) as u64;
        cmd.args([
            "-M",
            "-N",
            "-o",
            "ControlMaster=yes",
            "-o",
            "ControlPersist=no",
        ])
        .arg("-o")
        .arg(format!("ConnectTimeout={connect}"))
        .arg("-o")
        .arg(format!("ServerAliveInterval={alive}"))
        .args(["-o", "ServerAliveCountMax=3"])
        .arg("--")
        .arg(&target.host)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let socket = conn.dir.path().join("c");
        let mut master = cmd.spawn().with_context(|| {
            format!(
                "running {}: is OpenSSH's client installed?",
                conn.program().to_string_lossy()
            )
        })?;
        loop {
            if let Some(status) = master.try_wait()? {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let text = if text.trim().is_empty() {
                    format!("ssh exited with {status}")
                } else {
                    text
                };
                return Err(connect_error(target, text.trim()));
            }
            // The master creates its socket once authenticated; checking
            // for the file costs nothing, unlike spawning `ssh -O check`.
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        conn.master = Some(master);
        Ok(conn)
    }

    fn program(&self) -> OsString {
        self.opts
            .program
            .clone()
            .map(OsString::from)
            .unwrap_or_else(|| "ssh".into())
    }

    /// `ssh` with the config, port, user and control path (no host yet).
    fn ssh(&self) -> Command {
        let mut c = Command::new(self.program());
        if let Some(cfg) = &self.opts.config {
            c.arg("-F").arg(cfg);
        }
        c.arg("-o").arg(format!(
            "ControlPath={}",
            self.dir.path().join("c").display()
        ));
        if let Some(p) = self.target.port {
            c.arg("-p").arg(p.to_string());
        }
        if let Some(u) = &self.target.user {
            c.arg("-l").arg(u);
        }
        c
    }

    /// Runs `script` with `args` on the server over the master, feeding
    /// `stdin` (if any) to it.
    pub fn run(&self, script: &str, args: &[&str], stdin: Option<&mut dyn Read>) -> Result<Reply> {
        let mut cmd = self.ssh();
        cmd.args(["-o", "ControlMaster=no", "-T", "--"])
            .arg(&self.target.host)
            .arg(script::command_line(script, args))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("running ssh")?;
        let mut out = child.stdout.take().context("ssh stdout")?;
        let mut err = child.stderr.take().context("ssh stderr")?;
        // Drain both pipes while we write stdin, so neither side blocks.
        let out_t = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = out.read_to_end(&mut b);
            b
        });
        let err_t = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let mut write_err = None;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().context("ssh stdin")?;
            if let Err(e) = std::io::copy(input, &mut pipe).and_then(|_| pipe.flush()) {
                write_err = Some(e);
            }
            drop(pipe);
        }
        let status = child.wait().context("waiting for ssh")?;
        let stdout = out_t.join().unwrap_or_default();
        let stderr = err_t.join().unwrap_or_default();
        if let Some(e) = write_err
            && status.success()
        {
            return Err(e).context("sending data over ssh");
        }
        let code = status.code();
        if code == Some(255) {
            return Err(connect_error(&self.target, stderr.trim()));
        }
        Ok(Reply {
            code,
            stdout,
            stderr,
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SIGTERM makes the master close the connection and remove its
        // socket, like `ssh -O exit` but without spawning another ssh.
        if let Some(mut m) = self.master.take() {
            if let Ok(pid) = i32::try_from(m.id()) {
                // SAFETY: signalling our own child, which we have not reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let _ = m.wait();
        }
    }
}

/// ssh's own failure (exit 255), with advice for the common causes.
fn connect_error(target: &SshTarget, stderr: &str) -> anyhow::Error {
    let hint = if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || stderr.contains("Host key verification failed")
    {
        "the server's host key is not the one in known_hosts (or is unknown): check that you reach the right server, then update known_hosts (ssh-keygen -R HOST, then connect once with ssh)"
    } else if stderr.contains("Permission denied") {
        "authentication failed: check the user, your keys or agent (ssh-add -l) and the server's authorized_keys"
    } else if stderr.contains("Could not resolve hostname") {
        "the host name does not resolve: check the URL or the Host entries of your ssh config"
    } else if stderr.contains("banner exchange") {
        "the server accepted the connection but did not speak SSH within the timeout: check that sshd (not another service) listens on that port, or raise --net-timeout / KILN_NET_TIMEOUT"
    } else if stderr.contains("Connection refused")
        || stderr.contains("timed out")
        || stderr.contains("No route")
    {
        "the server is unreachable on that port: check the host, the port and that sshd runs"
    } else {
        "run `ssh` with the same host to see why"
    };
    let detail = if stderr.is_empty() {
        "ssh exited with code 255".to_string()
    } else {
        stderr
            .lines()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" / ")
    };
    anyhow::anyhow!("cannot connect to {target} with ssh: {detail}: {hint}")
}
