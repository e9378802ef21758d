#!/usr/bin/env bash
# Builds the release binary: the one command both CI (natively) and docker/Dockerfile run, so the image is built
# exactly as what CI tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin component-repository
