"""Rollout benchmark: how fast a breaching canary is rolled back, and API writes per rollout step.

1. Breach -> all traffic on stable. The Rollout (router `replicas`, steps `setWeight 20`,
   `pause 10m`) gates on a `query` metric whose value this bench serves itself: a tiny exporter
   thread, scraped every second by a real Prometheus. Once the canary sits in its pause, at a
   random moment within an analysis interval, the value goes from 0 to 5 (max 1) and the bench
   times, from its own watches: the Rollout's status turning `RolledBack`, the canary Deployment
   deleted (what moves traffic under the replicas router) and its pods terminating. Goal
   (issue 8): at most one analysis interval plus one scrape.
2. API writes per rollout step: a healthy 5-step canary (interval 1s, passing gate) from the
   model change to `Succeeded` with the old revision retired, from the operator's --stats-file
   counters, against a plain TransformerModel change without a Rollout (a rolling update).

    .venv/bin/python -m bench.rollout [--intervals 2,5,10] [--repetitions 3] [--write-repetitions 3]

Starts the local control plane when it is not up (`make cluster-up`), Prometheus (Debian's, on
PATH) and, for every run, a fresh namespace and a fresh operator process that watches only it.
kwok pods run nothing: the figures are the control plane's and the operator's, not TorchServe's.
A run that another TMO operator also acts on (an e2e test's operator watching every namespace)
is discarded and repeated: its writes and its fights would count.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from tmo.kube.client import Connection
from tmo.render import RenderSettings, render_children

from e2e.kube import Cluster, wait_for
from e2e.rollouts import apply, model_manifest, rollout_manifest, wait_phase
from e2e.tmo_operator import REPO, OperatorProcess, install_crds, operator_kubeconfig

NAME = "bench"
SCRAPE_SECONDS = 1.0
GATE_METRIC = "bench_canary_value"
GATE: dict[str, Any] = {
    "name": "bench-gate",
    "query": f'max({GATE_METRIC}{{revision="{{{{canary}}}}"}})',
    "max": 1,
}
BREACH_VALUE = 5.0
BREACH_STEPS: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {"duration": "10m"}}]
WRITE_STEPS: list[dict[str, Any]] = [
    {"setWeight": 20},
    {"pause": {"duration": "2s"}},
    {"setWeight": 50},
    {"pause": {"duration": "2s"}},
    {"setWeight": 80},
]
# The operator and the bench agree on the default image, so the bench can predict revisions.
RUNTIME_IMAGE = RenderSettings.runtime_image

_T0 = time.monotonic()


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the gate metric: an exporter in this process, a real Prometheus scraping it ------------


class Exporter:
    """Serves `bench_canary_value{revision="..."} V` in Prometheus' text format."""

    def __init__(self) -> None:
        self._values: dict[str, float] = {}
        self._lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set(self, revision: str, value: float) -> None:
        with self._lock:
            self._values[revision] = value

    def drop(self, revision: str) -> None:
        with self._lock:
            self._values.pop(revision, None)

    def render(self) -> str:
        with self._lock:
            lines = [f'{GATE_METRIC}{{revision="{r}"}} {v:g}' for r, v in self._values.items()]
        return f"# TYPE {GATE_METRIC} gauge\n" + "".join(f"{line}\n" for line in lines)


class Prometheus:
    """Debian's prometheus on a free loopback port, scraping one target every second."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.dir = workdir / "prometheus"
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = self.dir / "prometheus.yml"
        self.log_path = self.dir / "prometheus.log"
        interval = f"{SCRAPE_SECONDS:g}s"
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "scrape_configs": [
                {
                    "job_name": "bench",
                    "honor_labels": True,
                    "static_configs": [{"targets": [target]}],
                }
            ],
        }
        self.config.write_text(json.dumps(config, indent=1))  # JSON is YAML
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise SystemExit("prometheus is not on PATH: `make deps` (Debian's prometheus)")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1d",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"prometheus exited:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"prometheus not ready after {timeout} s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def samples(self, revision: str, window: str = "10m") -> list[tuple[float, float]]:
        """Raw scraped samples (timestamp = scrape start, wall clock) of one revision's gate."""
        r = httpx.get(
            f"{self.url}/api/v1/query",
            params={"query": f'{GATE_METRIC}{{revision="{revision}"}}[{window}]'},
            timeout=10,
        )
        r.raise_for_status()
        result = r.json()["data"]["result"]
        return [(float(t), float(v)) for series in result for t, v in series["values"]]


