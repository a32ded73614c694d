"""`tmo rollout`: the acknowledgement wait and the watch loop, against an in-memory fake API."""

from __future__ import annotations

import argparse
import copy
import json
from typing import Any, cast

import pytest
from tmo.api.rollout import ACTION_ANNOTATION
from tmo.commands import rollout as cmd
from tmo.kube.client import ApiError

from tests.cli.test_rollout_format import ready, rollout


class FakeApi:
    """Serves one Rollout; `script` maps the n-th GET (after the first) to a status change."""

    def __init__(self, obj: dict[str, Any] | None, username: str | None = "alice") -> None:
        self.obj = obj
        self.username = username
        self.patches: list[dict[str, Any]] = []
        self.gets = 0
        self.on_get: list[Any] = []

    async def get(self, api_version: str, kind: str, ns: str | None, name: str) -> Any:
        self.gets += 1
        if self.on_get:
            self.on_get.pop(0)(self)
        return copy.deepcopy(self.obj)

    async def served(self, group_version: str, kinds: frozenset[str]) -> bool:
        return True

    async def create(self, obj: dict[str, Any]) -> Any:
        assert obj["kind"] == "SelfSubjectReview"
        if self.username is None:
            raise ApiError(403, "Forbidden", "no")
        return {**obj, "status": {"userInfo": {"username": self.username}}}

    async def merge_patch(
        self, api_version: str, kind: str, ns: str, name: str, body: dict[str, Any]
    ) -> Any:
        self.patches.append(body)
        if self.obj is None:
            return None
        annotations = self.obj["metadata"].setdefault("annotations", {})
        annotations.update(body["metadata"]["annotations"])
        return self.obj


def noop(api: FakeApi) -> None:
    return None


def act_args(action: str, **kw: Any) -> argparse.Namespace:
    base = {"name": "email-triage", "rollout_command": action, "kubeconfig": None}
    return argparse.Namespace(**{**base, "no_wait": False, "timeout": 5.0, **kw})


def _acknowledge(result: str, phase: str) -> Any:
    def step(api: FakeApi) -> None:
        record = json.loads(api.obj["metadata"]["annotations"][ACTION_ANNOTATION])  # type: ignore[index]
        api.obj["status"]["lastAction"] = {  # type: ignore[index]
            "action": record["action"],
            "id": record["id"],
            "by": record["by"],
            "handledAt": "2026-12-01T21:30:01Z",
            "result": result,
        }
        api.obj["status"]["phase"] = phase  # type: ignore[index]

    return step


async def test_promote_waits_for_the_operator(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi(rollout({"phase": "Paused"}))
    api.on_get = [noop, noop, _acknowledge("passed the approval gate", "Progressing")]
    code = await cmd._act(act_args("promote"), cast(Any, api), "ml")
    assert code == 0
    (patch,) = api.patches
    record = json.loads(patch["metadata"]["annotations"][ACTION_ANNOTATION])
    assert record["action"] == "promote" and record["by"] == "alice"
    out = capsys.readouterr().out
    assert "passes the current `pause: {}` approval gate" in out
    assert "done: passed the approval gate" in out
    assert "phase: Progressing" in out


async def test_promote_times_out_without_operator(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi(rollout({"phase": "Paused"}))
    code = await cmd._act(act_args("abort", timeout=0.6), cast(Any, api), "ml")
    assert code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "the operator did not acknowledge abort" in err
    assert "is it running?" in err


async def test_no_wait_and_fallback_user(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cmd, "_current_context", lambda kubeconfig: {"user": "kube-user"})
    api = FakeApi(rollout({"phase": "RolledBack"}), username=None)
    code = await cmd._act(act_args("retry", no_wait=True), cast(Any, api), "ml")
    assert code == 0
    record = json.loads(api.patches[0]["metadata"]["annotations"][ACTION_ANNOTATION])
    assert record["by"] == "kube-user"
    assert "not waiting; see: tmo rollout status email-triage -n ml" in capsys.readouterr().out


async def test_missing_rollout_is_refused() -> None:
    api = FakeApi(None)
    with pytest.raises(cmd.Refused, match="rollout ml/email-triage not found"):
        await cmd._act(act_args("promote"), cast(Any, api), "ml")
    assert api.patches == []


def watch_args(timeout: float | None = 10.0) -> argparse.Namespace:
    return argparse.Namespace(name="email-triage", watch=True, timeout=timeout, kubeconfig=None)


def _phase(phase: str, reason: str | None = None) -> Any:
    def step(api: FakeApi) -> None:
        api.obj["status"]["phase"] = phase  # type: ignore[index]
        if reason:
            api.obj["status"]["conditions"] = [ready("False", reason)]  # type: ignore[index]

    return step


@pytest.mark.parametrize(("end", "code"), [("Succeeded", 0), ("RolledBack", 1), ("Aborted", 1)])
async def test_watch_until_settled(
    end: str, code: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_sleep(_: float) -> None:
        return None

    monkeypatch.setattr("tmo.commands.rollout.asyncio.sleep", no_sleep)
    api = FakeApi(rollout({"phase": "Progressing", "currentStep": 0}))
    api.on_get = [noop, noop, _phase("Paused", "AwaitingApproval"), noop, _phase(end)]
    assert await cmd._status(watch_args(), cast(Any, api), "ml") == code
    out = capsys.readouterr().out
    # Printed once per change, not once per poll.
    assert out.count("phase:     Progressing") == 1
    assert out.count("waiting for approval: tmo rollout promote email-triage -n ml") == 1
    assert out.count(f"phase:     {end}") == 1


async def test_watch_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi(rollout({"phase": "Progressing"}))
    assert await cmd._status(watch_args(timeout=0), cast(Any, api), "ml") == 1
    assert "timed out after 0s" in capsys.readouterr().err
