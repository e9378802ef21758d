#!/usr/bin/env bash
# Rebuilds the third-party browser files the server embeds from the npm registry, exactly the versions locked in
# the repository's one npm root (package.json, package-lock.json; its node_modules also serves the browser and tus
# tests): GraphiQL for the playground (playground/assets), Preact, htm, tus-js-client and Swagger UI for
# the web catalogue and /docs (ui/vendor). The Rust build never runs npm: it embeds the committed files.
#   playground/build.sh           refresh the assets (after changing versions in package.json: npm install first)
#   playground/build.sh --check   fail when the committed assets differ from what the lock file gives
set -euo pipefail
cd "$(dirname "$0")/.."

npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

# source in node_modules -> committed file (relative to the repository)
files=(
  "graphiql/graphiql.min.js playground/assets/graphiql.min.js"
  "graphiql/graphiql.min.css playground/assets/graphiql.min.css"
  "react/umd/react.production.min.js playground/assets/react.production.min.js"
  "react-dom/umd/react-dom.production.min.js playground/assets/react-dom.production.min.js"
  "graphiql/LICENSE playground/assets/LICENSE.graphiql"
  "react/LICENSE playground/assets/LICENSE.react"
  "react-dom/LICENSE playground/assets/LICENSE.react-dom"
  "preact/dist/preact.mjs ui/vendor/preact.mjs"
  "preact/hooks/dist/hooks.mjs ui/vendor/preact-hooks.mjs"
  "htm/dist/htm.mjs ui/vendor/htm.mjs"
  "swagger-ui-dist/swagger-ui-bundle.js ui/vendor/swagger-ui-bundle.js"
  "swagger-ui-dist/swagger-ui.css ui/vendor/swagger-ui.css"
  "preact/LICENSE ui/vendor/LICENSE.preact"
  "htm/LICENSE ui/vendor/LICENSE.htm"
  "swagger-ui-dist/LICENSE ui/vendor/LICENSE.swagger-ui"
  "swagger-ui-dist/NOTICE ui/vendor/NOTICE.swagger-ui"
  "tus-js-client/dist/tus.min.js ui/vendor/tus.min.js"
  "tus-js-client/LICENSE ui/vendor/LICENSE.tus-js-client"
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
    if ! cmp -s "$content" "$name"; then
      echo "$name differs from $source of the locked version: run playground/build.sh" >&2
      status=1
    fi
    rm -f "$content"
  else
    mkdir -p "$(dirname "$name")"
    mv "$content" "$name"
    chmod 644 "$name"
  fi
done
exit $status
