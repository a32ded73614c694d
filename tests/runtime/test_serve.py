"""`tmo serve` end to end: real TorchServe 0.12, the real gateway, tiny models of every task."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.runtime.helpers import Served, b64, model_name, png_bytes, wav_bytes

pytestmark = pytest.mark.slow

LONG_DOC = " ".join(
    f"clause {i} the party shall give notice of termination to the other party" for i in range(60)
)


def predict(
    served: Served, task: str, content_type: str | None = None, **kw: Any
) -> httpx.Response:
    headers = {**served.headers, **({"Content-Type": content_type} if content_type else {})}
    url = f"{served.url}/predictions/{model_name(task)}"
    return httpx.post(url, headers=headers, timeout=60, **kw)


def test_text_classification_shape(served: Served) -> None:
    r = predict(served, "text-classification", json={"inputs": "the payment is late"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["label"] in {"negative", "neutral", "positive"}
    assert set(out["scores"]) == {"negative", "neutral", "positive"}
    assert abs(sum(out["scores"].values()) - 1.0) < 1e-4


def test_token_classification_shape(served: Served) -> None:
    text = "john works at acme corp in london"
    r = predict(served, "token-classification", json={"inputs": text})
    assert r.status_code == 200, r.text
    entities = r.json()
    # Grouped by default (aggregation_strategy simple): whole entities, no B-/I- prefixes.
    assert all(e["entity_group"] in {"PER", "ORG", "LOC", "MISC"} for e in entities)
    assert all(text[e["start"] : e["end"]] == e["word"] for e in entities)
    r = predict(
        served,
        "token-classification",
        json={"inputs": text, "parameters": {"aggregation_strategy": "none"}},
    )
    tokens = r.json()
    assert tokens and all(
        e["entity"].split("-")[-1] in {"O", "PER", "ORG", "LOC", "MISC"} for e in tokens
    )


def test_feature_extraction_shape(served: Served) -> None:
    r = predict(served, "feature-extraction", json={"inputs": ["hello", "the court"]})
    assert r.status_code == 200, r.text
    rows = r.json()
    assert len(rows) == 2 and all(len(row["embedding"]) == 32 for row in rows)


def test_summarization_short_is_one_chunk(served: Served) -> None:
    r = predict(served, "summarization", json={"inputs": "the contract ends today"})
    assert r.status_code == 200, r.text
    assert r.json()["chunks"] == 1 and isinstance(r.json()["summary_text"], str)


def test_summarization_long_document_is_chunked(served: Served) -> None:
    # ~900 tokens against a 128-token window (maxSequenceLength 128 in the manifest).
    r = predict(
        served, "summarization", json={"inputs": LONG_DOC, "parameters": {"max_new_tokens": 4}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["chunks"] >= 5


def test_chat_keeps_the_turns(served: Served) -> None:
    turns = [
        {"role": "system", "content": "you are a legal review assistant"},
        {"role": "user", "content": "review the termination clause"},
        {"role": "assistant", "content": "the notice period is one month"},
        {"role": "user", "content": "and the liability clause"},
    ]
    params = {"max_new_tokens": 6}
    one = predict(served, "text-generation", json={"messages": turns[1:2], "parameters": params})
    many = predict(served, "text-generation", json={"messages": turns, "parameters": params})
    assert one.status_code == many.status_code == 200, many.text
    a, b = one.json(), many.json()
    # The whole conversation went into the prompt, and comes back with the new turn last.
    assert b["prompt_tokens"] > a["prompt_tokens"] + 10
    assert b["messages"][:4] == turns
    assert b["messages"][4]["role"] == "assistant"
    assert b["messages"][4]["content"] == b["generated_text"]


def test_text_generation_prompt(served: Served) -> None:
    r = predict(
        served, "text-generation", json={"inputs": "hello", "parameters": {"max_new_tokens": 3}}
    )
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["generated_text"], str)


def test_image_classification_raw_and_base64(served: Served) -> None:
    raw = predict(
        served,
        "image-classification",
        content=png_bytes(),
        content_type="image/png",
    )
    assert raw.status_code == 200, raw.text
    assert raw.json()["label"] in {"cat", "dog", "bird"}
    enc = predict(
        served,
        "image-classification",
        json={"inputs": [b64(png_bytes()), b64(png_bytes((0, 0, 255)))]},
    )
    assert enc.status_code == 200 and len(enc.json()) == 2


def test_speech_recognition_wav(served: Served) -> None:
    r = predict(
        served,
        "speech-recognition",
        content=wav_bytes(),
        content_type="audio/wav",
    )
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["text"], str)
    # 8 kHz input is resampled to the model's 16 kHz.
    r = predict(served, "speech-recognition", json={"inputs": b64(wav_bytes(rate=8000))})
    assert r.status_code == 200, r.text


def test_bad_request_fails_alone(served: Served) -> None:
    r = predict(
        served,
        "image-classification",
        content=b"not an image",
        content_type="application/octet-stream",
    )
    assert r.status_code == 400


async def test_mixed_batch_each_caller_gets_its_own_answer(served: Served) -> None:
    """Concurrent callers land in one TorchServe batch (maxBatchDelay 50 ms); answers match."""
    texts = [
        f"{w} " * (i + 1)
        for i, w in enumerate(["hello", "court", "payment", "paris", "report", "team"])
    ]
    async with httpx.AsyncClient(headers=served.headers, timeout=60) as client:
        url = f"{served.url}/predictions/{model_name('feature-extraction')}"
        # Alone, one by one: the reference answers.
        alone = [(await client.post(url, json={"inputs": t})).json()["embedding"] for t in texts]
        # Together, mixed with a multi-input request and a malformed one.
        calls = [client.post(url, json={"inputs": t}) for t in texts]
        calls.append(client.post(url, json={"inputs": texts[:2]}))
        calls.append(client.post(url, json={"nothing": 1}))
        together = await asyncio.gather(*calls)
    for expected, r in zip(alone, together[: len(texts)], strict=True):
        assert r.status_code == 200
        got = r.json()["embedding"]
        assert max(abs(a - b) for a, b in zip(expected, got, strict=True)) < 1e-4
    pair = together[len(texts)].json()
    assert len(pair) == 2
    assert max(abs(a - b) for a, b in zip(alone[1], pair[1]["embedding"], strict=True)) < 1e-4
    assert together[-1].status_code == 400


def test_auth_401_without_or_with_wrong_token(served: Served) -> None:
    url = f"{served.url}/predictions/{model_name('text-classification')}"
    assert httpx.post(url, json={"inputs": "x"}).status_code == 401
    wrong = httpx.post(url, json={"inputs": "x"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    assert (
        httpx.get(f"{served.url}/v2/models/{model_name('text-classification')}").status_code == 401
    )
    ok = httpx.post(url, json={"inputs": "x"}, headers=served.headers, timeout=30)
    assert ok.status_code == 200


def test_unknown_model_is_404(served: Served) -> None:
    r = httpx.post(f"{served.url}/predictions/nope", json={"inputs": "x"}, headers=served.headers)
    assert r.status_code == 404


def test_torchserve_is_loopback_only_and_keeps_its_own_token(served: Served) -> None:
    state = served.state()
    ts = state["torchserve"]
    for url in (ts["inference"], ts["management"], ts["metrics"]):
        assert url.startswith("http://127.0.0.1:")
    # Without TorchServe's own key its API refuses, so only the gateway (which holds it) gets in.
    r = httpx.get(ts["management"] + "/models")
    assert r.status_code in (400, 401)
    config = (served.workdir / "config.properties").read_text()
    assert "enable_model_api=false" in config and "allowed_urls=file://" in config
    assert "s3cr3t" not in served.log.read_text()


def test_oip_v2_health_and_metadata(served: Served) -> None:
    assert httpx.get(f"{served.url}/v2/health/live").json() == {"live": True}
    ready = httpx.get(f"{served.url}/v2/health/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    server = httpx.get(f"{served.url}/v2", headers=served.headers).json()
    assert {"name", "version", "extensions"} <= server.keys()
    name = model_name("text-classification")
    meta = httpx.get(f"{served.url}/v2/models/{name}", headers=served.headers).json()
    assert meta["name"] == name and meta["platform"] == "torchserve" and meta["versions"]
    assert meta["inputs"][0] == {"name": "text", "datatype": "BYTES", "shape": [-1]}
    r = httpx.get(f"{served.url}/v2/models/{name}/ready", headers=served.headers)
    assert r.status_code == 200 and r.json() == {"name": name, "ready": True}
    missing = httpx.get(f"{served.url}/v2/models/nope", headers=served.headers)
    assert missing.status_code == 404 and "error" in missing.json()


@pytest.mark.parametrize(
    ("task", "tensor", "outputs"),
    [
        (
            "text-classification",
            {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", "b c"]},
            {"label": [2], "score": [2]},
        ),
        (
            "feature-extraction",
            {"name": "text", "datatype": "BYTES", "shape": [3], "data": ["a", "b", "c"]},
            {"embedding": [3, 32]},
        ),
        (
            "token-classification",
            {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["john in paris"]},
            {"entities": [1]},
        ),
        (
            "summarization",
            {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["the report"]},
            {"summary_text": [1]},
        ),
        (
            "text-generation",
            {
                "name": "messages",
                "datatype": "BYTES",
                "shape": [1],
                "data": [json.dumps([{"role": "user", "content": "hi"}])],
            },
            {"generated_text": [1]},
        ),
        (
            "image-classification",
            {"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64(png_bytes())]},
            {"label": [1], "score": [1]},
        ),
        (
            "speech-recognition",
            {"name": "audio", "datatype": "FP32", "shape": [1, 8000], "data": [0.01] * 8000},
            {"text": [1]},
        ),
    ],
)
def test_oip_v2_infer(
    served: Served, task: str, tensor: dict[str, Any], outputs: dict[str, list[int]]
) -> None:
    name = model_name(task)
    body: dict[str, Any] = {"id": "req-7", "inputs": [tensor]}
    if task in ("summarization", "text-generation"):
        body["parameters"] = {"max_new_tokens": 4}
    r = httpx.post(
        f"{served.url}/v2/models/{name}/infer", json=body, headers=served.headers, timeout=60
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_name"] == name and doc["id"] == "req-7" and doc["model_version"]
    got = {o["name"]: o for o in doc["outputs"]}
    assert set(got) == set(outputs)
    for out_name, shape in outputs.items():
        out = got[out_name]
        assert out["shape"] == shape
        n = 1
        for d in shape:
            n *= d
        assert len(out["data"]) == n and out["datatype"] in {"BYTES", "FP32"}


def test_oip_v2_infer_rejects_bad_shape(served: Served) -> None:
    name = model_name("text-classification")
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": ["a"]}]}
    r = httpx.post(f"{served.url}/v2/models/{name}/infer", json=body, headers=served.headers)
    assert r.status_code == 400 and "shape" in r.json()["error"]


async def test_overload_answers_429_with_retry_after_and_stays_healthy(served: Served) -> None:
    """4 slots + 8 waiting: 100 concurrent long summaries overflow; the process stays up.

    Each request is long enough (32 new tokens per chunk) that all of them arrive while the
    first are served even when the CPUs are shared with other tests: with 8 tokens and 60
    requests, a run beside the e2e suite once served every request without overflowing."""
    url = f"{served.url}/predictions/{model_name('summarization')}"
    body = {"inputs": LONG_DOC, "parameters": {"max_new_tokens": 32}}
    async with httpx.AsyncClient(headers=served.headers, timeout=180) as client:
        results = await asyncio.gather(*(client.post(url, json=body) for _ in range(100)))
        codes = [r.status_code for r in results]
        assert set(codes) <= {200, 429, 503}, codes
        rejected = [r for r in results if r.status_code in (429, 503)]
        assert rejected and codes.count(200) >= 4
        assert all(int(r.headers["retry-after"]) >= 1 for r in rejected)
        # Healthy afterwards: ready, and answering.
        assert (await client.get(f"{served.metrics_url}/readyz")).status_code == 200
        after = await client.post(url, json={"inputs": "short"})
        assert after.status_code == 200
    assert served.process.poll() is None
    metrics = httpx.get(served.metrics_url + "/metrics").text
    assert 'code="429"' in metrics


def test_oversized_body_is_refused_with_413(served: Served) -> None:
    r = predict(served, "image-classification", "image/png", content=b"\0" * ((1 << 20) + 1))
    assert r.status_code == 413
    infer = f"{served.url}/v2/models/{model_name('text-classification')}/infer"
    big = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x" * (1 << 20)]}]
    }
    assert httpx.post(infer, json=big, headers=served.headers).status_code == 413
