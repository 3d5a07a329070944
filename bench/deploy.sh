#!/usr/bin/env bash
# `kiln deploy` cold vs warm: a deploy file with three resources is built and
# pushed to an empty local registry (Debian's docker-registry on 127.0.0.1)
# from an empty build cache, then deployed again with nothing changed. The
# second run must push zero blobs; the goal is warm < 10% of cold.
#
#   bench/deploy.sh                 three Dockerfile resources (perl HTTP app)
#   BENCH_AUTO=1 bench/deploy.sh    + an auto Node app and an options.dir
#                                   Python app (needs the auto builder)
#   KILN=target/debug/kiln bench/deploy.sh   use an existing binary
#
# The base image (Debian's perl-base closure, built by kiln from packages)
# is made before the timed runs and is not part of either.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${KILN:-}" ]; then
  cargo build --release --quiet
  KILN=$PWD/target/release/kiln
fi
KILN=$(realpath "$KILN")
for t in docker-registry curl python3; do
  command -v "$t" >/dev/null || { echo "missing tool: $t (scripts/install-test-deps)" >&2; exit 1; }
done

WORK=$(mktemp -d /var/tmp/kiln-bench-deploy.XXXXXX)
REG_PID=""
cleanup() {
  if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
export KILN_CACHE_DIR=$WORK/cache KILN_DATA_DIR=$WORK/data NO_COLOR=1

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/reg/storage"
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
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break; sleep 0.05; done

echo "base image: Debian perl-base (not timed)"
"$KILN" --progress quiet image packages -t deploy-bench-base:1 --suite bookworm perl-base >/dev/null

P=$WORK/project
for app in a b c; do
  mkdir -p "$P/$app"
  cp tests/deploy/perl-http/server.pl "$P/$app/"
  sed 's/^ARG BASE=.*/ARG BASE=deploy-bench-base:1/' tests/deploy/perl-http/Dockerfile >"$P/$app/Dockerfile"
  # Some weight per app, so the push is more than a few bytes.
  head -c $((8 * 1024 * 1024)) /dev/urandom >"$P/$app/data.bin"
  echo "COPY data.bin /srv/data.bin" >>"$P/$app/Dockerfile"
done
{
  for app in a b c; do
    printf 'machine:\n  name: %s\n  build:\n    docker:\n      context: ./%s\n      args:\n        GREETING: hi\n        MESSAGE: %s\n---\n' "$app" "$app" "$app"
  done
  if [ -n "${BENCH_AUTO:-}" ]; then
    cp -r examples/node-npm "$P/node"
    mkdir -p "$P/apps" && cp -r examples/python-flask "$P/apps/api"
    printf 'app:\n  name: node\n  build:\n    options:\n      dir: ./node\n---\nmachine:\n  name: api\n  build:\n    options:\n      dir: ./apps/api\n---\n'
  fi
  printf 'volume:\n  name: data\n'
} >"$P/lttle.yaml"

run() { # run N → seconds on stdout, log in $WORK/run-N.log
  local s e
  s=$(date +%s.%N)
  "$KILN" --progress plain deploy "$P/lttle.yaml" --registry "127.0.0.1:$PORT/bench" -o "$WORK/out-$1.yaml" 2>"$WORK/run-$1.log" \
    || { cat "$WORK/run-$1.log" >&2; exit 1; }
  e=$(date +%s.%N)
  python3 -c "print(f'{$e - $s:.2f}')"
}
t1=$(run 1)
t2=$(run 2)
sent1=$(grep -oE '[0-9]+ blobs sent$' "$WORK/run-1.log" | cut -d' ' -f1)
sent2=$(grep -oE '[0-9]+ blobs sent$' "$WORK/run-2.log" | cut -d' ' -f1)
cmp -s "$WORK/out-1.yaml" "$WORK/out-2.yaml" || { echo "the documents differ between runs" >&2; exit 1; }
echo "first run (cold cache, empty registry): ${t1} s, ${sent1} blobs sent"
echo "second run (nothing changed):           ${t2} s, ${sent2} blobs sent"
python3 -c "r=$t2/$t1; print(f'ratio second/first: {r:.1%} (goal < 10%)')"
[ "$sent2" = 0 ] || { echo "the second run pushed $sent2 blobs" >&2; exit 1; }
