#!/usr/bin/env bash
# kiln push NAME ssh://… against streaming a docker-archive over the same
# ssh, in the same run, to a real sshd on 127.0.0.1 (needs root: a temp
# sshd_config, host key and authorized key, and a temp user with /bin/sh
# as the server account — root's own shell startup files would be timed
# otherwise).
#
#   first:  kiln push app:1 ssh://… into an empty remote store (every blob)
#   second: kiln push app:2 ssh://… after a one-line app change (app layer,
#           config and manifest only)
#   stream: skopeo copy oci:…:app:2 docker-archive:/dev/stdout | ssh … 'cat > app.tar'
#
# The image is ~IMAGE_MB (default 200) MB: one layer of incompressible data
# (kiln image from-dir) plus a one-file app layer (kiln build). Each figure
# is the median of RUNS (default 3). Goal: second ≤ 0.1 × stream.
# The image build (from-dir + kiln build) is not timed.
set -euo pipefail

RUNS=${RUNS:-3}
IMAGE_MB=${IMAGE_MB:-200}
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench/transfer.sh needs root (it starts sshd)" >&2; exit 1; }
for t in /usr/sbin/sshd ssh ssh-keygen skopeo sha256sum; do
  command -v "$t" >/dev/null || { echo "missing tool: $t (./scripts/install-test-deps)" >&2; exit 1; }
done
# KILN_BIN=target/debug/kiln skips the release build (dependencies are
# optimised in debug builds too; the transfer is ssh- and IO-bound).
if [ -n "${KILN_BIN:-}" ]; then
  KILN=$(realpath "$KILN_BIN")
else
  cargo build --release --quiet
  KILN=$PWD/target/release/kiln
fi

WORK=$(mktemp -d /var/tmp/kiln-bench-transfer.XXXXXX)
SSHD_PID=""
BENCH_USER=kilnbench$$
cleanup() {
  if [ -n "$SSHD_PID" ]; then kill "$SSHD_PID" 2>/dev/null || true; wait "$SSHD_PID" 2>/dev/null || true; fi
  userdel -f "$BENCH_USER" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---- sshd on loopback ----
chmod 755 "$WORK"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/id"
cp "$WORK/id.pub" "$WORK/authorized_keys"
chmod 644 "$WORK/authorized_keys"
useradd -m -d "$WORK/home" -s /bin/sh "$BENCH_USER"
usermod -p '*' "$BENCH_USER" # unlocked, without a password: keys only
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/sshd_config" <<CFG
Port $PORT
ListenAddress 127.0.0.1
HostKey $WORK/host_key
AuthorizedKeysFile $WORK/authorized_keys
PidFile none
UsePAM no
StrictModes no
PasswordAuthentication no
AllowUsers $BENCH_USER
LogLevel ERROR
CFG
mkdir -p /run/sshd
/usr/sbin/sshd -D -e -f "$WORK/sshd_config" 2>"$WORK/sshd.log" &
SSHD_PID=$!
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$WORK/host_key.pub")" >"$WORK/known_hosts"
cat >"$WORK/ssh_config" <<CFG
Host bench
  HostName 127.0.0.1
  Port $PORT
  User $BENCH_USER
  IdentityFile $WORK/id
  IdentitiesOnly yes
  IdentityAgent none
  BatchMode yes
  StrictHostKeyChecking yes
  UserKnownHostsFile $WORK/known_hosts
  GlobalKnownHostsFile /dev/null
CFG
for _ in $(seq 100); do ssh -F "$WORK/ssh_config" bench true 2>/dev/null && break; sleep 0.1; done
SSH=(ssh -F "$WORK/ssh_config" bench)

# ---- the image ----
export KILN_DATA_DIR=$WORK/kiln-data KILN_CACHE_DIR=$WORK/kiln-cache NO_COLOR=1
mkdir -p "$WORK/base" "$WORK/app"
head -c "$((IMAGE_MB * 1024 * 1024))" /dev/urandom >"$WORK/base/data.bin"
"$KILN" --progress quiet image from-dir "$WORK/base" -t base >/dev/null
printf 'FROM base\nCOPY app.txt /app/app.txt\n' >"$WORK/app/Dockerfile"
echo 'version 1' >"$WORK/app/app.txt"
"$KILN" --progress quiet build "$WORK/app" -t app:1 >/dev/null
echo 'version 2' >"$WORK/app/app.txt"
"$KILN" --progress quiet build "$WORK/app" -t app:2 >/dev/null
size=$(du -sm "$KILN_DATA_DIR/images/blobs" | cut -f1)
echo "image: ${size} MB in kiln's store (app:1 and app:2 share the ${IMAGE_MB} MB layer)"

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

first=() second=() stream=() conn=() sent1=0 sent2=0
for r in $(seq "$RUNS"); do
  dest=$WORK/home/remote-$r
  t0=$(now)
  out1=$("$KILN" --progress quiet push app:1 "ssh://bench$dest" -F "$WORK/ssh_config" --json)
  t1=$(now)
  out2=$("$KILN" --progress quiet push app:2 "ssh://bench$dest" -F "$WORK/ssh_config" --json)
  t2=$(now)
  skopeo copy -q "oci:$KILN_DATA_DIR/images:app:2" docker-archive:/dev/stdout:app:2 \
    | "${SSH[@]}" "cat > $dest/stream.tar"
  t3=$(now)
  "${SSH[@]}" true
  t4=$(now)
  first+=("$(awk "BEGIN{print $t1 - $t0}")")
  second+=("$(awk "BEGIN{print $t2 - $t1}")")
  stream+=("$(awk "BEGIN{print $t3 - $t2}")")
  conn+=("$(awk "BEGIN{print $t4 - $t3}")")
  sent1=$(echo "$out1" | json_field bytes_sent)
  sent2=$(echo "$out2" | json_field bytes_sent)
  blobs2="$(echo "$out2" | json_field blobs_sent) sent, $(echo "$out2" | json_field blobs_present) already there"
  tarsize=$("${SSH[@]}" "stat -c %s $dest/stream.tar")
  "${SSH[@]}" "rm -rf $dest"
done
f=$(printf '%s\n' "${first[@]}" | median)
s=$(printf '%s\n' "${second[@]}" | median)
x=$(printf '%s\n' "${stream[@]}" | median)
c=$(printf '%s\n' "${conn[@]}" | median)
printf 'first transfer (kiln, every blob):   %6.3f s  (%s bytes sent)\n' "$f" "$sent1"
printf 'second transfer (kiln, app change):  %6.3f s  (%s bytes sent; blobs %s)\n' "$s" "$sent2" "$blobs2"
printf 'docker-archive stream over ssh:      %6.3f s  (%s bytes)\n' "$x" "$tarsize"
printf 'one ssh connection (ssh HOST true):  %6.3f s  (the floor of any transfer)\n' "$c"
printf 'ratio first/stream:  %.3f\n' "$(awk "BEGIN{print $f / $x}")"
printf 'ratio second/stream: %.3f  (goal <= 0.1)\n' "$(awk "BEGIN{print $s / $x}")"