# --- watching the cluster: when did it happen, to the millisecond ---------------------------


class Watch(threading.Thread):
    """A Kubernetes watch in a thread: (wall time received, type, object) of every event."""

    def __init__(self, connection: Connection, path: str, selector: str = "") -> None:
        super().__init__(daemon=True)
        self.connection = connection
        self.path = path
        self.selector = selector
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        rv: str | None = None
        c = self.connection
        with httpx.Client(
            base_url=c.host, verify=c.verify, headers=c.headers, timeout=httpx.Timeout(10.0)
        ) as http:
            while not self._stop_event.is_set():
                # Short server-side timeouts: the thread notices stop() within seconds.
                params = {"watch": "1", "timeoutSeconds": "2"}
                if self.selector:
                    params["labelSelector"] = self.selector
                if rv:
                    params["resourceVersion"] = rv
                try:
                    with http.stream("GET", self.path, params=params) as r:
                        for line in r.iter_lines():
                            if not line:
                                continue
                            event = json.loads(line)
                            received = time.time()
                            if event.get("type") == "ERROR":  # 410 Gone: list again
                                rv = None
                                break
                            obj = event["object"]
                            rv = obj["metadata"].get("resourceVersion") or rv
                            self.events.append((received, event["type"], obj))
                except (httpx.HTTPError, ValueError):
                    time.sleep(0.2)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=15)

    def snapshot(self) -> list[tuple[float, str, dict[str, Any]]]:
        return list(self.events)


def first(
    events: list[tuple[float, str, dict[str, Any]]],
    match: Callable[[str, dict[str, Any]], bool],
    after: float,
) -> float | None:
    return next((t for t, kind, obj in events if t >= after and match(kind, obj)), None)


def revision_label(obj: dict[str, Any]) -> str:
    return str((obj["metadata"].get("labels") or {}).get("tmo.dev/revision", ""))


def pods_terminating_at(
    events: list[tuple[float, str, dict[str, Any]]], revision: str, after: float
) -> float | None:
    """When every pod of `revision` was terminating or gone (the Service stops sending it
    traffic), replaying the pod watch."""
    live: dict[str, bool] = {}
    for t, kind, obj in events:
        if revision_label(obj) != revision:
            continue
        name = obj["metadata"]["name"]
        live[name] = kind != "DELETED" and not obj["metadata"].get("deletionTimestamp")
        if t >= after and live and not any(live.values()):
            return t
    return None


# --- one bench run: a namespace, an operator, a model and maybe a Rollout -----------------


class Interference(Exception):
    """Another TMO operator acted on the bench's namespace: the run is discarded."""


