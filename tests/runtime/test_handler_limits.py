"""Limits and shapes of the handlers, in process (no TorchServe): entity grouping, speech windows,
the window limit of text tasks, the chunk bound of summarization, per-caller failures."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from tmo_runtime.handlers.common import BadRequest, Settings
from tmo_runtime.handlers.entities import TokenScores, aggregate
from tmo_runtime.handlers.entry import build_task, run_batch
from tmo_runtime.handlers.media import Window, plan_windows

from tests.runtime.helpers import b64, wav_bytes

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _probs(label: str, p: float = 0.9) -> list[float]:
    rest = (1.0 - p) / (len(LABELS) - 1)
    return [p if name == label else rest for name in LABELS]


def _tokens(text: str, pieces: list[tuple[str, str, int]]) -> list[TokenScores]:
    """(piece text, label, word index) in order; spans found in `text` left to right."""
    out, pos = [], 0
    for piece, label, word in pieces:
        start = text.index(piece, pos)
        pos = start + len(piece)
        out.append(TokenScores(start, pos, word, _probs(label)))
    return out


TEXT = "john smith lives in new york"
SENTENCE = _tokens(
    TEXT,
    [
        ("john", "B-PER", 0),
        ("smith", "I-PER", 1),
        ("lives", "O", 2),
        ("in", "O", 3),
        ("new", "B-LOC", 4),
        ("york", "I-LOC", 5),
    ],
)


def test_simple_groups_b_and_i_into_entities() -> None:
    got = aggregate(TEXT, SENTENCE, LABELS, "simple")
    assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in got] == [
        ("PER", "john smith", 0, 10),
        ("LOC", "new york", 20, 28),
    ]
    assert all(abs(e["score"] - 0.9) < 1e-9 for e in got)


def test_a_b_tag_starts_a_new_entity_and_o_ends_one() -> None:
    text = "john mary paris"
    toks = _tokens(text, [("john", "B-PER", 0), ("mary", "B-PER", 1), ("paris", "I-LOC", 2)])
    got = aggregate(text, toks, LABELS, "simple")
    assert [(e["entity_group"], e["word"]) for e in got] == [
        ("PER", "john"),
        ("PER", "mary"),
        ("LOC", "paris"),
    ]


def test_none_keeps_one_entry_per_token_with_o() -> None:
    got = aggregate(TEXT, SENTENCE, LABELS, "none")
    assert [e["entity"] for e in got] == ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]
    assert all(TEXT[e["start"] : e["end"]] == e["word"] for e in got)


# One word, "londoner", in three pieces whose labels disagree.
WORD_TEXT = "londoner"
WORD = [
    TokenScores(0, 3, 0, _probs("B-LOC", 0.5)),
    TokenScores(3, 6, 0, _probs("B-PER", 0.95)),
    TokenScores(6, 8, 0, _probs("I-PER", 0.6)),
]


@pytest.mark.parametrize(
    ("strategy", "group", "score"),
    [
        ("first", "LOC", 0.5),  # the first piece decides
        ("max", "PER", 0.95),  # the most confident piece decides
        # the mean of the pieces' probabilities: B-PER (0.125 + 0.95 + 0.1) / 3 is the best
        ("average", "PER", (0.125 + 0.95 + 0.1) / 3),
    ],
)
def test_word_strategies_never_split_a_word(strategy: str, group: str, score: float) -> None:
    got = aggregate(WORD_TEXT, WORD, LABELS, strategy)
    assert len(got) == 1
    assert (got[0]["entity_group"], got[0]["word"]) == (group, "londoner")
    assert abs(got[0]["score"] - score) < 1e-9


def test_simple_may_split_a_word_the_word_strategies_do_not() -> None:
    simple = aggregate(WORD_TEXT, WORD, LABELS, "simple")
    assert [e["entity_group"] for e in simple] == ["LOC", "PER"]


def test_windows_tile_the_clip_and_drop_only_the_overlap() -> None:
    n, chunk, stride = 1000, 300, 50
    windows = plan_windows(n, chunk, stride)
    assert all(w.end - w.start <= chunk for w in windows)
    # What each window keeps (its middle) covers every sample exactly once.
    kept = [(w.start + w.left, w.end - w.right) for w in windows]
    assert kept[0][0] == 0 and kept[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(kept))
    assert windows[0].left == 0 and windows[-1].right == 0


def test_a_short_clip_is_one_window() -> None:
    assert plan_windows(100, 300, 50) == [Window(0, 100, 0, 0)]


def _task(tiny_models: Path, task: str, **kw: Any) -> Any:
    return build_task(Settings(task=task, model_path=str(tiny_models / task), **kw))


@pytest.mark.parametrize(
    "task", ["text-classification", "token-classification", "feature-extraction"]
)
def test_over_long_text_is_413_unless_truncation(tiny_models: Path, task: str) -> None:
    t = _task(tiny_models, task, max_sequence_length=16)
    long = "john " * 40  # 40 words + [CLS] + [SEP]
    answers, statuses = run_batch(
        t,
        [
            {"inputs": long},
            {"inputs": long, "parameters": {"truncation": True}},
            {"inputs": "john works"},
        ],
    )
    assert statuses == {0: 413}
    assert "42 tokens" in answers[0]["error"]
    assert "spec.runtime.maxSequenceLength" in answers[0]["error"]
    assert answers[1]["truncated"] is True and answers[1]["input_tokens"] == 42
    assert "truncated" not in str(answers[2])


def test_truncated_token_classification_sees_the_first_window(tiny_models: Path) -> None:
    t = _task(tiny_models, "token-classification", max_sequence_length=8)
    body = {
        "inputs": "john " * 50,
        "parameters": {"truncation": True, "aggregation_strategy": "none"},
    }
    answers, statuses = run_batch(t, [body])
    assert not statuses
    assert len(answers[0]["entities"]) == 6  # 8 positions less [CLS] and [SEP]


def test_summarization_refuses_a_document_over_max_chunks(tiny_models: Path) -> None:
    t = _task(tiny_models, "summarization", max_sequence_length=32, max_new_tokens=2, max_chunks=5)
    doc = "the party shall give notice " * 40  # ~200 tokens: 17 windows of 32 (4 overlapping)
    answers, statuses = run_batch(
        t,
        [
            {"inputs": doc},
            {"inputs": doc, "parameters": {"truncation": True}},
            {"inputs": "the party shall give notice"},
        ],
    )
    assert statuses == {0: 413}
    err = answers[0]["error"]
    assert "spec.runtime.maxChunks" in err and "17 windows" in err and "limit of 5" in err
    assert answers[1]["chunks"] == 5 and answers[1]["truncated"] is True
    assert answers[2]["chunks"] == 1


def test_summarization_max_new_tokens_beyond_the_manifest_is_400(tiny_models: Path) -> None:
    t = _task(tiny_models, "summarization", max_new_tokens=4)
    answers, statuses = run_batch(t, [{"inputs": "x", "parameters": {"max_new_tokens": 5}}])
    assert statuses == {0: 400} and "spec.runtime.maxNewTokens" in answers[0]["error"]


def test_speech_long_clip_runs_in_windows(tiny_models: Path) -> None:
    t = _task(tiny_models, "speech-recognition")
    answers, statuses = run_batch(
        t,
        [
            # 12 s in 4 s windows with 0.5 s overlap each side: 4 windows.
            {
                "inputs": b64(wav_bytes(12.0, rate=8000)),
                "parameters": {"chunk_length_s": 4.0, "stride_length_s": 0.5},
            },
            {"inputs": b64(wav_bytes(1.0))},
            {"inputs": "", "parameters": {"chunk_length_s": 4.0, "stride_length_s": 2.0}},
        ],
    )
    assert answers[0]["windows"] == 4 and answers[0]["text"]
    assert answers[1]["windows"] == 1
    assert statuses == {2: 400} and "stride_length_s" in answers[2]["error"]


class _Exploding:
    """A task whose forward pass fails for one item: the batch falls back to one by one."""

    def decode(self, payload: Any) -> Any:
        from tmo_runtime.handlers.common import Request

        return Request(items=[payload["inputs"]], single=True)

    def infer(self, items: list[Any], params: list[dict[str, Any]]) -> list[Any]:
        if "boom" in items:
            raise RuntimeError("CUDA error: an illegal memory access")
        if "bad" in items:
            raise BadRequest("bad item")
        return [{"echo": i} for i in items]


def test_a_failing_forward_pass_fails_only_its_caller(caplog: pytest.LogCaptureFixture) -> None:
    bodies = [{"inputs": "a"}, {"inputs": "boom"}, {"inputs": "b"}, {"inputs": "bad"}, "x"]
    answers, statuses = run_batch(_Exploding(), bodies)
    assert statuses == {1: 500, 3: 400, 4: 500}
    assert answers[0] == {"echo": "a"} and answers[2] == {"echo": "b"}
    assert answers[3] == {"error": "bad item"}
    assert "internal error" in answers[1]["error"]
    # The 500s are in the log with their traceback; the 400 is the client's, not logged.
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 2
