"""Generative tasks: summarization (chunked long documents) and chat text generation."""

from __future__ import annotations

from typing import Any

from tmo_runtime.handlers.common import (
    BadRequest,
    Request,
    Settings,
    load_model,
    split_inputs,
    text_item,
)
from tmo_runtime.handlers.text import decode_text


def _max_new_tokens(params: list[dict[str, Any]], cap: int) -> list[int]:
    out = []
    for p in params:
        n = p.get("max_new_tokens", cap)
        if not isinstance(n, int) or n < 1:
            raise BadRequest("parameters.max_new_tokens must be a positive integer")
        out.append(min(n, cap))
    return out


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

        limits = _max_new_tokens(params, self.settings.max_new_tokens)
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


def decode_chat(payload: Any) -> Request:
    """`{"messages": [...]}` (one conversation), or prompts like the other text tasks."""
    if isinstance(payload, dict) and "messages" in payload:
        messages = payload["messages"]
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list")
        for m in messages:
            if not isinstance(m, dict) or not {"role", "content"} <= m.keys():
                raise BadRequest("each message needs a role and a content")
        params = dict(payload.get("parameters") or {})
        return Request(items=[{"messages": messages}], single=True, parameters=params)
    req = split_inputs(payload, ("prompt", "text"))
    req.items = [
        v if isinstance(v, dict) and "messages" in v else {"prompt": text_item(v)}
        for v in req.items
    ]
    return req


class TextGeneration:
    decode = staticmethod(decode_chat)

    def __init__(self, settings: Settings) -> None:
        import transformers

        self.settings = settings
        tok = transformers.AutoTokenizer.from_pretrained(settings.model_path)
        # Decoder-only batches pad on the left so every row's last token is its own.
        tok.padding_side = "left"
        # A conversation longer than the window keeps its latest turns.
        tok.truncation_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self.tokenizer = tok
        self.model = load_model(transformers.AutoModelForCausalLM, settings)

    def prompt_of(self, item: dict[str, Any]) -> str:
        if "messages" in item:
            if not self.tokenizer.chat_template:
                raise BadRequest("this model has no chat template; send a prompt instead")
            text = self.tokenizer.apply_chat_template(
                item["messages"], tokenize=False, add_generation_prompt=True
            )
            return str(text)
        return str(item["prompt"])

    def infer(self, items: list[Any], params: list[dict[str, Any]]) -> list[Any]:
        import torch

        limits = _max_new_tokens(params, self.settings.max_new_tokens)
        prompts = [self.prompt_of(i) for i in items]
        room = max(1, self.settings.max_sequence_length - max(limits))
        enc = self.tokenizer(
            prompts,
            padding=True,
            truncation=True,
            max_length=room,
            return_tensors="pt",
            add_special_tokens=False,
        ).to(self.settings.device)
        with torch.inference_mode():
            generated = self.model.generate(
                **enc,
                max_new_tokens=max(limits),
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = generated[:, enc["input_ids"].shape[1] :].cpu()
        prompt_tokens = enc["attention_mask"].sum(1).tolist()
        out = []
        for i, item in enumerate(items):
            text = self.tokenizer.decode(new[i, : limits[i]], skip_special_tokens=True)
            result: dict[str, Any] = {
                "generated_text": text,
                "prompt_tokens": int(prompt_tokens[i]),
            }
            if "messages" in item:
                result["messages"] = [*item["messages"], {"role": "assistant", "content": text}]
            out.append(result)
        return out
