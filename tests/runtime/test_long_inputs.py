"""Long summarisation documents through the gateway: bounded, and never holding short
requests behind them (real gateway and TorchServe; the served manifest's window is 128)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.runtime.helpers import Served, inflight, model_name

pytestmark = pytest.mark.slow

SENTENCE = "the party shall give written notice of any change to the agreement. "


def url(served: Served) -> str:
    return f"{served.url}/predictions/{model_name('summarization')}"


def test_a_document_over_max_chunks_is_413_naming_the_limit(served: Served) -> None:
    doc = SENTENCE * 1000  # ~68,000 characters: far more than 64 windows of 128 tokens
    r = httpx.post(url(served), json={"inputs": doc}, headers=served.headers, timeout=60)
    assert r.status_code == 413, r.text
    assert "spec.runtime.maxChunks=64" in r.json()["error"]


async def test_a_long_document_does_not_hold_a_short_request_behind_it(served: Served) -> None:
    # ~30,000 characters: about 60 windows of 128 tokens, under maxChunks 64, in 8 pieces.
    long_body = {"inputs": SENTENCE * 450, "parameters": {"max_new_tokens": 64}}
    short_body = {"inputs": "the refund is late.", "parameters": {"max_new_tokens": 4}}
    done: dict[str, float] = {}
    async with httpx.AsyncClient(headers=served.headers, timeout=300) as client:

        async def call(name: str, body: dict[str, object]) -> httpx.Response:
            r = await client.post(url(served), json=body)
            done[name] = time.monotonic()
            return r

        long_task = asyncio.create_task(call("long", long_body))
        # Send the short one once the long one is at TorchServe.
        for _ in range(200):
            if inflight(served.metrics_url + "/metrics") >= 1:
                break
            await asyncio.sleep(0.02)
        short_r = await call("short", short_body)
        long_r = await long_task
    assert long_r.status_code == 200 and short_r.status_code == 200, (long_r.text, short_r.text)
    assert long_r.json()["pieces"] >= 5
    # Answered between two pieces of the long one, not after all of them.
    assert done["short"] < done["long"]
