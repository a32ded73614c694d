"""Reconciler benchmark: apply N TransformerModels at once against the local control plane.

For each N (default 1, 100, 500) it prints: seconds until every model is Ready, API requests the
operator made per model (its own client; kopf's list/watch streams are not counted), writes during
an idle resync (must be 0), and the operator's peak RSS. The operator runs as a real process.

    .venv/bin/python -m bench.reconcile [--counts 1,100,500] [--resync-seconds 10]

Starts the local control plane when it is not up (`make cluster-up`). kwok pods never run
containers: the figures are the control plane's cost of serving N models, not TorchServe's.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from e2e.kube import Cluster
from e2e.tmo_operator import REPO, OperatorProcess, install_crds, operator_kubeconfig

# One extra fake node with room for every benchmark pod (the cluster's own three hold 330).
BENCH_NODE = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {
        "name": "kwok-bench-0",
        "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        "labels": {"type": "kwok", "kubernetes.io/hostname": "kwok-bench-0"},
    },
    "status": {
        "allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "1000"},
        "capacity": {"cpu": "1000", "memory": "4Ti", "pods": "1000"},
    },
}


def model(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "tmo.dev/v1alpha1",
        "kind": "TransformerModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "task": "text-classification",
            "model": {"uri": f"s3://models/bench/{name}/", "format": "huggingface"},
            "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
            "scaling": {"minReplicas": 1, "maxReplicas": 4},
        },
    }


def ready_count(cluster: Cluster, namespace: str) -> int:
    out = cluster.kubectl("get", "tm", "-n", namespace, "-o", "json", timeout=120).stdout
    n = 0
    for item in json.loads(out)["items"]:
        st = item.get("status") or {}
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or []
        )
        n += ready and st.get("observedGeneration") == item["metadata"]["generation"]
    return n


def available_count(cluster: Cluster, namespace: str) -> int:
    out = cluster.kubectl("get", "deployments", "-n", namespace, "-o", "json", timeout=120).stdout
    return sum(
        1
        for d in json.loads(out)["items"]
        if (d.get("status") or {}).get("availableReplicas", 0) >= 1
    )


def run_one(cluster: Cluster, op: OperatorProcess, n: int, resync: float) -> dict[str, Any]:
    ns = f"bench-{n}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    items = [model(f"m{i:04d}", ns) for i in range(n)]
    t0 = time.monotonic()
    cluster.kubectl(
        "apply",
        "--server-side",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        timeout=300,
    )
    available_at = None
    while (ready := ready_count(cluster, ns)) < n:
        if time.monotonic() - t0 > 900:
            raise SystemExit(f"{n} models: only {ready} Ready after 900 s")
        if available_at is None and available_count(cluster, ns) >= n:
            available_at = time.monotonic() - t0
        time.sleep(1)
    elapsed = time.monotonic() - t0
    # Let the last Deployment events settle, then watch two full idle resyncs.
    time.sleep(3)
    settled = op.stats()
    time.sleep(resync * 2 + 1)
    idle = op.stats()
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    requests = settled["requests_by_namespace"].get(ns, 0)
    return {
        "models": n,
        "ready_s": round(elapsed, 1),
        # When Kubernetes itself had every Deployment Available (kube-controller-manager, kwok):
        # the gap to ready_s is the operator's own lag.
        "deployments_available_s": round(available_at or elapsed, 1),
        "requests_per_model": round(requests / n, 1),
        "writes_per_model": round(settled["writes_by_namespace"].get(ns, 0) / n, 1),
        "idle_resync_writes": idle["writes_by_namespace"].get(ns, 0)
        - settled["writes_by_namespace"].get(ns, 0),
        "idle_resync_reads_per_model": round(
            (idle["requests_by_namespace"].get(ns, 0) - requests) / n, 1
        ),
        "peak_rss_mib": round(op.peak_rss_kib() / 1024, 1),
    }


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: stop the operator, drop the node


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 500 needs a service CIDR larger than the local control plane's /24 (254 Service IPs).
    parser.add_argument("--counts", default="1,100,500")
    parser.add_argument("--resync-seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    # Starts the local control plane when it is not up (idempotent, seconds when cached).
    subprocess.run([str(REPO / "e2e" / "cluster" / "up.sh")], check=True)
    cluster = Cluster(REPO / ".cluster" / "kubeconfig")
    install_crds(cluster)
    cluster.apply(json.dumps(BENCH_NODE))
    results = []
    with tempfile.TemporaryDirectory(prefix="tmo-bench-") as tmp:
        op = OperatorProcess(
            cluster,
            Path(tmp),
            kubeconfig=operator_kubeconfig(cluster, Path(tmp)),
            args=[
                "--resync-seconds",
                str(args.resync_seconds),
                "--concurrency",
                str(args.concurrency),
                "--log-format",
                "plain",
            ],
        )
        op.start()
        try:
            for n in (int(c) for c in args.counts.split(",")):
                results.append(run_one(cluster, op, n, args.resync_seconds))
                print(json.dumps(results[-1]), flush=True)
        finally:
            op.stop()
            cluster.kubectl("delete", "node", "kwok-bench-0", "--wait=false", check=False)
    cols = list(results[0])
    print("\n" + " | ".join(cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))
    return 0 if all(r["idle_resync_writes"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
