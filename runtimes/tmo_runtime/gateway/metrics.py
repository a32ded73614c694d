"""Prometheus metrics the gateway adds to what TorchServe lacks, and cgroup memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tmo_runtime.cgroup import read_cgroup_memory
from tmo_runtime.podshare import read_memory_reports

# () -> (usage bytes, limit bytes), or None when there is no figure.
MemoryReader = Callable[[], tuple[float, float] | None]

# 5 ms to 60 s (summarisation and generation requests are long; p99 gates need the tail), each
# bound about 1.25x the one before. Canary judgment needs this resolution: histogram_quantile()
# interpolates inside a bucket, so with the usual 2-2.5x steps a p99 could move by 20 % and
# show 5 %, and the mannWhitney judge ranks requests by bucket (bench/judges.py measures it).
BUCKETS = (
    *(0.005, 0.006, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.075),
    *(0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0),
    *(4.0, 5.0, 6.0, 7.5, 10.0, 12.5, 15.0, 20.0, 30.0, 45.0, 60.0),
)


class CgroupMemoryCollector(Collector):
    """Read at scrape time, so the numbers are as fresh as Prometheus asks for.

    One series per container: this one's cgroup, plus what the pod's other containers report
    on the shared directory (the torchserve container, where the model's memory is charged).
    Labelled by model and revision like every tmo_* series, so the operator's alert
    (`tmo_memory_usage_bytes / tmo_memory_limit_bytes` by namespace, model, revision, pod,
    container) joins.
    """

    def __init__(
        self,
        root: Path,
        models: Sequence[tuple[str, str]],
        container: str = "gateway",
        share_dir: Path | None = None,
        reader: MemoryReader | None = None,
    ) -> None:
        self.root = root
        self.models = list(models)
        self.container = container
        self.share_dir = share_dir
        # Default: this process's cgroup. `tmo serve` passes its process tree's RSS instead.
        self.reader = reader or (lambda: read_cgroup_memory(self.root))

    def readings(self) -> list[tuple[str, float, float]]:
        """(container, usage, limit) for every container with a fresh figure."""
        found: dict[str, tuple[float, float]] = {}
        if self.share_dir is not None:
            for report in read_memory_reports(self.share_dir):
                found[report.container] = (report.usage_bytes, report.limit_bytes)
        own = self.reader()
        if own is not None:
            found[self.container] = own
        return [(c, usage, limit) for c, (usage, limit) in sorted(found.items())]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        readings = self.readings()
        if not readings:
            return
        labels = ["model", "revision", "container"]
        used = GaugeMetricFamily(
            "tmo_memory_usage_bytes", "Memory used by the container's cgroup.", labels=labels
        )
        cap = GaugeMetricFamily(
            "tmo_memory_limit_bytes",
            "Memory limit of the container's cgroup (+Inf when unlimited).",
            labels=labels,
        )
        for model, revision in self.models:
            for container, usage, limit in readings:
                used.add_metric([model, revision, container], usage)
                cap.add_metric([model, revision, container], limit)
        yield used
        yield cap


class GatewayMetrics:
    def __init__(
        self,
        models: Sequence[tuple[str, str]] = (),
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        container: str = "gateway",
        share_dir: Path | None = None,
        memory_reader: MemoryReader | None = None,
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
        self.registry.register(
            CgroupMemoryCollector(cgroup_root, models, container, share_dir, memory_reader)
        )
