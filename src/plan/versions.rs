//! Toolchain versions: what each Debian suite ships, version requests
//! (node-semver ranges, PEP 440 specifiers, Go/Rust minimums, plain pins)
//! and their resolution to one suite.
//!
//! The matcher is hand-written on purpose: requests come in three syntaxes
//! (node-semver, PEP 440, `go`/`rust-version` minimums) and are matched
//! against a handful of known versions, so one small matcher with the
//! shared subset (`^ ~ ~= >= > <= < = == != * x ||`, hyphen ranges,
//! space/comma conjunctions) beats three crates with three data models.
//!
//! A plain pin (`3.11.4`, `20.11.1`) read from a version file selects its
//! release line (major for Node and Java, major.minor otherwise): the exact
//! patch is whatever the suite ships, recorded in the plan.

use anyhow::{Context, bail};

/// A Debian suite kiln installs packages from, in preference order.
pub const SUITES: [&str; 3] = ["trixie", "bookworm", "sid"];

/// Upstream version of a toolchain in each suite, `SUITES` order (`""`: the
/// suite lacks it, or lacks a package the provider needs with it). The
/// values were read with `apt-cache policy` against deb.debian.org; the
/// e2e test `every_planned_package_exists_in_its_suite` checks every
/// example's packages against each suite's index.
pub fn suite_versions(tool: &str) -> Option<[&'static str; 3]> {
    Some(match tool {
        "node" => ["20.19.2", "18.20.4", "24.22.2"],
        "python" => ["3.13.5", "3.11.2", "3.14.10"],
        "go" => ["1.24.4", "1.19.8", "1.27.3"],
        "rust" => ["1.85.1", "1.63.0", "1.97.1"],
        "ruby" => ["3.3.8", "3.1.7", "3.3.8"],
        "php" => ["8.4.27", "8.2.29", "8.4.27"],
        "java" => ["21.0.13", "17.0.21", "25.0.5"],
        "elixir" => ["1.18.3", "1.14.0", "1.20.4"],
        // bookworm has crystal 1.6 but no `shards`, which every Crystal
        // build runs.
        "crystal" => ["1.14.0", "", "1.21.0"],
        "swift" => ["6.0.3", "", "6.2.3"],
        "haskell-stack" => ["2.15.7", "2.7.5", "3.7.1"],
        "guile" => ["3.0.10", "3.0.8", "3.0.11"],
        // Only sid has the `haunt` package.
        "haunt" => ["", "", "0.4.0"],
        "clojure" => ["1.12.0", "1.11.1", "1.12.5"],
        "gnucobol" => ["3.2", "3.1.2", "3.2"],
        _ => return None,
    })
}

/// Granularity at which a plain pin matches.
fn pin_parts(tool: &str) -> usize {
    match tool {
        "node" | "java" => 1,
        _ => 2,
    }
}

type Ver = (u64, u64, u64);

fn parse_ver(s: &str) -> Option<Ver> {
    let mut it = s.split('.');
    let a = it.next()?.parse().ok()?;
    let b = it.next().map_or(Some(0), |x| x.parse().ok())?;
    let c = it.next().map_or(Some(0), |x| {
        x.trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .ok()
    })?;
    Some((a, b, c))
}

/// A partial version `X[.Y[.Z]]` with wildcards as missing parts.
fn parse_partial(s: &str) -> Option<Vec<u64>> {
    let s = s.trim().trim_start_matches(['v', 'V', '=']);
    if s.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for part in s.split('.') {
        if matches!(part, "x" | "X" | "*") {
            break;
        }
        // 1.2.3-beta / 3.11.4rc1: keep the leading digits.
        let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() {
            return None;
        }
        out.push(digits.parse().ok()?);
        if digits.len() != part.len() {
            break;
        }
    }
    if out.len() > 3 {
        out.truncate(3);
    }
    Some(out)
}

fn lo(p: &[u64]) -> Ver {
    (
        p.first().copied().unwrap_or(0),
        p.get(1).copied().unwrap_or(0),
        p.get(2).copied().unwrap_or(0),
    )
}

/// The first version above every version matching the partial `p`.
fn hi(p: &[u64]) -> Ver {
    match p.len() {
        0 => (u64::MAX, 0, 0),
        1 => (p[0] + 1, 0, 0),
        2 => (p[0], p[1] + 1, 0),
        _ => (p[0], p[1], p[2] + 1),
    }
}

#[derive(Debug, Clone)]
enum Cmp {
    Ge(Ver),
    Lt(Ver),
    Ne(Vec<u64>),
}

