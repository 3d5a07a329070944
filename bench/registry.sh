#!/usr/bin/env bash
# Push and pull of a 500 MB, 5-layer image to a local registry (Debian's
# docker-registry on 127.0.0.1): kiln vs `skopeo copy`, in the same run.
#
#   push: kiln push (from kiln's local store)  vs  skopeo copy oci:LAYOUT docker://…
#   pull: kiln pull (into a fresh local store) vs  skopeo copy docker://… oci:DIR
#
# Each measurement starts from an empty registry / empty destination and is
# repeated RUNS times (default 3); the median is reported with the ratio
# kiln/skopeo (goal: ≤ 1.0). Layers are gzip of random data (incompressible,
# like real compressed layers), 100 MB each.
set -euo pipefail

RUNS=${RUNS:-3}
LAYER_MB=${LAYER_MB:-100}
cd "$(dirname "$0")/.."
cargo build --release --quiet
KILN=$PWD/target/release/kiln
for t in skopeo docker-registry sha256sum gzip tar; do
  command -v "$t" >/dev/null || { echo "missing tool: $t (apt-get install skopeo docker-registry)" >&2; exit 1; }
done

WORK=$(mktemp -d /var/tmp/kiln-bench-registry.XXXXXX)
REG_PID=""
stop_registry() {
  if [ -n "$REG_PID" ]; then
    kill "$REG_PID" 2>/dev/null || true
    wait "$REG_PID" 2>/dev/null || true
    REG_PID=""
  fi
}
cleanup() {
  stop_registry
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---- the image, as an OCI layout ----
LAYOUT=$WORK/layout
mkdir -p "$LAYOUT/blobs/sha256"
diff_ids=()
layers=()
for i in 1 2 3 4 5; do
  mkdir -p "$WORK/src$i"
  head -c "$((LAYER_MB * 1024 * 1024))" /dev/urandom >"$WORK/src$i/layer$i.bin"
  tar -C "$WORK/src$i" --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$WORK/l$i.tar" .
  diff_ids+=("\"sha256:$(sha256sum "$WORK/l$i.tar" | cut -d' ' -f1)\"")
  gzip -1 -n -c "$WORK/l$i.tar" >"$WORK/l$i.tgz"
  d=$(sha256sum "$WORK/l$i.tgz" | cut -d' ' -f1)
  mv "$WORK/l$i.tgz" "$LAYOUT/blobs/sha256/$d"
  layers+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$d\",\"size\":$(stat -c %s "$LAYOUT/blobs/sha256/$d")}")
  rm -rf "$WORK/src$i" "$WORK/l$i.tar"
done
join() { local IFS=,; echo "$*"; }
put() { # put FILE -> prints "sha256:HEX SIZE" and stores it
  local d; d=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$LAYOUT/blobs/sha256/$d"
  echo "sha256:$d $(stat -c %s "$LAYOUT/blobs/sha256/$d")"
}
printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$(join "${diff_ids[@]}")" >"$WORK/config.json"
read -r cdig csize < <(put "$WORK/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[%s]}' \
  "$cdig" "$csize" "$(join "${layers[@]}")" >"$WORK/manifest.json"
read -r mdig msize < <(put "$WORK/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"bench:1"}}]}' \
  "$mdig" "$msize" >"$LAYOUT/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$LAYOUT/oci-layout"
total=$(du -sm "$LAYOUT/blobs" | cut -f1)
echo "image: 5 layers, ${total} MB, manifest $mdig"

# kiln's local store holds the image (what a build would leave there).
export KILN_DATA_DIR=$WORK/kiln-data KILN_CACHE_DIR=$WORK/kiln-cache
"$KILN" load "$LAYOUT" >/dev/null

# ---- a fresh registry per measurement ----
start_registry() {
  stop_registry
  rm -rf "$WORK/reg"
  mkdir -p "$WORK/reg/storage"
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$WORK/reg/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/reg/storage
http:
  addr: 127.0.0.1:$PORT
EOF
  docker-registry serve "$WORK/reg/config.yml" >"$WORK/reg/log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "registry did not start" >&2; cat "$WORK/reg/log" >&2; exit 1
}

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
sync_drop() { sync; }

kp=(); sp=(); kl=(); sl=()
for run in $(seq "$RUNS"); do
  # push: kiln
  start_registry; sync_drop
  t=$(now); "$KILN" push --progress=quiet bench:1 "127.0.0.1:$PORT/bench/img:1" >/dev/null; kp+=("$(elapsed "$t")")
  # pull: kiln (fresh local store), from what kiln pushed
  rm -rf "$WORK/kiln-pull"; sync_drop
  t=$(now); KILN_DATA_DIR=$WORK/kiln-pull "$KILN" pull --progress=quiet "127.0.0.1:$PORT/bench/img:1" >/dev/null; kl+=("$(elapsed "$t")")
  # push: skopeo
  start_registry; sync_drop
  t=$(now); skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT:bench:1" "docker://127.0.0.1:$PORT/bench/img:1" >/dev/null; sp+=("$(elapsed "$t")")
  # pull: skopeo (fresh OCI layout)
  rm -rf "$WORK/skopeo-pull"; sync_drop
  t=$(now); skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$PORT/bench/img:1" "oci:$WORK/skopeo-pull:img" >/dev/null; sl+=("$(elapsed "$t")")
  echo "run $run: push kiln ${kp[-1]}s skopeo ${sp[-1]}s | pull kiln ${kl[-1]}s skopeo ${sl[-1]}s"
done

KP=$(median "${kp[@]}"); SP=$(median "${sp[@]}"); KL=$(median "${kl[@]}"); SL=$(median "${sl[@]}")
printf '\n%-6s %10s %10s %8s\n' "" "kiln" "skopeo" "ratio"
printf '%-6s %9.2fs %9.2fs %7.2fx\n' push "$KP" "$SP" "$(echo "$KP / $SP" | bc -l)"
printf '%-6s %9.2fs %9.2fs %7.2fx\n' pull "$KL" "$SL" "$(echo "$KL / $SL" | bc -l)"
echo "(median of $RUNS runs, ${total} MB image, ratio = kiln / skopeo; goal <= 1.0)"
