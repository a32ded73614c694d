"""A fetch that fails ends the rendered init container with one line naming the URI and the
cause: on stderr (no traceback) and in the termination message kubelet puts in pod status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tmo_runtime import pod
from tmo_runtime.fetcher import FetchError

from tests.runtime.helpers import manifest
from tests.runtime.rendered_pod import PodPaths, rendered_containers, run_rendered_fetch
from tests.runtime.test_fetch_https import https_root  # noqa: F401  (the TLS server fixture)


def _doc(uri: str) -> dict[str, Any]:
    return manifest("broken", "text-classification", uri)


def _run_failing(
    doc: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None
) -> tuple[str, str]:
    """(stderr's one line, the termination message) of a fetch that must fail."""
    fetch = rendered_containers(doc)["fetch"]
    rendered_env = {e["name"]: e.get("value") for e in fetch["env"]}
    # The pod's file is kubelet's; here it is a local file in its place.
    assert rendered_env[pod.TERMINATION_MESSAGE_ENV] == fetch["terminationMessagePath"]
    message_file = tmp_path / "termination-log"
    proc, _ = run_rendered_fetch(
        doc,
        paths=PodPaths(),
        env={**(env or {}), pod.TERMINATION_MESSAGE_ENV: str(message_file)},
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr  # no traceback, no log noise: one line
    assert "Traceback" not in proc.stderr
    return lines[0], message_file.read_text()


def test_rendered_fetch_container_keeps_its_message_under_a_read_only_root() -> None:
    fetch = rendered_containers(_doc("s3://models/x/"))["fetch"]
    assert fetch["securityContext"]["readOnlyRootFilesystem"] is True
    # kubelet mounts terminationMessagePath writable whatever the root filesystem is.
    assert fetch["terminationMessagePath"] == "/dev/termination-log"
    assert fetch["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_missing_file_uri_names_the_uri(tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/no-such-model"
    line, message = _run_failing(_doc(uri), tmp_path)
    assert line.startswith("fetch failed: ") and uri in line and "does not exist" in line
    assert message == line + "\n"


def test_https_404_names_the_uri_and_status_without_the_signature(
    https_root: tuple[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    base, _ = https_root
    uri = f"{base}/models/missing.tar.gz?X-Amz-Signature=s3cr3t&X-Amz-Credential=AKIA"
    # The fixture's CA reaches the process through SSL_CERT_FILE, as the pod's CA bundle would.
    line, message = _run_failing(_doc(uri), tmp_path)
    assert f"{base}/models/missing.tar.gz" in line and "HTTP 404" in line
    assert "s3cr3t" not in line and "AKIA" not in line  # a presigned URL's secret stays out
    assert message == line + "\n"


def test_unreachable_https_names_the_uri_and_the_error(tmp_path: Path) -> None:
    uri = "https://127.0.0.1:9/model.tar.gz"  # nothing listens on the discard port
    line, message = _run_failing(_doc(uri), tmp_path)
    assert line.startswith(f"fetch failed: {uri}: ConnectError")
    assert message == line + "\n"


def test_a_bug_keeps_its_traceback_and_still_ends_with_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    uri = "s3://models/x/"
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(_doc(uri)))
    message_file = tmp_path / "termination-log"
    monkeypatch.setenv(pod.TERMINATION_MESSAGE_ENV, str(message_file))

    def broken(*_: object) -> int:
        raise ValueError("boom")

    monkeypatch.setattr(pod, "_fetch_spec", broken)
    assert pod.fetch_command(path, tmp_path / "store") == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: boom" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"fetch failed: {uri}: unexpected ValueError: boom")
    assert message_file.read_text() == last + "\n"


def test_failure_line_is_one_bounded_line_without_credentials() -> None:
    e = FetchError("GET https://user:pw@host/m.tgz?sig=x: HTTP 403\nmore")
    line = pod.fetch_failure_line("https://user:pw@host/m.tgz?sig=x", e)
    assert line == "fetch failed: GET https://<redacted>@host/m.tgz?<redacted> HTTP 403 more"
    assert len(pod.fetch_failure_line("s3://b/k", OSError("x" * 5000))) <= 1024
    # An OSError says what kind it is; the URI is named once.
    assert pod.fetch_failure_line("s3://b/k", PermissionError("Access Denied")) == (
        "fetch failed: s3://b/k: PermissionError: Access Denied"
    )
