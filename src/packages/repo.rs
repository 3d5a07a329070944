//! The Debian repository: which archives make a suite, fetching and
//! verifying `InRelease` and `Packages` indexes, and the on-disk cache.
//!
//! Cache layout under `kiln::paths::cache_dir()/packages/`:
//! - `inrelease/<mirror+dist>/InRelease` (+ `meta.json` with ETag and
//!   Last-Modified for conditional refreshes); verified on every use;
//! - `indexes/<sha256>`: uncompressed `Packages` files named by the sha256
//!   the signed Release gives for them, re-hashed on every read;
//! - `keyrings/`: the shipped archive keys, written for gpgv.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::control;
use super::fetch::{Fetched, Http};
use super::index::SuiteIndex;
use super::verify;
use crate::Result;
use crate::oci::digest::{Digest, HashingReader, HashingWriter};
use crate::progress::Progress;

pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
pub const DEFAULT_SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

/// Suites kiln knows, in the order a version request tries them: the
/// current stable first, then oldstable, then unstable.
pub const SUITES: &[&str] = &["trixie", "bookworm", "sid"];

/// The default suite (Debian stable).
pub const DEFAULT_SUITE: &str = "trixie";

/// Where packages come from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepoConfig {
    /// Main archive (`KILN_DEBIAN_MIRROR`); a snapshot URL such as
    /// `https://snapshot.debian.org/archive/debian/20250801T000000Z` pins a point in time.
    pub mirror: String,
    /// Security archive (`KILN_DEBIAN_SECURITY_MIRROR`); derived from the mirror when unset.
    pub security_mirror: Option<String>,
    pub components: Vec<String>,
    /// `amd64` or `arm64`.
    pub arch: String,
    /// Add `<suite>-backports` (lower priority than the suite's own versions).
    pub backports: bool,
    /// Use cached indexes only.
    pub offline: bool,
    /// Extra OpenPGP keyrings to trust (`KILN_DEBIAN_KEYRINGS`, colon-separated).
    pub keyrings: Vec<PathBuf>,
    /// Cache root (default `cache_dir()/packages`).
    pub cache: Option<PathBuf>,
}

impl Default for RepoConfig {
    fn default() -> Self {
        RepoConfig {
            mirror: DEFAULT_MIRROR.to_string(),
            security_mirror: None,
            components: vec!["main".to_string()],
            arch: host_arch().to_string(),
            backports: false,
            offline: false,
            keyrings: Vec::new(),
            cache: None,
        }
    }
}

/// The Debian architecture of this machine. On a machine kiln composes no
/// packages for, its own architecture name (never another's packages): a
/// lock or compose for it then fails on the archive, naming it.
pub fn host_arch() -> &'static str {
    crate::platform::Platform::host()
        .debian_arch()
        .unwrap_or(std::env::consts::ARCH)
}

impl RepoConfig {
    /// Defaults overridden by `KILN_DEBIAN_MIRROR`, `KILN_DEBIAN_SECURITY_MIRROR`, `KILN_DEBIAN_KEYRINGS`.
    pub fn from_env() -> RepoConfig {
        let mut c = RepoConfig::default();
        if let Some(m) = std::env::var("KILN_DEBIAN_MIRROR")
            .ok()
            .filter(|m| !m.is_empty())
        {
            c.mirror = m;
        }
        c.security_mirror = std::env::var("KILN_DEBIAN_SECURITY_MIRROR")
            .ok()
            .filter(|m| !m.is_empty());
        if let Ok(k) = std::env::var("KILN_DEBIAN_KEYRINGS") {
            c.keyrings = k
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect();
        }
        c
    }

    pub fn cache_root(&self) -> Result<PathBuf> {
        match &self.cache {
            Some(c) => Ok(c.clone()),
            None => Ok(crate::paths::cache_dir()?.join("packages")),
        }
    }

    fn mirror(&self) -> String {
        self.mirror.trim_end_matches('/').to_string()
    }

    /// The security mirror: explicit, else `<mirror>-security` (the layout of
    /// deb.debian.org, snapshot.debian.org and most mirrors).
    fn security(&self) -> String {
        match &self.security_mirror {
            Some(s) => s.trim_end_matches('/').to_string(),
            None if self.mirror() == DEFAULT_MIRROR => DEFAULT_SECURITY_MIRROR.to_string(),
            None => {
                let m = self.mirror();
                if let Some(i) = m.find("/archive/debian/") {
                    format!("{}/archive/debian-security/{}", &m[..i], &m[i + 16..])
                } else {
                    format!("{m}-security")
                }
            }
        }
    }

