"""GitOps for real: Flux's own source- and kustomize-controller (built from their pinned modules by
e2e/flux/build.sh) run as local processes against the local control plane, pull a Git repository
served over smart HTTP by `git http-backend` (e2e/gitserver.py), and apply a TransformerModel and
its Rollout from it; the real operator runs the canary on a local data plane (real model servers,
a real Prometheus). After a commit that changes the model, the Kustomization (`wait: true`: Flux
reads health through kstatus) may be Ready only once TMO has promoted the canary; the time from
the commit to that Ready is printed.

The examples in examples/gitops/ are applied (server-side dry-run) with Argo CD's and Flux's
real CRDs installed, and the argocd-cm patch there must hold charts/tmo/argocd/health.lua as is.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import yaml

from e2e.dataplane import LocalDataPlane, build_tiny_model
from e2e.gitserver import GitServer, Repository
from e2e.kube import Cluster, wait_for
from e2e.models import running_operator, wait_ready
from e2e.rollouts import (
    condition,
    model_manifest,
    rollout,
    rollout_manifest,
    verdicts,
    wait_phase,
)
from e2e.tmo_operator import REPO, OperatorProcess, install_crds

EXAMPLES = REPO / "examples" / "gitops"
HEALTH_LUA = REPO / "charts" / "tmo" / "argocd" / "health.lua"
NAME = "triage"
STEPS: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {"duration": "3s"}}]
# Flux's CRD files (from e2e/cluster/crds.sh; source-controller needs all of its kinds), and
# Argo CD's.
FLUX_CRDS = (
    "source.toolkit.fluxcd.io_gitrepositories.yaml",
    "source.toolkit.fluxcd.io_ocirepositories.yaml",
    "source.toolkit.fluxcd.io_helmrepositories.yaml",
    "source.toolkit.fluxcd.io_helmcharts.yaml",
    "source.toolkit.fluxcd.io_buckets.yaml",
    "source.toolkit.fluxcd.io_externalartifacts.yaml",
    "kustomize.toolkit.fluxcd.io_kustomizations.yaml",
)
ARGOCD_CRDS = ("application-crd.yaml", "applicationset-crd.yaml", "appproject-crd.yaml")
# Kinds in examples/gitops/ whose schema the e2e cluster cannot have yet (helm-controller's
# module is not served by the Go module proxy, so its CRD is not fetched).
UNCHECKED_KINDS = {"HelmRelease"}


# --- the third-party CRDs and the examples --------------------------------------------------------


def third_party_crds() -> Path:
    """The folder crds.sh fetched the third-party CRDs into (TMO_THIRD_PARTY_CRDS overrides)."""
    override = os.environ.get("TMO_THIRD_PARTY_CRDS")
    if override:
        return Path(override)
    subprocess.run([str(REPO / "e2e/cluster/crds.sh")], check=True, capture_output=True)
    r = subprocess.run(
        ["bash", "-c", 'source e2e/cluster/versions.sh && printf %s "$THIRD_PARTY_CRDS"'],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(r.stdout)


@pytest.fixture(scope="module")
def gitops_crds(cluster: Cluster) -> None:
    folder = third_party_crds()
    files = [folder / "flux" / f for f in FLUX_CRDS] + [folder / "argocd" / f for f in ARGOCD_CRDS]
    args = [a for f in files for a in ("-f", str(f))]
    cluster.kubectl("apply", "--server-side", "--force-conflicts", *args)
    names = [f"crd/{yaml.safe_load(f.read_text())['metadata']['name']}" for f in files]
    cluster.kubectl("wait", "--for", "condition=Established", *names, "--timeout=60s")
    install_crds(cluster)


def test_flux_pins_match_the_crd_pins() -> None:
    """The Flux controllers the loop runs are the versions whose CRDs the cluster gets."""
    crd_mod = (REPO / "e2e/cluster/thirdparty/go.mod").read_text().split()
    for controller in ("source-controller", "kustomize-controller"):
        module = f"github.com/fluxcd/{controller}"
        built = (REPO / "e2e/flux" / controller / "go.mod").read_text().split()
        assert crd_mod[crd_mod.index(module) + 1] == built[built.index(module) + 1], controller


def test_argocd_cm_patch_holds_health_lua_verbatim() -> None:
    patch = yaml.safe_load((EXAMPLES / "argocd" / "argocd-cm.yaml").read_text())
    assert patch["kind"] == "ConfigMap" and patch["metadata"]["name"] == "argocd-cm"
    lua = HEALTH_LUA.read_text()
    keys = {f"resource.customizations.health.tmo.dev_{k}" for k in ("TransformerModel", "Rollout")}
    assert set(patch["data"]) == keys
    for key in keys:
        assert patch["data"][key] == lua, (
            f"examples/gitops/argocd/argocd-cm.yaml {key} drifted from {HEALTH_LUA.name}: "
            "paste charts/tmo/argocd/health.lua into it again (indented by 4 spaces)"
        )


def test_pre_commit_hook_runs_tmo_validate() -> None:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "tmo-validate")
    assert hook["language"] == "python" and hook["entry"].split()[:2] == ["tmo", "validate"]
    # pre-commit appends the staged file names to the entry: run it the same way.
    entry = [sys.executable, "-m", "tmo.cli", *hook["entry"].split()[1:]]
    files = sorted(str(p) for p in EXAMPLES.rglob("*.yaml"))
    r = subprocess.run([*entry, *files], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # A broken manifest fails the hook with the API server's message.
    docs = list(yaml.safe_load_all((EXAMPLES / "models" / "triage.yaml").read_text()))
    docs[0]["spec"]["scaling"]["minReplicas"] = -1
    r = subprocess.run(
        [*entry, "-"],
        input=yaml.safe_dump_all(docs),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert r.returncode == 1 and "minReplicas" in r.stdout + r.stderr, r.stdout + r.stderr


def test_examples_apply_with_the_real_argocd_and_flux_crds(
    cluster: Cluster, namespace: str, gitops_crds: None
) -> None:
    """Every example object whose kind the cluster knows passes the API server's schema checks
    (a server-side dry-run apply, in this test's namespace rather than argocd or flux-system):
    the Applications and argocd-cm for Argo CD, the GitRepository, OCIRepository and
    Kustomization for Flux, the model and its Rollout."""
    checked: list[str] = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] not in UNCHECKED_KINDS:
                dry_run(cluster, namespace, doc)
                checked.append(f"{path.relative_to(EXAMPLES)}:{doc['kind']}")
    kinds = {c.split(":")[1] for c in checked}
    want = {"Application", "ConfigMap", "GitRepository", "OCIRepository", "Kustomization"}
    assert want | {"TransformerModel", "Rollout"} <= kinds, checked
    # And a wrong field is refused by those schemas (the check is real).
    docs = yaml.safe_load_all((EXAMPLES / "flux" / "models.yaml").read_text())
    bad = next(d for d in docs if d["kind"] == "Kustomization")
    bad["spec"]["prune"] = "yes"
    with pytest.raises(AssertionError, match="prune"):
        dry_run(cluster, namespace, bad)


def dry_run(cluster: Cluster, namespace: str, doc: dict[str, Any]) -> None:
    obj = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
    cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=e2e-gitops",
        "-f",
        "-",
        input=json.dumps(obj),
    )


# --- Flux's controllers as local processes ------------------------------------------------------


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when pytest goes, even SIGKILLed."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FluxControllers:
    """source-controller and kustomize-controller for one namespace, leader election off, every
    port on 127.0.0.1 picked free; the source-controller serves its artifacts (tarballs of the
    Git revision) at an address the kustomize-controller reaches."""

    bin_dir: Path
    cluster: Cluster
    namespace: str
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    health: dict[str, int] = field(default_factory=dict)
    logs: dict[str, IO[bytes]] = field(default_factory=dict)

    def _args(self, name: str) -> list[str]:
        self.health[name] = _free_port()
        common = [
            "--watch-all-namespaces=false",  # RUNTIME_NAMESPACE only
            "--enable-leader-election=false",
            f"--metrics-addr=127.0.0.1:{_free_port()}",
            f"--health-addr=127.0.0.1:{self.health[name]}",
            "--log-encoding=console",
        ]
        if name == "source-controller":
            storage = f"127.0.0.1:{_free_port()}"
            (self.workdir / "storage").mkdir(exist_ok=True)
            return [
                *common,
                f"--storage-path={self.workdir / 'storage'}",
                f"--storage-addr={storage}",
                f"--storage-adv-addr={storage}",
            ]
        return [*common, "--no-remote-bases=true"]

    def start(self) -> None:
        env = {**self.cluster.env(), "RUNTIME_NAMESPACE": self.namespace}
        for name in ("source-controller", "kustomize-controller"):
            self.logs[name] = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115
            self.procs[name] = subprocess.Popen(
                [str(self.bin_dir / name), *self._args(name)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self.logs[name],
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        for name, port in self.health.items():
            wait_for(f"{name} healthy", functools.partial(self._healthy, name, port), timeout=60)

    def _healthy(self, name: str, port: int) -> bool:
        if self.procs[name].poll() is not None:
            raise RuntimeError(f"{name} exited; log:\n{self.log(name)}")  # wait_for stops
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self, name: str, chars: int = 6000) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / f"{name}.log").read_text(errors="replace")[-chars:]
        return ""

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for f in self.logs.values():
            f.close()


@pytest.fixture(scope="module")
def flux_bin() -> Path:
    """Builds the controllers on first use (minutes, cached in ~/.cache/tmo afterwards)."""
    start = time.monotonic()
    r = subprocess.run(
        [str(REPO / "e2e/flux/build.sh")], capture_output=True, text=True, timeout=3600
    )
    assert r.returncode == 0, r.stderr[-4000:]
    print(f"\n[gitops] e2e/flux/build.sh: {time.monotonic() - start:.1f}s\n{r.stderr.strip()}")
    return Path(r.stdout.strip())


@pytest.fixture(scope="module")
def ns(cluster: Cluster) -> Iterator[str]:
    name = f"gitops-{int(time.time()) % 100000}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def flux(
    cluster: Cluster,
    ns: str,
    flux_bin: Path,
    gitops_crds: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FluxControllers]:
    controllers = FluxControllers(flux_bin, cluster, ns, tmp_path_factory.mktemp("flux"))
    try:
        controllers.start()
        yield controllers
    finally:
        # Flux's objects carry its finalizer: delete them while the controllers still run
        # (pruning what they applied), or the namespace would stay Terminating for good.
        kinds = (
            "kustomizations.kustomize.toolkit.fluxcd.io,gitrepositories.source.toolkit.fluxcd.io"
        )
        gone = cluster.kubectl(
            "delete", kinds, "--all", "-n", ns, "--timeout=60s", check=False, timeout=90
        )
        if gone.returncode != 0:  # a controller stuck: drop the finalizers rather than the ns
            for name in cluster.kubectl("get", kinds, "-n", ns, "-o", "name").stdout.split():
                patch = '{"metadata":{"finalizers":null}}'
                cluster.kubectl("patch", "-n", ns, name, "--type=merge", "-p", patch, check=False)
        controllers.stop()


@pytest.fixture(scope="module")
def plane(
    cluster: Cluster, ns: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalDataPlane]:
    with LocalDataPlane(cluster, ns, tmp_path_factory.mktemp("plane"), rps=12) as dp:
        yield dp


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, ns: str, plane: LocalDataPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    with running_operator(
        cluster,
        tmp_path_factory.mktemp("operator"),
        "--namespace",
        ns,
        "--prometheus-url",
        plane.prometheus_url,
        "--resync-seconds",
        "10",
        "--retry-initial-seconds",
        "1",
        "--retry-max-seconds",
        "3",
    ) as op:
        yield op


# --- the loop -----------------------------------------------------------------------------------


def _manifests(uri: str, **runtime: Any) -> str:
    """The model and its Rollout as a user commits them: no namespace (the Kustomization's
    targetNamespace sets it)."""
    docs = [model_manifest("", NAME, uri, **runtime), rollout_manifest("", NAME, STEPS)]
    for d in docs:
        del d["metadata"]["namespace"]
    return yaml.safe_dump_all(docs, sort_keys=False)


# What examples/gitops/flux/models.yaml adds to `wait: true` for TMO's kinds: kstatus alone counts
# an object without any status as Current (so Flux may say Ready before TMO has looked at a
# new model); these say InProgress until TMO has written Ready.
HEALTH_CHECK_EXPRS: list[dict[str, str]] = next(
    d
    for d in yaml.safe_load_all((EXAMPLES / "flux" / "models.yaml").read_text())
    if d["kind"] == "Kustomization"
)["spec"]["healthCheckExprs"]


def _git_repository(ns: str, url: str, name: str = "fleet") -> dict[str, Any]:
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"interval": "2s", "url": url, "ref": {"branch": "main"}, "timeout": "20s"},
    }


def _kustomization(
    ns: str, target: str, name: str = "models", source: str = "fleet", exprs: bool = False
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "interval": "10m",
        "retryInterval": "5s",
        "timeout": "5m",
        "sourceRef": {"kind": "GitRepository", "name": source},
        "path": "./models",
        "targetNamespace": target,
        "prune": True,
        "wait": True,
    }
    if exprs:
        spec["healthCheckExprs"] = HEALTH_CHECK_EXPRS
        # This one is never healthy (no operator): end each attempt soon, so that deleting it
        # is not held up by a health check in progress.
        spec["timeout"] = "20s"
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def kustomization(cluster: Cluster, ns: str, name: str = "models") -> dict[str, Any]:
    return cluster.get("kustomizations.kustomize.toolkit.fluxcd.io", name, ns)


def ready_at(obj: dict[str, Any], sha: str) -> bool:
    """The Kustomization says Ready=True for its current spec, with `sha` applied."""
    st = obj.get("status") or {}
    ready = condition(obj, "Ready")
    return (
        st.get("observedGeneration") == obj["metadata"]["generation"]
        and ready is not None
        and ready["status"] == "True"
        and str(st.get("lastAppliedRevision", "")).endswith(f":{sha}")
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GitServer, Repository]]:
    root = tmp_path_factory.mktemp("git")
    with GitServer(root / "served") as server:
        yield server, server.create("fleet", root / "work")


def test_flux_waits_for_the_canary_of_a_committed_change(
    cluster: Cluster,
    ns: str,
    flux: FluxControllers,
    operator: OperatorProcess,
    plane: LocalDataPlane,
    repo: tuple[GitServer, Repository],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    started = time.monotonic()
    server, work = repo
    uri = f"file://{build_tiny_model(tmp_path_factory.mktemp('tiny') / 'model')}"
    first = work.commit({"models/triage.yaml": _manifests(uri)}, "triage: first revision")
    cluster.apply(
        yaml.safe_dump_all([_git_repository(ns, server.url("fleet")), _kustomization(ns, ns)])
    )

    def explain() -> str:
        return (
            f"Kustomization: {json.dumps(kustomization(cluster, ns).get('status'))[:3000]}\n"
            f"source-controller:\n{flux.log('source-controller', 3000)}\n"
            f"kustomize-controller:\n{flux.log('kustomize-controller', 3000)}\n"
            f"git requests: {server.requests[-10:]}"
        )

    try:
        wait_for(
            "Flux to apply the first commit and find it healthy",
            lambda: ready_at(kustomization(cluster, ns), first),
            timeout=240,
            interval=1,
        )
    except AssertionError as e:
        raise AssertionError(f"{e}\n{explain()}") from None
    # kstatus counts an object that has no status yet as Current, so on the very first apply
    # Flux may say Ready before TMO has written any status (Argo CD's health.lua says
    # Progressing then). Say when that happened; after a change (below) it cannot.
    early = not (rollout(cluster, ns, NAME).get("status") or {}).get("phase")
    obj = wait_phase(cluster, ns, NAME, {"Idle"}, timeout=60)
    stable = str(obj["status"]["stableRevision"])
    assert verdicts(cluster, obj) == ("Current", "Healthy")
    wait_ready(cluster, ns, NAME)
    # The model was applied by Flux, not by the test.
    labels = cluster.get("tm", NAME, ns)["metadata"].get("labels") or {}
    assert labels.get("kustomize.toolkit.fluxcd.io/name") == "models", labels
    plane.wait_serving(stable, timeout=240)

    # A harmless change, committed: Flux applies it, TMO runs the canary, and the Kustomization
    # becomes Ready for that commit only once the canary is promoted.
    committed = time.monotonic()
    second = work.commit(
        {"models/triage.yaml": _manifests(uri, maxBatchDelayMs=6)}, "triage: maxBatchDelayMs 6"
    )
    seen: list[tuple[float, str, bool]] = []  # (t, Rollout phase, Kustomization ready at second)

    def ready_at_second() -> bool:
        # The Rollout first: a Kustomization Ready seen after it cannot be older than the phase.
        phase = str((rollout(cluster, ns, NAME).get("status") or {}).get("phase"))
        ok = ready_at(kustomization(cluster, ns), second)
        seen.append((time.monotonic() - committed, phase, ok))
        return ok

    try:
        wait_for("the Kustomization Ready at the second commit", ready_at_second, 420, interval=0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{explain()}\nseen: {seen[-20:]}") from None
    commit_to_ready = time.monotonic() - committed
    obj = rollout(cluster, ns, NAME)
    canary = str(obj["status"]["stableRevision"])
    assert canary != stable and obj["status"]["phase"] == "Succeeded"
    assert plane.sent_by_revision()[canary] > 0  # the canary served real traffic
    phases = [p for _, p, _ in seen]
    assert "Progressing" in phases, phases  # the canary ran while Flux waited
    progressing_until = max(t for t, p, _ in seen if p == "Progressing")
    assert not any(ok for t, _, ok in seen if t <= progressing_until), seen
    # Ready for the new commit was first seen with the canary promoted, never before.
    assert next(p for _, p, ok in seen if ok) == "Succeeded", seen
    promoted = next(t for t, p, _ in seen if p == "Succeeded")
    print(
        f"\n[gitops] commit -> Kustomization Ready (canary promoted): {commit_to_ready:.1f}s "
        f"(Rollout Progressing seen until {progressing_until:.1f}s, Succeeded from "
        f"{promoted:.1f}s); whole test {time.monotonic() - started:.1f}s; first commit: "
        + ("Ready before TMO's first status" if early else "Ready after TMO's status")
    )


def test_health_check_exprs_wait_for_tmo_first_status(
    cluster: Cluster,
    ns: str,
    flux: FluxControllers,
    repo: tuple[GitServer, Repository],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A model applied where no operator runs never gets a status. With `wait: true` alone Flux
    calls it healthy (kstatus: no status is Current); with the example's healthCheckExprs it
    waits, as it must for a model TMO has not looked at yet."""
    server, _ = repo
    work = server.create("unwatched", tmp_path_factory.mktemp("unwatched") / "work")
    sha = work.commit(
        {"models/triage.yaml": _manifests("https://models.example.com/m.tar.gz")}, "a model"
    )
    targets = {}
    for name in ("plain", "exprs"):
        targets[name] = f"{ns}-{name}"
        cluster.kubectl("create", "namespace", targets[name])
    try:
        cluster.apply(
            yaml.safe_dump_all(
                [
                    _git_repository(ns, server.url("unwatched"), "unwatched"),
                    _kustomization(ns, targets["plain"], "plain", "unwatched"),
                    _kustomization(ns, targets["exprs"], "exprs", "unwatched", exprs=True),
                ]
            )
        )
        wait_for(
            "kstatus alone to call it Ready",
            lambda: ready_at(kustomization(cluster, ns, "plain"), sha),
            120,
        )
        assert "status" not in rollout(cluster, targets["plain"], NAME)

        def attempted() -> dict[str, Any] | None:
            k = kustomization(cluster, ns, "exprs")
            st = k.get("status") or {}
            return k if str(st.get("lastAttemptedRevision", "")).endswith(sha) else None

        wait_for("the exprs Kustomization to apply", attempted, 60)
        time.sleep(8)  # more than kustomize-controller's 5 s health poll
        k = kustomization(cluster, ns, "exprs")
        ready = condition(k, "Ready")
        assert ready is not None and ready["status"] != "True", k.get("status")
        # Waiting on the health check, not failing to evaluate the expressions.
        assert "evaluate" not in ready.get("message", ""), ready
        assert "status" not in rollout(cluster, targets["exprs"], NAME)
    finally:
        for name in ("plain", "exprs"):
            cluster.kubectl(
                "delete",
                "kustomizations.kustomize.toolkit.fluxcd.io",
                name,
                "-n",
                ns,
                "--wait=false",
                check=False,
            )
        for target in targets.values():
            cluster.kubectl("delete", "namespace", target, "--wait=false", check=False)
