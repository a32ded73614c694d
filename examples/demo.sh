#!/usr/bin/env bash
# `make demo`: TMO end to end on this one machine, for real — everything that works so far.
#   1. a real Kubernetes control plane (built from source, kwok nodes) with TMO's CRDs
#   2. bad manifests refused, offline (`tmo validate`) and by the API server itself
#   3. the operator turns a TransformerModel into a served, autoscaled, monitored model
#   4. a model developer serves tiny models locally with `tmo serve` and calls them the ways
#      people do: curl habits, OIP v2, the OpenAI client (streaming); attention as a heat map
#   5. Rollouts: a harmless change promoted step by step, a slow one rolled back by itself,
#      a subtler one rolled back by the mannWhitney judge (canary against stable), a report PNG,
#      judged by a real Prometheus on real traffic to real model servers
#   6. two operator replicas with leader election: kill -9 the leader, the standby takes over
# Run it through `make demo` (which sets up the venv, Debian packages and the cluster build).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export PATH="$repo/.venv/bin:$(cat .cluster/bindir 2>/dev/null || true):$PATH"
work=$(mktemp -d /tmp/tmo-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${started_cluster:-0}" = 1 ] && [ -z "${TMO_DEMO_KEEP:-}" ]; then e2e/cluster/down.sh; fi
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n\033[1;34m=== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*" >&2; "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "1. Local Kubernetes control plane (kube-apiserver, controller-manager, scheduler, etcd, kwok)"
[ -f .cluster/kubeconfig ] || started_cluster=1
e2e/cluster/up.sh
export PATH="$(cat .cluster/bindir):$PATH" KUBECONFIG="$repo/.cluster/kubeconfig"
run kubectl get nodes -o wide
run tmo crds > "$work/crds.yaml"
run kubectl apply --server-side -f "$work/crds.yaml"
run kubectl wait --for condition=Established crd/transformermodels.tmo.dev crd/rollouts.tmo.dev
# A fresh namespace each run, so the demo can be repeated on a cluster that stays up.
kubectl delete namespace ml --ignore-not-found --timeout 60s >/dev/null 2>&1 || true
kubectl create namespace ml >/dev/null

step "2. Bad input is refused with a message that names the field"
cat > "$work/bad.yaml" <<'YAML'
apiVersion: tmo.dev/v1alpha1
kind: TransformerModel
metadata: {name: broken, namespace: ml}
spec:
  task: text-classification
  model: {uri: "ftp://models/x", format: huggingface}
  scaling: {minReplicas: 5, maxReplicas: 2}
YAML
run tmo validate -f "$work/bad.yaml" || true
run kubectl apply -f "$work/bad.yaml" || true
run tmo validate -f examples/*.yaml

step "3. The operator: kubectl apply a TransformerModel -> served, autoscaled, monitored"
tmo operator --kubeconfig "$KUBECONFIG" --log-format plain > "$work/operator.log" 2>&1 &
pids+=($!)
echo "(operator running as pid $!, log: $work/operator.log)"
kubectl -n ml create secret generic s3-creds --from-literal=AWS_ACCESS_KEY_ID=demo \
  --from-literal=AWS_SECRET_ACCESS_KEY=demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n ml delete secret email-triage-token --ignore-not-found >/dev/null
# Only the TransformerModel here: its s3:// model cannot run on this machine. Step 5 shows a
# Rollout with a model that really serves.
python3 - <<'PY' > "$work/email-triage.yaml"
import yaml
docs = [d for d in yaml.safe_load_all(open("examples/email-triage.yaml")) if d and d["kind"] == "TransformerModel"]
print(yaml.safe_dump_all(docs))
PY
run kubectl -n ml apply -f "$work/email-triage.yaml"
echo "The token Secret named in spec.auth does not exist yet: the model must say so, not crash."
for _ in $(seq 60); do
  r=$(kubectl -n ml get tm email-triage -o jsonpath='{.status.conditions[?(@.type=="Stalled")].reason}' 2>/dev/null || true)
  [ -n "$r" ] && break; sleep 1
done
run kubectl -n ml get tm email-triage -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
run kubectl -n ml create secret generic email-triage-token --from-literal=token=s3cr3t-demo-token
run kubectl -n ml wait --for condition=Ready tm/email-triage --timeout 120s
run kubectl -n ml get tm
run kubectl -n ml get deployments,services,configmaps,scaledobjects,prometheusrules,servicemonitors,networkpolicies,httproutes -l app.kubernetes.io/part-of=tmo
run kubectl -n ml get pods -o wide
echo "Scaling changes do not make a new revision; the ScaledObject follows:"
run kubectl -n ml patch tm email-triage --type merge -p '{"spec":{"scaling":{"maxReplicas":20}}}'
sleep 3
run kubectl -n ml get scaledobject -o jsonpath='{range .items[*]}{.metadata.name}: min={.spec.minReplicaCount} max={.spec.maxReplicaCount}{"\n"}{end}'
run kubectl -n ml get tm email-triage
echo "A hand edit of a child is undone: the TransformerModel is the source of truth."
dep=$(kubectl -n ml get deployments -l tmo.dev/model=email-triage -o jsonpath='{.items[0].metadata.name}')
run kubectl -n ml set image "deployment/$dep" gateway=evil:latest
for _ in $(seq 30); do
  img=$(kubectl -n ml get deployment "$dep" -o jsonpath='{.spec.template.spec.containers[?(@.name=="gateway")].image}')
  [ "$img" != "evil:latest" ] && break; sleep 1
done
run kubectl -n ml get deployment "$dep" -o jsonpath='{range .spec.template.spec.containers[*]}{.name}: {.image}{"\n"}{end}'
run kubectl -n ml get events --field-selector reason=ChildReverted -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message

step "4. A model developer serves tiny random-weight models locally with 'tmo serve'"
run tmo dev tiny-model --task text-classification --out examples/local/tiny-models/text-classification
run tmo dev tiny-model --task text-generation --out examples/local/tiny-models/text-generation
echo "s3cr3t-local" > "$work/token"
port=$(free_port); mport=$(free_port)
tmo serve -f examples/local/text-classification.yaml -f examples/local/text-generation.yaml \
  --port "$port" --metrics-port "$mport" --token-file "$work/token" > "$work/serve.log" 2>&1 &
pids+=($!)
echo "(tmo serve running as pid $!, log: $work/serve.log; waiting for TorchServe's workers)"
for _ in $(seq 180); do
  grep -q '^ready ' "$work/serve.log" && break
  kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
  sleep 1
done
grep -E '^(gateway|model|ready) ' "$work/serve.log"
url="http://127.0.0.1:$port"
auth="Authorization: Bearer s3cr3t-local"
echo "Without a token:"
run curl -s -o /dev/null -w "HTTP %{http_code}\n" -X POST "$url/predictions/tiny-text-classification" -d "hello"
echo "With the token: JSON, then curl's habit of plain -d text, then the Open Inference Protocol v2:"
run curl -s -H "$auth" -H "Content-Type: application/json" \
  "$url/predictions/tiny-text-classification" -d '{"inputs": "Invoice overdue, please pay today"}'
echo
run curl -s -H "$auth" "$url/predictions/tiny-text-classification" -d 'Invoice overdue, please pay today'
echo
run curl -s -H "$auth" -H "Content-Type: application/json" \
  "$url/v2/models/tiny-text-classification/infer" \
  -d '{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES","data":["Meeting moved to 3pm","You won a prize!!!"]}]}'
echo
echo "A client's mistake is that client's 400, saying what to send (never a 5xx for anyone):"
run curl -s -H "$auth" -H "Content-Type: application/json" \
  "$url/predictions/tiny-text-classification" -d '{"inputs": "x", "parameters": "oops"}'
echo
echo "The OpenAI API, with the official openai client (the bearer token is the API key), streaming:"
TMO_URL="$url" python3 - <<'PY'
import os
from openai import OpenAI
client = OpenAI(base_url=os.environ["TMO_URL"] + "/v1", api_key="s3cr3t-local")
print("models:", [m.id for m in client.models.list()])
stream = client.chat.completions.create(
    model="tiny-text-generation", messages=[{"role": "user", "content": "hello"}],
    max_tokens=12, stream=True, stream_options={"include_usage": True})
for chunk in stream:
    if chunk.choices:
        print(repr(chunk.choices[0].delta.content or ""), end=" ", flush=True)
    elif chunk.usage:
        print(f"\nusage: {chunk.usage.prompt_tokens} prompt + {chunk.usage.completion_tokens} completion tokens")
PY
echo "(a random-weight model: the words are noise; the API is what is shown)"
echo "Attention you can look at: tokens and the last layer's attention, drawn as a heat map:"
run tmo explain -f examples/local/text-classification.yaml --text "Invoice overdue, please pay today" \
  --out "$work/attention.png"
echo "What Prometheus and KEDA read from the gateway (client errors are 4xx, never 5xx):"
curl -s "http://127.0.0.1:$mport/metrics" | grep -E '^tmo_(inflight_requests|requests_total|memory_usage)' | head -8

step "5. Rollouts: every change goes live as a canary, judged by Prometheus"
echo "kwok's pods run nothing, so a local data plane plays kubelet and Gateway for namespace"
echo "'canary': a real 'tmo serve' per revision, a real Prometheus that scrapes them and evaluates"
echo "TMO's alert rules, and traffic split as the HTTPRoute's weights say (12 requests/s)."
kubectl delete namespace canary --ignore-not-found --timeout 60s >/dev/null 2>&1 || true
kubectl create namespace canary >/dev/null
python -m e2e.dataplane --namespace canary --workdir "$work/plane" --rps 12 > "$work/plane.log" 2>&1 &
pids+=($!)
for _ in $(seq 60); do [ -s "$work/plane/prometheus_url" ] && break; sleep 1; done
prom=$(cat "$work/plane/prometheus_url")
echo "The operator restarts with --prometheus-url $prom (Rollout analysis queries it), now as two"
echo "replicas with leader election (one leads, one stands by; step 6 kills the leader):"
kill -TERM "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
kubectl delete lease tmo-operator -n default --ignore-not-found >/dev/null
lease=(--leader-elect --leader-election-namespace default --lease-duration-seconds 6
       --lease-renew-deadline-seconds 4 --lease-retry-seconds 1)
metrics_a=$(free_port) metrics_b=$(free_port)
tmo operator --kubeconfig "$KUBECONFIG" --prometheus-url "$prom" --log-format plain \
  "${lease[@]}" --metrics-port "$metrics_a" >> "$work/operator.log" 2>&1 &
pids[0]=$!
for _ in $(seq 30); do kubectl -n default get lease tmo-operator >/dev/null 2>&1 && break; sleep 1; done
tmo operator --kubeconfig "$KUBECONFIG" --prometheus-url "$prom" --log-format plain \
  "${lease[@]}" --metrics-port "$metrics_b" > "$work/operator-b.log" 2>&1 &
pids+=($!)
standby=$!
model="$repo/examples/local/tiny-models/text-classification"
cat > "$work/triage.yaml" <<YAML
apiVersion: tmo.dev/v1alpha1
kind: TransformerModel
metadata: {name: triage, namespace: canary}
spec:
  task: text-classification
  model: {uri: "file://$model", format: huggingface}
  runtime: {workers: 1, batchSize: 4, maxBatchDelayMs: 5}
  scaling: {minReplicas: 2, maxReplicas: 4}
  monitoring: {latencyP99Ms: 1500, memoryUtilization: 0.95, errorRate: 0.05}
  route: {parentRefs: [{name: public-gw}], hostnames: [triage.example.com]}
---
apiVersion: tmo.dev/v1alpha1
kind: Rollout
metadata: {name: triage, namespace: canary}
spec:
  targetRef: {name: triage}
  strategy:
    canary:
      steps:
        - setWeight: 25
        - pause: {duration: 10s}
        - setWeight: 50
        - pause: {duration: 10s}
  analysis: {interval: 5s, minRequests: 10, failureLimit: 0}   # gates: spec.monitoring's
  traffic: {router: gatewayAPI}
YAML
run kubectl apply -f "$work/triage.yaml"
for _ in $(seq 60); do
  [ "$(kubectl -n canary get tmro triage -o jsonpath='{.status.phase}' 2>/dev/null)" = Idle ] && break; sleep 1
done
run kubectl -n canary get tm,tmro
echo "(waiting until Prometheus sees the stable revision answer requests)"
for _ in $(seq 180); do
  curl -sG "$prom/api/v1/query" --data-urlencode 'query=sum(tmo_requests_total{namespace="canary",code="200"}) > 20' | grep -q '"value"' && break
  sleep 1
done

echo; echo "Change 1, harmless (maxBatchDelayMs 5 -> 6): a canary that goes through every step."
run kubectl -n canary patch tm triage --type merge -p '{"spec":{"runtime":{"maxBatchDelayMs":6}}}'
run tmo rollout status triage -n canary --watch --timeout 400
run kubectl -n canary get tmro triage
run kubectl -n canary get httproute triage -o jsonpath='{range .spec.rules[0].backendRefs[*]}{.name}: {.weight}{"\n"}{end}'

echo; echo "Change 2, slow (TorchServe waits up to 3 s to fill a batch of 8): p99 breaks the"
echo "1500 ms gate, and the canary is rolled back by itself while stable keeps serving."
run kubectl -n canary patch tm triage --type merge -p '{"spec":{"runtime":{"batchSize":8,"maxBatchDelayMs":3000}}}'
run tmo rollout status triage -n canary --watch --timeout 400 || true
run kubectl -n canary get tmro triage
run kubectl -n canary get tmro triage -o jsonpath='{range .status.conditions[?(@.type=="Stalled")]}Stalled: {.reason}: {.message}{"\n"}{end}'
run kubectl -n canary get tm triage -o jsonpath='{range .status.conditions[?(@.type=="Stalled")]}model: {.reason}: {.message}{"\n"}{end}'
run kubectl -n canary get httproute triage -o jsonpath='{range .spec.rules[0].backendRefs[*]}{.name}: {.weight}{"\n"}{end}'
echo "The Rollout's Events:"
run kubectl -n canary get events --field-selector involvedObject.kind=Rollout --sort-by=.lastTimestamp -o custom-columns=REASON:.reason,MESSAGE:.message

echo; echo "Change 3, judged against stable (analysis.judge: mannWhitney). TorchServe now waits up"
echo "to 200 ms to fill a batch: p99 stays far below the 1500 ms threshold, which would let it"
echo "through, but the canary's requests are slower than stable's in the same seconds. A rank test"
echo "(Mann-Whitney U, its level spent over the looks) with a 10 % tolerance rolls it back."
run kubectl -n canary patch tmro triage --type merge -p '{"spec":{"analysis":{"judge":"mannWhitney","minRequests":20}}}'
run kubectl -n canary patch tm triage --type merge -p '{"spec":{"runtime":{"batchSize":8,"maxBatchDelayMs":200}}}'
run tmo rollout status triage -n canary --watch --timeout 400 || true
run kubectl -n canary get tmro triage -o jsonpath='{range .status.conditions[?(@.type=="Stalled")]}Stalled: {.reason}: {.message}{"\n"}{end}'
echo "The same rollout as a picture (weight, each gate's canary and stable values, verdicts):"
report="${TMPDIR:-/tmp}/tmo-demo-rollout-report.png"   # kept after the demo: open it
run tmo rollout report triage -n canary --out "$report"

step "6. Two operator replicas: the leader is killed, the standby takes over"
run kubectl -n default get lease tmo-operator -o custom-columns=HOLDER:.spec.holderIdentity,RENEWED:.spec.renewTime,TRANSITIONS:.spec.leaseTransitions
echo "The operator's own metrics (every replica serves them; only the leader reconciles):"
curl -s "localhost:$metrics_a/metrics" | grep -E '^tmo_operator_(leader|models|reconciles_total|rollouts\{)' | grep -v ' 0.0$' || true
curl -s "localhost:$metrics_b/metrics" | grep -E '^tmo_operator_leader' || true
holder=$(kubectl -n default get lease tmo-operator -o jsonpath='{.spec.holderIdentity}')
echo "kill -9 the leader (pid ${pids[0]}): no goodbye, the Lease must expire (6 s here, 15 s in the chart)"
kill -KILL "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
start=$EPOCHREALTIME
for _ in $(seq 300); do
  now=$(kubectl -n default get lease tmo-operator -o jsonpath='{.spec.holderIdentity}')
  [ -n "$now" ] && [ "$now" != "$holder" ] && break; sleep 0.2
done
awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "standby took the Lease after %.1f s\n", b - a }'
run kubectl -n default get lease tmo-operator -o custom-columns=HOLDER:.spec.holderIdentity,TRANSITIONS:.spec.leaseTransitions
for _ in $(seq 30); do curl -s "localhost:$metrics_b/metrics" | grep -q '^tmo_operator_leader 1' && break; sleep 1; done
curl -s "localhost:$metrics_b/metrics" | grep -E '^tmo_operator_(leader|models) ' || true
echo "The new leader picks the models up as they are (nothing rewritten) and keeps acting:"
run kubectl -n canary get tm,tmro
run kubectl -n ml patch tm email-triage --type merge -p '{"spec":{"scaling":{"maxReplicas":12}}}'
for _ in $(seq 30); do
  [ "$(kubectl -n ml get scaledobject email-triage -o jsonpath='{.spec.maxReplicaCount}' 2>/dev/null)" = 12 ] && break; sleep 1
done
run kubectl -n ml get scaledobject email-triage -o jsonpath='{.metadata.name}: max={.spec.maxReplicaCount}{"\n"}'
: "$standby"

step "Done"
echo "Everything above ran for real on this machine. Next: 'make test' runs the whole suite."
