//! A real OpenSSH server (Debian's openssh-server) on 127.0.0.1 for the
//! transfer tests: a free port, a temp host key, a temp sshd_config, keys
//! generated here, and a fresh user account as "the server". The client
//! side gets a known_hosts file and an ssh config (for `-F`) with aliases:
//!
//! | alias | what |
//! |---|---|
//! | `server` | the test user, strict host key checking |
//! | `root` | root on the same sshd (engines that need root: podman here) |
//! | `nosum` | the test user with a PATH that lacks `sha256sum` |
//! | `nohead` | the test user with a PATH without `head` (one command per blob) |
//! | `rootnoskopeo` | root with a PATH that has everything but `skopeo` |
//! | `badkey` | the test user, but known_hosts holds another host key |
//!
//! Stopped (sshd killed, user removed) on drop. Needs root.

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The server user's name and home.
    pub user: String,
    pub home: PathBuf,
    /// The client ssh config (`ssh -F`).
    pub config: PathBuf,
    child: Child,
}

/// Why the sshd tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (useradd, sshd); CI runs as root".into());
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        return Some("/usr/sbin/sshd missing: run ./scripts/install-test-deps".into());
    }
    None
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn keygen(path: &Path) -> String {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test", "-f"])
        .arg(path));
    let public = fs::read_to_string(path.with_extension("pub")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    public.trim().to_string()
}

/// `TYPE KEY` of a public key line (without the comment).
fn key_part(public: &str) -> String {
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Sshd {
    pub fn start() -> Sshd {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        // sshd reads authorized_keys as the user: everything world-readable.
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        let host_key = keygen(&d.join("host_key"));
        let other_host_key = keygen(&d.join("other_host_key"));
        let client_key = keygen(&d.join("id"));
        let nosum_key = keygen(&d.join("id_nosum"));
        let nohead_key = keygen(&d.join("id_nohead"));
        let noskopeo_key = keygen(&d.join("id_noskopeo"));

        let user = format!(
            "kilnt{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let home = d.join("home");
        run(Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", "-d"])
            .arg(&home)
            .arg(&user));
        // useradd leaves the password locked ("!"), and sshd without PAM
        // refuses locked accounts even for keys: "*" is "no password".
        run(Command::new("usermod").args(["-p", "*"]).arg(&user));

        // A PATH with the shell and coreutils the protocol needs, minus sha256sum.
        // And one without head (no GNU head: kiln sends blob by blob).
        let tools = ["sh", "mv", "mkdir", "cat", "ls", "rm"];
        let nosum_bin = d.join("nosum-bin");
        let nohead_bin = d.join("nohead-bin");
        for (bin, extra) in [(&nosum_bin, None), (&nohead_bin, Some("sha256sum"))] {
            fs::create_dir(bin).unwrap();
            for tool in tools.iter().copied().chain(extra) {
                let found = run(Command::new("sh").args(["-c", &format!("command -v {tool}")]));
                let real = String::from_utf8(found.stdout).unwrap();
                std::os::unix::fs::symlink(real.trim(), bin.join(tool)).unwrap();
            }
        }
        // Every program of the system's PATH but skopeo (a server whose
        // engine has no skopeo beside it).
        let noskopeo_bin = d.join("noskopeo-bin");
        fs::create_dir(&noskopeo_bin).unwrap();
        for dir in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin"] {
            for e in fs::read_dir(dir).into_iter().flatten().flatten() {
                let link = noskopeo_bin.join(e.file_name());
                if e.file_name() != "skopeo" && !link.exists() {
                    let _ = std::os::unix::fs::symlink(e.path(), link);
                }
            }
        }
        fs::write(
            d.join("authorized_keys"),
            format!(
                "{client_key}\nenvironment=\"PATH={}\" {nosum_key}\nenvironment=\"PATH={}\" {nohead_key}\nenvironment=\"PATH={}\" {noskopeo_key}\n",
                nosum_bin.display(),
                nohead_bin.display(),
                noskopeo_bin.display()
            ),
        )
        .unwrap();
        fs::set_permissions(d.join("authorized_keys"), fs::Permissions::from_mode(0o644)).unwrap();

        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let sshd_config = d.join("sshd_config");
        fs::write(
            &sshd_config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
                 PidFile none\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 PermitUserEnvironment yes\nAllowUsers {user} root\nLogLevel ERROR\n",
                hk = d.join("host_key").display(),
                ak = d.join("authorized_keys").display(),
            ),
        )
        .unwrap();
        fs::create_dir_all("/run/sshd").unwrap();
        let log = fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&sshd_config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting sshd");
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on {port}: {}",
                fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }

        let known = format!("[127.0.0.1]:{port} {}\n", key_part(&host_key));
        fs::write(d.join("known_hosts"), known).unwrap();
        let wrong = format!("[127.0.0.1]:{port} {}\n", key_part(&other_host_key));
        fs::write(d.join("bad_known_hosts"), wrong).unwrap();
        let block = |alias: &str, login: &str, key: &str, known: &str| {
            format!(
                "Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User {login}\n  IdentityFile {}\n  UserKnownHostsFile {}\n",
                d.join(key).display(),
                d.join(known).display()
            )
        };
        let config = d.join("ssh_config");
        let mut text = String::new();
        text += &block("server", &user, "id", "known_hosts");
        text += &block("root", "root", "id", "known_hosts");
        text += &block("nosum", &user, "id_nosum", "known_hosts");
        text += &block("nohead", &user, "id_nohead", "known_hosts");
        text += &block("rootnoskopeo", "root", "id_noskopeo", "known_hosts");
        text += &block("badkey", &user, "id", "bad_known_hosts");
        text += "Host *\n  IdentitiesOnly yes\n  IdentityAgent none\n  BatchMode yes\n  StrictHostKeyChecking yes\n  GlobalKnownHostsFile /dev/null\n  LogLevel ERROR\n";
        fs::File::create(&config)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        Sshd {
            dir,
            port,
            user,
            home,
            config,
            child,
        }
    }

    /// `ssh -F config ALIAS -- COMMAND` (a shell line run on the server).
    pub fn ssh(&self, alias: &str, command: &str) -> Output {
        Command::new("ssh")
            .arg("-F")
            .arg(&self.config)
            .args([alias, "--", command])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// [`Sshd::ssh`], failing the test unless it succeeds; returns stdout.
    pub fn ssh_ok(&self, alias: &str, command: &str) -> String {
        let out = self.ssh(alias, command);
        assert!(
            out.status.success(),
            "ssh {alias} {command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("userdel").arg("-f").arg(&self.user).output();
    }
}
