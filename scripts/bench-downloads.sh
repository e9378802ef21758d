#!/usr/bin/env bash
# One file downloaded from page cache, in one run, by our server (`/blobs/sha256/{hex}`), by nginx (`sendfile on`,
# one worker per core) serving the very same blob file, by `examples/sendfile_floor` (the least a tokio server can
# do: a head, then sendfile, on connection threads as ours; what our stack costs beyond it is ours, and what it
# cannot win the machine decides), and optionally by a second build of ours (BEFORE=binary, the build before, for
# "back to back" figures; a script that sets REPOSITORY_CONNECTION_THREADS=0 and execs ours compares the shared
# runtime). Each round downloads it with 1 and with 4 concurrent curl streams from each server in turn, each round
# starting with the next server; prints MiB/s, the server's CPU seconds per GiB served (from
# /proc/PID/task/*/schedstat before and after, every thread; for nginx, summed over its workers) and the cores curl
# took, then the medians and the ratio to nginx's. (Kernel time in softirq context, where loopback delivers, is
# nobody's.) A 1 GiB run lasts a fraction of a second on a fast machine: 4096 gives steadier rounds.
#
#   cargo build --release --bins --examples && scripts/bench-downloads.sh [SIZE_MIB=1024] [ROUNDS=3]
#   BEFORE=/path/to/older/component-repository scripts/bench-downloads.sh
#
# Loopback only; the servers and nginx stop with the script. curl shares the machine's cores with the servers, the
# same for all of them. Needs curl, jq and nginx (Debian: nginx-light).
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib=${1:-1024}
rounds=${2:-3}
binary=${BINARY:-target/release/component-repository}
before=${BEFORE:-}
floor=${FLOOR:-target/release/examples/sendfile_floor}
work=$(mktemp -d)
nginx_port=18732
declare -A pid=() url=()
cleanup() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; $(nginx -v 2>&1)"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$work/file.bin"
sha=$(sha256sum "$work/file.bin" | cut -d' ' -f1)

# Starts `binary` as server `name` on `port` with a store of its own and uploads the file to it.
start() {
  local name=$1 binary=$2 port=$3 base="http://127.0.0.1:$3"
  "$binary" serve --bind "127.0.0.1:$port" --data-dir "$work/$name" --log-level warn \
    --max-upload-size "$((size_mib + 1))MiB" >"$work/$name.log" 2>&1 &
  pid[$name]=$!
  for _ in $(seq 100); do curl -sf "$base/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf "$base/graphql" -H 'content-type: application/json' \
    -d '{"query":"mutation { createModel(input: {name: \"bench\", version: \"1\"}) { name } }"}' >/dev/null
  curl -sf "$base/graphql" -H 'apollo-require-preflight: true' \
    -F operations='{"query":"mutation($f: Upload!) { uploadModelFile(name: \"bench\", version: \"1\", file: $f) { file { sha256 } } }","variables":{"f":null}}' \
    -F map='{"0":["variables.f"]}' -F 0=@"$work/file.bin" >"$work/$name.json"
  local stored
  stored=$(jq -r '.data.uploadModelFile.file.sha256' "$work/$name.json")
  [ "$stored" = "$sha" ] || { echo "$name stored $stored, not $sha" >&2; exit 1; }
  url[$name]="$base/blobs/sha256/$sha"
}
start ours "$binary" 18731
[ -n "$before" ] && start before "$before" 18733
rm "$work/file.bin"

blob="$work/ours/blobs/${sha:0:2}/$sha"
[ -f "$blob" ] || { echo "the blob is not at $blob" >&2; exit 1; }
mkdir -p "$work/www"
ln "$blob" "$work/www/blob" 2>/dev/null || cp "$blob" "$work/www/blob"
# nginx's workers run as another user: they must be able to reach and read the file.
chmod a+rx "$work" "$work/www"
chmod a+r "$work/www/blob"
cat >"$work/nginx.conf" <<EOF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
daemon on;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  server { listen 127.0.0.1:$nginx_port; root $work/www; }
}
EOF
nginx -c "$work/nginx.conf" -p "$work"
for _ in $(seq 50); do [ -s "$work/nginx.pid" ] && break; sleep 0.1; done
url[nginx]="http://127.0.0.1:$nginx_port/blob"
"$floor" 127.0.0.1:18735 "$work/www/blob" 2>"$work/floor.log" &
pid[floor]=$!
url[floor]="http://127.0.0.1:18735/"
for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/18735) 2>/dev/null && break; sleep 0.1; done

