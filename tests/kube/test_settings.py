"""`tmo operator` settings: flags, with environment variables as defaults."""

from __future__ import annotations

import argparse

import pytest
from tmo.kube.settings import add_arguments, from_args


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TMO_NAMESPACES", raising=False)
    s = from_args(
        _parse(
            "--runtime-image", "r/tmo:9",
            "--prometheus-url", "http://p:9090",
            "--namespace", "a",
            "--namespace", "b",
            "--progress-deadline-seconds", "30",
            "--log-format", "json",
        )
    )  # fmt: skip
    assert s.render.runtime_image == "r/tmo:9"
    assert s.render.prometheus_url == "http://p:9090"
    assert s.render.progress_deadline_seconds == 30
    assert s.namespaces == ("a", "b")
    assert s.log_format == "json"


def test_environment_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMO_RUNTIME_IMAGE", "env/tmo:1")
    monkeypatch.setenv("TMO_NAMESPACES", "ml,vision")
    monkeypatch.setenv("TMO_RESYNC_SECONDS", "60")
    s = from_args(_parse())
    assert s.render.runtime_image == "env/tmo:1"
    assert s.namespaces == ("ml", "vision")
    assert s.resync_seconds == 60


def test_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    from tmo.cli import main

    with pytest.raises(SystemExit):
        main(["operator", "--help"])
    out = capsys.readouterr().out
    for flag in ("--runtime-image", "--prometheus-url", "--namespace", "--log-format"):
        assert flag in out


def test_namespace_flags_replace_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMO_NAMESPACES", "ml")
    assert from_args(_parse("--namespace", "x")).namespaces == ("x",)
