#!/usr/bin/env bash
# What the steps' private network costs (docs/sandbox.md, "Network"):
#   1. a cold auto build of examples/node-npm (fresh KILN_CACHE_DIR and data
#      dir per run, the host's CA bundle as --ca-cert) with --network host
#      and with the default private network;
#   2. the per-step overhead: 20 `RUN true` steps on a local Debian minbase
#      image (re-run through a changed build argument), host vs default,
#      divided by 20.
# Prints median wall times, the difference and the ratio.
#   bench/network.sh            # RUNS=3 cold builds, STEP_RUNS=5 step runs
#   KILN=target/debug/kiln bench/network.sh
# Needs root, slirp4netns or pasta, buildah and mmdebstrap (for the base),
# the network.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
STEP_RUNS=${STEP_RUNS:-5}
STEPS=20
WORK=$(mktemp -d /var/tmp/kiln-bench-network.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
TAR=/var/tmp/kiln-e2e-cache/bookworm-minbase.tar
CA=/etc/ssl/certs/ca-certificates.crt

KILN=${KILN:-$ROOT/target/release/kiln}
if [ ! -x "$KILN" ]; then
  cargo build --release --manifest-path "$ROOT/Cargo.toml" --bin kiln
fi
if [ ! -f "$TAR" ]; then
  mkdir -p "$(dirname "$TAR")"
  mmdebstrap --variant=minbase --quiet bookworm "$WORK/rootfs"
  (cd "$WORK/rootfs" && tar --numeric-owner -cf "$TAR.part" $(ls -A))
  mv "$TAR.part" "$TAR"
  rm -rf "$WORK/rootfs"
fi

now() { date +%s.%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# 1. Cold auto builds, alternating the two networks.
: > "$WORK/cold-host"
: > "$WORK/cold-default"
for i in $(seq 1 "$RUNS"); do
  for net in host default; do
    home=$WORK/cold-$net-$i
    mkdir -p "$home"
    t0=$(now)
    KILN_CACHE_DIR=$home/cache KILN_DATA_DIR=$home/data "$KILN" --progress quiet \
      build "$ROOT/examples/node-npm" -t node-npm:bench --ca-cert "$CA" --network "$net" >/dev/null
    echo "$(now) - $t0" | bc >> "$WORK/cold-$net"
    rm -rf "$home"
  done
done

# 2. Per-step overhead, on the minbase loaded as an image (made by buildah,
# as bench/sandbox.sh does).
export KILN_CACHE_DIR=$WORK/steps-cache KILN_DATA_DIR=$WORK/steps-data
c=$(buildah from scratch)
buildah add -q "$c" "$TAR" / >/dev/null
buildah commit -q --rm "$c" localhost/kiln-bench-network-base >/dev/null
buildah push -q localhost/kiln-bench-network-base "oci-archive:$WORK/base.tar:bench-base:1" >/dev/null
buildah rmi -f localhost/kiln-bench-network-base >/dev/null
"$KILN" --progress quiet load "$WORK/base.tar" >/dev/null
ctx=$WORK/steps
mkdir -p "$ctx"
{
  echo "FROM bench-base:1"
  echo "ARG RUN_ID"
  for _ in $(seq 1 "$STEPS"); do echo "RUN true"; done
} > "$ctx/Dockerfile"
"$KILN" --progress quiet build "$ctx" --build-arg RUN_ID=warm >/dev/null
: > "$WORK/steps-host"
: > "$WORK/steps-default"
for i in $(seq 1 "$STEP_RUNS"); do
  for net in host default; do
    t0=$(now)
    "$KILN" --progress quiet build "$ctx" --build-arg "RUN_ID=$net-$i" --network "$net" >/dev/null
    echo "$(now) - $t0" | bc >> "$WORK/steps-$net"
  done
done

ch=$(median < "$WORK/cold-host")
cd_=$(median < "$WORK/cold-default")
sh_=$(median < "$WORK/steps-host")
sd=$(median < "$WORK/steps-default")
printf 'cold auto build, examples/node-npm (median of %d):\n' "$RUNS"
printf '  --network host   %6.2f s\n  default          %6.2f s\n  difference       %+6.2f s, ratio %.3f\n' \
  "$ch" "$cd_" "$(echo "$cd_ - $ch" | bc)" "$(echo "$cd_ / $ch" | bc -l)"
printf '%d x RUN true (median of %d):\n' "$STEPS" "$STEP_RUNS"
printf '  --network host   %6.3f s\n  default          %6.3f s\n  per step         %+6.1f ms, ratio %.3f\n' \
  "$sh_" "$sd" "$(echo "($sd - $sh_) * 1000 / $STEPS" | bc -l)" "$(echo "$sd / $sh_" | bc -l)"
