#!/usr/bin/env bash
# `kiln rebase` of a go-mod image vs the image's cold build (issue 20's
# goal: the rebase in ≤ 10% of the cold build's time).
#
# go-mod is built with CGO_ENABLED=1: the default static Go runtime is
# `scratch` (no package layers, nothing to rebase), a cgo build runs on a
# Debian runtime set (minimal + ca-certificates tzdata tini). The set is
# made older than the suite's: `kiln lock --auto`, then libzstd1 moved
# back to trixie's release version (trixie-security has an update), so
# the rebase has one package to take.
#   cold:   `kiln build` with empty cache and data dirs (every .deb, the
#           Go toolchain, the layers: all downloaded and written)
#   rebase: `kiln rebase go:1 -t go:2` right after, on that cache (it
#           reads the suite's index again, downloads the new .deb, writes
#           the changed package layers, checks the app layers' needs)
# Prints both wall times and the ratio, and checks the rebased image kept
# every app layer.
#   bench/rebase.sh                  release build of kiln
#   KILN=target/debug/kiln bench/rebase.sh
#   BENCH_TMP=DIR                    where the homes go (default /var/tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${KILN:-}" ]; then
  cargo build --release --quiet
  KILN=target/release/kiln
fi
KILN=$(realpath "$KILN")
OLD_ZSTD=${OLD_ZSTD:-1.5.7+dfsg-1}
work=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-rebase.XXXXXX")
trap 'rm -rf "$work"' EXIT
export KILN_CACHE_DIR=$work/cache KILN_DATA_DIR=$work/data NO_COLOR=1
unset SOURCE_DATE_EPOCH
cp -r examples/go-mod "$work/app"
ca=()
for c in /usr/local/share/ca-certificates/*.crt; do
  [ -f "$c" ] && ca+=(--ca-cert "$c")
done

now() { date +%s.%N; }

# The lock, with libzstd1 pinned behind trixie-security (in every set:
# the runtime's is the one rebased). Done in a throw-away cache so the
# cold build starts empty.
KILN_CACHE_DIR=$work/lock-cache "$KILN" lock --auto "$work/app" -e CGO_ENABLED=1 >/dev/null
KILN_CACHE_DIR=$work/lock-cache "$KILN" lock --suite trixie --base none \
  "libzstd1=$OLD_ZSTD" -o "$work/zstd.lock" >/dev/null
rm -rf "$work/lock-cache"
python3 - "$work/app/kiln.lock" "$work/zstd.lock" <<'PY'
import re, sys, tomllib
lock, zstd = sys.argv[1], sys.argv[2]
old = next(p for p in tomllib.load(open(zstd, "rb"))["package"] if p["name"] == "libzstd1")
text = open(lock).read()
def pin(m):
    block = m.group(0)
    for k in ("version", "archive", "filename", "sha256"):
        block = re.sub(rf'^{k} = ".*"$', f'{k} = "{old[k]}"', block, flags=re.M)
    return re.sub(r"^size = \d+$", f"size = {old['size']}", block, flags=re.M)
text, n = re.subn(r'^name = "libzstd1"\n(?:(?!\n\n|\n\[).)*', pin, text, flags=re.M | re.S)
assert n >= 1, "libzstd1 is not in the lock"
open(lock, "w").write(text)
PY

t0=$(now)
"$KILN" build "$work/app" -t go:1 -e CGO_ENABLED=1 "${ca[@]}" >/dev/null 2>"$work/build.log" ||
  { cat "$work/build.log"; exit 1; }
t1=$(now)
"$KILN" rebase go:1 -t go:2 >"$work/rebase.out" 2>"$work/rebase.log" ||
  { cat "$work/rebase.log"; exit 1; }
t2=$(now)
cat "$work/rebase.out"
grep -q "libzstd1: $OLD_ZSTD → " "$work/rebase.out" ||
  { echo "the rebase did not update libzstd1" >&2; exit 1; }

layers() { "$KILN" inspect "$1" | python3 -c 'import json,sys; print("\n".join(l["digest"] for l in json.load(sys.stdin)["manifest"]["layers"]))'; }
kept=$(comm -12 <(layers go:1 | sort) <(layers go:2 | sort) | wc -l)
app=$(python3 - "$KILN_DATA_DIR"/sbom <<'PY'
import json, pathlib, sys
for f in pathlib.Path(sys.argv[1]).glob("*.json"):
    r = json.loads(f.read_text())
    if r["build"].get("rebased_from"):
        sets = [s for s in r["build"]["package_sets"] if s["in_image"]]
        print(len(r["image"]["layers"]) - len(sets[0]["request"]["layers"]))
PY
)
cold=$(echo "$t1 - $t0" | bc)
rebase=$(echo "$t2 - $t1" | bc)
ratio=$(echo "scale=3; $rebase / $cold" | bc)
printf 'go-mod (CGO_ENABLED=1): cold build %.1f s, rebase %.2f s, ratio %.3f (goal ≤ 0.10); %s layers of go:1 kept in go:2 (%s app layers)\n' \
  "$cold" "$rebase" "$ratio" "$kept" "$app"
if (( $(echo "$ratio <= 0.10" | bc) )); then echo "goal met"; else echo "goal MISSED"; fi
