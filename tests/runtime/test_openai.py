"""The OpenAI-compatible API, driven by the official `openai` client against the real gateway
and TorchServe (tiny random-weight text-generation model)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.runtime.helpers import Served, model_name

pytestmark = pytest.mark.slow

MODEL = model_name("text-generation")
HELLO = [{"role": "user", "content": "hello there"}]


def client(served: Served, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=served.url + "/v1", api_key=key or served.token, max_retries=0, timeout=120
    )


def count(served: Served, code: str) -> float:
    text = httpx.get(served.metrics_url + "/metrics", timeout=5).text
    prefix = f'tmo_requests_total{{code="{code}",model="{MODEL}"'
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(prefix))


def test_chat_completion_with_usage(served: Served) -> None:
    chat = client(served).chat.completions.create(model=MODEL, messages=HELLO, max_tokens=5)
    choice = chat.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("length", "stop")
    assert chat.usage is not None
    assert chat.usage.completion_tokens <= 5 and chat.usage.prompt_tokens > 0
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    assert chat.model == MODEL and chat.id.startswith("chatcmpl-")


def test_streaming_gives_the_same_text_as_a_whole_answer(served: Served) -> None:
    c = client(served)
    whole = c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, temperature=0)
    chunks = list(
        c.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes[-1] == whole.choices[0].finish_reason and not any(finishes[:-1])
    assert chunks[-1].usage is not None and whole.usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_raw_stream_is_server_sent_events_ending_in_done(served: Served) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 4, "stream": True}
    with httpx.stream(
        "POST", served.url + "/v1/chat/completions", json=body, headers=served.headers, timeout=60
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_completions_answer_each_prompt(served: Served) -> None:
    done = client(served).completions.create(
        model=MODEL, prompt=["Once upon", "In a land"], max_tokens=3, seed=7, temperature=0.8
    )
    assert [c.index for c in done.choices] == [0, 1]
    assert all(c.finish_reason in ("length", "stop") for c in done.choices)


def test_seeded_sampling_is_reproducible(served: Served) -> None:
    c = client(served)

    def once() -> str | None:
        chat = c.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=8, temperature=1.0, top_p=0.9, seed=42
        )
        return chat.choices[0].message.content

    assert once() == once()


def test_models_are_listed_and_retrievable(served: Served) -> None:
    c = client(served)
    ids = [m.id for m in c.models.list()]
    assert MODEL in ids and model_name("text-classification") in ids
    assert c.models.retrieve(MODEL).id == MODEL


def test_mistakes_are_openai_errors_counted_as_4xx(served: Served) -> None:
    c = client(served)
    before_5xx = count(served, "500")
    before_400 = count(served, "400")
    with pytest.raises(openai.AuthenticationError):
        client(served, key="wrong").chat.completions.create(model=MODEL, messages=HELLO)
    with pytest.raises(openai.NotFoundError) as missing:
        c.chat.completions.create(model="no-such-model", messages=HELLO)
    assert "not served" in missing.value.message
    with pytest.raises(openai.BadRequestError) as wrong_task:
        c.chat.completions.create(model=model_name("text-classification"), messages=HELLO)
    assert "text-generation" in wrong_task.value.message
    with pytest.raises(openai.BadRequestError) as too_many:
        c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=100000)
    assert "maxNewTokens" in too_many.value.message
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model=MODEL, messages=HELLO, n=3)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": ""}])
    # Refused by the handler (a known model): counted, and as a 4xx, never a 5xx.
    assert count(served, "400") >= before_400 + 2
    assert count(served, "500") == before_5xx
