//! The shell scripts kiln runs on the server. They need only `sh` and
//! coreutils (`sha256sum`, `mv`, `mkdir`, `cat`, `ls`, `rm`), and take every
//! path and name as a positional argument, quoted by [`quote`], so nothing
//! from a URL or an image name is ever parsed as shell syntax.

/// Exit codes the scripts use to say what is wrong (ssh itself uses 255).
pub mod exit {
    /// A tool the protocol needs is missing; its name is on stderr.
    pub const MISSING_TOOL: i32 = 40;
    /// The target directory exists and is not an OCI layout.
    pub const NOT_A_LAYOUT: i32 = 41;
    /// A received blob's sha256 does not match its name.
    pub const DIGEST_MISMATCH: i32 = 42;
    /// A blob the tag would point at is missing on the server.
    pub const MISSING_BLOB: i32 = 43;
    /// index.json changed since it was read (another push): retry.
    pub const INDEX_CHANGED: i32 = 44;
    /// A path the protocol writes is a symlink (named on stderr).
    pub const SYMLINKED: i32 = 45;
}

/// Single-quotes `s` for a POSIX shell (`'` becomes `'\''`).
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The command line ssh hands to the remote user's shell: `sh -c SCRIPT
/// kiln ARGS…`, each part quoted, so it means the same under sh, bash, zsh.
pub fn command_line(script: &str, args: &[&str]) -> String {
    let mut out = format!("sh -c {} kiln", quote(script));
    for a in args {
        out.push(' ');
        out.push_str(&quote(a));
    }
    out
}

/// Shared prologue: `$1` is the layout path ("" = the remote user's kiln
/// image store); sets `$root` and `$blobs`.
const ROOT: &str = r#"set -eu
if [ -n "$1" ]; then root=$1; else root=${XDG_DATA_HOME:-$HOME/.local/share}/kiln/images; fi
blobs=$root/blobs/sha256
"#;

/// Checks the tools, creates the layout if needed, prints `root PATH`,
/// `head gnu` when GNU head is there (it reads exactly N bytes from a
/// pipe, which [`receive_and_tag`] relies on), then `blobs` and the names in
/// `blobs/sha256` (one a line), then `index` and index.json. Args: ROOT.
pub fn prepare() -> String {
    format!(
        r#"{ROOT}for c in sha256sum mv mkdir cat ls rm; do
  command -v "$c" >/dev/null 2>&1 || {{ echo "$c" >&2; exit {missing}; }}
done
if [ -e "$root" ] && [ ! -e "$root/oci-layout" ] && [ ! -d "$blobs" ] && [ -n "$(ls -A "$root")" ]; then
  exit {not_layout}
fi
# The store is another account's directory on another machine: never write
# through a symlink someone planted where kiln writes.
for p in "$root/blobs" "$blobs" "$root/oci-layout" "$root/index.json"; do
  if [ -L "$p" ]; then echo "$p" >&2; exit {symlinked}; fi
done
mkdir -p "$blobs"
if [ ! -e "$root/oci-layout" ]; then
  printf '%s' '{{"imageLayoutVersion":"1.0.0"}}' > "$root/.kiln-oci-layout.$$"
  mv -f "$root/.kiln-oci-layout.$$" "$root/oci-layout"
fi
if [ ! -e "$root/index.json" ]; then
  printf '%s' '{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}}' > "$root/.kiln-index.$$"
  mv -f "$root/.kiln-index.$$" "$root/index.json"
fi
printf 'root %s\n' "$root"
case "$(head --version 2>/dev/null)" in *GNU*) echo "head gnu" ;; esac
echo blobs
ls "$blobs"
echo index
cat "$root/index.json"
"#,
        missing = exit::MISSING_TOOL,
        not_layout = exit::NOT_A_LAYOUT,
        symlinked = exit::SYMLINKED,
    )
}

/// Receives one blob on stdin into a temp name, checks its sha256 and
/// renames it into place. A cut connection leaves at most a dot-named temp
/// file, never a blob under its real name. Args: ROOT HEX.
pub fn receive_blob() -> String {
    format!(
        r#"{ROOT}tmp=$blobs/.kiln-tmp-$2.$$
trap 'rm -f "$tmp"' EXIT
trap 'rm -f "$tmp"; exit 1' HUP INT TERM PIPE
# A name planted in advance (a symlink) is removed, and the file is created
# anew (noclobber), not opened through it.
rm -f "$tmp"
set -C
cat > "$tmp"
set +C
sum=$(sha256sum "$tmp")
sum=${{sum%% *}}
if [ "$sum" != "$2" ]; then
  echo "received sha256:$sum" >&2
  exit {mismatch}
fi
mv -f "$tmp" "$blobs/$2"
trap - EXIT
"#,
        mismatch = exit::DIGEST_MISMATCH
    )
}

