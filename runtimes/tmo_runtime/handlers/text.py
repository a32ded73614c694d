"""Encoder tasks on text: classification, token classification, feature extraction.

An input longer than the model's window (spec.runtime.maxSequenceLength, capped by the model's
position embeddings) is refused with a 413, never cut silently; `parameters.truncation: true`
lets the model read the first window, and the answer says so (`truncated`, `input_tokens`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tmo_runtime.handlers.common import (
    ParamCheck,
    Request,
    Settings,
    TooLarge,
    boolean,
    check_parameters,
    integer,
    load_model,
    non_blank_text,
    one_of,
    split_inputs,
)
from tmo_runtime.handlers.entities import DEFAULT_STRATEGY, STRATEGIES, TokenScores, aggregate

TEXT_KEYS = ("text", "sentence")


@dataclass(frozen=True)
class TextInput:
    """One text as the model will read it: `text` is already cut to the window when the caller
    asked for truncation; `tokens` counts the whole input (special tokens included)."""

    text: str
    tokens: int
    truncated: bool


def fit_to_window(tokenizer: Any, text: str, window: int, truncate: bool) -> TextInput:
    """Count the text's tokens once; over the window -> 413, or (truncation) the text's prefix
    that holds the first window, so the forward pass never tokenises megabytes again."""
    enc = tokenizer(
        text, return_offsets_mapping=True, return_special_tokens_mask=True, verbose=False
    )
    n = len(enc["input_ids"])
    if n <= window:
        return TextInput(text, n, False)
    if not truncate:
        raise TooLarge(
            f"the input is {n} tokens, over the limit of {window} "
            "(spec.runtime.maxSequenceLength, capped by the model's position embeddings); "
            'send a shorter text, or set "parameters": {"truncation": true} to have the model '
            f"read the first {window} tokens"
        )
    spans = [
        span
        for span, special in zip(enc["offset_mapping"], enc["special_tokens_mask"], strict=True)
        if not special
    ]
    keep = max(1, window - int(tokenizer.num_special_tokens_to_add(pair=False)))
    return TextInput(text[: int(spans[keep - 1][1])], n, True)


class _Encoder:
    model_cls = "AutoModel"
    parameters: Mapping[str, ParamCheck] = {"truncation": boolean()}

    def __init__(self, settings: Settings) -> None:
        import transformers

        self.settings = settings
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(settings.model_path)
        self.model = load_model(getattr(transformers, self.model_cls), settings)
        limit = getattr(self.model.config, "max_position_embeddings", settings.max_sequence_length)
        self.max_length = min(settings.max_sequence_length, int(limit))

    def decode(self, payload: Any) -> Request:
        req = split_inputs(payload, TEXT_KEYS)
        req.parameters = check_parameters(req.parameters, self.parameters)
        truncate = bool(req.parameters.get("truncation", False))
        req.items = [
            fit_to_window(self.tokenizer, non_blank_text(v), self.max_length, truncate)
            for v in req.items
        ]
        return req

    def encode(self, items: list[TextInput], **extra: Any) -> Any:
        # truncation=True only guards the window: decode already cut what was asked to be cut.
        return self.tokenizer(
            [i.text for i in items],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            **extra,
        )


def _mark_truncated(result: dict[str, Any], item: TextInput) -> dict[str, Any]:
    if item.truncated:
        result.update({"truncated": True, "input_tokens": item.tokens})
    return result


class TextClassification(_Encoder):
    model_cls = "AutoModelForSequenceClassification"
    parameters = {**_Encoder.parameters, "top_k": integer(lo=1)}

    def infer(self, items: list[Any], params: list[dict[str, Any]]) -> list[Any]:
        import torch

        enc = self.encode(items).to(self.settings.device)
        with torch.inference_mode():
            probs = self.model(**enc).logits.float().softmax(-1).cpu()
        labels = self.model.config.id2label
        out = []
        for item, p, row in zip(items, params, probs, strict=True):
            ranked = row.argsort(descending=True).tolist()[: p.get("top_k", len(row))]
            best = ranked[0]
            result = {
                "label": labels[best],
                "score": float(row[best]),
                "scores": {labels[i]: float(row[i]) for i in ranked},
            }
            out.append(_mark_truncated(result, item))
        return out


class TokenClassification(_Encoder):
    model_cls = "AutoModelForTokenClassification"
    parameters = {**_Encoder.parameters, "aggregation_strategy": one_of(*STRATEGIES)}

    def infer(self, items: list[Any], params: list[dict[str, Any]]) -> list[Any]:
        import torch

        enc = self.encode(items, return_offsets_mapping=True, return_special_tokens_mask=True)
        offsets = enc.pop("offset_mapping")
        special = enc.pop("special_tokens_mask")
        words = [enc.word_ids(i) for i in range(len(items))]
        enc = enc.to(self.settings.device)
        with torch.inference_mode():
            probs = self.model(**enc).logits.float().softmax(-1).cpu()
        mask = enc["attention_mask"].cpu()
        config = self.model.config
        labels = [config.id2label[i] for i in range(len(config.id2label))]
        out: list[Any] = []
        for i, (item, p) in enumerate(zip(items, params, strict=True)):
            tokens = [
                TokenScores(
                    start=int(offsets[i, j, 0]),
                    end=int(offsets[i, j, 1]),
                    word=words[i][j],
                    probs=probs[i, j].tolist(),
                )
                for j in range(probs.shape[1])
                if mask[i, j] and not special[i, j]
            ]
            strategy = p.get("aggregation_strategy", DEFAULT_STRATEGY)
            entities = aggregate(item.text, tokens, labels, strategy)
            # The answer is a list of entities; a truncated one becomes an object so it can
            # say so (only callers who asked for truncation see this shape).
            if item.truncated:
                out.append(_mark_truncated({"entities": entities}, item))
            else:
                out.append(entities)
        return out


class FeatureExtraction(_Encoder):
    model_cls = "AutoModel"

    def infer(self, items: list[Any], params: list[dict[str, Any]]) -> list[Any]:
        import torch

        enc = self.encode(items).to(self.settings.device)
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state.float()
        # Mean over real tokens only: padding must not change a sentence's embedding.
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return [
            _mark_truncated({"embedding": row.tolist()}, item)
            for row, item in zip(pooled.cpu(), items, strict=True)
        ]
