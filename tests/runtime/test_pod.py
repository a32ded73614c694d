"""The model pod's layout as the operator renders it: fetch init -> .mar, TorchServe with its
token auth off on loopback, `python -m tmo_runtime gateway` configured from TMO_* variables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml
from tmo_runtime.torchserve import TorchServe, free_port
from tmo_runtime.ts_config import ModelEntry, TorchServeSettings

from tests.runtime.helpers import REPO, manifest

pytestmark = pytest.mark.slow


def test_pod_fetch_torchserve_gateway(tiny_models: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="tmo-p", dir="/tmp"))
    doc = manifest(
        "pod-model", "token-classification", f"file://{tiny_models / 'token-classification'}"
    )
    doc["spec"]["auth"] = {"tokenSecretRef": {"name": "t", "key": "token"}}
    doc["status"] = {"revision": "abc1234"}
    (root / "model.yaml").write_text(yaml.safe_dump(doc))
    store = root / "store"
    fetch = subprocess.run(
        [
            sys.executable,
            "-m",
            "tmo_runtime",
            "fetch",
            "--manifest",
            str(root / "model.yaml"),
            "--model-store",
            str(store),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fetch.returncode == 0, fetch.stderr
    assert (store / "pod-model.mar").is_file()

    settings = TorchServeSettings(
        model_store=str(store),
        models=[ModelEntry(name="pod-model", url="pod-model.mar")],
        inference_port=free_port(),
        management_port=free_port(),
        metrics_port=free_port(),
        grpc_inference_port=free_port(),
        grpc_management_port=free_port(),
        token_auth=False,
    )
    ts = TorchServe(settings, root / "ts")
    port, mport = free_port(), free_port()
    env = {
        **os.environ,
        "TMO_TORCHSERVE_URL": ts.inference_url,
        "TMO_TORCHSERVE_MANAGEMENT_URL": ts.management_url,
        "TMO_GATEWAY_PORT": str(port),
        "TMO_GATEWAY_METRICS_PORT": str(mport),
        "TMO_REVISION": "abc1234",
        "TMO_AUTH_TOKEN": "pod-token",
    }
    ts.start()
    gateway = subprocess.Popen(
        [sys.executable, "-m", "tmo_runtime", "gateway", "--manifest", str(root / "model.yaml")],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert gateway.poll() is None, gateway.stderr.read() if gateway.stderr else ""
            try:
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise TimeoutError(ts.log_path.read_text()[-2000:])
        body = {"inputs": "mary lives in berlin"}
        assert httpx.post(url + "/predictions/pod-model", json=body).status_code == 401
        r = httpx.post(
            url + "/predictions/pod-model",
            json=body,
            headers={"Authorization": "Bearer pod-token"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert r.json()[0]["word"] == "mary"
        metrics = httpx.get(f"http://127.0.0.1:{mport}/metrics").text
        assert 'tmo_requests_total{code="200",model="pod-model",revision="abc1234"} 1.0' in metrics
    finally:
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(30) == 0
        ts.stop()
