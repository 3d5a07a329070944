//! Cache keys. A step's key is the sha256 of: a key-format version, the
//! layer format ([`LAYER_FORMAT`]), the parent key, the step's canonical
//! definition (its [`Op`] serialized as JSON, which includes the content
//! digests of context files it reads), and the keys/digests of the stages
//! and images it reads. Locations and comments are not part of keys, so
//! editing a comment or moving a line re-runs nothing.
//!
//! A `COPY --from=<stage>` is also known by the content it writes
//! ([`content_copy_key`]): the solver keys its layer by a digest of its
//! entries once the source stage is built, so an unchanged subtree stays
//! cached whatever else changed in the source stage (BuildKit keys such
//! copies by content too), and the steps after it chain from that key.

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{Base, CopyFrom, Graph, Mount, Op, deps};
use crate::Result;
use crate::oci::digest::{Digest, Hasher};
use crate::oci::layer::LAYER_FORMAT;
use crate::platform::Platform;

/// Bump when the meaning of a serialized [`Op`] changes.
pub const KEY_VERSION: u32 = 1;

/// The keys of one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageKeys {
    pub base: Digest,
    /// One per step: the key its result is cached under.
    pub steps: Vec<Digest>,
    /// The key of the stage's result: the chain through every step. It
    /// equals the last step's key unless a `COPY --link` step (keyed
    /// without its parent) is involved.
    pub result: Digest,
    /// One per step: the keys of the stages and images it reads, to key it
    /// again over another parent ([`step_key`]).
    #[serde(default)]
    pub reads: Vec<Vec<Digest>>,
}

impl StageKeys {
    /// The key of the stage's result.
    pub fn result(&self) -> &Digest {
        &self.result
    }
}

/// Whether a step's layer is independent of the layers below it, so its
/// cache key leaves the parent out (`COPY --link`, as in BuildKit). A
/// `--chown` by name is resolved in the parent's /etc/passwd, so that
/// layer does depend on the parent and keeps it in its key.
pub fn independent_of_parent(op: &Op) -> bool {
    match op {
        Op::Copy(c) => {
            c.link
                && c.chown.as_deref().is_none_or(|spec| {
                    spec.split(':')
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                })
        }
        _ => false,
    }
}

/// Keys for the stages a target needs (`None` for stages it does not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKeys {
    pub stages: Vec<Option<StageKeys>>,
}

/// Resolved image digests by reference (manifest digest for the stage's
/// platform). A reference missing here is keyed by its name only, which is
/// right for digest-pinned references and a fallback otherwise.
pub type ImageDigests = BTreeMap<String, Digest>;

fn hasher(kind: &str) -> Hasher {
    let mut h = Hasher::new();
    h.update(
        format!("kiln cache key v{KEY_VERSION}\0layer format {LAYER_FORMAT}\0{kind}\0").as_bytes(),
    );
    h
}

