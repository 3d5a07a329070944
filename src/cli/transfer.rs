//! `kiln push NAME ssh://…`: the SSH transfer's flags and output.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use crate::Result;
use crate::progress::human_bytes;
use crate::transfer::{Engine, SshOptions, TransferOptions, TransferSummary};

/// Flags of `kiln push` that apply to ssh:// targets only.
#[derive(Args, Debug, Clone, Default)]
pub struct SshFlags {
    /// ssh config file for ssh:// targets (as `ssh -F FILE`).
    #[arg(
        short = 'F',
        long = "ssh-config",
        value_name = "FILE",
        env = "KILN_SSH_CONFIG"
    )]
    pub ssh_config: Option<PathBuf>,
    /// After an ssh:// transfer, load the image into this engine on the server.
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub load: Option<Engine>,
}

impl SshFlags {
    /// `--load` makes no sense for a registry; `-F` from the environment is
    /// fine (it is only used for ssh targets).
    pub fn refuse_for_registry(&self) -> Result<()> {
        if self.load.is_some() {
            bail!(
                "--load only applies to ssh:// targets (kiln push NAME ssh://HOST --load podman)"
            );
        }
        Ok(())
    }
}

impl SshFlags {
    /// The transfer options these flags (and `--net-timeout`) give.
    pub fn transfer_options(&self, net_timeout: Option<std::time::Duration>) -> TransferOptions {
        TransferOptions {
            ssh: SshOptions {
                config: self.ssh_config.clone(),
                program: None,
                timeout: net_timeout,
            },
            load: self.load,
        }
    }
}

/// `kiln push NAME ssh://…`: `dest` is a [`Destination::Ssh`].
/// Prints what `kiln push NAME ssh://…` did.
pub fn print_sent(summary: &TransferSummary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
    } else {
        println!(
            "{}: sent {} to {} ({} blobs sent, {} already there, {} sent)",
            summary.target,
            summary.tag,
            summary.remote_path,
            summary.blobs_sent,
            summary.blobs_present,
            human_bytes(summary.bytes_sent)
        );
        if let Some(cmd) = &summary.loaded {
            println!("loaded on the server with: {cmd}");
        }
    }
    Ok(())
}
