"""Token classification's answer: per-token labels grouped into entities.

Pure functions over plain data (offsets, word indices, class probabilities), with the meanings
of the Hugging Face pipeline's `aggregation_strategy`:

- `none`: every token with its best label, "O" included (the per-token view);
- `simple`: consecutive tokens of one type form an entity; a `B-` label starts a new one;
- `first`, `average`, `max`: the word pieces of each word first agree on one label (the first
  piece's, the mean of the pieces' probabilities, the most confident piece's), so a word is never
  split between two entities, then words are grouped as in `simple`.

"O" entities are dropped from the grouped strategies. An entity's `word` is the original text
between its first and last piece, not the detokenised pieces, so it reads as the user wrote it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

STRATEGIES = ("none", "simple", "first", "average", "max")
DEFAULT_STRATEGY = "simple"


@dataclass(frozen=True)
class TokenScores:
    """One non-special token: its character span, the word it is a piece of, its probabilities
    over the labels."""

    start: int
    end: int
    word: int | None
    probs: Sequence[float]


@dataclass(frozen=True)
class _Piece:
    label: str
    score: float
    start: int
    end: int


def aggregate(
    text: str, tokens: Sequence[TokenScores], labels: Sequence[str], strategy: str
) -> list[dict[str, Any]]:
    if strategy not in STRATEGIES:
        raise ValueError(f"aggregation strategy {strategy!r} is not one of {STRATEGIES}")
    if strategy == "none":
        out = []
        for t in tokens:
            best = _argmax(t.probs)
            out.append(
                {
                    "word": text[t.start : t.end],
                    "entity": labels[best],
                    "score": float(t.probs[best]),
                    "start": t.start,
                    "end": t.end,
                }
            )
        return out
    if strategy == "simple":
        pieces = [_piece(t, labels) for t in tokens]
    else:
        pieces = [_word_piece(word, labels, strategy) for word in _words(tokens)]
    return _group(text, pieces)


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])


def _piece(t: TokenScores, labels: Sequence[str]) -> _Piece:
    best = _argmax(t.probs)
    return _Piece(labels[best], float(t.probs[best]), t.start, t.end)


def _words(tokens: Sequence[TokenScores]) -> list[list[TokenScores]]:
    """Consecutive tokens of one word together; a token without a word is a word alone."""
    words: list[list[TokenScores]] = []
    for t in tokens:
        if words and t.word is not None and words[-1][-1].word == t.word:
            words[-1].append(t)
        else:
            words.append([t])
    return words


def _word_piece(word: list[TokenScores], labels: Sequence[str], strategy: str) -> _Piece:
    start, end = word[0].start, word[-1].end
    if strategy == "first":
        p = _piece(word[0], labels)
    elif strategy == "max":
        p = max((_piece(t, labels) for t in word), key=lambda piece: piece.score)
    else:  # average
        n = len(word[0].probs)
        mean = [sum(float(t.probs[i]) for t in word) / len(word) for i in range(n)]
        best = _argmax(mean)
        p = _Piece(labels[best], mean[best], start, end)
    return _Piece(p.label, p.score, start, end)


def _tag(label: str) -> tuple[str, str]:
    """("B" | "I", type): B-PER -> (B, PER), I-PER -> (I, PER), a bare label is an inside tag."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def _group(text: str, pieces: list[_Piece]) -> list[dict[str, Any]]:
    groups: list[list[_Piece]] = []
    for p in pieces:
        bi, tag = _tag(p.label)
        if groups and bi != "B" and _tag(groups[-1][-1].label)[1] == tag:
            groups[-1].append(p)
        else:
            groups.append([p])
    out = []
    for g in groups:
        tag = _tag(g[0].label)[1]
        if tag == "O":
            continue
        start, end = g[0].start, g[-1].end
        out.append(
            {
                "entity_group": tag,
                "score": sum(p.score for p in g) / len(g),
                "word": text[start:end],
                "start": start,
                "end": end,
            }
        )
    return out
