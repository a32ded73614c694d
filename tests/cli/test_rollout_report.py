"""`tmo rollout report`: the timeline from a Rollout and its Events (pure), drawing a real PNG,
and the command's refusals (no cluster needed)."""

from __future__ import annotations

import builtins
import struct
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tmo.cli import build_parser, main
from tmo.commands.rollout import Refused
from tmo.commands.rollout_report import (
    INSTALL_HINT,
    Timeline,
    build_timeline,
    check_out,
    draw,
    event_time,
    parse_time,
    require_matplotlib,
    summary,
)

T0 = datetime(2026, 12, 1, 21, 0, 0, tzinfo=UTC)
STEPS = [
    {"setWeight": 25},
    {"pause": {"duration": "30s"}},
    {"setWeight": 50},
    {"pause": {"duration": "30s"}},
]


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def event(seconds: float, reason: str, message: str, rv: int = 0) -> dict[str, Any]:
    """An Event as the operator posts it (core v1, second precision)."""
    return {
        "metadata": {"name": f"triage.{rv:x}", "resourceVersion": str(1000 + rv)},
        "involvedObject": {"apiVersion": "tmo.dev/v1alpha1", "kind": "Rollout", "name": "triage"},
        "type": "Warning" if reason in ("RolledBack", "AnalysisFailed") else "Normal",
        "reason": reason,
        "message": message,
        "firstTimestamp": at(seconds),
        "lastTimestamp": at(seconds),
        "count": 1,
    }


def measurement(seconds: float, metric: str, verdict: str, value: Any, stable: Any = None,
                **extra: Any) -> dict[str, Any]:  # fmt: skip
    m = {"metric": metric, "time": at(seconds), "verdict": verdict, **extra}
    if value is not None:
        m["value"] = value
    if stable is not None:
        m["stableValue"] = stable
    return m


