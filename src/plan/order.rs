//! Phase ordering: Kahn's algorithm level by level, alphabetical inside a
//! level (Nixpacks' order, so plans sort the same way). Dependencies on
//! phases that do not exist are ignored; a cycle is an error naming it.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::bail;

use super::model::Phase;

/// Phase names in execution order.
pub fn order(phases: &BTreeMap<String, Phase>) -> crate::Result<Vec<String>> {
    let mut deps: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, p) in phases {
        let set = p
            .depends_on
            .iter()
            .flatten()
            .map(String::as_str)
            .filter(|d| phases.contains_key(*d) && *d != name)
            .collect();
        deps.insert(name, set);
    }
    let mut out = Vec::with_capacity(phases.len());
    while !deps.is_empty() {
        let ready: Vec<&str> = deps
            .iter()
            .filter(|(_, d)| d.is_empty())
            .map(|(n, _)| *n)
            .collect();
        if ready.is_empty() {
            let names: Vec<&str> = deps.keys().copied().collect();
            bail!(
                "the phases {} depend on each other in a cycle: fix their `dependsOn`",
                names.join(", ")
            );
        }
        for n in &ready {
            deps.remove(n);
        }
        for d in deps.values_mut() {
            for n in &ready {
                d.remove(n);
            }
        }
        out.extend(ready.into_iter().map(String::from));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(deps: &[&str]) -> Phase {
        Phase {
            depends_on: Some(deps.iter().map(|s| s.to_string()).collect()),
            ..Phase::default()
        }
    }

    #[test]
    fn levels_alphabetical_and_missing_ignored() {
        let m = BTreeMap::from([
            ("setup".to_string(), Phase::default()),
            ("lint".to_string(), Phase::default()),
            ("install".to_string(), p(&["setup", "nope"])),
            ("build".to_string(), p(&["install"])),
        ]);
        assert_eq!(
            order(&m).unwrap(),
            vec!["lint", "setup", "install", "build"]
        );
    }

    #[test]
    fn cycle_is_an_error() {
        let m = BTreeMap::from([("a".to_string(), p(&["b"])), ("b".to_string(), p(&["a"]))]);
        let e = order(&m).unwrap_err().to_string();
        assert!(e.contains("cycle") && e.contains("a, b"), "{e}");
    }
}
