//! Package relationship fields (`Depends`, `Pre-Depends`, `Provides`,
//! `Conflicts`, `Breaks`…): comma-separated groups of `|` alternatives,
//! each `name[:arch] [(op version)] [<profiles>] [[archs]]`.

use std::fmt;

use anyhow::{Context, bail};

use super::version::Version;
use crate::Result;

/// A version relation operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl Op {
    pub fn holds(self, have: &Version, want: &Version) -> bool {
        let c = have.cmp(want);
        match self {
            Op::Lt => c.is_lt(),
            Op::Le => c.is_le(),
            Op::Eq => c.is_eq(),
            Op::Ge => c.is_ge(),
            Op::Gt => c.is_gt(),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        })
    }
}

/// Architecture qualifier on a dependency name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchQual {
    None,
    /// `:any`: satisfied by a package of any architecture that is `Multi-Arch: allowed`.
    Any,
    /// `:native` or an explicit architecture.
    Named(String),
}

/// One alternative: a package name with an optional version constraint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    pub arch: ArchQual,
    pub constraint: Option<(Op, Version)>,
}

impl fmt::Display for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        match &self.arch {
            ArchQual::None => {}
            ArchQual::Any => f.write_str(":any")?,
            ArchQual::Named(a) => write!(f, ":{a}")?,
        }
        if let Some((op, v)) = &self.constraint {
            write!(f, " ({op} {v})")?;
        }
        Ok(())
    }
}

impl Dep {
    /// Whether a package (or virtual package) with `version` satisfies the
    /// version constraint. An unversioned provide satisfies only
    /// unversioned dependencies, as dpkg and apt do.
    pub fn version_ok(&self, version: Option<&Version>) -> bool {
        match (&self.constraint, version) {
            (None, _) => true,
            (Some((op, want)), Some(have)) => op.holds(have, want),
            (Some(_), None) => false,
        }
    }
}

/// A comma-separated group: any one alternative satisfies it.
pub type Group = Vec<Dep>;

/// Parses a relationship field. Alternatives restricted to other
/// architectures (`[arm64]`) or build profiles are dropped (binary
/// package fields normally carry neither).
pub fn parse(field: &str, arch: &str) -> Result<Vec<Group>> {
    let mut groups = Vec::new();
    for part in field.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let mut group = Vec::new();
        for alt in part.split('|') {
            if let Some(dep) =
                parse_one(alt.trim(), arch).with_context(|| format!("in the relation {part:?}"))?
            {
                group.push(dep);
            }
        }
        if !group.is_empty() {
            groups.push(group);
        }
    }
    Ok(groups)
}

fn parse_one(s: &str, arch: &str) -> Result<Option<Dep>> {
    let mut rest = s;
    // [arch list]
    if let Some(i) = rest.find('[') {
        let j = rest[i..].find(']').map(|j| i + j).context("unclosed [")?;
        let archs: Vec<&str> = rest[i + 1..j].split_whitespace().collect();
        let negated = archs.iter().all(|a| a.starts_with('!'));
        let listed = archs.iter().any(|a| a.trim_start_matches('!') == arch);
        if negated == listed {
            return Ok(None);
        }
        rest = &s[..i];
    }
    if let Some(i) = rest.find('<') {
        // A build profile restriction: kept (binary fields have none).
        if !rest[..i].contains('(') {
            rest = &rest[..i];
        }
    }
    let (name_part, constraint) = match rest.find('(') {
        Some(i) => {
            let j = rest.find(')').context("unclosed (")?;
            let inner = rest[i + 1..j].trim();
            let (op, v) = if let Some(v) = inner.strip_prefix("<<") {
                (Op::Lt, v)
            } else if let Some(v) = inner.strip_prefix("<=") {
                (Op::Le, v)
            } else if let Some(v) = inner.strip_prefix(">>") {
                (Op::Gt, v)
            } else if let Some(v) = inner.strip_prefix(">=") {
                (Op::Ge, v)
            } else if let Some(v) = inner.strip_prefix('=') {
                (Op::Eq, v)
            } else if let Some(v) = inner.strip_prefix('<') {
                (Op::Le, v) // obsolete form, means <=
            } else if let Some(v) = inner.strip_prefix('>') {
                (Op::Ge, v)
            } else {
                bail!("unknown version relation in ({inner})");
            };
            (&rest[..i], Some((op, Version::parse(v)?)))
        }
        None => (rest, None),
    };
    let name_part = name_part.trim();
    if name_part.is_empty() {
        bail!("empty package name");
    }
    let (name, arch_q) = match name_part.split_once(':') {
        Some((n, "any")) => (n, ArchQual::Any),
        Some((n, "native")) => (n, ArchQual::Named(arch.to_string())),
        Some((n, a)) => (n, ArchQual::Named(a.to_string())),
        None => (name_part, ArchQual::None),
    };
    Ok(Some(Dep {
        name: name.to_string(),
        arch: arch_q,
        constraint,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_groups() {
        let g = parse(
            "libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0, python3:any, foo [!amd64], bar [amd64]",
            "amd64",
        )
        .unwrap();
        assert_eq!(g.len(), 4);
        assert_eq!(g[0][0].name, "libc6");
        assert_eq!(g[0][0].constraint.as_ref().unwrap().0, Op::Ge);
        assert_eq!(g[1].len(), 2);
        assert_eq!(g[2][0].arch, ArchQual::Any);
        assert_eq!(g[3][0].name, "bar");
        assert!(parse("a (~ 1)", "amd64").is_err());
    }

    #[test]
    fn versioned_provides_rule() {
        let d = &parse("x (>= 2)", "amd64").unwrap()[0][0];
        assert!(!d.version_ok(None));
        assert!(d.version_ok(Some(&Version::parse("2.1").unwrap())));
        assert!(d.version_ok(Some(&Version::parse("1:0").unwrap())));
        assert!(!d.version_ok(Some(&Version::parse("1.9").unwrap())));
    }
}