fn comparator(tok: &str) -> Option<Vec<Cmp>> {
    let tok = tok.trim();
    if tok.is_empty() || matches!(tok, "*" | "x" | "X" | "latest" | "stable" | "lts" | "lts/*") {
        return Some(vec![]);
    }
    let ops = ["~>", "~=", ">=", "<=", "==", "!=", "^", "~", ">", "<", "="];
    let (op, rest) = ops
        .iter()
        .find_map(|op| tok.strip_prefix(op).map(|r| (*op, r.trim())))
        .unwrap_or(("", tok));
    let rest = rest.trim_end_matches(".*");
    let p = parse_partial(rest)?;
    Some(match op {
        "" | "=" | "==" => vec![Cmp::Ge(lo(&p)), Cmp::Lt(hi(&p))],
        "!=" => vec![Cmp::Ne(p)],
        ">=" => vec![Cmp::Ge(lo(&p))],
        ">" => vec![Cmp::Ge(hi(&p))],
        "<" => vec![Cmp::Lt(lo(&p))],
        "<=" => vec![Cmp::Lt(hi(&p))],
        "^" => {
            let upper = match p.as_slice() {
                [0, 0, z] => (0, 0, z + 1),
                [0, y, ..] => (0, y + 1, 0),
                [x, ..] => (x + 1, 0, 0),
                [] => (u64::MAX, 0, 0),
            };
            vec![Cmp::Ge(lo(&p)), Cmp::Lt(upper)]
        }
        "~" => {
            let upper = if p.len() >= 2 {
                (p[0], p[1] + 1, 0)
            } else {
                hi(&p)
            };
            vec![Cmp::Ge(lo(&p)), Cmp::Lt(upper)]
        }
        "~=" | "~>" => {
            // PEP 440: ~=3.11 → >=3.11,<4 ; ~=3.11.2 → >=3.11.2,<3.12
            let upper = match p.len() {
                0 | 1 => return None,
                2 => (p[0] + 1, 0, 0),
                _ => (p[0], p[1] + 1, 0),
            };
            vec![Cmp::Ge(lo(&p)), Cmp::Lt(upper)]
        }
        _ => return None,
    })
}

/// A parsed request: alternatives (`||`) of conjunctions.
#[derive(Debug, Clone)]
pub struct Request(Vec<Vec<Cmp>>);

impl Request {
    /// Parses a range. `Err` says what could not be read.
    pub fn parse(s: &str) -> crate::Result<Request> {
        let mut alts = Vec::new();
        for alt in s.split("||") {
            let alt = alt.trim();
            let mut all = Vec::new();
            if let Some((a, b)) = alt.split_once(" - ") {
                let (a, b) = (
                    parse_partial(a).with_context(|| format!("`{a}` is not a version"))?,
                    parse_partial(b).with_context(|| format!("`{b}` is not a version"))?,
                );
                all.push(Cmp::Ge(lo(&a)));
                all.push(Cmp::Lt(hi(&b)));
            } else {
                // Join `>= 18` into `>=18` before splitting on spaces.
                let mut norm = alt.replace(',', " ");
                for op in ["~>", "~=", ">=", "<=", "==", "!=", ">", "<", "^", "~", "="] {
                    norm = norm.replace(&format!("{op} "), op);
                }
                for tok in norm.split_whitespace() {
                    let c = comparator(tok)
                        .with_context(|| format!("`{tok}` is not a version or a range"))?;
                    all.extend(c);
                }
            }
            alts.push(all);
        }
        Ok(Request(alts))
    }

    /// A plain pin read at the tool's granularity (see the module doc).
    pub fn pin(tool: &str, s: &str) -> crate::Result<Request> {
        let p = parse_partial(s).with_context(|| format!("`{s}` is not a version"))?;
        let p: Vec<u64> = p.into_iter().take(pin_parts(tool)).collect();
        Ok(Request(vec![vec![Cmp::Ge(lo(&p)), Cmp::Lt(hi(&p))]]))
    }

    /// A minimum (`go 1.22.5`, `rust-version = "1.70"`).
    pub fn at_least(s: &str) -> crate::Result<Request> {
        let p = parse_partial(s).with_context(|| format!("`{s}` is not a version"))?;
        Ok(Request(vec![vec![Cmp::Ge(lo(&p))]]))
    }

    pub fn matches(&self, v: &str) -> bool {
        let Some(v) = parse_ver(v) else { return false };
        self.0.iter().any(|alt| {
            alt.iter().all(|c| match c {
                Cmp::Ge(x) => v >= *x,
                Cmp::Lt(x) => v < *x,
                Cmp::Ne(p) => !(v >= lo(p) && v < hi(p)),
            })
        })
    }
}

