"""One caller's bad request is that caller's 4xx, never the batch's 503; limits are 413s.

End to end: real TorchServe, the real gateway, tiny models. The batch cases run against their own
`tmo serve` that admits 16 requests at once (the shared `served` admits 4, fewer than a batch of
seven) and waits 300 ms to fill a batch, and read TorchServe's log to prove that the seven
requests really were one batch.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tmo_runtime.torchserve import read_keys

from tests.runtime.helpers import (
    REPO,
    Served,
    b64,
    model_name,
    png_bytes,
    start_serve,
    wait_ready,
    wav_bytes,
)

pytestmark = pytest.mark.slow

PNG = png_bytes()

# task -> (a good request, a bad one, a word the 400's message must hold)
CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any], str]] = {
    "truncated-png": (
        "image-classification",
        {"inputs": b64(PNG)},
        {"inputs": b64(PNG[: len(PNG) // 2])},
        "image",
    ),
    "parameters-oops": (
        "text-classification",
        {"inputs": "the refund is late"},
        {"inputs": "x", "parameters": "oops"},
        "parameters",
    ),
    "empty-prompt": (
        "text-generation",
        {"inputs": "hello", "parameters": {"max_new_tokens": 2}},
        {"inputs": "", "parameters": {"max_new_tokens": 2}},
        "empty",
    ),
    "speech-array-of-strings": (
        "speech-recognition",
        {"inputs": b64(wav_bytes(0.5))},
        {"inputs": {"array": ["a", "b"]}},
        "number",
    ),
}
BATCH_TASKS = sorted({task for task, *_ in CASES.values()})
BAD_AT = 3  # the bad request sits among the good ones


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path) -> Iterator[Served]:
    dest = tmp_path_factory.mktemp("wide") / "examples"
    dest.mkdir()
    (dest / "tiny-models").symlink_to(tiny_models, target_is_directory=True)
    paths = []
    for task in BATCH_TASKS:
        text = (REPO / "examples" / "local" / f"{task}.yaml").read_text()
        # A long batch delay so seven requests sent together are surely one batch.
        text = re.sub(r"maxBatchDelayMs: \d+", "maxBatchDelayMs: 300", text)
        (dest / f"{task}.yaml").write_text(text)
        paths.append(dest / f"{task}.yaml")
    workdir = Path(tempfile.mkdtemp(prefix="tmo-w", dir="/tmp"))
    s = start_serve(paths, workdir, "s3cr3t-token", "--max-concurrency", "16", "--max-queue", "16")
    try:
        wait_ready(s, 300)
        yield s
    finally:
        s.stop()


async def _together(url: str, headers: dict[str, str], bodies: list[Any]) -> list[httpx.Response]:
    async with httpx.AsyncClient(headers=headers, timeout=120) as client:
        return list(await asyncio.gather(*(client.post(url, json=b) for b in bodies)))


def _seven(case: str) -> tuple[str, list[dict[str, Any]], str]:
    task, good, bad, word = CASES[case]
    bodies = [good] * 6
    bodies.insert(BAD_AT, bad)
    return task, bodies, word


def _check(responses: list[httpx.Response], word: str) -> None:
    codes = [r.status_code for r in responses]
    assert codes == [200] * BAD_AT + [400] + [200] * (6 - BAD_AT), [r.text for r in responses]
    error = responses[BAD_AT].json()["error"]
    assert word in error.lower(), error
    for r in responses[:BAD_AT] + responses[BAD_AT + 1 :]:
        assert "error" not in r.json()


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_bad_request_in_a_batch_fails_alone(wide: Served, case: str) -> None:
    task, bodies, word = _seven(case)
    url = f"{wide.url}/predictions/{model_name(task)}"
    _check(asyncio.run(_together(url, wide.headers, bodies)), word)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_handler_isolates_a_bad_caller_of_one_torchserve_batch(wide: Served, case: str) -> None:
    """Straight to TorchServe (the gateway may refuse some of these itself): the seven are one
    batch, as the handler's log line says, and only the bad caller is refused."""
    task, bodies, word = _seven(case)
    ts = wide.state()["torchserve"]
    key = read_keys(Path(ts["key_file"])).inference
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    log = wide.workdir / "logs" / "torchserve.log"
    seen = log.stat().st_size
    url = f"{ts['inference']}/predictions/{model_name(task)}"
    _check(asyncio.run(_together(url, headers, bodies)), word)
    with log.open("rb") as f:
        f.seek(seen)
        new = f.read().decode(errors="replace")
    assert re.search(rf"{model_name(task)}\S* .*batch of 7 callers: 1 refused \(400\)", new), new


def test_no_request_of_the_batch_cases_was_a_5xx(wide: Served) -> None:
    metrics = httpx.get(wide.metrics_url + "/metrics").text
    assert re.search(r'tmo_requests_total\{[^}]*code="400"', metrics)
    assert not re.search(r'tmo_requests_total\{[^}]*code="5\d\d"[^}]*\} [1-9]', metrics)


