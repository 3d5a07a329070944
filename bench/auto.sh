#!/usr/bin/env bash
# Auto builds, same run, same local base: for the node-npm, python-flask and
# go-mod examples, `kiln build DIR` (the auto plan, Debian packages composed
# by kiln) vs `buildah bud --isolation chroot --layers` and BuildKit
# (dockerd 20.10, DOCKER_BUILDKIT=1) on the Dockerfile `kiln dockerfile`
# generates, FROM a trixie minbase image served by a local registry.
#   cold:     empty caches / storage on every side (buildah's cache mounts
#             live in $TMPDIR, so it gets a fresh one per app)
#   warm:     rebuild after a one-line source change
#   nochange: kiln only, rebuild with nothing changed
# Prints wall times, ratios (kiln / peer), kiln's peak RSS (the kiln
# process only: its VmHWM, sampled every 20 ms; the steps' own processes
# excluded; for the no-change rebuild, wait4's maximum), a per-phase
# breakdown of kiln's warm rebuild (from its JSON
# progress), image sizes (uncompressed, as podman counts them) and, last,
# the goals of issue 17 met or missed: warm and cold ≤ 0.5× BuildKit,
# peak RSS cold ≤ 250 MB and warm ≤ 60 MB, no-change rebuild < 150 ms.
#   bench/auto.sh [APP…]      default: node-npm python-flask go-mod
#   BENCH_LOGS=DIR bench/auto.sh   also keep kiln's JSON progress logs
#   BENCH_TMP=DIR             where the run's filesystem image goes (default /var/tmp)
# Needs root (buildah, podman, dockerd, a loop mount), mmdebstrap, docker-registry.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_init auto
APPS=("${@:-node-npm}")
[ $# -eq 0 ] && APPS=(node-npm python-flask go-mod)
start_registry
trixie_base

# BuildKit, when Debian's docker.io is installed (apt-get install docker.io).
buildkit=0
if command -v dockerd >/dev/null && [ -x /usr/bin/docker ]; then
  start_dockerd buildkit
  buildkit=1
fi
[ $buildkit = 1 ] || echo "(BuildKit not measured: install docker.io for dockerd)"

# kiln build with its peak RSS: the kiln process's VmHWM (the kernel's
# high-water mark, so a spike between two samples is not missed; the last
# sample before exit holds the peak). JSON progress goes to HOME/RUN.json,
# the start time to HOME/RUN.t0 (the breakdown measures from it).
# A no-change rebuild ends before the first samples: its figure is the
# process's own maximum as wait4 reports it (GNU time's %M), which would
# include a step's process, but such a build runs none.
# kiln's temp files go to the run's filesystem too (TMPDIR).
kiln_build() { # home dir run
  local home=$1 dir=$2 run=$3 peak=0 hwm
  mkdir -p "$home/tmp"
  now > "$home/$run.t0"
  if [ "$run" = nochange ]; then
    TMPDIR=$home/tmp KILN_CACHE_DIR=$home/cache KILN_DATA_DIR=$home/data /usr/bin/time -f %M -o "$home/$run.peak" \
      "$KILN" --progress json build "$dir" -t app:1 "${ca_args[@]}" >/dev/null 2>"$home/$run.json" \
      || { echo "kiln build $dir failed:"; tail -5 "$home/$run.json"; exit 1; }
    now > "$home/$run.t1"
    return
  fi
  TMPDIR=$home/tmp KILN_CACHE_DIR=$home/cache KILN_DATA_DIR=$home/data "$KILN" --progress json build "$dir" -t app:1 "${ca_args[@]}" \
    >/dev/null 2>"$home/$run.json" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$hwm" ] && [ "$hwm" -gt "$peak" ] && peak=$hwm
    sleep 0.02
  done
  wait "$pid" || { echo "kiln build $dir failed:"; tail -5 "$home/$run.json"; exit 1; }
  now > "$home/$run.t1"
  echo "$peak" > "$home/$run.peak"
}

# Where a kiln build's time went, from its JSON progress: before the first
# step (start-up, plan, context hash), each top-level task in order (the
# package sets, the steps; nested tasks are inside their step's time),
# after the last one (image config, manifest, naming, export), and exit.
breakdown() { # home run
  python3 - "$1/$2.json" "$(cat "$1/$2.t0")" "$(cat "$1/$2.t1")" <<'PY'
import json, sys
from datetime import datetime, timezone
log, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
def ts(e):
    return datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
events = []
for line in open(log):
    try:
        events.append(json.loads(line))
    except ValueError:
        pass
names, starts, rows = {}, {}, []
for e in events:
    if e["event"] == "start":
        names[e["id"]], starts[e["id"]] = e["name"], ts(e)
    elif e["event"] == "finish" and e["id"] in names:
        rows.append((starts[e["id"]], ts(e), names[e["id"]], e["status"], e["seconds"]))
# Steps, package sets and index reads ("[build 2/5] …", "[packages] …",
# "[index] trixie"); their parts ("layer libc6", "unpack 50 packages") are
# inside their time.
top = sorted(r for r in rows if r[2].startswith("["))
result = next((e for e in events if e["event"] == "result"), None)
first = top[0][0] if top else t1
last = max((r[1] for r in top), default=first)
end = ts(result) if result else t1
ms = lambda s: f"{max(s, 0) * 1000:8.1f} ms"
print(f"    {ms(first - t0)}  start-up, plan, context hash")
for _, _, n, st, secs in top:
    print(f"    {ms(secs)}  {n[:70]} ({st})")
print(f"    {ms(end - last)}  image, export, naming")
print(f"    {ms(t1 - end)}  exit")
print(f"    {ms(t1 - t0)}  total (wall)")
PY
}

# Each timed build starts with no dirty pages of the previous one left to
# write back and, with BENCH_FS=host, BENCH_SETTLE seconds (default 30)
# before a cold build, after the previous app's deletions.
settle() { # cold|warm
  sync
  if [ "$bench_fs" = host ] && [ "$1" = cold ]; then sleep "${BENCH_SETTLE:-30}"; fi
}

edit() { # one-line change in the app's main source file
  local dir=$1
  for f in index.js app.py main.go; do
    if [ -f "$dir/$f" ]; then
      case $f in
        *.py) echo "# edit $(now)" >> "$dir/$f" ;;
        *) echo "// edit $(now)" >> "$dir/$f" ;;
      esac
      return
    fi
  done
}

