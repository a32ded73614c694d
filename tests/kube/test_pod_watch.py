"""The reconciler's side of the pod watch: a model is reconciled only when why its pods cannot
start changes, and pods are listed only while some cannot (a stub client, no cluster)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from tmo.kube.client import KubeClient
from tmo.kube.reconcile import Reconciler
from tmo.kube.settings import OperatorSettings

from tests.kube.test_pod_failures import _fetch_crashloop, _pod

KEY = ("ns", "m")


class StubClient:
    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.lists: list[tuple[str, str, str | None, str]] = []

    async def list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str
    ) -> list[dict[str, Any]]:
        self.lists.append((api_version, kind, namespace, label_selector))
        return self.pods


def _labelled(pod: dict[str, Any]) -> dict[str, Any]:
    pod["metadata"] |= {"namespace": "ns"}
    pod["metadata"]["labels"] |= {"tmo.dev/model": "m"}
    return pod


def _reconciler(monkeypatch: pytest.MonkeyPatch, pods: list[dict[str, Any]]) -> Reconciler:
    r = Reconciler(OperatorSettings(), cast(KubeClient, StubClient(pods)))
    r.bodies[KEY] = {"metadata": {"namespace": "ns", "name": "m"}}
    triggered: list[tuple[str, str]] = []
    monkeypatch.setattr(r, "trigger", triggered.append)
    r.triggered = triggered  # type: ignore[attr-defined]
    return r


def test_only_changes_in_failures_trigger_a_reconcile(monkeypatch: pytest.MonkeyPatch) -> None:
    r = _reconciler(monkeypatch, [])
    triggered: list[Any] = r.triggered  # type: ignore[attr-defined]
    healthy = _labelled(_pod("m-abc-1"))
    failing = _labelled(_pod("m-abc-1", init=[_fetch_crashloop()]))
    r.on_pod_event("ADDED", healthy)
    r.on_pod_event("MODIFIED", healthy)
    assert triggered == []  # healthy pods cost nothing
    r.on_pod_event("MODIFIED", failing)
    r.on_pod_event("MODIFIED", failing)  # restarted, failing the same way: no news
    assert triggered == [KEY]
    r.on_pod_event("DELETED", failing)
    assert triggered == [KEY, KEY] and KEY not in r.pod_failures


def test_pods_are_listed_only_while_some_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    failing = _labelled(_pod("m-abc-1", init=[_fetch_crashloop()]))
    r = _reconciler(monkeypatch, [failing])
    stub = cast(StubClient, r.client)
    assert asyncio.run(r._pod_problem("ns", "m", "abc", {})) is None
    assert stub.lists == []

    r.on_pod_event("MODIFIED", failing)
    problem = asyncio.run(r._pod_problem("ns", "m", "abc", {}))
    assert problem is not None and problem.reason == "FetchFailed"
    assert "s3://models/x/" in problem.message
    assert stub.lists == [("v1", "Pod", "ns", "tmo.dev/model=m,tmo.dev/revision=abc")]

    # The pod recovered while the watch was away: the status still says Stalled, so the pods
    # are listed, and the live list clears both the problem and what the watch had left.
    stub.pods = [_labelled(_pod("m-abc-1"))]
    stalled = {"conditions": [{"type": "Stalled", "status": "True", "reason": "FetchFailed"}]}
    assert asyncio.run(r._pod_problem("ns", "m", "abc", stalled)) is None
    assert KEY not in r.pod_failures
