"""The operator's own Prometheus metrics (`tmo operator --metrics-port`).

Counters and gauges are read from the reconciler's state when Prometheus scrapes (a collector),
so the reconcile path carries no metric calls beyond one histogram; every replica serves them,
and `tmo_operator_leader` says which one is acting.
"""

from __future__ import annotations

import datetime
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from tmo.kube.reconcile import Reconciler

PHASES = ("Idle", "Progressing", "Paused", "Promoting", "Succeeded", "RolledBack", "Aborted")

REGISTRY = CollectorRegistry(auto_describe=True)
RECONCILE_SECONDS = Histogram(
    "tmo_operator_reconcile_duration_seconds",
    "Time of one reconcile pass over a TransformerModel and its Rollouts",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
CANARY_SECONDS = Histogram(
    "tmo_operator_canary_duration_seconds",
    "Time from a canary's start to its promotion, rollback or abort",
    ["outcome"],
    buckets=(30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
    registry=REGISTRY,
)
ENDINGS = {"Succeeded": "promoted", "RolledBack": "rolled_back", "Aborted": "aborted"}


def canary_ending(
    previous: dict[str, Any], status: dict[str, Any], now: datetime.datetime
) -> tuple[str, float] | None:
    """(outcome, seconds since the canary started) when this status write ends a live canary."""
    outcome = ENDINGS.get(str(status.get("phase")))
    if outcome is None or previous.get("phase") not in ("Progressing", "Paused", "Promoting"):
        return None
    started = previous.get("canaryStartedAt")
    if not started:
        return None
    began = datetime.datetime.fromisoformat(str(started).replace("Z", "+00:00"))
    return outcome, max((now - began).total_seconds(), 0.0)


def rollout_phases(bodies: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Rollouts per phase, every phase present (a dashboard's zero is a real zero)."""
    counts = Counter(str((b.get("status") or {}).get("phase") or "Idle") for b in bodies)
    return {phase: counts.get(phase, 0) for phase in PHASES}


def rollout_series(bodies: Iterable[dict[str, Any]]) -> Iterator[tuple[dict[str, str], Any]]:
    """(labels, status) of every Rollout that names a model."""
    for b in bodies:
        meta = b.get("metadata") or {}
        labels = {
            "namespace": str(meta.get("namespace", "")),
            "rollout": str(meta.get("name", "")),
            "model": str(((b.get("spec") or {}).get("targetRef") or {}).get("name", "")),
        }
        yield labels, b.get("status") or {}


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reconciler: Reconciler | None = None
        self.leader = False


STATE = _State()


def attach(reconciler: Reconciler | None) -> None:
    with STATE.lock:
        STATE.reconciler = reconciler


def set_leader(leading: bool) -> None:
    STATE.leader = leading


class OperatorCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        leader = GaugeMetricFamily(
            "tmo_operator_leader", "1 when this replica holds the Lease and reconciles"
        )
        leader.add_metric([], 1.0 if STATE.leader else 0.0)
        yield leader
        with STATE.lock:
            r = STATE.reconciler
        if r is None:  # a standby, or before startup: only the leader gauge
            return
        stats = r.stats
        counters = (
            ("reconciles", "Reconcile passes over a TransformerModel", stats.reconciles),
            ("reconcile_errors", "Reconcile passes that failed and were retried", stats.failures),
            ("child_writes", "Child objects applied (create or change)", stats.child_writes),
            ("status_writes", "Status subresource writes", stats.status_writes),
            ("events", "Kubernetes Events posted", stats.events),
            ("analysis_runs", "Rollout analysis runs against Prometheus", stats.analysis_runs),
        )
        for name, doc, value in counters:
            c = CounterMetricFamily(f"tmo_operator_{name}", doc, labels=["kind"])
            c.add_metric(["TransformerModel"], float(value))
            yield c
        requests = CounterMetricFamily(
            "tmo_operator_kube_requests", "Kubernetes API requests by verb", labels=["verb"]
        )
        for verb, n in sorted(r.client.requests.items()):
            requests.add_metric([verb], float(n))
        yield requests
        models = GaugeMetricFamily("tmo_operator_models", "TransformerModels the operator holds")
        models.add_metric([], float(len(r.bodies)))
        yield models
        bodies = list(r.rollouts.bodies.values())
        phases = GaugeMetricFamily("tmo_operator_rollouts", "Rollouts by phase", labels=["phase"])
        for phase, n in rollout_phases(bodies).items():
            phases.add_metric([phase], float(n))
        yield phases
        label_names = ["namespace", "rollout", "model"]
        weight = GaugeMetricFamily(
            "tmo_operator_rollout_canary_weight",
            "Percentage of traffic on the canary",
            labels=label_names,
        )
        runs = GaugeMetricFamily(
            "tmo_operator_rollout_analysis_runs",
            "Analysis runs of the current canary by verdict",
            labels=[*label_names, "verdict"],
        )
        for labels, status in rollout_series(bodies):
            values = [labels[k] for k in label_names]
            weight.add_metric(values, float(status.get("canaryWeight") or 0))
            analysis = status.get("analysis") or {}
            for verdict, key in (
                ("Passed", "passed"),
                ("Failed", "failed"),
                ("Inconclusive", "inconclusive"),
            ):
                runs.add_metric([*values, verdict], float(analysis.get(key) or 0))
        yield weight
        yield runs


REGISTRY.register(OperatorCollector())


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics on a daemon thread (prometheus-client's own server)."""
    start_http_server(port, addr=address, registry=REGISTRY)
