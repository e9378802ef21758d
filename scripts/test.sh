#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need (once), then `cargo test`.
# - curl, jq: the README tour (tests/readme.rs) runs its examples with them.
# - nx-27017 (PyPI): a MongoDB-wire server, so the MongoDB backend's contract suite runs without a MongoDB server.
#   With MONGODB_URI set, the suite runs against that server instead.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

NX_VERSION=0.8.1
tools=target/tools

missing=()
for tool in curl jq; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "warning: ${missing[*]} missing and not root: the README tour test will fail" >&2
  fi
fi

if [ -z "${MONGODB_URI:-}" ] && [ ! -x "$tools/nx-27017/bin/nx-27017" ]; then
  echo "installing nx-27017 $NX_VERSION into $tools/nx-27017"
  python3 -m venv "$tools/nx-27017"
  "$tools/nx-27017/bin/pip" install --quiet --disable-pip-version-check "nx-27017==$NX_VERSION"
fi
if [ -z "${MONGODB_URI:-}" ]; then
  export NX_27017="$PWD/$tools/nx-27017/bin/nx-27017"
fi

exec cargo test "$@"
