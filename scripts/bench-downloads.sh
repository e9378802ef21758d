#!/usr/bin/env bash
# One file downloaded, in one run, three ways: through the OCI blob route (`/v2/.../blobs/sha256:...`), through
# `/blobs/sha256/{hex}`, and from nginx (`sendfile on`) serving the very same blob file of the embedded store. Each
# is read ROUNDS times with curl into /dev/null after one warm-up read (page cache warm); prints MiB/s per read and
# each route's median as a ratio to nginx's.
#
#   cargo build --release --bins && scripts/bench-downloads.sh [SIZE_MIB] [ROUNDS]
#
# Loopback only; the server and nginx stop with the script. Needs curl, jq and nginx (Debian: nginx-light).
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib=${1:-1024}
rounds=${2:-4}
binary=${BINARY:-target/release/component-repository}
work=$(mktemp -d)
server_port=18731
nginx_port=18732
cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

"$binary" serve --bind "127.0.0.1:$server_port" --data-dir "$work/data" --log-level warn \
  --max-upload-size "$((size_mib + 1))MiB" >"$work/server.log" 2>&1 &
server=$!
base="http://127.0.0.1:$server_port"
for _ in $(seq 100); do curl -sf "$base/readyz" >/dev/null && break; sleep 0.1; done

head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$work/file.bin"
curl -sf "$base/graphql" -H 'content-type: application/json' \
  -d '{"query":"mutation { createModel(input: {name: \"bench\", version: \"1\"}) { name } }"}' >/dev/null
curl -sf "$base/graphql" -H 'apollo-require-preflight: true' \
  -F operations='{"query":"mutation($f: Upload!) { uploadModelFile(name: \"bench\", version: \"1\", file: $f) { file { sha256 } } }","variables":{"f":null}}' \
  -F map='{"0":["variables.f"]}' -F 0=@"$work/file.bin" >"$work/uploaded.json"
sha=$(jq -r '.data.uploadModelFile.file.sha256' "$work/uploaded.json")
rm "$work/file.bin"
blob="$work/data/blobs/${sha:0:2}/$sha"
[ -f "$blob" ] || { echo "the blob is not at $blob" >&2; exit 1; }
layer=$(curl -sf "$base/v2/models/bench/manifests/1" | jq -r '.layers[0].digest')
[ "$layer" = "sha256:$sha" ] || { echo "the manifest's layer is $layer, not sha256:$sha" >&2; exit 1; }

mkdir -p "$work/www"
ln "$blob" "$work/www/blob" 2>/dev/null || cp "$blob" "$work/www/blob"
# nginx's workers run as another user: they must be able to reach and read the file.
chmod a+rx "$work" "$work/www"
chmod a+r "$work/www/blob"
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
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

declare -A urls=(
  [oci]="$base/v2/models/bench/blobs/sha256:$sha"
  [blobs]="$base/blobs/sha256/$sha"
  [nginx]="http://127.0.0.1:$nginx_port/blob"
)
declare -A speeds=()
for name in nginx blobs oci; do curl -sf -o /dev/null "${urls[$name]}"; done
for round in $(seq "$rounds"); do
  for name in nginx blobs oci; do
    bytes_per_s=$(curl -sf -o /dev/null -w '%{speed_download}' "${urls[$name]}")
    mib=$(awk -v b="$bytes_per_s" 'BEGIN { printf "%.0f", b / 1048576 }')
    speeds[$name]+="$mib "
    echo "round $round $name: $mib MiB/s"
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
nginx_median=$(echo "${speeds[nginx]}" | median)
echo "$size_mib MiB from page cache, medians of $rounds reads:"
for name in nginx blobs oci; do
  m=$(echo "${speeds[$name]}" | median)
  echo "  $name: $m MiB/s ($(awk -v a="$m" -v b="$nginx_median" 'BEGIN { printf "%.2f", a / b }')x nginx)"
done
