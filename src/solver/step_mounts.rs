//! A RUN step's `--mount`s (cache, secret, tmpfs, bind from the context or
//! from a stage/image, inline files, the host's CA bundle) translated into
//! the sandbox's mounts, with the temp files and directories they bind,
//! which must live until the step has run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::SolveOptions;
use super::mounts::{self, Files, SourceFs};
use crate::Result;
use crate::graph::{self, CopyFrom};
use crate::sandbox;

/// What a step's mounts become.
pub(super) struct StepMounts {
    pub(super) mounts: Vec<sandbox::Mount>,
    /// Variables from `type=secret,env=NAME`, in mount order.
    pub(super) env: Vec<(String, String)>,
    /// Temp files (inline files, the CA bundle) bound by `mounts`.
    _files: Vec<tempfile::NamedTempFile>,
    /// Stage and image sources materialised for `mounts`.
    _dirs: Vec<tempfile::TempDir>,
}

/// The step the mounts belong to, for errors and sources.
pub(super) struct StepRef<'a> {
    /// `[stage n/total] …`.
    pub(super) label: &'a str,
    /// The instruction's file and line.
    pub(super) origin: &'a str,
    /// The filesystem of a mount's `from=` (stage or image).
    pub(super) view_of: &'a dyn Fn(&CopyFrom) -> Result<SourceFs>,
}

/// Translates `run`'s mounts; an optional secret that was not given is
/// left out.
pub(super) fn translate(
    run: &graph::Run,
    step: &StepRef<'_>,
    opts: &SolveOptions<'_>,
) -> Result<StepMounts> {
    let (label, origin) = (step.label, step.origin);
    let mut out = StepMounts {
        mounts: Vec::new(),
        env: Vec::new(),
        _files: Vec::new(),
        _dirs: Vec::new(),
    };
    let mounts_dir = crate::paths::cache_dir()?.join("mounts");
    for m in &run.mounts {
        match m {
            graph::Mount::Cache {
                target,
                id,
                sharing,
                from,
                source,
                readonly: _,
                mode,
                uid,
                gid,
            } => {
                let mut c = sandbox::CacheMount::new(
                    if id.is_empty() {
                        target.clone()
                    } else {
                        id.clone()
                    },
                    target,
                );
                c.sharing = match sharing {
                    graph::Sharing::Shared => sandbox::Sharing::Shared,
                    graph::Sharing::Locked => sandbox::Sharing::Locked,
                    graph::Sharing::Private => sandbox::Sharing::Private,
                };
                (c.mode, c.uid, c.gid) = (*mode, *uid, *gid);
                if let Some(from) = from {
                    let src = (step.view_of)(from).with_context(|| label.to_string())?;
                    let what = &src.name;
                    // As in BuildKit, a seeded cache is one per id *and*
                    // source: another version of the stage starts its
                    // own cache, seeded with its files.
                    c.id = format!("{} from {}", c.id, src.key);
                    // Only read when the cache dir is new, but cheap to
                    // prepare (hard links): the sandbox copies it then.
                    let (tmp, path) =
                        mounts::materialise(&src.view, source, what, &mounts_dir, Files::Linked)
                            .with_context(|| {
                                format!("{label} ({origin}): cache mount from={what}")
                            })?;
                    if !path.is_dir() {
                        bail!(
                            "{label} ({origin}): cache mount source={source} in {what} is not a directory"
                        );
                    }
                    c.seed = Some(path);
                    out._dirs.push(tmp);
                }
                out.mounts.push(sandbox::Mount::Cache(c));
            }
            graph::Mount::Secret {
                id,
                target,
                env: as_env,
                required,
                mode,
                uid,
                gid,
            } => {
                let Some(value) = opts.secrets.get(id) else {
                    if *required {
                        bail!(
                            "{label}: secret {id:?} is required: pass it with --secret id={id},src=FILE"
                        );
                    }
                    continue;
                };
                if let Some(var) = as_env {
                    out.env
                        .push((var.clone(), String::from_utf8_lossy(value).into_owned()));
                }
                if target.is_some() || as_env.is_none() {
                    let mut s = sandbox::SecretMount::new(id.clone(), value.clone());
                    s.target = target.as_ref().map(PathBuf::from);
                    (s.mode, s.uid, s.gid) = (*mode, *uid, *gid);
                    out.mounts.push(sandbox::Mount::Secret(s));
                }
            }
            graph::Mount::Tmpfs { target, size } => {
                out.mounts.push(sandbox::Mount::Tmpfs(sandbox::TmpfsMount {
                    target: target.into(),
                    size: *size,
                }))
            }
            graph::Mount::Bind {
                target,
                from: CopyFrom::Context,
                source,
                readwrite,
            } => {
                let ctx = opts
                    .context
                    .context("bind mount from the build context, but the build has no context")?;
                let root = ctx.lock().unwrap_or_else(|e| e.into_inner()).root.clone();
                // The context is untrusted: a symlink in it (even the
                // source itself) resolves inside the context, never to
                // a host path.
                let rel = crate::oci::layer::normalize(Path::new(&format!("./{source}/.")))
                    .unwrap_or_default();
                let src = crate::oci::inroot::InRoot::open(&root)?
                    .real_path(&rel)?
                    .with_context(|| {
                        format!(
                            "RUN --mount=type=bind,source={source}: not found in the build context"
                        )
                    })?;
                out.mounts.push(sandbox::Mount::Bind(sandbox::BindMount {
                    source: src,
                    target: target.into(),
                    readwrite: *readwrite,
                }));
            }
            graph::Mount::Bind {
                target,
                from,
                source,
                readwrite,
            } => {
                let src = (step.view_of)(from).with_context(|| label.to_string())?;
                let what = &src.name;
                let files = if *readwrite {
                    Files::Copied
                } else {
                    Files::Linked
                };
                let (tmp, path) = mounts::materialise(&src.view, source, what, &mounts_dir, files)
                    .with_context(|| format!("{label} ({origin}): bind mount from={what}"))?;
                out.mounts.push(sandbox::Mount::Bind(sandbox::BindMount {
                    source: path,
                    target: target.into(),
                    readwrite: *readwrite,
                }));
                out._dirs.push(tmp);
            }
            graph::Mount::Inline {
                target,
                content,
                mode,
            } => out.bind_file(content.as_bytes(), *mode, target)?,
            graph::Mount::HostCa { target } => {
                let Some(bundle) = &opts.host_ca else {
                    bail!(
                        "{label}: the step trusts the host's CA bundle, but the build read none (SolveOptions::host_ca)"
                    );
                };
                out.bind_file(bundle, 0o644, target)?
            }
            graph::Mount::Ssh { .. } => {
                bail!("{label}: RUN --mount=type=ssh is not supported yet")
            }
        }
    }
    Ok(out)
}

impl StepMounts {
    /// Binds a read-only temp file holding `content` at `target`.
    fn bind_file(&mut self, content: &[u8], mode: u32, target: &str) -> Result<()> {
        let f = tempfile::NamedTempFile::new()?;
        std::fs::write(f.path(), content)?;
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode))?;
        self.mounts.push(sandbox::Mount::Bind(sandbox::BindMount {
            source: f.path().to_path_buf(),
            target: target.into(),
            readwrite: false,
        }));
        self._files.push(f);
        Ok(())
    }
}
