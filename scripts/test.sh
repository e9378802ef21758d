#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need (once), then `cargo test`.
# - curl, jq, openssl: the README tour (tests/readme.rs) runs its examples with them.
# - nx-27017 (PyPI): a MongoDB-wire server, so the MongoDB backend's contract suite runs without a MongoDB server.
#   With MONGODB_URI set, the suite runs against that server instead.
# - oras (PyPI, oras-py) and skopeo (Debian): the OCI clients the registry tests (tests/oci.rs, tests/contract/oci.rs)
#   pull with.
# - tuspy (PyPI) and tus-js-client (npm): the tus clients the resumable-upload tests (tests/tus.rs) drive.
# - model-signing (PyPI, OpenSSF Model Signing; pyopenssl, which its `sign certificate` imports): the signing
#   client the signature tests (tests/signing.rs and the API tests through testkit::signing) sign with.
# - chromium (Debian) and node_modules (npm: playwright-core, axe-core among them): the browser tests of the
#   playground, the catalogue and /docs (tests/playground.rs, tests/ui.rs). The repository has one npm root
#   (package.json, package-lock.json): `playground/build.sh --check` installs it and proves the embedded browser
#   files (playground/assets, ui/vendor) match the lock file.
# - `node --check` over our own browser JavaScript (ui/, playground/, tests/tus/): a syntax error fails here, not in
#   a user's browser.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

NX_VERSION=0.8.1
TUSPY_VERSION=1.1.0
ORAS_VERSION=0.2.43
MODEL_SIGNING_VERSION=1.1.1
tools=target/tools

missing=()
for tool in curl jq openssl skopeo; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "warning: ${missing[*]} missing and not root: the tests that need them will fail or say SKIPPED" >&2
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

if [ ! -x "$tools/tuspy/bin/python" ] || ! "$tools/tuspy/bin/pip" show -q tuspy >/dev/null 2>&1; then
  echo "installing tuspy $TUSPY_VERSION into $tools/tuspy"
  python3 -m venv "$tools/tuspy"
  "$tools/tuspy/bin/pip" install --quiet --disable-pip-version-check "tuspy==$TUSPY_VERSION"
fi
export TUSPY_PYTHON="$PWD/$tools/tuspy/bin/python"

if [ ! -x "$tools/oras/bin/python" ] || ! "$tools/oras/bin/pip" show -q oras >/dev/null 2>&1; then
  echo "installing oras $ORAS_VERSION into $tools/oras"
  python3 -m venv "$tools/oras"
  "$tools/oras/bin/pip" install --quiet --disable-pip-version-check "oras==$ORAS_VERSION"
fi
export ORAS_PYTHON="$PWD/$tools/oras/bin/python"

if [ ! -x "$tools/model-signing/bin/model_signing" ] || ! "$tools/model-signing/bin/pip" show -q pyopenssl >/dev/null 2>&1; then
  echo "installing model-signing $MODEL_SIGNING_VERSION into $tools/model-signing"
  python3 -m venv "$tools/model-signing"
  "$tools/model-signing/bin/pip" install --quiet --disable-pip-version-check \
    "model-signing==$MODEL_SIGNING_VERSION" pyopenssl
fi
export MODEL_SIGNING_BIN="$PWD/$tools/model-signing/bin/model_signing"

if command -v npm >/dev/null 2>&1; then
  playground/build.sh --check
else
  echo "warning: npm missing: the browser tests will say SKIPPED" >&2
fi

if command -v node >/dev/null 2>&1; then
  for file in ui/*.js playground/*.js playground/test/*.mjs tests/tus/*.mjs; do
    # Node 20 passes any syntax in a .js file that looks like a module (it would run it as one, undecided at
    # --check): ES modules are checked as modules from stdin, classic scripts as they are.
    if [[ "$file" == *.js ]] && grep -qE '^(import|export) ' "$file"; then
      node --check --input-type=module <"$file" || { echo "syntax error in $file" >&2; exit 1; }
    else
      node --check "$file"
    fi
  done
else
  echo "warning: node missing: our browser JavaScript is not checked" >&2
fi
export CHROMIUM=/usr/bin/chromium

exec cargo test "$@"