# The processes that serve `name`'s bytes: our server, or nginx's workers.
serving() {
  if [ "$1" = nginx ]; then pgrep -P "$(cat "$work/nginx.pid")"; else echo "${pid[$1]}"; fi
}
# CPU time of this script's waited-for children (the curls), in clock ticks: with one stream, a curl near one whole
# core is the limit for every server alike.
ticks=$(getconf CLK_TCK)
client_ticks() { sed 's/.*) //' /proc/$$/stat | awk '{ print $14 + $15 }'; }
# CPU time of the processes given (all their threads), in nanoseconds.
cpu_ns() {
  for p in "$@"; do cat /proc/"$p"/task/*/schedstat; done | awk '{ s += $1 } END { printf "%.0f\n", s }'
}

names=(nginx floor ours)
[ -n "$before" ] && names+=(before)
declare -A speeds=() cpus=() ratios=()
for name in "${names[@]}"; do curl -sf -o /dev/null "${url[$name]}"; done # page cache warm
for round in $(seq "$rounds"); do
  for streams in 1 4; do
    # Each round starts with the next server, so none always runs right after another or first.
    order=("${names[@]:$(((round - 1) % ${#names[@]}))}" "${names[@]:0:$(((round - 1) % ${#names[@]}))}")
    declare -A got=()
    for name in "${order[@]}"; do
      mapfile -t procs < <(serving "$name")
      cpu0=$(cpu_ns "${procs[@]}")
      client0=$(client_ticks)
      t0=$(date +%s.%N)
      curls=()
      for i in $(seq "$streams"); do
        curl -sf -o /dev/null -w '%{size_download}\n' "${url[$name]}" >"$work/got.$i" &
        curls+=($!)
      done
      for c in "${curls[@]}"; do wait "$c"; done
      t1=$(date +%s.%N)
      cpu1=$(cpu_ns "${procs[@]}")
      client1=$(client_ticks)
      for i in $(seq "$streams"); do
        [ "$(cat "$work/got.$i")" = "$((size_mib * 1024 * 1024))" ] || { echo "$name: short download" >&2; exit 1; }
      done
      got[$name]=$(awk -v n="$streams" -v s="$size_mib" -v a="$t0" -v b="$t1" -v c="$((cpu1 - cpu0))" \
        -v k="$((client1 - client0))" -v hz="$ticks" \
        'BEGIN { printf "%.0f %.3f %.2f\n", n * s / (b - a), c / 1e9 / (n * s / 1024), k / hz / (b - a) }')
    done
    anchor_mib=${got[nginx]%% *}
    for name in "${names[@]}"; do
      read -r mib cpu cores <<<"${got[$name]}"
      speeds[$name.$streams]+="$mib "
      cpus[$name.$streams]+="$cpu "
      # The ratio within a round too: on a shared machine the load changes between rounds more than within one.
      ratio=$(awk -v a="$mib" -v b="$anchor_mib" 'BEGIN { printf "%.2f", a / b }')
      ratios[$name.$streams]+="$ratio "
      echo "round $round, $streams stream(s), $name: $mib MiB/s (${ratio}x nginx), $cpu CPU s/GiB; curl took $cores cores"
    done
    unset got
  done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
echo "$size_mib MiB from page cache, medians of $rounds rounds (load average now: $(cut -d' ' -f1-3 /proc/loadavg)):"
for streams in 1 4; do
  anchor=$(echo "${speeds[nginx.$streams]}" | median)
  anchor_cpu=$(echo "${cpus[nginx.$streams]}" | median)
  for name in "${names[@]}"; do
    m=$(echo "${speeds[$name.$streams]}" | median)
    c=$(echo "${cpus[$name.$streams]}" | median)
    r=$(echo "${ratios[$name.$streams]}" | median)
    echo "  $streams stream(s) $name: $m MiB/s ($(awk -v a="$m" -v b="$anchor" 'BEGIN { printf "%.2f", a / b }')x nginx; median of the rounds' ratios ${r}x)," \
      "$c CPU s/GiB ($(awk -v a="$c" -v b="$anchor_cpu" 'BEGIN { printf "%.2f", a / b }')x nginx's)"
  done
done
