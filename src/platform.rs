//! The one platform type: `os/architecture[/variant]` in OCI's names, as
//! `--platform`, `FROM --platform`, the graph's stages, image configs and
//! registry indexes use it, with the map to Debian's architecture names
//! for composed packages.
//!
//! Spelled as a string (`linux/arm64/v8`) wherever it is serialised, so a
//! graph's JSON and its cache keys read the same as before the type existed.

use std::fmt;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::Result;

/// `os/architecture[/variant]`, normalised (lower case, `x86_64` → `amd64`,
/// `aarch64` → `arm64`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// OCI architecture (with variant) → Debian architecture, for the
/// architectures kiln composes packages for.
const DEBIAN: &[(&str, Option<&str>, &str)] = &[("amd64", None, "amd64"), ("arm64", None, "arm64")];

impl Platform {
    /// `linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`; a bare architecture
    /// (`arm64`) means Linux.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<String> = s
            .trim()
            .split('/')
            .map(|p| p.to_ascii_lowercase())
            .collect();
        let ok = |p: &String| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        };
        let p = match parts.as_slice() {
            [arch] if ok(arch) && arch != "linux" => Platform::linux(arch, None),
            [os, arch] if ok(os) && ok(arch) => Platform {
                os: os.clone(),
                architecture: normalise_arch(arch),
                variant: None,
            },
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Platform {
                os: os.clone(),
                architecture: normalise_arch(arch),
                variant: Some(v.clone()),
            },
            _ => bail!(
                "invalid platform {s:?}: write os/arch[/variant], e.g. linux/amd64, linux/arm64/v8 or linux/arm/v7"
            ),
        };
        Ok(p)
    }

    /// `linux/<architecture>[/<variant>]`.
    pub fn linux(architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: "linux".to_string(),
            architecture: normalise_arch(architecture),
            variant: variant.map(str::to_string),
        }
    }

    /// The machine kiln runs on, in OCI's names.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            other => (other, None),
        };
        Platform::linux(architecture, variant)
    }

    /// The Debian architecture whose packages run on this platform; an
    /// error naming the platform and the supported ones otherwise.
    pub fn debian_arch(&self) -> Result<&'static str> {
        // No variant asks for the architecture's default; arm64's is v8.
        let variant_ok = |table: Option<&str>| match (self.variant.as_deref(), table) {
            (None, _) => true,
            (Some(v), Some(t)) => v == t,
            (Some(v), None) => self.architecture == "arm64" && v == "v8",
        };
        let found = DEBIAN
            .iter()
            .find(|(arch, variant, _)| *arch == self.architecture && variant_ok(*variant));
        match found {
            Some((_, _, debian)) if self.os == "linux" => Ok(debian),
            _ => bail!(
                "platform {self} is not supported for Debian packages: kiln composes packages for {}",
                supported()
            ),
        }
    }

    /// The platform of a Debian architecture kiln composes packages for.
    pub fn from_debian_arch(debian: &str) -> Result<Platform> {
        match DEBIAN.iter().find(|(_, _, d)| *d == debian) {
            Some((arch, variant, _)) => Ok(Platform::linux(arch, *variant)),
            None => bail!(
                "Debian architecture {debian:?} is not supported: kiln composes packages for {}",
                supported()
            ),
        }
    }

    /// As OCI's type, for image configs and index entries.
    pub fn to_oci(&self) -> oci_spec::image::Platform {
        let mut b = oci_spec::image::PlatformBuilder::default()
            .os(oci_spec::image::Os::from(self.os.as_str()))
            .architecture(oci_spec::image::Arch::from(self.architecture.as_str()));
        if let Some(v) = &self.variant {
            b = b.variant(v.clone());
        }
        b.build().expect("os and architecture are set")
    }

    /// From OCI's type (as found in an image config or index).
    pub fn from_oci(p: &oci_spec::image::Platform) -> Platform {
        Platform {
            os: p.os().to_string(),
            architecture: p.architecture().to_string(),
            variant: p.variant().clone(),
        }
    }

    /// Does an index entry's platform serve this one? An unset variant
    /// matches any; arm64 without a variant is v8.
    pub fn matches(&self, p: &oci_spec::image::Platform) -> bool {
        if p.os().to_string() != self.os || p.architecture().to_string() != self.architecture {
            return false;
        }
        let norm = |v: Option<&str>| match (self.architecture.as_str(), v) {
            ("arm64", None) => Some("v8".to_string()),
            (_, v) => v.map(str::to_string),
        };
        match &self.variant {
            None => true,
            Some(v) => norm(p.variant().as_deref()) == norm(Some(v)),
        }
    }
}

