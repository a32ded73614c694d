"""The function TorchServe calls: `handle(data, context)`.

TorchServe hands over a whole batch (one entry per caller). Every caller's request is decoded
on its own (a malformed one gets its 400, one beyond a limit its 413, an unexpected failure its
500; the rest of the batch still runs), then all items of all callers go through the task in one
forward pass, and the answers are handed back in order. When that pass fails, the callers are
run one by one, so only the one that fails alone gets the error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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


def run_batch(task: Task, bodies: list[Any]) -> tuple[list[Any], dict[int, int]]:
    """Answers in caller order, and the HTTP status of each caller that failed.

    A failed caller's answer is `{"error": message}`. Every caller's body is decoded on its own,
    so whatever one body does (bad JSON, a truncated image, a parameter of the wrong type) only
    that caller is refused; the others still run, together, in one forward pass.
    """
    decoded: list[Request | None] = []
    failed: dict[int, Failure] = {}
    for idx, body in enumerate(bodies):
        try:
            decoded.append(task.decode(as_json_or_raw(body)))
        except Exception as e:  # any decoding failure is this caller's alone
            decoded.append(None)
            failed[idx] = _failure(e, "decoding the request")
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
        except Exception as e:  # decide below whose failure it was
            if len({*owners}) == 1:
                failed[owners[0]] = _failure(e, "running the model")
                results, owners = [], []
            else:
                # Which caller broke the batch is unknown: run the callers one by one, so
                # only the one that fails alone is refused and the others are answered.
                log.info("batched forward pass failed (%r); running callers one by one", e)
                return _one_by_one(task, decoded, failed)
    grouped: list[list[Any]] = [[] for _ in bodies]
    for owner, result in zip(owners, results, strict=True):
        grouped[owner].append(result)
    answers: list[Any] = []
    for idx, req in enumerate(decoded):
        if req is None or idx in failed:
            answers.append({"error": failed[idx].message})
        else:
            answers.append(grouped[idx][0] if req.single else grouped[idx])
    return answers, {idx: f.status for idx, f in failed.items()}


def _one_by_one(
    task: Task, decoded: list[Request | None], failed: dict[int, Failure]
) -> tuple[list[Any], dict[int, int]]:
    answers: list[Any] = []
    for idx, req in enumerate(decoded):
        if req is None:
            answers.append({"error": failed[idx].message})
            continue
        try:
            res = task.infer(req.items, [req.parameters] * len(req.items))
            answers.append(res[0] if req.single else res)
        except Exception as e:  # this caller's failure only
            failed[idx] = _failure(e, "running the model")
            answers.append({"error": failed[idx].message})
    return answers, {idx: f.status for idx, f in failed.items()}


@dataclass(frozen=True)
class Failure:
    status: int
    message: str


def _failure(e: Exception, during: str) -> Failure:
    """A client's mistake (BadRequest and its 413 kin) keeps its status and message; anything
    else is a 500 for this caller, logged with its traceback for whoever runs the model."""
    if isinstance(e, BadRequest):
        return Failure(e.status, str(e))
    log.error("unexpected failure while %s", during, exc_info=e)
    return Failure(
        500, f"internal error while {during} ({type(e).__name__}); the model server log has more"
    )


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
    from tmo_runtime.handlers.routing import answer_batch  # explanations, streamed generation

    answers, statuses = answer_batch(_task, [raw_body(r) for r in data], context, run_batch)
    for idx, code in statuses.items():
        # The reason phrase is a header line: one line, short; the full message is the body.
        phrase = " ".join(str(answers[idx]["error"]).split())[:200]
        context.set_response_status(code=code, phrase=phrase, idx=idx)
    if statuses:
        # Which callers of a batch were refused, and with what: the others were answered.
        codes = ", ".join(f"{code}" for _, code in sorted(statuses.items()))
        log.info("batch of %d callers: %d refused (%s)", len(data), len(statuses), codes)
    return answers
