//! Conversions between the graph's image config (what steps build up) and
//! the OCI image config.

use std::collections::HashMap;

use oci_spec::image::Config;

use crate::graph::ImageConfig;

/// The graph view of an OCI config (a base image's).
pub fn from_oci(c: &Config) -> ImageConfig {
    let env = c
        .env()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect();
    ImageConfig {
        env,
        cmd: c.cmd().clone(),
        entrypoint: c.entrypoint().clone(),
        working_dir: c.working_dir().clone().unwrap_or_default(),
        user: c.user().clone().unwrap_or_default(),
        exposed_ports: c
            .exposed_ports()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
        volumes: c
            .volumes()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        stop_signal: c.stop_signal().clone(),
        ..ImageConfig::default()
    }
}

/// The OCI config for the image. Docker-only fields (Healthcheck, Shell,
/// OnBuild) have no place in the OCI config and are not written; see
/// docs/dockerfile.md.
pub fn to_oci(c: &ImageConfig) -> Config {
    let mut out = Config::default();
    if !c.env.is_empty() {
        out.set_env(Some(
            c.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        ));
    }
    out.set_cmd(c.cmd.clone());
    out.set_entrypoint(c.entrypoint.clone());
    if !c.working_dir.is_empty() {
        out.set_working_dir(Some(c.working_dir.clone()));
    }
    if !c.user.is_empty() {
        out.set_user(Some(c.user.clone()));
    }
    if !c.exposed_ports.is_empty() {
        out.set_exposed_ports(Some(c.exposed_ports.iter().cloned().collect()));
    }
    if !c.labels.is_empty() {
        out.set_labels(Some(
            c.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        ));
    }
    if !c.volumes.is_empty() {
        out.set_volumes(Some(c.volumes.iter().cloned().collect()));
    }
    out.set_stop_signal(c.stop_signal.clone());
    out
}