/// `linux/amd64, linux/arm64`.
fn supported() -> String {
    DEBIAN
        .iter()
        .map(|(arch, variant, _)| Platform::linux(arch, *variant).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn normalise_arch(a: &str) -> String {
    match a {
        "x86_64" | "x86-64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        o => o.to_ascii_lowercase(),
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// `stage.platform == "linux/amd64"`.
impl PartialEq<str> for Platform {
    fn eq(&self, other: &str) -> bool {
        let mut parts = other.split('/');
        parts.next() == Some(self.os.as_str())
            && parts.next() == Some(self.architecture.as_str())
            && parts.next() == self.variant.as_deref()
            && parts.next().is_none()
    }
}

impl PartialEq<&str> for Platform {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

impl std::str::FromStr for Platform {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Platform> {
        Platform::parse(s)
    }
}

impl TryFrom<String> for Platform {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Platform> {
        Platform::parse(&s)
    }
}

impl From<Platform> for String {
    fn from(p: Platform) -> String {
        p.to_string()
    }
}

/// Where the kernel lists its binfmt_misc handlers.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

impl Platform {
    /// Whether this machine can execute the platform's programs (a `RUN`
    /// step's): natively (its own architecture, or 32-bit x86 on amd64) or
    /// through a binfmt_misc handler — qemu-user — registered with the `F`
    /// flag (the kernel opens the interpreter at registration, so it works
    /// inside a step's root, which has no qemu binary). An error says
    /// exactly what to install or run; a step never starts to fail with
    /// "not an executable format".
    pub fn check_executable(&self) -> Result<()> {
        self.check_executable_with(&Platform::host(), std::path::Path::new(BINFMT_MISC))
    }

    fn check_executable_with(&self, host: &Platform, binfmt: &std::path::Path) -> Result<()> {
        if self.os != "linux" {
            bail!("platform {self}: kiln runs Linux programs only");
        }
        let native = self.architecture == host.architecture
            || (host.architecture == "amd64" && self.architecture == "386")
            || (host.architecture == "arm64" && self.architecture == "arm" && arm32_on_arm64());
        if native {
            return Ok(());
        }
        let Some(qemu) = qemu_name(&self.architecture) else {
            bail!(
                "platform {self}: this machine ({host}) cannot run its programs and kiln knows no qemu-user emulator for {}",
                self.architecture
            );
        };
        let install = format!(
            "install and register qemu-user: `apt-get install qemu-user-static binfmt-support`, then `update-binfmts --enable qemu-{qemu}`"
        );
        if !binfmt.join("status").exists() {
            bail!(
                "platform {self}: this machine ({host}) runs its programs only through qemu-user, and binfmt_misc is not mounted: `mount -t binfmt_misc binfmt_misc {}`, then {install}",
                binfmt.display()
            );
        }
        let entry = binfmt.join(format!("qemu-{qemu}"));
        let text = match std::fs::read_to_string(&entry) {
            Ok(t) => t,
            Err(_) => bail!(
                "platform {self}: this machine ({host}) has no binfmt_misc handler for {qemu} ({} is missing): {install}",
                entry.display()
            ),
        };
        if text.lines().next() != Some("enabled") {
            bail!(
                "platform {self}: the binfmt_misc handler {} is disabled: `update-binfmts --enable qemu-{qemu}`",
                entry.display()
            );
        }
        let fixed = text
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .is_some_and(|f| f.contains('F'));
        if !fixed {
            bail!(
                "platform {self}: the binfmt_misc handler {} is registered without the F flag, so it cannot run inside a build step's root: use Debian's qemu-user-static (it registers with F) and `update-binfmts --enable qemu-{qemu}`",
                entry.display()
            );
        }
        Ok(())
    }
}

/// qemu-user's name for an OCI architecture.
fn qemu_name(architecture: &str) -> Option<&'static str> {
    Some(match architecture {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "arm",
        "386" => "i386",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64le" => "mips64el",
        _ => return None,
    })
}

/// Most arm64 CPUs run 32-bit arm programs; some (and some kernels) do not.
fn arm32_on_arm64() -> bool {
    std::path::Path::new("/proc/sys/abi/cp15_barrier").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_normalised() {
        for (given, shown) in [
            ("linux/amd64", "linux/amd64"),
            ("linux/x86_64", "linux/amd64"),
            ("Linux/AArch64", "linux/arm64"),
            ("arm64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64/v8"),
            (" linux/arm/v7 ", "linux/arm/v7"),
        ] {
            assert_eq!(
                Platform::parse(given).unwrap().to_string(),
                shown,
                "{given}"
            );
        }
        for bad in ["", "linux", "linux/", "linux//x", "a/b/c/d", "linux/am d64"] {
            let e = Platform::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("invalid platform") && e.contains("linux/amd64"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn debian_architectures_or_an_error_naming_the_supported_ones() {
        let deb = |s: &str| {
            Platform::parse(s)
                .unwrap()
                .debian_arch()
                .map_err(|e| e.to_string())
        };
        assert_eq!(deb("linux/amd64"), Ok("amd64"));
        assert_eq!(deb("linux/arm64"), Ok("arm64"));
        assert_eq!(deb("linux/arm64/v8"), Ok("arm64"));
        for other in [
            "linux/arm/v7",
            "linux/s390x",
            "linux/386",
            "linux/ppc64le",
            "windows/amd64",
        ] {
            let e = deb(other).unwrap_err();
            assert!(
                e.contains(&format!("platform {other} is not supported"))
                    && e.contains("linux/amd64, linux/arm64"),
                "{other}: {e}"
            );
        }
        assert_eq!(
            Platform::from_debian_arch("arm64").unwrap().to_string(),
            "linux/arm64"
        );
        assert!(
            Platform::from_debian_arch("armhf")
                .unwrap_err()
                .to_string()
                .contains("armhf")
        );
    }

    #[test]
    fn serialises_as_its_string_and_round_trips_through_oci() {
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"linux/arm/v7\"");
        let back: Platform = serde_json::from_str("\"linux/arm/v7\"").unwrap();
        assert!(back == "linux/arm/v7" && back != "linux/arm" && back != "linux/arm/v7/x");
        assert_eq!(back, p);
        assert!(serde_json::from_str::<Platform>("\"linux\"").is_err());
        let oci = p.to_oci();
        assert_eq!(oci.architecture().to_string(), "arm");
        assert_eq!(oci.variant().as_deref(), Some("v7"));
        assert_eq!(Platform::from_oci(&oci), p);
        assert!(
            Platform::parse("linux/arm64")
                .unwrap()
                .matches(&Platform::parse("linux/arm64/v8").unwrap().to_oci())
        );
        assert!(!Platform::parse("linux/arm/v6").unwrap().matches(&oci));
    }

    #[test]
    fn the_host_is_a_linux_platform() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(h.to_string(), "linux/amd64");
            assert_eq!(h.debian_arch().unwrap(), "amd64");
        }
    }

    fn binfmt(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("status"), "enabled\n").unwrap();
        for (name, text) in entries {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        d
    }

    /// Native platforms need nothing; a foreign one needs binfmt_misc
    /// mounted and an enabled qemu handler with the F flag, and each
    /// missing piece is named with the command that provides it.
    #[test]
    fn foreign_platforms_need_a_registered_qemu_handler() {
        let amd64 = Platform::linux("amd64", None);
        let arm64 = Platform::linux("arm64", None);
        let none = tempfile::tempdir().unwrap();
        assert!(amd64.check_executable_with(&amd64, none.path()).is_ok());
        assert!(
            Platform::linux("386", None)
                .check_executable_with(&amd64, none.path())
                .is_ok()
        );
        let err = |d: &std::path::Path| {
            format!("{:#}", arm64.check_executable_with(&amd64, d).unwrap_err())
        };
        let e = err(none.path());
        assert!(
            e.contains("mount -t binfmt_misc") && e.contains("qemu-user-static"),
            "{e}"
        );
        let d = binfmt(&[]);
        let e = err(d.path());
        assert!(
            e.contains("qemu-aarch64 is missing")
                && e.contains("update-binfmts --enable qemu-aarch64"),
            "{e}"
        );
        let d = binfmt(&[(
            "qemu-aarch64",
            "disabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\n",
        )]);
        assert!(err(d.path()).contains("is disabled"));
        let d = binfmt(&[(
            "qemu-aarch64",
            "enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: OC\n",
        )]);
        assert!(err(d.path()).contains("without the F flag"));
        let d = binfmt(&[(
            "qemu-aarch64",
            "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\n",
        )]);
        assert!(arm64.check_executable_with(&amd64, d.path()).is_ok());
        let e = format!(
            "{:#}",
            Platform::linux("sparc64", None)
                .check_executable_with(&amd64, d.path())
                .unwrap_err()
        );
        assert!(e.contains("no qemu-user emulator"), "{e}");
    }
}
