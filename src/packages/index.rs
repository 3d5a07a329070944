//! A suite's package index: every binary package of the suite's archives
//! for one architecture, with name and virtual-package lookups.

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::Arc;

use anyhow::{Context, bail};

use super::relation::{self, Group};
use super::repo::Release;
use super::version::Version;
use crate::Result;
use crate::oci::digest::Digest;

/// `Multi-Arch` of a package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MultiArch {
    #[default]
    No,
    Same,
    Foreign,
    Allowed,
}

/// One binary package as the index describes it.
#[derive(Clone, Debug)]
pub struct Pkg {
    pub name: String,
    pub version: Version,
    pub arch: String,
    pub multi_arch: MultiArch,
    pub essential: bool,
    pub priority: String,
    pub provides: Vec<(String, Option<Version>)>,
    pub filename: String,
    pub sha256: Digest,
    pub size: u64,
    /// KiB, as the index says.
    pub installed_size: u64,
    /// Mirror base URL the filename is relative to.
    pub base: Arc<str>,
    /// The archive (dist) it comes from.
    pub dist: Arc<str>,
    /// From `-backports`: only chosen when nothing else satisfies.
    pub backports: bool,
    /// The index paragraph's [`KEPT_FIELDS`] (relations are parsed on
    /// demand); the rest of the paragraph is not kept: a suite's index is
    /// ~65k paragraphs and resolving reads only these.
    pub para: Arc<str>,
}

impl Pkg {
    pub fn url(&self) -> String {
        format!("{}/{}", self.base, self.filename)
    }

    /// `name:arch`, the key dpkg uses for `Multi-Arch: same` packages.
    pub fn dpkg_name(&self) -> String {
        if self.multi_arch == MultiArch::Same {
            format!("{}:{}", self.name, self.arch)
        } else {
            self.name.clone()
        }
    }

    pub fn field(&self, name: &str) -> Option<String> {
        super::control::field(&self.para, name)
    }

    /// A relationship field, parsed.
    pub fn relations(&self, field: &str, arch: &str) -> Result<Vec<Group>> {
        match self.field(field) {
            Some(v) => relation::parse(&v, arch).with_context(|| {
                format!(
                    "{} {} ({}): bad {field} field",
                    self.name, self.version, self.dist
                )
            }),
            None => Ok(Vec::new()),
        }
    }

    pub fn id(&self) -> String {
        format!("{}={}", self.name, self.version)
    }
}

/// The fields of an index paragraph that [`Pkg::field`] can return besides
/// those parsed into [`Pkg`] (the relations the resolver reads, and the
/// source package).
pub const KEPT_FIELDS: &[&str] = &[
    "Pre-Depends",
    "Depends",
    "Recommends",
    "Conflicts",
    "Breaks",
    "Source",
];

/// All packages of a suite for one architecture.
pub struct SuiteIndex {
    pub suite: String,
    pub arch: String,
    pub releases: Vec<Release>,
    pub pkgs: Vec<Pkg>,
    by_name: HashMap<String, Vec<usize>>,
    providers: HashMap<String, Vec<(usize, Option<Version>)>>,
}

impl SuiteIndex {
    pub fn new(suite: &str, arch: &str) -> SuiteIndex {
        SuiteIndex {
            suite: suite.to_string(),
            arch: arch.to_string(),
            releases: Vec::new(),
            pkgs: Vec::new(),
            by_name: HashMap::new(),
            providers: HashMap::new(),
        }
    }

    /// The main archive's Release date (what the lockfile records).
    pub fn date(&self) -> &str {
        self.releases.first().map_or("", |r| r.date.as_str())
    }

    /// Adds the packages of one `Packages` text.
    pub fn add(&mut self, rel: &Release, prio: usize, text: &str) -> Result<()> {
        self.add_from(rel, prio, text.as_bytes())
    }

    /// Adds the packages of a `Packages` file as it is read, a paragraph at
    /// a time: the 56 MB trixie text is never held whole.
    pub fn add_from(&mut self, rel: &Release, _prio: usize, mut r: impl BufRead) -> Result<()> {
        let base: Arc<str> = Arc::from(rel.archive.base.as_str());
        let dist: Arc<str> = Arc::from(rel.archive.dist.as_str());
        let backports = rel.archive.dist.ends_with("-backports");
        let mut para = String::new();
        let mut first_line = 0;
        let mut line_no = 0;
        let mut line = String::new();
        loop {
            line.clear();
            let n = r
                .read_line(&mut line)
                .with_context(|| format!("reading the {} Packages index", rel.archive.dist))?;
            line_no += 1;
            let blank = line.trim().is_empty();
            if !blank {
                if para.is_empty() {
                    first_line = line_no;
                }
                para.push_str(&line);
            }
            if (blank || n == 0) && !para.is_empty() {
                let pkg = parse_pkg(&para, &base, &dist, backports).with_context(|| {
                    format!(
                        "{} Packages index, paragraph at line {first_line}",
                        rel.archive.dist
                    )
                })?;
                para.clear();
                if pkg.arch == self.arch || pkg.arch == "all" {
                    self.pkgs.push(pkg);
                }
            }
            if n == 0 {
                return Ok(());
            }
        }
    }

