"""`tmo serve` as a process: refusing tampered artifacts, draining on SIGTERM, `tmo dev`."""

from __future__ import annotations

import json
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
from tmo_runtime.torchserve import free_port

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


def test_empty_token_file_is_refused(tiny_models: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    uri = f"file://{tiny_models / 'text-classification'}"
    path.write_text(yaml.safe_dump(manifest("a", "text-classification", uri)))
    token = tmp_path / "token"
    token.write_text("\n")
    run = subprocess.run(
        [*TMO, "serve", "-f", str(path), "--token-file", str(token)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "is empty" in run.stderr and "openssl rand" in run.stderr


def test_prints_a_working_curl_and_removes_its_state_on_exit(
    tiny_models: Path, tmp_path: Path
) -> None:
    """What a new user does: start it, paste the printed curl, stop it with Ctrl-C."""
    path = tmp_path / "m.yaml"
    uri = f"file://{tiny_models / 'text-classification'}"
    path.write_text(yaml.safe_dump(manifest("tc", "text-classification", uri)))
    token = tmp_path / "token"
    token.write_text("a-secret-token-value\n")
    ports = ["--port", str(free_port()), "--metrics-port", str(free_port())]
    proc = subprocess.Popen(
        [*TMO, "serve", "-f", str(path), "--token-file", str(token), *ports],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("ready "):
                break
        ready = [x for x in lines if x.startswith("ready ")]
        assert ready, "".join(lines)
        state = next(x for x in lines if x.startswith("state ")).split()[1]
        assert Path(state).is_dir()
        command = ready[0].split("try:", 1)[1].strip()
        # The token is read from its file by the command, never printed.
        assert "a-secret-token-value" not in "".join(lines)
        assert "Authorization: Bearer" in command
        out = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=60, check=True
        )
        assert "label" in json.loads(out.stdout), out.stdout
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert not Path(state).exists(), "the temporary state directory was left behind"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
