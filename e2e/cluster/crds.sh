#!/usr/bin/env bash
# Fetches the third-party CRDs whose objects TMO creates (KEDA, Gateway API standard channel,
# Prometheus Operator), and those of the GitOps tools that deploy TMO (Argo CD's Application and
# AppProject, Flux's source-controller kinds and Kustomization: examples/gitops/,
# e2e/test_gitops.py), from their upstream Go modules, pinned in thirdparty/go.mod and verified
# against thirdparty/go.sum, into $THIRD_PARTY_CRDS in the cache (outside the clone). up.sh
# installs the first three; the GitOps ones are installed by the tests that use them.
# Unmodified upstream files; all five projects are Apache-2.0. A no-op when already there.
set -euo pipefail
# shellcheck source=SCRIPTDIR/versions.sh
source "$(dirname "$0")/versions.sh"

[ -f "$THIRD_PARTY_CRDS/.complete" ] && exit 0
command -v go >/dev/null || { echo "error: Go is not installed (needed to fetch the third-party CRDs)" >&2; exit 1; }
echo ">> fetching third-party CRDs (KEDA, Gateway API, Prometheus Operator, Argo CD, Flux) into $THIRD_PARTY_CRDS"
mod="$(cd "$(dirname "$0")" && pwd)/thirdparty"
tmp="$THIRD_PARTY_CRDS.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
# -mod=readonly: a module whose hash is not in go.sum is an error, not a silent update.
dir_of() { (cd "$mod" && GOFLAGS=-mod=readonly go mod download -json "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d.get("Error")) if d.get("Error") else print(d["Dir"])'); }
copy() {  # copy DEST_FOLDER MODULE PATH_IN_MODULE FILE...
  local dest=$1 src; src="$(dir_of "$2")/$3"; shift 3
  mkdir -p "$tmp/$dest"
  for f in "$@"; do cp "$src/$f" "$tmp/$dest/$f"; chmod 644 "$tmp/$dest/$f"; done
}
copy keda github.com/kedacore/keda/v2 config/crd/bases \
  keda.sh_scaledobjects.yaml keda.sh_triggerauthentications.yaml keda.sh_clustertriggerauthentications.yaml
copy gateway-api sigs.k8s.io/gateway-api config/crd/standard \
  gateway.networking.k8s.io_gatewayclasses.yaml gateway.networking.k8s.io_gateways.yaml \
  gateway.networking.k8s.io_httproutes.yaml gateway.networking.k8s.io_grpcroutes.yaml \
  gateway.networking.k8s.io_referencegrants.yaml
copy prometheus-operator github.com/prometheus-operator/prometheus-operator example/prometheus-operator-crd \
  monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_podmonitors.yaml \
  monitoring.coreos.com_prometheusrules.yaml
copy argocd github.com/argoproj/argo-cd/v3 manifests/crds \
  application-crd.yaml applicationset-crd.yaml appproject-crd.yaml
# All of source-controller's kinds: it refuses to start while one of them is missing.
copy flux github.com/fluxcd/source-controller config/crd/bases \
  source.toolkit.fluxcd.io_gitrepositories.yaml source.toolkit.fluxcd.io_ocirepositories.yaml \
  source.toolkit.fluxcd.io_helmrepositories.yaml source.toolkit.fluxcd.io_helmcharts.yaml \
  source.toolkit.fluxcd.io_buckets.yaml source.toolkit.fluxcd.io_externalartifacts.yaml
copy flux github.com/fluxcd/kustomize-controller config/crd/bases \
  kustomize.toolkit.fluxcd.io_kustomizations.yaml
touch "$tmp/.complete"
rm -rf "$THIRD_PARTY_CRDS"; mkdir -p "$(dirname "$THIRD_PARTY_CRDS")"; mv "$tmp" "$THIRD_PARTY_CRDS"; trap - EXIT
for old in "$TMO_CACHE"/third-party-crds-*; do
  [ "$old" = "$THIRD_PARTY_CRDS" ] || rm -rf "$old"
done
echo ">> third-party CRDs ready: $(find "$THIRD_PARTY_CRDS" -name '*.yaml' | wc -l) files"
