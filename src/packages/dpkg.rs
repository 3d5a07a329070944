//! The dpkg database an image carries, so `dpkg -l`, `dpkg -S` and image
//! scanners (syft, trivy, grype) see every package: per-package
//! `/var/lib/dpkg/info/<pkg>.{list,md5sums,conffiles,postinst…}` (in that
//! package's layer) and the global `/var/lib/dpkg/status` (in the final
//! layer).

use std::sync::Arc;

use super::deb::Deb;
use crate::Result;
use crate::oci::layer::{Entry, EntryKind, FileSource, Meta};

/// dpkg's name for a package: `name:arch` when `Multi-Arch: same`.
pub fn dpkg_name(deb: &Deb) -> String {
    let name = deb.control.get("Package").unwrap_or_default();
    let arch = deb.control.get("Architecture").unwrap_or_default();
    if deb.control.get("Multi-Arch").as_deref() == Some("same") {
        format!("{name}:{arch}")
    } else {
        name
    }
}

fn file(path: String, bytes: Vec<u8>, mode: u32) -> Result<Entry> {
    Entry::new(
        path,
        EntryKind::File(FileSource::Bytes(Arc::from(bytes))),
        Meta::root(mode),
    )
}

/// The `info/` files of one package.
pub fn info_entries(deb: &Deb) -> Result<Vec<Entry>> {
    let n = dpkg_name(deb);
    let dir = "var/lib/dpkg/info";
    let mut out = Vec::new();
    let mut list = deb.list.join("\n");
    list.push('\n');
    out.push(file(format!("{dir}/{n}.list"), list.into_bytes(), 0o644)?);
    if let Some(m) = &deb.md5sums {
        out.push(file(
            format!("{dir}/{n}.md5sums"),
            m.clone().into_bytes(),
            0o644,
        )?);
    }
    if !deb.conffiles.is_empty() {
        let mut c = deb.conffiles.join("\n");
        c.push('\n');
        out.push(file(format!("{dir}/{n}.conffiles"), c.into_bytes(), 0o644)?);
    }
    for (name, bytes) in &deb.scripts {
        let exec = matches!(
            name.as_str(),
            "preinst" | "postinst" | "prerm" | "postrm" | "config"
        );
        out.push(file(
            format!("{dir}/{n}.{name}"),
            bytes.clone(),
            if exec { 0o755 } else { 0o644 },
        )?);
    }
    Ok(out)
}

/// One `status` paragraph: the package's control data, `Status:` after
/// `Package:`, and its conffiles with their md5sums.
pub fn status_paragraph(deb: &Deb) -> String {
    let mut out = String::new();
    for line in deb.control.text.trim_end().lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("Package:") {
            out.push_str("Status: install ok installed\n");
        }
    }
    if !deb.conffiles.is_empty() {
        out.push_str("Conffiles:\n");
        for c in &deb.conffiles {
            // dpkg records the md5 of each conffile as unpacked (the
            // md5sums member usually leaves conffiles out).
            let rel = c.trim_start_matches('/');
            let md5 = super::deb::merge_usr(std::path::Path::new(rel))
                .and_then(|p| {
                    deb.file(&p.to_string_lossy()).map(|b| {
                        use md5::Digest as _;
                        hex::encode(md5::Md5::digest(b))
                    })
                })
                .or_else(|| deb.conffile_md5(c))
                .unwrap_or_else(|| "newconffile".to_string());
            out.push_str(&format!(" {c} {md5}\n"));
        }
    }
    out
}

/// `/var/lib/dpkg/status` and the other global files of the database.
pub fn database_entries(debs: &[&Deb], arch: &str) -> Result<Vec<Entry>> {
    let mut paras: Vec<(String, String)> = debs
        .iter()
        .map(|d| (dpkg_name(d), status_paragraph(d)))
        .collect();
    paras.sort();
    let status = paras
        .into_iter()
        .map(|(_, p)| p)
        .collect::<Vec<_>>()
        .join("\n");
    Ok(vec![
        file("var/lib/dpkg/status".into(), status.into_bytes(), 0o644)?,
        file("var/lib/dpkg/available".into(), Vec::new(), 0o644)?,
        file(
            "var/lib/dpkg/arch".into(),
            format!("{arch}\n").into_bytes(),
            0o644,
        )?,
        // Format 1: info files of Multi-Arch: same packages are `name:arch.*`.
        file("var/lib/dpkg/info/format".into(), b"1\n".to_vec(), 0o644)?,
        file("var/lib/dpkg/diversions".into(), Vec::new(), 0o644)?,
        file("var/lib/dpkg/statoverride".into(), Vec::new(), 0o644)?,
        Entry::new("var/lib/dpkg/updates", EntryKind::Dir, Meta::root(0o755))?,
        Entry::new("var/lib/dpkg/triggers", EntryKind::Dir, Meta::root(0o755))?,
        Entry::new(
            "var/lib/dpkg/alternatives",
            EntryKind::Dir,
            Meta::root(0o755),
        )?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_has_status_line_and_conffiles() {
        let bytes = crate::packages::deb::tests::make_deb(
            "Package: x\nVersion: 1\nArchitecture: amd64\nMulti-Arch: same\nDescription: d\n more\n",
            &[("./etc/x.conf", b"a")],
        );
        let mut d = crate::packages::deb::read(&bytes, "x.deb").unwrap();
        d.conffiles = vec!["/etc/x.conf".into()];
        d.md5sums = Some("0cc175b9c0f1b6a831c399e269772661  etc/x.conf\n".into());
        let s = status_paragraph(&d);
        assert!(
            s.starts_with("Package: x\nStatus: install ok installed\nVersion: 1\n"),
            "{s}"
        );
        assert!(
            s.ends_with("Conffiles:\n /etc/x.conf 0cc175b9c0f1b6a831c399e269772661\n"),
            "{s}"
        );
        assert_eq!(dpkg_name(&d), "x:amd64");
        let info = info_entries(&d).unwrap();
        assert_eq!(
            info[0].path.to_str(),
            Some("var/lib/dpkg/info/x:amd64.list")
        );
    }
}