/// Which kind of request a version source gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A range (`engines.node`, `requires-python`, env values).
    Range,
    /// A plain pin from a version file.
    Pin,
    /// A minimum (`go`, `toolchain`, `rust-version`).
    Minimum,
}

/// Builds the request for `tool` from its text and kind.
pub fn request(tool: &str, text: &str, kind: Kind) -> crate::Result<Request> {
    match kind {
        Kind::Range => {
            // A bare version in a range field is still a pin (`"node": "20"`).
            if parse_partial(text).is_some_and(|p| !p.is_empty())
                && text
                    .trim()
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == 'v')
            {
                Request::pin(tool, text)
            } else {
                Request::parse(text)
            }
        }
        Kind::Pin => Request::pin(tool, text),
        Kind::Minimum => Request::at_least(text),
    }
}

/// The suites (in preference order) whose version of `tool` satisfies `req`.
pub fn satisfying_suites(tool: &str, req: Option<&Request>) -> Vec<&'static str> {
    let Some(vs) = suite_versions(tool) else {
        return SUITES.to_vec();
    };
    SUITES
        .iter()
        .zip(vs)
        .filter(|(_, v)| !v.is_empty() && req.is_none_or(|r| r.matches(v)))
        .map(|(s, _)| *s)
        .collect()
}

/// The version of `tool` in `suite`.
pub fn version_in(tool: &str, suite: &str) -> Option<&'static str> {
    let vs = suite_versions(tool)?;
    let i = SUITES.iter().position(|s| *s == suite)?;
    Some(vs[i]).filter(|v| !v.is_empty())
}

/// "18.20.4 (bookworm), 20.19.2 (trixie), …" for error messages.
pub fn available(tool: &str) -> String {
    match suite_versions(tool) {
        Some(vs) => SUITES
            .iter()
            .zip(vs)
            .filter(|(_, v)| !v.is_empty())
            .map(|(s, v)| format!("{v} ({s})"))
            .collect::<Vec<_>>()
            .join(", "),
        None => "none".into(),
    }
}

/// Checks that `suite` is one kiln knows.
pub fn check_suite(suite: &str, source: &str) -> crate::Result<()> {
    if !SUITES.contains(&suite) {
        bail!(
            "unknown Debian suite `{suite}` in {source}: use one of {}",
            SUITES.join(", ")
        );
    }
    Ok(())
}

/// Maps a Node `.nvmrc` alias to a range.
pub fn node_alias(s: &str) -> Option<&'static str> {
    Some(
        match s.trim().to_ascii_lowercase().trim_start_matches("lts/") {
            "*" | "lts" => ">=18",
            "krypton" => "24",
            "jod" => "22",
            "iron" => "20",
            "hydrogen" => "18",
            "gallium" => "16",
            "fermium" => "14",
            "erbium" => "12",
            "dubnium" => "10",
            "carbon" => "8",
            "boron" => "6",
            "argon" => "4",
            "node" | "latest" | "current" => "*",
            _ => return None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(r: &str, v: &str) -> bool {
        Request::parse(r).unwrap().matches(v)
    }

    #[test]
    fn node_semver_ranges() {
        assert!(m(">=18", "20.19.2"));
        assert!(m("^18.0.0", "18.20.4"));
        assert!(!m("^18.0.0", "20.19.2"));
        assert!(m("18.x || 20.x", "20.19.2"));
        assert!(m(">= 18 < 21", "20.19.2"));
        assert!(!m(">=18 <20", "20.19.2"));
        assert!(m("16 - 18", "18.20.4"));
        assert!(m("~20.1", "20.1.9"));
        assert!(!m("~20.1", "20.19.2"));
        assert!(m("*", "1.0.0"));
    }

    #[test]
    fn pep440() {
        assert!(m(">=3.10,<3.14", "3.13.5"));
        assert!(!m(">=3.10,<3.13", "3.13.5"));
        assert!(m("~=3.11", "3.13.5"));
        assert!(!m("~=3.11.2", "3.13.5"));
        assert!(m("==3.13.*", "3.13.5"));
        assert!(m("!=3.12", "3.13.5"));
    }

    #[test]
    fn pins_and_minimums() {
        assert!(Request::pin("node", "20.11.1").unwrap().matches("20.19.2"));
        assert!(!Request::pin("python", "3.12.1").unwrap().matches("3.13.5"));
        assert!(Request::at_least("1.22.5").unwrap().matches("1.24.4"));
        assert_eq!(
            satisfying_suites("node", Some(&Request::pin("node", "18").unwrap())),
            vec!["bookworm"]
        );
        assert!(satisfying_suites("node", Some(&Request::pin("node", "23").unwrap())).is_empty());
        assert!(Request::parse("banana").is_err());
    }
}
