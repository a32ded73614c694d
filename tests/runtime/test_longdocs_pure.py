"""Splitting long summarisation documents into pieces, as plain data."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tmo_runtime.gateway.longdocs import (
    PIECE_WINDOWS,
    DocumentTooLong,
    Limits,
    PieceAnswer,
    plan,
    split_document,
    summarise_in_pieces,
)


@given(st.text(alphabet=st.sampled_from("ab \n"), max_size=400), st.integers(4, 50))
def test_pieces_are_bounded_and_keep_every_word_in_order(text: str, size: int) -> None:
    pieces = split_document(text, size)
    assert all(0 < len(p) <= size for p in pieces)
    # Nothing lost or reordered; words are whole unless one alone is longer than a piece.
    assert "".join("".join(pieces).split()) == "".join(text.split())
    if all(len(w) <= size for w in text.split()):
        assert " ".join(pieces).split() == text.split()


def test_cuts_at_whitespace_not_inside_words() -> None:
    text = "alpha beta gamma delta epsilon " * 10
    for piece in split_document(text, 32):
        assert all(w in {"alpha", "beta", "gamma", "delta", "epsilon"} for w in piece.split())


def test_the_bound_names_both_limits() -> None:
    with pytest.raises(DocumentTooLong) as e:
        plan({"inputs": "word " * 1000}, Limits(max_sequence_length=25, max_chunks=3))
    assert "maxChunks=3" in str(e.value) and "maxSequenceLength=25" in str(e.value)


def test_short_documents_go_whole_and_long_ones_in_pieces_of_several_windows() -> None:
    limits = Limits(max_sequence_length=16, max_chunks=1000)  # 64-character windows
    assert plan({"inputs": ["short", "also short"]}, limits) is None
    long_doc = "word " * 400  # 2000 characters: about 32 windows
    plans = plan({"inputs": ["short", long_doc]}, limits)
    assert plans is not None and plans[0] == ["short"]
    assert all(len(p) <= 64 * PIECE_WINDOWS for p in plans[1])
    assert len(plans[1]) == 4  # 32 windows, PIECE_WINDOWS (8) per piece


async def test_pieces_go_one_at_a_time_and_summaries_join_in_order() -> None:
    sent: list[dict[str, Any]] = []

    async def send(body: bytes) -> PieceAnswer:
        doc = json.loads(body)
        sent.append(doc)
        return PieceAnswer(200, {"summary_text": doc["inputs"].split()[0], "chunks": 2})

    text = " ".join(f"w{i}" for i in range(40))
    payload = {"inputs": text, "parameters": {"max_new_tokens": 4}}
    answer = await summarise_in_pieces(payload, [split_document(text, 20)], send)
    assert answer.status == 200
    assert answer.body["pieces"] == len(sent) > 1
    assert answer.body["chunks"] == 2 * len(sent)
    assert answer.body["summary_text"].split() == [d["inputs"].split()[0] for d in sent]
    assert all(d["parameters"] == {"max_new_tokens": 4} for d in sent)


async def test_a_failing_piece_is_the_answer() -> None:
    async def send(body: bytes) -> PieceAnswer:
        return PieceAnswer(400, {"error": "bad"})

    answer = await summarise_in_pieces({"inputs": "x"}, [["x", "y"]], send)
    assert answer == PieceAnswer(400, {"error": "bad"})
