"""`helm install`, `helm upgrade` and `helm uninstall` of the chart on the local control plane.

The chart's operator pods never run here (kwok nodes mark them Running without containers), so
the operator runs as a local process started with exactly what helm put in the Deployment: the
container's args and env (POD_NAMESPACE resolved as the kubelet would) and a token of the
release's ServiceAccount. That process must serve a model: the chart's RBAC, flags and env are
enough. Uninstalling leaves none of the release's objects behind; the CRDs stay, as Helm does.

The release gets its own namespace and watches only a fresh models namespace, so it neither
touches the operator RBAC other e2e tests install in tmo-system nor reconciles their models.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.helm import helm_binary, helm_kubeconfig
from e2e.kube import Cluster, wait_for
from e2e.models import apply_model, small_model, wait_ready
from e2e.tmo_operator import CHART, REPO, install_crds

RELEASE = "tmo"


@dataclass
class Release:
    cluster: Cluster
    helm: str
    helm_kubeconfig: Path
    namespace: str  # the release's (the operator's) namespace
    models: str  # the one namespace the release watches
    workdir: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [self.helm, "--kubeconfig", str(self.helm_kubeconfig), *args, "-n", self.namespace],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.cluster.tool_env(),
        )
        if check and r.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
        return r

    def manifest(self) -> list[dict[str, Any]]:
        out = self.run("get", "manifest", RELEASE).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    def deployment(self) -> dict[str, Any]:
        return self.cluster.get("deployment", "tmo-operator", self.namespace)

    def helm_revision(self) -> int:
        return int(json.loads(self.run("status", RELEASE, "-o", "json").stdout)["version"])


@pytest.fixture(scope="module")
def release(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    workdir = tmp_path_factory.mktemp("helm")
    suffix = uuid.uuid4().hex[:8]
    namespace, models = f"tmo-{suffix}", f"t-{suffix}"
    cluster.kubectl("create", "namespace", models)
    with helm_kubeconfig(cluster.kubeconfig, workdir) as kubeconfig:
        rel = Release(cluster, str(helm_binary()), kubeconfig, namespace, models, workdir)
        try:
            # helm's default waits for nothing (the operator pods never become Ready here).
            # helm 4 server-side applies crds/ even when they exist: it fails on a conflict
            # with the field manager of a different CRD (here: another e2e module's
            # `kubectl apply --server-side` of another crds/ version), and passes when they are the
            # same. So the CRDs on the cluster are first made this checkout's, as the others do.
            install_crds(cluster)
            rel.run(
                "install",
                RELEASE,
                str(CHART),
                "--create-namespace",
                "--set",
                f"watchNamespaces={{{models}}}",
            )
            yield rel
        finally:
            rel.run("uninstall", RELEASE, check=False)
            for ns in (namespace, models):
                cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


# --- the operator as the chart renders it, run as a local process ---------------------------

_PORT_ARGS = re.compile(r"^(--liveness=\w+://[^/]*:|--metrics-port=)(\d+)(.*)$")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RenderedOperator:
    proc: subprocess.Popen[bytes]
    log_file: Path
    args: list[str]
    env: dict[str, str]  # what the Deployment gives the container (resolved)
    ports: dict[int, int]  # the chart's port -> the one used here (the same unless taken)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited {self.proc.returncode}; log:\n{self.log()}")
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _container_env(deployment: dict[str, Any]) -> dict[str, str]:
    """The container's env as the kubelet sets it: values, and the pod's namespace."""
    env: dict[str, str] = {}
    for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            field = e["valueFrom"]["fieldRef"]["fieldPath"]
            assert field == "metadata.namespace", f"{e['name']}: cannot resolve {field}"
            env[e["name"]] = deployment["metadata"]["namespace"]
    return env


def _service_account_kubeconfig(rel: Release, path: Path) -> Path:
    """A kubeconfig with a token of the release's ServiceAccount, as mounted in its pods."""
    token = rel.cluster.kubectl(
        "create", "token", "tmo-operator", "-n", rel.namespace, "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(rel.cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [
            {"name": "sa", "context": {"cluster": admin["clusters"][0]["name"], "user": "sa"}}
        ],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def start_as_rendered(rel: Release, name: str) -> RenderedOperator:
    """`python -m tmo.cli ARGS` with the installed Deployment's args and env, nothing else but
    PATH/HOME and KUBECONFIG. A port in the args that is taken on this machine (the liveness
    probe's 8080, the metrics port) is the only thing changed: to a free one."""
    deployment = rel.deployment()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "tmo-operator"
    args: list[str] = []
    ports: dict[int, int] = {}
    for arg in container["args"]:
        m = _PORT_ARGS.match(arg)
        if m:
            port = int(m.group(2))
            ports[port] = port if _port_free(port) else _any_free_port()
            arg = f"{m.group(1)}{ports[port]}{m.group(3)}"
        args.append(arg)
    env = _container_env(deployment)
    kubeconfig = _service_account_kubeconfig(rel, rel.workdir / f"{name}.kubeconfig")
    log_file = rel.workdir / f"{name}.log"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tmo.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                "PATH": os.environ["PATH"],
                "HOME": os.environ.get("HOME", "/tmp"),
                **env,
                "KUBECONFIG": str(kubeconfig),
            },
            cwd=REPO,
        )
    return RenderedOperator(proc, log_file, args, env, ports)