# Everything below runs against the shared `served` (all seven example models).


def predict(served: Served, task: str, body: Any, timeout: float = 60) -> httpx.Response:
    url = f"{served.url}/predictions/{model_name(task)}"
    return httpx.post(url, json=body, headers=served.headers, timeout=timeout)


def _requests_total(served: Served) -> dict[str, float]:
    """tmo_requests_total summed by status code."""
    out: dict[str, float] = {}
    for line in httpx.get(served.metrics_url + "/metrics").text.splitlines():
        m = re.match(r'tmo_requests_total\{.*code="(\d+)".*\} (\S+)', line)
        if m:
            out[m[1]] = out.get(m[1], 0.0) + float(m[2])
    return out


@pytest.fixture(scope="module")
def before(served: Served) -> dict[str, float]:
    return _requests_total(served)


@pytest.mark.parametrize(
    ("task", "body"),
    [
        ("text-classification", {"inputs": "   "}),
        ("token-classification", {"inputs": "\n\t"}),
        ("feature-extraction", {"inputs": ["hello", ""]}),
        ("summarization", {"inputs": " "}),
        ("image-classification", {"inputs": ""}),
        ("speech-recognition", {"inputs": ""}),
        ("speech-recognition", {"inputs": {"array": [], "sampling_rate": 16000}}),
    ],
)
def test_empty_input_is_400(served: Served, before: Any, task: str, body: Any) -> None:
    r = predict(served, task, body)
    assert r.status_code == 400, r.text
    assert "empty" in r.json()["error"]


def test_unknown_parameter_is_400_naming_it(served: Served, before: Any) -> None:
    r = predict(served, "text-classification", {"inputs": "x", "parameters": {"topk": 2}})
    assert r.status_code == 400
    assert "'topk'" in r.json()["error"] and "top_k" in r.json()["error"]


def test_top_k_of_text_and_image_classification(served: Served, before: Any) -> None:
    r = predict(served, "text-classification", {"inputs": "x", "parameters": {"top_k": 1}})
    assert r.status_code == 200 and len(r.json()["scores"]) == 1
    r = predict(served, "image-classification", {"inputs": b64(PNG), "parameters": {"top_k": 2}})
    assert r.status_code == 200 and len(r.json()["top"]) == 2
    r = predict(served, "image-classification", {"inputs": b64(PNG), "parameters": {"top_k": 0}})
    assert r.status_code == 400 and "top_k" in r.json()["error"]


def test_over_long_text_is_413_and_truncation_reads_the_first_window(
    served: Served, before: Any
) -> None:
    long = "john " * 600  # 602 tokens with [CLS] and [SEP]; the manifest's window is 512
    r = predict(served, "text-classification", {"inputs": long})
    assert r.status_code == 413, r.text
    assert "spec.runtime.maxSequenceLength" in r.json()["error"]
    assert "602 tokens" in r.json()["error"]
    r = predict(served, "text-classification", {"inputs": long, "parameters": {"truncation": True}})
    assert r.status_code == 200, r.text
    assert r.json()["truncated"] is True and r.json()["input_tokens"] == 602


def test_token_classification_groups_entities(served: Served, before: Any) -> None:
    text = "john smith works at acme corp in london"
    grouped = predict(served, "token-classification", {"inputs": text})
    assert grouped.status_code == 200, grouped.text
    for e in grouped.json():
        assert set(e) == {"entity_group", "score", "word", "start", "end"}
        assert e["entity_group"] in {"PER", "ORG", "LOC"}
        assert text[e["start"] : e["end"]] == e["word"]
    none = {"inputs": text, "parameters": {"aggregation_strategy": "none"}}
    tokens = predict(served, "token-classification", none).json()
    assert len(tokens) >= len(text.split())  # one entry per token, "O" ones included
    bad = {"inputs": text, "parameters": {"aggregation_strategy": "greedy"}}
    r = predict(served, "token-classification", bad)
    assert r.status_code == 400 and "none, simple, first, average, max" in r.json()["error"]


def test_summarization_refuses_more_than_max_chunks(served: Served, before: Any) -> None:
    # ~8000 tokens in 128-token windows: ~72 windows, over the default maxChunks of 64.
    doc = "the party shall give notice " * 1600
    r = predict(served, "summarization", {"inputs": doc}, timeout=30)
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert "spec.runtime.maxChunks" in error and "64" in error


def test_speech_30_s_is_transcribed_in_windows(served: Served, before: Any) -> None:
    clip = wav_bytes(30.0, rate=8000)  # 8 kHz keeps the body under the 1 MiB cap
    r = predict(served, "speech-recognition", {"inputs": b64(clip)}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["text"] and r.json()["windows"] >= 3


def test_refusals_are_4xx_in_metrics_and_never_5xx(served: Served, before: Any) -> None:
    after = _requests_total(served)
    grew = {code for code in after if after[code] > before.get(code, 0.0)}
    assert {"400", "413"} <= grew
    assert not {code for code in grew if code.startswith("5")}