fn field(h: &mut Hasher, bytes: &[u8]) {
    // Length-prefixed so field boundaries cannot shift.
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn image_key(reference: &str, platform: &Platform, images: &ImageDigests) -> Digest {
    let mut h = hasher("image");
    field(&mut h, reference.as_bytes());
    // The platform's string form, as when the graph stored a string.
    field(&mut h, platform.to_string().as_bytes());
    field(
        &mut h,
        images
            .get(reference)
            .map(|d| d.to_string())
            .unwrap_or_default()
            .as_bytes(),
    );
    h.finish().0
}

/// The key of a step over `parent`, given the keys of what it reads.
pub fn step_key(parent: &Digest, op: &Op, reads: &[Digest]) -> Result<Digest> {
    let linked = independent_of_parent(op);
    let mut h = hasher(if linked { "linked step" } else { "step" });
    if !linked {
        field(&mut h, parent.to_string().as_bytes());
    }
    field(&mut h, &serde_json::to_vec(op)?);
    for r in reads {
        field(&mut h, r.to_string().as_bytes());
    }
    Ok(h.finish().0)
}

/// What the steps after a step with key `k` chain from.
pub fn after_step(parent: &Digest, op: &Op, k: &Digest) -> Digest {
    if independent_of_parent(op) {
        // The steps after a linked layer still see everything below it:
        // chain the parent back in.
        let mut h = hasher("after linked step");
        field(&mut h, parent.to_string().as_bytes());
        field(&mut h, k.to_string().as_bytes());
        h.finish().0
    } else {
        k.clone()
    }
}

/// The key of a `COPY --from=<stage>` layer by what it writes: `content`
/// is the digest of its entries (paths, metadata, link targets, file
/// contents, and the destination's parent directories as the stage below
/// has them), which is everything the layer is made of. So the key is a
/// pure function of content, the same on every machine, and needs no
/// parent key: an unchanged subtree is cached even after an earlier step
/// of the stage changed (BuildKit re-copies it then). The steps after it
/// chain from [`after_content_copy`].
pub fn content_copy_key(op: &Op, content: &Digest) -> Result<Digest> {
    let mut h = hasher("content copy");
    field(&mut h, &serde_json::to_vec(op)?);
    field(&mut h, content.to_string().as_bytes());
    Ok(h.finish().0)
}

/// What the steps after a copy keyed by content chain from: the layers
/// below it (`parent`) and its own.
pub fn after_content_copy(parent: &Digest, k: &Digest) -> Digest {
    let mut h = hasher("after content copy");
    field(&mut h, parent.to_string().as_bytes());
    field(&mut h, k.to_string().as_bytes());
    h.finish().0
}

/// Computes keys for every stage `target` needs.
pub fn compute(graph: &Graph, target: usize, images: &ImageDigests) -> Result<CacheKeys> {
    let order = deps::build_order(graph, target)?;
    let mut keys: Vec<Option<StageKeys>> = vec![None; graph.stages.len()];
    for idx in order {
        keys[idx] = Some(stage_keys(graph, idx, images, &keys)?);
    }
    Ok(CacheKeys { stages: keys })
}

/// The keys of stage `idx` alone: `images` needs the digests of its base
/// and of the images it reads, `keys` the keys of the stages it stands on
/// and reads (an error names a missing one). So a stage is keyed as soon
/// as its own inputs are known, while other stages' bases still compose;
/// [`compute`] gives the same keys for the whole graph.
pub fn stage_keys(
    graph: &Graph,
    idx: usize,
    images: &ImageDigests,
    keys: &[Option<StageKeys>],
) -> Result<StageKeys> {
    let stage = graph
        .stages
        .get(idx)
        .with_context(|| format!("stage {idx} does not exist"))?;
    let result_of = |i: usize| -> Result<Digest> {
        keys.get(i)
            .and_then(|k| k.as_ref())
            .map(|k| k.result().clone())
            .with_context(|| format!("stage {i} has no key yet (dependency order bug)"))
    };
    let base = match &stage.base {
        Base::Image { reference } => image_key(reference, &stage.platform, images),
        Base::Scratch => {
            let mut h = hasher("scratch");
            field(&mut h, stage.platform.to_string().as_bytes());
            h.finish().0
        }
        Base::Packages(p) => {
            let mut h = hasher("packages");
            field(&mut h, stage.platform.to_string().as_bytes());
            field(&mut h, &serde_json::to_vec(p)?);
            let resolved = images.get(&p.reference());
            field(
                &mut h,
                resolved
                    .map(|d| d.to_string())
                    .unwrap_or_default()
                    .as_bytes(),
            );
            h.finish().0
        }
        Base::Stage(i) => result_of(*i)?,
    };
    let mut parent = base.clone();
    let mut steps = Vec::with_capacity(stage.steps.len());
    let mut all_reads = Vec::with_capacity(stage.steps.len());
    for step in &stage.steps {
        // What the step reads from other stages and images.
        let mut reads: Vec<&CopyFrom> = Vec::new();
        match &step.op {
            Op::Copy(c) => reads.push(&c.from),
            Op::Run(r) => {
                for m in &r.mounts {
                    match m {
                        Mount::Bind { from, .. } => reads.push(from),
                        Mount::Cache {
                            from: Some(from), ..
                        } => reads.push(from),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        let mut read_keys = Vec::with_capacity(reads.len());
        for r in reads {
            match r {
                CopyFrom::Context => {}
                CopyFrom::Stage(i) => read_keys.push(result_of(*i)?),
                CopyFrom::Image(reference) => {
                    read_keys.push(image_key(reference, &stage.platform, images))
                }
            }
        }
        let k = step_key(&parent, &step.op, &read_keys)?;
        parent = after_step(&parent, &step.op, &k);
        steps.push(k);
        all_reads.push(read_keys);
    }
    Ok(StageKeys {
        base,
        steps,
        result: parent,
        reads: all_reads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{ConfigChange, Copy, CopyItem, Origin, Stage, Step};

    fn copy(from: CopyFrom, digest: Option<Digest>) -> Step {
        Step {
            op: Op::Copy(Copy {
                context_digest: digest,
                ..Copy::new(from, vec![CopyItem::Path("a".into())], "/a")
            }),
            origin: None,
        }
    }

    fn graph(content: &[u8], env: &str) -> Graph {
        Graph {
            stages: vec![
                Stage {
                    name: Some("build".into()),
                    base: Base::Image {
                        reference: "debian:bookworm".into(),
                    },
                    platform: crate::platform::Platform::linux("amd64", None),
                    steps: vec![
                        Step {
                            op: Op::Config(ConfigChange::Env(vec![("A".into(), env.into())])),
                            origin: None,
                        },
                        copy(CopyFrom::Context, Some(Digest::of(content))),
                    ],
                    origin: None,
                },
                Stage {
                    name: None,
                    base: Base::Scratch,
                    platform: crate::platform::Platform::linux("amd64", None),
                    steps: vec![copy(CopyFrom::Stage(0), None)],
                    origin: None,
                },
            ],
            target: 1,
        }
    }

    #[test]
    fn keys_follow_content_and_definition() {
        let none = ImageDigests::new();
        let a = compute(&graph(b"one", "x"), 1, &none).unwrap();
        let again = compute(&graph(b"one", "x"), 1, &none).unwrap();
        assert_eq!(a, again);
        let changed = compute(&graph(b"two", "x"), 1, &none).unwrap();
        let s0 = |k: &CacheKeys| k.stages[0].clone().unwrap();
        // The ENV step keeps its key; the COPY and everything after change.
        assert_eq!(s0(&a).steps[0], s0(&changed).steps[0]);
        assert_ne!(s0(&a).steps[1], s0(&changed).steps[1]);
        assert_ne!(
            a.stages[1].as_ref().unwrap().steps[0],
            changed.stages[1].as_ref().unwrap().steps[0]
        );
        // The scratch base of stage 1 is the same either way.
        assert_eq!(
            a.stages[1].as_ref().unwrap().base,
            changed.stages[1].as_ref().unwrap().base
        );
        let env = compute(&graph(b"one", "y"), 1, &none).unwrap();
        assert_ne!(s0(&a).steps[0], s0(&env).steps[0]);
    }

    #[test]
    fn origins_are_not_keyed_and_images_are() {
        let none = ImageDigests::new();
        let mut g = graph(b"one", "x");
        let a = compute(&g, 1, &none).unwrap();
        g.stages[0].steps[0].origin = Some(Origin {
            file: "Dockerfile".into(),
            line: 9,
            text: "ENV A=x".into(),
        });
        assert_eq!(a, compute(&g, 1, &none).unwrap());
        let mut pinned = ImageDigests::new();
        pinned.insert("debian:bookworm".into(), Digest::of(b"manifest"));
        let b = compute(&g, 1, &pinned).unwrap();
        assert_ne!(
            a.stages[0].as_ref().unwrap().base,
            b.stages[0].as_ref().unwrap().base
        );
    }

    #[test]
    fn a_linked_copy_is_keyed_without_its_parent_but_what_follows_is_not() {
        let none = ImageDigests::new();
        let with_link = |env: &str, chown: Option<&str>| {
            let mut g = graph(b"one", env);
            let Op::Copy(c) = &mut g.stages[0].steps[1].op else {
                unreachable!()
            };
            c.link = true;
            c.chown = chown.map(str::to_string);
            g.stages[0].steps.push(Step {
                op: Op::Config(ConfigChange::Env(vec![("B".into(), "1".into())])),
                origin: None,
            });
            compute(&g, 1, &none).unwrap()
        };
        let (a, b) = (with_link("x", None), with_link("y", None));
        let s0 = |k: &CacheKeys| k.stages[0].clone().unwrap();
        // The ENV before it changed; the linked COPY keeps its key...
        assert_ne!(s0(&a).steps[0], s0(&b).steps[0]);
        assert_eq!(s0(&a).steps[1], s0(&b).steps[1]);
        // ...and the step after it, the stage result and its readers do not.
        assert_ne!(s0(&a).steps[2], s0(&b).steps[2]);
        assert_ne!(s0(&a).result, s0(&b).result);
        assert_ne!(a.stages[1], b.stages[1]);
        // Numeric --chown stays independent; a name is resolved in the parent.
        let (n1, n2) = (
            with_link("x", Some("1000:1000")),
            with_link("y", Some("1000:1000")),
        );
        assert_eq!(s0(&n1).steps[1], s0(&n2).steps[1]);
        let (u1, u2) = (with_link("x", Some("app")), with_link("y", Some("app")));
        assert_ne!(s0(&u1).steps[1], s0(&u2).steps[1]);
    }

    #[test]
    fn a_stage_is_keyed_from_its_own_inputs_as_the_whole_graph_keys_it() {
        let g = graph(b"one", "x");
        let mut images = ImageDigests::new();
        images.insert("debian:bookworm".into(), Digest::of(b"manifest"));
        let all = compute(&g, 1, &images).unwrap();
        // Stage 0 needs nothing but its base's digest.
        let s0 = stage_keys(&g, 0, &images, &[None, None]).unwrap();
        assert_eq!(Some(&s0), all.stages[0].as_ref());
        // Stage 1 reads stage 0: without its key it is refused...
        let e = stage_keys(&g, 1, &images, &[None, None]).unwrap_err();
        assert!(e.to_string().contains("stage 0 has no key yet"), "{e}");
        // ...with it, keyed as the whole graph keys it.
        let s1 = stage_keys(&g, 1, &images, &[Some(s0), None]).unwrap();
        assert_eq!(Some(&s1), all.stages[1].as_ref());
    }

    #[test]
    fn unused_stages_get_no_key() {
        let g = graph(b"one", "x");
        let k = compute(&g, 0, &ImageDigests::new()).unwrap();
        assert!(k.stages[0].is_some());
        assert!(k.stages[1].is_none());
    }
}
