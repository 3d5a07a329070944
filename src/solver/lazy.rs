//! Which stages a solve builds: the target and what it stands on
//! (`FROM stage`) always; a stage another one only reads (`COPY --from`,
//! `RUN --mount from=`) only when a step reading it misses the cache.
//!
//! So a fresh builder whose cache has the final image's steps (a
//! `mode=min` registry cache, or a local cache whose build-stage records
//! were pruned) does not run the build stage again, as BuildKit skips a
//! stage nothing it needs reads. The walk follows each stage's key chain
//! exactly as [`super::Solver::solve`] builds it: after a `COPY
//! --from=STAGE` found by its source-stage key, the chain goes on from the
//! record's content key ([`key::after_content_copy`]); after a miss there
//! the content key is unknown until the source is built, so the source is
//! needed and so is every stage read later in that stage.

use std::collections::BTreeSet;

use anyhow::Context as _;

use super::cache::StepRecord;
use crate::Result;
use crate::graph::key::{self, CacheKeys};
use crate::graph::{Base, CopyFrom, Graph, Mount, Op};
use crate::oci::Digest;

/// The stages of `order` (dependencies first, the target last) that must
/// be built. `cached(stage, key)` looks a step of `stage` up (local step
/// cache, then the registry caches, with the stage's layer compression);
/// with `no_cache` every stage is built.
pub fn needed_stages(
    g: &Graph,
    order: &[usize],
    keys: &CacheKeys,
    no_cache: bool,
    cached: &dyn Fn(usize, &Digest) -> Option<StepRecord>,
) -> Result<BTreeSet<usize>> {
    if no_cache {
        return Ok(order.iter().copied().collect());
    }
    let mut needed = BTreeSet::new();
    if let Some(&target) = order.last() {
        needed.insert(target);
    }
    // Readers come before what they read.
    for &i in order.iter().rev() {
        if !needed.contains(&i) {
            continue;
        }
        let stage = &g.stages[i];
        if let Base::Stage(parent) = stage.base {
            needed.insert(parent);
        }
        let sk = keys.stages[i]
            .as_ref()
            .with_context(|| format!("stage {i} has no keys"))?;
        let mut parent = sk.base.clone();
        let mut diverged = false;
        // The chain's keys are unknown after a content copy that missed.
        let mut unknown = false;
        for (j, step) in stage.steps.iter().enumerate() {
            let k = if diverged {
                key::step_key(&parent, &step.op, &sk.reads[j])?
            } else {
                sk.steps[j].clone()
            };
            if let Op::Copy(c) = &step.op
                && let CopyFrom::Stage(from) = c.from
            {
                match (!unknown)
                    .then(|| cached(i, &k))
                    .flatten()
                    .and_then(|r| r.content_key)
                {
                    Some(ck) => {
                        parent = key::after_content_copy(&parent, &ck);
                        diverged = true;
                    }
                    None => {
                        needed.insert(from);
                        unknown = true;
                    }
                }
                continue;
            }
            let reads = stages_read(&step.op);
            if !reads.is_empty() && (unknown || cached(i, &k).is_none()) {
                needed.extend(reads);
            }
            parent = key::after_step(&parent, &step.op, &k);
        }
    }
    Ok(needed)
}

/// The records of a stage that is not built, as far as its steps are
/// cached (up to its first miss), by step index: shown as cached, and
/// passed on to a `--cache-to` of every stage (`mode=max`). A `COPY
/// --from` adds its content-key record too (same index), as the solver
/// notes it.
pub fn cached_steps(
    g: &Graph,
    stage: usize,
    keys: &CacheKeys,
    cached: &dyn Fn(usize, &Digest) -> Option<StepRecord>,
) -> Result<Vec<(usize, Digest, StepRecord)>> {
    let sk = keys.stages[stage]
        .as_ref()
        .with_context(|| format!("stage {stage} has no keys"))?;
    let mut out = Vec::new();
    let mut parent = sk.base.clone();
    let mut diverged = false;
    for (j, step) in g.stages[stage].steps.iter().enumerate() {
        let k = if diverged {
            key::step_key(&parent, &step.op, &sk.reads[j])?
        } else {
            sk.steps[j].clone()
        };
        // Config-only steps have no record: the solver applies them.
        if !super::shown(&step.op) {
            parent = key::after_step(&parent, &step.op, &k);
            continue;
        }
        let Some(rec) = cached(stage, &k) else { break };
        let content = match &step.op {
            Op::Copy(c) if matches!(c.from, CopyFrom::Stage(_)) => rec.content_key.clone(),
            _ => None,
        };
        out.push((j, k.clone(), rec));
        match content {
            Some(ck) => {
                if let Some(r) = cached(stage, &ck) {
                    out.push((j, ck.clone(), r));
                }
                parent = key::after_content_copy(&parent, &ck);
                diverged = true;
            }
            None => parent = key::after_step(&parent, &step.op, &k),
        }
    }
    Ok(out)
}