class Bench:
    def __init__(self, workdir: Path, cluster: Cluster) -> None:
        self.workdir = workdir
        self.cluster = cluster
        self.connection = Connection.load(str(cluster.kubeconfig))
        self.exporter = Exporter()
        self.prometheus = Prometheus(workdir, self.exporter.target)
        self.operator_kubeconfig = operator_kubeconfig(cluster, workdir)
        self.runs = 0

    @contextlib.contextmanager
    def run(
        self, label: str, manifests: Callable[[str], list[dict[str, Any]]]
    ) -> Iterator[tuple[str, OperatorProcess]]:
        """A fresh namespace with `manifests(namespace)` applied, and a fresh operator watching
        only it; both go afterwards. Raises Interference when another operator (one watching
        every namespace, say an e2e test's) acts on the namespace too: its writes would count."""
        self.runs += 1
        ns = f"bench-ro-{uuid.uuid4().hex[:6]}"
        workdir = self.workdir / f"{self.runs:02d}-{label}-{ns}"
        workdir.mkdir()
        self.cluster.kubectl("create", "namespace", ns)
        op = OperatorProcess(
            self.cluster,
            workdir,
            kubeconfig=self.operator_kubeconfig,
            args=[
                "--namespace",
                ns,
                "--prometheus-url",
                self.prometheus.url,
                "--runtime-image",
                RUNTIME_IMAGE,
                "--retry-initial-seconds",
                "1",
                "--retry-max-seconds",
                "2",
                "--log-format",
                "plain",
            ],
        )
        try:
            apply(self.cluster, *manifests(ns))
            # Nobody should touch the model before our operator runs.
            time.sleep(2)
            if self.cluster.get("tm", NAME, ns).get("status"):
                raise Interference(f"{ns}: another operator reconciled the model")
            op.start()
            yield ns, op
            self.check_alone(ns, op)
        except (AssertionError, RuntimeError, subprocess.SubprocessError) as e:
            progress(f"{label} in {ns} failed: {e}\noperator log ({op.log_file}):\n{op.log()}")
            raise
        finally:
            op.stop()
            self.cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)

    def check_alone(self, ns: str, op: OperatorProcess) -> None:
        """More TMO Events in the namespace than our operator posted: another one acted."""
        posted = op.stats()["events"]
        seen = sum(
            1
            for e in self.cluster.get_all("events", ns)
            if (e.get("source") or {}).get("component") == "tmo-operator"
        )
        if seen > posted:
            raise Interference(f"{ns}: {seen} TMO Events, our operator posted {posted}")

    def predict_revision(self, ns: str, patch: dict[str, Any]) -> str:
        """The revision the operator will compute for the model after `patch` (a server-side
        dry run gives the spec with the CRD's defaults), so the gate series exists before the
        canary's first analysis run."""
        out = self.cluster.kubectl(
            "-n", ns, "patch", "tm", NAME, "--type", "merge", "-p", json.dumps(patch),
            "--dry-run=server", "-o", "json",
        ).stdout  # fmt: skip
        return revision_of(json.loads(out))

    def watches(self, ns: str) -> dict[str, Watch]:
        selector = f"tmo.dev/model={NAME}"
        w = {
            "rollouts": Watch(self.connection, f"/apis/tmo.dev/v1alpha1/namespaces/{ns}/rollouts"),
            "deployments": Watch(
                self.connection, f"/apis/apps/v1/namespaces/{ns}/deployments", selector
            ),
            "pods": Watch(self.connection, f"/api/v1/namespaces/{ns}/pods", selector),
        }
        for watch in w.values():
            watch.start()
        return w


def revision_of(model: dict[str, Any]) -> str:
    return render_children(model, RenderSettings(runtime_image=RUNTIME_IMAGE)).revision


def check_prediction(cluster: Cluster, ns: str) -> None:
    model = cluster.get("tm", NAME, ns)
    actual = (model.get("status") or {}).get("revision")
    if revision_of(model) != actual:
        raise AssertionError(
            f"the bench computes revision {revision_of(model)} for the model, the operator "
            f"{actual}: tmo.render changed how it computes revisions?"
        )


def patch_model(cluster: Cluster, ns: str, patch: dict[str, Any]) -> None:
    cluster.kubectl("-n", ns, "patch", "tm", NAME, "--type", "merge", "-p", json.dumps(patch))


