"""`tmo serve` as a process: refusing tampered artifacts, draining on SIGTERM, `tmo dev`."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from tmo_runtime.fetcher import tree_sha256

from tests.runtime.helpers import REPO, TMO, inflight, manifest, start_serve, wait_ready

pytestmark = pytest.mark.slow


def test_tmo_dev_tiny_model_and_sha256(tmp_path: Path) -> None:
    out = tmp_path / "tc"
    run = subprocess.run(
        [*TMO, "dev", "tiny-model", "--task", "text-classification", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    digest = subprocess.run(
        [*TMO, "dev", "sha256", str(out)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert digest.stdout.strip() == tree_sha256(out)
    assert f"sha256={tree_sha256(out)}" in run.stdout


def test_tampered_artifact_refused_by_tmo_serve(tiny_models: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    for f in (tiny_models / "text-classification").iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    doc = manifest("tampered", "text-classification", f"file://{model}")
    doc["spec"]["model"]["sha256"] = tree_sha256(model)
    (model / "config.json").write_text((model / "config.json").read_text() + " ")
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    run = subprocess.run(
        [*TMO, "serve", "-f", str(path), "--workdir", str(tmp_path / "w")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 3
    assert "refusing to serve" in run.stderr and "sha256 mismatch" in run.stderr
    # Refused before anything started: no TorchServe state was written.
    assert not (tmp_path / "w" / "serve.json").exists()


def test_auth_manifest_needs_a_token_file(tiny_models: Path, tmp_path: Path) -> None:
    doc = manifest("a", "text-classification", f"file://{tiny_models / 'text-classification'}")
    doc["spec"]["auth"] = {"tokenSecretRef": {"name": "t", "key": "token"}}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    run = subprocess.run(
        [*TMO, "serve", "-f", str(path)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "--token-file" in run.stderr


def test_sigterm_drains_in_flight_requests_and_stops_every_child(
    tiny_models: Path, tmp_path: Path
) -> None:
    doc = manifest(
        "drain", "summarization", f"file://{tiny_models / 'summarization'}", maxSequenceLength=128
    )
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    workdir = Path(tempfile.mkdtemp(prefix="tmo-d", dir="/tmp"))
    served = start_serve(path, workdir, None)
    try:
        wait_ready(served, 240)
        ts_pid = served.state()["torchserve_pid"]
        url = f"{served.url}/predictions/drain"
        long_doc = "the party shall give notice " * 300
        results: list[int] = []

        def call() -> None:
            r = httpx.post(
                url, json={"inputs": long_doc, "parameters": {"max_new_tokens": 32}}, timeout=120
            )
            results.append(r.status_code)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        # Signal only once all four are admitted (in flight or queued for a slot): a request
        # that reaches the gateway after SIGTERM is rightly refused with 503, so signalling
        # earlier makes the outcome depend on thread scheduling.
        for _ in range(400):
            if inflight(served.metrics_url + "/metrics") == len(threads):
                break
            time.sleep(0.05)
        assert inflight(served.metrics_url + "/metrics") == len(threads)
        served.process.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(120)
        assert served.process.wait(60) == 0
        # Every request admitted before the signal got its answer.
        assert results == [200, 200, 200, 200], results
        with pytest.raises(ProcessLookupError):
            os.killpg(ts_pid, 0)  # TorchServe's whole process group is gone
    finally:
        served.stop()
