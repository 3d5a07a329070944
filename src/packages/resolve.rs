//! The resolver: a request (package names, optional version requests) and
//! a base set → the closure of packages to install, with why each is in it.
//!
//! Greedy and deterministic, like apt's default: requests are taken base
//! first then by name; for each chosen package its `Pre-Depends` and
//! `Depends` groups (and `Recommends` when asked) are visited in field
//! order; a group already satisfied by a chosen package (or a `Provides`)
//! is kept as is, otherwise the first alternative with a candidate that
//! conflicts with nothing chosen wins (real packages newest first, then
//! providers by name). `Conflicts`/`Breaks` are checked both ways when a
//! candidate is considered and once more over the final set.
//!
//! Images are single-architecture, so every package is native:
//! `Multi-Arch` decides how dpkg names a package (`same` ⇒ `name:arch`)
//! and `:any`/`:native` qualifiers are accepted on native packages.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;

use anyhow::{Context, bail};

use super::index::{Pkg, SuiteIndex};
use super::relation::{ArchQual, Dep, Group};
use super::repo::{self, Repo};
use super::version::{self, Version};
use crate::Result;
use crate::error::CodedError;

/// A requested package: `name`, `name@prefix` (`nodejs@20`, `python3@3.13`)
/// or `name=exact-version`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    pub name: String,
    pub version: Option<DebVersionReq>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DebVersionReq {
    /// Upstream version starts with these dotted components.
    Prefix(String),
    Exact(String),
}

impl DebVersionReq {
    pub fn matches(&self, v: &Version) -> bool {
        match self {
            DebVersionReq::Prefix(p) => version::matches_prefix(v, p),
            DebVersionReq::Exact(e) => Version::parse(e).is_ok_and(|e| &e == v),
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            None => f.write_str(&self.name),
            Some(DebVersionReq::Prefix(p)) => write!(f, "{}@{p}", self.name),
            Some(DebVersionReq::Exact(e)) => write!(f, "{}={e}", self.name),
        }
    }
}

impl FromStr for Request {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Request> {
        let s = s.trim();
        let (name, version) = if let Some((n, v)) = s.split_once('@') {
            (n, Some(DebVersionReq::Prefix(v.to_string())))
        } else if let Some((n, v)) = s.split_once('=') {
            (n, Some(DebVersionReq::Exact(v.to_string())))
        } else {
            (s, None)
        };
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
        if !ok {
            bail!(
                "{s:?} is not a package request: use a Debian package name (lowercase letters, digits, + - .), optionally with @VERSION-PREFIX (nodejs@20) or =EXACT-VERSION"
            );
        }
        if let Some(DebVersionReq::Prefix(v) | DebVersionReq::Exact(v)) = &version
            && (v.is_empty() || !v.starts_with(|c: char| c.is_ascii_digit()))
        {
            bail!("{s:?}: the version after @ or = must start with a digit (e.g. nodejs@20)");
        }
        Ok(Request {
            name: name.to_string(),
            version,
        })
    }
}

/// The base package set an image starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum BaseVariant {
    /// libc, base-files, base-passwd, ca-certificates, tzdata, netbase, dash, coreutils.
    #[default]
    Minimal,
    /// Essential + Priority: required + apt (mmdebstrap's minbase).
    Minbase,
    /// Only what is requested.
    None,
}

pub const MINIMAL: &[&str] = &[
    "base-files",
    "base-passwd",
    "ca-certificates",
    "coreutils",
    "dash",
    "libc6",
    "netbase",
    "tzdata",
];

impl BaseVariant {
    pub fn packages(self, idx: &SuiteIndex) -> Vec<String> {
        match self {
            BaseVariant::Minimal => MINIMAL.iter().map(|s| s.to_string()).collect(),
            BaseVariant::Minbase => {
                let mut v = idx.essential_or_required();
                v.push("apt".into());
                v.sort();
                v.dedup();
                v
            }
            BaseVariant::None => Vec::new(),
        }
    }
}

