#!/usr/bin/env bash
# Debian package images: kiln vs mmdebstrap, side by side.
#
#   cold compose: empty kiln cache (indexes, .debs, layers) vs
#                 `mmdebstrap --variant=minbase --include=nodejs trixie` (its own downloads)
#   warm compose: everything cached (resolve + assemble only)
#   sizes:        kiln's node image (compressed layers, and unpacked) vs the
#                 mmdebstrap tarball (uncompressed and gzip)
#
# Usage: bench/packages.sh [PACKAGE…]   (default: nodejs)
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=("${@:-nodejs}")
include=$(IFS=,; echo "${pkgs[*]}")
cargo build --release --quiet
kiln=$PWD/target/release/kiln
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }

export KILN_DATA_DIR=$work/data KILN_PROGRESS=quiet
export KILN_CACHE_DIR=$work/cache

echo "== cold compose (empty caches): kiln image packages --suite trixie ${pkgs[*]}"
t0=$(now)
"$kiln" image packages -t bench-node --suite trixie "${pkgs[@]}" -o "type=oci,dest=$work/oci" >/dev/null
t1=$(now)
kiln_cold=$(secs "$t0" "$t1")

echo "== cold: mmdebstrap --variant=minbase --include=$include trixie"
t0=$(now)
mmdebstrap --quiet --variant=minbase --include="$include" trixie "$work/mm.tar" http://deb.debian.org/debian >/dev/null 2>&1
t1=$(now)
mm_cold=$(secs "$t0" "$t1")

echo "== warm compose (all cached), best of 5"
warm=999
for _ in 1 2 3 4 5; do
  t0=$(now)
  "$kiln" image packages -t bench-node --suite trixie "${pkgs[@]}" >/dev/null
  t1=$(now)
  w=$(secs "$t0" "$t1")
  warm=$(echo "if ($w < $warm) $w else $warm" | bc)
done

kiln_layers=$(du -cb "$work"/oci/blobs/sha256/* | tail -1 | cut -f1)
mkdir "$work/root"
umoci raw unpack --rootless --image "$work/oci:latest" "$work/root" >/dev/null 2>&1 \
  || (cd "$work/root" && for b in $(python3 -c "import json,sys;d=json.load(open('$work/oci/index.json'));m=json.load(open('$work/oci/blobs/sha256/'+d['manifests'][0]['digest'][7:]));print(' '.join(l['digest'][7:] for l in m['layers']))"); do tar -xzf "$work/oci/blobs/sha256/$b" 2>/dev/null || true; done)
kiln_unpacked=$(du -sb "$work/root" | cut -f1)
mm_tar=$(stat -c %s "$work/mm.tar")
mm_gz=$(gzip -6 -c "$work/mm.tar" | wc -c)

mib() { echo "scale=1; $1 / 1048576" | bc; }
printf '\n%-34s %12s %12s %8s\n' "figure" "kiln" "mmdebstrap" "ratio"
printf '%-34s %11ss %11ss %8s\n' "cold compose" "$kiln_cold" "$mm_cold" "$(echo "scale=2; $kiln_cold / $mm_cold" | bc)"
printf '%-34s %11ss %12s\n' "warm compose (best of 5)" "$warm" "-"
printf '%-34s %10sMiB %10sMiB %8s\n' "image, uncompressed" "$(mib "$kiln_unpacked")" "$(mib "$mm_tar")" "$(echo "scale=2; $kiln_unpacked / $mm_tar" | bc)"
printf '%-34s %10sMiB %10sMiB %8s\n' "image, gzip (kiln: layer blobs)" "$(mib "$kiln_layers")" "$(mib "$mm_gz")" "$(echo "scale=2; $kiln_layers / $mm_gz" | bc)"