printf '%-13s %-8s %9s %9s %7s %9s %7s %9s\n' app run kiln buildah ratio buildkit ratio kiln-rss
goals=()
goal() { # label value op limit unit
  local ok=MISS
  [ "$(echo "$2 $3 $4" | bc)" = 1 ] && ok=ok
  goals+=("$(printf '%-13s %-22s %8s %s %s %s  %s' "$app" "$1" "$2" "$3" "$4" "$5" "$ok")")
}
for app in "${APPS[@]}"; do
  src=examples/$app
  kdir=$work/$app/kiln/$app; bdir=$work/$app/buildah/$app; ddir=$work/$app/buildkit/$app
  mkdir -p "$(dirname "$kdir")" "$(dirname "$bdir")" "$(dirname "$ddir")"
  cp -r "$src" "$kdir"; cp -r "$src" "$bdir"; cp -r "$src" "$ddir"
  "$KILN" --progress quiet dockerfile "$bdir" -o "$work/$app/Dockerfile" --base-image "$base" >/dev/null
  # The scripts the Dockerfile bind-mounts (.kiln/scripts/, e.g. the
  # runtime's shared-library check) are written into the context: BuildKit
  # builds its own copy of it.
  if [ -d "$bdir/.kiln" ]; then cp -r "$bdir/.kiln" "$ddir/"; fi
  # dockerd's built-in frontend: a `# syntax=` line would fetch one from
  # Docker Hub. BuildKit runs both stages' apt at once: lock its caches
  # (the generated file leaves them shared because buildah 1.28 hangs on
  # two locked mounts).
  grep -v '^# syntax=' "$work/$app/Dockerfile" \
    | sed -E 's#--mount=type=cache,target=/var/(cache/apt|lib/apt/lists)#&,sharing=locked#' \
    > "$work/$app/Dockerfile.buildkit"
  broot=$work/$app/bstore; brun=$work/$app/brun
  # buildah keeps RUN --mount=type=cache dirs in $TMPDIR/buildah-cache
  # (/var/tmp by default), outside --root: without a fresh TMPDIR its
  # "cold" build reuses the apt, npm and Go build caches of earlier runs.
  btmp=$work/$app/btmp; mkdir -p "$btmp"
  khome=$work/$app/khome
  for run in cold warm nochange; do
    if [ $run = warm ]; then edit "$kdir"; edit "$bdir"; edit "$ddir"; fi
    settle $run; t=$(now); kiln_build "$khome" "$kdir" $run; tk=$(since "$t")
    rss=$(( $(cat "$khome/$run.peak") / 1024 ))
    if [ $run = nochange ]; then
      printf '%-13s %-8s %8.3fs %9s %7s %9s %7s %6d MB\n' "$app" "$run" "$tk" - - - - "$rss"
      goal "no-change rebuild (s)" "$tk" "<" 0.150 s
      continue
    fi
    settle $run; t=$(now)
    TMPDIR=$btmp buildah --root "$broot" --runroot "$brun" bud -q --isolation chroot --layers --tls-verify=false \
      -f "$work/$app/Dockerfile" -t app "$bdir" >/dev/null 2>"$work/$app/buildah.$run.log" \
      || { tail -30 "$work/$app/buildah.$run.log"; exit 1; }
    tb=$(since "$t")
    td=-; rd=-
    if [ $buildkit = 1 ]; then
      settle $run; t=$(now)
      DOCKER_BUILDKIT=1 $DOCKER build -q --network host -f "$work/$app/Dockerfile.buildkit" -t app "$ddir" \
        >/dev/null 2>"$work/$app/buildkit.$run.log" \
        || { tail -30 "$work/$app/buildkit.$run.log"; exit 1; }
      td=$(since "$t"); rd=$(echo "scale=2; $tk / $td" | bc)
      goal "$run / BuildKit" "$rd" "<=" 0.5 x
    fi
    printf '%-13s %-8s %8.1fs %8.1fs %7.2f %9s %7s %6d MB\n' "$app" "$run" "$tk" "$tb" \
      "$(echo "scale=2; $tk / $tb" | bc)" "$([ "$td" = - ] && echo - || printf '%.1fs' "$td")" "$rd" "$rss"
    goal "$run peak RSS (MB)" "$rss" "<=" "$([ $run = cold ] && echo 250 || echo 60)" MB
  done
  echo "$app: kiln's warm rebuild, phase by phase"
  breakdown "$khome" warm
  # Sizes, uncompressed, as podman reports them.
  driver=$(podman --root "$broot" --runroot "$brun" info --format '{{.Store.GraphDriverName}}')
  skopeo copy -q "oci:$khome/data/images:app:1" "containers-storage:[$driver@$broot+$brun]localhost/kiln-bench-$app"
  ks=$(podman --root "$broot" --runroot "$brun" image inspect --format '{{.Size}}' "localhost/kiln-bench-$app")
  bs=$(podman --root "$broot" --runroot "$brun" image inspect --format '{{.Size}}' localhost/app)
  printf '%-13s size  kiln %.1f MB, buildah %.1f MB: %.2fx\n' "$app" \
    "$(echo "$ks / 1000000" | bc -l)" "$(echo "$bs / 1000000" | bc -l)" "$(echo "$ks / $bs" | bc -l)"
  buildah --root "$broot" --runroot "$brun" rmi -af >/dev/null 2>&1 || true
  umount -R "$broot" 2>/dev/null || true
  # The next app starts from empty storage on every side (and the run
  # needs the space of one app at a time).
  if [ -n "${BENCH_LOGS:-}" ]; then
    mkdir -p "$BENCH_LOGS"
    for l in "$khome"/*.json; do cp "$l" "$BENCH_LOGS/$app.$(basename "$l")"; done
  fi
  rm -rf "$work/$app"
  if [ $buildkit = 1 ]; then
    $DOCKER rmi -f app >/dev/null 2>&1 || true
    $DOCKER builder prune -af >/dev/null 2>&1 || true
  fi
done
echo
echo "goals (issue 17)"
printf '%s\n' "${goals[@]}"
