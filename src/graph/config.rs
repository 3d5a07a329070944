//! Image config changes made by steps (ENV, CMD, …) and the config state
//! they build up, shared by the frontends (for variable expansion) and the
//! solver (for the final image config).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A health check as the image config stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args…]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    /// Nanoseconds; `None` = not set (the runtime default).
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub start_period: Option<u64>,
    pub start_interval: Option<u64>,
    pub retries: Option<u32>,
}

/// One change to the image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigChange {
    /// Set variables (in order; later wins).
    Env(Vec<(String, String)>),
    /// `None` clears CMD.
    Cmd(Option<Vec<String>>),
    /// Sets ENTRYPOINT; `reset_cmd` clears CMD too (Docker does so when no
    /// CMD was set earlier in the same stage).
    Entrypoint {
        args: Vec<String>,
        reset_cmd: bool,
    },
    /// Absolute path; the directory is created if missing.
    WorkingDir(String),
    User(String),
    /// `port/proto`, e.g. `80/tcp`.
    ExposedPorts(Vec<String>),
    Labels(Vec<(String, String)>),
    Volumes(Vec<String>),
    StopSignal(String),
    Healthcheck(Healthcheck),
    /// Used by later shell-form instructions; Docker records it in the config.
    Shell(Vec<String>),
    /// Adds an ONBUILD trigger.
    OnBuild(String),
    /// MAINTAINER (the config's `author`).
    Author(String),
}

/// The image config fields steps change.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    /// In order of first definition.
    pub env: Vec<(String, String)>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: String,
    pub user: String,
    pub exposed_ports: BTreeSet<String>,
    pub labels: BTreeMap<String, String>,
    pub volumes: BTreeSet<String>,
    pub stop_signal: Option<String>,
    pub healthcheck: Option<Healthcheck>,
    pub shell: Option<Vec<String>>,
    pub on_build: Vec<String>,
    pub author: Option<String>,
}

impl ImageConfig {
    /// The value of an environment variable.
    pub fn env_get(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets an environment variable, keeping its position if it existed.
    pub fn env_set(&mut self, name: &str, value: &str) {
        match self.env.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.env.push((name.to_string(), value.to_string())),
        }
    }

