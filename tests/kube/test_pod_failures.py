"""Which pods cannot start, and why, from pod status shaped as the API returns it (pure)."""

from __future__ import annotations

from typing import Any

from tmo.kube.pod_failures import (
    CONTAINER_CONFIG_ERROR,
    CRASH_LOOP,
    FETCH_FAILED,
    IMAGE_PULL_FAILED,
    MESSAGE_LIMIT,
    one_line,
    pod_failure,
    revision_failure,
)

URI = "s3://models/x/"
LINE = f"fetch failed: {URI}: access denied (403)"
T = "2026-01-01T00:00:00Z"


def _pod(
    name: str = "m-abc-1",
    revision: str = "abc",
    init: list[dict[str, Any]] | None = None,
    containers: list[dict[str, Any]] | None = None,
    **meta: Any,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"tmo.dev/revision": revision}, **meta},
        "status": {
            "phase": "Pending",
            "initContainerStatuses": init if init is not None else [_done("fetch")],
            "containerStatuses": containers
            if containers is not None
            else [_running("torchserve"), _running("gateway")],
        },
    }


def _done(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "ready": True,
        "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
    }


def _running(name: str, ready: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "ready": ready,
        "restartCount": 0,
        "state": {"running": {"startedAt": T}},
        **extra,
    }


def _terminated(code: int = 1, message: str | None = LINE, reason: str = "Error") -> dict[str, Any]:
    t: dict[str, Any] = {"exitCode": code, "reason": reason, "startedAt": T, "finishedAt": T}
    if message is not None:
        t["message"] = message
    return t


def _fetch_crashloop(message: str | None = LINE) -> dict[str, Any]:
    """`Init:CrashLoopBackOff` in kubectl."""
    return {
        "name": "fetch",
        "ready": False,
        "restartCount": 3,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s ..."}},
        "lastState": {"terminated": _terminated(message=message)},
    }


def test_healthy_and_starting_pods_have_no_failure() -> None:
    assert pod_failure(_pod()) is None
    starting = _pod(
        init=[{"name": "fetch", "ready": False, "state": {"running": {"startedAt": T}}}],
        containers=[
            {
                "name": "torchserve",
                "ready": False,
                "state": {"waiting": {"reason": "PodInitializing"}},
            }
        ],
    )
    assert pod_failure(starting) is None
    loading = _pod(containers=[_running("torchserve"), _running("gateway", ready=False)])
    assert pod_failure(loading) is None


def test_fetch_in_crashloop_reports_the_termination_message() -> None:
    f = pod_failure(_pod(init=[_fetch_crashloop()]))
    assert f is not None
    assert (f.reason, f.container, f.revision, f.pod) == (FETCH_FAILED, "fetch", "abc", "m-abc-1")
    assert f.message == f"revision abc, pod m-abc-1: {LINE}"


def test_init_error_and_its_retry_read_the_same() -> None:
    # kubelet cycles Init:Error -> Init:CrashLoopBackOff -> running again -> Init:Error: the
    # message must not change along the way (each change is a status write and an Event).
    error = {"name": "fetch", "ready": False, "state": {"terminated": _terminated()}}
    retrying = {
        "name": "fetch",
        "ready": False,
        "restartCount": 4,
        "state": {"running": {"startedAt": T}},
        "lastState": {"terminated": _terminated()},
    }
    seen = {pod_failure(_pod(init=[s])) for s in (error, _fetch_crashloop(), retrying)}
    assert len(seen) == 1 and None not in seen


def test_fetch_that_succeeds_after_a_failure_is_not_failing() -> None:
    recovered = {**_done("fetch"), "lastState": {"terminated": _terminated()}, "restartCount": 1}
    assert pod_failure(_pod(init=[recovered])) is None


def test_fetch_failure_without_a_message_points_at_the_logs() -> None:
    f = pod_failure(_pod(init=[_fetch_crashloop(message=None)]))
    assert f is not None and f.reason == FETCH_FAILED
    assert "exit code 1, Error" in f.message and "kubectl logs m-abc-1 -c fetch" in f.message


