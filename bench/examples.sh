#!/usr/bin/env bash
# Every app in examples/, built by kiln (auto plan, no Dockerfile) and run
# end to end under podman: pass/fail, the first error line of a failure,
# build time, image size (uncompressed as podman counts it, and the
# compressed layers kiln wrote). Prints a markdown table at the end.
#   bench/examples.sh [APP…]        default: every directory in examples/
#   EXAMPLES_TRY_ALL=1 bench/examples.sh   also build the apps listed as
#                                   not runnable here (see NEEDS below)
#   EXAMPLES_WORK=DIR               kiln's cache and store, and the podman
#                                   store the images are run from (default
#                                   /var/tmp/kiln-bench-examples; a fresh
#                                   ext4 mounted there is fine: one app
#                                   at a time takes up to ~3 GB)
#   EXAMPLES_KEEP_CACHE=1           keep kiln's cache between apps (and
#                                   runs: warm builds). By default each
#                                   app's image and kiln's cache but its
#                                   Debian indexes (cache/packages) are
#                                   deleted after it: every build is cold,
#                                   and the disk holds one app's cache, not
#                                   all of them (> 15 GB).
# Build logs and container logs go to $EXAMPLES_WORK/logs/APP.{build,run}.log.
# Needs root, podman, skopeo, curl, jq.
#
# What each example must do is stated here, in EXPECT (one place, not in
# the examples, whose files are the plan tests' inputs):
#   APP|http|TEXT   started with PORT=…, `GET /` answers 200 with TEXT in
#                   the body within 90 s
#   APP|out|TEXT    run with no arguments, exits 0 within 120 s and prints
#                   TEXT (stdout or stderr; empty TEXT: exit 0 is enough)
# Apps whose toolchain or dependencies come from a registry this machine
# cannot reach are listed in NEEDS (APP|what it needs) and reported as
# "not runnable here" without a build. Reachable here: Debian, PyPI, npm,
# crates.io. Not: Maven Central, Clojars, Gradle, the Go module proxy,
# Hackage/Stackage, GitHub, Docker Hub, RubyGems, Packagist, hex.pm,
# NuGet/dot.net, Google's Dart archive, deno.land, ziglang.org.
set -euo pipefail
cd "$(dirname "$0")/.."

EXPECT='
cobol|out|Hello
config-nixpacks-toml|http|Hello from node-npm
crystal|out|hello
go-cmd|http|Hello from go-cmd
go-mod|http|Hello from go-mod
node-astro|http|<h1>Hello</h1>
node-bcrypt|http|Hello from node-bcrypt, verified $2b$04$
node-bun|http|hi
node-cra|http|<div id="root"></div>
node-gyp-addon|http|Hello from node-gyp-addon (native)
node-nextjs|http|Hello from node-nextjs
node-nextjs-standalone|http|<h1>Hello</h1>
node-npm|http|Hello from node-npm
node-nuxt|http|<html
node-nvmrc|http|Hello from node-npm
node-nx|out|api
node-pnpm|http|Hello from node-npm
node-python|http|Hello from node-python (built by Python 3)
node-remix|http|Hello from node-remix
node-runtime-build|http|Hello from node-runtime-build, npm 
node-sveltekit|http|Hello from node-sveltekit
node-turbo|http|Hello from node-npm
node-vite-react|http|<title>Hello from node-vite-react</title>
node-yarn|http|Hello from node-npm
node-yarn-berry|http|Hello from node-npm
php-vanilla|http|Hello from php
procfile|http|Directory listing for /
python-cowsay|http|Hello from python-cowsay
python-django|http|Hello from python-django
python-fastapi|http|{"hello":"python-fastapi"}
python-flask|http|Hello from python-flask
python-node|http|Hello from python-node, node v
python-pdm|http|Hello from python-pdm, six 1.17.0
python-poetry|http|Hello from python-poetry
python-psycopg2|http|Hello from python-psycopg2, libpq 1
python-setuptools|out|hello
python-uv|http|Hello from python-uv
rust-cargo|http|Hello from rust-cargo (/)
rust-workspace|http|Hello from rust-workspace (/)
scheme-haunt|http|Hello from haunt
staticfile|http|Hello from staticfile
swift|out|hello
clojure|out|
csharp-cli|http|hi
dart|out|hello
deno|http|hi
elixir-phoenix|http|
fsharp|out|hello
gleam|out|
haskell-stack|out|hello
java-gradle|http|
java-maven|http|
lunatic|out|
php-laravel|http|
ruby-rack|http|hi
ruby-rails|http|
scala-sbt|out|
zig|out|
'

