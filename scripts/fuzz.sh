#!/usr/bin/env bash
# A bounded fuzz run against the real server: Schemathesis (PyPI) generates requests from /openapi.json (REST) and
# from the GraphQL schema, and every answer must be free of server faults: no 5xx, no GraphQL error but a client
# error with its code (tests/fuzz/checks.py). The server runs on loopback with a fresh embedded store; a panic in
# its log fails the run too. Fixed seeds, a bounded number of examples and a time limit keep it bounded.
#   scripts/fuzz.sh [examples per operation, default 25]
set -euo pipefail
cd "$(dirname "$0")/.."

examples=${1:-25}
venv="$PWD/target/tools/fuzz-venv"
if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "installing schemathesis into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==4.32.5"
fi

cargo build --quiet --locked --bin component-repository
work=$(mktemp -d)
log="$work/server.log"
target/debug/component-repository serve --bind 127.0.0.1:0 --data-dir "$work/data" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  address=$(sed -n 's/.*listening.*address=\([0-9.:]*\).*/\1/p' "$log" | head -1)
  [ -n "$address" ] && break
  sleep 0.1
done
[ -n "$address" ] || { cat "$log"; echo "the server did not start" >&2; exit 1; }
echo "fuzzing http://$address ($examples examples per operation)"

run() {
  (cd tests/fuzz && SCHEMATHESIS_HOOKS=checks timeout 900 "$venv/bin/schemathesis" run "$@" \
    --checks no_server_fault --max-examples "$examples" --seed 20261125 --workers 1)
}
run "http://$address/openapi.json"
run "http://$address/graphql"

if grep -q "panicked" "$log"; then
  grep -n "panicked" "$log" >&2
  echo "the server panicked" >&2
  exit 1
fi
kill -0 "$server" || { echo "the server died during the run" >&2; exit 1; }
echo "fuzz: no server fault"
