"""Shared by the runtime benchmarks: a `tmo serve` process on free loopback ports."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from tmo_runtime.torchserve import free_port, read_keys

REPO = Path(__file__).resolve().parents[1]


def manifest(name: str, task: str, uri: str, **runtime: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tmo.dev/v1alpha1",
        "kind": "TransformerModel",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {"task": task, "model": {"uri": uri}, "runtime": runtime},
    }


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    gateway: str
    metrics: str
    state: dict[str, Any]

    def ts_headers(self) -> dict[str, str]:
        keys = read_keys(Path(self.state["torchserve"]["key_file"]))
        return {"Authorization": f"Bearer {keys.inference}"} if keys.inference else {}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def start(docs: list[dict[str, Any]], *extra: str, timeout: float = 300) -> Serve:
    work = Path(tempfile.mkdtemp(prefix="tmo-b", dir="/tmp"))
    (work / "m.yaml").write_text(yaml.safe_dump_all(docs))
    port, mport = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tmo.cli",
            "serve",
            "-f",
            str(work / "m.yaml"),
            "--port",
            str(port),
            "--metrics-port",
            str(mport),
            "--workdir",
            str(work / "w"),
            *extra,
        ],
        cwd=REPO,
        stdout=(work / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((work / "serve.log").read_text()[-3000:])
        try:
            if httpx.get(f"http://127.0.0.1:{mport}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        proc.kill()
        raise TimeoutError("tmo serve not ready")
    state = json.loads((work / "w" / "serve.json").read_text())
    return Serve(proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{mport}", state)


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


async def closed_loop(
    url: str, body: Any, headers: dict[str, str], concurrency: int, seconds: float
) -> dict[str, float]:
    """`concurrency` callers back to back for `seconds`: throughput and latency at saturation."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, timeout=120, limits=limits) as client:

        async def caller() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                r = await client.post(url, json=body)
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "errors": float(errors),
        "n": float(len(latencies)),
    }
