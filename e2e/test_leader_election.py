"""Two operator replicas with leader election: one reconciles, the other stands by and takes
over when the leader is killed (after the lease) or stops (at once, the Lease is released).

Both run with the chart's RBAC (the ServiceAccount's token), so the Lease Role is tested too.
The lease is shortened to keep the test quick; the chart's default is 15 s.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from tmo_runtime.torchserve import free_port

from e2e.helm import helm_binary
from e2e.kube import Cluster, wait_for
from e2e.models import apply_model, small_model, wait_ready
from e2e.test_chart import operator_alerts
from e2e.tmo_operator import (
    OPERATOR_NAMESPACE,
    OperatorProcess,
    install_crds,
    operator_kubeconfig,
)

LEASE_S = 6
ELECTION = [
    "--leader-elect",
    "--leader-election-namespace",
    OPERATOR_NAMESPACE,
    "--lease-duration-seconds",
    str(LEASE_S),
    "--lease-renew-deadline-seconds",
    "4",
    "--lease-retry-seconds",
    "1",
]


def _lease(cluster: Cluster) -> dict[str, Any]:
    r = cluster.kubectl(
        "get", "lease", "tmo-operator", "-n", OPERATOR_NAMESPACE, "-o", "json", check=False
    )
    if r.returncode != 0:
        return {}
    return dict(json.loads(r.stdout).get("spec") or {})


def _holder(cluster: Cluster) -> str:
    return str(_lease(cluster).get("holderIdentity") or "")


def _metrics(port: int) -> dict[str, float]:
    """The operator's /metrics as {series: value} (series with labels as exposed)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


@pytest.fixture
def replicas(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    install_crds(cluster)
    kubeconfig = operator_kubeconfig(cluster, tmp_path)
    cluster.kubectl("delete", "lease", "tmo-operator", "-n", OPERATOR_NAMESPACE, check=False)
    ports = [free_port(), free_port()]
    a = OperatorProcess(
        cluster, tmp_path / "a", [*ELECTION, f"--metrics-port={ports[0]}"], kubeconfig
    )
    b = OperatorProcess(
        cluster, tmp_path / "b", [*ELECTION, f"--metrics-port={ports[1]}"], kubeconfig
    )
    for op in (a, b):
        op.workdir.mkdir()
    try:
        yield a, b
    finally:
        for op in (a, b):
            op.stop()
        cluster.kubectl("delete", "lease", "tmo-operator", "-n", OPERATOR_NAMESPACE, check=False)


def test_one_replica_leads_the_other_takes_over_when_it_is_killed(
    cluster: Cluster, namespace: str, replicas: tuple[OperatorProcess, OperatorProcess]
) -> None:
    a, b = replicas
    a.start()  # leads: its reconciler runs
    leader = wait_for("a Lease holder", lambda: _holder(cluster), 30)
    b.start(wait=False)
    wait_for("b to stand by", lambda: "standby" in b.log(), 30)
    apply_model(cluster, namespace, small_model("ha"))
    wait_ready(cluster, namespace, "ha", 90)
    time.sleep(3)  # b had every chance to act on the model: it must not have
    assert not b.stats_file.exists(), "the standby reconciled while another replica led"
    assert _holder(cluster) == leader
    # Both replicas serve metrics; only the leader says it leads and holds the models.
    a_port, b_port = (int(op.args[-1].split("=")[1]) for op in (a, b))
    leading = _metrics(a_port)
    assert leading["tmo_operator_leader"] == 1
    assert leading["tmo_operator_models"] >= 1
    assert leading['tmo_operator_reconciles_total{kind="TransformerModel"}'] >= 1
    assert leading['tmo_operator_kube_requests_total{verb="PATCH"}'] >= 1
    count = 'tmo_operator_reconcile_duration_seconds_count{kind="TransformerModel"}'
    assert leading[count] >= 1
    assert _metrics(b_port) == {"tmo_operator_leader": 0.0}
    # Every operator metric the chart's alerts use is one the operator exports.
    exported = {series.split("{")[0] for series in leading}
    for group in operator_alerts(str(helm_binary())):
        for rule in group["rules"]:
            used = set(re.findall(r"\btmo_operator_[a-z_]+", rule["expr"]))
            assert used <= exported, (rule["alert"], used - exported)

    assert a.proc is not None
    killed = time.monotonic()
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    a.proc = None
    new = wait_for("b to take the Lease", lambda: (h := _holder(cluster)) != leader and h, 60)
    b.wait_started(30)
    failover = time.monotonic() - killed
    print(f"\nfailover after SIGKILL: {failover:.1f} s (lease {LEASE_S} s)")
    assert failover >= LEASE_S - 1.5, "the standby took a Lease that had not expired"
    assert failover < LEASE_S + 10
    assert new != leader
    assert int(_lease(cluster).get("leaseTransitions") or 0) >= 1

    # b picks the model up as it is: converged, so not one child is written again.
    time.sleep(4)
    stats = b.stats()
    assert stats["models"] >= 1
    assert stats["child_writes"] == 0, stats
    wait_ready(cluster, namespace, "ha", 30)
    assert _metrics(b_port)["tmo_operator_leader"] == 1


def test_a_leader_that_stops_cleanly_hands_over_at_once(
    cluster: Cluster, replicas: tuple[OperatorProcess, OperatorProcess]
) -> None:
    a, b = replicas
    a.start()
    leader = wait_for("a Lease holder", lambda: _holder(cluster), 30)
    b.start(wait=False)
    wait_for("b to stand by", lambda: "standby" in b.log(), 30)
    stopped = time.monotonic()
    a.stop(signal.SIGTERM)
    assert "released Lease" in a.log_file.read_text()
    wait_for("b to take the Lease", lambda: (h := _holder(cluster)) != leader and h, 30)
    b.wait_started(30)
    handover = time.monotonic() - stopped
    print(f"\nhandover after SIGTERM: {handover:.1f} s (lease {LEASE_S} s)")
    assert handover < LEASE_S, "the standby waited out the lease although it was released"
    renewed = datetime.fromisoformat(str(_lease(cluster)["renewTime"]).replace("Z", "+00:00"))
    assert renewed.tzinfo is not None
