"""A real Prometheus (Debian's) scrapes the gateway; the queries KEDA and the gates use work."""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from tmo.render.autoscaling import inflight_query
from tmo.render.monitoring import alert_rules
from tmo.render.settings import RenderSettings
from tmo_runtime.torchserve import free_port

from tests.runtime.helpers import Served, model_name

pytestmark = pytest.mark.slow

MODEL = model_name("text-generation")
P99 = (
    "histogram_quantile(0.99, sum by (le) "
    f'(rate(tmo_request_duration_seconds_bucket{{model="{MODEL}",code="200"}}[1m])))'
)


@pytest.fixture(scope="module")
def prometheus(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: run `make deps` (Debian package prometheus)"
    base = tmp_path_factory.mktemp("prom")
    target = served.metrics_url.removeprefix("http://")
    (base / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        # In a cluster the ServiceMonitor's target labels add the pod's namespace.
        f"  - job_name: tmo\n    static_configs: [{{targets: ['{target}'], "
        "labels: {namespace: test}}]\n"
    )
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
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise TimeoutError((base / "prometheus.log").read_text())
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def query(prom: str, expr: str) -> float | None:
    r = httpx.get(prom + "/api/v1/query", params={"query": expr}, timeout=5)
    r.raise_for_status()
    result = r.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_target_is_up(prometheus: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and query(prometheus, 'up{job="tmo"}') != 1.0:
        time.sleep(0.5)
    assert query(prometheus, 'up{job="tmo"}') == 1.0
    usage = query(prometheus, f'tmo_memory_usage_bytes{{model="{MODEL}"}}')
    assert usage is not None and usage > 0
    limit = query(prometheus, f'tmo_memory_limit_bytes{{model="{MODEL}"}}')
    assert limit is not None and limit >= usage


def test_operator_alert_rules_evaluate_on_gateway_metrics(prometheus: str) -> None:
    """The PrometheusRule expressions the operator renders find the gateway's series."""
    doc = {
        "metadata": {"name": MODEL, "namespace": "test"},
        "spec": {"monitoring": {"latencyP99Ms": 250, "memoryUtilization": 0.9, "errorRate": 0.01}},
    }
    for rule in alert_rules(doc, RenderSettings()):
        # Drop the threshold: the comparison filters samples, the selector is what is checked.
        expr = rule["expr"].rsplit(" > ", 1)[0]
        r = httpx.get(prometheus + "/api/v1/query", params={"query": expr}, timeout=5)
        assert r.status_code == 200 and r.json()["status"] == "success", (rule["alert"], r.text)
    memory = next(r for r in alert_rules(doc, RenderSettings()) if r["alert"] == "TMOMemorySpike")
    assert query(prometheus, memory["expr"].rsplit(" > ", 1)[0]) is not None


async def test_p99_and_inflight_under_load(served: Served, prometheus: str) -> None:
    # KEDA's query exactly as the operator renders it into the ScaledObject.
    revision = served.state()["models"][MODEL]["revision"]
    inflight = inflight_query("test", MODEL, revision)
    url = f"{served.url}/predictions/{MODEL}"
    body = {"inputs": "the customer asked about the refund", "parameters": {"max_new_tokens": 24}}
    seen_inflight: list[float] = []
    stop = asyncio.Event()

    async def caller(client: httpx.AsyncClient) -> None:
        for _ in range(200):  # bounded: never an endless loop
            if stop.is_set():
                return
            r = await client.post(url, json=body)
            assert r.status_code in (200, 429), r.text

    async def sampler() -> None:
        while not stop.is_set():
            value = await asyncio.to_thread(query, prometheus, inflight)
            if value is not None:
                seen_inflight.append(value)
            await asyncio.sleep(0.5)

    async with httpx.AsyncClient(headers=served.headers, timeout=60) as client:
        callers = [asyncio.create_task(caller(client)) for _ in range(6)]
        sampling = asyncio.create_task(sampler())
        await asyncio.sleep(8)
        stop.set()
        await asyncio.gather(*callers, sampling)
    await asyncio.sleep(2.5)  # one more scrape after the load

    # KEDA's query saw requests in flight while the load ran, and is bounded by what was sent.
    assert seen_inflight and max(seen_inflight) >= 1 and max(seen_inflight) <= 6
    peak = query(prometheus, f"max_over_time({inflight}[1m:1s])")
    assert peak is not None and 1 <= peak <= 6
    assert query(prometheus, inflight) == 0.0
    p99 = query(prometheus, P99)
    assert p99 is not None and math.isfinite(p99) and 0 < p99 < 60
    total = query(prometheus, f'sum(tmo_requests_total{{model="{MODEL}",code="200"}})')
    assert total is not None and total >= 6
