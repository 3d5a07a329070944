#!/usr/bin/env bash
# Debian package images: kiln vs mmdebstrap, side by side, in the same run.
#
#   cold compose: empty kiln cache (indexes, .debs, layers) vs
#                 `mmdebstrap --variant=minbase --include=PKGS trixie` (its own
#                 downloads), alternated RUNS times; medians
#   warm compose: everything cached (resolve + assemble only); median of 5
#   size:         the same measure on both sides: `du -sb` of the unpacked
#                 root filesystem (kiln: the image's layers applied by umoci;
#                 mmdebstrap: its tarball extracted). The mmdebstrap tarball
#                 size and kiln's compressed layers are printed for reference.
#
# Usage: RUNS=3 bench/packages.sh [PACKAGE…]   (default: nodejs; kiln uses --base minimal)
# The machine is shared: the load average is printed with the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=("${@:-nodejs}")
include=$(IFS=,; echo "${pkgs[*]}")
runs=${RUNS:-3}
cargo build --release --quiet
kiln=$PWD/target/release/kiln
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
secs() { echo "scale=2; ($2 - $1) / 1" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
export KILN_PROGRESS=quiet KILN_DATA_DIR=$work/data

kiln_colds=() mm_colds=()
for i in $(seq "$runs"); do
  export KILN_CACHE_DIR=$work/cache$i
  echo "== run $i/$runs, load $(cut -d' ' -f1-3 /proc/loadavg)"
  t0=$(now)
  "$kiln" image packages -t bench-pkgs --suite trixie --base minimal "${pkgs[@]}" -o "type=oci,dest=$work/oci" >/dev/null
  t1=$(now)
  kiln_colds+=("$(secs "$t0" "$t1")")
  rm -rf "$work/mm.tar"
  t0=$(now)
  mmdebstrap --quiet --variant=minbase --include="$include" trixie "$work/mm.tar" http://deb.debian.org/debian >/dev/null 2>&1
  t1=$(now)
  mm_colds+=("$(secs "$t0" "$t1")")
  echo "   kiln ${kiln_colds[-1]} s, mmdebstrap ${mm_colds[-1]} s"
  [ "$i" = "$runs" ] || rm -rf "$work/cache$i"
done
kiln_cold=$(printf '%s\n' "${kiln_colds[@]}" | median)
mm_cold=$(printf '%s\n' "${mm_colds[@]}" | median)

warms=()
for _ in 1 2 3 4 5; do
  t0=$(now)
  "$kiln" image packages -t bench-pkgs --suite trixie --base minimal "${pkgs[@]}" >/dev/null
  t1=$(now)
  warms+=("$(secs "$t0" "$t1")")
done
warm=$(printf '%s\n' "${warms[@]}" | median)

mkdir "$work/root" "$work/mmroot"
umoci raw unpack --rootless --image "$work/oci:latest" "$work/root" >/dev/null 2>&1
tar -xf "$work/mm.tar" -C "$work/mmroot" 2>/dev/null || true
kiln_root=$(du -sb "$work/root" | cut -f1)
mm_root=$(du -sb "$work/mmroot" | cut -f1)
kiln_layers=$(python3 -c "
import json
d = json.load(open('$work/oci/index.json'))
m = json.load(open('$work/oci/blobs/sha256/' + d['manifests'][0]['digest'][7:]))
print(sum(l['size'] for l in m['layers']))")
mm_tar=$(stat -c %s "$work/mm.tar")

mib() { echo "scale=1; $1 / 1048576" | bc; }
ratio() { printf "%.2f" "$(echo "scale=4; $1 / $2" | bc)"; }
printf '\n%s: kiln --base minimal vs mmdebstrap --variant=minbase (load now %s)\n' "${pkgs[*]}" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-40s %12s %12s %8s\n' "figure" "kiln" "mmdebstrap" "ratio"
printf '%-40s %11ss %11ss %8s\n' "cold compose (median of $runs)" "$kiln_cold" "$mm_cold" "$(ratio "$kiln_cold" "$mm_cold")"
printf '%-40s %11ss %12s\n' "warm compose (median of 5)" "$warm" "-"
printf '%-40s %9sMiB %9sMiB %8s\n' "rootfs, du -sb of the unpacked tree" "$(mib "$kiln_root")" "$(mib "$mm_root")" "$(ratio "$kiln_root" "$mm_root")"
printf '%-40s %9sMiB %9sMiB\n' "(kiln gzip layers | mmdebstrap tarball)" "$(mib "$kiln_layers")" "$(mib "$mm_tar")"
echo "cold runs: kiln ${kiln_colds[*]} | mmdebstrap ${mm_colds[*]}"
