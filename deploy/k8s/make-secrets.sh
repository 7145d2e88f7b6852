#!/usr/bin/env bash
# Create (or update) the Secrets the manifests reference, from the files
# `alphaswarm auth make-secrets deploy/secrets` made. No secret value is ever written to a
# manifest or to this repository: the files stay in deploy/secrets/ (git-ignored) and go
# straight to the cluster.
#
#   deploy/k8s/make-secrets.sh [SECRETS_DIR] [NAMESPACE]      # defaults: deploy/secrets alphaswarm
set -euo pipefail
dir=${1:-deploy/secrets}
ns=${2:-alphaswarm}
kubectl=${KUBECTL:-kubectl}

apply() { "$kubectl" -n "$ns" create secret generic "$@" --dry-run=client -o yaml | "$kubectl" apply -f -; }

"$kubectl" get namespace "$ns" >/dev/null 2>&1 || "$kubectl" create namespace "$ns"
apply alphaswarm-database --from-file=postgres_password="$dir/postgres_password"
apply alphaswarm-admin-token --from-file=admin_token="$dir/admin_token"
for svc in gateway trainer registry backtester persistence; do
  apply "alphaswarm-tls-$svc" --from-file=ca.pem="$dir/certs/ca.pem" \
    --from-file=tls.pem="$dir/certs/$svc.pem" --from-file=tls.key="$dir/certs/$svc.key"
done
# Every registry replica signs and verifies model artifacts with this one key (docs/security.md).
if [ ! -f "$dir/registry_signing_key" ]; then
  (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(64))' >"$dir/registry_signing_key")
fi
apply alphaswarm-registry-signing-key --from-file=signing.key="$dir/registry_signing_key"
