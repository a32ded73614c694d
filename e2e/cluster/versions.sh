# Versions of the local control plane, read from the pinned go.mod (the single place they live),
# and the cache folder they build into. Sourced by build.sh and up.sh.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
gomod="$here/gobuild/go.mod"
K8S_VERSION=$(awk '$1=="k8s.io/kubernetes"{print $2; exit}' "$gomod")
KWOK_VERSION=$(awk '$1=="sigs.k8s.io/kwok"{print $2; exit}' "$gomod")
ETCD_VERSION=$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2; exit}' "$gomod")
# go.sum pins every transitive module: any change there means a different build.
SUM=$(cat "$gomod" "$here/gobuild/go.sum" "$here/../kstatus/go.sum" "$here/../kstatus/main.go" | sha256sum | cut -c1-10)
TMO_CACHE=${TMO_CACHE:-$HOME/.cache/tmo}
CLUSTER_BIN="$TMO_CACHE/k8s-$K8S_VERSION-kwok-$KWOK_VERSION-etcd-$ETCD_VERSION-$SUM/bin"
CLUSTER_BINARIES="etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kstatus"
export K8S_VERSION KWOK_VERSION ETCD_VERSION TMO_CACHE CLUSTER_BIN CLUSTER_BINARIES
# The third-party CRDs (crds.sh): named by the pins that choose them.
THIRD_PARTY_CRDS="$TMO_CACHE/third-party-crds-$(cat "$here/thirdparty/go.mod" "$here/thirdparty/go.sum" "$here/crds.sh" | sha256sum | cut -c1-10)"
export THIRD_PARTY_CRDS
