//! Merging plans: Nixpacks' rules (a higher-priority source — config
//! file, environment, CLI — over a lower one: providers' plans) with its
//! defects fixed: a higher list that contains `"..."`/`"@auto"` splices the lower
//! list in exactly once (the result keeps a single marker so later merges
//! still splice, and never duplicates), and scalars take the higher value.

use std::collections::BTreeMap;

use super::model::{BuildPlan, Phase, StartPhase, Toolchain, default_depends_on, is_marker};

/// `fill(lower, higher)` for one list field.
///
/// * higher unset → lower
/// * higher without a marker → higher (replaces)
/// * higher with markers → its first marker is replaced by lower (which
///   keeps its own marker, if any, as the one splice point left); further
///   markers in higher are dropped.
pub fn fill(lower: Option<Vec<String>>, higher: Option<Vec<String>>) -> Option<Vec<String>> {
    let Some(higher) = higher else { return lower };
    if !higher.iter().any(|s| is_marker(s)) {
        return Some(higher);
    }
    let lower = lower.unwrap_or_else(|| vec!["...".to_string()]);
    let lower_has_marker = lower.iter().any(|s| is_marker(s));
    let mut out = Vec::with_capacity(lower.len() + higher.len());
    let mut spliced = false;
    for item in higher {
        if is_marker(&item) {
            if !spliced {
                out.extend(lower.iter().cloned());
                if !lower_has_marker {
                    // Keep one splice point so an even lower list (merged
                    // later, e.g. the provider's) still goes here.
                    out.push("...".to_string());
                }
                spliced = true;
            }
        } else {
            out.push(item);
        }
    }
    Some(out)
}

/// Removes the markers and, for package lists, duplicates (first wins).
pub fn pin_list(list: &mut Option<Vec<String>>, dedupe: bool) {
    if let Some(l) = list {
        l.retain(|s| !is_marker(s));
        if dedupe {
            let mut seen = std::collections::HashSet::new();
            l.retain(|s| seen.insert(s.clone()));
        }
    }
}

fn scalar<T>(lower: Option<T>, higher: Option<T>) -> Option<T> {
    higher.or(lower)
}

fn map_union(
    lower: Option<BTreeMap<String, String>>,
    higher: Option<BTreeMap<String, String>>,
) -> Option<BTreeMap<String, String>> {
    match (lower, higher) {
        (None, h) => h,
        (l, None) => l,
        (Some(mut l), Some(h)) => {
            l.extend(h);
            Some(l)
        }
    }
}

fn merge_phase(lower: Phase, higher: Phase) -> Phase {
    Phase {
        name: scalar(lower.name, higher.name),
        depends_on: fill(lower.depends_on, higher.depends_on),
        nix_pkgs: fill(lower.nix_pkgs, higher.nix_pkgs),
        nix_libs: fill(lower.nix_libs, higher.nix_libs),
        nix_overlays: fill(lower.nix_overlays, higher.nix_overlays),
        nixpkgs_archive: scalar(lower.nixpkgs_archive, higher.nixpkgs_archive),
        apt_pkgs: fill(lower.apt_pkgs, higher.apt_pkgs),
        cmds: fill(lower.cmds, higher.cmds),
        only_include_files: fill(lower.only_include_files, higher.only_include_files),
        cache_directories: fill(lower.cache_directories, higher.cache_directories),
        paths: fill(lower.paths, higher.paths),
    }
}

fn merge_start(lower: Option<StartPhase>, higher: Option<StartPhase>) -> Option<StartPhase> {
    match (lower, higher) {
        (None, h) => h,
        (l, None) => l,
        (Some(l), Some(h)) => Some(StartPhase {
            cmd: scalar(l.cmd, h.cmd),
            run_image: scalar(l.run_image, h.run_image),
            only_include_files: fill(l.only_include_files, h.only_include_files),
            user: scalar(l.user, h.user),
            apt_pkgs: fill(l.apt_pkgs, h.apt_pkgs),
            runtime: scalar(l.runtime, h.runtime),
        }),
    }
}

