//! Registry credentials, from the files docker and podman keep them in.
//!
//! Lookup order (first file with an entry for the registry wins):
//! `$REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json` (else
//! `~/.docker/config.json`), `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`. In each file, `credHelpers[registry]`
//! then `credsStore` name a helper run as `docker-credential-NAME get`;
//! otherwise `auths[registry]` holds `auth` (base64 `user:password`),
//! `username`/`password`, or an `identitytoken`.
//!
//! `kiln login`/`kiln logout` write `$REGISTRY_AUTH_FILE` if set, else the
//! docker config, in docker's format (other keys are kept as they were), or
//! through the file's credential helper when it names one.
//!
//! Secrets are kept in [`Credentials`], whose `Debug` hides them; no error
//! built here contains one.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};

use crate::Result;
use crate::oci::reference::{DOCKER_HUB, host_without_port};

/// The key docker uses for Docker Hub in `auths`.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A user name and a secret (password, token), or an identity token.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (docker's `identitytoken`), traded at the
    /// token endpoint.
    IdentityToken(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => {
                write!(f, "Basic {{ username: {username:?}, password: <hidden> }}")
            }
            Credentials::IdentityToken(_) => write!(f, "IdentityToken(<hidden>)"),
        }
    }
}

impl Credentials {
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials::Basic {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The `Authorization: Basic …` value, if these are basic credentials.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                B64.encode(format!("{username}:{password}"))
            )),
            Credentials::IdentityToken(_) => None,
        }
    }
}

/// Where credentials come from. The default reads the docker/podman files
/// on each lookup; tests and library users can pin credentials instead.
#[derive(Debug, Clone, Default)]
pub enum CredentialSource {
    #[default]
    Files,
    /// These credentials for every registry (or none: anonymous).
    Fixed(Option<Credentials>),
}

impl CredentialSource {
    /// Credentials for a registry (`docker.io`, `host:port`), if any.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>> {
        match self {
            CredentialSource::Fixed(c) => Ok(c.clone()),
            CredentialSource::Files => lookup_in_files(registry),
        }
    }
}

/// The files searched for credentials, in order (existing or not).
pub fn auth_files() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = env("HOME");
    let mut files = Vec::new();
    if let Some(f) = env("REGISTRY_AUTH_FILE") {
        files.push(f);
    }
    files.push(docker_config_file());
    if let Some(d) = env("XDG_RUNTIME_DIR") {
        files.push(d.join("containers/auth.json"));
    }
    match env("XDG_CONFIG_HOME") {
        Some(d) => files.push(d.join("containers/auth.json")),
        None => {
            if let Some(h) = &home {
                files.push(h.join(".config/containers/auth.json"));
            }
        }
    }
    files
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_file() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("config.json"),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"))
            .join(".docker/config.json"),
    }
}

/// The file `kiln login` writes.
pub fn login_file() -> PathBuf {
    match std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
        Some(f) => PathBuf::from(f),
        None => docker_config_file(),
    }
}

fn lookup_in_files(registry: &str) -> Result<Option<Credentials>> {
    for file in auth_files() {
        if let Some(c) = lookup_in_file(&file, registry)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

fn read_config(file: &Path) -> Result<Option<Map<String, Value>>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("reading credentials file {}", file.display()));
        }
    };
    if text.trim().is_empty() {
        return Ok(Some(Map::new()));
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => bail!(
            "credentials file {} is not a JSON object: fix or remove it",
            file.display()
        ),
        Err(e) => bail!(
            "credentials file {} is not valid JSON (line {}, column {}): fix or remove it",
            file.display(),
            e.line(),
            e.column()
        ),
    }
}

/// The registry an `auths` key names: `https://index.docker.io/v1/` →
/// `docker.io`, `https://host:5000/v2/` → `host:5000`.
pub fn normalize_key(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => DOCKER_HUB.to_string(),
        _ => k.to_string(),
    }
}

/// The server URL docker uses for a registry (with helpers and in `auths`).
pub fn server_key(registry: &str) -> String {
    if registry == DOCKER_HUB {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    }
}