def _lease_holder(rel: Release) -> str:
    r = rel.cluster.kubectl(
        "get", "lease", "tmo-operator", "-n", rel.namespace, "-o", "json", check=False
    )
    if r.returncode != 0:
        return ""
    return str((json.loads(r.stdout).get("spec") or {}).get("holderIdentity") or "")


def _leads(rel: Release, op: RenderedOperator) -> str:
    """The Lease holder, once the process holds the Lease in the release's namespace."""
    return str(wait_for("the operator to lead", lambda: op.alive() and _lease_holder(rel), 40))


def _unreconciled_then_served(rel: Release, name: str, start: str) -> RenderedOperator:
    """Apply a model while no operator runs for the release, check that nothing else (another
    test's operator) reconciles it, then start the operator as rendered: Ready is its work."""
    apply_model(rel.cluster, rel.models, small_model(name))
    time.sleep(3)
    status = rel.cluster.get("transformermodel", name, rel.models).get("status")
    assert not status, (
        f"another operator reconciled {rel.models}/{name} (a cluster-wide `tmo operator` still "
        "running?): this test cannot tell that the release's operator serves it"
    )
    op = start_as_rendered(rel, start)
    try:
        _leads(rel, op)  # the Lease lives in the release's namespace (POD_NAMESPACE)
        wait_ready(rel.cluster, rel.models, name, timeout=60)
    except BaseException:
        op.stop()
        raise
    return op


def _healthz(op: RenderedOperator) -> int:
    liveness = next(a for a in op.args if a.startswith("--liveness="))
    url = liveness.split("=", 1)[1].replace("0.0.0.0", "127.0.0.1")
    with urllib.request.urlopen(url, timeout=5) as r:
        return int(r.status)


def _json_lines(log: str) -> list[dict[str, Any]]:
    out = []
    for line in log.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


# --- the tests ------------------------------------------------------------------------------


def test_install_creates_the_operator_its_rbac_and_disruption_budget(release: Release) -> None:
    rel, ns = release, release.namespace
    status = json.loads(rel.run("status", RELEASE, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"

    deployment = rel.deployment()
    assert deployment["spec"]["replicas"] == 2
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TMO_LEADER_ELECT"]["value"] == "true"
    assert env["TMO_NAMESPACES"]["value"] == rel.models
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"

    rel.cluster.get("serviceaccount", "tmo-operator", ns)
    # Cluster-scoped RBAC is named after the release's namespace: it cannot collide with
    # another release's (or tmo-system's, which the other e2e tests use).
    role = rel.cluster.get("clusterrole", f"tmo-operator-{ns}")
    assert any("transformermodels/status" in r["resources"] for r in role["rules"])
    binding = rel.cluster.get("clusterrolebinding", f"tmo-operator-{ns}")
    assert binding["roleRef"]["name"] == f"tmo-operator-{ns}"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "tmo-operator", "namespace": ns}
    ]
    lease_role = rel.cluster.get("role", "tmo-operator-leader-election", ns)
    assert lease_role["rules"][1]["resourceNames"] == ["tmo-operator"]
    rel.cluster.get("rolebinding", "tmo-operator-leader-election", ns)
    pdb = rel.cluster.get("poddisruptionbudget", "tmo-operator", ns)
    assert pdb["spec"]["minAvailable"] == 1

    # kwok schedules both replicas (they never run a container here).
    def scheduled() -> list[dict[str, Any]] | bool:
        pods = rel.cluster.get_all("pods", ns, "-l", "app.kubernetes.io/name=tmo-operator")
        placed = [p for p in pods if p["spec"].get("nodeName")]
        return placed if len(placed) == 2 else False

    pods = wait_for("both operator replicas to be scheduled", scheduled, 30)
    assert {p["spec"]["serviceAccountName"] for p in pods} == {"tmo-operator"}


