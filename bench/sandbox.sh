#!/usr/bin/env bash
# Sandbox overhead: run `true` on a 10-layer Debian image (snapshots warm),
# kiln run vs buildah run (chroot isolation) vs podman run, same machine,
# same run. Prints medians in ms and kiln's ratio to each. Needs root,
# buildah, podman, runc, mmdebstrap, hyperfine, python3.
#
#   bench/sandbox.sh            # RUNS=50 by default
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-50}
WORK=${BENCH_DIR:-/var/tmp/kiln-bench-sandbox}
TAR=/var/tmp/kiln-e2e-cache/bookworm-minbase.tar
IMG=localhost/kiln-bench-10:latest
export KILN_CACHE_DIR=$WORK/cache KILN_DATA_DIR=$WORK/data
mkdir -p "$WORK"

KILN=${KILN:-$ROOT/target/release/kiln}
if [ ! -x "$KILN" ]; then
  cargo build --release --manifest-path "$ROOT/Cargo.toml" --bin kiln
fi

if [ ! -f "$TAR" ]; then
  mkdir -p "$(dirname "$TAR")"
  rm -rf "$WORK/rootfs"
  mmdebstrap --variant=minbase --quiet bookworm "$WORK/rootfs"
  (cd "$WORK/rootfs" && tar --numeric-owner -cf "$TAR.part" $(ls -A))
  mv "$TAR.part" "$TAR"
  rm -rf "$WORK/rootfs"
fi

# The image: the Debian rootfs + 9 one-file layers, built by buildah.
if ! buildah inspect --type image "$IMG" >/dev/null 2>&1; then
  c=$(buildah from scratch)
  buildah add "$c" "$TAR" / >/dev/null
  buildah commit -q --rm "$c" localhost/kiln-bench-1 >/dev/null
  for i in $(seq 2 10); do
    c=$(buildah from "localhost/kiln-bench-$((i - 1))")
    echo "$i" > "$WORK/f$i"
    buildah copy "$c" "$WORK/f$i" "/layer-$i" >/dev/null
    buildah commit -q --rm "$c" "localhost/kiln-bench-$i" >/dev/null
  done
fi
layers=$(buildah inspect --type image --format '{{len .OCIv1.RootFS.DiffIDs}}' "$IMG")
echo "image $IMG: $layers layers"

# The same image in kiln's local store.
if ! "$KILN" images 2>/dev/null | grep -q kiln-bench-10; then
  rm -f "$WORK/img.tar"
  buildah push -q "$IMG" "oci-archive:$WORK/img.tar:kiln-bench-10:latest" >/dev/null
  "$KILN" load "$WORK/img.tar"
fi

ctr=$(buildah from "$IMG")
trap 'buildah rm "$ctr" >/dev/null' EXIT

PODMAN="podman --cgroup-manager cgroupfs run --runtime runc --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 --network host --rm $IMG true"
hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$WORK/result.json" \
  -n kiln "$KILN --progress quiet run kiln-bench-10:latest true" \
  -n buildah "buildah run --isolation chroot $ctr true" \
  -n podman "$PODMAN" >/dev/null

python3 - "$WORK/result.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
med = {k: v["median"] * 1000 for k, v in r.items()}
print(f"{'tool':8} {'median ms':>10} {'kiln / tool':>12}")
for k in ("kiln", "buildah", "podman"):
    print(f"{k:8} {med[k]:10.1f} {med['kiln'] / med[k]:12.2f}")
print(f"goal: kiln <= 0.5x buildah -> {'met' if med['kiln'] <= 0.5 * med['buildah'] else 'NOT met'}")
PY
