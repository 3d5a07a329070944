//! The runtime stage's check that every shared library the copied files
//! need is there: a step after the copies that fails the build, naming the
//! library, the file that needs it and (when [`super::native::SONAMES`]
//! knows it) the Debian package that ships it, instead of an image whose
//! app dies at start with `libpq.so.5: cannot open shared object file`.
//! When every missing library has a known package it also prints them on
//! a [`MARKER`] line, which `kiln build` reads ([`packages_to_add`]) to add
//! them to the runtime packages and build again: the runtime stage is
//! composed before any build step runs, so this is the one place where
//! what the build produced can still change it.
//!
//! It runs in the runtime image itself and asks its dynamic loader
//! (`LD_TRACE_LOADED_OBJECTS=1 ld.so FILE`, what `ldd` does: it lists
//! every needed library, `=> not found` for a missing one, and runs no
//! code of the file), rather than reading `DT_NEEDED` with
//! an ELF parser in kiln: the loader resolves `RUNPATH`/`$ORIGIN` (wheels
//! bundle libraries in `*.libs/`), the runtime's library paths and what
//! libraries pull in exactly as the app's start will, and kiln would need
//! the runtime stage's file list, which only exists once the solver has
//! composed it. The runtime stage has no `find` or `grep` (`minimal`:
//! dash and coreutils), so the walk is a shell function; it looks at
//! files named like shared objects (`*.so`, `*.so.*`, Node's `*.node`)
//! and at executable files (the binaries Rust, Go with cgo, Crystal,
//! Haskell or Zig builds copy into `bin/`; the loader refuses scripts and
//! static binaries, which pass), so it forks once per such file. Objects for another libc (musl
//! prebuilds npm installs next to glibc ones as optional packages, such as
//! `@rollup/rollup-linux-x64-musl`: the loader lists their `libc.so`, musl's
//! soname, as not found) or another architecture are skipped: the app
//! cannot load them either.

use super::native::SONAMES;

/// Dynamic loaders of the architectures Debian ships, first found wins.
const LOADERS: &[&str] = &[
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/ld-linux-aarch64.so.1",
    "/lib/ld-linux-armhf.so.3",
    "/lib64/ld64.so.2",
    "/lib/ld-linux-riscv64-lp64d.so.1",
    "/lib/ld64.so.1",
    "/lib/ld-linux.so.2",
];

/// The check over `dirs` (absolute paths in the runtime image), as a
/// `/bin/sh` script. Exit 0 when every library resolves, else 1 with the
/// report on stderr, naming packages as `suite` calls them.
pub fn check_script(dirs: &[String], suite: &str) -> String {
    let hints: String = SONAMES
        .iter()
        .map(|(so, pkg)| {
            let pkg = super::suite_package(pkg, suite).unwrap_or(pkg);
            format!("    {so}) echo {pkg} ;;\n")
        })
        .collect();
    let loaders = LOADERS.join(" ");
    let dirs: Vec<String> = dirs.iter().map(|d| shell_quote(d)).collect();
    format!(
        r#"ld=
for l in {loaders}; do [ -x "$l" ] && {{ ld=$l; break; }}; done
[ -n "$ld" ] || exit 0
package_of() {{
  case "$1" in
{hints}  esac
}}
report=
packages=
unknown=
check() {{
  # The braces take the shell's own "Segmentation fault" line too: the
  # loader crashes tracing static executables (esbuild's Go binary).
  out=$({{ LD_TRACE_LOADED_OBJECTS=1 "$ld" "$1"; }} 2>/dev/null) || case "$out" in *"not found"*) ;; *) return 0 ;; esac
  case "$out" in *libc.musl*) return 0 ;; esac
  missing=
  while read -r lib arrow where rest; do
    [ "$arrow" = "=>" ] && [ "$where" = "not" ] || continue
    # musl's libc is NEEDED as plain libc.so (glibc's is libc.so.6): a
    # musl build, which the app never loads here.
    [ "$lib" = libc.so ] && return 0
    missing="$missing $lib"
  done <<EOF
$out
EOF
  for lib in $missing; do
    p=$(package_of "$lib")
    if [ -n "$p" ]; then
      report="$report
  $1 needs $lib (Debian package $p)"
      case " $packages " in *" $p "*) ;; *) packages="${{packages:+$packages }}$p" ;; esac
    else
      report="$report
  $1 needs $lib"
      unknown=1
    fi
  done
}}
walk() {{
  local f
  for f in "$1"/* "$1"/.[!.]*; do
    [ -L "$f" ] && continue
    if [ -d "$f" ]; then walk "$f"; continue; fi
    [ -f "$f" ] || continue
    case "${{f##*/}}" in
      *.so|*.so.*|*.node) check "$f" ;;
      *) [ -x "$f" ] && check "$f" ;;
    esac
  done
}}
for d in {dirs}; do [ -d "$d" ] && walk "$d"; [ -f "$d" ] && check "$d"; done
[ -z "$report" ] && exit 0
echo "kiln: shared libraries that files copied into the runtime image need are missing from it:$report" >&2
[ -z "$unknown" ] && echo "{MARKER} $packages" >&2
echo "Add the Debian packages that ship them to the runtime: [start] aptPkgs = [\"...\", \"PACKAGE\"] in kiln.toml, or KILN_RUNTIME_APT_PKGS=PACKAGE (or ship the build stage: [start] runtime = \"build\")." >&2
exit 1
"#,
        dirs = dirs.join(" ")
    )
}

