"""Long documents to summarisation without head-of-line blocking.

TorchServe answers a batch as a whole: one 60-window document in a batch holds every short
request batched or queued behind it for the document's whole duration. So the gateway sends a
long document to TorchServe as a sequence of pieces, one request each, one at a time: short
requests arriving meanwhile join TorchServe's queue between two pieces and wait for at most
one piece, not the document. The handler still chunks each piece by its tokenizer (a piece is
sized to about one window) and the piece summaries are joined in order, which is what the
handler's own map step does inside one request.

The size of a request is bounded too: more pieces than `spec.runtime.maxChunks` is a 413
before any work is done.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

# Characters per token is about 4 for English BPE vocabularies; a piece of 4 x window
# characters is about one window, and the handler splits it again if it is more.
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class PieceAnswer:
    status: int
    body: Any  # the handler's JSON answer (a result, or {"error": ...})


class DocumentTooLong(ValueError):
    """More pieces than the model's maxChunks: answered with 413."""


def piece_chars(max_sequence_length: int) -> int:
    return max(64, max_sequence_length * CHARS_PER_TOKEN)


def split_document(text: str, size: int) -> list[str]:
    """`text` in pieces of at most `size` characters, cut at whitespace where there is any
    (a word is never split unless it alone is longer than a piece)."""
    pieces: list[str] = []
    start, n = 0, len(text)
    while start < n:
        while start < n and text[start].isspace():
            start += 1
        end = min(n, start + size)
        if end < n and not text[end].isspace():
            # Back to the last whitespace: the word running over the edge goes whole into
            # the next piece.
            cut = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
            if cut > start:
                end = cut
        piece = text[start:end].strip()
        if piece:
            pieces.append(piece)
        start = end
    return pieces


def needs_pieces(payload: dict[str, Any], size: int) -> bool:
    inputs = payload.get("inputs")
    items = inputs if isinstance(inputs, list) else [inputs]
    return any(isinstance(x, str) and len(x) > size for x in items)


def check_bound(text: str, size: int, max_chunks: int, max_sequence_length: int) -> list[str]:
    pieces = split_document(text, size)
    if len(pieces) > max_chunks:
        raise DocumentTooLong(
            f"document too long: {len(text)} characters is about {len(pieces)} windows of "
            f"spec.runtime.maxSequenceLength={max_sequence_length} tokens; this model takes at "
            f"most spec.runtime.maxChunks={max_chunks} windows per document"
        )
    return pieces


async def summarise_in_pieces(
    payload: dict[str, Any],
    size: int,
    max_chunks: int,
    max_sequence_length: int,
    send: Callable[[bytes], Awaitable[PieceAnswer]],
) -> PieceAnswer:
    """Every input of `payload` summarised; long ones piece by piece, in order.

    Returns the first error as the answer (status and body) if any piece fails: a document
    with a piece the model cannot take has no summary.
    """
    inputs = payload["inputs"]
    single = not isinstance(inputs, list)
    items = [inputs] if single else list(inputs)
    params = payload.get("parameters")
    # Refuse before any work: a document over the bound costs nothing.
    plans = [
        check_bound(x, size, max_chunks, max_sequence_length) if isinstance(x, str) else [x]
        for x in items
    ]
    results = []
    for pieces in plans:
        summaries, chunks = [], 0
        for piece in pieces:
            doc: dict[str, Any] = {"inputs": piece}
            if params is not None:
                doc["parameters"] = params
            answer = await send(json.dumps(doc).encode())
            if answer.status != 200:
                return answer
            summaries.append(str(answer.body.get("summary_text", "")).strip())
            chunks += int(answer.body.get("chunks", 1))
        result = {"summary_text": " ".join(s for s in summaries if s), "chunks": chunks}
        if len(pieces) > 1:
            result["pieces"] = len(pieces)
        results.append(result)
    return PieceAnswer(200, results[0] if single else results)
