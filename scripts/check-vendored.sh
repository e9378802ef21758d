#!/usr/bin/env bash
# Proves that vendor/hyper is hyper as published on crates.io with vendor/hyper.patch applied, and nothing else:
# fetches the same version through cargo (the configured registry), applies the patch, and compares the trees.
# To move to a new hyper: copy its crate source over vendor/hyper, apply the patch, run this.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' vendor/hyper/Cargo.toml | head -n 1)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

mkdir -p "$scratch/fetch/src"
echo 'fn main() {}' >"$scratch/fetch/src/main.rs"
cat >"$scratch/fetch/Cargo.toml" <<EOF
[package]
name = "hyper-as-published"
version = "0.0.0"
edition = "2021"

[dependencies]
hyper = "=$version"
EOF
published=$(cargo metadata --quiet --format-version 1 --manifest-path "$scratch/fetch/Cargo.toml" |
  python3 -c 'import json, os, sys
print(next(os.path.dirname(p["manifest_path"]) for p in json.load(sys.stdin)["packages"] if p["name"] == "hyper"))')

cp -r "$published" "$scratch/hyper"
patch --quiet --directory "$scratch/hyper" -p1 <vendor/hyper.patch
if ! diff -r --exclude=.cargo-ok "$scratch/hyper" vendor/hyper; then
  echo "vendor/hyper is not hyper $version with vendor/hyper.patch applied" >&2
  exit 1
fi
echo "vendor/hyper: hyper $version as published, plus vendor/hyper.patch"