/// Several blobs back to back on stdin (GNU `head -c` splits them; the
/// server hashes one while the next arrives), each checked and renamed into
/// place before the next, then [`write_index`] — one round trip: N blobs, then
/// index.json (ISIZE bytes) on stdin; the index is written only when every
/// blob of the image (CLOSURE) is in place and index.json still hashes to
/// OLD. Prints `ok HEX` per blob, then `tagged`.
/// Args: ROOT OLD ISIZE N [HEX SIZE]×N CLOSURE….
pub fn receive_and_tag() -> String {
    format!(
        r#"{ROOT}old=$2; isize=$3; n=$4
shift 4
i=0
while [ "$i" -lt "$n" ]; do
  h=$1; sz=$2; shift 2
  tmp=$blobs/.kiln-tmp-$h.$$
  trap 'rm -f "$tmp"' EXIT
  trap 'rm -f "$tmp"; exit 1' HUP INT TERM PIPE
  head -c "$sz" > "$tmp"
  sum=$(sha256sum "$tmp")
  sum=${{sum%% *}}
  if [ "$sum" != "$h" ]; then
    echo "sha256:$h arrived as sha256:$sum" >&2
    exit {mismatch}
  fi
  mv -f "$tmp" "$blobs/$h"
  trap - EXIT
  echo "ok $h"
  i=$((i + 1))
done
for b in "$@"; do
  [ -f "$blobs/$b" ] || {{ echo "sha256:$b" >&2; exit {missing}; }}
done
tmp=$root/.kiln-index.$$
trap 'rm -f "$tmp"' EXIT
head -c "$isize" > "$tmp"
cur=$(sha256sum "$root/index.json")
cur=${{cur%% *}}
[ "$cur" = "$old" ] || exit {changed}
mv -f "$tmp" "$root/index.json"
trap - EXIT
echo tagged
"#,
        mismatch = exit::DIGEST_MISMATCH,
        missing = exit::MISSING_BLOB,
        changed = exit::INDEX_CHANGED
    )
}

/// Prints `index.json` (to be edited by kiln). Args: ROOT.
pub fn read_index() -> String {
    format!("{ROOT}cat \"$root/index.json\"\n")
}

/// Replaces `index.json` with stdin, atomically, after checking that every
/// blob of the image is in place and that the index is still the one kiln
/// read (sha256 OLD), so a concurrent push is not overwritten.
/// Args: ROOT OLD_SHA256 HEX….
pub fn write_index() -> String {
    format!(
        r#"{ROOT}old=$2
shift 2
for b in "$@"; do
  [ -f "$blobs/$b" ] || {{ echo "sha256:$b" >&2; exit {missing}; }}
done
tmp=$root/.kiln-index.$$
trap 'rm -f "$tmp"' EXIT
cat > "$tmp"
cur=$(sha256sum "$root/index.json")
cur=${{cur%% *}}
[ "$cur" = "$old" ] || exit {changed}
mv -f "$tmp" "$root/index.json"
trap - EXIT
"#,
        missing = exit::MISSING_BLOB,
        changed = exit::INDEX_CHANGED
    )
}

/// Runs a command (`$2`, `$3`, …) only when its program exists; exit 127
/// (with its name on stderr) otherwise. Args: ROOT PROGRAM ARGS….
pub fn run_if_present() -> String {
    format!(
        r#"{ROOT}shift
command -v "$1" >/dev/null 2>&1 || {{ echo "$1" >&2; exit 127; }}
exec "$@"
"#
    )
}

