"""The OpenAI request/response translation, as plain data (no server)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from tmo_runtime.gateway.openai_api import (
    OpenAIError,
    chat_call,
    completion_call,
    completion_response,
    sse_events,
)


def test_chat_maps_sampling_fields_to_handler_parameters() -> None:
    call = chat_call(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}],
                },
            ],
            "max_tokens": 12,
            "temperature": 0.7,
            "top_p": 0.9,
            "seed": 3,
            "stop": "\n",
            "n": 1,
            "user": "someone",
        }
    )
    assert call.payload == {
        "inputs": {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi there"},
            ]
        },
        "parameters": {
            "max_new_tokens": 12,
            "temperature": 0.7,
            "top_p": 0.9,
            "seed": 3,
            "do_sample": True,
            "stop": ["\n"],
        },
    }
    assert not call.stream


def test_temperature_zero_is_greedy_and_stream_is_forwarded() -> None:
    call = chat_call(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert call.payload["parameters"] == {"temperature": 0, "do_sample": False, "stream": True}
    assert call.stream and call.include_usage


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0]"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": []}, "tools"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [1] * 5}, "stop"),
    ],
)
def test_chat_refuses_what_it_cannot_honour(body: dict[str, Any], param: str) -> None:
    with pytest.raises(OpenAIError) as e:
        chat_call(body)
    assert e.value.status == 400 and e.value.param == param


def test_completions_default_to_16_tokens_and_answer_every_prompt() -> None:
    call = completion_call({"model": "m", "prompt": ["a", "b"]})
    assert call.payload == {"inputs": ["a", "b"], "parameters": {"max_new_tokens": 16}}
    doc = completion_response(
        "m",
        [
            {"generated_text": "x", "prompt_tokens": 1, "completion_tokens": 2},
            {
                "generated_text": "y",
                "prompt_tokens": 3,
                "completion_tokens": 4,
                "finish_reason": "length",
            },
        ],
        "cmpl-1",
        0,
    )
    assert [c["text"] for c in doc["choices"]] == ["x", "y"]
    assert doc["choices"][1]["finish_reason"] == "length"
    assert doc["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
    with pytest.raises(OpenAIError):
        completion_call({"model": "m", "prompt": ["a", "b"], "stream": True})


async def _lines(items: list[Mapping[str, Any]]) -> AsyncIterator[Mapping[str, Any]]:
    for item in items:
        yield item


async def test_stream_is_server_sent_events_ending_in_done() -> None:
    call = chat_call(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    lines = [
        {"token": "he"},
        {"token": "llo"},
        {
            "generated_text": "hello",
            "prompt_tokens": 2,
            "completion_tokens": 2,
            "finish_reason": "length",
            "done": True,
        },
    ]
    events = [e async for e in sse_events(_lines(lines), call, chat=True)]
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") for e in events)
    assert events[-1] == b"data: [DONE]\n\n"
    docs = [json.loads(e[6:]) for e in events[:-1]]
    assert docs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(d["choices"][0]["delta"].get("content", "") for d in docs if d["choices"])
    assert text == "hello"
    assert docs[-2]["choices"][0]["finish_reason"] == "length"
    assert docs[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}


async def test_an_error_mid_stream_is_an_error_event_then_done() -> None:
    call = completion_call({"model": "m", "prompt": "x", "stream": True})
    events = [
        e async for e in sse_events(_lines([{"error": "boom", "status": 500}]), call, chat=False)
    ]
    assert json.loads(events[0][6:])["error"]["type"] == "server_error"
    assert events[-1] == b"data: [DONE]\n\n"
