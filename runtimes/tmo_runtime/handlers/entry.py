"""The function TorchServe calls: `handle(data, context)`.

TorchServe hands over a whole batch (one entry per caller). Every caller's request is decoded
on its own (a malformed one gets a 400, the rest of the batch still runs), then all items of
all callers go through the task in one forward pass, and the answers are handed back in order.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from tmo_runtime.handlers.common import (
    BadRequest,
    Request,
    Settings,
    as_json_or_raw,
    raw_body,
    settings_from_yaml,
)

log = logging.getLogger("tmo.handler")


class Task(Protocol):
    def decode(self, payload: Any) -> Request: ...

    def infer(self, items: list[Any], params: list[dict[str, Any]]) -> list[Any]: ...


def build_task(settings: Settings) -> Task:
    from tmo_runtime.handlers import generation, media, summarization, text

    classes: dict[str, Any] = {
        "text-classification": text.TextClassification,
        "token-classification": text.TokenClassification,
        "feature-extraction": text.FeatureExtraction,
        "summarization": summarization.Summarization,
        "text-generation": generation.TextGeneration,
        "image-classification": media.ImageClassification,
        "speech-recognition": media.SpeechRecognition,
    }
    if settings.task not in classes:
        raise ValueError(f"unknown task {settings.task!r}")
    task: Task = classes[settings.task](settings)
    return task


def run_batch(task: Task, bodies: list[Any]) -> tuple[list[Any], dict[int, str]]:
    """Answers in caller order, and the callers whose request was malformed."""
    decoded: list[Request | None] = []
    errors: dict[int, str] = {}
    for idx, body in enumerate(bodies):
        try:
            decoded.append(task.decode(as_json_or_raw(body)))
        except BadRequest as e:
            decoded.append(None)
            errors[idx] = str(e)
    flat: list[Any] = []
    params: list[dict[str, Any]] = []
    owners: list[int] = []
    for idx, req in enumerate(decoded):
        if req is None:
            continue
        flat.extend(req.items)
        params.extend([req.parameters] * len(req.items))
        owners.extend([idx] * len(req.items))
    results: list[Any] = []
    if flat:
        try:
            results = task.infer(flat, params)
        except BadRequest as e:
            # Content errors found only while batching (an unreadable image): fail each caller
            # alone by retrying one by one, so one bad caller never fails the others.
            if len({*owners}) == 1:
                errors[owners[0]] = str(e)
                results = []
                owners = []
            else:
                log.info("batch had a bad request (%s); running callers one by one", e)
                return _one_by_one(task, bodies, decoded, errors)
    grouped: list[list[Any]] = [[] for _ in bodies]
    for owner, result in zip(owners, results, strict=True):
        grouped[owner].append(result)
    answers: list[Any] = []
    for idx, req in enumerate(decoded):
        if req is None or idx in errors:
            answers.append({"error": errors[idx]})
        else:
            answers.append(grouped[idx][0] if req.single else grouped[idx])
    return answers, errors


def _one_by_one(
    task: Task, bodies: list[Any], decoded: list[Request | None], errors: dict[int, str]
) -> tuple[list[Any], dict[int, str]]:
    answers: list[Any] = []
    for idx, req in enumerate(decoded):
        if req is None:
            answers.append({"error": errors[idx]})
            continue
        try:
            res = task.infer(req.items, [req.parameters] * len(req.items))
            answers.append(res[0] if req.single else res)
        except BadRequest as e:
            errors[idx] = str(e)
            answers.append({"error": str(e)})
    return answers, errors


_task: Task | None = None


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[Any] | None:
    global _task
    if _task is None:
        props = context.system_properties
        gpu = props.get("gpu_id")
        import torch

        device = f"cuda:{gpu}" if gpu is not None and torch.cuda.is_available() else "cpu"
        settings = settings_from_yaml(context.model_yaml_config or {}, props["model_dir"], device)
        if device == "cpu":
            torch.set_num_threads(settings.threads)
        log.info(
            "loading %s model from %s on %s (%s, %s, %d threads)",
            settings.task,
            settings.model_path,
            device,
            settings.precision,
            settings.attention,
            settings.threads,
        )
        _task = build_task(settings)
    if data is None:
        return None  # the initialisation call
    answers, errors = run_batch(_task, [raw_body(r) for r in data])
    for idx, message in errors.items():
        context.set_response_status(code=400, phrase=message[:200], idx=idx)
    return answers