def test_multiline_message_from_logs_keeps_its_last_line_bounded() -> None:
    logs = "Traceback (most recent call last):\n  File x\nValueError: boom\n\n"
    f = pod_failure(_pod(init=[_fetch_crashloop(message=logs)]))
    assert f is not None and f.message.endswith("ValueError: boom")
    long = pod_failure(_pod(init=[_fetch_crashloop(message="x" * 5000)]))
    assert long is not None and len(long.message) <= MESSAGE_LIMIT and "\n" not in long.message
    assert one_line("  a \t b \n\n") == "a b"


def test_image_pull_failures_name_the_image_whichever_state_kubelet_shows() -> None:
    def pulling(reason: str) -> dict[str, Any]:
        return _pod(
            init=[
                {
                    "name": "fetch",
                    "image": "ghcr.io/x/tmo-runtime:nope",
                    "ready": False,
                    "state": {"waiting": {"reason": reason, "message": f"{reason}: details vary"}},
                }
            ],
            containers=[
                {
                    "name": "gateway",
                    "ready": False,
                    "state": {"waiting": {"reason": "PodInitializing"}},
                }
            ],
        )

    a, b = pod_failure(pulling("ErrImagePull")), pod_failure(pulling("ImagePullBackOff"))
    assert a is not None and a == b
    assert a.reason == IMAGE_PULL_FAILED and "ghcr.io/x/tmo-runtime:nope" in a.message


def test_missing_secret_key_is_a_config_error() -> None:
    msg = "couldn't find key token in Secret ns/tok"
    gateway = {
        "name": "gateway",
        "ready": False,
        "state": {"waiting": {"reason": "CreateContainerConfigError", "message": msg}},
    }
    f = pod_failure(_pod(containers=[_running("torchserve"), gateway]))
    assert f is not None and f.reason == CONTAINER_CONFIG_ERROR and f.container == "gateway"
    assert msg in f.message


def test_main_container_crashloop_uses_its_last_termination() -> None:
    torchserve = {
        "name": "torchserve",
        "ready": False,
        "restartCount": 2,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": _terminated(137, message=None, reason="OOMKilled")},
    }
    f = pod_failure(_pod(containers=[torchserve, _running("gateway", ready=False)]))
    assert f is not None and f.reason == CRASH_LOOP
    assert "torchserve keeps failing (exit code 137, OOMKilled)" in f.message
    # Ready again after a crash: no longer failing.
    healthy = _running("torchserve", lastState={"terminated": _terminated(137)})
    assert pod_failure(_pod(containers=[healthy, _running("gateway")])) is None


def test_pods_going_away_are_not_failures() -> None:
    assert pod_failure(_pod(init=[_fetch_crashloop()], deletionTimestamp=T)) is None
    evicted = _pod(init=[_fetch_crashloop()])
    evicted["status"]["phase"] = "Failed"
    assert pod_failure(evicted) is None


def test_revision_failure_picks_the_revision_and_a_stable_pod() -> None:
    pods = [
        _pod("m-new-b", "new", init=[_fetch_crashloop()]),
        _pod("m-new-a", "new", init=[_fetch_crashloop()]),
        _pod("m-old-a", "old", init=[_fetch_crashloop()]),
        _pod("m-new-c", "new"),
    ]
    f = revision_failure(pods, "new")
    assert f is not None and f.pod == "m-new-a"
    assert revision_failure(list(reversed(pods)), "new") == f
    assert revision_failure([pods[3]], "new") is None
    assert revision_failure(pods, "other") is None


def test_a_revision_that_cannot_start_is_stalled_while_the_old_one_serves() -> None:
    from tmo.kube.status import DeploymentState, Observation, Problem, compute_status

    failure = pod_failure(_pod(init=[_fetch_crashloop()]))
    assert failure is not None
    obs = Observation(
        generation=2,
        revision="abc",
        url="http://m.ns.svc:8080",
        current=DeploymentState(1, 1, 0, 0, 1, True, False),
        old_revisions=("old",),
        old_replicas=2,
        old_ready=2,
        problem=Problem(failure.reason, failure.message),
    )
    status = compute_status(obs, None, T)
    c = {x["type"]: x for x in status["conditions"]}
    assert (c["Stalled"]["status"], c["Stalled"]["reason"]) == ("True", FETCH_FAILED)
    assert URI in c["Stalled"]["message"] and c["Ready"]["status"] == "False"
    assert "Reconciling" not in c
    assert status["readyReplicas"] == 2  # the old revision still serves