fn merge_toolchains(
    lower: Option<Vec<Toolchain>>,
    higher: Option<Vec<Toolchain>>,
) -> Option<Vec<Toolchain>> {
    match (lower, higher) {
        (None, h) => h,
        (l, None) => l,
        (Some(mut l), Some(h)) => {
            for t in h {
                match l.iter_mut().find(|x| x.name == t.name) {
                    Some(x) => *x = t,
                    None => l.push(t),
                }
            }
            Some(l)
        }
    }
}

/// `lower ⊕ higher`.
pub fn merge(lower: BuildPlan, higher: BuildPlan) -> BuildPlan {
    let phases = match (lower.phases, higher.phases) {
        (None, h) => h,
        (l, None) => l,
        (Some(l), Some(h)) if l.is_empty() => Some(h),
        (Some(mut l), Some(h)) => {
            for (name, hp) in h {
                let lp = match l.remove(&name) {
                    Some(p) => p,
                    None => Phase {
                        name: Some(name.clone()),
                        depends_on: default_depends_on(&name),
                        ..Phase::default()
                    },
                };
                l.insert(name, merge_phase(lp, hp));
            }
            Some(l)
        }
    };
    BuildPlan {
        providers: fill(lower.providers, higher.providers),
        build_image: scalar(lower.build_image, higher.build_image),
        variables: map_union(lower.variables, higher.variables),
        static_assets: map_union(lower.static_assets, higher.static_assets),
        phases,
        start: merge_start(lower.start, higher.start),
        suite: scalar(lower.suite, higher.suite),
        toolchains: merge_toolchains(lower.toolchains, higher.toolchains),
        build_variables: map_union(lower.build_variables, higher.build_variables),
        secrets: fill(lower.secrets, higher.secrets),
        build_only_pkgs: fill(lower.build_only_pkgs, higher.build_only_pkgs),
    }
}

/// Merges lowest first.
pub fn merge_all(plans: impl IntoIterator<Item = BuildPlan>) -> BuildPlan {
    plans.into_iter().fold(BuildPlan::default(), merge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn fill_rules() {
        assert_eq!(fill(v(&["a"]), None), v(&["a"]));
        assert_eq!(fill(v(&["a"]), v(&["x"])), v(&["x"]));
        assert_eq!(fill(v(&["a"]), v(&[])), v(&[]));
        assert_eq!(
            fill(v(&["a", "b"]), v(&["...", "x"])),
            v(&["a", "b", "...", "x"])
        );
        assert_eq!(
            fill(v(&["a"]), v(&["x", "@auto", "y"])),
            v(&["x", "a", "...", "y"])
        );
    }

    #[test]
    fn double_splice_does_not_duplicate() {
        // provider < file ["...","cowsay"] < env ["...","sl"]
        let file_env = fill(v(&["...", "cowsay"]), v(&["...", "sl"]));
        let mut all = fill(v(&["nodejs", "npm"]), file_env);
        pin_list(&mut all, true);
        assert_eq!(all, v(&["nodejs", "npm", "cowsay", "sl"]));
    }

    #[test]
    fn new_phase_defaults() {
        let mut lower = BuildPlan::default();
        lower.add_phase(Phase::new("setup"));
        let h2 = BuildPlan {
            phases: Some(BTreeMap::from([
                ("build".to_string(), Phase::default()),
                ("lint".to_string(), Phase::default()),
            ])),
            ..BuildPlan::default()
        };
        let m = merge(lower, h2);
        assert_eq!(
            m.phase("build").and_then(|p| p.depends_on.clone()),
            v(&["install"])
        );
        assert_eq!(m.phase("lint").and_then(|p| p.depends_on.clone()), None);
        // A plan without phases takes the higher phases as they are.
        let bare = merge(BuildPlan::default(), m.clone());
        assert_eq!(bare.phases, m.phases);
    }
}
