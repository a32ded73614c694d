"""Long documents to summarisation without head-of-line blocking.

TorchServe answers a batch as a whole: one 60-window document in a batch holds every short
request batched or queued behind it for the document's whole duration. So the gateway sends a
long document to TorchServe as a sequence of pieces, one request each, one at a time: short
requests arriving meanwhile join TorchServe's queue between two pieces and wait for at most
one piece, not the document. The handler chunks each piece by its tokenizer and the piece
summaries are joined in order, which is what the handler's own map step does inside one
request.

A piece is PIECE_WINDOWS windows: the handler batches a piece's chunks into one generate(),
which keeps most of the speed of batching the whole document. The size of a request is
bounded too: a document of more than `spec.runtime.maxChunks` windows is a 413 before any work
is done.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

# Characters per token is about 4 for English BPE vocabularies: a window of maxSequenceLength
# tokens is about 4 x that many characters.
CHARS_PER_TOKEN = 4
# Windows per piece. One piece is one TorchServe request whose chunks the handler batches into
# one generate() (batching chunks is several times cheaper than sending them one by one); a
# short request waits for at most one piece, not the whole document.
PIECE_WINDOWS = 8


@dataclass(frozen=True)
class PieceAnswer:
    status: int
    body: Any  # the handler's JSON answer (a result, or {"error": ...})


class DocumentTooLong(ValueError):
    """More windows than the model's maxChunks: answered with 413."""


@dataclass(frozen=True)
class Limits:
    max_sequence_length: int  # tokens per window (spec.runtime.maxSequenceLength)
    max_chunks: int  # windows per document (spec.runtime.maxChunks)

    @property
    def window_chars(self) -> int:
        return max(16, self.max_sequence_length * CHARS_PER_TOKEN)

    @property
    def piece_chars(self) -> int:
        return self.window_chars * PIECE_WINDOWS


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


def plan(payload: dict[str, Any], limits: Limits) -> list[list[Any]] | None:
    """Each input's pieces, or None when every input fits one piece (sent as it is).

    Raises DocumentTooLong for a document of more than maxChunks windows: refused before any
    work is done."""
    inputs = payload.get("inputs")
    items = inputs if isinstance(inputs, list) else [inputs]
    texts = [x for x in items if isinstance(x, str)]
    for text in texts:
        windows = -(-len(text) // limits.window_chars)
        if windows > limits.max_chunks:
            raise DocumentTooLong(
                f"document too long: {len(text)} characters is about {windows} windows of "
                f"spec.runtime.maxSequenceLength={limits.max_sequence_length} tokens; this "
                f"model takes at most spec.runtime.maxChunks={limits.max_chunks} windows per "
                f"document"
            )
    if all(len(t) <= limits.piece_chars for t in texts):
        return None
    return [split_document(x, limits.piece_chars) if isinstance(x, str) else [x] for x in items]


async def summarise_in_pieces(
    payload: dict[str, Any],
    plans: list[list[Any]],
    send: Callable[[bytes], Awaitable[PieceAnswer]],
) -> PieceAnswer:
    """Every input of `payload` summarised piece by piece, one piece at a time, in order.

    Returns the first error as the answer (status and body) if any piece fails: a document
    with a piece the model cannot take has no summary.
    """
    single = not isinstance(payload["inputs"], list)
    params = payload.get("parameters")
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
