"""`tmo rollout`: pure formatting, the action annotation and argument parsing (no cluster)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from tmo.api.rollout import ACTION_ANNOTATION
from tmo.cli import build_parser, main
from tmo.commands.rollout import (
    action_patch,
    build_action,
    format_gates,
    format_progress,
    format_status,
    format_steps,
    format_value,
    metric_units,
    rfc3339,
    settled,
)

STEPS: list[dict[str, Any]] = [
    {"setWeight": 5},
    {"pause": {"duration": "2m"}},
    {"setWeight": 25},
    {"pause": {"duration": "5m"}},
    {"setWeight": 50},
    {"pause": {}},
]


def rollout(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tmo.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "email-triage", "namespace": "ml", "generation": 1},
        "spec": {
            "targetRef": {"name": "email-triage"},
            "strategy": {"canary": {"steps": STEPS}},
            **spec,
        },
        "status": {"observedGeneration": 1, **(status or {})},
    }


def ready(status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-12-01T21:00:00Z",
    }


# ------------------------------------------------------------------ steps line


def test_steps_progress_line() -> None:
    assert format_steps(STEPS, 2, "Progressing") == (
        "[x] setWeight 5  [x] pause 2m  [>] setWeight 25  [ ] pause 5m  [ ] setWeight 50  "
        "[ ] pause (approval)"
    )


def test_steps_first_step_and_approval_gate() -> None:
    assert format_steps(STEPS, 0, "Progressing").startswith("[>] setWeight 5  [ ] pause 2m")
    assert format_steps(STEPS, 5, "Paused").endswith("[x] setWeight 50  [>] pause (approval)")


@pytest.mark.parametrize("phase", ["Succeeded", "Promoting"])
def test_steps_all_done(phase: str) -> None:
    line = format_steps(STEPS, 3, phase)
    assert line.count("[x]") == len(STEPS)


def test_steps_idle_or_unknown_nothing_started() -> None:
    assert format_steps(STEPS, None, None).count("[ ]") == len(STEPS)
    assert format_steps(STEPS, 0, "Idle").count("[ ]") == len(STEPS)


@pytest.mark.parametrize("phase", ["RolledBack", "Aborted"])
def test_steps_mark_where_it_failed(phase: str) -> None:
    assert format_steps(STEPS, 2, phase).startswith("[x] setWeight 5  [x] pause 2m  [!] setWeight")


def test_steps_past_the_end_and_empty() -> None:
    assert format_steps(STEPS, 6, "Progressing").count("[x]") == len(STEPS)
    assert format_steps([], 0, "Progressing") == "(no steps)"


# ------------------------------------------------------------------ status


def test_status_progressing_with_analysis() -> None:
    r = rollout(
        {
            "phase": "Progressing",
            "stableRevision": "7f9c2d1",
            "canaryRevision": "a1b2c3d",
            "currentStep": 2,
            "canaryWeight": 25,
            "conditions": [ready("False", "Progressing", "canary a1b2c3d at 25%")],
            "analysis": {
                "verdict": "Passed",
                "lastRunTime": "2026-12-01T21:30:00Z",
                "passed": 4,
                "failed": 1,
                "inconclusive": 2,
                "consecutiveErrors": 0,
                "measurements": [
                    {
                        "metric": "p99-latency",
                        "time": "2026-12-01T21:29:30Z",
                        "verdict": "Failed",
                        "value": 400.0,
                        "requests": 120,
                    },
                    {
                        "metric": "memory",
                        "time": "2026-12-01T21:30:00Z",
                        "verdict": "Passed",
                        "value": 0.41234,
                        "stableValue": 0.4,
                    },
                    {
                        "metric": "p99-latency",
                        "time": "2026-12-01T21:30:00Z",
                        "verdict": "Passed",
                        "value": 212.345,
                        "stableValue": 198.0,
                        "requests": 1523,
                        "message": "212.3 <= 250",
                    },
                ],
            },
        }
    )
    out = format_status(r).splitlines()
    assert out[0] == "Rollout ml/email-triage -> TransformerModel email-triage"
    assert out[1] == "phase:     Progressing"
    assert out[2].startswith("steps:     [x] setWeight 5  [x] pause 2m  [>] setWeight 25")
    assert out[2].endswith("(step 3/6)")
    assert "weight:    canary 25%, stable 75%" in out
    assert "revisions: stable 7f9c2d1, canary a1b2c3d" in out
    assert "ready:     False (Progressing): canary a1b2c3d at 25%" in out
    assert (
        "analysis:  Passed at 2026-12-01T21:30:00Z "
        "(passed 4, failed 1, inconclusive 2, errors 0 in a row)"
    ) in out
    assert "progress:  [####--------] step 3/6, canary 25%" in out
    # Per metric (in the order they first appear) its recent values, oldest first, and the
    # newest verdict; these metrics are not in the spec, so no units.
    metric_lines = [line for line in out if line.startswith("  ")]
    assert metric_lines == [
        "  p99-latency  canary 400 -> 212.3  stable - -> 198  Passed (recent: F P), "
        "1523 requests - 212.3 <= 250",
        "  memory       canary 0.4123  stable 0.4  Passed",
    ]
    assert not any(line.startswith("waiting for approval") for line in out)


def test_status_awaiting_approval_hint() -> None:
    r = rollout(
        {
            "phase": "Paused",
            "currentStep": 5,
            "canaryWeight": 50,
            "conditions": [ready("False", "AwaitingApproval", "step 6 waits for promote")],
        }
    )
    out = format_status(r)
    assert "waiting for approval: tmo rollout promote email-triage -n ml" in out
    assert "[>] pause (approval)" in out


def test_status_rolled_back_shows_stalled_and_last_action() -> None:
    r = rollout(
        {
            "phase": "RolledBack",
            "stableRevision": "7f9c2d1",
            "canaryRevision": None,
            "currentStep": 2,
            "canaryWeight": 0,
            "message": "p99-latency 400 > 250: rolled back; 7f9c2d1 still serves",
            "conditions": [
                ready("False", "AnalysisFailed"),
                {**ready("True", "AnalysisFailed", "p99-latency 400 > 250"), "type": "Stalled"},
            ],
            "analysis": {"verdict": "Failed", "passed": 1, "failed": 3, "consecutiveErrors": 2},
            "lastAction": {
                "action": "abort",
                "id": "abc",
                "by": "alice",
                "requestedAt": "2026-12-01T21:30:00Z",
                "handledAt": "2026-12-01T21:30:01Z",
                "result": "rolled back to 7f9c2d1",
            },
        }
    )
    out = format_status(r).splitlines()
    assert "revisions: stable 7f9c2d1, canary -" in out
    assert "stalled:   True (AnalysisFailed): p99-latency 400 > 250" in out
    assert "message:   p99-latency 400 > 250: rolled back; 7f9c2d1 still serves" in out
    assert "analysis:  Failed (passed 1, failed 3, inconclusive 0, errors 2 in a row)" in out
    assert (
        "last action: abort by alice at 2026-12-01T21:30:00Z, handled 2026-12-01T21:30:01Z: "
        "rolled back to 7f9c2d1"
    ) in out
    assert "[!] setWeight 25" in out[2]


def test_status_without_status_and_stale_generation() -> None:
    r = rollout(paused=True)
    del r["status"]
    out = format_status(r)
    assert "phase:     Unknown (not reconciled yet)  (spec.paused: true, held)" in out
    assert "analysis:  no measurements yet" in out
    assert "weight:" not in out
    assert "progress:  [------------] no canary running" in out

    r = rollout({"phase": "Idle"})
    r["metadata"]["generation"] = 3
    assert "(status is for generation 1, spec is at 3)" in format_status(r)


def test_status_error_measurement_without_value() -> None:
    r = rollout(
        {
            "phase": "Paused",
            "analysis": {
                "verdict": "Error",
                "consecutiveErrors": 4,
                "measurements": [
                    {
                        "metric": "custom",
                        "time": "2026-12-01T21:30:00Z",
                        "verdict": "Error",
                        "message": "query returned 3 series",
                    }
                ],
            },
        }
    )
    assert "  custom  Error - query returned 3 series" in format_status(r)


def test_status_pause_time_left_only_with_now() -> None:
    r = rollout({"phase": "Paused", "currentStep": 3, "stepStartedAt": "2026-12-01T21:30:00Z"})
    now = datetime(2026, 12, 1, 21, 31, 40, tzinfo=UTC)
    assert "(step 4/6, 3m20s left)" in format_status(r, now)
    assert "left" not in format_status(r)
    late = now + timedelta(hours=1)
    assert "(step 4/6, 0m00s left)" in format_status(r, late)


@pytest.mark.parametrize(
    ("phase", "code"),
    [
        ("Idle", 0),
        ("Succeeded", 0),
        ("RolledBack", 1),
        ("Aborted", 1),
        ("Progressing", None),
        ("Paused", None),
        ("Promoting", None),
        (None, None),
    ],
)
def test_settled(phase: str | None, code: int | None) -> None:
    assert settled(rollout({"phase": phase})) == code


# ------------------------------------------------------------------ progress line


@pytest.mark.parametrize(
    ("current", "phase", "weight", "expected"),
    [
        (2, "Progressing", 25, "[####--------] step 3/6, canary 25%"),
        (0, "Progressing", 0, "[------------] step 1/6, canary 0%"),
        (5, "Paused", 50, "[##########--] step 6/6, canary 50%"),
        (3, "Promoting", 50, "[############] all 6 steps done, promoting"),
        (6, "Succeeded", 0, "[############] all 6 steps done, promoted"),
        (2, "RolledBack", 0, "[####--------] RolledBack at step 3/6, canary 0%"),
        (1, "Aborted", None, "[##----------] Aborted at step 2/6"),
        (0, "Idle", 0, "[------------] no canary running"),
        (None, None, None, "[------------] no canary running"),
        (9, "Progressing", 50, "[############] step 6/6, canary 50%"),
    ],
)
def test_progress_line(current: Any, phase: str | None, weight: Any, expected: str) -> None:
    assert format_progress(STEPS, current, phase, weight) == expected


def test_progress_line_unicode_and_width() -> None:
    assert format_progress(STEPS, 3, "Progressing", 25, unicode=True) == (
        "\u2588" * 6 + "\u2591" * 6 + " step 4/6, canary 25%"
    )
    bar = format_progress(STEPS[:5], 2, "Progressing", 25, width=5, unicode=True)
    assert bar == "\u2588\u2588\u2591\u2591\u2591 step 3/5, canary 25%"
    assert format_progress([], None, "Progressing", 0) == "[------------] no steps"


def test_status_progress_line_follows_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    r = rollout({"phase": "Progressing", "currentStep": 2, "canaryWeight": 25})
    assert "progress:  [####--------] step 3/6, canary 25%" in format_status(r)
    fancy = format_status(r, unicode=True)
    assert "progress:  \u2588\u2588\u2588\u2588\u2591" in fancy
    assert fancy.isascii() is False and format_status(r).isascii()


# ------------------------------------------------------------------ gates


def m(metric: str, verdict: str, value: Any = None, stable: Any = None, **extra: Any) -> Any:
    out = {"metric": metric, "time": "2026-12-01T21:30:00Z", "verdict": verdict, **extra}
    if value is not None:
        out["value"] = value
    if stable is not None:
        out["stableValue"] = stable
    return out


SPEC_METRICS = {
    "analysis": {
        "metrics": [
            {"name": "p99", "builtin": "latencyP99", "max": 250},
            {"name": "memory", "builtin": "memoryUtilization", "max": 0.9},
            {"name": "errors", "builtin": "errorRate", "max": 0.01},
            {"name": "custom", "query": "vector(1)", "max": 10},
        ]
    }
}


def test_metric_units_from_the_spec_or_the_default_gates() -> None:
    assert metric_units(SPEC_METRICS) == {"p99": "ms", "memory": "%", "errors": "%", "custom": ""}
    defaults = metric_units({"analysis": {"metrics": []}})
    assert defaults["latencyP99"] == "ms" and defaults["errorRate"] == "%"
    assert defaults["memoryUtilization"] == "%" and metric_units({})["latencyP50"] == "ms"


def test_format_value() -> None:
    assert format_value(212.345, "ms") == "212.3"
    assert format_value(241.0) == "241"
    assert format_value(0.0123, "%") == "1.23"
    assert format_value(0.412345, "%") == "41.2"
    assert format_value(0, "%") == "0"
    assert format_value(None) == format_value(True) == format_value("x") == "-"


def test_gates_recent_values_with_units() -> None:
    ms = [
        m("p99", "Passed", 212.0, 200.0, requests=300),
        m("errors", "Passed", 0.0, 0.001, requests=300),
        m("p99", "Passed", 230.0, 203.0, requests=310),
        m("p99", "Passed", 241.0, 199.0, requests=320, message="241 <= 250"),
        m("errors", "Failed", 0.02, 0.001, requests=310, message="0.02 > 0.01"),
        m("custom", "Passed", 3.5),
        m("memory", "Passed", 0.41234),
    ]
    units = metric_units(SPEC_METRICS)
    assert format_gates(ms, units) == [
        "  p99     canary 212 -> 230 -> 241 ms  stable 200 -> 203 -> 199 ms  Passed, "
        "320 requests - 241 <= 250",
        "  errors  canary 0% -> 2%  stable 0.1% -> 0.1%  Failed (recent: P F), 310 requests "
        "- 0.02 > 0.01",
        "  custom  canary 3.5  Passed",
        "  memory  canary 41.2%  Passed",
    ]
    arrows = format_gates(ms, units, unicode=True)[0]
    assert arrows.startswith("  p99     canary 212 \u2192 230 \u2192 241 ms  stable 200 \u2192")


def test_gates_keep_the_last_few_and_show_missing_values() -> None:
    ms = [m("p99", "Passed", float(v), 100.0) for v in range(1, 9)]
    ms.append(m("p99", "Inconclusive", None, 100.0, requests=3, message="3 < minRequests 10"))
    (line,) = format_gates(ms, {"p99": "ms"}, recent=5)
    assert line == (
        "  p99  canary 5 -> 6 -> 7 -> 8 -> - ms  stable 100 -> 100 -> 100 -> 100 -> 100 ms  "
        "Inconclusive (recent: P P P P I), 3 requests - 3 < minRequests 10"
    )
    assert format_gates([], {}) == []


def test_status_uses_the_spec_units() -> None:
    r = rollout(
        {
            "phase": "Progressing",
            "currentStep": 0,
            "canaryWeight": 5,
            "analysis": {
                "verdict": "Passed",
                "measurements": [
                    m("p99", "Passed", 212.0, 198.0),
                    m("errors", "Passed", 0.002, 0.0),
                    m("p99", "Passed", 220.0, 199.0),
                ],
            },
        },
        **SPEC_METRICS,
    )
    out = format_status(r).splitlines()
    assert "  p99     canary 212 -> 220 ms  stable 198 -> 199 ms  Passed" in out
    assert "  errors  canary 0.2%  stable 0%  Passed" in out


# ------------------------------------------------------------------ action annotation


def test_build_action_is_pure_and_compact() -> None:
    now = datetime(2026, 12, 1, 22, 30, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    record = build_action("promote", "alice", now, action_id="0123abcd")
    assert record == {
        "action": "promote",
        "id": "0123abcd",
        "by": "alice",
        "at": "2026-12-01T21:30:00Z",
    }
    patch = action_patch(record)
    assert list(patch) == ["metadata"]
    assert list(patch["metadata"]) == ["annotations"]
    value = patch["metadata"]["annotations"][ACTION_ANNOTATION]
    assert value == '{"action":"promote","id":"0123abcd","by":"alice","at":"2026-12-01T21:30:00Z"}'
    assert json.loads(value) == record


def test_build_action_fresh_ids_and_bad_action() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    a, b = (build_action("abort", "bob", now)["id"] for _ in range(2))
    assert a != b and len(a) == 32 and int(a, 16) >= 0
    with pytest.raises(ValueError, match="unknown action"):
        build_action("resume", "bob", now)


def test_rfc3339_naive_is_utc() -> None:
    assert rfc3339(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"


# ------------------------------------------------------------------ arguments


def parse(*argv: str) -> Any:
    return build_parser(list(argv)).parse_args(list(argv))


def test_parse_action_defaults() -> None:
    args = parse("rollout", "promote", "email-triage")
    assert args.command == "rollout"
    assert args.rollout_command == "promote"
    assert args.name == "email-triage"
    assert args.namespace is None and args.kubeconfig is None
    assert args.no_wait is False and args.timeout == 30.0


def test_parse_action_options() -> None:
    args = parse(
        "rollout", "abort", "x", "-n", "ml", "--kubeconfig", "/k", "--no-wait", "--timeout", "5"
    )
    assert (args.rollout_command, args.namespace, args.kubeconfig) == ("abort", "ml", "/k")
    assert args.no_wait is True and args.timeout == 5.0
    assert parse("rollout", "retry", "x", "--namespace=ml").namespace == "ml"


def test_parse_status() -> None:
    args = parse("rollout", "status", "x")
    assert (args.watch, args.timeout) == (False, None)
    args = parse("rollout", "status", "x", "-w", "--timeout", "90")
    assert (args.watch, args.timeout) == (True, 90.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["rollout"],
        ["rollout", "promote"],
        ["rollout", "resume", "x"],
        ["rollout", "promote", "x", "--timeout", "-1"],
        ["rollout", "status", "x", "--timeout", "soon"],
    ],
)
def test_parse_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse(*argv)
    assert e.value.code == 2


@pytest.mark.parametrize(
    ("sub", "words"),
    [
        ("status", "phase, step progress"),
        ("report", "weight over time"),
        ("promote", "approval gate"),
        ("abort", "rolls back to the stable revision now"),
        ("retry", "from step 0"),
    ],
)
def test_help_says_what_it_does(sub: str, words: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["rollout", sub, "--help"])
    assert e.value.code == 0
    assert words in " ".join(capsys.readouterr().out.split())


def test_no_cluster_is_refused(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    missing = str(tmp_path / "nope.kubeconfig")
    assert main(["rollout", "status", "x", "--kubeconfig", missing]) == 2
    assert "no cluster to talk to" in capsys.readouterr().err
