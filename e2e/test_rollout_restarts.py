"""SIGKILL the operator at random moments across many rollouts: every one must end right.

All progress lives in the Rollout's status and the child objects, so a restarted operator resumes
where the last status write left off: no double promotion, no second canary, no promoted failing
canary, no pause restarted from zero. The analysis queries a real Prometheus (no model pods are
needed for `query` metrics), and the traffic router is `replicas` (no HTTPRoute).
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.dataplane import Prometheus
from e2e.kube import Cluster, wait_for
from e2e.rollouts import (
    apply,
    change_runtime,
    condition,
    events,
    model_manifest,
    rollout,
    rollout_manifest,
    wait_phase,
)
from e2e.tmo_operator import OperatorProcess, install_crds, operator_kubeconfig

NAME = "restarts"
STEPS = [
    {"setWeight": 20},
    {"pause": {"duration": "3s"}},
    {"setWeight": 60},
    {"pause": {"duration": "2s"}},
]
PASSING = [{"name": "always-ok", "query": "vector(0)", "max": 1}]
FAILING = [{"name": "always-bad", "query": "vector(5)", "max": 1}]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    prom = Prometheus(tmp_path_factory.mktemp("prom"))
    prom.start()
    yield prom
    prom.stop()


def _deployments(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    return cluster.get_all("deployments", ns, "-l", f"tmo.dev/model={NAME}")


def test_sigkill_at_random_moments_across_rollouts(
    cluster: Cluster,
    namespace: str,
    prometheus: Prometheus,
    tmp_path: Path,
) -> None:
    install_crds(cluster)
    op = OperatorProcess(
        cluster,
        tmp_path,
        kubeconfig=operator_kubeconfig(cluster, tmp_path),
        args=[
            "--namespace",
            namespace,
            "--prometheus-url",
            prometheus.url,
            "--resync-seconds",
            "5",
            "--retry-initial-seconds",
            "1",
            "--retry-max-seconds",
            "2",
        ],
    )
    ns = namespace
    rng = random.Random(20261201)
    apply(
        cluster,
        model_manifest(ns, NAME, "file:///models/x", route=False),
        rollout_manifest(
            ns, NAME, STEPS, router="replicas", interval="1s", minRequests=0, metrics=PASSING
        ),
    )
    op.start()
    try:
        wait_phase(cluster, ns, NAME, {"Idle"}, timeout=60)
        kills = 0
        for i in range(10):
            failing = i % 3 == 2  # every third canary fails its analysis
            metrics = FAILING if failing else PASSING
            apply(
                cluster,
                rollout_manifest(
                    ns,
                    NAME,
                    STEPS,
                    router="replicas",
                    interval="1s",
                    minRequests=0,
                    metrics=metrics,
                ),
            )
            before = rollout(cluster, ns, NAME)["status"]["stableRevision"]
            revision = change_runtime(cluster, ns, NAME, maxBatchDelayMs=10 + i)
            deadline = time.monotonic() + 120
            # Kill it 1-3 times during this rollout, at random moments.
            for _ in range(rng.randint(1, 3)):
                time.sleep(rng.uniform(0.0, 3.0))
                op.stop(signal.SIGKILL)
                kills += 1
                # Meanwhile never more than two revisions run: stable and one canary.
                assert len(_deployments(cluster, ns)) <= 2
                op.start()
            want = {"RolledBack"} if failing else {"Succeeded"}
            obj = wait_phase(cluster, ns, NAME, want, timeout=max(5, deadline - time.monotonic()))
            st = obj["status"]
            if failing:
                assert st["stableRevision"] == before, st
                assert st["canaryRevision"] == revision
            else:
                assert st["stableRevision"] == revision, st
            # Exactly one revision is left running, the stable one.
            running = wait_for(
                "the other revisions retired",
                lambda: (lambda ds: ds if len(ds) == 1 else None)(_deployments(cluster, ns)),
                30,
            )
            assert running[0]["metadata"]["labels"]["tmo.dev/revision"] == st["stableRevision"]
        reasons = events(cluster, ns, NAME)
        # Never twice: an Event is posted after its status write, so a kill between the two
        # can lose one (Events are best effort) but never repeat it.
        assert 0 < reasons.count("Promoted") <= 7, reasons
        assert 0 < reasons.count("RolledBack") <= 3, reasons
        assert kills >= 10

        # A Rollout whose model does not exist yet: Stalled TargetNotFound, then it recovers.
        apply(cluster, rollout_manifest(ns, "late", STEPS, router="replicas", metrics=PASSING))
        wait_for(
            "TargetNotFound",
            lambda: (
                (condition(rollout(cluster, ns, "late"), "Stalled") or {}).get("reason")
                == "TargetNotFound"
            ),
            60,
        )
        apply(cluster, model_manifest(ns, "late", "file:///models/x", route=False))
        obj = wait_phase(cluster, ns, "late", {"Idle"}, timeout=60)
        assert condition(obj, "Stalled") is None
        assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
    finally:
        log = op.log()
        op.stop()
    assert "Traceback" not in log, log
