"""A local data plane for e2e tests: kubelet, Gateway and Prometheus for one namespace.

kwok makes pods Running/Ready but runs nothing. Rollout tests need real traffic, real metrics and
real alerts per revision, so this harness watches the namespace of the local control plane and
plays what a cluster would do with TMO's children:

- kubelet: for every TMO Deployment (one model revision) with `spec.replicas >= 1` it runs ONE
  real `tmo serve` process from that revision's ConfigMap (`model.yaml`, the manifest the pod
  reads, with `status.revision` set): the real pod contents, one "pod" per revision. Replica
  counts are simulated (they weigh the traffic), not run. A Deployment that goes or scales to 0
  loses its process (SIGTERM, drain, wait). A process that dies is restarted with a back-off,
  like a container.
- Prometheus: a real one (Debian's) scrapes each revision with the target labels a
  ServiceMonitor gives (`namespace`, `pod`, `service`, `job`, `endpoint`, `container`;
  `model`/`revision` come from the series, honor_labels) and evaluates every PrometheusRule of
  the namespace, so `ALERTS{alertname="TMOHighLatency", revision=...}` fires for real.
- Gateway: an open-loop load generator (e2e/loadgen.py) picks the revision of each request as
  the model's HTTPRoute weights say (backend Services resolved to revisions through their
  selectors, a multi-revision Service split by replicas), or as the replica ratio says when the
  model has no HTTPRoute. Revisions whose server is not ready get nothing, like unready pods.

Polling (every `poll_interval` s, through the kubernetes client with the admin kubeconfig) is
done by one thread that never dies on an API error; every process it starts is stopped on exit,
and dies with the harness even if the test process is SIGKILLed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
import yaml

from e2e.kube import Cluster
from e2e.loadgen import LoadGenerator, Target

log = logging.getLogger("e2e.dataplane")

REPO = Path(__file__).resolve().parent.parent
TMO = [sys.executable, "-m", "tmo.cli"]

# The contract with the operator (DESIGN §2/§3), spelled out here rather than imported: the
# harness checks what the operator renders, it does not share its code.
MANAGED_BY_SELECTOR = "app.kubernetes.io/managed-by=tmo-operator"
LABEL_MODEL = "tmo.dev/model"
LABEL_REVISION = "tmo.dev/revision"
HTTPROUTE = ("gateway.networking.k8s.io", "v1", "httproutes")
PROMETHEUSRULE = ("monitoring.coreos.com", "v1", "prometheusrules")

DEFAULT_BODY = json.dumps({"text": "the refund for order 1234 is late again"}).encode()
PROBE_FAILURE_THRESHOLD = 3  # like a kubelet readinessProbe's failureThreshold
STOP_GRACE_S = 30.0  # then SIGKILL, like terminationGracePeriodSeconds
RESTART_BACKOFF_S = (2.0, 4.0, 8.0, 16.0, 30.0)  # like CrashLoopBackOff, shorter


# --- process plumbing ---------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
# Loaded once here: the pre-exec hook below must not import or dlopen (other threads hold locks).
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the thread that started it goes (SIGKILLed
    pytest included), so no server or Prometheus outlives a test run."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(args: list[str], log_file: IO[bytes], env: dict[str, str] | None = None) -> Any:
    return subprocess.Popen(
        args,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: killpg reaches its helpers
        preexec_fn=_die_with_parent,
    )


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, chars: int = 4000, start: int = 0) -> str:
    """The last `chars` of a log file, from offset `start` on."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(start, size - chars))
            return f.read().decode(errors="replace")
    except OSError as e:
        return f"<no log: {e}>"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- a tiny model ------------------------------------------------------------------------------


