#!/bin/sh
# Plan speed: `kiln plan` over 150 app directories (copies of examples/),
# and one `kiln plan` wall time measured by hyperfine.
# Targets: 150 plans < 1 s total; one plan < 20 ms.
# Peer: Nixpacks is not installable here (no GitHub access), so its figures
# are not measured side by side; run `nixpacks plan` the same way to compare.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --quiet
KILN=$PWD/target/release/kiln
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

n=0
while [ "$n" -lt 150 ]; do
  for d in examples/*/; do
    [ "$n" -ge 150 ] && break
    cp -r "$d" "$work/app$n"
    n=$((n + 1))
  done
done

start=$(date +%s%N)
for d in "$work"/app*; do
  "$KILN" --progress quiet plan "$d" > /dev/null
done
end=$(date +%s%N)
total_ms=$(( (end - start) / 1000000 ))
echo "plans for 150 app dirs (one process each): ${total_ms} ms total (target < 1000 ms)"

if command -v hyperfine > /dev/null; then
  cp -r examples/node-npm "$work/one"
  hyperfine -N --warmup 5 --runs 50 --export-json "$work/one.json" \
    "$KILN --progress quiet plan $work/one" > /dev/null
  python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results'][0]; print('kiln plan on one app (node): mean %.1f ms, max %.1f ms (target < 20 ms)' % (r['mean']*1e3, r['max']*1e3))" "$work/one.json"
fi
