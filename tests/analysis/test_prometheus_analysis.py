"""run_analysis against a real Prometheus (Debian's) scraping series whose values the test sets.

A small exporter thread serves the gateway's series for several revisions of one model at once
(a healthy canary, a slow one, one with client errors, a broken one, a quiet one...), so every
case is measured in the same seconds instead of waiting for windows to drain between them.
Prometheus evaluates the operator's own alert rules (with `for: 0s`), so ALERTS is real.
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tmo.analysis import (
    AnalysisContext,
    AnalysisRun,
    PrometheusClient,
    PrometheusError,
    run_analysis,
)
from tmo.api.rollout import Analysis, Measurement
from tmo.render.monitoring import alert_rules
from tmo.render.settings import RenderSettings
from tmo_runtime.gateway.metrics import BUCKETS
from tmo_runtime.torchserve import free_port

pytestmark = pytest.mark.slow

NS, MODEL, STABLE = "test", "triage", "stable1"
MONITORING = {"latencyP99Ms": 250.0, "memoryUtilization": 0.9, "errorRate": 0.01}
NOW = "2025-01-01T00:00:00Z"
GIB = float(2**30)
INF = math.inf

# Cumulative fraction of requests at or below each latency (seconds); buckets in between hold
# the fraction of the nearest point below. FAST: p99 = 49.5 ms. SLOW: p99 = 990 ms.
FAST = ((0.01, 0.2), (0.025, 0.5), (0.05, 1.0))
SLOW = ((0.05, 0.2), (0.25, 0.5), (1.0, 1.0))


@dataclass(frozen=True)
class Revision:
    name: str
    rate: float  # requests per second
    codes: dict[str, float]  # code -> fraction of requests
    latency: tuple[tuple[float, float], ...]
    memory: tuple[tuple[str, str, float, float], ...]  # (pod, container, usage, limit)


def _pod(revision: str, torchserve: float, gateway: float = 0.05) -> tuple[Any, ...]:
    return (
        (f"{revision}-a", "torchserve", torchserve * GIB, 2 * GIB),
        (f"{revision}-a", "gateway", gateway * GIB, 0.1 * GIB),
    )


REVISIONS = [
    Revision(STABLE, 40, {"200": 1.0}, FAST, _pod(STABLE, 0.8)),
    # Two pods; the worst torchserve is 1.2 of 2 GiB (0.6). Its gateway sits at 0.95 of its own
    # limit, above the 0.9 gate: memory gates must not look at the sidecar.
    Revision(
        "good",
        40,
        {"200": 1.0},
        FAST,
        (*_pod("good", 1.0, gateway=0.095), ("good-b", "torchserve", 1.2 * GIB, 2 * GIB)),
    ),
    Revision("slow", 40, {"200": 1.0}, SLOW, _pod("slow", 1.0)),
    # 40 % client mistakes (400, 429) and 0.2 % 5xx: an error rate of 0.002, not 0.4.
    Revision(
        "clienterr", 40, {"200": 0.598, "400": 0.2, "429": 0.2, "503": 0.002}, FAST, _pod("c", 1)
    ),
    Revision("broken", 40, {"200": 0.9, "500": 0.1}, FAST, _pod("broken", 1.0)),
    # Hardly any traffic, and `tmo serve`'s container without a memory limit (+Inf).
    Revision(
        "quiet",
        0.5,
        {"200": 1.0},
        FAST,
        (("quiet-a", "tmo-serve", 0.5 * GIB, INF), ("quiet-a", "gateway", 0.01 * GIB, INF)),
    ),
    Revision("memhog", 40, {"200": 1.0}, FAST, _pod("memhog", 1.9)),
]


def _value(v: float) -> str:
    return "+Inf" if v == INF else repr(float(v))


def _cumulative(points: tuple[tuple[float, float], ...], le: float) -> float:
    return max((f for bound, f in points if bound <= le), default=0.0)


def _mean(points: tuple[tuple[float, float], ...]) -> float:
    # Each share of requests at its bucket's bound: near enough for a _sum series.
    previous, total = 0.0, 0.0
    for bound, fraction in points:
        total += (fraction - previous) * bound
        previous = fraction
    return total


def exposition(elapsed: float) -> str:
    """The gateway's series as they stand `elapsed` seconds after the exporter started:
    counters grow at each revision's rate, so rate() and increase() see traffic."""
    lines = [
        "# TYPE tmo_requests_total counter",
        "# TYPE tmo_request_duration_seconds histogram",
        "# TYPE tmo_memory_usage_bytes gauge",
        "# TYPE tmo_memory_limit_bytes gauge",
    ]
    for r in REVISIONS:
        for code, share in r.codes.items():
            total = r.rate * elapsed * share
            labels = f'model="{MODEL}",revision="{r.name}",code="{code}",pod="{r.name}-a"'
            lines.append(f"tmo_requests_total{{{labels}}} {math.floor(total)}")
            for le in BUCKETS:
                count = math.floor(total * _cumulative(r.latency, le))
                lines.append(f'tmo_request_duration_seconds_bucket{{{labels},le="{le}"}} {count}')
            lines.append(
                f'tmo_request_duration_seconds_bucket{{{labels},le="+Inf"}} {math.floor(total)}'
            )
            lines.append(f"tmo_request_duration_seconds_count{{{labels}}} {math.floor(total)}")
            seconds = math.floor(total) * _mean(r.latency)
            lines.append(f"tmo_request_duration_seconds_sum{{{labels}}} {seconds}")
        for pod, container, usage, limit in r.memory:
            labels = f'model="{MODEL}",revision="{r.name}",container="{container}",pod="{pod}"'
            lines.append(f"tmo_memory_usage_bytes{{{labels}}} {_value(usage)}")
            lines.append(f"tmo_memory_limit_bytes{{{labels}}} {_value(limit)}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    started = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404, "not here")
                return
            body = exposition(time.monotonic() - started).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def start_prometheus(base: Path, config: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: run `make deps` (Debian package prometheus)"
    base.mkdir(parents=True, exist_ok=True)
    (base / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={base / 'prometheus.yml'}",
            f"--storage.tsdb.path={base / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(base / "prometheus.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    proc.wait(10)
    raise TimeoutError((base / "prometheus.log").read_text())


def rules() -> dict[str, Any]:
    doc = {"metadata": {"name": MODEL, "namespace": NS}, "spec": {"monitoring": MONITORING}}
    operator_rules = alert_rules(doc, RenderSettings(alert_window="30s"))
    # Fire at once (the test cannot wait minutes); TMOTestPending stays pending for an hour.
    fired = [{**rule, "for": "0s"} for rule in operator_rules]
    pending = {
        "alert": "TMOTestPending",
        "expr": "sum by (namespace, model, revision) (tmo_requests_total) > 0",
        "for": "1h",
    }
    return {"groups": [{"name": "tmo", "rules": [*fired, pending]}]}


def instant(url: str, expr: str) -> list[Any]:
    r = httpx.get(url + "/api/v1/query", params={"query": expr}, timeout=5)
    r.raise_for_status()
    result: list[Any] = r.json()["data"]["result"]
    return result


@pytest.fixture(scope="module")
def prometheus(exporter: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("prom")
    (base / "rules.yml").write_text(yaml.safe_dump(rules()))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(base / "rules.yml")],
        "scrape_configs": [
            {
                "job_name": "tmo",
                # As the ServiceMonitor: the series' own revision/pod labels win, and the
                # target adds the namespace.
                "honor_labels": True,
                "static_configs": [{"targets": [exporter], "labels": {"namespace": NS}}],
            }
        ],
    }
    proc, url = start_prometheus(base, config)
    try:
        # Enough samples for rate() over every revision, and the alerts evaluated.
        ready = [
            'sum(increase(tmo_requests_total{revision="good"}[30s])) > 150',
            'ALERTS{alertname="TMOHighLatency",alertstate="firing",revision="slow"}',
            'ALERTS{alertname="TMOTestPending",alertstate="pending",revision="slow"}',
            'count_over_time(tmo_requests_total{revision="quiet"}[30s]) > 4',
        ]
        deadline = time.monotonic() + 40
        while not all(instant(url, q) for q in ready):
            assert time.monotonic() < deadline, (base / "prometheus.log").read_text()
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
async def prom(prometheus: str) -> AsyncIterator[PrometheusClient]:
    async with PrometheusClient(prometheus) as client:
        yield client


def ctx(canary: str, model: str = MODEL) -> AnalysisContext:
    return AnalysisContext(NS, model, canary, STABLE, MONITORING)


def by_name(run: AnalysisRun) -> dict[str, Measurement]:
    return {m.metric: m for m in run.measurements}


async def test_healthy_canary_passes_the_models_own_gates(prom: PrometheusClient) -> None:
    run = await run_analysis(Analysis(), ctx("good"), prom, NOW)
    assert run.verdict == "Passed", run.summary
    assert run.requests is not None and run.requests >= 100
    m = by_name(run)
    assert list(m) == ["latencyP99", "memoryUtilization", "errorRate"]
    latency = m["latencyP99"].value
    assert latency is not None and 40 < latency < 50  # ms
    stable = m["latencyP99"].stable_value
    assert stable is not None and 40 < stable < 50
    # The worst model container (1.2 of 2 GiB), not the gateway's 0.95.
    assert m["memoryUtilization"].value == pytest.approx(0.6)
    assert m["memoryUtilization"].stable_value == pytest.approx(0.4)
    assert m["errorRate"].value == 0.0
    assert all(x.time == NOW and x.requests == run.requests for x in run.measurements)
    assert "3 checks passed" in run.summary


async def test_high_p99_fails_with_value_and_threshold(prom: PrometheusClient) -> None:
    run = await run_analysis(Analysis(), ctx("slow"), prom, NOW)
    assert run.verdict == "Failed"
    p99 = by_name(run)["latencyP99"]
    assert p99.verdict == "Failed" and p99.value is not None and 900 < p99.value < 1000
    assert p99.message.endswith("ms > max 250 ms")
    assert run.summary.startswith("latencyP99 9") and run.summary.endswith(" ms > max 250 ms")
    # The stable revision is measured beside it, for people to compare.
    assert p99.stable_value is not None and p99.stable_value < 50


async def test_client_errors_never_count_as_errors(prom: PrometheusClient) -> None:
    run = await run_analysis(Analysis(), ctx("clienterr"), prom, NOW)
    rate = by_name(run)["errorRate"]
    assert rate.verdict == "Passed", run.summary
    assert rate.value is not None and rate.value < 0.01
    assert run.verdict == "Passed"

    broken = await run_analysis(Analysis(), ctx("broken"), prom, NOW)
    assert broken.verdict == "Failed"
    assert re.fullmatch(r"errorRate 0\.\d+ > max 0\.01", broken.summary), broken.summary


async def test_memory_gate_fails_and_is_judged_without_traffic(prom: PrometheusClient) -> None:
    hog = await run_analysis(Analysis(), ctx("memhog"), prom, NOW)
    assert hog.verdict == "Failed"
    assert hog.summary == "memoryUtilization 0.95 > max 0.9"


async def test_too_few_requests_is_inconclusive_never_failed(prom: PrometheusClient) -> None:
    run = await run_analysis(Analysis(), ctx("quiet"), prom, NOW)
    assert run.verdict == "Inconclusive", run.summary
    assert run.requests is not None and 0 < run.requests < 100
    assert run.summary == (
        f"{run.requests} canary requests in the last 30s, fewer than minRequests 100"
    )
    m = by_name(run)
    assert m["latencyP99"].verdict == "Inconclusive"
    assert m["errorRate"].verdict == "Inconclusive"
    # Memory is judged whatever the traffic; no limit (+Inf) is 0, not NaN.
    assert m["memoryUtilization"].verdict == "Passed"
    assert m["memoryUtilization"].value == 0.0

    # Too little traffic never hides a failure of a gate that does not need traffic.
    slow_traffic = Analysis.model_validate({"minRequests": 1_000_000})
    hog = await run_analysis(slow_traffic, ctx("memhog"), prom, NOW)
    assert hog.verdict == "Failed" and hog.summary == "memoryUtilization 0.95 > max 0.9"


async def test_firing_alert_fails_pending_does_not(prom: PrometheusClient) -> None:
    analysis = Analysis.model_validate(
        {
            "metrics": [{"name": "memory", "builtin": "memoryUtilization", "max": 0.9}],
            "alerts": ["TMOHighLatency", "TMOTestPending"],
        }
    )
    run = await run_analysis(analysis, ctx("slow"), prom, NOW)
    assert run.verdict == "Failed"
    assert run.summary == "alert TMOHighLatency firing for revision slow"
    m = by_name(run)
    assert m["alert:TMOHighLatency"].verdict == "Failed"
    assert m["alert:TMOTestPending"].verdict == "Passed"  # pending is not firing
    assert m["memory"].verdict == "Passed"

    healthy = await run_analysis(analysis, ctx("good"), prom, NOW)
    assert healthy.verdict == "Passed", healthy.summary


async def test_query_metrics(prom: PrometheusClient) -> None:
    answered = (
        'sum(increase(tmo_requests_total{namespace="{{namespace}}",model="{{ model }}",'
        'revision="{{canary}}"}[{{interval}}]))'
    )
    analysis = Analysis.model_validate(
        {"metrics": [{"name": "answered", "query": answered, "max": 10_000, "min": 100}]}
    )
    run = await run_analysis(analysis, ctx("good"), prom, NOW)
    assert run.verdict == "Passed", run.summary
    # The same number as the run's own request count: same labels, same window.
    # About the run's own request count: same labels, same window (queried a moment apart).
    assert run.measurements[0].value == pytest.approx(run.requests, rel=0.25)

    def one(name: str, query: str) -> dict[str, Any]:
        return {"name": name, "query": query, "max": 1}

    broken = Analysis.model_validate(
        {
            "metrics": [
                one("several", 'tmo_requests_total{revision="{{canary}}"}'),
                one("nothing", 'tmo_requests_total{revision="no-such-revision"}'),
                one("nan", "vector(0) / 0"),
                one("syntax", "sum(rate(tmo_requests_total[1m])"),
                one("typo", 'tmo_requests_total{revision="{{canry}}"}'),
                one("scalar", "scalar(vector(0.5))"),
            ]
        }
    )
    run = await run_analysis(broken, ctx("clienterr"), prom, NOW)
    m = by_name(run)
    assert m["several"].verdict == "Error"
    assert m["several"].message.startswith("query returned 4 series, expected one number: {")
    assert m["nothing"].verdict == "Error" and m["nothing"].message == "query returned no data"
    assert m["nan"].verdict == "Inconclusive" and m["nan"].value is None
    assert m["syntax"].verdict == "Error"
    assert "Prometheus refused the query (bad_data)" in m["syntax"].message
    assert "parse error" in m["syntax"].message
    assert m["typo"].verdict == "Error" and "{{canry}}" in m["typo"].message
    assert m["scalar"].verdict == "Passed" and m["scalar"].value == 0.5
    assert run.verdict == "Error"
    assert "several: query returned 4 series" in run.summary
    assert "syntax: Prometheus refused the query" in run.summary


async def test_label_values_are_quoted(prom: PrometheusClient) -> None:
    # Quotes and backslashes in a label value reach Prometheus as a valid string literal.
    run = await run_analysis(Analysis(), ctx('sl"ow\\', model='tri"age\\'), prom, NOW)
    assert all(m.verdict != "Error" for m in run.measurements), run.summary
    assert run.requests == 0 and run.verdict == "Inconclusive"


async def test_client_reads_vectors_and_scalars_and_reports_errors(
    prom: PrometheusClient, exporter: str
) -> None:
    assert await prom.query("scalar(vector(2))") == [({}, 2.0)]
    memory = await prom.query('tmo_memory_limit_bytes{revision="quiet"}')
    assert len(memory) == 2 and all(v == INF for _, v in memory)
    assert {labels["container"] for labels, _ in memory} == {"tmo-serve", "gateway"}
    # A long query goes as a POST form and still works.
    long = " + ".join(["scalar(vector(1))"] * 200)
    assert await prom.query(long) == [({}, 200.0)]
    with pytest.raises(PrometheusError, match="expected a vector or a scalar"):
        await prom.query('"a string"')
    with pytest.raises(PrometheusError, match=r"refused the query \(bad_data\).*parse error"):
        await prom.query("sum(")
    # Something that is not Prometheus answers 404.
    async with PrometheusClient(f"http://{exporter}") as other:
        with pytest.raises(PrometheusError, match="answered HTTP 404"):
            await other.query("up")


async def test_errors_when_prometheus_is_stopped(exporter: str, tmp_path: Path) -> None:
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "tmo", "static_configs": [{"targets": [exporter]}]}],
    }
    proc, url = start_prometheus(tmp_path, config)
    analysis = Analysis.model_validate({"alerts": ["TMOHighLatency"]})
    # A fractional timeout: it reaches Prometheus as a query parameter too.
    async with PrometheusClient(url, timeout=2.5) as client:
        try:
            up = await run_analysis(analysis, ctx("good"), client, NOW)
            assert all(m.verdict != "Error" for m in up.measurements), up.summary
        finally:
            proc.terminate()
            proc.wait(10)
        run = await run_analysis(analysis, ctx("good"), client, NOW)
    assert run.verdict == "Error"
    assert run.requests is None
    assert all(m.verdict == "Error" for m in run.measurements)
    assert run.summary.startswith(f"Prometheus at {url} is unreachable: ConnectError")
    assert "alert:TMOHighLatency" in by_name(run)


