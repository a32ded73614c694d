"""Summarization: chunked long documents, map-reduce over the model's window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tmo_runtime.handlers.common import (
    Request,
    Settings,
    TooLarge,
    boolean,
    check_parameters,
    integer,
    load_model,
    non_blank_text,
    split_inputs,
)
from tmo_runtime.handlers.text import TEXT_KEYS


@dataclass(frozen=True)
class Document:
    """One document as token windows (special tokens included), tokenised once at decode."""

    chunks: list[list[int]]
    tokens: int
    truncated: bool


class Summarization:
    """Map-reduce over the model's window: chunk, summarise every chunk, join in order.

    A document needing more than spec.runtime.maxChunks windows is refused (413) before any
    generation, so one huge document cannot hold the worker for minutes. All chunks of all
    documents in the batch go through one generate() call.
    """

    def __init__(self, settings: Settings) -> None:
        import transformers

        self.settings = settings
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(settings.model_path)
        self.model = load_model(transformers.AutoModelForSeq2SeqLM, settings)
        limit = int(getattr(self.model.config, "max_position_embeddings", 1 << 30))
        self.window = min(settings.max_sequence_length, limit)
        self.stride = self.window // 8  # overlap so a sentence cut at a border is seen whole once
        # A summary longer than the decoder's positions would index past its embeddings.
        self.max_new_tokens = min(settings.max_new_tokens, limit - 1)
        hint = " per chunk (spec.runtime.maxNewTokens"
        hint += ")" if self.max_new_tokens == settings.max_new_tokens else ", capped by the model)"
        self.parameters = {
            "truncation": boolean(),
            "max_new_tokens": integer(1, self.max_new_tokens, hint=hint),
        }

    def decode(self, payload: Any) -> Request:
        req = split_inputs(payload, TEXT_KEYS)
        req.parameters = check_parameters(req.parameters, self.parameters)
        truncate = bool(req.parameters.get("truncation", False))
        req.items = [self.split(non_blank_text(v), truncate) for v in req.items]
        return req

    def split(self, text: str, truncate: bool) -> Document:
        enc = self.tokenizer(
            text,
            max_length=self.window,
            truncation=True,
            stride=self.stride,
            return_overflowing_tokens=True,
            verbose=False,
        )
        chunks = [list(ids) for ids in enc["input_ids"]]
        # Every window after the first repeats `stride` tokens of the one before it.
        specials = int(self.tokenizer.num_special_tokens_to_add(pair=False))
        tokens = sum(len(c) - specials for c in chunks) - self.stride * (len(chunks) - 1)
        tokens += specials
        limit = self.settings.max_chunks
        if len(chunks) <= limit:
            return Document(chunks, tokens, False)
        if not truncate:
            raise TooLarge(
                f"the document is {tokens} tokens, which needs {len(chunks)} windows of "
                f"{self.window} tokens, over the limit of {limit} "
                "(spec.runtime.maxChunks); send a shorter document, split it, or set "
                f'"parameters": {{"truncation": true}} to summarise its first {limit} windows'
            )
        return Document(chunks[:limit], tokens, True)

    def infer(self, items: list[Any], params: list[dict[str, Any]]) -> list[Any]:
        import torch

        owner = [i for i, doc in enumerate(items) for _ in doc.chunks]
        flat = [chunk for doc in items for chunk in doc.chunks]
        limits = [params[o].get("max_new_tokens", self.max_new_tokens) for o in owner]
        # One generate() per distinct max_new_tokens: a caller's summary must not depend on
        # who shared its batch, and cutting a longer run short is not the same text (the
        # model forces its end-of-sequence token at max_new_tokens, and may stop early).
        texts: list[str] = [""] * len(flat)
        for limit in sorted(set(limits)):
            rows = [k for k, n in enumerate(limits) if n == limit]
            enc = self.tokenizer.pad(
                {"input_ids": [flat[k] for k in rows]}, padding=True, return_tensors="pt"
            )
            enc = enc.to(self.settings.device)
            with torch.inference_mode():
                generated = self.model.generate(
                    **enc, max_new_tokens=limit, do_sample=False, num_beams=1
                )
            decoded = self.tokenizer.batch_decode(generated.cpu(), skip_special_tokens=True)
            for k, text in zip(rows, decoded, strict=True):
                texts[k] = text
        parts: list[list[str]] = [[] for _ in items]
        for o, text in zip(owner, texts, strict=True):
            parts[o].append(text.strip())
        out = []
        for doc, p in zip(items, parts, strict=True):
            result: dict[str, Any] = {"summary_text": " ".join(p).strip(), "chunks": len(p)}
            if doc.truncated:
                result.update({"truncated": True, "input_tokens": doc.tokens})
            out.append(result)
        return out
