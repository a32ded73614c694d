"""The torchserve container's main process: TorchServe's JVM under a small supervisor.

`torchserve --foreground` as PID 1 would die on kubelet's SIGTERM together with the gateway,
cutting the requests the gateway is draining, and nothing would report the container's memory
(the gateway sees only its own cgroup). The supervisor runs the JVM in its own process group,
writes this container's cgroup memory to the shared directory every few seconds, and on
SIGTERM/SIGINT keeps TorchServe up until the gateway marks its drain done (or a deadline),
then stops the whole group. See tmo_runtime.podshare for the files.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from tmo_runtime.cgroup import read_cgroup_memory
from tmo_runtime.podshare import MemoryReport, drained, write_memory_report
from tmo_runtime.torchserve import java_command, spawn_jvm, stop_group

log = logging.getLogger("tmo.torchserve")

TICK_S = 0.2


@dataclass(frozen=True)
class SupervisorConfig:
    config_properties: Path
    log4j: Path
    model_store: Path
    work_dir: Path  # writable scratch: the JVM's temp dir and its workers' sockets
    share_dir: Path | None  # None: no memory reports and no waiting for a drain (local runs)
    cgroup_root: Path = Path("/sys/fs/cgroup")
    container: str = "torchserve"
    # The gateway drains for up to its own timeout; wait that long plus a margin for the marker.
    drain_wait_s: float = 27.0
    stop_grace_s: float = 15.0
    report_every_s: float = 2.0


def report_memory(config: SupervisorConfig) -> bool:
    """Write this container's cgroup figures for the gateway; False when there are none."""
    if config.share_dir is None:
        return False
    reading = read_cgroup_memory(config.cgroup_root)
    if reading is None:
        return False
    usage, limit = reading
    write_memory_report(config.share_dir, MemoryReport(config.container, usage, limit, time.time()))
    return True


def wait_for_drain(config: SupervisorConfig, give_up: Callable[[], bool]) -> bool:
    """True when the gateway marked its drain done before the deadline or `give_up()`."""
    if config.share_dir is None:
        return True
    deadline = time.monotonic() + config.drain_wait_s
    while time.monotonic() < deadline and not give_up():
        if drained(config.share_dir):
            return True
        time.sleep(TICK_S)
    return False


def run(config: SupervisorConfig) -> int:
    """Run until TorchServe exits (its exit code) or a signal stops it (0)."""
    stop: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    tmp = config.work_dir / "ts"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp)}
    command = java_command(config.config_properties, config.log4j, tmp, config.model_store)
    proc = spawn_jvm(command, cwd=tmp, env=env, stdout=None)
    log.info("TorchServe started (pid %d)", proc.pid)
    next_report = 0.0
    try:
        while not stop:
            code = proc.poll()
            if code is not None:
                log.error("TorchServe exited with %d", code)
                return code if code != 0 else 1  # it never exits by itself when healthy
            now = time.monotonic()
            if now >= next_report:
                report_memory(config)
                next_report = now + config.report_every_s
            time.sleep(TICK_S)
        log.info("signal %d: waiting for the gateway to drain", stop[0])
        # A second signal (Ctrl-C twice) or a dead JVM ends the wait.
        if wait_for_drain(config, lambda: len(stop) > 1 or proc.poll() is not None):
            log.info("gateway drained: stopping TorchServe")
        else:
            log.warning("no drain mark after %.0fs: stopping TorchServe", config.drain_wait_s)
        return 0
    finally:
        stop_group(proc, config.stop_grace_s)
