#!/usr/bin/env bash
# Stops every process up.sh started (by the pids it recorded) and removes the cluster state.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
state="$repo/.cluster"
[ -d "$state" ] || { echo ">> local control plane is not running"; exit 0; }
pids=()
# Reverse start order: the API server's clients go first, etcd last.
for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  f="$state/pids/$name"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null && pids+=("$pid"); fi
done
for _ in $(seq 50); do
  alive=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && break
  sleep 0.2
done
for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
rm -rf "$state"
echo ">> local control plane stopped (${#pids[@]} processes)"