def build_tiny_model(out: Path, task: str = "text-classification") -> Path:
    """A tiny random-weight model built offline (`tmo dev tiny-model`); reused if `out` has one.

    Tests give a TransformerModel `model.uri: file://<out>`; build it once per session."""
    if (out / "config.json").is_file():
        return out
    r = subprocess.run(
        [*TMO, "dev", "tiny-model", "--task", task, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if r.returncode != 0:
        raise RuntimeError(f"tmo dev tiny-model failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return out


# --- traffic: pure functions of the API objects --------------------------------------------------


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def replicas_of(deployment: Mapping[str, Any]) -> int:
    """`spec.replicas`; the API server defaults an absent one to 1."""
    value = (deployment.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def revision_of(deployment: Mapping[str, Any]) -> str:
    return _labels(deployment).get(LABEL_REVISION, "")


def _selected(
    selector: Mapping[str, str], deployments: Sequence[Mapping[str, Any]]
) -> dict[str, float]:
    """The revisions whose pods a Service selector selects, weighted by their replicas."""
    out: dict[str, float] = {}
    for d in deployments:
        pod_labels = ((d.get("spec") or {}).get("template") or {}).get("metadata", {}).get(
            "labels"
        ) or {}
        if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
            continue
        if replicas_of(d) >= 1 and revision_of(d):
            out[revision_of(d)] = out.get(revision_of(d), 0.0) + replicas_of(d)
    return out


def traffic_split(
    model: str,
    deployments: Sequence[Mapping[str, Any]],
    services: Mapping[str, Mapping[str, Any]],
    route: Mapping[str, Any] | None,
) -> dict[str, float]:
    """revision -> share of the model's traffic (shares sum to 1, or the dict is empty).

    With the model's HTTPRoute: `rules[0].backendRefs`, each a Service with a `weight` (default
    1; 0 gets nothing); a Service selecting several revisions (the model's main Service) splits
    its weight by their replicas. Without one: the model's Service over all revisions, i.e. the
    replica ratio. Backends that select no running revision carry no traffic.
    """
    mine = [d for d in deployments if _labels(d).get(LABEL_MODEL) == model]
    weights: dict[str, float] = {}
    if route is None:
        svc = services.get(model)
        selector = ((svc or {}).get("spec") or {}).get("selector") or {LABEL_MODEL: model}
        weights = _selected(selector, mine)
    else:
        rules = (route.get("spec") or {}).get("rules") or [{}]
        for ref in rules[0].get("backendRefs") or []:
            if ref.get("group", "") != "" or ref.get("kind", "Service") != "Service":
                continue
            if ref.get("namespace") not in (None, (route.get("metadata") or {}).get("namespace")):
                continue
            weight = float(ref.get("weight", 1))
            svc = services.get(str(ref.get("name")))
            if weight <= 0 or svc is None:
                continue
            selected = _selected((svc.get("spec") or {}).get("selector") or {}, mine)
            total = sum(selected.values())
            for revision, replicas in selected.items():
                weights[revision] = weights.get(revision, 0.0) + weight * replicas / total
    total = sum(weights.values())
    return {r: w / total for r, w in sorted(weights.items())} if total > 0 else {}


def choose_revision(
    split: Mapping[str, float], ready: Collection[str], rng: random.Random
) -> tuple[str | None, str | None]:
    """(revision that gets the request, revision the split chose when that one was not ready).

    A request the split sends to an unready revision goes to the split's other ready revisions
    (as a Service skips unready endpoints); with none ready it is not sent: (None, chosen).
    """
    revisions = [r for r, w in split.items() if w > 0]
    if not revisions:
        return None, None
    chosen = rng.choices(revisions, weights=[split[r] for r in revisions])[0]
    if chosen in ready:
        return chosen, None
    others = [r for r in revisions if r in ready]
    if not others:
        return None, chosen
    return rng.choices(others, weights=[split[r] for r in others])[0], chosen


# --- one revision's "pod" ----------------------------------------------------------------------


@dataclass
class _Server:
    deployment: str
    model: str
    revision: str
    namespace: str
    manifest: Path
    token_file: Path | None
    token: str | None
    container: str
    log_path: Path
    port: int = 0
    metrics_port: int = 0
    process: Any = None  # subprocess.Popen[bytes]
    rundir: Path | None = None
    started: float = 0.0  # monotonic, of the current process
    first_started: float = 0.0
    ready: bool = False
    probe_failures: int = 0
    exits: list[int] = field(default_factory=list)
    restart_at: float = 0.0
    stopping_since: float | None = None
    log_start: int = 0
    _log: IO[bytes] | None = None

    @property
    def pod(self) -> str:
        return f"{self.deployment}-0"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self.port, self.metrics_port = _free_port(), _free_port()
        # Short on purpose: TorchServe's workers put AF_UNIX sockets (max 107 chars) under it.
        self.rundir = Path(tempfile.mkdtemp(prefix="tmo-dp-", dir="/tmp"))
        args = [
            *TMO,
            "serve",
            "-f",
            str(self.manifest),
            "--port",
            str(self.port),
            "--metrics-port",
            str(self.metrics_port),
            "--workdir",
            str(self.rundir),
            "--drain-timeout",
            "10",
        ]
        if self.token_file is not None:
            args += ["--token-file", str(self.token_file)]
        if self._log is None:
            self._log = self.log_path.open("ab")
        self._log.flush()
        self.log_start = self._log.tell()  # this run's output starts here
        self._log.write(f"=== harness: start {' '.join(args)}\n".encode())
        self._log.flush()
        self.started = time.monotonic()
        self.first_started = self.first_started or self.started
        self.ready, self.probe_failures = False, 0
        self.process = _spawn(args, self._log)

    def terminate(self) -> None:
        self.ready = False
        self.stopping_since = time.monotonic()
        if self.alive():
            self.process.send_signal(signal.SIGTERM)

    def reap(self, force: bool = False) -> bool:
        """True once the process is gone (SIGKILL past the grace period, or when forced)."""
        if self.process is not None and self.process.poll() is None:
            overdue = (
                self.stopping_since is not None
                and time.monotonic() - self.stopping_since > STOP_GRACE_S
            )
            if not (force or overdue):
                return False
            log.warning("%s did not stop in time: SIGKILL", self.deployment)
            self._kill_torchserve()
            _kill_group(self.process.pid)
            self.process.wait(10)
        self.cleanup()
        return True

    def _kill_torchserve(self) -> None:
        """TorchServe runs in a session of its own: after a SIGKILL of `tmo serve` it would only
        get PDEATHSIG's SIGTERM; its group goes too."""
        if self.rundir is None:
            return
        with contextlib.suppress(OSError, ValueError, KeyError):
            state = json.loads((self.rundir / "serve.json").read_text())
            _kill_group(int(state["torchserve_pid"]))

    def cleanup(self) -> None:
        if self.rundir is not None:
            shutil.rmtree(self.rundir, ignore_errors=True)
            self.rundir = None

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 4000, this_run: bool = False) -> str:
        """The end of the server's log (all its runs, or only the latest one's)."""
        if self._log is not None:
            self._log.flush()
        return _tail(self.log_path, chars, self.log_start if this_run else 0)


# --- Prometheus --------------------------------------------------------------------------------


class Prometheus:
    """Debian's Prometheus on a free loopback port: 1 s scrapes and rule evaluations, targets
    from a file_sd JSON file, rules from `rules/*.yaml`. Usable on its own (an operator under
    test may need only a Prometheus); `stop()`/`start()` keep the port and the TSDB.

    A target written to `targets_file` is scraped within ~5 s: Prometheus's discovery manager
    batches updates every 5 s, whatever `refresh_interval` says."""

    def __init__(
        self, workdir: Path, extra_scrape_configs: list[dict[str, Any]] | None = None
    ) -> None:
        self.dir = workdir / "prometheus"
        self.rules_dir = self.dir / "rules"
        self.tsdb = self.dir / "data"
        self.targets_file = self.dir / "targets.json"
        self.config_file = self.dir / "prometheus.yml"
        self.log_path = self.dir / "prometheus.log"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: Any = None
        self.start_seconds: list[float] = []
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        self.tsdb.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.targets_file, "[]")
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(self.rules_dir / "*.yaml")],
            "scrape_configs": [
                {
                    "job_name": "tmo-dataplane",
                    # As the ServiceMonitor says: the series' model/revision labels win.
                    "honor_labels": True,
                    "file_sd_configs": [
                        {"files": [str(self.targets_file)], "refresh_interval": "1s"}
                    ],
                },
                *(extra_scrape_configs or []),
            ],
        }
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        if self.running():
            return
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not on PATH: `make deps` (Debian's prometheus)")
        began = time.monotonic()
        with self.log_path.open("ab") as out:
            self.process = _spawn(
                [
                    binary,
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={self.tsdb}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                    "--storage.tsdb.retention.time=1d",
                    "--log.level=warn",
                ],
                out,
            )
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited ({self.process.returncode}):\n{_tail(self.log_path)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    self.start_seconds.append(time.monotonic() - began)
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout}s:\n{_tail(self.log_path)}")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.wait(10)

    def reload(self) -> bool:
        try:
            r = httpx.post(f"{self.url}/-/reload", timeout=10)
        except httpx.HTTPError as e:
            log.warning("prometheus reload failed: %r", e)
            return False
        if r.status_code != 200:
            log.warning("prometheus rejected the reload (%s): %s", r.status_code, r.text[:2000])
        # A rejected config will not get better by retrying: the log says why.
        return True


# --- the harness --------------------------------------------------------------------------------


class LocalDataPlane:
    """Run the namespace's model revisions for real; see the module docstring.

    Use as a context manager from the test's own thread: processes die with the thread that
    started them (PR_SET_PDEATHSIG), so call `start_prometheus()` from a long-lived thread too.
    """

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        workdir: Path,
        *,
        rps: float = 20.0,
        body: bytes = DEFAULT_BODY,
        poll_interval: float = 0.5,
        max_inflight: int = 64,
        seed: int = 0,
        extra_scrape_configs: list[dict[str, Any]] | None = None,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.workdir = workdir
        self.body = body
        self.poll_interval = poll_interval
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "servers").mkdir(exist_ok=True)
        # Other scrape jobs (the operator's --metrics-port), beside the model servers.
        self._prometheus = Prometheus(workdir, extra_scrape_configs or [])
        self._load = LoadGenerator(self._pick, rps, max_inflight=max_inflight)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._servers: dict[str, _Server] = {}  # by Deployment name
        self._stopping: list[_Server] = []
        self._splits: dict[str, dict[str, float]] = {}  # model -> revision -> share
        self._ready: dict[str, _Server] = {}  # revision -> its ready server
        self._unready_picks: Counter[str] = Counter()
        self._startup_s: dict[str, float] = {}  # revision -> first start to first ready
        self._stop_s: dict[str, float] = {}  # revision -> SIGTERM to exit
        self._rules: dict[str, str] = {}  # PrometheusRule name -> rules file text
        self._reload_pending = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._api: Any = None
        self._probe: httpx.Client | None = None
        self._last_error = ""
        self.events: list[str] = []  # what happened, timestamped: for failure messages
        self._t0 = time.monotonic()

    # --- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> LocalDataPlane:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            log.error("data plane at failure:\n%s", self.describe())
        self.close()

    def start(self) -> None:
        from kubernetes import config as k8s_config

        kubeconfig = str(self.cluster.kubeconfig)
        self._api = k8s_config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        self._probe = httpx.Client(timeout=1.0)
        self._prometheus.start()
        self._event(f"prometheus ready at {self.prometheus_url}")
        self._thread = threading.Thread(target=self._poll_loop, name="dataplane", daemon=True)
        self._thread.start()
        self._load.start()

    def close(self) -> None:
        """Stop everything: load, polling, servers (SIGTERM, in parallel), Prometheus."""
        self._load.stop()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        with self._lock:
            servers = [*self._servers.values(), *self._stopping]
            self._servers.clear()
            self._stopping.clear()
            self._ready.clear()
        for s in servers:
            s.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for s in servers:
            while s.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            s.reap(force=True)
            s.close()
        self._prometheus.stop()
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        if self._api is not None:
            self._api.close()
            self._api = None

    # --- Prometheus -------------------------------------------------------------------------

    @property
    def prometheus_url(self) -> str:
        return self._prometheus.url

    def stop_prometheus(self) -> None:
        self._prometheus.stop()
        self._event("prometheus stopped")

    def start_prometheus(self) -> None:
        """Again on the same port, with the same TSDB (and the current rules and targets)."""
        self._prometheus.start()
        self._event("prometheus started again")

    def prometheus_start_seconds(self) -> list[float]:
        return list(self._prometheus.start_seconds)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query: the `result` list (vector elements: `metric`, `value`)."""
        r = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10)
        body = r.json()
        if r.status_code != 200 or body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed ({r.status_code}): {r.text[:1000]}")
        return list(body["data"]["result"])

    def value(self, promql: str) -> float | None:
        """The single number an instant query returns, None when it returns nothing."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) > 1:
            raise RuntimeError(f"query {promql!r} returned {len(result)} series: {result}")
        return float(result[0]["value"][1])

    def rule_names(self) -> set[str]:
        """Alert and recording rules Prometheus has loaded (`/api/v1/rules`)."""
        r = httpx.get(f"{self.prometheus_url}/api/v1/rules", timeout=10)
        r.raise_for_status()
        groups = r.json()["data"]["groups"]
        return {str(rule["name"]) for g in groups for rule in g["rules"]}

    # --- serving ----------------------------------------------------------------------------

    def serving(self) -> dict[str, str]:
        """revision -> gateway URL, for the revisions whose server is ready."""
        with self._lock:
            return {r: s.url for r, s in self._ready.items()}

    def running(self) -> dict[str, str]:
        """revision -> state of every server process: starting, ready, crashed or stopping."""
        with self._lock:
            out = {s.revision: "stopping" for s in self._stopping}
            for s in self._servers.values():
                out[s.revision] = "ready" if s.ready else "starting" if s.alive() else "crashed"
            return out

    def wait_serving(self, revision: str, timeout: float = 120) -> str:
        """Wait until `revision` is served (ready); its URL. Fails at once if its server exits."""
        deadline = time.monotonic() + timeout
        server: _Server | None = None
        while time.monotonic() < deadline:
            with self._lock:
                server = next((s for s in self._servers.values() if s.revision == revision), None)
                if revision in self._ready:
                    return self._ready[revision].url
            if server is not None and server.exits:
                raise AssertionError(
                    f"the server of revision {revision} exited {server.exits}; "
                    f"log tail:\n{server.log_tail(this_run=True)}"
                )
            time.sleep(0.2)
        tail = server.log_tail() if server is not None else "(no server was started for it)"
        raise AssertionError(
            f"revision {revision} not served after {timeout}s\n{self.describe()}\n"
            f"server log tail:\n{tail}"
        )

    def wait_stopped(self, revision: str, timeout: float = 60) -> None:
        """Wait until no process serves `revision` any more."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if revision not in self.running():
                return
            time.sleep(0.2)
        raise AssertionError(f"revision {revision} still runs after {timeout}s\n{self.describe()}")

    def startup_seconds(self) -> dict[str, float]:
        """revision -> seconds from its server's first start to its first ready probe (every
        revision served so far, stopped ones included)."""
        with self._lock:
            return dict(self._startup_s)

    def stop_seconds(self) -> dict[str, float]:
        """revision -> seconds from SIGTERM to its server's exit, for the stopped ones."""
        with self._lock:
            return dict(self._stop_s)

    def server_log(self, revision: str, chars: int = 4000) -> str:
        with self._lock:
            servers = [*self._servers.values(), *self._stopping]
        for s in servers:
            if s.revision == revision:
                return s.log_tail(chars)
        matches = sorted((self.workdir / "servers").glob("*.log"))
        return "\n".join(f"{p.name}:\n{_tail(p, chars)}" for p in matches if revision[:8] in p.name)

    def splits(self) -> dict[str, dict[str, float]]:
        """model -> revision -> share of its traffic, as the load generator follows it now."""
        with self._lock:
            return {m: dict(s) for m, s in self._splits.items()}

    # --- load -------------------------------------------------------------------------------

    def set_rate(self, rps: float) -> None:
        self._load.set_rate(rps)

    def pause_load(self) -> None:
        self._load.pause()

    def resume_load(self) -> None:
        self._load.resume()

    def sent_by_revision(self) -> Counter[str]:
        return self._load.sent_by_revision()

    def codes_by_revision(self) -> dict[str, Counter[int]]:
        """Responses per revision by HTTP status; 0 counts requests that got no response."""
        return self._load.codes_by_revision()

    def skipped(self) -> Counter[str]:
        """Requests due but not sent, by reason (no model, no ready revision, ...)."""
        return self._load.skipped()

    def unready_picks(self) -> Counter[str]:
        """Requests the split gave a revision whose server was not ready, by that revision (they
        went to the split's other ready revisions, or were skipped when it had none)."""
        with self._lock:
            return Counter(self._unready_picks)

    def _pick(self) -> Target | str:
        with self._lock:
            models = sorted(m for m, s in self._splits.items() if s)
            if not models:
                return "no revision to send to"
            model = models[0] if len(models) == 1 else self._rng.choice(models)
            revision, unready = choose_revision(self._splits[model], self._ready, self._rng)
            if unready is not None:
                self._unready_picks[unready] += 1
            if revision is None:
                return "no ready revision"
            server = self._ready[revision]
        headers = {"Authorization": f"Bearer {server.token}"} if server.token else {}
        return Target(revision, f"{server.url}/predictions/{model}", self.body, headers)

    # --- describe ---------------------------------------------------------------------------

    def describe(self) -> str:
        lines = [f"data plane of {self.namespace} (prometheus {self.prometheus_url})"]
        lines.append(f"  servers: {self.running()}")
        lines.append(f"  splits: {self.splits()}")
        lines.append(f"  sent: {dict(self.sent_by_revision())}")
        lines.append(f"  codes: { {r: dict(c) for r, c in self.codes_by_revision().items()} }")
        lines.append(
            f"  skipped: {dict(self.skipped())}  unready picks: {dict(self.unready_picks())}"
        )
        lines.append(f"  last API error: {self._last_error or '-'}")
        lines += [f"  {e}" for e in self.events[-30:]]
        return "\n".join(lines)

    def _event(self, message: str) -> None:
        line = f"{time.monotonic() - self._t0:7.1f}s {message}"
        self.events.append(line)
        log.info("%s", message)

    # --- the polling thread -----------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self._tick()
            except Exception as e:  # never die: the next tick retries
                message = f"{type(e).__name__}: {e}"
                if message != self._last_error:
                    log.warning("data plane poll failed: %s", message, exc_info=True)
                self._last_error = message
            self._stop.wait(max(0.0, self.poll_interval - (time.monotonic() - began)))

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One typed kubernetes-client call, as plain JSON (None when the object or the kind is
        not there: a CRD that is not installed reads as nothing)."""
        from kubernetes import client as k8s
        from kubernetes.client.exceptions import ApiException

        api_name, _, call = method.partition(".")
        api = getattr(k8s, api_name)(self._api)
        try:
            r = getattr(api, call)(*args, _preload_content=False, _request_timeout=5, **kwargs)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return json.loads(r.data)

    def _list(self, method: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        found = self._call(method, *args, **kwargs)
        return list((found or {}).get("items") or [])

    def _get(self, method: str, name: str) -> dict[str, Any] | None:
        found = self._call(method, name, self.namespace)
        return dict(found) if found is not None else None

    def _tick(self) -> None:
        ns = self.namespace
        listed = self._list(
            "AppsV1Api.list_namespaced_deployment", ns, label_selector=MANAGED_BY_SELECTOR
        )
        deployments = [
            d
            for d in listed
            if revision_of(d)
            and _labels(d).get(LABEL_MODEL)
            and not d["metadata"].get("deletionTimestamp")
        ]
        services = {
            s["metadata"]["name"]: s for s in self._list("CoreV1Api.list_namespaced_service", ns)
        }
        group, version, plural = HTTPROUTE
        routes = {
            r["metadata"]["name"]: r
            for r in self._list(
                "CustomObjectsApi.list_namespaced_custom_object", group, version, ns, plural
            )
        }
        self._last_error = ""

        self._sync_servers(deployments)
        self._watch_servers()
        models = sorted({_labels(d)[LABEL_MODEL] for d in deployments})
        splits = {m: traffic_split(m, deployments, services, routes.get(m)) for m in models}
        with self._lock:
            if splits != self._splits:
                self._event(f"traffic split {splits}")
            self._splits = splits
        self._write_targets()
        self._sync_rules()

    def _sync_servers(self, deployments: list[dict[str, Any]]) -> None:
        wanted = {d["metadata"]["name"]: d for d in deployments if replicas_of(d) >= 1}
        with self._lock:
            gone = [s for name, s in self._servers.items() if name not in wanted]
            for s in gone:
                del self._servers[s.deployment]
                self._ready.pop(s.revision, None)
                self._stopping.append(s)
        for s in gone:
            self._event(
                f"revision {s.revision}: {s.deployment} deleted or scaled to 0: stopping its server"
            )
            s.terminate()
        for name, d in wanted.items():
            if name in self._servers:
                continue
            server = self._new_server(d)
            if server is None:
                continue
            server.start()
            with self._lock:
                self._servers[name] = server
            self._event(f"revision {server.revision} ({name}): started tmo serve")

    def _new_server(self, deployment: dict[str, Any]) -> _Server | None:
        """The revision's pod contents from its ConfigMap (and token Secret); None while one
        of them is missing (the next tick tries again)."""
        ns, name = self.namespace, deployment["metadata"]["name"]
        pod_spec = deployment["spec"]["template"]["spec"]
        config_maps = [
            v["configMap"]["name"] for v in pod_spec.get("volumes") or [] if v.get("configMap")
        ]
        manifest_text = None
        for cm_name in [*config_maps, f"{name}-config"]:
            cm = self._get("CoreV1Api.read_namespaced_config_map", cm_name)
            if cm is not None and "model.yaml" in (cm.get("data") or {}):
                manifest_text = cm["data"]["model.yaml"]
                break
        if manifest_text is None:
            self._note_once(f"{name}: no ConfigMap with model.yaml yet ({config_maps})")
            return None
        manifest = yaml.safe_load(manifest_text)
        revision = revision_of(deployment)
        served = str((manifest.get("status") or {}).get("revision", ""))
        if served != revision:
            log.warning("%s: model.yaml says revision %r, label %r", name, served, revision)
        home = self.workdir / "servers" / name
        home.mkdir(parents=True, exist_ok=True)
        (home / "model.yaml").write_text(manifest_text)
        token = token_file = None
        ref = ((manifest.get("spec") or {}).get("auth") or {}).get("tokenSecretRef")
        if ref:
            secret = self._get("CoreV1Api.read_namespaced_secret", ref["name"])
            key = ref.get("key", "token")
            if secret is None or key not in (secret.get("data") or {}):
                self._note_once(f"{name}: token Secret {ref['name']}[{key}] missing")
                return None
            token = base64.b64decode(secret["data"][key]).decode().strip()
            token_file = home / "token"
            token_file.write_text(token + "\n")
            token_file.chmod(0o600)
        container = next(
            (
                c["name"]
                for c in pod_spec.get("containers") or []
                if any(p.get("name") == "metrics" for p in c.get("ports") or [])
            ),
            "gateway",
        )
        return _Server(
            deployment=name,
            model=_labels(deployment)[LABEL_MODEL],
            revision=revision,
            namespace=ns,
            manifest=home / "model.yaml",
            token_file=token_file,
            token=token,
            container=container,
            log_path=self.workdir / "servers" / f"{name}.log",
        )

    def _note_once(self, message: str) -> None:
        if not self.events or not self.events[-1].endswith(message):
            self._event(message)

    def _watch_servers(self) -> None:
        """Reap stopped servers, restart crashed ones (with back-off), probe readiness."""
        now = time.monotonic()
        with self._lock:
            stopping = list(self._stopping)
            servers = list(self._servers.values())
        for s in stopping:
            if s.reap():
                code = s.process.returncode if s.process is not None else None
                s.close()
                with self._lock:
                    self._stopping.remove(s)
                    if s.stopping_since is not None:
                        self._stop_s[s.revision] = time.monotonic() - s.stopping_since
                how = f"exit {code}" if code is not None else "it was not running"
                self._event(f"revision {s.revision}: server stopped ({how})")
        assert self._probe is not None
        for s in servers:
            if not s.alive():
                if s.process is not None:  # just exited: record, then restart after a back-off
                    code = int(s.process.returncode)
                    s.exits.append(code)
                    s.process = None
                    s.cleanup()
                    backoff = RESTART_BACKOFF_S[min(len(s.exits), len(RESTART_BACKOFF_S)) - 1]
                    s.restart_at = now + backoff
                    with self._lock:
                        self._ready.pop(s.revision, None)
                    s.ready = False
                    self._event(
                        f"revision {s.revision}: server exited with {code}, restart in "
                        f"{backoff:.0f}s; log tail:\n{s.log_tail(800, this_run=True).rstrip()}"
                    )
                elif now >= s.restart_at:
                    s.start()
                    self._event(f"revision {s.revision}: server restarted")
                continue
            try:
                ok = self._probe.get(f"{s.metrics_url}/readyz").status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                s.probe_failures = 0
                if not s.ready:
                    s.ready = True
                    with self._lock:
                        self._ready[s.revision] = s
                        if s.revision not in self._startup_s:
                            self._startup_s[s.revision] = time.monotonic() - s.first_started
                    self._event(
                        f"revision {s.revision}: ready after "
                        f"{time.monotonic() - s.started:.1f}s at {s.url}"
                    )
            elif s.ready:
                s.probe_failures += 1
                if s.probe_failures >= PROBE_FAILURE_THRESHOLD:
                    s.ready = False
                    with self._lock:
                        self._ready.pop(s.revision, None)
                    self._event(f"revision {s.revision}: readiness probe failing: not ready")

    def _write_targets(self) -> None:
        """Prometheus' file_sd targets: one per running server, labelled as a ServiceMonitor
        labels a pod's endpoint (model and revision come from the series)."""
        with self._lock:
            servers = [s for s in self._servers.values() if s.alive()]
        targets = [
            {
                "targets": [f"127.0.0.1:{s.metrics_port}"],
                "labels": {
                    "namespace": s.namespace,
                    "pod": s.pod,
                    "service": s.model,
                    "job": s.model,
                    "endpoint": "metrics",
                    "container": s.container,
                },
            }
            for s in sorted(servers, key=lambda s: s.deployment)
        ]
        text = json.dumps(targets, indent=1)
        try:
            current = self._prometheus.targets_file.read_text()
        except OSError:
            current = ""
        if text != current:
            _write_atomic(self._prometheus.targets_file, text)

    def _sync_rules(self) -> None:
        """Every PrometheusRule of the namespace as a rule file; reload Prometheus on change."""
        group, version, plural = PROMETHEUSRULE
        found = self._list(
            "CustomObjectsApi.list_namespaced_custom_object", group, version, self.namespace, plural
        )
        rules = {
            r["metadata"]["name"]: yaml.safe_dump(
                {"groups": (r.get("spec") or {}).get("groups") or []}, sort_keys=False
            )
            for r in found
        }
        if rules != self._rules:
            rules_dir = self._prometheus.rules_dir
            for name in set(self._rules) - set(rules):
                (rules_dir / f"{name}.yaml").unlink(missing_ok=True)
            for name, text in rules.items():
                if self._rules.get(name) != text:
                    _write_atomic(rules_dir / f"{name}.yaml", text)
            self._event(f"alert rules from PrometheusRules {sorted(rules)}")
            self._rules = rules
            self._reload_pending = True
        if self._reload_pending and self._prometheus.running():
            self._reload_pending = not self._prometheus.reload()

    # --- for debugging ----------------------------------------------------------------------

    def server_processes(self) -> Iterator[int]:
        """PIDs of the live `tmo serve` processes (tests check nothing leaks)."""
        with self._lock:
            servers = [*self._servers.values(), *self._stopping]
        for s in servers:
            if s.alive():
                yield int(s.process.pid)


# --- as a command: the demo runs it beside the operator ---------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m e2e.dataplane --namespace NS`: play kubelet, Gateway and Prometheus for one
    namespace of the local control plane until SIGTERM/Ctrl-C (what `make demo` runs)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m e2e.dataplane", description=main.__doc__)
    parser.add_argument("--kubeconfig", type=Path, default=REPO / ".cluster" / "kubeconfig")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--rps", type=float, default=12.0, help="requests per second in all")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with LocalDataPlane(Cluster(args.kubeconfig), args.namespace, args.workdir, rps=args.rps) as dp:
        # Where the operator's --prometheus-url points: the demo reads it from this file.
        _write_atomic(args.workdir / "prometheus_url", dp.prometheus_url)
        print(
            f"data plane for namespace {args.namespace}: Prometheus {dp.prometheus_url}", flush=True
        )
        while not stop.wait(1.0):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
