#!/usr/bin/env bash
# Dockerfile builds: kiln vs `buildah bud --isolation chroot --layers` vs
# BuildKit (Debian's docker.io, a private dockerd), same run, same base image
# (nodejs + npm from trixie, composed by `kiln image packages`) served by a
# local registry. The app is a multi-stage Node build: npm ci (two small npm
# deps from the npm registry), a build step, a slim runtime stage.
#
#   bench/dockerfile.sh            (BENCH_DIR, default /var/tmp/kiln-bench-dockerfile)
#   BENCH_BUILDKIT=0 bench/dockerfile.sh   to skip BuildKit
#   BENCH_ONLY=buildkit bench/dockerfile.sh   one builder (kiln|buildah|buildkit)
#
# Cold: empty caches for every builder (fresh KILN_CACHE_DIR/KILN_DATA_DIR,
# fresh buildah --root/--runroot, fresh dockerd --data-root), base pulled from
# the local registry. Warm: the same caches after a one-line source change.
# Prints seconds, kiln/buildah ratios (goals: cold <= 0.8, warm <= 1.0) and
# kiln's peak memory.
#
# Peak memory is the VmHWM (peak resident set) of the kiln process itself,
# read from /proc while it runs: it excludes the steps' processes (npm, node,
# sh), which `/usr/bin/time -v` would fold in (its max RSS is the largest of
# the process and every child it waited for). The time -v figure is printed
# beside it for reference.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${BENCH_DIR:-/var/tmp/kiln-bench-dockerfile}"
cargo build --release -q
kiln="$PWD/target/release/kiln"
mkdir -p "$work"

need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
missing=()
need buildah || missing+=(buildah)
need docker-registry || missing+=(docker-registry)
if [ "${BENCH_BUILDKIT:-1}" = 1 ]; then need dockerd || missing+=(docker.io); fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# --- the local registry ----------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg="$work/registry"
rm -rf "$reg" && mkdir -p "$reg/storage"
cat >"$reg/config.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $reg/storage
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$reg/config.yml" >"$reg/log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
base="127.0.0.1:$port/node-base:1"

# --- the base: nodejs + npm from trixie, composed once ----------------------
basehome="$work/base-home"
export KILN_CACHE_DIR="$basehome/cache" KILN_DATA_DIR="$basehome/data"
"$kiln" --progress quiet image packages -t node-base --suite trixie nodejs npm
"$kiln" --progress quiet push node-base "$base"
unset KILN_CACHE_DIR KILN_DATA_DIR

# --- the app -----------------------------------------------------------------
app="$work/app"
rm -rf "$app" && mkdir -p "$app/src"
cat >"$app/package.json" <<'EOF'
{
  "name": "bench-app",
  "version": "1.0.0",
  "private": true,
  "scripts": { "build": "node build.js" },
  "dependencies": { "ms": "2.1.3", "left-pad": "1.3.0" }
}
EOF
cat >"$app/build.js" <<'EOF'
// The "build": bundle src/ into dist/ with a banner, as a bundler would.
const fs = require('fs');
fs.mkdirSync('dist', { recursive: true });
const src = fs.readdirSync('src').sort().map(f => fs.readFileSync('src/' + f, 'utf8')).join('\n');
fs.writeFileSync('dist/index.js', '// built ' + require('ms')(60000) + '\n' + src);
EOF
cat >"$app/src/index.js" <<'EOF'
const ms = require('ms');
const leftPad = require('left-pad');
console.log(leftPad(ms(1000 * 60 * 60), 10), 'version 1');
EOF
cat >"$app/Dockerfile" <<'EOF'
ARG BASE
FROM $BASE AS build
WORKDIR /app
# The host's CA bundle: npm must trust whatever proxy the host's TLS goes through.
COPY host-ca.crt /etc/ssl/host-ca.crt
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/host-ca.crt
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY build.js ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM $BASE
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
CMD ["node", "dist/index.js"]
EOF
cp "${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}" "$app/host-ca.crt"
(cd "$app" && npm install --package-lock-only --no-audit --no-fund -q >/dev/null)

# A variant whose RUN steps do almost nothing (no npm, no node), for kiln's
# own memory on the same base: pulling and unpacking its 16 layers, the
# COPY steps, the layer writes and the export are all kiln's.
memapp="$work/memapp"
rm -rf "$memapp" && cp -a "$app" "$memapp"
sed -i 's/^RUN npm ci.*/RUN mkdir -p node_modules\/ms \&\& cp package.json node_modules\/ms\//; s/^RUN npm run build.*/RUN mkdir dist \&\& cp src\/index.js dist\//' "$memapp/Dockerfile"

