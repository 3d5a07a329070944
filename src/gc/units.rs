//! Sizes and durations spelled as buildx spells them.
//!
//! Hand-written on purpose: buildx reads `--keep-storage` with go-units'
//! `RAMInBytes`, where `k`, `kb` and `kib` all mean 1024 (so `1GB` is
//! 1 GiB), and `--filter until=` with Go's `time.ParseDuration` (`24h`,
//! `1h30m`). The Rust crates read `1GB` as 10^9 (bytesize, parse-size) or
//! take another duration syntax (humantime), so a value copied from a buildx
//! command line would mean something else. kiln adds `d` (24 h) to Go's
//! duration units.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::Result;

/// Parses `512`, `500MB`, `500m`, `1.5GiB`, `1 gb`, `10b`: a number
/// (decimals allowed), an optional space, then `k`/`m`/`g`/`t`/`p`
/// (case-insensitive, each 1024 times the last), an optional `i` and an
/// optional `b`. Binary and decimal spellings mean the same, as in buildx.
pub fn parse_size(text: &str) -> Result<u64> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let bad = || {
        format!(
            "{text:?} is not a size: give bytes or a number with a unit, e.g. 500MB, 1.5GB, 2GiB (1GB = 1GiB = 1024^3 bytes, as in buildx)"
        )
    };
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        bail!(bad());
    }
    let value: f64 = number.parse().with_context(bad)?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let mut rest = unit.as_str();
    let mut power = 0;
    if let Some(c) = rest.chars().next()
        && let Some(p) = "kmgtp".find(c)
    {
        power = p as i32 + 1;
        rest = &rest[1..];
        rest = rest.strip_prefix('i').unwrap_or(rest);
    }
    rest = rest.strip_prefix('b').unwrap_or(rest);
    if !rest.is_empty() {
        bail!(bad());
    }
    let bytes = value * 1024f64.powi(power);
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        bail!("{text:?} is too large a size");
    }
    Ok(bytes as u64)
}

/// Parses a Go duration (`24h`, `1h30m`, `90s`, `1.5h`, `500ms`; units
/// `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`) or days (`7d`). `0` alone is zero.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let s = text.trim();
    let bad = || {
        format!(
            "{text:?} is not a duration: give a number and a unit, e.g. 24h, 90m, 7d, 1h30m (units ns, us, ms, s, m, h, d)"
        )
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        bail!(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .with_context(|| format!("{}: the last number has no unit", bad()))?;
        if n == 0 {
            bail!(bad());
        }
        let value: f64 = rest[..n].parse().with_context(bad)?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => bail!(bad()),
        };
        total += value * seconds;
        rest = &rest[u..];
    }
    Duration::try_from_secs_f64(total).with_context(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn sizes_read_as_buildx_reads_them() {
        for (text, want) in [
            ("0", 0),
            ("512", 512),
            ("10b", 10),
            ("1k", 1024),
            ("1KB", 1024),
            ("1kib", 1024),
            ("500MB", 500 << 20),
            ("500m", 500 << 20),
            ("1GB", GIB),
            ("1GiB", GIB),
            ("1g", GIB),
            ("1.5GB", GIB + GIB / 2),
            ("2 gb", 2 * GIB),
            ("1TB", 1 << 40),
            ("1pb", 1 << 50),
        ] {
            assert_eq!(parse_size(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn bad_sizes_say_what_a_size_looks_like() {
        for text in ["", "GB", "1.GB", ".5g", "1x", "1gbb", "1 2", "-1g", "1e3"] {
            let err = parse_size(text).unwrap_err().to_string();
            assert!(
                err.contains("is not a size") && err.contains("500MB"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn durations_read_as_go_reads_them_plus_days() {
        for (text, secs) in [
            ("0", 0.0),
            ("24h", 86400.0),
            ("90m", 5400.0),
            ("1h30m", 5400.0),
            ("1.5h", 5400.0),
            ("45s", 45.0),
            ("500ms", 0.5),
            ("7d", 7.0 * 86400.0),
        ] {
            assert_eq!(parse_duration(text).unwrap().as_secs_f64(), secs, "{text}");
        }
    }

    #[test]
    fn bad_durations_name_the_units() {
        for text in ["", "24", "h", "1y", "1h30", "-1h", "1..5h"] {
            let err = parse_duration(text).unwrap_err().to_string();
            assert!(
                err.contains("is not a duration") && err.contains("24h"),
                "{text}: {err}"
            );
        }
    }
}