/// Resolver options.
#[derive(Clone, Debug, Default)]
pub struct ResolveOptions {
    pub base: BaseVariant,
    pub recommends: bool,
}

/// Why a package is in the closure.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Reason {
    Requested {
        request: String,
    },
    Base {
        set: String,
    },
    Dependency {
        of: String,
        field: String,
        relation: String,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Requested { request } => write!(f, "requested ({request})"),
            Reason::Base { set } => write!(f, "base set {set}"),
            Reason::Dependency {
                of,
                field,
                relation,
            } => write!(f, "{of} {field}: {relation}"),
        }
    }
}

/// One package of a resolution.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub pkg: Pkg,
    pub reason: Reason,
}

/// The closure.
#[derive(Clone, Debug)]
pub struct Resolution {
    pub suite: String,
    pub arch: String,
    /// The suite's Release date.
    pub date: String,
    /// Sorted by name.
    pub packages: Vec<Resolved>,
    /// name → names of chosen packages it depends on.
    pub edges: BTreeMap<String, BTreeSet<String>>,
}

impl Resolution {
    pub fn get(&self, name: &str) -> Option<&Resolved> {
        self.packages.iter().find(|r| r.pkg.name == name)
    }

    /// The chain of reasons from a package back to a request.
    pub fn why(&self, name: &str) -> Result<Vec<(String, Reason)>> {
        let mut out = Vec::new();
        let mut cur = name.to_string();
        let mut seen = BTreeSet::new();
        loop {
            let r = self.get(&cur).with_context(|| {
                format!(
                    "{cur} is not in the resolved set of {} packages",
                    self.packages.len()
                )
            })?;
            out.push((cur.clone(), r.reason.clone()));
            match &r.reason {
                Reason::Dependency { of, .. } if seen.insert(of.clone()) => cur = of.clone(),
                _ => return Ok(out),
            }
        }
    }
}

/// A request that no suite (or not the chosen one) can satisfy.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unsatisfiable(pub String);

struct State<'a> {
    idx: &'a SuiteIndex,
    arch: &'a str,
    chosen: BTreeMap<String, usize>,
    provided: HashMap<String, Vec<(String, Option<Version>)>>,
    negatives: Vec<(String, Dep)>,
    reasons: BTreeMap<String, Reason>,
    edges: BTreeMap<String, BTreeSet<String>>,
    queue: VecDeque<String>,
}