    /// The shell for shell-form commands.
    pub fn shell_or_default(&self) -> Vec<String> {
        self.shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    pub fn apply(&mut self, change: &ConfigChange) {
        match change {
            ConfigChange::Env(kv) => {
                for (k, v) in kv {
                    self.env_set(k, v);
                }
            }
            ConfigChange::Cmd(c) => self.cmd = c.clone(),
            ConfigChange::Entrypoint { args, reset_cmd } => {
                self.entrypoint = Some(args.clone());
                if *reset_cmd {
                    self.cmd = None;
                }
            }
            ConfigChange::WorkingDir(d) => self.working_dir = d.clone(),
            ConfigChange::User(u) => self.user = u.clone(),
            ConfigChange::ExposedPorts(p) => self.exposed_ports.extend(p.iter().cloned()),
            ConfigChange::Labels(l) => {
                for (k, v) in l {
                    self.labels.insert(k.clone(), v.clone());
                }
            }
            ConfigChange::Volumes(v) => self.volumes.extend(v.iter().cloned()),
            ConfigChange::StopSignal(s) => self.stop_signal = Some(s.clone()),
            ConfigChange::Healthcheck(h) => self.healthcheck = Some(h.clone()),
            ConfigChange::Shell(s) => self.shell = Some(s.clone()),
            ConfigChange::OnBuild(t) => self.on_build.push(t.clone()),
            ConfigChange::Author(a) => self.author = Some(a.clone()),
        }
    }
}

impl ImageConfig {
    /// The fields an OCI image config carries. Healthcheck, Shell, OnBuild
    /// are Docker extensions that `oci_spec::image::Config` does not model;
    /// the exporter writes them separately when it supports them.
    pub fn from_oci(c: &oci_spec::image::Config) -> ImageConfig {
        let env = c
            .env()
            .iter()
            .flatten()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.clone(), String::new()),
            })
            .collect();
        ImageConfig {
            env,
            cmd: c.cmd().clone(),
            entrypoint: c.entrypoint().clone(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
            exposed_ports: c.exposed_ports().iter().flatten().cloned().collect(),
            labels: c
                .labels()
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            volumes: c.volumes().iter().flatten().cloned().collect(),
            stop_signal: c.stop_signal().clone(),
            ..ImageConfig::default()
        }
    }

    /// Writes the OCI-representable fields into `c` (empty ones unset).
    pub fn apply_to_oci(&self, c: &mut oci_spec::image::Config) {
        let some_vec = |v: Vec<String>| if v.is_empty() { None } else { Some(v) };
        let some_str = |s: &str| {
            if s.is_empty() {
                None
            } else {
                Some(s.to_string())
            }
        };
        c.set_env(some_vec(
            self.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        ));
        c.set_cmd(self.cmd.clone());
        c.set_entrypoint(self.entrypoint.clone());
        c.set_working_dir(some_str(&self.working_dir));
        c.set_user(some_str(&self.user));
        c.set_exposed_ports(some_vec(self.exposed_ports.iter().cloned().collect()));
        c.set_labels(if self.labels.is_empty() {
            None
        } else {
            Some(
                self.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        });
        c.set_volumes(some_vec(self.volumes.iter().cloned().collect()));
        c.set_stop_signal(self.stop_signal.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_changes() {
        let mut c = ImageConfig::default();
        c.apply(&ConfigChange::Env(vec![
            ("A".into(), "1".into()),
            ("B".into(), "2".into()),
        ]));
        c.apply(&ConfigChange::Env(vec![("A".into(), "3".into())]));
        assert_eq!(
            c.env,
            vec![("A".into(), "3".into()), ("B".into(), "2".into())]
        );
        c.apply(&ConfigChange::Cmd(Some(vec!["x".into()])));
        c.apply(&ConfigChange::Entrypoint {
            args: vec!["e".into()],
            reset_cmd: false,
        });
        assert_eq!(c.cmd, Some(vec!["x".into()]));
        c.apply(&ConfigChange::Entrypoint {
            args: vec!["e".into()],
            reset_cmd: true,
        });
        assert_eq!(c.cmd, None);
        c.apply(&ConfigChange::ExposedPorts(vec!["80/tcp".into()]));
        c.apply(&ConfigChange::ExposedPorts(vec![
            "80/tcp".into(),
            "53/udp".into(),
        ]));
        assert_eq!(c.exposed_ports.len(), 2);
        assert_eq!(c.shell_or_default(), vec!["/bin/sh", "-c"]);
    }

    #[test]
    fn oci_round_trip() {
        let mut c = ImageConfig::default();
        c.apply(&ConfigChange::Env(vec![
            ("PATH".into(), "/bin".into()),
            ("E".into(), "a=b".into()),
        ]));
        c.apply(&ConfigChange::User("1000".into()));
        c.apply(&ConfigChange::WorkingDir("/app".into()));
        c.apply(&ConfigChange::ExposedPorts(vec!["80/tcp".into()]));
        c.apply(&ConfigChange::Labels(vec![("k".into(), "v".into())]));
        c.apply(&ConfigChange::Volumes(vec!["/data".into()]));
        c.apply(&ConfigChange::Cmd(Some(vec!["run".into()])));
        c.apply(&ConfigChange::StopSignal("SIGINT".into()));
        let mut oci = oci_spec::image::Config::default();
        c.apply_to_oci(&mut oci);
        assert_eq!(
            oci.env().as_deref(),
            Some(&["PATH=/bin".to_string(), "E=a=b".to_string()][..])
        );
        assert_eq!(ImageConfig::from_oci(&oci), c);
    }
}
