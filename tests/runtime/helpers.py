"""Shared helpers for runtime tests: real processes on free loopback ports."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tmo_runtime.tiny_models import TASKS
from tmo_runtime.torchserve import free_port

REPO = Path(__file__).resolve().parents[2]
TMO = [sys.executable, "-m", "tmo.cli"]


def manifest(name: str, task: str, uri: str, **runtime: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": task,
        "model": {"uri": uri, "format": "huggingface"},
        "runtime": {"workers": 1, "batchSize": 8, "maxBatchDelayMs": 50, **runtime},
    }
    return {
        "apiVersion": "tmo.dev/v1alpha1",
        "kind": "TransformerModel",
        "metadata": {"name": name, "namespace": "test"},
        "spec": spec,
    }


def model_name(task: str) -> str:
    return "tiny-" + task


def example_manifests(dest: Path, models: Path) -> list[Path]:
    """examples/local/*.yaml copied beside a `tiny-models` link, as a user would run them."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "tiny-models").symlink_to(models, target_is_directory=True)
    paths = []
    for task in TASKS:
        src = REPO / "examples" / "local" / f"{task}.yaml"
        (dest / src.name).write_text(src.read_text())
        paths.append(dest / src.name)
    return paths


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    url: str
    metrics_url: str
    token: str
    workdir: Path
    log: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.workdir / "serve.json").read_text()))

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return int(self.process.returncode)


def start_serve(
    manifest_path: Path | list[Path], workdir: Path, token: str | None, *extra: str
) -> Served:
    port, mport = free_port(), free_port()
    log = workdir.parent / (workdir.name + ".log")
    paths = manifest_path if isinstance(manifest_path, list) else [manifest_path]
    args = [*TMO, "serve", *(a for p in paths for a in ("-f", str(p))), "--port", str(port)]
    args += ["--metrics-port", str(mport), "--workdir", str(workdir), *extra]
    if token is not None:
        token_file = workdir.parent / (workdir.name + ".token")
        token_file.write_text(token + "\n")
        args += ["--token-file", str(token_file)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Served(
        proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{mport}", token or "", workdir, log
    )


def wait_ready(served: Served, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise RuntimeError(f"tmo serve exited: {served.log.read_text()[-3000:]}")
        try:
            if httpx.get(served.metrics_url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"not ready after {timeout}s: {served.log.read_text()[-3000:]}")


def png_bytes(
    color: tuple[int, int, int] = (200, 10, 10), size: tuple[int, int] = (40, 30)
) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def wav_bytes(seconds: float = 0.5, rate: int = 16000) -> bytes:
    import numpy as np

    t = np.arange(int(seconds * rate))
    samples = (np.sin(t / 7.0) * 8000).astype(np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def inflight(metrics_url: str) -> float:
    """tmo_inflight_requests summed over models, from a gateway's /metrics URL."""
    text = httpx.get(metrics_url, timeout=2).text
    lines = [line for line in text.splitlines() if line.startswith("tmo_inflight_requests{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)