impl<'a> State<'a> {
    fn pkg(&self, i: usize) -> &'a Pkg {
        &self.idx.pkgs[i]
    }

    fn arch_ok(&self, d: &Dep, p: &Pkg) -> bool {
        match &d.arch {
            ArchQual::Named(a) => p.arch == *a || p.arch == "all",
            _ => true,
        }
    }

    /// A chosen package satisfying `d`, if any.
    fn satisfier(&self, d: &Dep) -> Option<String> {
        if let Some(&i) = self.chosen.get(&d.name) {
            let p = self.pkg(i);
            if d.version_ok(Some(&p.version)) && self.arch_ok(d, p) {
                return Some(p.name.clone());
            }
        }
        self.provided.get(&d.name).and_then(|v| {
            v.iter()
                .find(|(_, pv)| d.version_ok(pv.as_ref()))
                .map(|(n, _)| n.clone())
        })
    }

    /// Whether package `p` would conflict with the chosen set; names the conflict.
    fn conflict(&self, p: &Pkg) -> Result<Option<String>> {
        let matches = |d: &Dep, q: &Pkg| -> bool {
            if q.name == d.name && d.version_ok(Some(&q.version)) {
                return true;
            }
            q.provides
                .iter()
                .any(|(n, v)| *n == d.name && d.version_ok(v.as_ref()))
        };
        for (owner, d) in &self.negatives {
            if *owner != p.name && matches(d, p) {
                return Ok(Some(format!("{owner} conflicts with/breaks {d}")));
            }
        }
        for field in ["Conflicts", "Breaks"] {
            for g in p.relations(field, self.arch)? {
                for d in g {
                    for &i in self.chosen.values() {
                        let q = self.pkg(i);
                        if q.name != p.name && matches(&d, q) {
                            return Ok(Some(format!(
                                "{} {} {field} {d}, but {} {} is chosen",
                                p.name, p.version, q.name, q.version
                            )));
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    fn choose(&mut self, i: usize, reason: Reason) -> Result<()> {
        let p = self.pkg(i);
        self.chosen.insert(p.name.clone(), i);
        for (n, v) in &p.provides {
            self.provided
                .entry(n.clone())
                .or_default()
                .push((p.name.clone(), v.clone()));
        }
        for field in ["Conflicts", "Breaks"] {
            for g in p.relations(field, self.arch)? {
                for d in g {
                    self.negatives.push((p.name.clone(), d));
                }
            }
        }
        self.reasons.insert(p.name.clone(), reason);
        self.queue.push_back(p.name.clone());
        Ok(())
    }

    /// Candidates for one alternative, in preference order.
    fn candidates(&self, d: &Dep) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .idx
            .by_name(&d.name)
            .filter(|(_, p)| d.version_ok(Some(&p.version)) && self.arch_ok(d, p))
            .map(|(i, _)| i)
            .collect();
        // A real package already chosen with another version cannot be replaced.
        if self.chosen.contains_key(&d.name) {
            out.clear();
        }
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for (i, p, v) in self.idx.providers(&d.name) {
            if d.version_ok(v) && seen.insert(p.name.clone()) && !self.chosen.contains_key(&p.name)
            {
                // Only the best version of each provider.
                if self
                    .idx
                    .best(&p.name)
                    .is_some_and(|b| b.version == p.version)
                    || p.backports
                {
                    out.push(i);
                }
            }
        }
        out
    }

    fn visit(&mut self, name: &str, recommends: bool) -> Result<()> {
        let i = self.chosen[name];
        let p = self.pkg(i);
        let mut fields = vec!["Pre-Depends", "Depends"];
        if recommends {
            fields.push("Recommends");
        }
        for field in fields {
            for g in p.relations(field, self.arch)? {
                self.visit_group(p, field, &g)?;
            }
        }
        Ok(())
    }

    fn visit_group(&mut self, p: &Pkg, field: &str, g: &Group) -> Result<()> {
        let text = g
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(" | ");
        for d in g {
            if let Some(s) = self.satisfier(d) {
                self.edges.entry(p.name.clone()).or_default().insert(s);
                return Ok(());
            }
        }
        let mut why_not = Vec::new();
        for d in g {
            for c in self.candidates(d) {
                let cp = self.pkg(c);
                if let Some(conf) = self.conflict(cp)? {
                    why_not.push(conf);
                    continue;
                }
                self.edges
                    .entry(p.name.clone())
                    .or_default()
                    .insert(cp.name.clone());
                return self.choose(
                    c,
                    Reason::Dependency {
                        of: p.name.clone(),
                        field: field.to_string(),
                        relation: text,
                    },
                );
            }
        }
        if field == "Recommends" {
            return Ok(());
        }
        let mut msg = format!(
            "{} {} {field}: {text}, which nothing in {} ({}) satisfies",
            p.name, p.version, self.idx.suite, self.idx.arch
        );
        for d in g {
            let have: Vec<String> = self
                .idx
                .by_name(&d.name)
                .map(|(_, q)| q.version.to_string())
                .collect();
            if !have.is_empty() {
                msg.push_str(&format!("; {} has {}", d.name, have.join(", ")));
            }
            if let Some(&c) = self.chosen.get(&d.name) {
                msg.push_str(&format!(" (chosen: {})", self.pkg(c).version));
            }
        }
        if !why_not.is_empty() {
            msg.push_str(&format!("; refused: {}", why_not.join("; ")));
        }
        bail!(CodedError::new(crate::error::code::FAILURE, msg))
    }
}

/// Resolves requests against one suite index.
pub fn resolve(
    idx: &SuiteIndex,
    requests: &[Request],
    opts: &ResolveOptions,
) -> Result<Resolution> {
    let mut st = State {
        idx,
        arch: &idx.arch,
        chosen: BTreeMap::new(),
        provided: HashMap::new(),
        negatives: Vec::new(),
        reasons: BTreeMap::new(),
        edges: BTreeMap::new(),
        queue: VecDeque::new(),
    };
    let mut reqs: Vec<Request> = requests.to_vec();
    reqs.sort();
    reqs.dedup();
    let base_name = format!("{:?}", opts.base).to_lowercase();
    let mut all: Vec<(Request, Reason)> = opts
        .base
        .packages(idx)
        .into_iter()
        .map(|n| {
            (
                Request {
                    name: n,
                    version: None,
                },
                Reason::Base {
                    set: base_name.clone(),
                },
            )
        })
        .collect();
    // Requests first so a version request wins over an unversioned base entry.
    let mut user: Vec<(Request, Reason)> = reqs
        .iter()
        .map(|r| {
            (
                r.clone(),
                Reason::Requested {
                    request: r.to_string(),
                },
            )
        })
        .collect();
    user.append(&mut all);
    for (req, reason) in user {
        request_one(&mut st, &req, reason)?;
    }
    while let Some(name) = st.queue.pop_front() {
        st.visit(&name, opts.recommends)?;
    }
    // Final check over the whole set (Conflicts and Breaks are symmetric in effect).
    for &i in st.chosen.values() {
        let p = st.pkg(i);
        let others = State {
            idx,
            arch: &idx.arch,
            chosen: st
                .chosen
                .iter()
                .filter(|(n, _)| **n != p.name)
                .map(|(n, i)| (n.clone(), *i))
                .collect(),
            provided: HashMap::new(),
            negatives: Vec::new(),
            reasons: BTreeMap::new(),
            edges: BTreeMap::new(),
            queue: VecDeque::new(),
        };
        if let Some(c) = others.conflict(p)? {
            bail!(CodedError::new(
                crate::error::code::FAILURE,
                format!(
                    "the requested packages conflict: {c}; drop one of them or pick another suite"
                )
            ));
        }
    }
    let packages = st
        .chosen
        .iter()
        .map(|(n, &i)| Resolved {
            pkg: st.pkg(i).clone(),
            reason: st.reasons[n].clone(),
        })
        .collect();
    Ok(Resolution {
        suite: idx.suite.clone(),
        arch: idx.arch.clone(),
        date: idx.date().to_string(),
        packages,
        edges: st.edges,
    })
}

fn request_one(st: &mut State<'_>, req: &Request, reason: Reason) -> Result<()> {
    let idx = st.idx;
    if !idx.knows(&req.name) {
        let close = idx.close_names(&req.name, 5);
        let hint = if close.is_empty() {
            String::new()
        } else {
            format!("; close names: {}", close.join(", "))
        };
        bail!(Unsatisfiable(format!(
            "unknown package {:?} in {} ({}){hint}",
            req.name, idx.suite, idx.arch
        )));
    }
    if let Some(&c) = st.chosen.get(&req.name) {
        let p = st.pkg(c);
        if req.version.as_ref().is_none_or(|v| v.matches(&p.version)) {
            return Ok(());
        }
    }
    let dep = Dep {
        name: req.name.clone(),
        arch: ArchQual::None,
        constraint: None,
    };
    if st.satisfier(&dep).is_some() && req.version.is_none() {
        return Ok(());
    }
    let cands: Vec<usize> = st
        .candidates(&dep)
        .into_iter()
        .filter(|&i| {
            let p = st.pkg(i);
            match &req.version {
                None => true,
                // A version request names the real package's version (or the
                // version a provider gives the virtual name).
                Some(v) => {
                    if p.name == req.name {
                        v.matches(&p.version)
                    } else {
                        p.provides.iter().any(|(n, pv)| {
                            *n == req.name && pv.as_ref().is_some_and(|pv| v.matches(pv))
                        })
                    }
                }
            }
        })
        .collect();
    // The best candidate that conflicts with nothing chosen so far.
    let mut first_conflict = None;
    for c in &cands {
        match st.conflict(st.pkg(*c))? {
            Some(conf) => {
                first_conflict.get_or_insert(conf);
            }
            None => return st.choose(*c, reason),
        }
    }
    if let Some(conf) = first_conflict {
        bail!(CodedError::new(
            crate::error::code::FAILURE,
            format!("request {req} conflicts: {conf}")
        ));
    }
    let offers = offers(idx, &req.name);
    bail!(Unsatisfiable(format!(
        "no version of {} in {} matches {req} ({} has {offers})",
        req.name, idx.suite, idx.suite
    )))
}

/// The versions a suite offers for a name (real or provided), comma-separated.
pub fn offers(idx: &SuiteIndex, name: &str) -> String {
    let mut v: Vec<String> = idx
        .by_name(name)
        .map(|(_, p)| format!("{} ({})", p.version, p.dist))
        .collect();
    for (_, p, pv) in idx.providers(name) {
        v.push(format!(
            "{} {} provides {}",
            p.name,
            p.version,
            pv.map(|x| x.to_string())
                .unwrap_or_else(|| "unversioned".into())
        ));
    }
    if v.is_empty() {
        "nothing".into()
    } else {
        v.join(", ")
    }
}

/// Whether every versioned request has a candidate in this suite.
pub fn suite_satisfies(idx: &SuiteIndex, requests: &[Request]) -> bool {
    requests.iter().all(|r| match &r.version {
        None => idx.knows(&r.name),
        Some(v) => {
            idx.by_name(&r.name).any(|(_, p)| v.matches(&p.version))
                || idx
                    .providers(&r.name)
                    .any(|(_, _, pv)| pv.is_some_and(|pv| v.matches(pv)))
        }
    })
}

/// Picks the suite (the given one, or the first of [`repo::SUITES`] that
/// satisfies every version request) and resolves in it.
pub fn resolve_in_repo(
    repo: &Repo,
    suite: Option<&str>,
    requests: &[Request],
    opts: &ResolveOptions,
) -> Result<(std::sync::Arc<SuiteIndex>, Resolution)> {
    if let Some(s) = suite {
        let idx = repo.load_suite(s)?;
        let res = resolve(&idx, requests, opts)?;
        return Ok((idx, res));
    }
    let versioned = requests.iter().any(|r| r.version.is_some());
    if !versioned {
        let idx = repo.load_suite(repo::DEFAULT_SUITE)?;
        let res = resolve(&idx, requests, opts)?;
        return Ok((idx, res));
    }
    let mut report = Vec::new();
    for s in repo::SUITES {
        let idx = repo.load_suite(s)?;
        if suite_satisfies(&idx, requests) {
            let res = resolve(&idx, requests, opts)?;
            return Ok((idx, res));
        }
        for r in requests.iter().filter(|r| r.version.is_some()) {
            report.push(format!("  {s}: {} → {}", r.name, offers(&idx, &r.name)));
        }
    }
    let reqs: Vec<String> = requests.iter().map(|r| r.to_string()).collect();
    bail!(Unsatisfiable(format!(
        "no Debian suite satisfies every request ({}); never falling back silently. What each suite offers:\n{}",
        reqs.join(" "),
        report.join("\n")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::repo::{Archive, Release};

    const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn index(pkgs: &[&str]) -> SuiteIndex {
        let archive = Archive {
            base: "http://mirror/debian".into(),
            dist: "trixie".into(),
            optional: false,
        };
        let rel = Release::parse(
            archive,
            &format!("Date: Sat, 01 Nov 2025 00:00:00 UTC\nSHA256:\n {SHA} 1 main/binary-amd64/Packages\n"),
            vec![],
        )
        .unwrap();
        let text: String = pkgs
            .iter()
            .map(|p| {
                format!(
                    "{p}\nArchitecture: amd64\nFilename: pool/x.deb\nSHA256: {SHA}\nSize: 1\n\n"
                )
            })
            .collect();
        let mut idx = SuiteIndex::new("trixie", "amd64");
        idx.add(&rel, 0, &text).unwrap();
        idx.finish();
        idx
    }

    fn names(r: &Resolution) -> Vec<&str> {
        r.packages.iter().map(|p| p.pkg.name.as_str()).collect()
    }

    fn req(s: &str) -> Request {
        s.parse().unwrap()
    }

    fn opts() -> ResolveOptions {
        ResolveOptions {
            base: BaseVariant::None,
            recommends: false,
        }
    }

    #[test]
    fn alternatives_versions_provides_and_conflicts() {
        let idx = index(&[
            "Package: app\nVersion: 1\nPre-Depends: libc\nDepends: b | c, d (>= 2), awk\nRecommends: extra",
            "Package: b\nVersion: 1\nConflicts: libc",
            "Package: c\nVersion: 1:0.5",
            "Package: d\nVersion: 1.0",
            "Package: d\nVersion: 2.0~rc1",
            "Package: d\nVersion: 2.0",
            "Package: libc\nVersion: 2.41",
            "Package: gawk\nVersion: 5\nPriority: optional\nProvides: awk",
            "Package: mawk\nVersion: 1.3\nPriority: required\nProvides: awk",
            "Package: extra\nVersion: 1",
        ]);
        let r = resolve(&idx, &[req("app")], &opts()).unwrap();
        // b conflicts with the already chosen libc, so c is taken; d is the newest;
        // awk goes to the required provider; Recommends are off.
        assert_eq!(names(&r), ["app", "c", "d", "libc", "mawk"]);
        assert_eq!(r.get("d").unwrap().pkg.version.as_str(), "2.0");
        let why = r.why("mawk").unwrap();
        assert_eq!(why.last().unwrap().0, "app");
        let with = resolve(
            &idx,
            &[req("app")],
            &ResolveOptions {
                recommends: true,
                ..opts()
            },
        )
        .unwrap();
        assert!(names(&with).contains(&"extra"));
        // Deterministic whatever the request order.
        let a = resolve(&idx, &[req("gawk"), req("app")], &opts()).unwrap();
        let b = resolve(&idx, &[req("app"), req("gawk")], &opts()).unwrap();
        assert_eq!(names(&a), names(&b));
        assert!(names(&a).contains(&"gawk") && !names(&a).contains(&"mawk"));
    }

    #[test]
    fn versioned_provides_and_version_requests() {
        let idx = index(&[
            "Package: py\nVersion: 3.13.5-1\nProvides: python3-abi (= 3.13)",
            "Package: user\nVersion: 1\nDepends: python3-abi (>= 3.12)",
            "Package: old\nVersion: 1\nDepends: python3-abi (<< 3)",
            "Package: x\nVersion: 1\nConflicts: py (>= 3)",
        ]);
        assert_eq!(
            names(&resolve(&idx, &[req("user")], &opts()).unwrap()),
            ["py", "user"]
        );
        let e = format!("{:#}", resolve(&idx, &[req("old")], &opts()).unwrap_err());
        assert!(e.contains("python3-abi (<< 3)"), "{e}");
        let e = format!(
            "{:#}",
            resolve(&idx, &[req("x"), req("user")], &opts()).unwrap_err()
        );
        assert!(e.contains("conflicts"), "{e}");
        assert!(resolve(&idx, &[req("py@3.13")], &opts()).is_ok());
        let e = format!(
            "{:#}",
            resolve(&idx, &[req("py@3.11")], &opts()).unwrap_err()
        );
        assert!(e.contains("3.13.5-1"), "{e}");
        let e = format!("{:#}", resolve(&idx, &[req("pyy")], &opts()).unwrap_err());
        assert!(e.contains("close names: py"), "{e}");
        assert!(suite_satisfies(&idx, &[req("py@3.13")]));
        assert!(!suite_satisfies(&idx, &[req("py@3.14")]));
        assert!("Bad".parse::<Request>().is_err());
        assert!("node@x".parse::<Request>().is_err());
    }
}