def test_the_operator_as_rendered_serves_a_model(release: Release) -> None:
    rel = release
    op = _unreconciled_then_served(rel, "from-the-chart", "install")
    try:
        assert op.env["TMO_PROMETHEUS_URL"] == "http://prometheus-operated.monitoring.svc:9090"
        assert op.env["POD_NAMESPACE"] == rel.namespace
        assert _healthz(op) == 200  # what the Deployment's livenessProbe asks
        assert _json_lines(op.log()), "logFormat json: the log is JSON lines"
    finally:
        op.stop()
    # A clean stop hands the Lease over at once: a new replica leads without waiting it out.
    assert _lease_holder(rel) == "", op.log()[-3000:]


def test_upgrade_reaches_the_operator(release: Release) -> None:
    rel = release
    before = rel.helm_revision()
    rel.run(
        "upgrade",
        RELEASE,
        str(CHART),
        "--reuse-values",
        "--set",
        "resyncSeconds=120",
        "--set",
        "logFormat=plain",
    )
    assert rel.helm_revision() == before + 1
    env = _container_env(rel.deployment())
    assert env["TMO_RESYNC_SECONDS"] == "120"
    assert env["TMO_LOG_FORMAT"] == "plain"
    assert env["TMO_NAMESPACES"] == rel.models  # --reuse-values kept the install's value

    op = _unreconciled_then_served(rel, "after-upgrade", "upgrade")
    try:
        log = op.log()
        assert log.strip() and not _json_lines(log), "logFormat plain: no JSON lines"
    finally:
        op.stop()


def test_uninstall_leaves_no_operator_objects_and_keeps_the_crds(release: Release) -> None:
    rel = release
    objects = rel.manifest()
    kinds = {o["kind"] for o in objects}
    assert {
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "PodDisruptionBudget",
    } <= kinds
    models = sorted(
        m["metadata"]["name"] for m in rel.cluster.get_all("transformermodels", rel.models)
    )
    rel.run("uninstall", RELEASE)

    def leftovers() -> list[str]:
        left = []
        for o in objects:
            name = o["metadata"]["name"]
            ns = ["-n", rel.namespace] if o["metadata"].get("namespace") else []
            group = o["apiVersion"].rpartition("/")[0]
            kind = f"{o['kind'].lower()}.{group}" if group else o["kind"].lower()
            r = rel.cluster.kubectl("get", kind, name, *ns, "--ignore-not-found", "-o", "name")
            if r.stdout.strip():
                left.append(r.stdout.strip())
        pods = rel.cluster.get_all(
            "pods", rel.namespace, "-l", "app.kubernetes.io/name=tmo-operator"
        )
        return left + [f"pod/{p['metadata']['name']}" for p in pods]

    wait_for("the release's objects to be gone", lambda: not leftovers(), 30)
    # What stays in the release's namespace is the operator's own leader-election Lease (helm
    # never created it), released: nothing holds it.
    for lease in rel.cluster.get_all("leases", rel.namespace):
        assert not lease["spec"].get("holderIdentity"), lease
    assert not rel.run("list", "-q").stdout.strip()
    # CRDs stay (Helm never deletes crds/), and so do the models: nothing of the user's is lost.
    for crd in ("transformermodels.tmo.dev", "rollouts.tmo.dev"):
        rel.cluster.get("crd", crd)
    assert (
        sorted(m["metadata"]["name"] for m in rel.cluster.get_all("transformermodels", rel.models))
        == models
    )
