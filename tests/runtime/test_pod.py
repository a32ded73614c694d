"""The model pod as the operator renders it, run as local processes.

The command lines and environment come from `tmo.render` (the Deployment the operator applies),
with the pod's paths mapped onto a temp directory and TorchServe's ports made free: the fetch
init container packages a .mar, the torchserve container runs TorchServe under TMO's supervisor,
the gateway container serves it with auth, per-container memory, and a drain that TorchServe
outlives when both containers get SIGTERM at once, as kubelet sends it.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from tmo.render.configmap import MODEL_STORE, MOUNT_PATH
from tmo_runtime.torchserve import free_port
from tmo_runtime.ts_config import (
    ModelEntry,
    TorchServeSettings,
    render_config_properties,
    render_log4j2_xml,
)

from tests.runtime.helpers import REPO, inflight, manifest
from tests.runtime.rendered_pod import PodPaths, rendered_containers, run_rendered_fetch

pytestmark = pytest.mark.slow

MODEL = "pod-model"


def _memory_series(metrics_url: str) -> dict[str, float]:
    series = {}
    for line in httpx.get(metrics_url, timeout=2).text.splitlines():
        if line.startswith("tmo_memory_usage_bytes{"):
            labels, value = line.rsplit(" ", 1)
            container = labels.split('container="', 1)[1].split('"', 1)[0]
            series[container] = float(value)
    return series


def test_rendered_pod_serves_reports_memory_and_drains(tiny_models: Path) -> None:
    doc = manifest(
        MODEL, "summarization", f"file://{tiny_models / 'summarization'}", maxSequenceLength=128
    )
    doc["spec"]["auth"] = {"tokenSecretRef": {"name": "t", "key": "token"}}
    containers = rendered_containers(doc)
    revision = next(e["value"] for e in containers["gateway"]["env"] if e["name"] == "TMO_REVISION")
    paths = PodPaths()
    fetch, _ = run_rendered_fetch(doc, paths=paths)
    assert fetch.returncode == 0, fetch.stderr
    assert (paths.mapping[MODEL_STORE] / f"{MODEL}.mar").is_file()

    # The ConfigMap's files, on free ports (the rendered ones are fixed, for a pod of its own).
    settings = TorchServeSettings(
        model_store=str(paths.mapping[MODEL_STORE]),
        models=[ModelEntry(name=MODEL, url=f"{MODEL}.mar")],
        inference_port=free_port(),
        management_port=free_port(),
        metrics_port=free_port(),
        grpc_inference_port=free_port(),
        grpc_management_port=free_port(),
        token_auth=False,
    )
    (paths.mapping[MOUNT_PATH] / "config.properties").write_text(render_config_properties(settings))
    (paths.mapping[MOUNT_PATH] / "log4j2.xml").write_text(render_log4j2_xml())
    port, mport = free_port(), free_port()
    urls = {
        "TMO_TORCHSERVE_URL": f"http://127.0.0.1:{settings.inference_port}",
        "TMO_TORCHSERVE_MANAGEMENT_URL": f"http://127.0.0.1:{settings.management_port}",
        "TMO_GATEWAY_DRAIN_DELAY": "3",  # shorter than the pod's, same behaviour
    }
    logs = paths.root / "torchserve.log"
    with logs.open("wb") as ts_log:
        torchserve = subprocess.Popen(
            paths.argv(containers["torchserve"]),
            cwd=REPO,
            env=paths.env(containers["torchserve"], **urls),
            stdout=ts_log,
            stderr=subprocess.STDOUT,
        )
    gateway = subprocess.Popen(
        paths.argv(containers["gateway"]),
        cwd=REPO,
        env=paths.env(
            containers["gateway"],
            **urls,
            TMO_GATEWAY_PORT=str(port),
            TMO_GATEWAY_METRICS_PORT=str(mport),
            TMO_AUTH_TOKEN="pod-token",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{mport}/metrics"
    auth = {"Authorization": "Bearer pod-token"}
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert torchserve.poll() is None, logs.read_text()[-3000:]
            assert gateway.poll() is None, gateway.stderr.read() if gateway.stderr else ""
            try:
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise TimeoutError(logs.read_text()[-3000:])

        body = {"inputs": "the contract ends today"}
        assert httpx.post(f"{url}/predictions/{MODEL}", json=body).status_code == 401
        r = httpx.post(f"{url}/predictions/{MODEL}", json=body, headers=auth, timeout=60)
        assert r.status_code == 200, r.text
        assert isinstance(r.json()["summary_text"], str)
        metrics = httpx.get(metrics_url).text
        assert f'tmo_requests_total{{code="200",model="{MODEL}",revision="{revision}"}} 1.0' in (
            metrics
        )
        # The model's container reports its own memory (the JVM and the loaded model), not
        # the gateway's: both series are there, per container.
        for _ in range(50):
            memory = _memory_series(metrics_url)
            if "torchserve" in memory:
                break
            time.sleep(0.2)
        assert set(memory) == {"gateway", "torchserve"}, memory
        assert all(value > 0 for value in memory.values()), memory

        # Long requests in flight, then SIGTERM to both containers at once (kubelet's way):
        # TorchServe stays up until the gateway has answered every admitted request.
        long_doc = "the party shall give notice " * 300
        results: list[int] = []

        def call() -> None:
            r = httpx.post(
                f"{url}/predictions/{MODEL}",
                json={"inputs": long_doc, "parameters": {"max_new_tokens": 32}},
                headers=auth,
                timeout=120,
            )
            results.append(r.status_code)

        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        for _ in range(400):
            if inflight(metrics_url) == len(threads):
                break
            time.sleep(0.05)
        assert inflight(metrics_url) == len(threads)
        torchserve.send_signal(signal.SIGTERM)
        gateway.send_signal(signal.SIGTERM)
        # During the drain delay the pod is not ready (the Service stops routing to it) but a
        # request that was routed here meanwhile is still served, not refused.
        for _ in range(40):
            if httpx.get(metrics_url.replace("/metrics", "/readyz"), timeout=2).status_code == 503:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("/readyz still 200 after SIGTERM")
        late = httpx.post(f"{url}/predictions/{MODEL}", json=body, headers=auth, timeout=120)
        assert late.status_code == 200, late.text
        for t in threads:
            t.join(120)
        assert results == [200] * len(threads), results
        assert gateway.wait(60) == 0
        assert torchserve.wait(60) == 0, logs.read_text()[-3000:]
        assert "gateway drained: stopping TorchServe" in logs.read_text()
    finally:
        for proc in (gateway, torchserve):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_rendered_fetch_reads_a_pvc_model_from_its_read_only_mount(tiny_models: Path) -> None:
    """pvc://CLAIM/path: the rendered fetch container finds the model where the rendered
    volumeMount puts the claim's subPath, and packages it without writing to the claim."""
    import shutil

    doc = manifest(MODEL, "text-classification", "pvc://weights/models/tc")
    containers = rendered_containers(doc)
    (mount,) = [m for m in containers["fetch"]["volumeMounts"] if m["name"] == "model-source"]
    paths = PodPaths()
    # What kubelet mounts there: the subPath of the claim, read-only.
    claim_dir = Path(paths.local(mount["mountPath"]))
    shutil.copytree(tiny_models / "text-classification", claim_dir)
    for p in [claim_dir, *claim_dir.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    before = sorted(claim_dir.rglob("*"))
    try:
        fetch, _ = run_rendered_fetch(doc, paths=paths)
        assert fetch.returncode == 0, fetch.stderr
        assert (paths.mapping[MODEL_STORE] / f"{MODEL}.mar").is_file()
        assert sorted(claim_dir.rglob("*")) == before  # nothing written to the claim
    finally:
        for p in [claim_dir, *claim_dir.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        shutil.rmtree(paths.root, ignore_errors=True)
