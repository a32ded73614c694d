"""Summarization: chunked long documents, map-reduce over the model's window."""

from __future__ import annotations

from typing import Any

from tmo_runtime.handlers.common import Settings, load_model, max_new_tokens
from tmo_runtime.handlers.text import decode_text


class Summarization:
    """Map-reduce over the model's window: chunk, summarise every chunk, join in order.

    All chunks of all documents in the batch go through one generate() call.
    """

    decode = staticmethod(decode_text)

    def __init__(self, settings: Settings) -> None:
        import transformers

        self.settings = settings
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(settings.model_path)
        self.model = load_model(transformers.AutoModelForSeq2SeqLM, settings)
        limit = int(getattr(self.model.config, "max_position_embeddings", 1 << 30))
        self.window = min(settings.max_sequence_length, limit)
        self.stride = self.window // 8  # overlap so a sentence cut at a border is seen whole once

    def chunk(self, texts: list[str]) -> Any:
        return self.tokenizer(
            texts,
            max_length=self.window,
            truncation=True,
            stride=self.stride,
            return_overflowing_tokens=True,
            padding=True,
            return_tensors="pt",
        )

    def infer(self, items: list[Any], params: list[dict[str, Any]]) -> list[Any]:
        import torch

        limits = max_new_tokens(params, self.settings.max_new_tokens)
        enc = self.chunk(items)
        owner = [int(i) for i in enc.pop("overflow_to_sample_mapping")]
        chunk_limits = [limits[o] for o in owner]
        enc = enc.to(self.settings.device)
        with torch.inference_mode():
            generated = self.model.generate(
                **enc, max_new_tokens=max(chunk_limits), do_sample=False, num_beams=1
            )
        texts = self.tokenizer.batch_decode(generated.cpu(), skip_special_tokens=True)
        parts: list[list[str]] = [[] for _ in items]
        for o, text in zip(owner, texts, strict=True):
            parts[o].append(text.strip())
        return [{"summary_text": " ".join(p).strip(), "chunks": len(p)} for p in parts]