/// The line the check prints when kiln knows a package for every missing
/// library: the packages, space separated, follow it.
pub const MARKER: &str = "kiln: runtime packages that ship them:";

/// The packages a failed check's output (a build error's text) names on
/// its [`MARKER`] line: what the runtime stage lacks.
pub fn packages_to_add(output: &str) -> Option<Vec<String>> {
    let line = output.lines().find_map(|l| l.trim().strip_prefix(MARKER))?;
    let pkgs: Vec<String> = line.split_whitespace().map(String::from).collect();
    (!pkgs.is_empty()).then_some(pkgs)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The script against the host's own loader: a library that resolves
    /// passes, one that does not is named with the file and the package.
    #[test]
    fn reports_missing_libraries_with_the_file_and_package() {
        if !LOADERS.iter().any(|l| std::path::Path::new(l).exists()) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("site-packages/pkg");
        std::fs::create_dir_all(&sub).unwrap();
        // A real shared object that resolves (the host's libc's loader
        // neighbours): copy one the loader can list.
        let libc = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/aarch64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
        let Some(libc) = libc else { return };
        std::fs::copy(libc, sub.join("ok.so")).unwrap();
        std::fs::write(sub.join("notes.txt"), "not a library").unwrap();
        std::fs::write(sub.join("fake.so"), "not an ELF file").unwrap();
        let dirs = vec![dir.path().display().to_string()];
        let out = Command::new("/bin/sh")
            .args(["-c", &check_script(&dirs, "trixie")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");

        // An object that needs a library that is nowhere: built with the
        // C compiler, when there is one, against a library then removed.
        let cc = Command::new("cc").arg("--version").output();
        if cc.is_err() {
            return;
        }
        let lib_src = dir.path().join("y.c");
        std::fs::write(&lib_src, "int y(void) { return 2; }\n").unwrap();
        let src = dir.path().join("x.c");
        std::fs::write(&src, "int y(void);\nint x(void) { return y(); }\n").unwrap();
        let fake_lib = dir.path().join("libkilnmissing.so.5");
        let ok = Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&fake_lib)
            .arg(&lib_src)
            .arg("-Wl,-soname,libkilnmissing.so.5")
            .status()
            .unwrap();
        assert!(ok.success());
        let needs = sub.join("_ext.cpython-313-x86_64-linux-gnu.so");
        let ok = Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&needs)
            .arg(&src)
            .arg(&fake_lib)
            .status()
            .unwrap();
        assert!(ok.success());
        // An executable (a Rust or Go binary in `bin/`: no `.so` name)
        // that needs it too; a script with the executable bit passes.
        let main_src = dir.path().join("main.c");
        std::fs::write(&main_src, "int y(void);\nint main(void) { return y(); }\n").unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let server = bin.join("server");
        let ok = Command::new("cc")
            .arg("-o")
            .arg(&server)
            .arg(&main_src)
            .arg(&fake_lib)
            .status()
            .unwrap();
        assert!(ok.success());
        let script = bin.join("start");
        std::fs::write(&script, "#!/bin/sh\nexec ./server\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::remove_file(&fake_lib).unwrap();
        let out = Command::new("/bin/sh")
            .args(["-c", &check_script(&dirs, "trixie")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("{} needs libkilnmissing.so.5", needs.display())),
            "{err}"
        );
        assert!(
            err.contains(&format!("{} needs libkilnmissing.so.5", server.display())),
            "{err}"
        );
        assert!(!err.contains(&script.display().to_string()), "{err}");
        assert!(!err.contains("ok.so"), "{err}");
        assert!(!err.contains("fake.so"), "{err}");
        // No package known for that library: no packages line.
        assert_eq!(packages_to_add(&err), None, "{err}");
        assert!(!err.contains(MARKER), "{err}");
    }

    /// A static executable (esbuild's Go binary in node_modules) passes
    /// without a word: the loader crashes tracing it, and the shell's
    /// "Segmentation fault" line must not reach the build's log.
    #[test]
    fn static_executable_passes_silently() {
        if !std::path::Path::new("/lib64/ld-linux-x86-64.so.2").exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("main.c");
        std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
        let bin = dir.path().join("bin/esbuild");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        let built = Command::new("cc")
            .args(["-static", "-o"])
            .arg(&bin)
            .arg(&src)
            .status();
        // No C compiler or no static libc here: nothing to test with.
        if !built.is_ok_and(|s| s.success()) {
            return;
        }
        let dirs = vec![dir.path().display().to_string()];
        let out = Command::new("/bin/sh")
            .args(["-c", &check_script(&dirs, "trixie")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    }

    #[test]
    fn hints_name_the_package_of_the_suite() {
        let s = check_script(&["/app".into()], "trixie");
        assert!(s.contains("libpq.so.5) echo libpq5 ;;"));
        assert!(s.contains("libmagic.so.1) echo libmagic1t64 ;;"));
        assert!(s.contains("for d in '/app'; do"));
        let s = check_script(&["/app".into()], "bookworm");
        assert!(s.contains("libmagic.so.1) echo libmagic1 ;;"));
    }

    #[test]
    fn packages_line_is_read_back() {
        let out = format!(
            "x\n  /a.so needs libpq.so.5 (Debian package libpq5)\n{MARKER} libpq5 libgif7\nAdd …"
        );
        assert_eq!(packages_to_add(&out).unwrap(), ["libpq5", "libgif7"]);
        assert_eq!(packages_to_add("failed with exit code 1"), None);
    }
}
