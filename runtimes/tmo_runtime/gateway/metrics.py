"""Prometheus metrics the gateway adds to what TorchServe lacks, and cgroup memory."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Up to 60 s: summarisation and generation requests are long; p99 gates need the tail.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# cgroup v1 reports "no limit" as a page-rounded LONG_MAX.
_V1_UNLIMITED = 1 << 62


def parse_cgroup_value(text: str) -> float:
    """memory.max / memory.limit_in_bytes: 'max' or a huge v1 number mean unlimited (+Inf)."""
    value = text.strip()
    if value == "max":
        return math.inf
    number = float(int(value))
    return math.inf if number >= _V1_UNLIMITED else number


def read_cgroup_memory(root: Path = Path("/sys/fs/cgroup")) -> tuple[float, float] | None:
    """(usage, limit) bytes of this container's cgroup, v2 first, then v1; None if neither."""
    candidates = (
        (root / "memory.current", root / "memory.max"),
        (root / "memory" / "memory.usage_in_bytes", root / "memory" / "memory.limit_in_bytes"),
    )
    for usage_file, limit_file in candidates:
        try:
            usage = parse_cgroup_value(usage_file.read_text())
            limit = parse_cgroup_value(limit_file.read_text())
        except (OSError, ValueError):
            continue
        return usage, limit
    return None


class CgroupMemoryCollector(Collector):
    """Read at scrape time, so the numbers are as fresh as Prometheus asks for.

    Labelled by model and revision like every tmo_* series, so the operator's alert
    (`tmo_memory_usage_bytes / tmo_memory_limit_bytes` by namespace, model, revision, pod) joins.
    """

    def __init__(self, root: Path, models: Sequence[tuple[str, str]]) -> None:
        self.root = root
        self.models = list(models)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        read = read_cgroup_memory(self.root)
        if read is None:
            return
        usage, limit = read
        labels = ["model", "revision"]
        used = GaugeMetricFamily(
            "tmo_memory_usage_bytes", "Memory used by this pod's cgroup.", labels=labels
        )
        cap = GaugeMetricFamily(
            "tmo_memory_limit_bytes",
            "Memory limit of this pod's cgroup (+Inf when unlimited).",
            labels=labels,
        )
        for model, revision in self.models:
            used.add_metric([model, revision], usage)
            cap.add_metric([model, revision], limit)
        yield used
        yield cap


class GatewayMetrics:
    def __init__(
        self,
        models: Sequence[tuple[str, str]] = (),
        cgroup_root: Path = Path("/sys/fs/cgroup"),
    ) -> None:
        self.registry = CollectorRegistry()
        labels = ("model", "revision")
        self.inflight = Gauge(
            "tmo_inflight_requests",
            "Inference requests inside the gateway (queued or at TorchServe): KEDA's signal.",
            labels,
            registry=self.registry,
        )
        self.duration = Histogram(
            "tmo_request_duration_seconds",
            "Inference request duration seen by the gateway.",
            (*labels, "code"),
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "tmo_requests",  # exported as tmo_requests_total
            "Inference requests answered by the gateway.",
            (*labels, "code"),
            registry=self.registry,
        )
        self.ready = Gauge(
            "tmo_model_ready",
            "1 when TorchServe reports every worker of the model ready.",
            labels,
            registry=self.registry,
        )
        self.queue_limit = Gauge(
            "tmo_queue_capacity",
            "Requests the gateway admits at once (running plus waiting) before answering 429.",
            registry=self.registry,
        )
        self.registry.register(CgroupMemoryCollector(cgroup_root, models))