    /// Builds the lookup tables; call after the last [`add`](Self::add).
    pub fn finish(&mut self) {
        self.by_name.clear();
        self.providers.clear();
        for (i, p) in self.pkgs.iter().enumerate() {
            self.by_name.entry(p.name.clone()).or_default().push(i);
            for (n, v) in &p.provides {
                self.providers
                    .entry(n.clone())
                    .or_default()
                    .push((i, v.clone()));
            }
        }
        let pkgs = &self.pkgs;
        // Candidates in preference order: regular archives before backports,
        // then highest version first, then archive order (stable tie-break).
        for v in self.by_name.values_mut() {
            v.sort_by(|a, b| {
                let (pa, pb) = (&pkgs[*a], &pkgs[*b]);
                pa.backports
                    .cmp(&pb.backports)
                    .then_with(|| pb.version.cmp(&pa.version))
                    .then_with(|| a.cmp(b))
            });
        }
        for v in self.providers.values_mut() {
            v.sort_by(|(a, _), (b, _)| {
                let (pa, pb) = (&pkgs[*a], &pkgs[*b]);
                priority_rank(&pa.priority)
                    .cmp(&priority_rank(&pb.priority))
                    .then_with(|| pa.name.cmp(&pb.name))
                    .then_with(|| pa.backports.cmp(&pb.backports))
                    .then_with(|| pb.version.cmp(&pa.version))
                    .then_with(|| a.cmp(b))
            });
        }
    }

    /// Real packages with this name, best first.
    pub fn by_name(&self, name: &str) -> impl Iterator<Item = (usize, &Pkg)> {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .map(|i| (*i, &self.pkgs[*i]))
    }

    /// Packages providing this virtual name, with the provided version.
    pub fn providers(&self, name: &str) -> impl Iterator<Item = (usize, &Pkg, Option<&Version>)> {
        self.providers
            .get(name)
            .into_iter()
            .flatten()
            .map(|(i, v)| (*i, &self.pkgs[*i], v.as_ref()))
    }

    pub fn knows(&self, name: &str) -> bool {
        self.by_name.contains_key(name) || self.providers.contains_key(name)
    }

    /// The newest version of a real package (regular archives first).
    pub fn best(&self, name: &str) -> Option<&Pkg> {
        self.by_name(name).next().map(|(_, p)| p)
    }

    /// Names close to `name` (edit distance, substring), for "did you mean".
    pub fn close_names(&self, name: &str, max: usize) -> Vec<String> {
        let mut scored: Vec<(usize, &String)> = self
            .by_name
            .keys()
            .filter_map(|n| {
                let d = strsim::levenshtein(n, name);
                let sub = n.starts_with(name) || name.starts_with(n.as_str());
                let limit = (name.len() / 3).max(2);
                (d <= limit || sub).then_some((if sub { d.min(limit) } else { d }, n))
            })
            .collect();
        scored.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| a.1.len().cmp(&b.1.len()))
                .then_with(|| a.1.cmp(b.1))
        });
        scored
            .into_iter()
            .take(max)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// The packages `Essential: yes` or `Priority: required` (best version of each).
    pub fn essential_or_required(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .by_name
            .keys()
            .filter(|n| {
                self.best(n)
                    .is_some_and(|p| p.essential || p.priority == "required")
            })
            .cloned()
            .collect();
        names.sort();
        names
    }
}

/// Providers of a virtual package are preferred by Priority, as apt does
/// (`awk` → mawk, which is `required`, rather than gawk).
fn priority_rank(p: &str) -> u8 {
    match p {
        "required" => 0,
        "important" => 1,
        "standard" => 2,
        "optional" => 3,
        _ => 4,
    }
}

