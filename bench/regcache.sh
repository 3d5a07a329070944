#!/usr/bin/env bash
# The registry as the shared step cache (issue 18), same run, same local
# registry: for the node-npm, python-flask and go-mod examples, a fresh
# builder's rebuild of an unchanged app from a registry cache that another
# builder wrote, kiln vs BuildKit (dockerd 20.10, DOCKER_BUILDKIT=1) on the
# Dockerfile `kiln dockerfile` generates, FROM a trixie minbase image served
# by the same registry.
#   kiln:     builder A (its own empty KILN_CACHE_DIR/KILN_DATA_DIR) builds
#             cold with `--cache-to type=registry,ref=REG/cache/APP:c,mode=max`
#             and `-t REG/img/APP:1 --push` (the image goes to the registry
#             too, as on a fleet), then once more, all cached, exporting
#             `REG/cache/APP:min,mode=min`, then once more pushing
#             `REG/img/APP:inline` with `--cache-to type=inline`. Builder B
#             (another empty home) builds the same source with
#             `--cache-from …:c` (timed, peak RSS); builder C (empty) with
#             `--cache-from …:min`, builder D (empty) with `--cache-from`
#             the inline image (timed).
#   BuildKit: dockerd 20.10's `docker build` has no `--cache-to
#             type=registry` (that needs buildx, not installed here), so its
#             side is BuildKit's INLINE cache, the mode=min equivalent: a
#             dockerd with an empty data root builds with
#             `--build-arg BUILDKIT_INLINE_CACHE=1 -t REG/bk/APP:1` and
#             `docker push`es it; a second dockerd with another empty data
#             root builds with `--cache-from REG/bk/APP:1` (timed).
# Times are wall times of the fresh builder's build command only: kiln's
# process from start to exit; `docker build` against a dockerd already
# started (its start-up is not counted). kiln's B row (mode=max) is the
# issue's goal; its C (mode=min) and D (inline) rows are the
# like-for-like ones against BuildKit's inline cache.
# Prints wall times, ratios (kiln / BuildKit), the steps each fresh builder
# ran (kiln: `finish` events of steps not `cached` in its JSON progress;
# BuildKit: `[stage k/n]` steps of its plain progress without a CACHED
# line), the blob bytes the registry sent to each fresh builder (its access
# log), kiln B's peak RSS (VmHWM sampled every 20 ms), and last the goals of
# issue 18: the fresh-builder rebuild ≤ 0.5× BuildKit's and ≤ 3 s.
#   bench/regcache.sh [APP…]      default: node-npm python-flask go-mod
#   BENCH_LOGS=DIR bench/regcache.sh   also keep the builders' logs
#   BENCH_TMP=DIR             where the run's filesystem image goes (default /var/tmp)
# Run it under `flock /work/tmp/bench.lock` (see bench/auto.md).
# Needs root (dockerd, a loop mount), podman, buildah, mmdebstrap,
# docker-registry, Debian's docker.io. The setup (loop ext4, registry, base
# image, CA handling, dockerd) is bench/lib.sh's.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
command -v dockerd >/dev/null && [ -x /usr/bin/docker ] \
  || { echo "BuildKit is needed: apt-get install docker.io"; exit 1; }