    fn is_snapshot(&self) -> bool {
        self.mirror.contains("snapshot.debian.org") || self.mirror.contains("/archive/debian/")
    }

    /// The signed archives (mirror + dist) that make up a suite.
    pub fn archives(&self, suite: &str) -> Result<Vec<Archive>> {
        let suite = canonical_suite(suite)?;
        let m = self.mirror();
        let mut out = vec![Archive {
            base: m.clone(),
            dist: suite.to_string(),
            optional: false,
        }];
        if suite != "sid" {
            out.push(Archive {
                base: m.clone(),
                dist: format!("{suite}-updates"),
                optional: true,
            });
            out.push(Archive {
                base: self.security(),
                dist: format!("{suite}-security"),
                optional: true,
            });
            if self.backports {
                out.push(Archive {
                    base: m,
                    dist: format!("{suite}-backports"),
                    optional: true,
                });
            }
        }
        Ok(out)
    }
}

/// Maps aliases (`stable`, `unstable`, `oldstable`) to codenames and refuses unknown suites.
pub fn canonical_suite(s: &str) -> Result<&'static str> {
    Ok(match s {
        "trixie" | "stable" | "13" => "trixie",
        "bookworm" | "oldstable" | "12" => "bookworm",
        "sid" | "unstable" => "sid",
        _ => bail!(
            "unknown Debian suite {s:?}: use one of {} (or stable, oldstable, unstable)",
            SUITES.join(", ")
        ),
    })
}

/// One signed distribution on a mirror (`http://deb.debian.org/debian` + `trixie-updates`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archive {
    pub base: String,
    pub dist: String,
    /// Missing on a mirror is not an error (e.g. -updates on a partial mirror).
    pub optional: bool,
}

impl Archive {
    fn url(&self, path: &str) -> String {
        format!("{}/dists/{}/{}", self.base, self.dist, path)
    }
    fn cache_key(&self) -> String {
        let mut k: String = format!("{}_{}", self.base, self.dist)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        k.truncate(200);
        k
    }
}

/// A verified Release.
#[derive(Clone, Debug)]
pub struct Release {
    pub archive: Archive,
    pub date: String,
    pub valid_until: Option<String>,
    pub by_hash: bool,
    /// path → (sha256, size)
    pub sha256: BTreeMap<String, (Digest, u64)>,
    /// Fingerprints of the keys whose signatures verified.
    pub signers: Vec<String>,
}

impl Release {
    pub fn parse(archive: Archive, text: &str, signers: Vec<String>) -> Result<Release> {
        let para = control::paragraphs(text)
            .into_iter()
            .next()
            .map(|(_, p)| p)
            .unwrap_or("");
        let date = control::field(para, "Date").unwrap_or_default();
        let mut sha256 = BTreeMap::new();
        for line in control::field(para, "SHA256").unwrap_or_default().lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let [h, size, path] = parts[..] {
                let d = Digest::from_hex(h).with_context(|| {
                    format!("Release of {}: bad SHA256 line {line:?}", archive.dist)
                })?;
                sha256.insert(path.to_string(), (d, size.parse().unwrap_or(0)));
            }
        }
        if sha256.is_empty() {
            bail!(
                "Release of {} at {} lists no SHA256 checksums: refused",
                archive.dist,
                archive.base
            );
        }
        Ok(Release {
            date,
            valid_until: control::field(para, "Valid-Until"),
            by_hash: control::field(para, "Acquire-By-Hash").as_deref() == Some("yes"),
            sha256,
            signers,
            archive,
        })
    }
}

#[derive(Serialize, Deserialize, Default)]
struct Meta {
    etag: Option<String>,
    last_modified: Option<String>,
}

/// A verified Release and the `Packages` texts of its components.
type Loaded = (Release, Vec<PathBuf>);

/// Reads and caches repository metadata.
pub struct Repo {
    pub config: RepoConfig,
    http: Http,
    root: PathBuf,
    keyrings: Vec<PathBuf>,
    progress: Progress,
}

impl Repo {
    pub fn new(config: RepoConfig, progress: &Progress) -> Result<Repo> {
        let root = config.cache_root()?;
        fs::create_dir_all(&root)
            .with_context(|| format!("creating the package cache {}", root.display()))?;
        let keyrings = verify::keyrings(&root.join("keyrings"), &config.keyrings)?;
        Ok(Repo {
            config,
            http: Http::new(),
            root,
            keyrings,
            progress: progress.clone(),
        })
    }