def rollout(status: dict[str, Any], metrics: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    analysis: dict[str, Any] = {"interval": "10s"}
    if metrics is not None:
        analysis["metrics"] = metrics
    return {
        "apiVersion": "tmo.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "triage", "namespace": "ml", "generation": 1},
        "spec": {
            "targetRef": {"name": "triage"},
            "strategy": {"canary": {"steps": STEPS}},
            "analysis": analysis,
        },
        "status": {"observedGeneration": 1, **status},
    }


METRICS = [
    {"name": "p99", "builtin": "latencyP99", "max": 250},
    {"name": "errors", "builtin": "errorRate", "max": 0.01},
]

# A canary promoted through every step: what the operator posts, in order.
PROMOTED_EVENTS = [
    event(-600, "CanaryStarted", "canary old1234 started beside stable older99", 1),
    event(-590, "WeightChanged", "canary old1234 at 25% of traffic", 2),
    event(-500, "Promoted", "canary old1234 promoted: it serves all traffic (older99 retired)", 3),
    event(0, "CanaryStarted", "canary a1b2c3d started beside stable 7f9c2d1", 10),
    event(0, "WeightChanged", "canary a1b2c3d at 25% of traffic", 11),
    event(12, "StepPassed", "step 1/4 (setWeight 25) passed; next: pause 30s", 12),
    event(42, "StepPassed", "step 2/4 (pause 30s) passed; next: setWeight 50", 13),
    event(44, "WeightChanged", "canary a1b2c3d at 50% of traffic", 14),
    event(54, "StepPassed", "step 3/4 (setWeight 50) passed; next: pause 30s", 15),
    event(84, "StepPassed", "step 4/4 (pause 30s) passed; promoting", 16),
    event(86, "Promoted", "canary a1b2c3d promoted: it serves all traffic (7f9c2d1 retired)", 17),
]


def promoted_rollout() -> dict[str, Any]:
    ms = []
    for i, s in enumerate(range(10, 90, 10)):
        ms.append(measurement(s, "p99", "Passed", 200.0 + i, 190.0 - i, requests=120))
        ms.append(measurement(s, "errors", "Passed", 0.0, 0.001, requests=120))
    ms[4] = measurement(30, "p99", "Inconclusive", None, None, requests=3)
    return rollout(
        {
            "phase": "Succeeded",
            "stableRevision": "a1b2c3d",
            "currentStep": 4,
            "canaryWeight": 0,
            "canaryStartedAt": at(0),
            "stepStartedAt": at(84),
            "analysis": {"verdict": "Passed", "passed": 7, "measurements": ms},
        },
        METRICS,
    )


NOW = T0 + timedelta(minutes=10)


def test_promoted_timeline_from_events_and_status() -> None:
    t = build_timeline(promoted_rollout(), list(reversed(PROMOTED_EVENTS)), NOW)
    # The current canary only: from status.canaryStartedAt, not the earlier canary's Events.
    assert t.start == T0
    assert t.end == T0 + timedelta(seconds=86)  # settled: the last Event, not now
    assert (t.namespace, t.name, t.phase) == ("ml", "triage", "Succeeded")
    assert (t.canary_revision, t.stable_revision) == ("a1b2c3d", "7f9c2d1")
    steps = [(int((w.time - T0).total_seconds()), w.weight, w.reason) for w in t.weights]
    # CanaryStarted and WeightChanged in the same second: started first (0), then 25.
    assert steps == [
        (0, 0, "CanaryStarted"),
        (0, 25, "WeightChanged"),
        (44, 50, "WeightChanged"),
        (86, 100, "Promoted"),
    ]
    assert [m.reason for m in t.marks] == ["CanaryStarted"] + ["StepPassed"] * 4 + ["Promoted"]
    p99, errors = t.gates
    assert (p99.name, p99.unit, p99.max, p99.min) == ("p99", "ms", 250.0, None)
    assert (errors.name, errors.unit, errors.max) == ("errors", "%", 0.01)
    assert len(p99.points) == 8 and t.points == 16
    assert p99.verdicts() == {"Passed": 7, "Inconclusive": 1}
    first = p99.points[0]
    assert (first.time, first.value, first.stable, first.requests) == (
        T0 + timedelta(seconds=10), 200.0, 190.0, 120
    )  # fmt: skip
    assert p99.points[2].value is None and p99.points[2].verdict == "Inconclusive"
    assert t.notes == []


def test_since_takes_earlier_canaries_in() -> None:
    t = build_timeline(promoted_rollout(), PROMOTED_EVENTS, NOW, since=NOW - timedelta(hours=1))
    assert (t.start, t.end) == (NOW - timedelta(hours=1), NOW)  # a window ends now
    weights = [(w.weight, w.reason) for w in t.weights]
    assert weights == [
        (0, "CanaryStarted"),
        (25, "WeightChanged"),
        (100, "Promoted"),
        (0, "CanaryStarted"),
        (25, "WeightChanged"),
        (50, "WeightChanged"),
        (100, "Promoted"),
        (100, "end"),
    ]
    assert t.weights[-1].time == NOW
    assert t.canary_revision == "a1b2c3d"  # the latest canary in range names the revisions
    # A window that starts after the canary's first measurements leaves them out.
    late = build_timeline(
        promoted_rollout(), PROMOTED_EVENTS, NOW, since=T0 + timedelta(seconds=45)
    )
    assert all(p.time >= T0 + timedelta(seconds=45) for g in late.gates for p in g.points)
    # The weight where the window starts comes from the Events before it.
    assert [(w.weight, w.reason) for w in late.weights][:2] == [(50, "before"), (100, "Promoted")]
    assert late.weights[0].time == T0 + timedelta(seconds=45)


def test_live_canary_ends_now_at_the_status_weight() -> None:
    r = rollout(
        {
            "phase": "Progressing",
            "stableRevision": "7f9c2d1",
            "canaryRevision": "a1b2c3d",
            "currentStep": 2,
            "canaryWeight": 50,
            "canaryStartedAt": at(0),
        },
        METRICS,
    )
    events = PROMOTED_EVENTS[3:8]  # up to WeightChanged 50
    now = T0 + timedelta(seconds=50)
    t = build_timeline(r, events, now)
    assert t.end == now
    assert [(w.weight, w.reason) for w in t.weights][-2:] == [(50, "WeightChanged"), (50, "end")]
    assert t.weights[-1].time == now
    assert t.gates == [] and t.notes == ["no measurements yet: drew the weight only"]


def test_rolled_back_canary_and_failed_verdicts() -> None:
    events = [
        event(0, "CanaryStarted", "canary bad0001 started beside stable good001", 1),
        event(5, "WeightChanged", "canary bad0001 at 25% of traffic", 2),
        event(15, "AnalysisFailed", "canary bad0001: p99 3010 > 250", 3),
        event(15, "RolledBack", "canary bad0001 rolled back: p99 3010 > 250 ...", 4),
    ]
    r = rollout(
        {
            "phase": "RolledBack",
            "stableRevision": "good001",
            "canaryRevision": "bad0001",
            "currentStep": 0,
            "canaryWeight": 0,
            "canaryStartedAt": at(0),
            "message": "canary bad0001 rolled back: p99 3010 > 250; good001 still serves",
            "analysis": {
                "verdict": "Failed",
                "measurements": [
                    measurement(10, "p99", "Inconclusive", None, 190.0, requests=2),
                    measurement(15, "p99", "Failed", 3010.0, 191.0, requests=40),
                    measurement(15, "alert:TMOHighLatency", "Error", None, message="no data"),
                ],
            },
        },
        METRICS,
    )
    t = build_timeline(r, events, NOW)
    assert [(w.weight, w.reason) for w in t.weights] == [
        (0, "CanaryStarted"),
        (25, "WeightChanged"),
        (0, "RolledBack"),
    ]
    assert t.end == T0 + timedelta(seconds=15)
    # Spec order first (errors has no points: left out), alert checks after, unit-less.
    assert [(g.name, g.unit) for g in t.gates] == [("p99", "ms"), ("alert:TMOHighLatency", "")]
    assert t.gates[0].verdicts() == {"Inconclusive": 1, "Failed": 1}
    assert t.notes == ["canary bad0001 rolled back: p99 3010 > 250; good001 still serves"]
    text = summary(t, "/tmp/x.png")
    assert text.splitlines()[0] == (
        "wrote /tmp/x.png: Rollout ml/triage: canary bad0001 beside stable good001, RolledBack"
    )
    assert "  weight: 3 points (0% -> 25% -> 0%)" in text
    assert "  gate p99: 2 points (1 Inconclusive, 1 Failed), max 250 ms" in text
    assert "  3 measurement points, 2 events marked" in text


def test_default_gates_take_the_targets_thresholds() -> None:
    r = rollout(
        {
            "phase": "Succeeded",
            "stableRevision": "a1b2c3d",
            "canaryWeight": 0,
            "analysis": {
                "measurements": [
                    measurement(10, "latencyP99", "Passed", 20.0, 19.0),
                    measurement(10, "memoryUtilization", "Passed", 0.31, 0.3),
                    measurement(10, "errorRate", "Passed", 0.0, 0.0),
                ]
            },
        }
    )
    monitoring = {"latencyP99Ms": 1500, "memoryUtilization": 0.99}
    t = build_timeline(r, [], NOW, monitoring=monitoring)
    assert [(g.name, g.unit, g.max) for g in t.gates] == [
        ("latencyP99", "ms", 1500.0),
        ("memoryUtilization", "%", 0.99),
        ("errorRate", "%", None),
    ]
    # No Events (expired, or none may be listed): range and weight from what there is.
    assert t.start == t.end == T0 + timedelta(seconds=10)
    assert [w.weight for w in t.weights] == [0]
    assert "weight from status" in t.notes[0]
    assert "max 99%" in summary(t, "x.png")
    # mannWhitney compares latency and errors with stable: no threshold line is drawn for them.
    r["spec"]["analysis"] = {"judge": "mannWhitney"}
    t = build_timeline(r, [], NOW, monitoring=monitoring)
    assert [(g.name, g.max) for g in t.gates] == [
        ("latencyP99", None),
        ("memoryUtilization", 0.99),
        ("errorRate", None),
    ]


def test_a_full_status_says_older_measurements_are_gone() -> None:
    ms = [measurement(i, "p99", "Passed", 1.0) for i in range(64)]
    r = rollout({"phase": "Progressing", "canaryWeight": 25, "analysis": {"measurements": ms}})
    t = build_timeline(r, [], T0 + timedelta(seconds=70))
    assert any("as many as it keeps: older ones may be gone" in n for n in t.notes)


def test_events_of_other_objects_and_without_time_are_ignored() -> None:
    other = event(5, "WeightChanged", "canary x at 90% of traffic")
    other["involvedObject"]["name"] = "someone-else"
    timeless = event(6, "WeightChanged", "canary x at 80% of traffic")
    for key in ("firstTimestamp", "lastTimestamp"):
        del timeless[key]
    r = rollout({"phase": "Progressing", "canaryWeight": 25, "canaryStartedAt": at(0)})
    t = build_timeline(r, [other, timeless], T0 + timedelta(seconds=10))
    assert 90 not in [w.weight for w in t.weights] and 80 not in [w.weight for w in t.weights]


def test_times() -> None:
    assert parse_time("2026-12-01T21:00:00Z") == T0
    assert parse_time("2026-12-01T22:00:00.5+01:00") == T0 + timedelta(milliseconds=500)
    assert parse_time("2026-12-01T21:00:00") == T0  # naive: UTC
    assert parse_time("soon") is None and parse_time(None) is None
    assert event_time({"eventTime": "2026-12-01T21:00:00.123456Z"}) == T0 + timedelta(
        microseconds=123456
    )
    assert event_time({"metadata": {"creationTimestamp": at(3)}}) == T0 + timedelta(seconds=3)
    assert event_time({}) is None


# ------------------------------------------------------------------ drawing


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def test_draws_a_png(tmp_path: Path) -> None:
    out = tmp_path / "report.png"
    t = build_timeline(promoted_rollout(), PROMOTED_EVENTS, NOW)
    draw(t, out)
    width, height = png_size(out)
    # 11 inches wide at 110 dpi; three panels (weight + two gates) stacked.
    assert 1000 <= width <= 1400 and 700 <= height <= 1800, (width, height)
    assert 20_000 < out.stat().st_size < 2_000_000


def test_draws_the_weight_alone_without_measurements(tmp_path: Path) -> None:
    r = rollout({"phase": "Progressing", "canaryWeight": 25, "canaryStartedAt": at(0)})
    t = build_timeline(r, PROMOTED_EVENTS[3:5], T0 + timedelta(seconds=20))
    out = tmp_path / "weight.png"
    draw(t, out)
    width, height = png_size(out)
    assert width > 1000 and 300 < height < 700


def test_draw_to_an_unwritable_path_raises_oserror(tmp_path: Path) -> None:
    t = Timeline("ml", "x", "Idle", None, None, T0, T0, [], [], [])
    with pytest.raises(OSError):
        draw(t, tmp_path / "missing" / "x.png")


# ------------------------------------------------------------------ the command's refusals


def test_out_path_checks(tmp_path: Path) -> None:
    check_out(str(tmp_path / "ok.png"))
    with pytest.raises(Refused, match="does not exist"):
        check_out(str(tmp_path / "nope" / "x.png"))
    with pytest.raises(Refused, match="is a directory"):
        check_out(str(tmp_path))


def test_matplotlib_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(Refused, match="pip install 'tmo\\[report\\]'"):
        require_matplotlib()
    assert INSTALL_HINT == "pip install 'tmo[report]'"


def test_tmo_imports_without_matplotlib() -> None:
    """`tmo rollout status` and the parser never import matplotlib."""
    import subprocess

    code = (
        "import sys; from tmo.cli import build_parser; "
        "build_parser(['rollout', 'report', 'x', '--out', 'x.png']); "
        "import tmo.commands.rollout_report; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def parse(*argv: str) -> Any:
    return build_parser(list(argv)).parse_args(list(argv))


def test_parse_report() -> None:
    args = parse("rollout", "report", "x", "--out", "r.png")
    assert (args.rollout_command, args.name, args.out, args.since) == ("report", "x", "r.png", None)
    args = parse("rollout", "report", "x", "-n", "ml", "--out", "r.png", "--since", "1h30m")
    assert args.namespace == "ml" and args.since == timedelta(minutes=90)


@pytest.mark.parametrize(
    "argv",
    [
        ["rollout", "report", "x"],  # --out is required
        ["rollout", "report", "x", "--out", "r.png", "--since", "soon"],
        ["rollout", "report", "x", "--out", "r.png", "--since", "0s"],
    ],
)
def test_parse_report_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse(*argv)
    assert e.value.code == 2


def test_report_help_says_what_is_kept(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["rollout", "report", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "newest 32 measurements (the API allows 64)" in text
    assert "pip install 'tmo[report]'" in text
    assert "--since DURATION" in text


def test_unwritable_out_is_refused_before_any_cluster_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    out = str(tmp_path / "no-such-folder" / "r.png")
    code = main(["rollout", "report", "x", "--out", out, "--kubeconfig", str(kubeconfig)])
    assert code == 2
    assert "no-such-folder does not exist" in capsys.readouterr().err