def model_deployments(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    return cluster.get_all("deployments", ns, "-l", f"tmo.dev/model={NAME}")


def settled(op: OperatorProcess, quiet: float = 2.0, timeout: float = 30.0) -> dict[str, Any]:
    """The operator's counters once it has made no request for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last = op.stats()
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = op.stats()
        if now["request_total"] != last["request_total"]:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    return last


# --- 1. breach -> all traffic on stable ----------------------------------------------------


def breach_run(bench: Bench, interval: float, rng: random.Random) -> dict[str, Any]:
    cluster = bench.cluster

    def manifests(ns: str) -> list[dict[str, Any]]:
        return [
            model_manifest(ns, NAME, f"s3://models/bench/{ns}/", route=False),
            rollout_manifest(
                ns,
                NAME,
                BREACH_STEPS,
                router="replicas",
                interval=f"{interval:g}s",
                minRequests=0,
                failureLimit=0,
                metrics=[GATE],
            ),
        ]

    with bench.run(f"breach-{interval:g}s", manifests) as (ns, op):
        wait_phase(cluster, ns, NAME, {"Idle"}, timeout=90)
        check_prediction(cluster, ns)
        patch = {"spec": {"runtime": {"maxBatchDelayMs": 7}}}
        canary = bench.predict_revision(ns, patch)
        bench.exporter.set(canary, 0)
        watches = bench.watches(ns)
        try:
            patch_model(cluster, ns, patch)
            # The canary at 20 %, its setWeight step passed: it now waits out the 10m pause.
            wait_phase(
                cluster,
                ns,
                NAME,
                {"Progressing"},
                timeout=60 + 4 * interval,
                canaryRevision=canary,
                currentStep=1,
                canaryWeight=20,
            )
            time.sleep(rng.uniform(0, interval))  # breach anywhere in the analysis cycle
            breach = time.time()
            bench.exporter.set(canary, BREACH_VALUE)
            progress(f"  breach of canary {canary} in {ns}")

            def rolled_back(kind: str, obj: dict[str, Any]) -> bool:
                st = obj.get("status") or {}
                return st.get("phase") == "RolledBack" and st.get("canaryRevision") == canary

            def canary_gone(kind: str, obj: dict[str, Any]) -> bool:
                return kind == "DELETED" and revision_label(obj) == canary

            def done() -> bool:
                return (
                    first(watches["rollouts"].snapshot(), rolled_back, breach) is not None
                    and first(watches["deployments"].snapshot(), canary_gone, breach) is not None
                    and pods_terminating_at(watches["pods"].snapshot(), canary, breach) is not None
                )

            wait_for("the canary rolled back and removed", done, 3 * interval + 60, 0.05)
            time.sleep(0.5)
        finally:
            for watch in watches.values():
                watch.stop()
            bench.exporter.drop(canary)
        rollouts = watches["rollouts"].snapshot()
        if any(
            "PrometheusNotConfigured" in json.dumps(obj.get("status")) for _, _, obj in rollouts
        ):
            raise Interference(f"{ns}: an operator without --prometheus-url wrote the Rollout")
        t_rolled_back = first(rollouts, rolled_back, breach)
        t_gone = first(watches["deployments"].snapshot(), canary_gone, breach)
        t_pods = pods_terminating_at(watches["pods"].snapshot(), canary, breach)
        assert t_rolled_back is not None and t_gone is not None and t_pods is not None
        scraped = next((t for t, v in bench.prometheus.samples(canary) if v == BREACH_VALUE), None)
        runs = analysis_runs(rollouts, canary)
        before = [t for t in runs if t < breach]
        # Up to and including the failing run (its status write is the RolledBack one).
        spacing = [b - a for a, b in itertools.pairwise(t for t in runs if t <= t_rolled_back)]
        final = next(obj for _, _, obj in reversed(rollouts) if rolled_back("", obj))
        stats = op.stats()
    return {
        "interval_s": interval,
        "namespace": ns,
        "canary": canary,
        "rolled_back_s": round(t_rolled_back - breach, 2),
        "canary_deployment_gone_s": round(t_gone - breach, 2),
        "canary_pods_terminating_s": round(t_pods - breach, 2),
        # Where the time went: the scrape that saw the breach, the wait for the next analysis
        # run (whose status write is the RolledBack one), the deletion after that write.
        "scrape_s": round(scraped - breach, 2) if scraped is not None else None,
        "analysis_wait_s": round(t_rolled_back - scraped, 2) if scraped is not None else None,
        "delete_after_status_s": round(t_gone - t_rolled_back, 2),
        "last_run_before_breach_s": round(breach - before[-1], 2) if before else None,
        "run_spacing_s": round(statistics.median(spacing), 2) if spacing else None,
        "analysis_runs": stats["analysis_runs"],
        "message": (final.get("status") or {}).get("message", "")[:200],
    }


def analysis_runs(events: list[tuple[float, str, dict[str, Any]]], canary: str) -> list[float]:
    """When each analysis run's result reached the API (every run writes status.analysis)."""
    seen: set[tuple[Any, ...]] = set()
    times = []
    for t, _, obj in events:
        st = obj.get("status") or {}
        a = st.get("analysis") or {}
        if st.get("canaryRevision") != canary or not a.get("lastRunTime"):
            continue
        key = (
            a.get("passed"),
            a.get("failed"),
            a.get("inconclusive"),
            a.get("consecutiveErrors"),
            a.get("lastRunTime"),
        )
        if key not in seen:
            seen.add(key)
            times.append(t)
    return times


# --- 2. API writes per rollout step --------------------------------------------------------

COUNTERS = (
    "writes",
    "rollout_status_writes",
    "events",
    "status_writes",
    "child_writes",
    "analysis_runs",
    "request_total",
)


def writes_run(bench: Bench, with_rollout: bool) -> dict[str, Any]:
    cluster = bench.cluster
    label = "canary" if with_rollout else "rolling-update"

    def manifests(ns: str) -> list[dict[str, Any]]:
        docs = [model_manifest(ns, NAME, f"s3://models/bench/{ns}/", route=False)]
        if with_rollout:
            docs.append(
                rollout_manifest(
                    ns,
                    NAME,
                    WRITE_STEPS,
                    router="replicas",
                    interval="1s",
                    minRequests=0,
                    failureLimit=0,
                    metrics=[GATE],
                )
            )
        return docs

    with bench.run(f"writes-{label}", manifests) as (ns, op):
        patch = {"spec": {"runtime": {"maxBatchDelayMs": 7}}}
        if with_rollout:
            wait_phase(cluster, ns, NAME, {"Idle"}, timeout=90)
        wait_for("the first revision Ready", lambda: model_ready(cluster, ns), 90)
        check_prediction(cluster, ns)
        new = bench.predict_revision(ns, patch)
        bench.exporter.set(new, 0)  # a passing gate from the canary's first run on
        before = settled(op)
        t0 = time.monotonic()
        patch_model(cluster, ns, patch)
        try:
            if with_rollout:
                wait_phase(cluster, ns, NAME, {"Succeeded"}, timeout=180, stableRevision=new)
            wait_for("the new revision Ready", lambda: model_ready(cluster, ns, new), 180, 0.2)
            wait_for(
                "the old revision retired",
                lambda: [revision_label(d) for d in model_deployments(cluster, ns)] == [new],
                60,
                0.2,
            )
            elapsed = time.monotonic() - t0
            after = settled(op)
        finally:
            bench.exporter.drop(new)
    steps = len(WRITE_STEPS) if with_rollout else 1
    out: dict[str, Any] = {"scenario": label, "namespace": ns, "steps": steps}
    out.update({k: after[k] - before[k] for k in COUNTERS})
    out["model_status_writes"] = out["status_writes"] - out["rollout_status_writes"]
    out["ns_writes"] = after["writes_by_namespace"].get(ns, 0) - before["writes_by_namespace"].get(
        ns, 0
    )
    out["seconds"] = round(elapsed, 1)
    return out


def model_ready(cluster: Cluster, ns: str, revision: str | None = None) -> bool:
    obj = cluster.get("tm", NAME, ns)
    st = obj.get("status") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or [])
    return (
        ready
        and st.get("observedGeneration") == obj["metadata"]["generation"]
        and (revision is None or st.get("revision") == revision)
    )