/// Prints the name of the first program that exists. Args: ROOT NAMES….
pub fn which_first() -> String {
    format!(
        r#"{ROOT}shift
for p in "$@"; do
  if command -v "$p" >/dev/null 2>&1; then echo "$p"; exit 0; fi
done
exit 1
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn quoting() {
        assert_eq!(quote("abc/d-e.f:1"), "abc/d-e.f:1");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote("`x`;y"), "'`x`;y'");
    }

    /// The remote command line survives a real `sh` unchanged: hostile
    /// arguments reach the script as data.
    #[test]
    fn command_line_round_trips_through_sh() {
        let args = ["a b", "it's", "$(echo pwned)", "`id`", "x\"y", ""];
        let line = command_line(r#"for a in "$@"; do printf '[%s]\n' "$a"; done"#, &args);
        let out = Command::new("sh").arg("-c").arg(&line).output().unwrap();
        let want: String = args.iter().map(|a| format!("[{a}]\n")).collect();
        assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    }

    fn sh(script: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
        use std::io::Write;
        let mut c = Command::new("sh")
            .arg("-c")
            .arg(command_line(script, args))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        match c.stdin.take().unwrap().write_all(stdin) {
            // A script may refuse (exit) before it reads its input; the
            // callers assert its exit code.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            r => r.unwrap(),
        }
        c.wait_with_output().unwrap()
    }

    /// The scripts themselves, run by the local sh on a temp dir with a
    /// space and a quote in its name.
    #[test]
    fn scripts_on_a_local_layout() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("my 'store'");
        let root_s = root.to_str().unwrap();
        let out = sh(&prepare(), &[root_s], b"");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().next(), Some(format!("root {root_s}").as_str()));
        assert!(root.join("oci-layout").is_file());
        assert!(root.join("index.json").is_file());

        let hex = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"; // "hello"
        let bad = sh(&receive_blob(), &[root_s, hex], b"hellX");
        assert_eq!(bad.status.code(), Some(exit::DIGEST_MISMATCH));
        let good = sh(&receive_blob(), &[root_s, hex], b"hello");
        assert!(good.status.success(), "{good:?}");
        let names: Vec<_> = std::fs::read_dir(root.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![hex.to_string()], "no temp file left behind");

        // A batch: two blobs back to back (GNU head splits them).
        let world = "486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9cb8a7"; // "world"
        let stale = "1".repeat(64);
        let args = [root_s, &stale, "0", "2", world, "5", hex, "5"];
        let out = sh(&receive_and_tag(), &args, b"worldhello");
        // The blobs are placed; the stale index hash stops the tag.
        assert_eq!(out.status.code(), Some(exit::INDEX_CHANGED), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("ok {world}\nok {hex}\n")
        );
        assert_eq!(
            std::fs::read(root.join("blobs/sha256").join(world)).unwrap(),
            b"world"
        );
        let out = sh(&receive_and_tag(), &args, b"worldhellX");
        assert_eq!(out.status.code(), Some(exit::DIGEST_MISMATCH));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("ok {world}\n")
        );
        std::fs::remove_file(root.join("blobs/sha256").join(world)).unwrap();

        // Blobs and the index in one go; a stale OLD leaves index.json alone.
        let index = std::fs::read(root.join("index.json")).unwrap();
        let old = crate::oci::Digest::of(&index).hex().to_string();
        let args = [root_s, &stale, "2", "1", world, "5", hex, world];
        let out = sh(&receive_and_tag(), &args, b"world{}");
        assert_eq!(out.status.code(), Some(exit::INDEX_CHANGED), "{out:?}");
        assert_eq!(std::fs::read(root.join("index.json")).unwrap(), index);
        let args = [root_s, &old, "2", "1", world, "5", hex, world];
        let out = sh(&receive_and_tag(), &args, b"world{}");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("ok {world}\ntagged\n")
        );
        assert_eq!(std::fs::read(root.join("index.json")).unwrap(), b"{}");
        std::fs::write(root.join("index.json"), &index).unwrap();
        std::fs::remove_file(root.join("blobs/sha256").join(world)).unwrap();

        let index = std::fs::read(root.join("index.json")).unwrap();
        let old = crate::oci::Digest::of(&index).hex().to_string();
        let missing = "0".repeat(64);
        let out = sh(&write_index(), &[root_s, &old, hex, &missing], b"{}");
        assert_eq!(out.status.code(), Some(exit::MISSING_BLOB));
        let out = sh(&write_index(), &[root_s, &"1".repeat(64), hex], b"{}");
        assert_eq!(out.status.code(), Some(exit::INDEX_CHANGED));
        assert_eq!(std::fs::read(root.join("index.json")).unwrap(), index);
        let out = sh(&write_index(), &[root_s, &old, hex], b"{\"new\":1}");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            std::fs::read(root.join("index.json")).unwrap(),
            b"{\"new\":1}"
        );
    }

    #[test]
    fn prepare_refuses_symlinks_where_it_writes() {
        for link in ["blobs", "index.json"] {
            let dir = tempfile::tempdir().unwrap();
            let canary = tempfile::tempdir().unwrap();
            std::fs::write(
                dir.path().join("oci-layout"),
                r#"{"imageLayoutVersion":"1.0.0"}"#,
            )
            .unwrap();
            std::os::unix::fs::symlink(canary.path(), dir.path().join(link)).unwrap();
            let out = sh(&prepare(), &[dir.path().to_str().unwrap()], b"");
            assert_eq!(out.status.code(), Some(exit::SYMLINKED), "{link}");
            assert!(String::from_utf8_lossy(&out.stderr).contains(link));
            assert_eq!(std::fs::read_dir(canary.path()).unwrap().count(), 0);
        }
    }

    #[test]
    fn prepare_refuses_a_foreign_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let out = sh(&prepare(), &[dir.path().to_str().unwrap()], b"");
        assert_eq!(out.status.code(), Some(exit::NOT_A_LAYOUT));
    }
}