bench_init regcache
APPS=("${@:-node-npm}")
[ $# -eq 0 ] && APPS=(node-npm python-flask go-mod)
# The access log counts the bytes each builder fetched.
start_registry log
trixie_base

# kiln build in home HOME, JSON progress to HOME/RUN.json, peak RSS (the
# kiln process's VmHWM) to HOME/RUN.peak (as bench/auto.sh).
kiln_build() { # home dir run kiln-args…
  local home=$1 dir=$2 run=$3 peak=0 hwm
  shift 3
  mkdir -p "$home/tmp"
  TMPDIR=$home/tmp KILN_CACHE_DIR=$home/cache KILN_DATA_DIR=$home/data \
    "$KILN" --progress json build "$dir" "${ca_args[@]}" "$@" >/dev/null 2>"$home/$run.json" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$hwm" ] && [ "$hwm" -gt "$peak" ] && peak=$hwm
    sleep 0.02
  done
  wait "$pid" || { echo "kiln build $dir ($run) failed:"; tail -5 "$home/$run.json"; exit 1; }
  echo "$peak" > "$home/$run.peak"
}

# "RAN/TOTAL" steps of a kiln build: the step tasks (package sets and
# Dockerfile steps) whose finish status is not `cached`.
kiln_steps() { # json-log
  python3 - "$1" <<'PY'
import json, sys
names, status = {}, {}
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("event") == "start" and e.get("step") is True:
        names[e["id"]] = e["name"]
    elif e.get("event") == "finish" and e.get("id") in names:
        status[e["id"]] = e["status"]
ran = [names[i] for i, s in status.items() if s != "cached"]
print(f"{len(ran)}/{len(status)}")
for n in ran:
    print(f"  ran: {n}", file=sys.stderr)
PY
}

# "RAN/TOTAL" steps of a BuildKit build from its plain progress: the
# `#N [stage k/n] …` vertices without a `#N CACHED` line. A stage's
# `FROM` vertex is left out: it resolves (and pulls) the base, it never
# shows CACHED; kiln's count has its package bases instead.
bk_steps() { # plain-log
  python3 - "$1" <<'PY'
import re, sys
steps, cached = {}, set()
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"#(\d+) \[([^\]]*\b\d+/\d+)\] (.*)", line)
    if m and not m.group(3).startswith("FROM "):
        steps.setdefault(m.group(1), f"[{m.group(2)}] {m.group(3)}")
    m = re.match(r"#(\d+) CACHED", line)
    if m:
        cached.add(m.group(1))
ran = [n for i, n in steps.items() if i not in cached]
print(f"{len(ran)}/{len(steps)}")
for n in ran:
    print(f"  ran: {n[:90]}", file=sys.stderr)
PY
}

# Blob bytes the registry sent (200 answers to blob GETs) from log line N on.
blob_bytes() { # from-line
  tail -n +"$(( $1 + 1 ))" "$work/registry.log" \
    | grep '"GET /v2/[^ ]*/blobs/sha256:' \
    | sed -nE 's/.*HTTP\/1\.1" 200 ([0-9]+).*/\1/p' \
    | awk '{s += $1} END {print s + 0}'
}
loglines() { wc -l < "$work/registry.log"; }
mb() { echo "scale=1; $1 / 1000000" | bc; }

