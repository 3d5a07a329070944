# The setup the builder-vs-builder benches share (auto.sh, multiarch.sh,
# regcache.sh): sourced, not run. Each bench stays one readable file of
# what it measures; the machinery it stands on is here.
#
#   bench_init NAME         release kiln in $KILN, the run's dir in $work
#                           (on a fresh journaled ext4 unless BENCH_FS=host
#                           or BENCH_FS=none), cleanup on exit, now/since
#   start_registry [log]    Debian's docker-registry on 127.0.0.1 → $reg
#                           (`log`: with its access log, for byte counts)
#   host_ca_args            the host's extra CAs → $ca_args (kiln --ca-cert)
#   trixie_base             an amd64 trixie minbase (mmdebstrap, made once,
#                           with the host's extra CAs) at $reg → $base
#   start_dockerd NAME      a dockerd with an empty data root → $DOCKER
#   stop_dockerd NAME       stops it and deletes its data

bench_init() { # name
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  cargo build --release --quiet
  KILN=$PWD/target/release/kiln
  work=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-$1.XXXXXX")
  # Every builder's storage (kiln's homes, buildah's --root and TMPDIR,
  # dockerd's data root) lives on a fresh journaled ext4 made for this run
  # (BENCH_FS=host: on /var/tmp itself). This machine's root ext4 has no
  # journal, and without one the inode allocator skips every inode freed
  # in the last minutes one by one (ext4's recently_deleted(), 30% of a
  # cold compose's samples in perf after a bench's cleanup): creating the
  # Go toolchain's 21k files took 3.5 s or 10–18 s depending on what the
  # previous runs had deleted, which made the ratios depend on app order.
  bench_fs=${BENCH_FS:-fresh}
  if [ "$bench_fs" = fresh ]; then
    truncate -s 32G "$work.img"
    mkfs.ext4 -q -F "$work.img"
    # With BENCH_TMP (e.g. /dev/shm when the disk is short), deleted files
    # give their space back to it.
    mount -o "loop${BENCH_TMP:+,discard}" "$work.img" "$work"
  fi
  pids=()
  dpid=
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_cleanup() {
  [ -n "$dpid" ] && kill "$dpid" 2>/dev/null
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for d in "$work"/dockerd-*/exec; do umount -R "$d" 2>/dev/null || true; done
  if [ "$bench_fs" = fresh ]; then
    umount -R "$work" 2>/dev/null || umount -l "$work" 2>/dev/null || true
    rm -f "$work.img"
  fi
  rm -rf "$work"
}

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

start_registry() { # [log]
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  {
    echo "version: 0.1"
    if [ "${1:-}" = log ]; then
      printf 'log:\n  level: info\n  accesslog:\n    disabled: false\n'
    fi
    printf 'storage:\n  filesystem:\n    rootdirectory: %s\n' "$work/registry"
    printf 'http:\n  addr: 127.0.0.1:%s\n' "$port"
  } > "$work/registry.yml"
  docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
  pids+=($!)
  reg=127.0.0.1:$port
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "docker-registry did not start:"; tail -5 "$work/registry.log"; exit 1
}

# Networks that intercept TLS: the host's extra CAs go into the peers' base
# (as a company base image carries them) and to kiln as --ca-cert.
host_ca_args() {
  ca_args=()
  for c in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$c" ] || continue
    ca_args+=(--ca-cert "$c")
  done
}

trixie_base() {
  local cache=${KILN_TEST_CACHE:-$HOME/.cache/kiln-tests} ctr
  mkdir -p "$cache"
  if [ ! -f "$cache/debian-trixie.tar" ]; then
    mmdebstrap --variant=minbase --format=tar trixie "$cache/debian-trixie.tar.tmp" http://deb.debian.org/debian
    mv "$cache/debian-trixie.tar.tmp" "$cache/debian-trixie.tar"
  fi
  # The base image goes through a store of the run's own, not the host's.
  local pstore=(--root "$work/pstore" --runroot "$work/prun")
  podman "${pstore[@]}" import -q "$cache/debian-trixie.tar" localhost/kiln-bench-base >/dev/null
  host_ca_args
  if [ ${#ca_args[@]} -gt 0 ]; then
    ctr=$(buildah "${pstore[@]}" from -q localhost/kiln-bench-base)
    buildah "${pstore[@]}" copy -q "$ctr" /usr/local/share/ca-certificates/ /usr/local/share/ca-certificates/ >/dev/null
    buildah "${pstore[@]}" commit -q --rm "$ctr" localhost/kiln-bench-base >/dev/null
  fi
  podman "${pstore[@]}" push -q --tls-verify=false localhost/kiln-bench-base "docker://$reg/debian:trixie-slim"
  podman "${pstore[@]}" rmi -f localhost/kiln-bench-base >/dev/null
  umount -R "$work/pstore" 2>/dev/null || true
  rm -rf "$work/pstore" "$work/prun"
  base=$reg/debian:trixie-slim
}

# One dockerd at a time, each with its own empty data root: a "machine".
start_dockerd() { # name
  local d=$work/dockerd-$1
  mkdir -p "$d"
  dockerd --data-root "$d/root" --exec-root "$d/exec" --pidfile "$d/docker.pid" \
    -H "unix://$d/docker.sock" --bridge=none --iptables=false --ip6tables=false \
    --insecure-registry "$reg" > "$d.log" 2>&1 &
  dpid=$!
  for _ in $(seq 100); do [ -S "$d/docker.sock" ] && break; sleep 0.2; done
  DOCKER="/usr/bin/docker -H unix://$d/docker.sock"
  $DOCKER info >/dev/null 2>&1 || { echo "dockerd $1 did not start:"; tail -5 "$d.log"; exit 1; }
}

stop_dockerd() { # name
  local d=$work/dockerd-$1
  kill "$dpid"; wait "$dpid" 2>/dev/null || true; dpid=
  umount -R "$d/exec" 2>/dev/null || true
  rm -rf "$d"
}
