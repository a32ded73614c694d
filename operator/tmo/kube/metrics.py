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

from tmo.api.transformermodel import Monitoring, Scaling

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


# Gate label value -> (spec section, field, default). Latency in ms, as in the spec and in the
# analysis measurements (`latencyP99`), so a dashboard draws a measurement against its gate.
# Defaults are the API's own (tmo.api.transformermodel), so they cannot drift from it.
GATES: tuple[tuple[str, str, str, float], ...] = (
    ("latencyP99", "monitoring", "latencyP99Ms", Monitoring().latency_p99_ms),
    ("memoryUtilization", "monitoring", "memoryUtilization", Monitoring().memory_utilization),
    ("errorRate", "monitoring", "errorRate", Monitoring().error_rate),
    ("targetQueueLength", "scaling", "targetQueueLength", float(Scaling().target_queue_length)),
    ("minReplicas", "scaling", "minReplicas", float(Scaling().min_replicas)),
    ("maxReplicas", "scaling", "maxReplicas", float(Scaling().max_replicas)),
)
VERDICTS = ("Passed", "Failed", "Inconclusive", "Error")


def model_gates(bodies: Iterable[dict[str, Any]]) -> Iterator[tuple[dict[str, str], float]]:
    """({namespace, model, gate}, value) of each model's thresholds: spec.monitoring (the
    alerts' and the default rollout gates') and spec.scaling (the autoscaler's target and
    bounds). A field the body lacks has the API's default."""
    for b in bodies:
        meta = b.get("metadata") or {}
        spec = b.get("spec") or {}
        for gate, section, field, default in GATES:
            value = (spec.get(section) or {}).get(field)
            labels = {
                "namespace": str(meta.get("namespace", "")),
                "model": str(meta.get("name", "")),
                "gate": gate,
            }
            yield labels, float(default if value is None else value)


def model_replicas(
    bodies: Iterable[dict[str, Any]],
) -> Iterator[tuple[dict[str, str], float, float]]:
    """({namespace, model}, pods, ready pods) from each model's status (all revisions)."""
    for b in bodies:
        meta = b.get("metadata") or {}
        status = b.get("status") or {}
        labels = {"namespace": str(meta.get("namespace", "")), "model": str(meta.get("name", ""))}
        yield (
            labels,
            float(status.get("replicas") or 0),
            float(status.get("readyReplicas") or 0),
        )


def latest_measurements(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The newest measurement of each metric (status.analysis.measurements is newest last),
    in order of the metrics' first appearance."""
    latest: dict[str, dict[str, Any]] = {}
    for m in (status.get("analysis") or {}).get("measurements") or []:
        if isinstance(m, dict) and m.get("metric"):
            latest[str(m["metric"])] = m
    return list(latest.values())


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def measurement_series(
    status: dict[str, Any],
) -> Iterator[tuple[str, str, float]]:
    """(metric, revision_role, value) of the latest measurement of each metric: the canary's
    value and, where the judge measured it (mannWhitney), the stable revision's."""
    for m in latest_measurements(status):
        for role, key in (("canary", "value"), ("stable", "stableValue")):
            value = _number(m.get(key))
            if value is not None:
                yield str(m["metric"]), role, value


def verdict_series(status: dict[str, Any]) -> Iterator[tuple[str, str, float]]:
    """(metric, verdict, 1 or 0) of the latest measurement of each metric, every verdict
    present (1 for the current one), like tmo_operator_rollouts' phases."""
    for m in latest_measurements(status):
        current = str(m.get("verdict") or "")
        for verdict in VERDICTS:
            yield str(m["metric"]), verdict, 1.0 if verdict == current else 0.0


def revision_roles(status: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(revision, role) of the Rollout's stable and, while one is live, canary revision."""
    stable = status.get("stableRevision")
    canary = status.get("canaryRevision")
    if stable:
        yield str(stable), "stable"
    if canary and canary != stable:
        yield str(canary), "canary"


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
        yield from _model_families(list(r.bodies.values()))
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
        yield from _rollout_families(bodies)


def _model_families(bodies: list[dict[str, Any]]) -> Iterator[Metric]:
    gates = GaugeMetricFamily(
        "tmo_operator_model_gate",
        "A model's thresholds by gate: latencyP99 (ms), memoryUtilization (fraction of the "
        "memory limit) and errorRate (5xx fraction) from spec.monitoring (alerts and default "
        "rollout gates); targetQueueLength (in-flight requests per replica the autoscaler aims "
        "for), minReplicas and maxReplicas from spec.scaling",
        labels=["namespace", "model", "gate"],
    )
    for labels, value in model_gates(bodies):
        gates.add_metric([labels["namespace"], labels["model"], labels["gate"]], value)
    yield gates
    pods = GaugeMetricFamily(
        "tmo_operator_model_replicas",
        "Pods of a model, all revisions (status.replicas)",
        labels=["namespace", "model"],
    )
    ready = GaugeMetricFamily(
        "tmo_operator_model_ready_replicas",
        "Pods of a model ready to serve, all revisions (status.readyReplicas)",
        labels=["namespace", "model"],
    )
    for labels, n, n_ready in model_replicas(bodies):
        pods.add_metric([labels["namespace"], labels["model"]], n)
        ready.add_metric([labels["namespace"], labels["model"]], n_ready)
    yield pods
    yield ready


def _rollout_families(bodies: list[dict[str, Any]]) -> Iterator[Metric]:
    label_names = ["namespace", "rollout", "model"]
    phase = GaugeMetricFamily(
        "tmo_operator_rollout_phase",
        "1 for a Rollout's current phase, 0 for the others (status.phase; Idle without one)",
        labels=[*label_names, "phase"],
    )
    revisions = GaugeMetricFamily(
        "tmo_operator_rollout_revision",
        "1 for each revision a Rollout serves, by role (stable, or canary while one is live): "
        "joins the gateways' series on revision",
        labels=[*label_names, "revision", "role"],
    )
    measured = GaugeMetricFamily(
        "tmo_operator_rollout_measurement",
        "The latest analysis measurement of each gate (status.analysis.measurements): the "
        "canary's value (revision_role=canary) and, when the judge measured it (mannWhitney), "
        "the stable revision's (revision_role=stable); latencies in ms",
        labels=[*label_names, "metric", "revision_role"],
    )
    verdicts = GaugeMetricFamily(
        "tmo_operator_rollout_gate_verdict",
        "1 for the verdict of each gate's latest analysis measurement (Passed, Failed, "
        "Inconclusive, Error), 0 for the other verdicts",
        labels=[*label_names, "metric", "verdict"],
    )
    for labels, status in rollout_series(bodies):
        values = [labels[k] for k in label_names]
        current = str(status.get("phase") or "Idle")
        for p in PHASES:
            phase.add_metric([*values, p], 1.0 if p == current else 0.0)
        for revision, role in revision_roles(status):
            revisions.add_metric([*values, revision, role], 1.0)
        for metric, role, value in measurement_series(status):
            measured.add_metric([*values, metric, role], value)
        for metric, verdict, value in verdict_series(status):
            verdicts.add_metric([*values, metric, verdict], value)
    yield phase
    yield revisions
    yield measured
    yield verdicts


REGISTRY.register(OperatorCollector())


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics on a daemon thread (prometheus-client's own server)."""
    start_http_server(port, addr=address, registry=REGISTRY)