echo "kiln: fresh builder B reads a mode=max cache, C a mode=min one, D the inline cache of"
echo "the image (all written by builder A)."
echo "BuildKit: dockerd 20.10 without buildx cannot export a registry cache: its fresh"
echo "builder reads the INLINE cache of the image builder A pushed (mode=min equivalent)."
echo
rows=()
goals=()
goal() { # label value op limit unit
  local ok=MISS
  [ "$(echo "$2 $3 $4" | bc)" = 1 ] && ok=ok
  goals+=("$(printf '%-13s %-26s %8s %s %s %s  %s' "$app" "$1" "$2" "$3" "$4" "$5" "$ok")")
}
for app in "${APPS[@]}"; do
  src=examples/$app
  kdir=$work/$app/kiln/$app; ddir=$work/$app/buildkit/$app
  mkdir -p "$(dirname "$kdir")" "$(dirname "$ddir")"
  cp -r "$src" "$kdir"; cp -r "$src" "$ddir"
  "$KILN" --progress quiet dockerfile "$ddir" -o "$work/$app/Dockerfile" --base-image "$base" >/dev/null
  # BuildKit's context as bench/auto.sh makes it: the bind-mounted
  # .kiln/scripts/, no `# syntax=` line, apt caches locked.
  grep -v '^# syntax=' "$work/$app/Dockerfile" \
    | sed -E 's#--mount=type=cache,target=/var/(cache/apt|lib/apt/lists)#&,sharing=locked#' \
    > "$work/$app/Dockerfile.buildkit"
  echo "== $app ($(uptime | sed 's/.*load/load/'))"

  # kiln, builder A: cold, exports both caches.
  ca=$work/$app/kiln-a
  t=$(now)
  kiln_build "$ca" "$kdir" cold -t "$reg/img/$app:1" --push \
    --cache-to "type=registry,ref=$reg/cache/$app:c,mode=max"
  ta=$(since "$t")
  kiln_build "$ca" "$kdir" min -t "$reg/img/$app:1" \
    --cache-to "type=registry,ref=$reg/cache/$app:min,mode=min"
  kiln_build "$ca" "$kdir" inline -t "$reg/img/$app:inline" --push --cache-to type=inline
  printf '  kiln A      cold build + push + mode=max export  %6.1fs\n' "$ta"

  # kiln, builder B (mode=max cache) and C (mode=min cache): empty homes.
  sync
  at=$(loglines); t=$(now)
  kiln_build "$work/$app/kiln-b" "$kdir" fresh -t "app:1" \
    --cache-from "type=registry,ref=$reg/cache/$app:c"
  tb=$(since "$t"); bb=$(blob_bytes "$at")
  sb=$(kiln_steps "$work/$app/kiln-b/fresh.json" 2>"$work/$app/kiln-b.ran")
  rss=$(( $(cat "$work/$app/kiln-b/fresh.peak") / 1024 ))
  printf '  kiln B      fresh, --cache-from mode=max         %6.2fs  steps run %s  %s MB fetched  peak RSS %d MB\n' \
    "$tb" "$sb" "$(mb "$bb")" "$rss"
  sed 's/^/    /' "$work/$app/kiln-b.ran"
  sync
  at=$(loglines); t=$(now)
  kiln_build "$work/$app/kiln-c" "$kdir" fresh -t "app:1" \
    --cache-from "type=registry,ref=$reg/cache/$app:min"
  tc=$(since "$t"); bc_=$(blob_bytes "$at")
  sc=$(kiln_steps "$work/$app/kiln-c/fresh.json" 2>"$work/$app/kiln-c.ran")
  printf '  kiln C      fresh, --cache-from mode=min         %6.2fs  steps run %s  %s MB fetched\n' \
    "$tc" "$sc" "$(mb "$bc_")"
  sed 's/^/    /' "$work/$app/kiln-c.ran"
  sync
  at=$(loglines); t=$(now)
  kiln_build "$work/$app/kiln-d" "$kdir" fresh -t "app:1" \
    --cache-from "type=registry,ref=$reg/img/$app:inline"
  td=$(since "$t"); bd=$(blob_bytes "$at")
  sd=$(kiln_steps "$work/$app/kiln-d/fresh.json" 2>"$work/$app/kiln-d.ran")
  printf '  kiln D      fresh, --cache-from the image (inline) %6.2fs  steps run %s  %s MB fetched\n' \
    "$td" "$sd" "$(mb "$bd")"
  sed 's/^/    /' "$work/$app/kiln-d.ran"

  # BuildKit, builder A: cold, inline cache, push.
  start_dockerd a
  t=$(now)
  DOCKER_BUILDKIT=1 $DOCKER build --progress plain --network host --build-arg BUILDKIT_INLINE_CACHE=1 \
    -f "$work/$app/Dockerfile.buildkit" -t "$reg/bk/$app:1" "$ddir" >"$work/$app/bk-a.log" 2>&1 \
    || { tail -30 "$work/$app/bk-a.log"; exit 1; }
  $DOCKER push -q "$reg/bk/$app:1" >"$work/$app/bk-push.log" 2>&1 \
    || { cat "$work/$app/bk-push.log"; exit 1; }
  tba=$(since "$t")
  stop_dockerd a
  printf '  BuildKit A  cold build (inline cache) + push      %6.1fs\n' "$tba"

  # BuildKit, builder B: a fresh dockerd, --cache-from the pushed image.
  start_dockerd b
  sync
  at=$(loglines); t=$(now)
  DOCKER_BUILDKIT=1 $DOCKER build --progress plain --network host --cache-from "$reg/bk/$app:1" \
    -f "$work/$app/Dockerfile.buildkit" -t app:1 "$ddir" >"$work/$app/bk-b.log" 2>&1 \
    || { tail -30 "$work/$app/bk-b.log"; exit 1; }
  tk=$(since "$t"); kb=$(blob_bytes "$at")
  stop_dockerd b
  sk=$(bk_steps "$work/$app/bk-b.log" 2>"$work/$app/bk-b.ran")
  grep -m1 -E 'importing cache manifest|cache manifest' "$work/$app/bk-b.log" | sed 's/^/    BuildKit: /' || true
  printf '  BuildKit B  fresh, --cache-from (inline)          %6.2fs  steps run %s  %s MB fetched\n' \
    "$tk" "$sk" "$(mb "$kb")"
  sed 's/^/    /' "$work/$app/bk-b.ran"

  rb=$(echo "scale=2; $tb / $tk" | bc); rc=$(echo "scale=2; $tc / $tk" | bc)
  rows+=("$(printf '%-13s %-9s %8.2fs %9.2fs %6s %9s %9s %9s %9s' "$app" max "$tb" "$tk" "$rb" "$sb" "$sk" "$(mb "$bb")" "$(mb "$kb")")")
  rows+=("$(printf '%-13s %-9s %8.2fs %9.2fs %6s %9s %9s %9s %9s' "$app" min "$tc" "$tk" "$rc" "$sc" "$sk" "$(mb "$bc_")" "$(mb "$kb")")")
  goal "fresh (max) / BuildKit" "$rb" "<=" 0.5 x
  goal "fresh (max) seconds" "$(printf '%.2f' "$tb")" "<=" 3 s
  goal "fresh (min) / BuildKit" "$rc" "<=" 0.5 x
  goal "fresh (min) seconds" "$(printf '%.2f' "$tc")" "<=" 3 s
  rd=$(echo "scale=2; $td / $tk" | bc)
  rows+=("$(printf '%-13s %-9s %8.2fs %9.2fs %6s %9s %9s %9s %9s' "$app" inline "$td" "$tk" "$rd" "$sd" "$sk" "$(mb "$bd")" "$(mb "$kb")")")
  goal "fresh (inline) / BuildKit" "$rd" "<=" 0.5 x
  goal "fresh (inline) seconds" "$(printf '%.2f' "$td")" "<=" 3 s

  if [ -n "${BENCH_LOGS:-}" ]; then
    mkdir -p "$BENCH_LOGS"
    cp "$work/$app"/kiln-b/fresh.json "$BENCH_LOGS/$app.kiln-b.json"
    cp "$work/$app"/kiln-c/fresh.json "$BENCH_LOGS/$app.kiln-c.json"
    cp "$work/$app"/kiln-d/fresh.json "$BENCH_LOGS/$app.kiln-d.json"
    for l in bk-a bk-b; do cp "$work/$app/$l.log" "$BENCH_LOGS/$app.$l.log"; done
  fi
  # The next app starts from empty homes (and the run needs the space of
  # one app at a time); the registry keeps its blobs.
  rm -rf "$work/$app"
done
echo
echo "kiln's cache mode vs BuildKit's inline cache; times are the fresh builder's wall time"
printf '%-13s %-9s %9s %10s %6s %9s %9s %9s %9s\n' app kiln-mode kiln buildkit ratio kiln-ran bk-ran kiln-MB bk-MB
printf '%s\n' "${rows[@]}"
echo
echo "goals (issue 18): the fresh-builder rebuild <= 0.5x BuildKit's and <= 3 s"
printf '%s\n' "${goals[@]}"
