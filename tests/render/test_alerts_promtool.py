"""The generated PrometheusRule passes promtool, and each alert fires and stays quiet as it should.

promtool (Debian's `prometheus` package, `make deps`) evaluates the real rule expressions on series
written here, the way Prometheus would: no mock of PromQL.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from tmo.render import render_children

PROMTOOL = shutil.which("promtool")

LABELS = 'namespace="ml",model="email-triage",revision="r1",pod="p1"'
FIRED_LABELS = {
    "namespace": "ml",
    "model": "email-triage",
    "revision": "r1",
    "severity": "warning",
    "tmo_alert": "true",
}


def _rules_file(tmp_path: Path, manifest: dict[str, Any]) -> Path:
    rule = next(o for o in render_children(manifest).objects if o["kind"] == "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


def _histogram(fast_per_min: int, slow_per_min: int) -> list[dict[str, str]]:
    """Cumulative buckets: `fast` requests take <100 ms, `slow` ones 250 ms - 1 s."""
    series = []
    for le, per_min in (
        ("0.1", fast_per_min),
        ("0.25", fast_per_min),
        ("1", fast_per_min + slow_per_min),
        ("+Inf", fast_per_min + slow_per_min),
    ):
        series.append(
            {
                "series": f'tmo_request_duration_seconds_bucket{{{LABELS},le="{le}"}}',
                "values": f"0+{per_min}x30",
            }
        )
    return series


def _memory(container: str, used: int, limit: int | str) -> list[dict[str, str]]:
    labels = f'{LABELS},container="{container}"'
    # promtool's `AxN` shorthand does not take Inf: spell the samples out.
    limits = " ".join([str(limit)] * 31)
    return [
        {"series": f"tmo_memory_usage_bytes{{{labels}}}", "values": f"{used}x30"},
        {"series": f"tmo_memory_limit_bytes{{{labels}}}", "values": limits},
    ]


def _alert_test(
    series: list[dict[str, str]],
    alert: str,
    fires: bool,
    extra: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    expected = (
        [{"exp_labels": {**FIRED_LABELS, **(extra or {})}, "exp_annotations": annotations or {}}]
        if fires
        else []
    )
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [{"eval_time": "15m", "alertname": alert, "exp_alerts": expected}],
    }


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL, "promtool is not installed: `make deps` installs Debian's prometheus package"
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


def test_rules_pass_promtool_check(tmp_path: Path, manifest: dict[str, Any]) -> None:
    r = _promtool("check", "rules", str(_rules_file(tmp_path, manifest)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 rules found" in r.stdout


def test_each_alert_fires_and_stays_quiet(tmp_path: Path, manifest: dict[str, Any]) -> None:
    rules = _rules_file(tmp_path, manifest)
    # The model's container near its limit while the gateway's is not: the alert names the
    # model's container, the one about to be OOM-killed.
    memory = lambda used: [  # noqa: E731
        *_memory("torchserve", used, 1000),
        *_memory("gateway", 100, 1000),
    ]
    requests = lambda ok, failed: [  # noqa: E731
        {"series": f'tmo_requests_total{{{LABELS},code="200"}}', "values": f"0+{ok}x30"},
        {"series": f'tmo_requests_total{{{LABELS},code="503"}}', "values": f"0+{failed}x30"},
    ]
    tests = [
        # p99 of 1 % slow requests (1 s) is over 250 ms; all-fast traffic is well under it.
        _alert_test(_histogram(99, 1), "TMOHighLatency", fires=False),
        _alert_test(
            _histogram(90, 10),
            "TMOHighLatency",
            fires=True,
            annotations={
                "summary": "p99 latency of ml/email-triage above 250 ms",
                "description": "p99 latency of revision r1 is 925ms.",
            },
        ),
        _alert_test(_histogram(600, 0), "TMOHighLatency", fires=False),
        # Memory at 95 % of the limit (threshold 0.9) fires, 50 % does not.
        _alert_test(
            memory(950),
            "TMOMemorySpike",
            fires=True,
            extra={"pod": "p1", "container": "torchserve"},
            annotations={
                "summary": "memory of a ml/email-triage pod above 90% of its limit",
                "description": "Container torchserve of pod p1 (revision r1) uses 95% "
                "of its memory limit.",
            },
        ),
        _alert_test(memory(500), "TMOMemorySpike", fires=False),
        # No limit (+Inf) is never a spike.
        _alert_test(_memory("torchserve", 950, "+Inf"), "TMOMemorySpike", fires=False),
        # 5 % of requests failing is over 1 %; 0.5 % is not; no traffic is no alert.
        _alert_test(
            requests(95, 5),
            "TMOHighErrorRate",
            fires=True,
            annotations={
                "summary": "5xx ratio of ml/email-triage above 0.01",
                "description": "Revision r1 answers 5% of requests with 5xx.",
            },
        ),
        _alert_test(requests(995, 5), "TMOHighErrorRate", fires=False),
        _alert_test([], "TMOHighErrorRate", fires=False),
    ]
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(
        yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests})
    )
    r = _promtool("test", "rules", str(test_file))
    assert r.returncode == 0, r.stdout + r.stderr


def test_thresholds_come_from_the_spec(tmp_path: Path, manifest: dict[str, Any]) -> None:
    manifest["spec"]["monitoring"] = {"latencyP99Ms": 2000, "memoryUtilization": 0.99}
    rules = _rules_file(tmp_path, manifest)
    tests = [
        # With a 2 s budget requests under 1 s are fine; 95 % memory is under 99 %.
        _alert_test(_histogram(90, 10), "TMOHighLatency", fires=False),
        _alert_test(
            _memory("torchserve", 950, 1000),
            "TMOMemorySpike",
            fires=False,
        ),
    ]
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(
        yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests})
    )
    r = _promtool("test", "rules", str(test_file))
    assert r.returncode == 0, r.stdout + r.stderr
