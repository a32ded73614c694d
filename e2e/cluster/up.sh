#!/usr/bin/env bash
# Starts the local control plane: etcd, kube-apiserver (authorization Node,RBAC),
# kube-controller-manager, kube-scheduler and kwok (fake nodes whose pods turn Running/Ready
# without a kubelet), on free loopback ports, with freshly generated certificates.
# Writes an admin kubeconfig to .cluster/kubeconfig and returns once /readyz is ok, the nodes are
# Ready and the third-party CRDs (KEDA, Gateway API, Prometheus Operator) are Established.
# Idempotent: returns at once when the cluster is already up.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$here/versions.sh"
state="$repo/.cluster"
kc="$state/kubeconfig"
K="$CLUSTER_BIN/kubectl"

all_alive() {
  local n=0
  for f in "$state"/pids/*; do [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null || return 1; n=$((n+1)); done
  [ "$n" = 5 ]
}
if [ -f "$kc" ] && all_alive && "$K" --kubeconfig "$kc" get --raw /readyz >/dev/null 2>&1; then
  echo "$CLUSTER_BIN" > "$state/bindir"  # the tools of the current build, even if it changed
  echo ">> local control plane already up: KUBECONFIG=$kc"
  exit 0
fi
# Leftovers from a crashed run: stop them and start clean.
[ -d "$state" ] && "$here/down.sh" >/dev/null 2>&1 || true

"$here/build.sh"
# The third-party CRDs, from their pinned upstream modules (TMO_THIRD_PARTY_CRDS overrides).
[ -n "${TMO_THIRD_PARTY_CRDS:-}" ] || "$here/crds.sh"
# Any failure from here on stops what was started: no half-up cluster left behind.
trap 'echo "error: cluster-up failed; logs in $state/logs" >&2; "$here/down.sh" >/dev/null 2>&1 || true' ERR
t_start=$(date +%s.%N)
mkdir -p "$state"/{pki,pids,logs,etcd}
echo "$CLUSTER_BIN" > "$state/bindir"
pki="$state/pki"

# --- free loopback ports (never fixed ones: other processes may hold them) ---
read -r P_ETCD P_PEER P_API P_KCM P_SCHED P_KWOK < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
PY
)

# --- certificates: a CA, the API server's serving cert, one client cert per component ---
ossl() { openssl "$@" >/dev/null 2>&1; }
ossl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=tmo-local-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt"
cat > "$pki/san.cnf" <<CNF
[ext]
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.0.0.1
extendedKeyUsage=serverAuth
CNF
ossl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr"
ossl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 3650 -extfile "$pki/san.cnf" -extensions ext -out "$pki/apiserver.crt"
client_cert() { # name CN O
  ossl req -newkey rsa:2048 -nodes -subj "/CN=$2${3:+/O=$3}" -keyout "$pki/$1.key" -out "$pki/$1.csr"
  ossl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 3650 -out "$pki/$1.crt"
}
client_cert admin tmo-admin system:masters
client_cert controller-manager system:kube-controller-manager
client_cert scheduler system:kube-scheduler
client_cert kwok tmo-kwok system:masters
ossl genrsa -out "$pki/sa.key" 2048
ossl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

kubeconfig() { # file user
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: tmo-local
  cluster: {server: "https://127.0.0.1:$P_API", certificate-authority: "$pki/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$pki/$2.crt", client-key: "$pki/$2.key"}
contexts:
- name: tmo-local
  context: {cluster: tmo-local, user: $2, namespace: default}
current-context: tmo-local
KC
}
kubeconfig "$kc" admin
kubeconfig "$state/kubeconfig.controller-manager" controller-manager
kubeconfig "$state/kubeconfig.scheduler" scheduler
kubeconfig "$state/kubeconfig.kwok" kwok

start() { # name args...
  local name=$1; shift
  setsid "$@" >"$state/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$state/pids/$name"
}
fail() {
  echo "error: $1 — last lines of its log ($state/logs/$2.log):" >&2
  tail -n 20 "$state/logs/$2.log" >&2 || true
  "$here/down.sh" >/dev/null 2>&1 || true
  exit 1
}
wait_until() { # what log seconds command...
  local what=$1 log=$2 secs=$3; shift 3
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    kill -0 "$(cat "$state/pids/$log")" 2>/dev/null || fail "$what exited" "$log"
    [ "$(date +%s)" -lt "$deadline" ] || fail "$what not ready after ${secs}s" "$log"
    sleep 0.2
  done
}

echo ">> starting the local control plane (Kubernetes $K8S_VERSION) on 127.0.0.1"
start etcd "$CLUSTER_BIN/etcd" --name tmo --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:$P_ETCD" --advertise-client-urls "http://127.0.0.1:$P_ETCD" \
  --listen-peer-urls "http://127.0.0.1:$P_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$P_PEER" \
  --initial-cluster "tmo=http://127.0.0.1:$P_PEER" --unsafe-no-fsync --log-level warn
wait_until etcd etcd 30 curl -sf "http://127.0.0.1:$P_ETCD/health"

start kube-apiserver "$CLUSTER_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$P_ETCD" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$P_API" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --authorization-mode Node,RBAC --service-cluster-ip-range 10.0.0.0/16 \
  --endpoint-reconciler-type none --allow-privileged=true --cert-dir "$pki/apiserver-certs" \
  --v 1
wait_until kube-apiserver kube-apiserver 90 "$K" --kubeconfig "$kc" get --raw /readyz

start kube-controller-manager "$CLUSTER_BIN/kube-controller-manager" \
  --kubeconfig "$state/kubeconfig.controller-manager" \
  --authentication-kubeconfig "$state/kubeconfig.controller-manager" \
  --authorization-kubeconfig "$state/kubeconfig.controller-manager" \
  --bind-address 127.0.0.1 --secure-port "$P_KCM" --leader-elect=false \
  --use-service-account-credentials=true \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route' --v 1
start kube-scheduler "$CLUSTER_BIN/kube-scheduler" \
  --kubeconfig "$state/kubeconfig.scheduler" \
  --authentication-kubeconfig "$state/kubeconfig.scheduler" \
  --authorization-kubeconfig "$state/kubeconfig.scheduler" \
  --bind-address 127.0.0.1 --secure-port "$P_SCHED" --leader-elect=false --v 1
# kwok plays the kubelet for nodes annotated kwok.x-k8s.io/node=fake: it marks them Ready and
# moves their pods through Pending -> Running -> Ready.
start kwok "$CLUSTER_BIN/kwok" --kubeconfig "$state/kubeconfig.kwok" \
  --config "$CLUSTER_BIN/kwok-stages.yaml" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --cidr 10.64.0.0/16 --node-ip 10.63.0.1 \
  --server-address "127.0.0.1:$P_KWOK" --node-lease-duration-seconds 40
wait_until kube-controller-manager kube-controller-manager 60 curl -skf "https://127.0.0.1:$P_KCM/healthz"
wait_until kube-scheduler kube-scheduler 60 curl -skf "https://127.0.0.1:$P_SCHED/healthz"

# --- fake nodes: 3 CPU nodes, one of them also with GPUs ---
for i in 0 1 2; do
  gpu=""; [ "$i" = 2 ] && gpu='"nvidia.com/gpu": "8",'
  cat <<NODE
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64$( [ "$i" = 2 ] && echo ", nvidia.com/gpu.present: \"true\"" )}
status:
  allocatable: {$gpu cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {$gpu cpu: "32", memory: 256Gi, pods: "110"}
---
NODE
done | "$K" --kubeconfig "$kc" apply -f - >/dev/null

# --- third-party CRDs: every child object TMO creates is checked by its real schema ---
shared_crds="${TMO_THIRD_PARTY_CRDS:-$THIRD_PARTY_CRDS}"
if [ ! -d "$shared_crds/keda" ]; then
  echo "error: third-party CRDs not found at $shared_crds" >&2
  "$here/down.sh" >/dev/null 2>&1 || true; exit 1
fi
"$K" --kubeconfig "$kc" apply --server-side -f "$shared_crds/keda" -f "$shared_crds/gateway-api" \
  -f "$shared_crds/prometheus-operator" >/dev/null
"$K" --kubeconfig "$kc" wait --for condition=Established crd --all --timeout 60s >/dev/null
"$K" --kubeconfig "$kc" wait --for condition=Ready node --all --timeout 60s >/dev/null
# Pods need the namespace's default ServiceAccount; it appears once the controller runs.
wait_until "default ServiceAccount" kube-controller-manager 60 "$K" --kubeconfig "$kc" get serviceaccount default

trap - ERR
secs=$(python3 -c "import time; print(f'{time.time() - $t_start:.1f}')")
echo ">> local control plane up in ${secs}s: $("$K" --kubeconfig "$kc" get nodes --no-headers | wc -l) kwok nodes Ready"
echo "   export KUBECONFIG=$kc   (kubectl $K8S_VERSION: $K)"