async def test_a_run_takes_one_timeout_not_one_per_query() -> None:
    # A Prometheus that accepts connections and never answers: every query times out together.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        async with PrometheusClient(url, timeout=1) as client:
            started = time.monotonic()
            run = await asyncio.wait_for(run_analysis(Analysis(), ctx("good"), client, NOW), 20)
            took = time.monotonic() - started
    assert run.verdict == "Error" and "ReadTimeout" in run.summary
    assert took < 5


# --- mannWhitney: both revisions' requests, over the canary's life -----------------------------


def compared(canary: str, age: float = 30) -> AnalysisContext:
    return AnalysisContext(NS, MODEL, canary, STABLE, MONITORING, canary_age_seconds=age)


MANN_WHITNEY = Analysis(judge="mannWhitney")


async def test_mannwhitney_passes_a_canary_like_stable(prom: PrometheusClient) -> None:
    run = await run_analysis(MANN_WHITNEY, compared("good"), prom, NOW)
    assert run.verdict == "Passed", run.summary
    m = by_name(run)
    assert list(m) == ["latencyP99", "memoryUtilization", "errorRate"]
    assert "not significantly worse" in m["latencyP99"].message
    assert "at look 1" in m["latencyP99"].message
    assert m["latencyP99"].value == pytest.approx(m["latencyP99"].stable_value, rel=0.05)
    # The figures come from the same requests the test ranks (40/s since the exporter started).
    assert run.requests is not None and run.requests >= 100
    assert re.search(r"; \d+ vs \d+ requests$", m["latencyP99"].message)


