"""Route each caller of a TorchServe batch: explained, streamed, or predicted with the others.

- `/explanations/{model}` callers (request header `explain: True`) are answered by the
  Explainer over the same model, one explanation per item.
- text-generation callers with `parameters.stream: true` run one at a time, each with a sink that
  sends its JSON lines (`{"token": delta}`) as TorchServe intermediate responses to that caller
  only; its final answer is the full result plus `"done": true`, as one JSON line.
- everyone else shares the batched forward pass, as before.

Every group goes through the same `run_batch`, so each caller keeps its own status and error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tmo_runtime.handlers.common import as_json_or_raw
from tmo_runtime.handlers.explain import Explainer, wants_explanation
from tmo_runtime.handlers.generation import wants_stream

RunBatch = Callable[[Any, list[Any]], tuple[list[Any], dict[int, int]]]


def answer_batch(
    task: Any, bodies: list[Any], context: Any, run_batch: RunBatch
) -> tuple[list[Any], dict[int, int]]:
    """Answers in caller order and the status of each caller that failed, like run_batch."""
    explain = [i for i in range(len(bodies)) if wants_explanation(context, i)]
    streams = []
    if hasattr(task, "stream_sink"):
        streams = [
            i
            for i in range(len(bodies))
            if i not in explain and wants_stream(as_json_or_raw(bodies[i]))
        ]
    if not explain and not streams:
        return run_batch(task, bodies)
    answers: list[Any] = [None] * len(bodies)
    statuses: dict[int, int] = {}

    def run(runner: Any, idxs: list[int]) -> list[Any]:
        got, failed = run_batch(runner, [bodies[i] for i in idxs])
        for j, i in enumerate(idxs):
            answers[i] = got[j]
            if j in failed:
                statuses[i] = failed[j]
        return got

    rest = [i for i in range(len(bodies)) if i not in explain and i not in streams]
    if rest:
        run(task, rest)
    if explain:
        run(Explainer(task), explain)
    for i in streams:
        task.stream_sink = intermediate_sender(context, i)
        try:
            run(task, [i])
        finally:
            task.stream_sink = None
        if i not in statuses:
            answers[i] = json.dumps(answers[i] | {"done": True}) + "\n"
    return answers, statuses


def intermediate_sender(context: Any, idx: int) -> Callable[[str], None]:
    """Send one line to caller `idx` alone, as a TorchServe intermediate (chunked) response."""
    from ts.handler_utils.utils import send_intermediate_predict_response

    def send(line: str) -> None:
        send_intermediate_predict_response(
            {idx: line},
            {idx: context.request_ids[idx]},
            "Intermediate Prediction success",
            200,
            context,
        )

    return send
