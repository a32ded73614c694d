"""Start, watch and stop one TorchServe 0.12 instance as a local process group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tmo_runtime.ts_config import TorchServeSettings, render_config_properties, render_log4j2_xml

KEY_FILE = "key_file.json"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Keys:
    """TorchServe's own tokens; they never leave the pod and are never logged."""

    inference: str | None
    management: str | None
    api: str | None


def read_keys(path: Path) -> Keys:
    """key_file.json as TorchServe 0.12 writes it; no file means token auth is off."""
    if not path.is_file():
        return Keys(None, None, None)
    doc = json.loads(path.read_text())

    def key(section: str) -> str | None:
        value = doc.get(section, {})
        return str(value.get("key")) if isinstance(value, dict) and value.get("key") else None

    return Keys(key("inference"), key("management"), key("API"))


def java_command(
    config_path: Path, log4j_path: Path, tmp_dir: Path, model_store: Path
) -> list[str]:
    """The command `torchserve --start --foreground` would run, minus its global pid file.

    Running the JVM directly keeps one child to signal and no pid file in a shared /tmp that
    would make a second instance think the first is still up.
    """
    import ts

    ts_home = Path(ts.__file__).resolve().parent.parent
    java_home = os.environ.get("JAVA_HOME")
    java = f"{java_home}/bin/java" if java_home else "java"
    return [
        java,
        f"-Dmodel_server_home={ts_home}",
        f"-Dlog4j.configurationFile=file://{log4j_path}",
        f"-Djava.io.tmpdir={tmp_dir}",
        "-Xms64m",
        "-cp",
        f".:{ts_home / 'ts' / 'frontend' / '*'}",
        "org.pytorch.serve.ModelServer",
        "--python",
        sys.executable,
        "-f",
        str(config_path),
        "-s",
        str(model_store),
        "-ncs",  # no config snapshots: the config is rendered, not accumulated
    ]


def _die_with_parent() -> None:
    """In the child before exec: if `tmo serve` is killed outright (SIGKILL, OOM), the kernel
    sends TorchServe SIGTERM instead of leaving it orphaned on its ports."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the normal stop path still applies


def spawn_jvm(
    command: list[str], cwd: Path, env: dict[str, str], stdout: IO[bytes] | None
) -> subprocess.Popen[bytes]:
    """Start the JVM in a process group of its own, so its Python workers stop with it.

    `stdout=None` inherits ours: in a pod that is the container log.
    """
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout is not None else None,
        start_new_session=True,  # one process group: the JVM and its Python workers
        preexec_fn=_die_with_parent,
    )


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM the JVM's group, SIGKILL after `grace_s`, then reap any worker left in it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        except ProcessLookupError:
            pass
    # Workers that outlived the JVM are still in its group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class TorchServe:
    """A running TorchServe; `workdir` holds its config, key file, logs and temp files."""

    def __init__(self, settings: TorchServeSettings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.inference_port}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.management_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.metrics_port}"

    @property
    def key_file(self) -> Path:
        return self.workdir / KEY_FILE

    @property
    def log_path(self) -> Path:
        return self.workdir / "logs" / "torchserve.log"

    def start(self) -> None:
        wd = self.workdir
        # Short temp dir: the Python workers' AF_UNIX sockets live there (107-byte path limit).
        tmp = wd / "tmp"
        for d in (tmp, wd / "logs"):
            d.mkdir(parents=True, exist_ok=True)
        config = wd / "config.properties"
        log4j = wd / "log4j2.xml"
        config.write_text(render_config_properties(self.settings))
        log4j.write_text(render_log4j2_xml())
        env = {
            **os.environ,
            "TMPDIR": str(tmp),
            "TEMP": str(tmp),
            "LOG_LOCATION": str(wd / "logs"),
            "METRICS_LOCATION": str(wd / "logs"),
        }
        self._log = self.log_path.open("ab")
        self.process = spawn_jvm(
            java_command(config, log4j, tmp, Path(self.settings.model_store)),
            cwd=wd,  # TorchServe writes key_file.json into its working directory
            env=env,
            stdout=self._log,
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def keys(self) -> Keys:
        return read_keys(self.key_file)

    def wait_healthy(self, timeout_s: float = 120.0) -> None:
        """Block until /ping answers Healthy (all models' minimum workers up)."""
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"TorchServe exited early; see {self.log_path}")
            keys = self.keys()
            headers = {"Authorization": f"Bearer {keys.inference}"} if keys.inference else {}
            try:
                r = httpx.get(f"{self.inference_url}/ping", headers=headers, timeout=2.0)
                if r.status_code == 200 and r.json().get("status") == "Healthy":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"TorchServe not healthy after {timeout_s:.0f}s; see {self.log_path}")

    def stop(self, grace_s: float = 15.0) -> None:
        if self.process is None:
            return
        stop_group(self.process, grace_s)
        if self._log is not None:
            self._log.close()
        self.process = None
