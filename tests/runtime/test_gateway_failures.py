"""The gateway when things go wrong, end to end against real TorchServe: draining on SIGTERM,
TorchServe dying, a slow TorchServe (504), TorchServe's own full queue (503) and a rotated
client token."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.runtime.helpers import Served, inflight, manifest, start_serve, wait_ready

pytestmark = pytest.mark.slow

MODEL = "sum"
# The same model with batching that waits 3 s to fill a batch of 8: one request alone takes
# 3 s, however fast the machine (the tests' "slow TorchServe", deterministic).
SLOW_MODEL = "slowsum"
# Answered in ~0.1 s by the tiny model; SLOW generates the model's most tokens (~1.3 s here).
QUICK: dict[str, Any] = {"inputs": "hello there world", "parameters": {"max_new_tokens": 1}}
SLOW: dict[str, Any] = {"inputs": "hello there world", "parameters": {"max_new_tokens": 127}}
DRAIN_DELAY = 4.0
DRAIN_TIMEOUT = 3.0


@dataclass
class Serves:
    shared: Served  # token rotation, TorchServe's full queue, the gateway's timeout
    drain: Served  # SIGTERM
    crash: Served  # TorchServe killed

    def all(self) -> list[Served]:
        return [self.shared, self.drain, self.crash]


def _workdir() -> Path:
    # Short on purpose: TorchServe's workers put AF_UNIX sockets under it.
    return Path(tempfile.mkdtemp(prefix="tmo-x", dir="/tmp"))


@pytest.fixture(scope="module")
def serves(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serves]:
    """Three `tmo serve`s of the tiny summarisation model, started at once (each test waits
    for its own): one worker, no batching, so one slow request keeps TorchServe busy."""
    path = tmp_path_factory.mktemp("failures") / "m.yaml"
    uri = f"file://{tiny_models / 'summarization'}"
    doc = manifest(MODEL, "summarization", uri, maxSequenceLength=128, batchSize=1)
    slow = manifest(
        SLOW_MODEL, "summarization", uri, maxSequenceLength=128, batchSize=8, maxBatchDelayMs=3000
    )
    path.write_text(yaml.safe_dump_all([doc, slow]))
    started: list[Served] = []
    try:
        for token, extra in (
            ("token-a", ["--job-queue-size", "1", "--request-timeout", "0.5"]),
            (
                None,
                [
                    "--max-concurrency",
                    "1",
                    "--drain-delay",
                    str(DRAIN_DELAY),
                    "--drain-timeout",
                    str(DRAIN_TIMEOUT),
                ],
            ),
            (None, []),
        ):
            started.append(start_serve(path, _workdir(), token, *extra))
        yield Serves(*started)
    finally:
        for s in started:
            s.stop()


def ready(s: Served) -> Served:
    wait_ready(s, 240)
    return s


@pytest.fixture(scope="module")
def shared(serves: Serves) -> Served:
    s = ready(serves.shared)
    settle(s)  # the first answer is the slowest: not under the 0.5 s timeout of the tests
    return s


def predict(
    s: Served, body: dict[str, Any], timeout: float = 30.0, model: str = MODEL, **kw: Any
) -> httpx.Response:
    headers = kw.pop("headers", s.headers if s.token else {})
    return httpx.post(
        f"{s.url}/predictions/{model}", json=body, headers=headers, timeout=timeout, **kw
    )


def settle(s: Served, timeout: float = 60.0) -> None:
    """Wait until TorchServe answers a quick request again (it finishes what the gateway gave
    up on in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        code = predict(s, QUICK).status_code
        if code == 200:
            return
        assert time.monotonic() < deadline, f"TorchServe still busy: {code}"
        time.sleep(0.2)


def requests_total(s: Served, code: int) -> float:
    text = httpx.get(s.metrics_url + "/metrics", timeout=5).text
    prefix = "tmo_requests_total{"
    lines = [x for x in text.splitlines() if x.startswith(prefix) and f'code="{code}"' in x]
    return sum(float(x.rsplit(" ", 1)[1]) for x in lines)


def assert_retry_json(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers.get("retry-after") == "1", r.headers
    assert r.headers["content-type"].startswith("application/json")
    assert isinstance(r.json().get("error"), str) and r.json()["error"]


def test_rotated_token_file_is_read_again_without_a_restart(shared: Served) -> None:
    assert predict(shared, QUICK).status_code == 200  # token A
    token_file = shared.workdir.parent / (shared.workdir.name + ".token")
    token_file.write_text("token-b\n")
    # A Secret volume is updated in place: a new mtime is what the gateway looks at.
    mtime = time.time() + 2
    os.utime(token_file, (mtime, mtime))
    old = predict(shared, QUICK)
    assert old.status_code == 401, old.text
    assert old.headers["www-authenticate"].startswith("Bearer")
    assert "error" in old.json()
    new = predict(shared, QUICK, headers={"Authorization": "Bearer token-b"})
    assert new.status_code == 200, new.text
    assert "summary_text" in new.json()
    assert shared.process.poll() is None  # no restart
    shared.token = "token-b"


def test_torchserve_full_queue_is_a_503_with_retry_after(shared: Served) -> None:
    """--job-queue-size 1, one worker: one request running, one queued, the rest refused by
    TorchServe itself; the gateway passes its 503 on as JSON with Retry-After."""
    before = requests_total(shared, 503)
    results: list[httpx.Response] = []
    failures: list[str] = []  # a client-side error is a finding too: no request may hang
    lock = threading.Lock()

    def call(body: dict[str, Any]) -> None:
        started = time.monotonic()
        try:
            r = predict(shared, body)
        except httpx.HTTPError as e:
            with lock:
                failures.append(f"{type(e).__name__} after {time.monotonic() - started:.1f}s: {e}")
            return
        with lock:
            results.append(r)

    busy = threading.Thread(target=call, args=(SLOW,))
    busy.start()
    time.sleep(0.3)  # the slow one is at the worker (a batch of one is taken at once)
    others = [threading.Thread(target=call, args=(QUICK,)) for _ in range(4)]
    for t in others:
        t.start()
    for t in [busy, *others]:
        t.join(60)
    assert not failures, failures
    refused = [r for r in results if r.status_code == 503]
    assert refused, [(r.status_code, r.text[:200]) for r in results]
    for r in refused:
        assert_retry_json(r, 503)
    # The rest were answered, or timed out at the gateway (--request-timeout 0.5): never a 500.
    assert {r.status_code for r in results} <= {200, 503, 504}, [r.text for r in results]
    assert requests_total(shared, 503) - before == len(refused)
    settle(shared)


def test_torchserve_too_slow_is_a_504(shared: Served) -> None:
    """--request-timeout 0.5 and a request TorchServe holds 3 s (its batch delay)."""
    before = requests_total(shared, 504)
    start = time.monotonic()
    r = predict(shared, QUICK, model=SLOW_MODEL)
    assert r.status_code == 504, r.text
    assert time.monotonic() - start < 5
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"error": "TorchServe did not answer in time"}
    assert requests_total(shared, 504) - before == 1
    settle(shared)
    assert shared.process.poll() is None


def test_sigterm_delay_then_refusal_and_a_bounded_drain(serves: Serves) -> None:
    """--max-concurrency 1, --drain-delay 4, --drain-timeout 3: after SIGTERM the gateway is
    not ready but still takes requests for 4 s, then answers new ones 503; requests admitted
    meanwhile that are still running 3 s later do not keep it alive."""
    s = ready(serves.drain)
    assert predict(s, QUICK).status_code == 200
    s.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    while (readyz := httpx.get(s.metrics_url + "/readyz", timeout=2)).status_code == 200:
        assert time.monotonic() - signalled < 1, "still ready after SIGTERM"
        time.sleep(0.05)
    assert readyz.status_code == 503 and readyz.json()["draining"] is True
    # Still answering during the delay (a load balancer may still route here).
    assert predict(s, QUICK).status_code == 200

    # Admitted during the delay: 90 s of work at one request at a time (3 s batch delay each).
    results: list[int] = []
    # One client for all: a client each costs ~0.1 s of this small machine's CPU.
    client = httpx.Client(timeout=90, limits=httpx.Limits(max_connections=64))

    def call() -> None:
        try:
            r = client.post(f"{s.url}/predictions/{SLOW_MODEL}", json=QUICK)
            results.append(r.status_code)
        except httpx.HTTPError:
            results.append(-1)  # cut off when the gateway stopped

    slow = [threading.Thread(target=call) for _ in range(30)]
    for t in slow:
        t.start()
    deadline = signalled + DRAIN_DELAY - 0.5
    while inflight(s.metrics_url + "/metrics") < len(slow):
        assert time.monotonic() < deadline, "slow requests not admitted during the delay"
        time.sleep(0.05)

    # After the delay: new requests are refused with 503 and Retry-After.
    time.sleep(max(0.0, signalled + DRAIN_DELAY + 0.5 - time.monotonic()))
    assert_retry_json(predict(s, QUICK, timeout=5), 503)
    assert "draining" in predict(s, QUICK, timeout=5).json()["error"]
    assert httpx.get(s.metrics_url + "/readyz", timeout=2).status_code == 503

    # The drain timeout bounds the wait (then uvicorn's 5 s and TorchServe's stop).
    s.process.wait(DRAIN_DELAY + DRAIN_TIMEOUT + 15)
    elapsed = time.monotonic() - signalled
    assert elapsed < DRAIN_DELAY + DRAIN_TIMEOUT + 12, elapsed
    for t in slow:
        t.join(30)
    client.close()
    assert len(results) == len(slow)
    assert results.count(200) < len(slow), "the process waited for every slow request"


def test_torchserve_killed_is_a_503_then_the_gateway_stops(serves: Serves) -> None:
    s = ready(serves.crash)
    assert predict(s, QUICK).status_code == 200
    ts_pid = int(s.state()["torchserve_pid"])
    os.killpg(ts_pid, signal.SIGKILL)
    r = predict(s, QUICK, timeout=10)
    assert_retry_json(r, 503)
    # Nothing left to serve: the gateway stops by itself and `tmo serve` exits non-zero,
    # saying where TorchServe's log is (kept for the user).
    assert s.process.wait(30) == 1
    log = s.log.read_text()
    assert "TorchServe exited: stopping the gateway" in log
    assert "TorchServe exited unexpectedly; its log:" in log
    with pytest.raises(httpx.ConnectError):
        httpx.get(s.url + "/livez", timeout=2)
