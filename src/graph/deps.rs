//! Stage dependency analysis: which stages a target needs (through bases,
//! `COPY --from` and `RUN --mount from=`), in an order where each stage
//! comes after what it reads; unused stages are left out.

use std::collections::BTreeSet;

use anyhow::bail;

use super::{Base, CopyFrom, Graph, Mount, Op};
use crate::Result;

/// The stages `stage` reads directly.
pub fn direct_deps(graph: &Graph, stage: usize) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let Some(s) = graph.stages.get(stage) else {
        return out;
    };
    if let Base::Stage(i) = s.base {
        out.insert(i);
    }
    let mut from = |f: &CopyFrom| {
        if let CopyFrom::Stage(i) = f {
            out.insert(*i);
        }
    };
    for step in &s.steps {
        match &step.op {
            Op::Copy(c) => from(&c.from),
            Op::Run(r) => {
                for m in &r.mounts {
                    match m {
                        Mount::Bind { from: f, .. } => from(f),
                        Mount::Cache { from: Some(f), .. } => from(f),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The stages needed to build `target`, dependencies first (the target is
/// last). Errors on references to missing stages and on cycles.
pub fn build_order(graph: &Graph, target: usize) -> Result<Vec<usize>> {
    if target >= graph.stages.len() {
        bail!(
            "target stage {target} does not exist (the graph has {} stages)",
            graph.stages.len()
        );
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; graph.stages.len()];
    let mut order = Vec::new();
    // Iterative DFS with an explicit path so a cycle can be named.
    let mut stack: Vec<(usize, Vec<usize>)> =
        vec![(target, direct_deps(graph, target).into_iter().collect())];
    marks[target] = Mark::Active;
    while let Some((node, pending)) = stack.last_mut() {
        let node = *node;
        match pending.pop() {
            Some(dep) => {
                if dep >= graph.stages.len() {
                    bail!(
                        "stage {} refers to stage {dep}, which does not exist",
                        graph.stages[node].display_name(node)
                    );
                }
                match marks[dep] {
                    Mark::Done => {}
                    Mark::Active => {
                        let start = stack.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                        let mut names: Vec<String> = stack[start..]
                            .iter()
                            .map(|(n, _)| graph.stages[*n].display_name(*n))
                            .collect();
                        names.push(graph.stages[dep].display_name(dep));
                        bail!(
                            "circular dependency between stages: {}; a stage cannot (indirectly) copy from or build on itself",
                            names.join(" -> ")
                        );
                    }
                    Mark::New => {
                        marks[dep] = Mark::Active;
                        stack.push((dep, direct_deps(graph, dep).into_iter().collect()));
                    }
                }
            }
            None => {
                marks[node] = Mark::Done;
                order.push(node);
                stack.pop();
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Copy, Stage, Step};

    fn stage(name: &str, base: Base, copies_from: &[usize]) -> Stage {
        Stage {
            name: Some(name.into()),
            base,
            platform: crate::platform::Platform::linux("amd64", None),
            steps: copies_from
                .iter()
                .map(|i| Step {
                    op: Op::Copy(Copy::new(CopyFrom::Stage(*i), vec![], "/")),
                    origin: None,
                })
                .collect(),
            origin: None,
        }
    }

    #[test]
    fn order_skips_unused_and_puts_deps_first() {
        let g = Graph {
            stages: vec![
                stage("a", Base::Scratch, &[]),
                stage("unused", Base::Scratch, &[]),
                stage("b", Base::Stage(0), &[]),
                stage("c", Base::Scratch, &[2, 0]),
            ],
            target: 3,
        };
        assert_eq!(build_order(&g, 3).unwrap(), vec![0, 2, 3]);
        assert_eq!(build_order(&g, 1).unwrap(), vec![1]);
        assert!(build_order(&g, 9).is_err());
    }

    #[test]
    fn cycles_are_named() {
        let g = Graph {
            stages: vec![
                stage("a", Base::Scratch, &[1]),
                stage("b", Base::Scratch, &[0]),
            ],
            target: 1,
        };
        let e = build_order(&g, 1).unwrap_err().to_string();
        assert!(
            e.contains("circular dependency between stages: b -> a -> b"),
            "{e}"
        );
    }
}