fn lookup_in_file(file: &Path, registry: &str) -> Result<Option<Credentials>> {
    let Some(cfg) = read_config(file)? else {
        return Ok(None);
    };
    let helper = cfg
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| normalize_key(k) == registry)
                .and_then(|(_, v)| v.as_str())
        })
        .or_else(|| cfg.get("credsStore").and_then(Value::as_str))
        .filter(|h| !h.is_empty());
    if let Some(helper) = helper {
        return helper_get(helper, registry);
    }
    let Some(auths) = cfg.get("auths").and_then(Value::as_object) else {
        return Ok(None);
    };
    // An exact key first, then any key naming the same registry.
    let entry = auths
        .get(registry)
        .or_else(|| {
            auths
                .iter()
                .find(|(k, _)| normalize_key(k) == registry)
                .map(|(_, v)| v)
        })
        // Podman also accepts `host` entries for `host:port`-less lookups.
        .or_else(|| auths.get(host_without_port(registry)));
    let Some(entry) = entry.and_then(Value::as_object) else {
        return Ok(None);
    };
    let where_ = || format!("{}: auths[{registry:?}]", file.display());
    if let Some(tok) = entry
        .get("identitytoken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(Credentials::IdentityToken(tok.to_string())));
    }
    if let Some(auth) = entry
        .get("auth")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
    {
        let raw = B64
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .with_context(|| {
                format!(
                    "{}.auth is not base64 of user:password: run `kiln login {registry}` again",
                    where_()
                )
            })?;
        let Some((u, p)) = raw.split_once(':') else {
            bail!(
                "{}.auth does not decode to user:password: run `kiln login {registry}` again",
                where_()
            );
        };
        return Ok(Some(Credentials::basic(u, p)));
    }
    match (
        entry.get("username").and_then(Value::as_str),
        entry.get("password").and_then(Value::as_str),
    ) {
        (Some(u), Some(p)) => Ok(Some(Credentials::basic(u, p))),
        _ => Ok(None),
    }
}

fn helper_program(helper: &str) -> String {
    format!("docker-credential-{helper}")
}

fn run_helper(helper: &str, action: &str, input: &[u8]) -> Result<std::process::Output> {
    let prog = helper_program(helper);
    let mut child = Command::new(&prog)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("running credential helper `{prog} {action}`: is {prog} installed and on PATH?")
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is reported by its status.
        let _ = stdin.write_all(input);
    }
    child
        .wait_with_output()
        .with_context(|| format!("waiting for credential helper `{prog} {action}`"))
}

/// `docker-credential-NAME get`: `None` when the helper has nothing stored.
fn helper_get(helper: &str, registry: &str) -> Result<Option<Credentials>> {
    let out = run_helper(helper, "get", server_key(registry).as_bytes())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // The protocol's "nothing stored" answer.
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        bail!(
            "credential helper {} failed for {registry} ({}): check it with `{} get`",
            helper_program(helper),
            out.status,
            helper_program(helper)
        );
    }
    let v: Value = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "credential helper {} answered something that is not JSON for {registry}",
            helper_program(helper)
        )
    })?;
    let user = v.get("Username").and_then(Value::as_str).unwrap_or("");
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or("");
    if secret.is_empty() {
        return Ok(None);
    }
    if user == "<token>" {
        return Ok(Some(Credentials::IdentityToken(secret.to_string())));
    }
    Ok(Some(Credentials::basic(user, secret)))
}

/// Stores credentials for a registry the way `docker login` does; returns
/// the file written (or the helper used, as `docker-credential-NAME`).
pub fn store(registry: &str, creds: &Credentials) -> Result<String> {
    let file = login_file();
    let mut cfg = read_config(&file)?.unwrap_or_default();
    let helper = cfg
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|h| h.get(registry).and_then(Value::as_str))
        .or_else(|| cfg.get("credsStore").and_then(Value::as_str))
        .filter(|h| !h.is_empty())
        .map(str::to_string);
    let (user, secret) = match creds {
        Credentials::Basic { username, password } => (username.as_str(), password.as_str()),
        Credentials::IdentityToken(t) => ("<token>", t.as_str()),
    };
    if let Some(helper) = helper {
        let input = serde_json::json!({"ServerURL": server_key(registry), "Username": user, "Secret": secret});
        let out = run_helper(&helper, "store", input.to_string().as_bytes())?;
        if !out.status.success() {
            bail!(
                "credential helper {} could not store credentials for {registry} ({})",
                helper_program(&helper),
                out.status
            );
        }
        // docker records the registry in `auths` with an empty entry.
        let auths = auths_mut(&mut cfg, &file)?;
        auths.insert(server_key(registry), Value::Object(Map::new()));
        write_config(&file, &cfg)?;
        return Ok(helper_program(&helper));
    }
    let auths = auths_mut(&mut cfg, &file)?;
    let entry = match creds {
        Credentials::Basic { username, password } => {
            serde_json::json!({"auth": B64.encode(format!("{username}:{password}"))})
        }
        Credentials::IdentityToken(t) => serde_json::json!({"identitytoken": t}),
    };
    auths.insert(server_key(registry), entry);
    write_config(&file, &cfg)?;
    Ok(file.display().to_string())
}

