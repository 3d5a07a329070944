#!/usr/bin/env bash
# Layer write throughput: kiln vs `tar -c | gzip` and `tar -c | zstd -T0` on
# the same 500 MB tree of mixed files (text, binary-ish, random, many small).
#
#   bench/layer.sh [SIZE_MB]     (default 500)
#
# Prints MB/s for each and kiln's time as a ratio of the peer's (< 1 is faster).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb="${1:-500}"
work="${BENCH_DIR:-/var/tmp/kiln-bench-layer}"
cargo build --release -q
kiln="$PWD/target/release/kiln"

tree="$work/tree-$size_mb"
if [ ! -d "$tree" ]; then
    echo "making a $size_mb MB tree in $tree"
    mkdir -p "$tree"
    python3 - "$tree" "$size_mb" <<'PY'
import os, random, sys
root, total = sys.argv[1], int(sys.argv[2]) << 20
rng = random.Random(42)
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10))) for _ in range(5000)]
made, n = 0, 0
while made < total:
    d = os.path.join(root, f"d{n % 97}", f"e{n % 13}")
    os.makedirs(d, exist_ok=True)
    kind = n % 10
    if kind < 5:    # source-like text, 1-64 KiB
        size = rng.randint(1 << 10, 64 << 10)
        data = b" ".join(rng.choice(words) for _ in range(size // 6))[:size]
    elif kind < 8:  # small files (many of them, like node_modules)
        size = rng.randint(10, 2048)
        data = b"x" * size
    elif kind < 9:  # incompressible, 256 KiB - 4 MiB
        data = os.urandom(rng.randint(256 << 10, 4 << 20))
    else:           # binary-ish: repetitive structures, up to 2 MiB
        block = os.urandom(64)
        data = block * rng.randint(1000, 32000)
    with open(os.path.join(d, f"f{n}"), "wb") as f:
        f.write(data)
    made += len(data)
    n += 1
print(f"{n} files")
PY
fi
bytes=$(du -sb "$tree" | cut -f1)
mb=$(python3 -c "print($bytes / 1e6)")

# Median of 3 runs, after one warm-up that fills the page cache.
time_cmd() {
    local times=()
    bash -c "$1" >/dev/null 2>&1
    for _ in 1 2 3; do
        local s e
        s=$(date +%s.%N)
        bash -c "$1" >/dev/null 2>&1
        e=$(date +%s.%N)
        times+=("$(python3 -c "print($e - $s)")")
    done
    printf '%s\n' "${times[@]}" | sort -n | sed -n 2p
}

export KILN_CACHE_DIR="$work/cache" KILN_DATA_DIR="$work/data"
prep="rm -rf '$work/cache' '$work/data'"
t_kiln_gz=$(time_cmd "$prep; '$kiln' image from-dir '$tree' -t bench:gz --compression gzip")
t_kiln_zst=$(time_cmd "$prep; '$kiln' image from-dir '$tree' -t bench:zst --compression zstd")
t_gzip=$(time_cmd "tar -C '$tree' -c . | gzip > '$work/out.tar.gz'")
t_zstd=$(time_cmd "tar -C '$tree' -c . | zstd -T0 -q -f -o '$work/out.tar.zst'")

python3 - "$mb" "$t_kiln_gz" "$t_gzip" "$t_kiln_zst" "$t_zstd" <<'PY'
import sys
mb, kg, g, kz, z = map(float, sys.argv[1:])
print(f"tree: {mb:.0f} MB, {__import__('os').cpu_count()} cores; median of 3 runs")
print(f"{'':24}{'seconds':>10}{'MB/s':>10}")
for name, t in [("kiln gzip", kg), ("tar | gzip", g), ("kiln zstd", kz), ("tar | zstd -T0", z)]:
    print(f"{name:24}{t:10.2f}{mb / t:10.1f}")
print(f"ratio kiln gzip / tar|gzip      = {kg / g:.2f}  (goal <= 1.0)")
print(f"ratio kiln zstd / tar|zstd -T0  = {kz / z:.2f}  (goal <= 1.2)")
PY
