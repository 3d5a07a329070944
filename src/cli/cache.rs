//! `kiln cache`: verify, du, prune, dir. The GC itself is [`crate::gc`].

use std::time::SystemTime;

use clap::{Args, Subcommand, ValueEnum};

use crate::Result;
use crate::gc::{self, Kind, Report, units};
use crate::oci::{ImageStore, cache_store};
use crate::progress::human_bytes;

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Re-hash every blob of the cache; exit non-zero if any is corrupt.
    ///
    /// Example: kiln cache verify --fix
    Verify {
        /// Remove corrupt blobs (they are re-made or re-fetched when needed).
        #[arg(long)]
        fix: bool,
    },
    /// Show what takes the space: store, snapshots, steps, cache mounts,
    /// packages, with sizes (on disk, as du) and counts.
    ///
    /// Snapshots are layers unpacked for RUN steps and usually most of the
    /// cache. `--verbose` lists the largest entries and when a build last
    /// used them.
    ///
    /// Example: kiln cache du --verbose
    Du(DuArgs),
    /// Remove build cache, least recently used first.
    ///
    /// Removes step records, layer blobs with their snapshots, other blobs
    /// (.debs, downloads), cache mounts, package indexes, context stat
    /// caches, and what interrupted builds left. Resolved package sets and
    /// archive metadata (reused like pulled base images) go only with
    /// `--all`. Without `--keep-storage` or `--filter` everything else
    /// goes. Images in the local store keep their own copies: pruning never
    /// breaks a named image. Waits while builds use the cache.
    ///
    /// Example: kiln cache prune --keep-storage 5GB --filter until=24h
    Prune(PruneArgs),
    /// Print the cache directory.
    ///
    /// Example: du -sh "$(kiln cache dir)"
    Dir,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Args, Debug)]
