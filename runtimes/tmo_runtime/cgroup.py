"""Memory figures: this process's cgroup usage and limit (v2, else v1), and process RSS."""

from __future__ import annotations

import math
import os
from pathlib import Path

# cgroup v1 reports "no limit" as a page-rounded LONG_MAX.
_V1_UNLIMITED = 1 << 62


def parse_cgroup_value(text: str) -> float:
    """memory.max / memory.limit_in_bytes: 'max' or a huge v1 number mean unlimited (+Inf)."""
    value = text.strip()
    if value == "max":
        return math.inf
    number = float(int(value))
    return math.inf if number >= _V1_UNLIMITED else number


def own_cgroup_paths(proc_self_cgroup: str) -> tuple[str | None, str | None]:
    """(v2 path, v1 memory path) of this process, from /proc/self/cgroup's text."""
    v2 = v1 = None
    for line in proc_self_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def memory_files(root: Path, proc_self_cgroup: str) -> list[tuple[Path, Path]]:
    """(usage, limit) file pairs to try, most specific first.

    Inside a container with its own cgroup namespace (Kubernetes on cgroup v2) the mount's root
    is the container's cgroup. Without one (cgroup v1, or a process on a host) the mount's root
    is the whole hierarchy, and this process's own directory is the path /proc/self/cgroup names.
    """
    v2, v1 = own_cgroup_paths(proc_self_cgroup)
    dirs_v2 = [root / v2.lstrip("/")] if v2 and v2 != "/" else []
    dirs_v1 = [root / "memory" / v1.lstrip("/")] if v1 and v1 != "/" else []
    return [
        *((d / "memory.current", d / "memory.max") for d in [*dirs_v2, root]),
        *(
            (d / "memory.usage_in_bytes", d / "memory.limit_in_bytes")
            for d in [*dirs_v1, root / "memory"]
        ),
    ]


def read_cgroup_memory(
    root: Path = Path("/sys/fs/cgroup"), proc_self_cgroup: Path = Path("/proc/self/cgroup")
) -> tuple[float, float] | None:
    """(usage, limit) bytes of this process's cgroup, v2 first, then v1; None if neither."""
    try:
        own = proc_self_cgroup.read_text()
    except OSError:
        own = ""
    for usage_file, limit_file in memory_files(root, own):
        try:
            usage = parse_cgroup_value(usage_file.read_text())
            limit = parse_cgroup_value(limit_file.read_text())
        except (OSError, ValueError):
            continue
        return usage, limit
    return None


def process_group_rss(pgids: set[int], pids: set[int], proc: Path = Path("/proc")) -> float:
    """Resident bytes of the given processes plus every process in the given groups.

    For `tmo serve`, where the cgroup is a whole desktop session or CI job: what the model
    server and the gateway themselves hold is the figure a developer can act on.
    """
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # /proc/PID/stat: "pid (comm) state ppid pgrp ..."; comm may hold spaces and parens.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(entry.name) not in pids and int(fields[2]) not in pgids:
                continue
            total += int((entry / "statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue  # it exited while we looked
    return float(total)
