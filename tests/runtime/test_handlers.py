"""Handlers in process (no TorchServe): precision, attention and maxSequenceLength are honoured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from tmo_runtime.handlers.common import Settings, attention_implementation
from tmo_runtime.handlers.entry import build_task, run_batch


def _task(tiny_models: Path, task: str, **kw: Any) -> Any:
    return build_task(Settings(task=task, model_path=str(tiny_models / task), **kw))


def test_int8_dynamic_quantisation_on_cpu(tiny_models: Path) -> None:
    task = _task(tiny_models, "text-classification", precision="int8")
    modules = {type(m).__module__ for m in task.model.modules()}
    assert "torch.ao.nn.quantized.dynamic.modules.linear" in modules
    assert "torch.nn.modules.linear" not in modules  # every Linear was swapped
    answers, errors = run_batch(task, [{"inputs": "the refund"}])
    assert not errors and answers[0]["label"] in {"negative", "neutral", "positive"}


def test_bf16_and_eager_attention(tiny_models: Path) -> None:
    task = _task(tiny_models, "feature-extraction", precision="bf16", attention="eager")
    assert next(task.model.parameters()).dtype == torch.bfloat16
    assert task.model.config._attn_implementation == "eager"
    answers, _ = run_batch(task, [{"inputs": ["a", "b"]}])
    assert len(answers[0]) == 2 and len(answers[0][0]["embedding"]) == 32


def test_sdpa_is_the_default(tiny_models: Path) -> None:
    task = _task(tiny_models, "text-generation")
    assert task.model.config._attn_implementation == "sdpa"


def test_flash_attention_falls_back_where_it_cannot_run() -> None:
    assert attention_implementation("flash_attention_2", "cpu") == "sdpa"
    assert attention_implementation("eager", "cpu") == "eager"


def test_max_sequence_length_refuses_or_truncates_on_request(tiny_models: Path) -> None:
    task = _task(tiny_models, "token-classification", max_sequence_length=8)
    answers, statuses = run_batch(task, [{"inputs": "john " * 50}])
    assert statuses == {0: 413} and "spec.runtime.maxSequenceLength" in answers[0]["error"]
    params = {"truncation": True, "aggregation_strategy": "none"}
    answers, statuses = run_batch(task, [{"inputs": "john " * 50, "parameters": params}])
    assert not statuses and answers[0]["input_tokens"] == 52
    assert len(answers[0]["entities"]) == 6  # 8 positions less [CLS] and [SEP]


@pytest.mark.parametrize("window", [32, 64])
def test_summarization_chunks_follow_the_window(tiny_models: Path, window: int) -> None:
    task = _task(tiny_models, "summarization", max_sequence_length=window, max_new_tokens=2)
    doc = "the party shall give notice " * 40
    answers, _ = run_batch(task, [{"inputs": doc}, {"inputs": "short"}])
    assert answers[1]["chunks"] == 1
    # ~200 tokens over the window (1/8 overlap): at least that many chunks.
    assert answers[0]["chunks"] >= 200 // window


def test_summarization_answers_each_caller_with_its_own_max_new_tokens(tiny_models: Path) -> None:
    """One batch, two callers asking for different lengths: each gets what it would alone
    (the batch runs to the largest, and each row is cut back to its caller's limit)."""
    task = _task(tiny_models, "summarization", max_sequence_length=64, max_new_tokens=8)
    doc = "the party shall give notice within thirty days " * 3
    short = {"inputs": doc, "parameters": {"max_new_tokens": 1}}
    long = {"inputs": doc, "parameters": {"max_new_tokens": 8}}
    together, statuses = run_batch(task, [short, long])
    assert not statuses
    alone_short, _ = run_batch(task, [short])
    alone_long, _ = run_batch(task, [long])
    assert together[0] == alone_short[0]
    assert together[1] == alone_long[0]
    assert len(together[0]["summary_text"]) < len(together[1]["summary_text"])