now() { date +%s.%N; }
# Runs "$@" in the background, polling kiln's VmHWM; prints seconds and peak kB.
timed_kiln() {
    local log="$1"; shift
    local s e hwm=0 p
    s=$(now)
    /usr/bin/time -v -o "$log.time" "$@" >"$log" 2>&1 &
    local tpid=$!
    while kill -0 "$tpid" 2>/dev/null; do
        p=$(pgrep -P "$tpid" -x kiln | head -1 || true)
        if [ -n "$p" ]; then
            local v
            v=$(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
            [ -n "$v" ] && [ "$v" -gt "$hwm" ] && hwm=$v
        fi
        sleep 0.05
    done
    wait "$tpid" || { echo "failed: $*" >&2; tail -40 "$log" >&2; exit 1; }
    e=$(now)
    local rss
    rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$log.time")
    echo "$(python3 -c "print($e - $s)") $hwm $rss"
}
timed() {
    local log="$1"; shift
    local s e
    s=$(now)
    "$@" >"$log" 2>&1 || { echo "failed: $*" >&2; tail -40 "$log" >&2; exit 1; }
    e=$(now)
    python3 -c "print($e - $s)"
}
bump() { sed -i "s/version [0-9]*/version $2/" "$1/src/index.js"; }

want() { [ -z "${BENCH_ONLY:-}" ] || [ "$BENCH_ONLY" = "$1" ]; }
k_cold=nan k_warm=nan b_cold=nan b_warm=nan
k_cold_hwm=0 k_warm_hwm=0 k_mem_hwm=0 k_cold_rss=0 k_warm_rss=0 k_mem_rss=0

# --- kiln ------------------------------------------------------------------
if want kiln; then
khome="$work/kiln-home"
rm -rf "$khome"
export KILN_CACHE_DIR="$khome/cache" KILN_DATA_DIR="$khome/data"
bump "$app" 1
read -r k_cold k_cold_hwm k_cold_rss < <(timed_kiln "$work/kiln-cold.log" "$kiln" --progress plain build "$app" --build-arg "BASE=$base" -t bench-app:1)
bump "$app" 2
read -r k_warm k_warm_hwm k_warm_rss < <(timed_kiln "$work/kiln-warm.log" "$kiln" --progress plain build "$app" --build-arg "BASE=$base" -t bench-app:2)
out=$("$kiln" run bench-app:2 2>&1 | tail -1)
case "$out" in *"version 2"*) ;; *) echo "kiln's image printed: $out" >&2; exit 1 ;; esac
rm -rf "$khome"
read -r _ k_mem_hwm k_mem_rss < <(timed_kiln "$work/kiln-mem.log" "$kiln" --progress plain build "$memapp" --build-arg "BASE=$base" -t bench-mem:1)
rm -rf "$khome"
unset KILN_CACHE_DIR KILN_DATA_DIR
fi

# --- buildah -----------------------------------------------------------------
broot="$work/buildah"
rm -rf "$broot" && mkdir -p "$broot"
bud() {
    buildah --root "$broot/root" --runroot "$broot/run" --storage-driver overlay \
        bud --isolation chroot --layers --tls-verify=false -q \
        --build-arg "BASE=$base" -t "$1" "$app"
}
if want buildah; then
bump "$app" 1
b_cold=$(timed "$work/buildah-cold.log" bud bench-app:1)
bump "$app" 2
b_warm=$(timed "$work/buildah-warm.log" bud bench-app:2)
buildah --root "$broot/root" --runroot "$broot/run" --storage-driver overlay rmi -a -f >/dev/null 2>&1 || true
rm -rf "$broot"
fi

# --- BuildKit (a private dockerd) -------------------------------------------
bk_cold=nan bk_warm=nan
if [ "${BENCH_BUILDKIT:-1}" = 1 ] && want buildkit; then
    d="$work/docker"
    rm -rf "$d" && mkdir -p "$d"
    dockerd --data-root "$d/root" --exec-root "$d/exec" -H "unix://$d/docker.sock" \
        --pidfile "$d/docker.pid" --bridge=none --iptables=false --ip6tables=false \
        --insecure-registry "127.0.0.1:$port" >"$d/log" 2>&1 &
    pids+=($!)
    # Debian's client: another `docker` may come first in PATH.
    docker=/usr/bin/docker
    for _ in $(seq 100); do [ -S "$d/docker.sock" ] && "$docker" -H "unix://$d/docker.sock" info >/dev/null 2>&1 && break; sleep 0.2; done
    dk() { DOCKER_BUILDKIT=1 "$docker" -H "unix://$d/docker.sock" build --network host -q --build-arg "BASE=$base" -t "$1" "$app"; }
    bump "$app" 1
    if bk_cold=$(timed "$work/buildkit-cold.log" dk bench-app:1); then
        bump "$app" 2
        bk_warm=$(timed "$work/buildkit-warm.log" dk bench-app:2)
    else
        echo "BuildKit failed (see $work/buildkit-cold.log); its figures are left out" >&2
        bk_cold=nan
    fi
fi

python3 - "$k_cold" "$k_warm" "$b_cold" "$b_warm" "$bk_cold" "$bk_warm" \
    "$k_cold_hwm" "$k_warm_hwm" "$k_mem_hwm" "$k_cold_rss" "$k_warm_rss" "$k_mem_rss" <<'PY'
import math, os, sys
kc, kw, bc, bw, xc, xw = map(float, sys.argv[1:7])
ch, wh, mh, cr, wr, mr = (int(x) / 1024 for x in sys.argv[7:13])
print(f"multi-stage Node build, {os.cpu_count()} cores, base from a local registry")
print(f"{'':22}{'cold s':>10}{'warm s':>10}")
for name, c, w in [("kiln", kc, kw), ("buildah --layers", bc, bw), ("BuildKit (docker.io)", xc, xw)]:
    if not math.isnan(c):
        print(f"{name:22}{c:10.2f}{w:10.2f}")
if not (math.isnan(kc) or math.isnan(bc)):
    print(f"ratio kiln/buildah  cold = {kc / bc:.2f} (goal <= 0.8)   warm = {kw / bw:.2f} (goal <= 1.0)")
if not (math.isnan(kc) or math.isnan(xc)):
    print(f"ratio kiln/BuildKit cold = {kc / xc:.2f}   warm = {kw / xw:.2f}")
if not math.isnan(kc):
  print(f"kiln peak RSS (VmHWM of kiln itself): cold {ch:.0f} MB, warm {wh:.0f} MB, "
      f"no-op steps {mh:.0f} MB (goal < 150 MB)")
  print(f"  /usr/bin/time -v max RSS (kiln or its largest child): cold {cr:.0f} MB, warm {wr:.0f} MB, no-op steps {mr:.0f} MB")
PY
