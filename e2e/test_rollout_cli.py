"""`tmo rollout` (and `kubectl tmo rollout`) against a real API server.

What is checked here is the CLI's side of the protocol: the action annotation (who, when, a fresh
id), written as a merge patch of metadata only, so spec and generation stay as Git has them; and
`status` reading a status the way the operator writes it. The operator's acknowledgement
(status.lastAction) is tested with the operator's own e2e tests.

`report` is checked on a real rollout: the operator, a real model server per revision and a real
Prometheus (e2e/dataplane.py) take a canary through its steps, then the PNG is drawn from the
Rollout and the Events the operator posted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tmo.api.rollout import ACTION_ANNOTATION

from e2e.dataplane import LocalDataPlane, build_tiny_model
from e2e.kube import Cluster, wait_for
from e2e.rollouts import apply, change_runtime, model_manifest, rollout_manifest, wait_phase
from e2e.tmo_operator import OperatorProcess, install_crds, operator_kubeconfig

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "email-triage.yaml"
NAME = "email-triage"


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Cluster:
    install_crds(cluster)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/rollouts.tmo.dev")
    wait_for(
        "tmro in discovery",
        lambda: cluster.kubectl("get", "tmro", "-A", check=False).returncode == 0,
    )
    return cluster


@pytest.fixture
def rollout_ns(api: Cluster, namespace: str) -> str:
    """A namespace holding examples/email-triage.yaml (a TransformerModel and its Rollout)."""
    api.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    return namespace


def tmo(cluster: Cluster, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = cluster.env()
    env.pop("KUBECONFIG", None)  # the command must use --kubeconfig
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tmo.cli",
            "rollout",
            *args,
            "--kubeconfig",
            str(cluster.kubeconfig),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
    )


def whoami(cluster: Cluster) -> str:
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    out = cluster.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review)).stdout
    return str(json.loads(out)["status"]["userInfo"]["username"])


def action_of(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(obj["metadata"]["annotations"][ACTION_ANNOTATION]))


def test_promote_writes_the_annotation_and_nothing_else(api: Cluster, rollout_ns: str) -> None:
    before = api.get("tmro", NAME, rollout_ns)
    started = datetime.now(UTC).replace(microsecond=0)

    r = tmo(api, "promote", NAME, "-n", rollout_ns, "--no-wait")
    assert r.returncode == 0, r.stderr
    assert "passes the current `pause: {}` approval gate" in r.stdout
    assert f"not waiting; see: tmo rollout status {NAME} -n {rollout_ns}" in r.stdout

    after = api.get("tmro", NAME, rollout_ns)
    record = action_of(after)
    assert set(record) == {"action", "id", "by", "at"}
    assert record["action"] == "promote"
    assert re.fullmatch(r"[0-9a-f]{32}", record["id"])
    assert record["by"] == whoami(api)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["at"])
    at = datetime.fromisoformat(record["at"].replace("Z", "+00:00"))
    assert started <= at <= datetime.now(UTC)
    # Compact JSON, as the operator and `kubectl get -o yaml` readers see it.
    raw = after["metadata"]["annotations"][ACTION_ANNOTATION]
    assert raw == json.dumps(record, separators=(",", ":"))

    # No Git drift: the spec and the generation are untouched; only metadata was written.
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    out = api.kubectl(
        "get", "tmro", NAME, "-n", rollout_ns, "--show-managed-fields", "-o", "json"
    ).stdout
    managed = json.loads(out)["metadata"]["managedFields"]
    (entry,) = [m for m in managed if m["manager"] == "tmo-cli"]
    assert entry["operation"] == "Update"
    assert set(entry["fieldsV1"]) == {"f:metadata"}
    assert set(entry["fieldsV1"]["f:metadata"]) == {"f:annotations"}

    # A second action replaces the request with a fresh id.
    r = tmo(api, "abort", NAME, "-n", rollout_ns, "--no-wait")
    assert r.returncode == 0, r.stderr
    assert "rolls back to the stable revision now" in r.stdout
    second = action_of(api.get("tmro", NAME, rollout_ns))
    assert second["action"] == "abort"
    assert second["id"] != record["id"]


def test_unacknowledged_action_times_out(api: Cluster, rollout_ns: str) -> None:
    # No operator runs in this test: the command says so after its timeout.
    started = time.monotonic()
    r = tmo(api, "retry", NAME, "-n", rollout_ns, "--timeout", "2")
    assert r.returncode == 1
    assert time.monotonic() - started < 30
    err = " ".join(r.stderr.split())
    assert "the operator did not acknowledge retry" in err
    assert "is it running?" in err
    assert action_of(api.get("tmro", NAME, rollout_ns))["action"] == "retry"


def test_missing_rollout_is_refused(api: Cluster, namespace: str, tmp_path: Path) -> None:
    png = str(tmp_path / "r.png")
    for args in (
        ["promote", "nope"],
        ["abort", "nope", "--no-wait"],
        ["status", "nope"],
        ["report", "nope", "--out", png],
    ):
        r = tmo(api, *args, "-n", namespace)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert f"rollout {namespace}/nope not found" in r.stderr
    assert not Path(png).exists()


def _condition(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-12-01T21:30:00Z",
    }


PROGRESSING: dict[str, Any] = {
    "observedGeneration": 1,
    "phase": "Progressing",
    "stableRevision": "7f9c2d1",
    "canaryRevision": "a1b2c3d",
    "currentStep": 2,
    "canaryWeight": 25,
    "message": "canary a1b2c3d at 25%",
    "lastAction": {
        "action": "promote",
        "id": "0123456789abcdef0123456789abcdef",
        "by": "alice",
        "requestedAt": "2026-12-01T21:29:00Z",
        "handledAt": "2026-12-01T21:29:01Z",
        "result": "passed the approval gate at step 2",
    },
    "conditions": [
        _condition("Ready", "False", "Progressing", "canary a1b2c3d at step 3 of 6"),
        _condition("Reconciling", "True", "Progressing", "canary a1b2c3d at step 3 of 6"),
    ],
    "analysis": {
        "verdict": "Passed",
        "lastRunTime": "2026-12-01T21:30:00Z",
        "passed": 3,
        "failed": 1,
        "inconclusive": 2,
        "consecutiveErrors": 0,
        "measurements": [
            {
                "metric": "p99-latency",
                "time": "2026-12-01T21:30:00Z",
                "verdict": "Passed",
                "value": 212.5,
                "stableValue": 198,
                "requests": 1523,
            },
            {
                "metric": "errors",
                "time": "2026-12-01T21:30:00Z",
                "verdict": "Passed",
                "value": 0.002,
                "requests": 1523,
            },
        ],
    },
}


def set_status(cluster: Cluster, namespace: str, status: dict[str, Any]) -> None:
    cluster.kubectl(
        "patch", "rollouts.tmo.dev", NAME, "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip


def test_status_prints_phase_steps_and_verdict(api: Cluster, rollout_ns: str) -> None:
    set_status(api, rollout_ns, PROGRESSING)
    r = tmo(api, "status", NAME, "-n", rollout_ns)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"Rollout {rollout_ns}/{NAME} -> TransformerModel {NAME}" in lines
    assert "phase:     Progressing" in lines
    assert (
        "steps:     [x] setWeight 5  [x] pause 2m  [>] setWeight 25  [ ] pause 5m  "
        "[ ] setWeight 50  [ ] pause 5m  (step 3/6)"
    ) in lines
    assert "weight:    canary 25%, stable 75%" in lines
    assert "revisions: stable 7f9c2d1, canary a1b2c3d" in lines
    assert "ready:     False (Progressing): canary a1b2c3d at step 3 of 6" in lines
    assert (
        "analysis:  Passed at 2026-12-01T21:30:00Z "
        "(passed 3, failed 1, inconclusive 2, errors 0 in a row)"
    ) in lines
    # The bar is blocks on a UTF-8 stdout, else ASCII.
    progress = [line for line in lines if line.startswith("progress:  ")]
    assert len(progress) == 1, lines
    assert re.fullmatch(
        r"progress:  (\[####--------\]|\u2588{4}\u2591{8}) step 3/6, canary 25%", progress[0]
    ), progress
    # Gates in the units of their built-ins (examples/email-triage.yaml): ms, and % for errors.
    assert "  p99-latency  canary 212.5 ms  stable 198 ms  Passed, 1523 requests" in lines
    assert "  errors       canary 0.2%  Passed, 1523 requests" in lines
    assert (
        "last action: promote by alice at 2026-12-01T21:29:00Z, handled 2026-12-01T21:29:01Z: "
        "passed the approval gate at step 2"
    ) in lines


def test_status_watch_ends_with_the_rollout(api: Cluster, rollout_ns: str) -> None:
    # Awaiting approval: the watch says what to run and keeps watching until its timeout.
    set_status(
        api,
        rollout_ns,
        {
            **PROGRESSING,
            "phase": "Paused",
            "currentStep": 5,
            "canaryWeight": 50,
            "conditions": [_condition("Ready", "False", "AwaitingApproval", "step 6 waits")],
        },
    )
    r = tmo(api, "status", NAME, "-n", rollout_ns, "--watch", "--timeout", "2")
    assert r.returncode == 1
    assert f"waiting for approval: tmo rollout promote {NAME} -n {rollout_ns}" in r.stdout
    assert "timed out after 2s" in r.stderr

    # Rolled back: the watch ends at once with exit 1, showing Stalled and the message.
    set_status(
        api,
        rollout_ns,
        {
            "phase": "RolledBack",
            "canaryWeight": 0,
            "message": "p99-latency 400 > 250: rolled back; 7f9c2d1 still serves",
            "conditions": [
                _condition("Ready", "False", "AnalysisFailed", "rolled back"),
                _condition("Stalled", "True", "AnalysisFailed", "p99-latency 400 > 250"),
            ],
        },
    )
    r = tmo(api, "status", NAME, "-n", rollout_ns, "--watch", "--timeout", "30")
    assert r.returncode == 1, r.stderr
    assert "phase:     RolledBack" in r.stdout
    assert "stalled:   True (AnalysisFailed): p99-latency 400 > 250" in r.stdout

    # A change seen while watching: Progressing, then Succeeded -> exit 0.
    set_status(api, rollout_ns, PROGRESSING)
    env = api.env()
    env.pop("KUBECONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tmo.cli", "rollout", "status", NAME, "-n", rollout_ns, "-w",
         "--timeout", "60", "--kubeconfig", str(api.kubeconfig)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("--- ")  # the first print
        set_status(
            api,
            rollout_ns,
            {
                "phase": "Succeeded",
                "stableRevision": "a1b2c3d",
                "canaryRevision": None,
                "canaryWeight": 0,
                "conditions": [_condition("Ready", "True", "Succeeded", "a1b2c3d promoted")],
            },
        )
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "phase:     Succeeded" in out
    assert "[x] setWeight 5  [x] pause 2m  [x] setWeight 25" in out


def test_kubectl_plugin(api: Cluster, rollout_ns: str) -> None:
    """`kubectl tmo rollout ...` finds the venv's kubectl-tmo on PATH (pyproject's scripts)."""
    plugin = Path(sys.executable).parent / "kubectl-tmo"
    assert plugin.exists(), f"{plugin} is missing: reinstall the venv (make venv)"
    set_status(api, rollout_ns, PROGRESSING)
    env = api.env()
    env["PATH"] = f"{plugin.parent}{os.pathsep}{env['PATH']}"
    r = subprocess.run(
        ["kubectl", "tmo", "rollout", "status", NAME, "-n", rollout_ns],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "phase:     Progressing" in r.stdout
    r = subprocess.run(
        ["kubectl", "tmo", "rollout", "promote", NAME, "-n", rollout_ns, "--no-wait"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert action_of(api.get("tmro", NAME, rollout_ns))["action"] == "promote"


# ------------------------------------------------------------------ report, on a real rollout

REPORT_STEPS: list[dict[str, Any]] = [
    {"setWeight": 25},
    {"pause": {"duration": "3s"}},
    {"setWeight": 50},
    {"pause": {"duration": "3s"}},
]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_report_draws_a_real_rollout(
    api: Cluster, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A canary promoted through every step by the real operator on real traffic, then drawn:
    the weight from the operator's Events, the default gates (the model's thresholds) with
    canary and stable values from the real Prometheus."""
    name = "triage"
    model = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    workdir = tmp_path_factory.mktemp("report")
    with LocalDataPlane(api, namespace, workdir / "plane", rps=12) as plane:
        op = OperatorProcess(
            api,
            workdir,
            kubeconfig=operator_kubeconfig(api, workdir),
            args=["--namespace", namespace, "--prometheus-url", plane.prometheus_url,
                  "--resync-seconds", "10", "--retry-initial-seconds", "1",
                  "--retry-max-seconds", "3"],
        )  # fmt: skip
        op.start()
        try:
            apply(
                api,
                model_manifest(namespace, name, f"file://{model}"),
                rollout_manifest(namespace, name, REPORT_STEPS),
            )
            idle = wait_phase(api, namespace, name, {"Idle"}, timeout=60)
            old = str(idle["status"]["stableRevision"])
            plane.wait_serving(old, timeout=180)
            canary = change_runtime(api, namespace, name, maxBatchDelayMs=6)
            done = wait_phase(api, namespace, name, {"Succeeded"}, timeout=300)
            assert done["status"]["stableRevision"] == canary
        finally:
            op.stop()

    # While a status is about to settle the report still draws what there is; now it has it all.
    measured = done["status"]["analysis"]["measurements"]
    png = workdir / "rollout-report.png"
    r = tmo(api, "report", name, "-n", namespace, "--out", str(png))
    assert r.returncode == 0, r.stderr
    print(r.stdout)  # shown with -s: what a user sees
    width, height = png_size(png)
    gates = {m["metric"] for m in measured}
    assert gates <= {"latencyP99", "memoryUtilization", "errorRate"}, gates
    assert width >= 1000 and height >= 300 + 200 * len(gates), (width, height)
    assert 20_000 < png.stat().st_size < 3_000_000

    out = r.stdout.splitlines()
    assert out[0] == (
        f"wrote {png}: Rollout {namespace}/{name}: canary {canary} promoted over {old}, Succeeded"
    ), r.stdout
    # The weight went 0 -> 25 -> 50 -> 100 (promoted), as the operator's Events say.
    (weight,) = [line for line in out if line.startswith("  weight: ")]
    assert weight.endswith("(0% -> 25% -> 50% -> 100%)"), weight
    # One line per gate with its points; together every measurement the status holds.
    gate_lines = [line for line in out if line.startswith("  gate ")]
    assert len(gate_lines) == len(gates), out
    assert any(line.startswith("  gate latencyP99: ") and "max 1500 ms" in line
               for line in gate_lines), gate_lines  # fmt: skip
    assert f"  {len(measured)} measurement points, " in r.stdout, r.stdout
    assert "Passed" in r.stdout

    # --since: the last hour, up to now.
    hour = workdir / "rollout-report-1h.png"
    again = tmo(api, "report", name, "-n", namespace, "--out", str(hour), "--since", "1h")
    assert again.returncode == 0, again.stderr
    assert png_size(hour)[0] >= 1000
    assert "(1h00m)" in again.stdout.splitlines()[1], again.stdout