/// Removes stored credentials; false when there were none.
pub fn erase(registry: &str) -> Result<bool> {
    let file = login_file();
    let Some(mut cfg) = read_config(&file)? else {
        return Ok(false);
    };
    let helper = cfg
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|h| h.get(registry).and_then(Value::as_str))
        .or_else(|| cfg.get("credsStore").and_then(Value::as_str))
        .filter(|h| !h.is_empty())
        .map(str::to_string);
    let mut found = false;
    if let Some(helper) = helper {
        let out = run_helper(&helper, "erase", server_key(registry).as_bytes())?;
        found |= out.status.success();
    }
    let auths = auths_mut(&mut cfg, &file)?;
    let keys: Vec<String> = auths
        .keys()
        .filter(|k| normalize_key(k) == registry)
        .cloned()
        .collect();
    for k in keys {
        auths.remove(&k);
        found = true;
    }
    write_config(&file, &cfg)?;
    Ok(found)
}

fn auths_mut<'a>(
    cfg: &'a mut Map<String, Value>,
    file: &Path,
) -> Result<&'a mut Map<String, Value>> {
    let v = cfg
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    v.as_object_mut().with_context(|| {
        format!(
            "{}: \"auths\" is not an object: fix or remove it",
            file.display()
        )
    })
}

fn write_config(file: &Path, cfg: &Map<String, Value>) -> Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".config-")
        .tempfile_in(dir)
        .with_context(|| format!("writing {}", file.display()))?;
    // The file holds secrets: owner-only, like docker writes it.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let text = serde_json::to_string_pretty(&Value::Object(cfg.clone()))?;
    tmp.write_all(text.as_bytes())?;
    tmp.write_all(b"\n")?;
    tmp.persist(file)
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_normalize_like_docker() {
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("https://ghcr.io"), "ghcr.io");
        assert_eq!(normalize_key("http://localhost:5000/v2/"), "localhost:5000");
        assert_eq!(normalize_key("quay.io"), "quay.io");
        assert_eq!(server_key("docker.io"), DOCKER_HUB_KEY);
    }

    #[test]
    fn reads_auths_entries() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.json");
        std::fs::write(
            &f,
            serde_json::json!({"auths": {
                "https://index.docker.io/v1/": {"auth": B64.encode("hub:pw1")},
                "localhost:5000": {"username": "u", "password": "p:w"},
                "ghcr.io": {"identitytoken": "tok"},
                "bad.io": {"auth": "!!!"},
            }})
            .to_string(),
        )
        .unwrap();
        assert_eq!(
            lookup_in_file(&f, "docker.io").unwrap(),
            Some(Credentials::basic("hub", "pw1"))
        );
        assert_eq!(
            lookup_in_file(&f, "localhost:5000").unwrap(),
            Some(Credentials::basic("u", "p:w"))
        );
        assert_eq!(
            lookup_in_file(&f, "ghcr.io").unwrap(),
            Some(Credentials::IdentityToken("tok".into()))
        );
        assert_eq!(lookup_in_file(&f, "quay.io").unwrap(), None);
        let err = lookup_in_file(&f, "bad.io").unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("bad.io"),
            "{err}"
        );
        assert!(!err.contains("!!!"), "secret echoed: {err}");
    }

    #[test]
    fn invalid_json_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.json");
        std::fs::write(&f, "{\n \"auths\": {,\n}").unwrap();
        let err = lookup_in_file(&f, "x.io").unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let s = format!("{:?}", Credentials::basic("me", "hunter2"));
        assert!(s.contains("me") && !s.contains("hunter2"));
        let s = format!("{:?}", Credentials::IdentityToken("tok123".into()));
        assert!(!s.contains("tok123"));
    }
}