    pub fn http(&self) -> &Http {
        &self.http
    }

    pub fn cache_root(&self) -> &Path {
        &self.root
    }

    /// Fetches (conditionally) and verifies an archive's `InRelease`.
    /// `Ok(None)` for an optional archive the mirror does not have.
    pub fn release(&self, archive: &Archive) -> Result<Option<Release>> {
        let dir = self.root.join("inrelease").join(archive.cache_key());
        let file = dir.join("InRelease");
        let meta_path = dir.join("meta.json");
        let url = archive.url("InRelease");
        if !self.config.offline {
            let meta: Meta = fs::read(&meta_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let have = file.is_file();
            let fetched = self.http.get_conditional(
                &url,
                meta.etag.as_deref().filter(|_| have),
                meta.last_modified.as_deref().filter(|_| have),
            );
            match fetched {
                Ok(Fetched::NotModified) => {}
                Ok(Fetched::Body {
                    bytes,
                    etag,
                    last_modified,
                }) => {
                    fs::create_dir_all(&dir)?;
                    // Verify before replacing a good cached copy.
                    // (unique temp names: several kiln processes may share the cache)
                    let tmp = tempfile::NamedTempFile::new_in(&dir)?;
                    fs::write(tmp.path(), &bytes)?;
                    verify::clearsigned(tmp.path(), &self.keyrings, &url)?;
                    tmp.persist(&file).map_err(|e| e.error)?;
                    let meta = tempfile::NamedTempFile::new_in(&dir)?;
                    fs::write(
                        meta.path(),
                        serde_json::to_vec(&Meta {
                            etag,
                            last_modified,
                        })?,
                    )?;
                    meta.persist(&meta_path).map_err(|e| e.error)?;
                }
                Err(e) => {
                    let not_found = e
                        .downcast_ref::<super::fetch::FetchError>()
                        .is_some_and(|f| f.status == Some(404));
                    if archive.optional && not_found {
                        return Ok(None);
                    }
                    return Err(e.context(format!(
                        "fetching the {} index from {}",
                        archive.dist, archive.base
                    )));
                }
            }
        } else if !file.is_file() {
            if archive.optional {
                return Ok(None);
            }
            bail!(
                "--offline: no cached index for {} from {} in {}: run once without --offline",
                archive.dist,
                archive.base,
                self.root.display()
            );
        }
        let (text, signers) = verify::clearsigned(&file, &self.keyrings, &url)?;
        let rel = Release::parse(archive.clone(), &text, signers)?;
        // apt refuses an expired Release (replay protection). kiln warns
        // instead: pinned snapshot mirrors and lockfile rebuilds must keep
        // working, and the signature was still checked above.
        if let Some(vu) = &rel.valid_until
            && !self.config.is_snapshot()
            && let Ok(t) = chrono::DateTime::parse_from_rfc2822(&vu.replace("UTC", "+0000"))
            && t < chrono::Utc::now()
        {
            self.progress.warn(format!(
                "{url} expired on {vu} (Valid-Until): the mirror may be stale or replaying old metadata"
            ));
        }
        Ok(Some(rel))
    }

    /// The verified, uncompressed `Packages` file of a component, in the
    /// index cache (fetched when missing). It is hashed and later parsed
    /// as a stream, never held in memory whole.
    pub fn packages(&self, rel: &Release, component: &str) -> Result<PathBuf> {
        let arch = &self.config.arch;
        let plain = format!("{component}/binary-{arch}/Packages");
        let dir = self.root.join("indexes");
        let (want_plain, _) = rel.sha256.get(&plain).cloned().with_context(|| {
            format!(
                "{} has no {plain} (is {component} a component of this archive, {arch} one of its architectures?)",
                rel.archive.dist
            )
        })?;
        let cached = dir.join(want_plain.hex());
        if let Ok(f) = fs::File::open(&cached) {
            let mut r = HashingReader::new(f);
            if std::io::copy(&mut r, &mut std::io::sink()).is_ok() && r.finish().0 == want_plain {
                return Ok(cached);
            }
            self.progress.warn(format!(
                "cached index {} is corrupt; fetching it again",
                cached.display()
            ));
        }
        if self.config.offline {
            bail!(
                "--offline: {plain} of {} is not cached (Release {}): run once without --offline",
                rel.archive.dist,
                rel.date
            );
        }
        let xz = format!("{plain}.xz");
        let (want_xz, size) = rel.sha256.get(&xz).cloned().with_context(|| {
            format!(
                "{} lists no {xz}: kiln reads xz-compressed indexes",
                rel.archive.dist
            )
        })?;
        let url = if rel.by_hash {
            rel.archive.url(&format!(
                "{component}/binary-{arch}/by-hash/SHA256/{}",
                want_xz.hex()
            ))
        } else {
            rel.archive.url(&xz)
        };
        let task = self
            .progress
            .task(format!("index {} {component}/{arch}", rel.archive.dist));
        let (_, mut body) = self.http.open(&url)?;
        let mut comp = Vec::with_capacity(size as usize);
        body.read_to_end(&mut comp)
            .with_context(|| format!("downloading {url}"))?;
        task.bytes(comp.len() as u64, Some(size));
        let got = Digest::of(&comp);
        if got != want_xz {
            bail!(
                "{url}: content hashes to {got} but the signed Release says {want_xz}: refused (tampered or corrupt mirror; try another mirror)"
            );
        }
        // Decompressed straight into the cache (hashed on the way), kept
        // only if it matches the signed Release.
        fs::create_dir_all(&dir)?;
        let tmp = tempfile::NamedTempFile::new_in(&dir)?;
        let mut out = HashingWriter::new(std::io::BufWriter::new(tmp.as_file()));
        std::io::copy(&mut liblzma::read::XzDecoder::new(&comp[..]), &mut out)
            .with_context(|| format!("decompressing {url}"))?;
        let (got_plain, _, mut w) = out.finish();
        w.flush()?;
        drop(w);
        if got_plain != want_plain {
            bail!("{url}: uncompressed index does not match the signed Release: refused");
        }
        tmp.persist(&cached).map_err(|e| e.error)?;
        task.finish("fetched");
        Ok(cached)
    }

    /// Loads every archive of a suite into one index. Builds that compose
    /// several package sets at once (an auto build's build stage and
    /// runtime) share one parse: the index is fetched and parsed once, the
    /// other callers wait for it and get the same `Arc`. Only a weak
    /// reference is kept, so the index is freed when its last user is done
    /// (its ~150 MB are not held through the .deb unpacking that follows).
    pub fn load_suite(&self, suite: &str) -> Result<Arc<SuiteIndex>> {
        /// One slot per suite and repository configuration.
        type Slot = Arc<Mutex<Weak<SuiteIndex>>>;
        static LOADED: LazyLock<Mutex<HashMap<String, Slot>>> = LazyLock::new(Default::default);
        let suite = canonical_suite(suite)?;
        let slot = LOADED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(format!("{suite}\0{:?}", self.config))
            .or_default()
            .clone();
        let mut held = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(idx) = held.upgrade() {
            return Ok(idx);
        }
        let idx = Arc::new(self.read_suite(suite)?);
        *held = Arc::downgrade(&idx);
        Ok(idx)
    }

    fn read_suite(&self, suite: &'static str) -> Result<SuiteIndex> {
        // A task of its own: the index read is the slow part of resolving,
        // and tests assert from the events that a warm build has none.
        let task = self.progress.task(format!("[index] {suite}"));
        let idx = self.read_suite_inner(suite)?;
        task.finish("done");
        Ok(idx)
    }

    fn read_suite_inner(&self, suite: &'static str) -> Result<SuiteIndex> {
        let mut idx = SuiteIndex::new(suite, &self.config.arch);
        let archives = self.config.archives(suite)?;
        let http = &self.http;
        let _ = http;
        // Archives are fetched in parallel (each is a few round trips).
        let results: Vec<Result<Option<Loaded>>> = std::thread::scope(|s| {
            let handles: Vec<_> = archives
                .iter()
                .map(|a| {
                    s.spawn(move || -> Result<Option<Loaded>> {
                        let Some(rel) = self.release(a)? else {
                            return Ok(None);
                        };
                        let mut files = Vec::new();
                        for c in &self.config.components {
                            files.push(self.packages(&rel, c)?);
                        }
                        Ok(Some((rel, files)))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| bail!("index loader panicked")))
                .collect()
        });
        for (prio, r) in results.into_iter().enumerate() {
            if let Some((rel, files)) = r? {
                for f in files {
                    let file = fs::File::open(&f)
                        .with_context(|| format!("opening the cached index {}", f.display()))?;
                    idx.add_from(&rel, prio, std::io::BufReader::with_capacity(1 << 18, file))
                        .with_context(|| format!("reading the cached index {}", f.display()))?;
                }
                idx.releases.push(rel);
            }
        }
        idx.finish();
        Ok(idx)
    }
}