NEEDS='
clojure|Maven Central and Clojars (Leiningen)
csharp-cli|dot.net (the SDK install script) and NuGet
dart|storage.googleapis.com (the Dart SDK)
deno|dl.deno.land (the Deno binary)
elixir-phoenix|hex.pm (Phoenix)
fsharp|dot.net (the SDK install script) and NuGet
gleam|GitHub (the Gleam binary) and hex.pm (gleam_stdlib)
haskell-stack|Stackage and GitHub (stack setup downloads GHC)
java-gradle|services.gradle.org and Maven Central
java-maven|Maven Central
lunatic|GitHub (the lunatic binary)
php-laravel|Packagist (composer: laravel/framework)
ruby-rack|RubyGems (rack, puma)
ruby-rails|RubyGems (rails, pg, puma)
scala-sbt|GitHub (sbt) and Maven Central
zig|ziglang.org (the Zig toolchain)
'

field() { # TABLE APP N: the Nth |-field of APP's line (texts hold no |)
  printf '%s\n' "$1" | awk -F'|' -v a="$2" -v n="$3" '$1 == a { print $n; exit }'
}

cargo build --release --quiet
KILN=$PWD/target/release/kiln
work=${EXAMPLES_WORK:-/var/tmp/kiln-bench-examples}
mkdir -p "$work/logs" "$work/src"
# One run at a time per work dir: a second one would delete the first's cache.
exec 9> "$work/lock"
flock -n 9 || { echo "another bench/examples.sh is using $work" >&2; exit 1; }
export KILN_CACHE_DIR=$work/cache KILN_DATA_DIR=$work/data
# Temp files (kiln's gpgv dirs, skopeo's blobs) on the same filesystem.
mkdir -p "$work/tmp"
export TMPDIR=$work/tmp
# A podman store of its own under the work dir: the images loaded here
# stay apart from the host's (and the e2e tests') and live on the same
# filesystem as kiln's cache.
pstore=(--root "$work/podman/root" --runroot "$work/podman/run")
podman() { command podman --cgroup-manager cgroupfs "${pstore[@]}" "$@"; }

