"""Why a revision's pods cannot start, read from pod status the way `kubectl get pods` does.

Pure: pods are the dicts the API returns; tested with plain data. The reconciler turns the first
failure of the desired revision into `Stalled` (DESIGN §2: what only the operator can judge,
such as an unreachable model URI, becomes Stalled with a clear reason and message).

Messages are built only from what stays the same while a pod keeps failing (the container's
termination message, its image, the kubelet's config error), never from restart counts or the
waiting/terminated state kubelet flips between on each retry: a changing message would rewrite
the model's status and post an Event on every restart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tmo.render import names

FETCH_CONTAINER = "fetch"

# Condition reasons (CamelCase, metav1.Condition).
FETCH_FAILED = "FetchFailed"
IMAGE_PULL_FAILED = "ImagePullFailed"
CONTAINER_CONFIG_ERROR = "ContainerConfigError"
CRASH_LOOP = "CrashLoop"
REASONS = frozenset({FETCH_FAILED, IMAGE_PULL_FAILED, CONTAINER_CONFIG_ERROR, CRASH_LOOP})

# kubelet's waiting reasons that no retry fixes without a change somewhere else.
_IMAGE_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
_CONFIG_REASONS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)
_CRASH_LOOP = "CrashLoopBackOff"
# Bounded: a condition message is read in `kubectl describe`, and Events cap theirs at 1 KiB.
MESSAGE_LIMIT = 512


@dataclass(frozen=True)
class PodFailure:
    """A container that keeps one pod of a revision from starting."""

    pod: str
    revision: str
    container: str
    reason: str  # one of REASONS
    message: str  # one line, bounded: the whole condition message


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """The last non-empty line of `text`, whitespace collapsed, at most `limit` characters.

    The last line: the fetcher ends with its one-line verdict, and with
    FallbackToLogsOnError a message taken from the logs ends with the exception's line."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    last = next((line for line in reversed(lines) if line), "")
    return last if len(last) <= limit else last[: limit - 1] + "…"


def _terminated_failure(status: dict[str, Any]) -> dict[str, Any] | None:
    """The failed run of a container: terminated now with a non-zero exit, or waiting to be
    restarted (CrashLoopBackOff) or restarted and not ready since, after one."""
    state = status.get("state") or {}
    now = state.get("terminated")
    if now is not None:
        return now if int(now.get("exitCode", 0)) != 0 else None
    last = (status.get("lastState") or {}).get("terminated")
    if last is None or int(last.get("exitCode", 0)) == 0:
        return None
    waiting = state.get("waiting")
    if waiting is not None:
        return last if waiting.get("reason") == _CRASH_LOOP else None
    # Running again after a failure and not ready since: still failing as far as anyone can
    # tell, and counting it so keeps the status from flipping on every restart.
    return last if state.get("running") is not None and not status.get("ready") else None


def _exit(terminated: dict[str, Any]) -> str:
    code = terminated.get("exitCode", "?")
    reason = terminated.get("reason")
    return f"exit code {code}" + (f", {reason}" if reason else "")


def _container_failure(
    pod: str, revision: str, status: dict[str, Any], init: bool
) -> PodFailure | None:
    name = str(status.get("name", "?"))
    where = f"revision {revision}, pod {pod}"
    waiting = (status.get("state") or {}).get("waiting") or {}
    reason = waiting.get("reason")
    if reason in _IMAGE_REASONS:
        image = status.get("image") or "?"
        msg = f"{where}: cannot pull image {image} for container {name}"
        return PodFailure(pod, revision, name, IMAGE_PULL_FAILED, one_line(msg))
    if reason in _CONFIG_REASONS:
        # e.g. "couldn't find key token in secret ns/name": names a key, never a value.
        detail = one_line(str(waiting.get("message") or reason))
        msg = f"{where}: container {name} cannot be created: {detail}"
        return PodFailure(pod, revision, name, CONTAINER_CONFIG_ERROR, one_line(msg))
    terminated = _terminated_failure(status)
    if terminated is None:
        return None
    said = one_line(str(terminated.get("message") or ""))
    if init and name == FETCH_CONTAINER:
        logs = f"kubectl logs {pod} -c {name}"
        detail = said or f"init container {name} failed ({_exit(terminated)}); see `{logs}`"
        return PodFailure(pod, revision, name, FETCH_FAILED, one_line(f"{where}: {detail}"))
    kind = "init container" if init else "container"
    msg = f"{where}: {kind} {name} keeps failing ({_exit(terminated)})" + (
        f": {said}" if said else ""
    )
    return PodFailure(pod, revision, name, CRASH_LOOP, one_line(msg))


def pod_failure(pod: dict[str, Any]) -> PodFailure | None:
    """Why this pod cannot start, or None while it starts, runs, or is going away.

    Init containers first: kubelet runs them in order and the others wait on them."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):  # evicted or done: replaced, not stuck
        return None
    name = str(meta.get("name", "?"))
    revision = str((meta.get("labels") or {}).get(names.LABEL_REVISION, ""))
    for init, key in ((True, "initContainerStatuses"), (False, "containerStatuses")):
        for c in status.get(key) or []:
            failure = _container_failure(name, revision, c, init)
            if failure is not None:
                return failure
    return None


def first_failure(failures: Iterable[PodFailure]) -> PodFailure | None:
    """The one to report: by pod name, so the same pod is named pass after pass."""
    return min(failures, key=lambda f: f.pod, default=None)


def revision_failure(pods: Iterable[dict[str, Any]], revision: str) -> PodFailure | None:
    """The failure that keeps `revision` from starting, if any of its pods has one."""
    found = (pod_failure(p) for p in pods)
    return first_failure(f for f in found if f is not None and f.revision == revision)