pub struct DuArgs {
    /// Also list the largest entries, with when a build last used them.
    #[arg(short, long)]
    pub verbose: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Keep the most recently used cache up to SIZE (e.g. 5GB, 500MB;
    /// 1GB = 1GiB = 1024^3 bytes, as in buildx).
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
    pub keep_storage: Option<u64>,
    /// Only entries unused for longer than DURATION: `until=24h` (Go
    /// durations as buildx: 90m, 1h30m; also 7d).
    #[arg(long, value_name = "until=DURATION")]
    pub filter: Vec<String>,
    /// Also resolved package sets and archive metadata: everything.
    #[arg(short, long)]
    pub all: bool,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

pub fn cache(cmd: CacheCommand) -> Result<()> {
    match cmd {
        CacheCommand::Verify { fix } => verify(fix),
        CacheCommand::Du(a) => du(a),
        CacheCommand::Prune(a) => prune(a),
        CacheCommand::Dir => {
            println!("{}", crate::paths::cache_dir()?.display());
            Ok(())
        }
    }
}

fn verify(fix: bool) -> Result<()> {
    let mut failed = false;
    let images = ImageStore::open_default()?;
    let cache = cache_store()?;
    for (what, store) in [("cache", &cache), ("image store", images.blobs())] {
        let r = store.verify(fix)?;
        println!(
            "{what}: {} blobs, {} checked, {} corrupt, {} stray, {} leftover temp files",
            r.checked,
            human_bytes(r.bytes),
            r.corrupt.len(),
            r.stray.len(),
            r.temp_files
        );
        for p in r.corrupt.iter().chain(&r.stray) {
            println!("  {} {}", if fix { "removed" } else { "bad" }, p.display());
        }
        failed |= !r.is_ok() && !fix;
    }
    if failed {
        anyhow::bail!("the store has corrupt blobs: run `kiln cache verify --fix` to remove them");
    }
    Ok(())
}

/// `until=DURATION` filters (buildx's syntax); the last one wins.
fn parse_filters(filters: &[String]) -> Result<Option<std::time::Duration>> {
    let mut until = None;
    for f in filters {
        match f.split_once('=') {
            Some(("until", d)) => {
                until = Some(
                    units::parse_duration(d)
                        .map_err(|e| anyhow::anyhow!("--filter {f:?}: {e:#}"))?,
                )
            }
            _ => anyhow::bail!(
                "--filter {f:?}: kiln supports until=DURATION (e.g. until=24h), as buildx"
            ),
        }
    }
    Ok(until)
}

fn prune(a: PruneArgs) -> Result<()> {
    let opts = gc::Options {
        keep_bytes: a.keep_storage,
        until: parse_filters(&a.filter)?,
        all: a.all,
        dry_run: a.dry_run,
        used_before: None,
    };
    let dir = crate::paths::cache_dir()?;
    let started = std::time::Instant::now();
    let report = gc::prune(&dir, &opts, open_for_prune)?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Human => print_prune(&report, started.elapsed()),
    }
    Ok(())
}

fn print_prune(r: &Report, took: std::time::Duration) {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    if r.removed.is_empty() {
        println!(
            "nothing to remove; the cache takes {}",
            human_bytes(r.before)
        );
        return;
    }
    println!("{verb}:");
    for (group, (count, bytes)) in r.by_group() {
        println!("  {group:<13} {count:>6}  {:>10}", human_bytes(bytes));
    }
    let freed = if r.freed_bytes < r.removed_bytes {
        format!(
            " ({} freed on disk; the rest are blobs named images keep)",
            human_bytes(r.freed_bytes)
        )
    } else {
        String::new()
    };
    println!(
        "{} {}{freed}; the cache {} {} (was {}) [{:.1} s]",
        if r.dry_run { "would free" } else { "freed" },
        human_bytes(r.removed_bytes),
        if r.dry_run { "would take" } else { "now takes" },
        human_bytes(r.after),
        human_bytes(r.before),
        took.as_secs_f64()
    );
}

#[derive(serde::Serialize)]
struct Group {
    kind: &'static str,
    count: usize,
    bytes: u64,
}

#[derive(serde::Serialize)]
struct Listed<'a> {
    kind: Kind,
    name: &'a str,
    bytes: u64,
    snapshot_bytes: u64,
    #[serde(serialize_with = "rfc3339")]
    last_used: SystemTime,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(
        &chrono::DateTime::<chrono::Utc>::from(*t)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// How many entries `du --verbose` lists (JSON lists all).
const LARGEST: usize = 20;

fn du(a: DuArgs) -> Result<()> {
    let dir = crate::paths::cache_dir()?;
    let _lock = crate::oci::Store::open(dir.join("store"))?;
    let mut sizes = gc::Sizes::load(&dir);
    let usage = gc::measure(&dir, &mut sizes);
    sizes.save(&dir);
    // Snapshots are counted apart from the blobs they belong to.
    let mut groups: Vec<Group> = [
        "store",
        "snapshots",
        "steps",
        "cache mounts",
        "packages",
        "context",
        "temp",
    ]
    .iter()
    .map(|k| Group {
        kind: k,
        count: 0,
        bytes: 0,
    })
    .collect();
    let mut add = |kind: &str, bytes: u64| {
        if let Some(g) = groups.iter_mut().find(|g| g.kind == kind) {
            g.count += 1;
            g.bytes += bytes;
        }
    };
    for e in &usage.entries {
        if e.kind == Kind::Blob {
            add("store", e.bytes - e.snapshot_bytes);
            if e.snapshot_bytes > 0 {
                add("snapshots", e.snapshot_bytes);
            }
        } else {
            add(e.kind.group(), e.bytes);
        }
    }
    groups.push(Group {
        kind: "other",
        count: 0,
        bytes: usage.fixed,
    });
    let total = usage.total();
    let mut largest: Vec<&gc::CacheEntry> = usage.entries.iter().collect();
    largest.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    if a.format == Format::Json {
        let entries: Vec<Listed> = if a.verbose {
            largest
                .iter()
                .map(|e| Listed {
                    kind: e.kind,
                    name: &e.name,
                    bytes: e.bytes,
                    snapshot_bytes: e.snapshot_bytes,
                    last_used: e.last_used,
                })
                .collect()
        } else {
            Vec::new()
        };
        let out = serde_json::json!({
            "dir": dir,
            "total": total,
            "kinds": groups,
            "entries": entries,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{:<13} {:>7}  {:>10}", "KIND", "COUNT", "SIZE");
    for g in &groups {
        let count = if g.kind == "other" {
            String::new()
        } else {
            g.count.to_string()
        };
        println!("{:<13} {count:>7}  {:>10}", g.kind, human_bytes(g.bytes));
    }
    println!("{:<13} {:>7}  {:>10}", "total", "", human_bytes(total));
    if a.verbose {
        let now = SystemTime::now();
        println!();
        println!("{:<13} {:<24} {:>10}  LAST USED", "KIND", "NAME", "SIZE");
        for e in largest.iter().take(LARGEST) {
            let name = short_name(&e.name);
            println!(
                "{:<13} {:<24} {:>10}  {}",
                e.kind.group(),
                name,
                human_bytes(e.bytes),
                ago(now, e.last_used)
            );
        }
        if largest.len() > LARGEST {
            println!(
                "… {} more (--format json lists them all)",
                largest.len() - LARGEST
            );
        }
    }
    Ok(())
}

/// A name with its digests cut to 12 hex digits (`sha256:1a2b3c4d5e6f`,
/// `packages/indexes/2efd6103f013…`).
fn short_name(name: &str) -> String {
    if gc::is_hex_digest(name) {
        return format!("sha256:{}", &name[..12]);
    }
    name.split('/')
        .map(|part| {
            let stem = part.strip_suffix(".json").unwrap_or(part);
            if gc::is_hex_digest(stem) {
                format!("{}…", &stem[..12])
            } else {
                part.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `3h ago`, `2d ago`.
fn ago(now: SystemTime, t: SystemTime) -> String {
    let s = now.duration_since(t).unwrap_or_default().as_secs();
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// Opens the cache store exclusively. While builds (or other kiln
/// commands) hold it, says who and keeps trying; Ctrl-C stops the wait
/// (no handler is installed, so SIGINT ends the process as usual).
fn open_for_prune(dir: &std::path::Path) -> Result<crate::oci::Store> {
    use crate::oci::Store;
    let mut said: Option<Vec<u32>> = None;
    loop {
        if let Some(store) = Store::try_open_exclusive(dir)? {
            return Ok(store);
        }
        let holders = Store::lock_holders(dir);
        if said.as_ref() != Some(&holders) {
            let who = if holders.is_empty() {
                "another kiln process".to_string()
            } else {
                holders
                    .iter()
                    .map(|p| format!("pid {p}{}", command_of(*p)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            eprintln!(
                "waiting for the build cache lock ({}) held by a running build ({who})… (Ctrl-C to stop)",
                dir.join("lock").display()
            );
            said = Some(holders);
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// `: kiln build` for a pid, from /proc (empty when unreadable). Only the
/// program and its first argument: the rest may hold build-arg values.
fn command_of(pid: u32) -> String {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return String::new();
    };
    let mut words: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .take(2)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    if let Some(first) = words.first_mut()
        && let Some(base) = first.rsplit('/').next()
    {
        *first = base.to_string();
    }
    if words.is_empty() {
        String::new()
    } else {
        format!(": {}", words.join(" "))
    }
}