# --- tables ---------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    lines = [" | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("-|-".join("-" * w for w in widths))
    for r in rows:
        lines.append(" | ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True)))
    return "\n".join(lines)


def median(values: list[float | None]) -> float | str:
    vs = [v for v in values if v is not None]
    return round(statistics.median(vs), 2) if vs else "-"


def breach_table(results: list[dict[str, Any]], intervals: list[float]) -> list[dict[str, Any]]:
    rows = []
    for interval in intervals:
        runs = [r for r in results if r["interval_s"] == interval and "error" not in r]
        failed = sum(1 for r in results if r["interval_s"] == interval and "error" in r)
        goal = interval + SCRAPE_SECONDS
        row: dict[str, Any] = {
            "interval_s": f"{interval:g}",
            "runs": f"{len(runs)}" + (f" (+{failed} failed)" if failed else ""),
            "goal_s": f"{goal:g}",
        }
        for key, short in (("rolled_back_s", "rolledback"), ("canary_deployment_gone_s", "gone")):
            vs = [float(r[key]) for r in runs]
            if not vs:
                row |= {f"{short}_med_s": "-", f"{short}_max_s": "-", f"{short}_med_iv": "-"}
                row |= {f"{short}_max_iv": "-"}
                continue
            med, top = statistics.median(vs), max(vs)
            row[f"{short}_med_s"] = f"{med:.2f}"
            row[f"{short}_max_s"] = f"{top:.2f}"
            row[f"{short}_med_iv"] = f"{med / interval:.2f}"
            row[f"{short}_max_iv"] = f"{top / interval:.2f}"
        within = sum(1 for r in runs if r["canary_deployment_gone_s"] <= goal)
        row["gone_within_goal"] = f"{within}/{len(runs)}"
        row["pods_term_med_s"] = median([r["canary_pods_terminating_s"] for r in runs])
        row["scrape_med_s"] = median([r["scrape_s"] for r in runs])
        row["analysis_wait_med_s"] = median([r["analysis_wait_s"] for r in runs])
        row["delete_med_s"] = median([r["delete_after_status_s"] for r in runs])
        row["run_spacing_med_s"] = median([r["run_spacing_s"] for r in runs])
        rows.append(row)
    return rows


def writes_table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for scenario, title in (
        ("rolling-update", "baseline: model change, no Rollout (rolling update)"),
        ("canary", f"canary, {len(WRITE_STEPS)} steps, interval 1s"),
    ):
        runs = [r for r in results if r["scenario"] == scenario and "error" not in r]
        if not runs:
            continue
        steps = runs[0]["steps"]

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return float(statistics.median(float(r[key]) for r in runs))

        rows.append(
            {
                "scenario": title,
                "runs": len(runs),
                "steps": steps,
                "seconds": f"{med('seconds'):.1f}",
                "writes": f"{med('writes'):g}",
                "writes/step": f"{med('writes') / steps:.1f}",
                "rollout_status_writes": f"{med('rollout_status_writes'):g}",
                "rollout_status/step": f"{med('rollout_status_writes') / steps:.1f}",
                "events": f"{med('events'):g}",
                "events/step": f"{med('events') / steps:.1f}",
                "model_status_writes": f"{med('model_status_writes'):g}",
                "child_writes": f"{med('child_writes'):g}",
                "analysis_runs": f"{med('analysis_runs'):g}",
                "requests": f"{med('request_total'):g}",
            }
        )
    return rows


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: operator, Prometheus, namespaces


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--intervals", default="2,5,10", help="analysis intervals in seconds (default 2,5,10)"
    )
    parser.add_argument(
        "--repetitions", type=int, default=3, help="breach runs per interval (default 3)"
    )
    parser.add_argument(
        "--write-repetitions",
        type=int,
        default=3,
        help="runs of each write scenario, canary and rolling update (default 3)",
    )
    parser.add_argument(
        "--parts", default="writes,breach", help="which parts to run (default writes,breach)"
    )
    parser.add_argument("--seed", type=int, default=8, help="seed of the breach moments")
    parser.add_argument(
        "--attempts",
        type=int,
        default=6,
        help="tries of a run that another operator interfered with (default 6)",
    )
    parser.add_argument(
        "--interference-wait",
        type=float,
        default=30.0,
        help="seconds to wait before trying such a run again (default 30)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the operator and Prometheus logs"
    )
    args = parser.parse_args()
    intervals = [float(i) for i in args.intervals.split(",")]
    if any(i < 1 for i in intervals):
        parser.error("analysis intervals must be at least 1 s (the CRD's minimum)")
    parts = set(args.parts.split(","))
    started = time.monotonic()
    # Starts the local control plane when it is not up (idempotent, seconds when cached).
    subprocess.run([str(REPO / "e2e" / "cluster" / "up.sh")], check=True, stdout=sys.stderr)
    cluster = Cluster(REPO / ".cluster" / "kubeconfig")
    install_crds(cluster)
    workdir = Path(tempfile.mkdtemp(prefix="tmo-bench-rollout-"))
    rng = random.Random(args.seed)
    writes: list[dict[str, Any]] = []
    breaches: list[dict[str, Any]] = []
    discarded = 0
    bench = Bench(workdir, cluster)
    bench.exporter.start()
    bench.prometheus.start()
    try:
        plan: list[tuple[str, Callable[[], dict[str, Any]], dict[str, Any]]] = []
        if "writes" in parts:
            for i in range(args.write_repetitions):
                for with_rollout in (False, True):
                    label = "canary" if with_rollout else "rolling-update"
                    plan.append(
                        (
                            f"writes run {i + 1}/{args.write_repetitions}, {label}",
                            functools.partial(writes_run, bench, with_rollout),
                            {"scenario": label},
                        )
                    )
        if "breach" in parts:
            for i in range(args.repetitions):
                for interval in intervals:
                    plan.append(
                        (
                            f"breach run {i + 1}/{args.repetitions}, interval {interval:g}s",
                            functools.partial(breach_run, bench, interval, rng),
                            {"interval_s": interval},
                        )
                    )
        for what, run, key in plan:
            result = dict(key)
            for attempt in range(1, args.attempts + 1):
                progress(what + (f" (attempt {attempt})" if attempt > 1 else ""))
                try:
                    result = run()
                    break
                except Interference as e:
                    discarded += 1
                    progress(f"  discarded, another operator acts on bench namespaces: {e}")
                    result = {**key, "error": f"interference: {e}"}
                    time.sleep(args.interference_wait)
                except (AssertionError, RuntimeError, subprocess.SubprocessError) as e:
                    result = {**key, "error": str(e)[:300]}
                    break
            (writes if "scenario" in key else breaches).append(result)
            print(json.dumps(result), flush=True)
    finally:
        bench.prometheus.stop()
        bench.exporter.stop()
        if args.keep_logs:
            progress(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if writes:
        print("\nAPI writes per rollout step (medians; baseline: the change without a Rollout)")
        print(table(writes_table(writes)))
    if breaches:
        print(
            "\nbreach -> all traffic on stable (RolledBack status; canary Deployment deleted), "
            f"goal: one interval + one scrape ({SCRAPE_SECONDS:g}s); iv = analysis intervals"
        )
        print(table(breach_table(breaches, intervals)))
    if discarded:
        print(f"\n{discarded} run(s) discarded and repeated: another TMO operator acted on them")
    progress(f"done in {time.monotonic() - started:.0f} s")
    failed = [r for r in writes + breaches if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
