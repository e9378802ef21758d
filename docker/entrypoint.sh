#!/bin/sh
# Seeds a new deployment from a dump archive when REPOSITORY_SEED_ARCHIVE names one (replacing the original's
# mongorestore seeding): `restore --if-empty` restores into an empty store and leaves a used one alone, so this is
# safe at every start. Then runs the given subcommand (`serve` by default).
set -eu
if [ -n "${REPOSITORY_SEED_ARCHIVE:-}" ] && [ "${1:-serve}" = "serve" ]; then
  component-repository restore --if-empty --in "$REPOSITORY_SEED_ARCHIVE"
fi
exec component-repository "$@"
