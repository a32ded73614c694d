"""Explanations: attention of a chosen layer and head, in process, through TorchServe's
/explanations endpoint, and as `tmo explain`'s heat map."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from tmo_runtime.handlers.common import Settings
from tmo_runtime.handlers.entry import build_task, run_batch
from tmo_runtime.handlers.explain import Explainer
from tmo_runtime.torchserve import read_keys

from tests.runtime.helpers import REPO, TMO, Served, example_manifests, model_name

TEXT_TASKS = [
    "text-classification",
    "token-classification",
    "feature-extraction",
    "summarization",
    "text-generation",
]


def explain(tiny_models: Path, task: str, *bodies: dict[str, Any]) -> tuple[list[Any], Any]:
    model = build_task(Settings(task=task, model_path=str(tiny_models / task)))
    answers, statuses = run_batch(Explainer(model), list(bodies))
    return answers, statuses


def assert_attention(out: dict[str, Any]) -> None:
    n = len(out["tokens"])
    assert n > 1 and len(out["attention"]) == n
    assert all(len(row) == n for row in out["attention"])
    assert all(abs(sum(row) - 1.0) < 1e-3 for row in out["attention"])


@pytest.mark.parametrize("task", TEXT_TASKS)
def test_every_text_task_explains(tiny_models: Path, task: str) -> None:
    answers, statuses = explain(
        tiny_models,
        task,
        {"inputs": "the refund is late"},
        {"inputs": ["hello", "the court"], "parameters": {"layer": 0, "head": 1}},
        {"inputs": "hello", "parameters": {"layer": 2}},
        {"inputs": "hello", "parameters": {"head": 2}},
    )
    assert set(statuses) == {2, 3} and set(statuses.values()) == {400}
    last = answers[0]
    assert_attention(last)
    assert (last["layer"], last["head"], last["num_layers"], last["num_heads"]) == (1, "mean", 2, 2)
    assert [(o["layer"], o["head"]) for o in answers[1]] == [(0, 1), (0, 1)]
    # The head's matrix differs from the mean: head really selects.
    assert (
        answers[1][0]["attention"]
        != explain(tiny_models, task, {"inputs": "hello"})[0][0]["attention"]
    )
    assert "from -2 to 1" in answers[2]["error"] and "from 0 to 1" in answers[3]["error"]


def test_explaining_leaves_the_model_on_its_attention(tiny_models: Path) -> None:
    model: Any = build_task(
        Settings(task="text-classification", model_path=str(tiny_models / "text-classification"))
    )
    run_batch(Explainer(model), [{"inputs": "hello"}])
    assert model.model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("task", ["image-classification", "speech-recognition"])
def test_media_tasks_are_not_explained(tiny_models: Path, task: str) -> None:
    answers, statuses = explain(tiny_models, task, {"inputs": "aGVsbG8="})
    assert statuses == {0: 400} and "explanations are for text tasks" in answers[0]["error"]


def test_too_long_is_413_unless_truncation(tiny_models: Path) -> None:
    long = "the refund " * 300  # over the 512-token window
    answers, statuses = explain(tiny_models, "text-classification", {"inputs": long})
    assert statuses == {0: 413} and "spec.runtime.maxSequenceLength" in answers[0]["error"]
    answers, statuses = explain(
        tiny_models, "text-classification", {"inputs": long, "parameters": {"truncation": True}}
    )
    assert not statuses and len(answers[0]["tokens"]) == 512


@pytest.mark.slow
def test_explanations_endpoint_of_torchserve(served: Served) -> None:
    ts = served.state()["torchserve"]
    key = read_keys(Path(ts["key_file"])).inference
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = f"{ts['inference']}/explanations/{model_name('text-classification')}"
    r = httpx.post(url, json={"inputs": "the refund is late"}, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert_attention(out)
    assert out["tokens"][:2] == ["[CLS]", "the"] and out["layer"] == 1
    bad = httpx.post(
        url, json={"inputs": "hello", "parameters": {"layer": 9}}, headers=headers, timeout=60
    )
    assert bad.status_code == 400 and "parameters.layer" in bad.json()["error"]
    # The same model still predicts at /predictions.
    pred = f"{ts['inference']}/predictions/{model_name('text-classification')}"
    assert "label" in httpx.post(pred, json={"inputs": "hi"}, headers=headers, timeout=60).json()


def test_tmo_explain_draws_a_heat_map(tiny_models: Path, tmp_path: Path) -> None:
    from PIL import Image

    manifest = next(
        p
        for p in example_manifests(tmp_path / "ex", tiny_models)
        if p.stem == "text-classification"
    )
    png = tmp_path / "attention.png"
    text = "the refund is good"  # every word in the tiny vocabulary: 4 tokens + CLS, SEP
    cmd = [*TMO, "explain", "-f", str(manifest), "--text", text, "--out", str(png), "--json"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "loading model" in done.stderr
    out = json.loads(done.stdout)
    n = len(out["tokens"])
    assert n == 6 and sum(len(row) for row in out["attention"]) == n * n
    assert all(abs(sum(row) - 1.0) < 1e-3 for row in out["attention"])
    with Image.open(png) as img:
        assert img.format == "PNG"
        assert 200 <= img.width <= 2000 and 200 <= img.height <= 2000
        # Not a blank canvas: the grid is coloured.
        assert len(img.convert("RGB").getcolors(1 << 16) or []) > 10
    bad = subprocess.run(
        [*TMO, "explain", "-f", str(manifest), "--text", "hi", "--head", "7", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 1 and "--head must be from 0 to 1" in bad.stderr
