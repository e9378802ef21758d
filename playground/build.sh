#!/usr/bin/env bash
# Rebuilds playground/assets, the GraphiQL files the server embeds, from the npm registry: exactly the versions
# locked in package-lock.json. The Rust build never runs npm: it embeds the committed assets.
#   playground/build.sh           refresh the assets (after changing versions in package.json: npm install first)
#   playground/build.sh --check   fail when the committed assets differ from what the lock file gives
set -euo pipefail
cd "$(dirname "$0")"

npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

# source in node_modules -> name in assets/
files=(
  "graphiql/graphiql.min.js graphiql.min.js"
  "graphiql/graphiql.min.css graphiql.min.css"
  "react/umd/react.production.min.js react.production.min.js"
  "react-dom/umd/react-dom.production.min.js react-dom.production.min.js"
  "graphiql/LICENSE LICENSE.graphiql"
  "react/LICENSE LICENSE.react"
  "react-dom/LICENSE LICENSE.react-dom"
)

check=false
[ "${1:-}" = "--check" ] && check=true
status=0
for pair in "${files[@]}"; do
  read -r source name <<<"$pair"
  # Source-map comments would make browsers' developer tools ask the server for maps it does not ship.
  content=$(mktemp)
  sed '/^\/[*\/]# sourceMappingURL=/d' "node_modules/$source" >"$content"
  if $check; then
    if ! cmp -s "$content" "assets/$name"; then
      echo "assets/$name differs from $source of the locked version: run playground/build.sh" >&2
      status=1
    fi
    rm -f "$content"
  else
    mv "$content" "assets/$name"
    chmod 644 "assets/$name"
  fi
done
exit $status
