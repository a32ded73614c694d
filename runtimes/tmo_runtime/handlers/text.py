"""Encoder tasks on text: classification, token classification, feature extraction."""

from __future__ import annotations

from typing import Any

from tmo_runtime.handlers.common import Request, Settings, load_model, split_inputs, text_item

TEXT_KEYS = ("text", "sentence")


def decode_text(payload: Any) -> Request:
    req = split_inputs(payload, TEXT_KEYS)
    req.items = [text_item(v) for v in req.items]
    return req


class _Encoder:
    model_cls = "AutoModel"

    def __init__(self, settings: Settings) -> None:
        import transformers

        self.settings = settings
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(settings.model_path)
        self.model = load_model(getattr(transformers, self.model_cls), settings)
        limit = getattr(self.model.config, "max_position_embeddings", settings.max_sequence_length)
        self.max_length = min(settings.max_sequence_length, int(limit))

    decode = staticmethod(decode_text)

    def encode(self, texts: list[str], **extra: Any) -> Any:
        return self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            **extra,
        )


class TextClassification(_Encoder):
    model_cls = "AutoModelForSequenceClassification"

    def infer(self, items: list[Any], params: list[dict[str, Any]]) -> list[Any]:
        import torch

        enc = self.encode(items).to(self.settings.device)
        with torch.inference_mode():
            probs = self.model(**enc).logits.float().softmax(-1).cpu()
        labels = self.model.config.id2label
        out = []
        for row in probs:
            best = int(row.argmax())
            out.append(
                {
                    "label": labels[best],
                    "score": float(row[best]),
                    "scores": {labels[i]: float(p) for i, p in enumerate(row)},
                }
            )
        return out


class TokenClassification(_Encoder):
    model_cls = "AutoModelForTokenClassification"

    def infer(self, items: list[Any], params: list[dict[str, Any]]) -> list[Any]:
        import torch

        enc = self.encode(items, return_offsets_mapping=True, return_special_tokens_mask=True)
        offsets = enc.pop("offset_mapping")
        special = enc.pop("special_tokens_mask")
        enc = enc.to(self.settings.device)
        with torch.inference_mode():
            probs = self.model(**enc).logits.float().softmax(-1).cpu()
        labels = self.model.config.id2label
        out = []
        for i, text in enumerate(items):
            entities = []
            for j in range(probs.shape[1]):
                if int(special[i, j]) or not int(enc["attention_mask"][i, j]):
                    continue
                start, end = (int(x) for x in offsets[i, j])
                best = int(probs[i, j].argmax())
                entities.append(
                    {
                        "word": text[start:end],
                        "entity": labels[best],
                        "score": float(probs[i, j, best]),
                        "start": start,
                        "end": end,
                    }
                )
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
        return [{"embedding": row.tolist()} for row in pooled.cpu()]