if [ $# -gt 0 ]; then
  APPS=("$@")
else
  APPS=()
  for d in examples/*/; do APPS+=("$(basename "$d")"); done
fi

now() { date +%s.%N; }
mb() { echo "scale=1; $1 / 1000000" | bc; }
# The first line of a log that says what went wrong, shortened for a table cell.
reason() {
  local line
  line=$(grep -m1 -E '(^|[^a-z])(error|Error|ERROR|ERR!|failed|not found|No such|Traceback|panicked)' "$1" 2>/dev/null || true)
  [ -n "$line" ] || line=$(grep -v '^\s*$' "$1" 2>/dev/null | tail -1 || true)
  printf '%s' "$line" | sed -E 's/\x1b\[[0-9;]*m//g; s/\|/\\|/g; s/^\s+//' | cut -c1-160
}

# kiln's own error on one line: its headline (the step that failed) and
# the step's last output lines, npm's warnings left out.
kiln_error() {
  local text
  text=$(awk '
    /^error: / { head = $0; sub(/^error: /, "", head); sub(/ \(plan:[^)]*\)/, "", head); n = 0; out = 0; next }
    head != "" && /^last [0-9]+ lines of output:/ { out = 1; next }
    out && !/^\s*$/ && !/^npm (WARN|notice)/ { last[++n] = $0 }
    END {
      if (head == "") exit
      tail = ""
      for (i = (n > 3 ? n - 2 : 1); i <= n; i++) tail = tail (tail == "" ? "" : " / ") last[i]
      print head (tail == "" ? "" : ": " tail)
    }' "$1")
  [ -n "$text" ] || text=$(reason "$1")
  printf '%s' "$text" | sed -E 's/\x1b\[[0-9;]*m//g; s/\|/\\|/g; s/\s+/ /g' | cut -c1-300
}

rows=()
pass=0 fail=0 skip=0
for app in "${APPS[@]}"; do
  [ -d "examples/$app" ] || { echo "no example $app" >&2; exit 2; }
  kind=$(field "$EXPECT" "$app" 2)
  expect=$(field "$EXPECT" "$app" 3)
  needs=$(field "$NEEDS" "$app" 2)
  [ -n "$kind" ] || { echo "$app: no line in EXPECT (bench/examples.sh)" >&2; exit 2; }
  if [ -n "$needs" ] && [ -z "${EXAMPLES_TRY_ALL:-}" ]; then
    rows+=("| $app | not runnable here | needs $needs | | | |")
    skip=$((skip + 1))
    echo "$app: not runnable here: needs $needs"
    continue
  fi
  blog=$work/logs/$app.build.log rlog=$work/logs/$app.run.log
  : > "$rlog"
  rm -rf "$work/src/$app"
  cp -r "examples/$app" "$work/src/$app"
  t=$(now)
  status=pass why=
  if ! timeout 2400 "$KILN" --progress plain build "$work/src/$app" -t "$app:1" > "$blog" 2>&1; then
    status=fail why="build: $(kiln_error "$blog")"
  fi
  secs=$(printf '%.0f' "$(echo "$(now) - $t" | bc)")
  usize= csize=
  tag=localhost/kiln-examples-$app
  ctr=kiln-examples-$app-$$
  if [ $status = pass ]; then
    # Compressed: the layer blobs kiln wrote, as a registry would store them.
    csize=$(skopeo inspect --raw "oci:$KILN_DATA_DIR/images:$app:1" | jq '[.layers[].size] | add')
    # skopeo keeps the blobs it copies in /var/tmp unless told (not $TMPDIR).
    if ! skopeo --tmpdir "$TMPDIR" copy -q "oci:$KILN_DATA_DIR/images:$app:1" \
      "containers-storage:[overlay@$work/podman/root+$work/podman/run]$tag" > "$rlog" 2>&1; then
      status=fail why="load into podman: $(reason "$rlog")"
    fi
  fi
  if [ $status = pass ]; then
    usize=$(podman image inspect --format '{{.Size}}' "$tag")
    run=(/usr/bin/podman --cgroup-manager cgroupfs "${pstore[@]}" run --runtime runc --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 --network host)
    if [ "$kind" = http ]; then
      port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
      "${run[@]}" -d --name "$ctr" -e "PORT=$port" "$tag" > /dev/null
      status=fail why="run: no HTTP 200 within 90 s"
      deadline=$(( $(date +%s) + 90 ))
      while [ "$(date +%s)" -lt $deadline ]; do
        code=$(curl -s -m 5 -o "$work/body" -w '%{http_code}' "http://127.0.0.1:$port/" || true)
        if [ "$code" = 200 ]; then
          if grep -qF -- "$expect" "$work/body"; then status=pass why=
          else status=fail why="run: answer lacks '$expect': $(head -c 100 "$work/body" | tr '\n' ' ')"; fi
          break
        fi
        if [ "$(podman inspect --format '{{.State.Running}}' "$ctr")" != true ]; then
          podman logs "$ctr" > "$rlog" 2>&1 || true
          why="run: exited: $(reason "$rlog")"
          break
        fi
        [ -n "$code" ] && [ "$code" != 000 ] && why="run: HTTP $code"
        sleep 0.5
      done
      podman logs "$ctr" > "$rlog" 2>&1 || true
      podman rm -f "$ctr" > /dev/null 2>&1 || true
    else
      rc=0
      timeout 120 "${run[@]}" --rm --name "$ctr" "$tag" > "$rlog" 2>&1 || rc=$?
      if [ $rc -ne 0 ]; then
        status=fail why="run: exit $rc: $(reason "$rlog")"
        podman rm -f "$ctr" > /dev/null 2>&1 || true
      elif ! grep -qF -- "$expect" "$rlog"; then
        status=fail why="run: output lacks '$expect'"
      fi
    fi
    podman rmi -f "$tag" > /dev/null 2>&1 || true
  fi
  if [ -z "${EXAMPLES_KEEP_CACHE:-}" ]; then
    "$KILN" --progress quiet rmi "$app:1" > /dev/null 2>&1 || true
    find "$KILN_CACHE_DIR" -mindepth 1 -maxdepth 1 ! -name packages -exec rm -rf {} + \
      || echo "$app: could not empty $KILN_CACHE_DIR (the next build starts warmer)" >&2
  fi
  [ $status = pass ] && pass=$((pass + 1)) || fail=$((fail + 1))
  us=${usize:+$(mb "$usize") MB} cs=${csize:+$(mb "$csize") MB}
  rows+=("| $app | $status | ${why//|/\\|} | ${secs}s | $us | $cs |")
  echo "$app: $status ${why:+($why) }in ${secs}s${us:+, $us / $cs}"
done

echo
echo "kiln $(git describe --always --dirty), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(. /etc/os-release; echo "$PRETTY_NAME"), cache ${work}"
echo
echo "| app | result | failure (first error line) | build | image (podman) | compressed |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "$pass pass, $fail fail, $skip not runnable here"
