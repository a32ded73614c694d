"""What the model pod's containers tell each other through files on their shared /tmp.

Two facts cross the container boundary, and a file on the shared emptyDir is the least
privilege way to carry them (no shared process namespace, no extra port):

- memory: a container sees only its own cgroup, yet the memory that matters (the model's) is
  charged to the `torchserve` container. Its supervisor writes its cgroup usage and limit here
  and the gateway exports them next to its own, labelled by container.
- drain: kubelet sends SIGTERM to both containers at once, but TorchServe must outlive the
  gateway's drain or the requests being drained fail. The gateway marks the drain done here;
  the supervisor stops TorchServe then (or at its deadline).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

SHARE_DIR_ENV = "TMO_SHARE_DIR"
MEMORY_SUFFIX = ".memory.json"
DRAINED_MARKER = "gateway.drained"
# Reports are written every few seconds; an older one belongs to a container that is gone.
STALE_AFTER_S = 15.0


@dataclass(frozen=True)
class MemoryReport:
    container: str
    usage_bytes: float
    limit_bytes: float  # +Inf when the container has no limit
    written_at: float  # wall clock (time.time()): both containers share the node's clock


def _atomic_write(path: Path, text: str) -> None:
    # Write then rename: the reader never sees half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def write_memory_report(share_dir: Path, report: MemoryReport) -> None:
    share_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "container": report.container,
        "usage_bytes": report.usage_bytes,
        # JSON has no infinity: null means "no limit".
        "limit_bytes": None if math.isinf(report.limit_bytes) else report.limit_bytes,
        "written_at": report.written_at,
    }
    _atomic_write(share_dir / f"{report.container}{MEMORY_SUFFIX}", json.dumps(doc))


def read_memory_reports(
    share_dir: Path, now: float | None = None, stale_after_s: float = STALE_AFTER_S
) -> list[MemoryReport]:
    """Fresh, well-formed reports only: a stale or torn one is skipped, never an error."""
    now = time.time() if now is None else now
    reports = []
    for path in sorted(share_dir.glob(f"*{MEMORY_SUFFIX}")):
        try:
            doc = json.loads(path.read_text())
            limit = doc["limit_bytes"]
            report = MemoryReport(
                container=str(doc["container"]),
                usage_bytes=float(doc["usage_bytes"]),
                limit_bytes=math.inf if limit is None else float(limit),
                written_at=float(doc["written_at"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if now - report.written_at <= stale_after_s:
            reports.append(report)
    return reports


def mark_drained(share_dir: Path) -> None:
    share_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(share_dir / DRAINED_MARKER, f"{time.time()}\n")


def clear_drained(share_dir: Path) -> None:
    """At gateway start: a marker left by a previous run of the container is not this drain."""
    with contextlib.suppress(FileNotFoundError):
        (share_dir / DRAINED_MARKER).unlink()


def drained(share_dir: Path) -> bool:
    return (share_dir / DRAINED_MARKER).exists()
