#!/usr/bin/env bash
# Builds the local control plane from the official Go modules pinned in gobuild/go.mod:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kwok, plus the
# kstatus reader (e2e/kstatus) that checks TMO status the way Flux does.
# Output: $TMO_CACHE/k8s-<version>-.../bin, outside the clone. A no-op when already built.
set -euo pipefail
source "$(dirname "$0")/versions.sh"

missing=""
for b in $CLUSTER_BINARIES; do [ -x "$CLUSTER_BIN/$b" ] || missing="$missing $b"; done
[ -f "$CLUSTER_BIN/kwok-stages.yaml" ] || missing="$missing kwok-stages.yaml"
if [ -z "$missing" ]; then
  exit 0
fi

command -v go >/dev/null || { echo "error: Go is not installed (need go >= 1.26 to build Kubernetes $K8S_VERSION)" >&2; exit 1; }
gov=$(go env GOVERSION | sed 's/^go//')
if [ "$(printf '%s\n1.26\n' "$gov" | sort -V | head -1)" != "1.26" ]; then
  echo "error: go $gov is too old: Kubernetes $K8S_VERSION needs go >= 1.26" >&2; exit 1
fi

echo ">> building the local control plane (Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION)"
echo "   missing:$missing"
echo "   into $CLUSTER_BIN — the first build takes 15-30 minutes on 2 cores; later runs reuse it"
start=$(date +%s)
tmp="$CLUSTER_BIN.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
gobuild="$(cd "$(dirname "$0")" && pwd)/gobuild"
kstatus_dir="$(cd "$(dirname "$0")/../kstatus" && pwd)"
declare -A pkg=(
  [etcd]=go.etcd.io/etcd/server/v3
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
  [kubectl]=k8s.io/kubernetes/cmd/kubectl
  [kwok]=sigs.k8s.io/kwok/cmd/kwok
  [kstatus]=tmo.dev/e2e/kstatus
)
for b in $CLUSTER_BINARIES; do
  if [ -x "$CLUSTER_BIN/$b" ]; then cp "$CLUSTER_BIN/$b" "$tmp/$b"; continue; fi
  t0=$(date +%s)
  echo "   go build $b ..."
  # -trimpath/-s -w: smaller binaries; the shared Go build cache makes the later ones faster.
  dir=$gobuild; [ "$b" = kstatus ] && dir=$kstatus_dir  # Flux's status reader, own module
  (cd "$dir" && go build -trimpath -ldflags="-s -w" -o "$tmp/$b" "${pkg[$b]}")
  echo "   built $b in $(( $(date +%s) - t0 ))s"
done
# kwok does nothing without Stages. Its release ships "fast" ones (nodes Ready at once with
# lease heartbeats; pods Running/Ready at once, deleted pods removed): take them from the same
# pinned module, so they always match the kwok binary.
kwok_src=$(cd "$gobuild" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
for f in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
         pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
  cat "$kwok_src/kustomize/stage/$f.yaml"; echo "---"
done > "$tmp/kwok-stages.yaml"
mkdir -p "$(dirname "$CLUSTER_BIN")"
rm -rf "$CLUSTER_BIN"; mv "$tmp" "$CLUSTER_BIN"; trap - EXIT
# Older builds (other versions or go.sum) are dead weight: ~450 MB each.
for old in "$TMO_CACHE"/k8s-*; do
  [ "$old" = "$(dirname "$CLUSTER_BIN")" ] || rm -rf "$old"
done
echo ">> control plane built in $(( $(date +%s) - start ))s: $(du -sh "$CLUSTER_BIN" | cut -f1) in $CLUSTER_BIN"