/// The stages a step other than `COPY --from` reads: its mounts' sources.
fn stages_read(op: &Op) -> Vec<usize> {
    let Op::Run(r) = op else { return Vec::new() };
    r.mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Bind {
                from: CopyFrom::Stage(s),
                ..
            }
            | Mount::Cache {
                from: Some(CopyFrom::Stage(s)),
                ..
            } => Some(*s),
            _ => None,
        })
        .collect()
}

/// The line a skipped stage shows instead of its steps.
pub fn skipped_line(name: &str) -> String {
    format!("[{name}] skipped: every step that reads it is cached")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::graph::key::{ImageDigests, after_content_copy, after_step, compute, step_key};
    use crate::graph::{ConfigChange, Copy, CopyItem, Run, Sharing, Stage, Step};
    use crate::platform::Platform;

    fn copy(from: CopyFrom, path: &str) -> Step {
        Step {
            op: Op::Copy(Copy {
                context_digest: Some(Digest::of(path.as_bytes())),
                ..Copy::new(from, vec![CopyItem::Path(path.into())], &format!("/{path}"))
            }),
            origin: None,
        }
    }

    fn run(cmd: &str, mounts: Vec<Mount>) -> Step {
        Step {
            op: Op::Run(Run {
                command: vec!["sh".into(), "-c".into(), cmd.into()],
                build_args: vec![],
                mounts,
                network: Default::default(),
                security: Default::default(),
                context_digest: None,
            }),
            origin: None,
        }
    }

    fn env(name: &str) -> Step {
        Step {
            op: Op::Config(ConfigChange::Env(vec![(name.into(), "1".into())])),
            origin: None,
        }
    }

    fn stage(name: &str, base: Base, steps: Vec<Step>) -> Stage {
        Stage {
            name: Some(name.into()),
            base,
            platform: Platform::linux("amd64", None),
            steps,
            origin: None,
        }
    }

    /// build (0) and assets (1) are only read by runtime (2): the first by
    /// `COPY --from`, the second by a `RUN --mount from=`.
    fn app() -> Graph {
        let bind = Mount::Bind {
            target: "/assets".into(),
            from: CopyFrom::Stage(1),
            source: "/".into(),
            readwrite: false,
        };
        Graph {
            stages: vec![
                stage(
                    "build",
                    Base::Scratch,
                    vec![copy(CopyFrom::Context, "src"), env("B"), run("make", vec![])],
                ),
                stage("assets", Base::Scratch, vec![copy(CopyFrom::Context, "css")]),
                stage(
                    "runtime",
                    Base::Scratch,
                    vec![
                        copy(CopyFrom::Context, "app"),
                        copy(CopyFrom::Stage(0), "out"),
                        run("install", vec![bind]),
                        env("A"),
                    ],
                ),
            ],
            target: 2,
        }
    }

    fn record(content_key: Option<Digest>) -> StepRecord {
        StepRecord {
            layer: None,
            content_key,
        }
    }

    /// The runtime stage's keys as the solver walks them when its `COPY
    /// --from=build` record names content key `ck`: (copy key, run key).
    fn runtime_keys(g: &Graph, keys: &CacheKeys, ck: &Digest) -> (Digest, Digest) {
        let sk = keys.stages[2].as_ref().unwrap();
        let after_app = after_step(&sk.base, &g.stages[2].steps[0].op, &sk.steps[0]);
        let parent = after_content_copy(&after_app, ck);
        let run = step_key(&parent, &g.stages[2].steps[2].op, &sk.reads[2]).unwrap();
        (sk.steps[1].clone(), run)
    }

    fn needed(g: &Graph, cache: &HashMap<Digest, StepRecord>, no_cache: bool) -> Vec<usize> {
        let order = crate::graph::deps::build_order(g, g.target).unwrap();
        let keys = compute(g, g.target, &ImageDigests::new()).unwrap();
        let lookup = |stage: usize, k: &Digest| {
            assert_eq!(stage, 2, "only the runtime stage's steps are looked up");
            cache.get(k).cloned()
        };
        needed_stages(g, &order, &keys, no_cache, &lookup)
            .unwrap()
            .into_iter()
            .collect()
    }

    #[test]
    fn stages_whose_readers_are_all_cached_are_not_built() {
        let g = app();
        let keys = compute(&g, 2, &ImageDigests::new()).unwrap();
        let ck = Digest::of(b"the copied files");
        let (copy_key, run_key) = runtime_keys(&g, &keys, &ck);
        let mut cache = HashMap::new();
        cache.insert(copy_key.clone(), record(Some(ck.clone())));
        cache.insert(run_key.clone(), record(None));
        assert_eq!(needed(&g, &cache, false), [2]);
        // --no-cache builds everything.
        assert_eq!(needed(&g, &cache, true), [0, 1, 2]);

        // The mount's reader misses: only the stage it mounts is built.
        let mut no_run = cache.clone();
        no_run.remove(&run_key);
        assert_eq!(needed(&g, &no_run, false), [1, 2]);
        // The run cached under the precomputed chain does not count: the
        // solver keys it over the content key.
        let precomputed = keys.stages[2].as_ref().unwrap().steps[2].clone();
        no_run.insert(precomputed, record(None));
        assert_eq!(needed(&g, &no_run, false), [1, 2]);

        // The content copy misses (or its record has no content key): its
        // source is built, and every stage read after it too, since the
        // keys after it are unknown until the copy ran.
        let mut no_copy = cache.clone();
        no_copy.remove(&copy_key);
        assert_eq!(needed(&g, &no_copy, false), [0, 1, 2]);
        no_copy.insert(copy_key.clone(), record(None));
        assert_eq!(needed(&g, &no_copy, false), [0, 1, 2]);
        assert_eq!(needed(&g, &HashMap::new(), false), [0, 1, 2]);

        // A skipped stage's records as the solver would note them: up to
        // the first miss, the content key's record after the copy's.
        let app_key = keys.stages[2].as_ref().unwrap().steps[0].clone();
        cache.insert(app_key.clone(), record(None));
        cache.insert(ck.clone(), record(None));
        let found = |cache: &HashMap<Digest, StepRecord>| -> Vec<Digest> {
            let lookup = |_: usize, k: &Digest| cache.get(k).cloned();
            cached_steps(&g, 2, &keys, &lookup)
                .unwrap()
                .into_iter()
                .map(|(_, k, _)| k)
                .collect()
        };
        // (The ENV after the RUN has no record: config-only steps have none.)
        assert_eq!(found(&cache), [app_key.clone(), copy_key.clone(), ck, run_key]);
        cache.remove(&copy_key);
        assert_eq!(found(&cache), [app_key]);

        // Past a config-only step (no record) to the steps after it.
        let build = keys.stages[0].as_ref().unwrap();
        let cache: HashMap<Digest, StepRecord> = [&build.steps[0], &build.steps[2]]
            .into_iter()
            .map(|k| (k.clone(), record(None)))
            .collect();
        let found: Vec<Digest> = cached_steps(&g, 0, &keys, &|_, k| cache.get(k).cloned())
            .unwrap()
            .into_iter()
            .map(|(_, k, _)| k)
            .collect();
        assert_eq!(found, [build.steps[0].clone(), build.steps[2].clone()]);
    }

    #[test]
    fn a_stage_built_on_is_always_built_and_its_readers_are_walked() {
        // runtime stands on base (FROM base), which reads build by a cache
        // mount: base is built; build only when that step misses.
        let seed = Mount::Cache {
            target: "/c".into(),
            id: String::new(),
            sharing: Sharing::default(),
            from: Some(CopyFrom::Stage(0)),
            source: "/".into(),
            readonly: false,
            mode: 0o755,
            uid: 0,
            gid: 0,
        };
        let g = Graph {
            stages: vec![
                stage("build", Base::Scratch, vec![run("make", vec![])]),
                stage("base", Base::Scratch, vec![run("seed", vec![seed])]),
                stage("runtime", Base::Stage(1), vec![run("true", vec![])]),
            ],
            target: 2,
        };
        let order = crate::graph::deps::build_order(&g, 2).unwrap();
        let keys = compute(&g, 2, &ImageDigests::new()).unwrap();
        let seeded = keys.stages[1].as_ref().unwrap().steps[0].clone();
        let hit = |_: usize, k: &Digest| (*k == seeded).then(|| record(None));
        let got = needed_stages(&g, &order, &keys, false, &hit).unwrap();
        assert_eq!(got.into_iter().collect::<Vec<_>>(), [1, 2]);
        let miss = |_: usize, _: &Digest| None;
        let got = needed_stages(&g, &order, &keys, false, &miss).unwrap();
        assert_eq!(got.into_iter().collect::<Vec<_>>(), [0, 1, 2]);
    }
}
