"""Text generation honours its parameters: limits, sampling, seeds, stop strings, usage counts,
prompts that do not fit, and streaming through the real TorchServe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from tmo_runtime.handlers.common import Settings
from tmo_runtime.handlers.entry import build_task, run_batch
from tmo_runtime.handlers.generation import (
    DeltaCutter,
    GenSettings,
    cut_at_stop,
    gen_settings,
    group_items,
)
from tmo_runtime.torchserve import read_keys

from tests.runtime.helpers import Served, model_name


@pytest.fixture(scope="module")
def gen(tiny_models: Path) -> Any:
    return build_task(
        Settings(
            task="text-generation",
            model_path=str(tiny_models / "text-generation"),
            max_sequence_length=64,
            max_new_tokens=32,
        )
    )


def ask(task: Any, *bodies: dict[str, Any]) -> tuple[list[Any], dict[int, int]]:
    return run_batch(task, list(bodies))


def one(task: Any, inputs: Any, **params: Any) -> Any:
    answers, statuses = ask(task, {"inputs": inputs, "parameters": params})
    assert not statuses, answers
    return answers[0]


# --- pure parts ---------------------------------------------------------------------------


def test_cut_at_stop_takes_the_earliest_stop_string() -> None:
    assert cut_at_stop("abc\n\nUser: x", ["User:", "\n\n"]) == ("abc", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)
    assert cut_at_stop("stop here", ["stop"]) == ("", True)


def test_stream_deltas_never_send_what_the_stop_cuts() -> None:
    cutter = DeltaCutter(["\n\n"])
    # A trailing "\n" may start the stop string: held back until the next text decides.
    assert cutter.feed("Hello\n") == "Hello"
    assert cutter.feed("Hello\nworld") == "\nworld"
    assert cutter.feed("Hello\nworld\n") == ""
    assert cutter.feed("Hello\nworld\n\nmore") == ""
    assert cutter.stopped
    # An unfinished UTF-8 character (byte-level tokens) waits for its other half.
    c = DeltaCutter([])
    assert c.feed("caf\ufffd") == "caf"
    assert c.feed("café") == "é"
    assert c.feed("café!", final=True) == "!"


def test_items_are_grouped_by_settings_and_solo_items_run_alone() -> None:
    greedy, hot = GenSettings(8, False), GenSettings(8, True, 1.5)
    keys = [greedy, hot, greedy, hot, greedy]
    assert group_items(keys, [False, False, False, True, False]) == [[0, 2, 4], [1], [3]]


def test_sampling_settings_follow_the_parameters() -> None:
    assert gen_settings({}, 64) == GenSettings(64, False)
    assert gen_settings({"temperature": 0.7}, 64) == GenSettings(64, True, 0.7)
    assert gen_settings({"top_k": 5, "max_new_tokens": 9}, 64) == GenSettings(9, True, top_k=5)
    assert gen_settings({"temperature": 0, "do_sample": True}, 64) == GenSettings(64, False)
    assert gen_settings({"do_sample": False, "top_p": 0.5}, 64) == GenSettings(64, False)


# --- the handler, in process ---------------------------------------------------------------


def test_max_new_tokens_beyond_the_limit_is_refused_not_capped(gen: Any) -> None:
    answers, statuses = ask(gen, {"inputs": "hello", "parameters": {"max_new_tokens": 500}})
    assert statuses == {0: 400}
    message = answers[0]["error"]
    assert "max_new_tokens" in message and "32" in message
    assert "spec.runtime.maxNewTokens" in message


def test_usage_counts_and_length_finish(gen: Any) -> None:
    out = one(gen, "hello", max_new_tokens=12)
    assert out["prompt_tokens"] == len(
        gen.tokenizer("hello", add_special_tokens=False)["input_ids"]
    )
    assert 1 <= out["completion_tokens"] <= 12
    assert out["finish_reason"] == ("length" if out["completion_tokens"] == 12 else "stop")
    # No parameters at all: greedy, the documented default length of min(64, limit).
    default = one(gen, "hello")
    assert default["completion_tokens"] == 32 or default["finish_reason"] == "stop"


def test_same_seed_same_text_and_seeds_differ(gen: Any) -> None:
    params = {"max_new_tokens": 16, "temperature": 1.0, "do_sample": True}
    first = one(gen, "hello", seed=7, **params)["generated_text"]
    # In a batch with other callers the seeded item still gets the same text.
    answers, _ = ask(
        gen,
        {"inputs": "the refund", "parameters": params},
        {"inputs": "hello", "parameters": {**params, "seed": 7}},
    )
    assert answers[1]["generated_text"] == first
    texts = {one(gen, "hello", seed=s, **params)["generated_text"] for s in range(4)}
    assert len(texts) > 1  # the seed (and sampling) really changes the text


def test_sampling_knobs_are_honoured(gen: Any) -> None:
    greedy = one(gen, "hello", max_new_tokens=16)["generated_text"]
    # top_k 1 samples from the single best token: exactly greedy, whatever the seed.
    assert one(gen, "hello", max_new_tokens=16, top_k=1, seed=3)["generated_text"] == greedy
    assert one(gen, "hello", max_new_tokens=16, temperature=0)["generated_text"] == greedy
    hot = {
        one(gen, "hello", max_new_tokens=16, temperature=5.0, seed=s)["generated_text"]
        for s in range(3)
    }
    assert greedy not in hot


def test_mixed_settings_in_one_batch_match_each_alone(gen: Any) -> None:
    bodies = [
        {"inputs": "hello", "parameters": {"max_new_tokens": 10}},
        {"inputs": "hello", "parameters": {"max_new_tokens": 10, "seed": 1, "temperature": 2.0}},
        {"inputs": ["the day", "hello"], "parameters": {"max_new_tokens": 5}},
    ]
    together, statuses = ask(gen, *bodies)
    assert not statuses
    alone = [ask(gen, b)[0][0] for b in bodies]
    assert together == alone
    assert together[2][1]["completion_tokens"] <= 5


def test_stop_string_cuts_the_text(gen: Any) -> None:
    greedy = one(gen, "hello", max_new_tokens=16)["generated_text"]
    start = next(
        i
        for i in range(1, len(greedy) - 1)
        if greedy[i : i + 2].isascii() and greedy[i : i + 2].isprintable()
    )
    stop = greedy[start : start + 2]
    out = one(gen, "hello", max_new_tokens=16, stop=[stop, "never-there"])
    assert out["generated_text"] == greedy[: greedy.find(stop)]
    assert out["finish_reason"] == "stop"
    assert out["completion_tokens"] < 16  # generation ended there, not at the limit


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": "   "},
        {"inputs": {"messages": [{"role": "user", "content": ""}]}},
        {"inputs": {"messages": []}},
        {"inputs": "hi", "parameters": {"temperature": -1}},
        {"inputs": "hi", "parameters": {"top_p": 0}},
        {"inputs": "hi", "parameters": {"stop": ["a", "b", "c", "d", "e"]}},
        {"inputs": "hi", "parameters": {"beams": 2}},
        {"inputs": ["a", "b"], "parameters": {"stream": True}},
    ],
)
def test_malformed_requests_are_400(gen: Any, body: dict[str, Any]) -> None:
    answers, statuses = ask(gen, body, {"inputs": "hello", "parameters": {"max_new_tokens": 2}})
    assert statuses == {0: 400}, answers
    assert answers[0]["error"] and "generated_text" in answers[1]


def test_long_prompt_is_413_unless_truncation(gen: Any) -> None:
    prompt = "the refund " * 40  # ~80 tokens against a 64-token window
    answers, statuses = ask(gen, {"inputs": prompt, "parameters": {"max_new_tokens": 8}})
    assert statuses == {0: 413}
    assert "spec.runtime.maxSequenceLength" in answers[0]["error"]
    out = one(gen, prompt, max_new_tokens=8, truncation=True)
    assert out["truncated"] is True and out["prompt_tokens"] == 64 - 8


def test_long_chat_keeps_the_latest_turns_and_says_so(gen: Any) -> None:
    history = [{"role": "user", "content": "the contract term " * 6}] * 4
    turns = [*history, {"role": "user", "content": "and the refund"}]
    out = one(gen, {"messages": turns}, max_new_tokens=8)
    assert out["truncated"] is True and out["prompt_tokens"] == 64 - 8
    assert out["messages"][:5] == turns and out["messages"][5]["role"] == "assistant"
    # The last user turn alone does not fit: refused, not answered from half a question.
    too_long = [{"role": "user", "content": "the refund " * 40}]
    answers, statuses = ask(
        gen, {"inputs": {"messages": too_long}, "parameters": {"max_new_tokens": 8}}
    )
    assert statuses == {0: 413} and "last user message" in answers[0]["error"]


# --- streaming through the real TorchServe --------------------------------------------------


def _torchserve(served: Served) -> tuple[str, dict[str, str]]:
    ts = served.state()["torchserve"]
    key = read_keys(Path(ts["key_file"])).inference
    return ts["inference"], ({"Authorization": f"Bearer {key}"} if key else {})


@pytest.mark.slow
def test_streaming_sends_token_lines_then_the_result(served: Served) -> None:
    url, headers = _torchserve(served)
    body = {"inputs": "hello", "parameters": {"stream": True, "max_new_tokens": 8}}
    lines = []
    with httpx.stream(
        "POST",
        f"{url}/predictions/{model_name('text-generation')}",
        json=body,
        headers=headers,
        timeout=60,
    ) as r:
        assert r.status_code == 200
        assert r.headers.get("transfer-encoding") == "chunked"
        lines = [json.loads(line) for line in r.iter_lines() if line.strip()]
    *tokens, final = lines
    assert tokens and all(set(t) == {"token"} for t in tokens)
    assert final["done"] is True and final["completion_tokens"] <= 8
    assert "".join(t["token"] for t in tokens) == final["generated_text"]
    # Another caller without stream gets a plain JSON answer, as before.
    plain = httpx.post(
        f"{url}/predictions/{model_name('text-generation')}",
        json={"inputs": "hello", "parameters": {"max_new_tokens": 8}},
        headers=headers,
        timeout=60,
    )
    assert plain.status_code == 200 and plain.json()["generated_text"] == final["generated_text"]