fn parse_pkg(para: &str, base: &Arc<str>, dist: &Arc<str>, backports: bool) -> Result<Pkg> {
    let mut name = None;
    let mut version = None;
    let mut arch = None;
    let mut ma = MultiArch::No;
    let mut essential = false;
    let mut priority = String::new();
    let mut provides = None;
    let mut filename = None;
    let mut sha = None;
    let mut size = 0;
    let mut isize = 0;
    let mut kept = String::new();
    let mut keeping = false;
    for line in para.lines() {
        if line.starts_with([' ', '\t']) {
            // Continuation lines only occur in fields kiln reads on demand.
            if keeping {
                kept.push_str(line);
                kept.push('\n');
            }
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            keeping = false;
            continue;
        };
        keeping = KEPT_FIELDS.contains(&k);
        if keeping {
            kept.push_str(line);
            kept.push('\n');
        }
        let v = v.trim();
        match k {
            "Package" => name = Some(v),
            "Version" => version = Some(v),
            "Architecture" => arch = Some(v),
            "Multi-Arch" => {
                ma = match v {
                    "same" => MultiArch::Same,
                    "foreign" => MultiArch::Foreign,
                    "allowed" => MultiArch::Allowed,
                    _ => MultiArch::No,
                }
            }
            "Essential" => essential = v == "yes",
            "Priority" => priority = v.to_string(),
            "Provides" => provides = Some(v),
            "Filename" => filename = Some(v),
            "SHA256" => sha = Some(v),
            "Size" => size = v.parse().unwrap_or(0),
            "Installed-Size" => isize = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    let name = name.context("no Package field")?;
    let version = Version::parse(version.with_context(|| format!("{name}: no Version field"))?)
        .with_context(|| format!("{name}: bad Version"))?;
    let arch = arch.with_context(|| format!("{name}: no Architecture field"))?;
    let mut prov = Vec::new();
    if let Some(p) = provides {
        for g in relation::parse(p, arch).with_context(|| format!("{name}: bad Provides"))? {
            for d in g {
                let v = match d.constraint {
                    Some((relation::Op::Eq, v)) => Some(v),
                    Some(_) => bail!("{name}: Provides may only use '=' versions"),
                    None => None,
                };
                prov.push((d.name, v));
            }
        }
    }
    let sha = sha.with_context(|| format!("{name}: no SHA256 field"))?;
    Ok(Pkg {
        name: name.to_string(),
        version,
        arch: arch.to_string(),
        multi_arch: ma,
        essential,
        priority,
        provides: prov,
        filename: filename
            .with_context(|| format!("{name}: no Filename field"))?
            .to_string(),
        sha256: Digest::from_hex(sha).with_context(|| format!("{name}: bad SHA256"))?,
        size,
        installed_size: isize,
        base: base.clone(),
        dist: dist.clone(),
        backports,
        para: Arc::from(kept),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::repo::Archive;

    const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    /// Paragraphs are read a line at a time: blank-line runs, a last
    /// paragraph without a newline, other architectures skipped; of each
    /// paragraph only the fields the resolver reads are kept.
    #[test]
    fn a_streamed_index_keeps_what_the_resolver_reads() {
        let rel = Release::parse(
            Archive {
                base: "http://mirror/debian".into(),
                dist: "trixie".into(),
                optional: false,
            },
            &format!("Date: Sat, 01 Nov 2025 00:00:00 UTC\nSHA256:\n {SHA} 1 main/binary-amd64/Packages\n"),
            vec![],
        )
        .unwrap();
        let text = format!(
            "Package: a\nVersion: 1\nArchitecture: amd64\nDepends: b (>= 2),\n c\nDescription: long\n text\nFilename: a.deb\nSHA256: {SHA}\nSize: 1\n\n\n\
             Package: x\nVersion: 1\nArchitecture: arm64\nFilename: x.deb\nSHA256: {SHA}\n\n\
             Package: b\nVersion: 2\nArchitecture: all\nSource: bsrc\nBreaks: a (<< 1)\nFilename: b.deb\nSHA256: {SHA}"
        );
        let mut idx = SuiteIndex::new("trixie", "amd64");
        idx.add_from(&rel, 0, text.as_bytes()).unwrap();
        idx.finish();
        let names: Vec<&str> = idx.pkgs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let a = idx.best("a").unwrap();
        assert_eq!(&*a.para, "Depends: b (>= 2),\n c\n");
        assert_eq!(a.relations("Depends", "amd64").unwrap().len(), 2);
        assert_eq!(a.field("Description"), None);
        let b = idx.best("b").unwrap();
        assert_eq!(b.field("Source").as_deref(), Some("bsrc"));
        assert_eq!(b.relations("Breaks", "amd64").unwrap().len(), 1);
    }

    #[test]
    fn a_bad_paragraph_is_named_by_its_line() {
        let rel = Release::parse(
            Archive {
                base: "http://mirror/debian".into(),
                dist: "trixie".into(),
                optional: false,
            },
            &format!("Date: Sat, 01 Nov 2025 00:00:00 UTC\nSHA256:\n {SHA} 1 main/binary-amd64/Packages\n"),
            vec![],
        )
        .unwrap();
        let text = format!(
            "Package: a\nVersion: 1\nArchitecture: amd64\nFilename: a.deb\nSHA256: {SHA}\n\nPackage: b\nArchitecture: amd64\n"
        );
        let mut idx = SuiteIndex::new("trixie", "amd64");
        let err = format!("{:#}", idx.add(&rel, 0, &text).unwrap_err());
        assert!(
            err.contains("paragraph at line 7") && err.contains("no Version"),
            "{err}"
        );
    }
}
