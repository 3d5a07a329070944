//! The sandbox: runs a build step's command in a root filesystem made of
//! an image's layers, in fresh Linux namespaces, and captures what it
//! changed as a layer.
//!
//! | file | owns |
//! |---|---|
//! | [`spec`] | what a step is: command, env, user, mounts, network |
//! | `run` | the parent side: run dir, pipes, waiting, output, cleanup |
//! | `child` | the forked side: namespaces, overlay, /proc, /dev, mounts, pivot_root, reaper, exec |
//! | [`user`] | `USER` resolution from the image's /etc/passwd and /etc/group |
//! | [`caps`] | the capability set a step keeps |
//! | [`idmap`] | rootless id mappings (newuidmap/newgidmap, /etc/subuid) |
//! | [`capture`] | upper dir → layer entries (whiteouts, opaque dirs) |
//! | [`snapshot`] | layers unpacked once per digest as overlay lower dirs |
//! | `adopt` | a step's upper dir made the snapshot of its own layer |
//! | `unsynced` | snapshots published without fsync, and what a reboot does to them |
//! | `network` | the private network's helper (pasta / slirp4netns), resolv.conf |
//!
//! Namespaces, mounts and processes are set up by hand with `nix` rather
//! than by an OCI runtime (runc/crun) because a build step needs far less
//! than a container (no cgroups, no seccomp profile, no hooks) and spawning
//! a runtime per step costs more than the step often does. See
//! `docs/sandbox.md` for the isolation model and its limits.

mod adopt;
pub mod caps;
pub mod capture;
mod child;
pub mod idmap;
mod network;
mod run;
pub mod snapshot;
pub mod spec;
pub mod unsynced;
pub mod user;

use std::path::PathBuf;

use crate::Result;
use crate::oci::Digest;
use crate::oci::layer::{Entry, Layer, LayerOptions, write_layer};
use crate::oci::store::Store;
use crate::progress::Progress;

pub use adopt::Adoption;
pub use capture::Capture;
pub use idmap::IdMap;
pub use network::HELPER_ENV as NETWORK_HELPER_ENV;
pub(crate) use run::remove_tree;
pub use snapshot::Snapshots;
pub use spec::{
    BindMount, CacheMount, Io, Mount, Network, RunSpec, SecretMount, Sharing, StepCommand,
    TmpfsMount,
};

/// The sandbox could not start the step (bad user, workdir, command…): the
/// command never ran.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {message}")]
pub struct SetupError {
    pub step: String,
    pub message: String,
}

/// The step was cancelled (its `cancel` flag was set); everything it
/// started was killed and its files removed.
#[derive(Debug, thiserror::Error)]
#[error("interrupted: the step was cancelled and its processes killed")]
pub struct Cancelled;

/// Where runs and cache mounts live and how ids are mapped.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Temporary run dirs (upper, work, merged…), one per running step.
    pub runs: PathBuf,
    /// Persistent cache mount dirs, by id.
    pub cache_mounts: PathBuf,
    pub idmap: IdMap,
}

impl Sandbox {
    /// The persistent dir of cache mount `id` (`RUN --mount=type=cache`).
    pub fn cache_mount_dir(&self, id: &str) -> PathBuf {
        self.cache_mounts.join(run::sanitize_id(id))
    }

    /// Run dirs and cache mounts under `kiln::paths::cache_dir()`, id map
    /// detected (root: none; else the user's subordinate ranges).
    pub fn new(progress: &Progress) -> Result<Sandbox> {
        let cache = crate::paths::cache_dir()?;
        let idmap = IdMap::detect();
        if let IdMap::Single { uid, .. } = idmap {
            progress.warn(format!(
                "rootless sandbox without subordinate ids: only uid {uid} is mapped (as root); steps that chown files to other users or switch USER will fail. Add ranges to /etc/subuid and /etc/subgid (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER)"
            ));
        }
        Ok(Sandbox {
            runs: cache.join("sandbox"),
            cache_mounts: cache.join("cache-mounts"),
            idmap,
        })
    }

    /// Runs a step. Its output goes to a progress task named after the
    /// step (for [`Io::Log`]); the exit code is in the result. The run's
    /// files are removed when the [`RunOutput`] is dropped; a setup failure
    /// or cancellation leaves nothing behind.
    pub fn run(&self, spec: &RunSpec, progress: &Progress) -> Result<RunOutput> {
        // The step's secret files are masked in its output, and in
        // everything else the handle shows from now on.
        for m in &spec.mounts {
            if let Mount::Secret(s) = m {
                progress.add_secret(&s.value);
            }
        }
        let task = progress.task(spec.name.clone());
        match run::run(self, spec, &task) {
            Ok(out) => {
                task.finish(if out.exit_code == 0 { "done" } else { "failed" });
                Ok(out)
            }
            Err(e) => {
                task.finish("failed");
                Err(e)
            }
        }
    }
}

/// A finished step: its exit code and its upper dir (removed on drop).
pub struct RunOutput {
    pub exit_code: i32,
    excluded: Vec<PathBuf>,
    dir: run::RunDir,
}

impl RunOutput {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// The overlay upper dir: everything the step changed.
    pub fn upper(&self) -> PathBuf {
        self.dir.path.join("upper")
    }

    /// The changes as layer entries (mount points excluded).
    pub fn entries(&self) -> Result<Vec<Entry>> {
        capture::upper_entries(&self.upper(), &self.excluded)
    }

    /// The changes as layer entries, with what was left out.
    pub fn capture(&self) -> Result<Capture> {
        capture::upper_capture(&self.upper(), &self.excluded)
    }

    /// Writes the changes as a layer into `store`.
    pub fn write_layer(&self, store: &Store, opts: LayerOptions) -> Result<Layer> {
        write_layer(store, self.entries()?, opts)
    }

    /// Turns the upper dir into the snapshot of `blob`, the layer written
    /// (with `epoch`) from `entries`: the canonical form of `captured`'s
    /// entries, exactly as [`crate::oci::layer::write_canonical_layer`]
    /// got them. The snapshot is then what unpacking the blob would make;
    /// when that cannot be guaranteed nothing is made (see
    /// [`Adoption::Fallback`]) and the blob is unpacked when needed.
    pub fn into_snapshot(
        self,
        snapshots: &Snapshots,
        captured: &Capture,
        entries: &[Entry],
        blob: &Digest,
        epoch: i64,
    ) -> Result<Adoption> {
        adopt::adopt(
            &self.dir.path,
            &captured.dropped,
            entries,
            snapshots,
            blob,
            epoch,
        )
    }
}