async def test_mannwhitney_fails_a_slower_canary(prom: PrometheusClient) -> None:
    run = await run_analysis(MANN_WHITNEY, compared("slow"), prom, NOW)
    assert run.verdict == "Failed"
    p99 = by_name(run)["latencyP99"]
    assert p99.verdict == "Failed"
    assert p99.message.startswith("worse than stable: ")
    assert p99.value is not None and p99.stable_value is not None
    assert p99.value > 10 * p99.stable_value


async def test_mannwhitney_fails_more_5xx_but_never_4xx(prom: PrometheusClient) -> None:
    broken = by_name(await run_analysis(MANN_WHITNEY, compared("broken"), prom, NOW))
    assert broken["errorRate"].verdict == "Failed"
    assert broken["errorRate"].value == pytest.approx(0.1, abs=0.01)
    # 40 % of its answers are 400 and 429: a client's mistakes are not the canary's errors.
    client = by_name(await run_analysis(MANN_WHITNEY, compared("clienterr"), prom, NOW))
    assert client["errorRate"].verdict == "Passed", client["errorRate"].message


async def test_mannwhitney_has_no_verdict_without_traffic(prom: PrometheusClient) -> None:
    run = await run_analysis(MANN_WHITNEY, compared("quiet"), prom, NOW)
    assert run.verdict == "Inconclusive"
    assert "fewer than minRequests 100" in run.summary
