#!/usr/bin/env bash
# arm64 builds on this (amd64) machine, same run, cold caches on both sides:
# `kiln build DIR --platform linux/arm64` (package bases composed natively,
# Go cross-compiled, other providers' RUN steps under qemu-user) vs BuildKit
# (dockerd, DOCKER_BUILDKIT=1) `docker build --platform linux/arm64` on the
# Dockerfile `kiln dockerfile` generates (every RUN under qemu-user), FROM
# an arm64 trixie minbase image served by a local registry.
# Prints wall times, the ratio kiln / BuildKit, and the goals of issue 19:
# go-mod ≤ 0.3×, python-flask ≤ 0.6×.
#   bench/multiarch.sh [APP…]      default: go-mod python-flask
#   BENCH_TMP=DIR                  where the run's files go (default /var/tmp)
# Needs root, dockerd (Debian's docker.io), mmdebstrap, docker-registry, and
# qemu-user-static registered in binfmt_misc (scripts/install-test-deps).
# Takes /work/tmp/bench.lock (when /work/tmp exists) so that no other bench
# runs at the same time on this shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d /work/tmp ] && [ -z "${BENCH_LOCKED:-}" ]; then
  exec env BENCH_LOCKED=1 flock /work/tmp/bench.lock "$0" "$@"
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || {
  echo "no binfmt_misc handler for arm64: run scripts/install-test-deps"; exit 1; }
command -v dockerd >/dev/null || { echo "BuildKit needs dockerd: apt-get install docker.io"; exit 1; }
. bench/lib.sh
BENCH_FS=${BENCH_FS:-none} bench_init multiarch
APPS=("$@")
[ $# -eq 0 ] && APPS=(go-mod python-flask)

# A local registry with an arm64 minbase (mmdebstrap through qemu-user,
# made once), made an image by kiln itself (`image from-dir --platform`).
start_registry
cache=${KILN_TEST_CACHE:-$HOME/.cache/kiln-tests}
mkdir -p "$cache"
if [ ! -f "$cache/debian-trixie-arm64.tar" ]; then
  mmdebstrap --architectures=arm64 --variant=minbase --format=tar trixie \
    "$cache/debian-trixie-arm64.tar.tmp" http://deb.debian.org/debian
  mv "$cache/debian-trixie-arm64.tar.tmp" "$cache/debian-trixie-arm64.tar"
fi
mkdir -p "$work/base"
tar -xpf "$cache/debian-trixie-arm64.tar" -C "$work/base"
# The host's extra CAs go into the peer's base too (bench/lib.sh).
host_ca_args
if [ ${#ca_args[@]} -gt 0 ]; then
  mkdir -p "$work/base/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$work/base/usr/local/share/ca-certificates/"
fi
bhome=$work/basehome
KILN_CACHE_DIR=$bhome/cache KILN_DATA_DIR=$bhome/data "$KILN" --progress quiet image from-dir \
  "$work/base" -t debian:trixie-slim --platform linux/arm64 --cmd '["bash"]' >/dev/null
KILN_CACHE_DIR=$bhome/cache KILN_DATA_DIR=$bhome/data "$KILN" --progress quiet push \
  --insecure-registry "$reg" debian:trixie-slim "$reg/debian:trixie-slim" >/dev/null
rm -rf "$work/base" "$bhome"
base=$reg/debian:trixie-slim

start_dockerd buildkit

printf '%-13s %10s %10s %7s %6s\n' app kiln buildkit ratio goal
goals=()
for app in "${APPS[@]}"; do
  kdir=$work/$app/kiln/$app; ddir=$work/$app/buildkit/$app
  mkdir -p "$(dirname "$kdir")" "$(dirname "$ddir")"
  cp -r "examples/$app" "$kdir"; cp -r "examples/$app" "$ddir"
  "$KILN" --progress quiet dockerfile "$ddir" -o "$work/$app/Dockerfile" --base-image "$base" >/dev/null
  # dockerd's built-in frontend (a `# syntax=` line would fetch one); both
  # stages' apt caches locked, as bench/auto.sh does.
  grep -v '^# syntax=' "$work/$app/Dockerfile" \
    | sed -E 's#--mount=type=cache,target=/var/(cache/apt|lib/apt/lists)#&,sharing=locked#' \
    > "$work/$app/Dockerfile.buildkit"
  khome=$work/$app/khome
  mkdir -p "$khome/tmp"
  sync; t=$(now)
  TMPDIR=$khome/tmp KILN_CACHE_DIR=$khome/cache KILN_DATA_DIR=$khome/data "$KILN" --progress plain \
    build "$kdir" --platform linux/arm64 -t app:1 "${ca_args[@]}" >/dev/null 2>"$work/$app/kiln.log" \
    || { tail -30 "$work/$app/kiln.log"; exit 1; }
  tk=$(since "$t")
  sync; t=$(now)
  DOCKER_BUILDKIT=1 $DOCKER build -q --platform linux/arm64 --network host \
    -f "$work/$app/Dockerfile.buildkit" -t app "$ddir" >/dev/null 2>"$work/$app/buildkit.log" \
    || { tail -30 "$work/$app/buildkit.log"; exit 1; }
  td=$(since "$t")
  ratio=$(echo "scale=2; $tk / $td" | bc)
  case $app in go-mod) limit=0.3 ;; python-flask) limit=0.6 ;; *) limit=- ;; esac
  printf '%-13s %9.1fs %9.1fs %7.2f %6s\n' "$app" "$tk" "$td" "$ratio" "$limit"
  if [ "$limit" != - ]; then
    ok=MISS; [ "$(echo "$ratio <= $limit" | bc)" = 1 ] && ok=ok
    goals+=("$(printf '%-13s arm64 cold / BuildKit %6s <= %s  %s' "$app" "$ratio" "$limit" "$ok")")
  fi
  rm -rf "$work/$app"
  $DOCKER rmi -f app >/dev/null 2>&1 || true
  $DOCKER builder prune -af >/dev/null 2>&1 || true
done
echo
echo "goals (issue 19)"
printf '%s\n' "${goals[@]}"
