//! What an ELF file needs from the filesystem it runs on: its shared
//! libraries (`DT_NEEDED`) and its program interpreter (`PT_INTERP`), read
//! with the `object` crate (the parser of gimli/backtrace; only its ELF
//! reader is built). [`super::assumptions`] checks them against a new
//! package set.

use object::elf::{FileHeader32, FileHeader64};
use object::read::elf::{Dyn as _, FileHeader, ProgramHeader as _};
use object::{Endianness, elf};

/// What one ELF file needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// `DT_NEEDED` entries: sonames (`libssl.so.3`), as the loader looks
    /// them up.
    pub libraries: Vec<String>,
    /// `PT_INTERP`: the dynamic loader's absolute path.
    pub interpreter: Option<String>,
}

/// Whether `head` (the first bytes of a file) starts an ELF file.
pub fn is_elf(head: &[u8]) -> bool {
    head.starts_with(&elf::ELFMAG)
}

/// The needs of the ELF file `data`; `None` when it is not a well-formed
/// ELF file (the loader would refuse it too, so it needs nothing).
pub fn needs(data: &[u8]) -> Option<Needs> {
    // e_ident[EI_CLASS]: 32- or 64-bit.
    match *data.get(4)? {
        elf::ELFCLASS64 => needs_of::<FileHeader64<Endianness>>(data),
        elf::ELFCLASS32 => needs_of::<FileHeader32<Endianness>>(data),
        _ => None,
    }
}

fn needs_of<H: FileHeader<Endian = Endianness>>(data: &[u8]) -> Option<Needs> {
    let header = H::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let mut out = Needs::default();
    for ph in header.program_headers(endian, data).ok()? {
        if let Ok(Some(interp)) = ph.interpreter(endian, data) {
            out.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    let sections = header.sections(endian, data).ok()?;
    if let Ok(Some((dynamic, link))) = sections.dynamic(endian, data) {
        let strings = sections.strings(endian, data, link).ok()?;
        for d in dynamic {
            let tag: u64 = d.d_tag(endian).into();
            if tag == u64::from(elf::DT_NULL) {
                break;
            }
            if tag == u64::from(elf::DT_NEEDED)
                && let Ok(name) = d.string(endian, strings)
            {
                out.libraries
                    .push(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_elf_is_nothing() {
        assert!(!is_elf(b"#!/bin/sh\n"));
        assert_eq!(needs(b"\x7fELF\x02garbage"), None);
        assert_eq!(needs(b""), None);
    }

    /// The test binary itself: a dynamically linked glibc executable.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_dynamic_executable_needs_libc_and_its_loader() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(is_elf(&exe));
        let n = needs(&exe).unwrap();
        assert!(
            n.libraries.iter().any(|l| l == "libc.so.6"),
            "{:?}",
            n.libraries
        );
        let interp = n.interpreter.unwrap();
        assert!(
            interp.starts_with("/lib") && interp.contains("ld-linux"),
            "{interp}"
        );
    }
}
