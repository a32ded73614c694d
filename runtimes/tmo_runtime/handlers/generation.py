"""Text generation: prompts and chat conversations (the model's chat template)."""

from __future__ import annotations

from typing import Any

from tmo_runtime.handlers.common import (
    BadRequest,
    Request,
    Settings,
    load_model,
    max_new_tokens,
    split_inputs,
    text_item,
)


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

        limits = max_new_tokens(params, self.settings.max_new_tokens)
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
