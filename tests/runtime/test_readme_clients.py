"""The runtime README's "Calling a model" examples, run as written against the real gateway.

The README's blocks are this test's input: an example that stops working fails here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.helpers import REPO, Served

pytestmark = pytest.mark.slow

README = REPO / "runtimes" / "README.md"


def blocks(language: str) -> list[str]:
    text = README.read_text()
    section = text.split("## Calling a model", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def commands(block: str) -> list[str]:
    """Shell commands of a block, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out, pending = [], ""
    for line in joined.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        # A quoted JSON body may span lines: wait for the quotes to balance.
        if pending.count("'") % 2 == 0 and pending.strip():
            out.append(pending.strip())
            pending = ""
    return out


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (64, 48), (180, 120, 40)).save(tmp_path / "cat.jpg", "JPEG")
    return tmp_path


def run(served: Served, cwd: Path, argv: list[str], code: str) -> str:
    host = served.url.removeprefix("http://")
    code = code.replace("localhost:8080", host)
    env = {**os.environ, "TMO_TOKEN": served.token}
    r = subprocess.run([*argv, code], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"{code}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    return r.stdout


def test_the_readme_has_the_four_ways() -> None:
    sh, py = blocks("sh"), blocks("python")
    assert any("curl" in b for b in sh)
    assert [b for b in py if "import requests" in b]
    assert [b for b in py if "from openai import OpenAI" in b]
    assert [b for b in py if "tritonclient" in b]


def test_curl_examples(served: Served, cwd: Path) -> None:
    curls = [c for b in blocks("sh") for c in commands(b) if c.startswith("curl")]
    assert len(curls) >= 5
    for command in curls:
        out = run(served, cwd, ["bash", "-c"], command).strip()
        if "/v1/chat/completions" in command:
            events = [line[6:] for line in out.splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]", out
            assert all("error" not in json.loads(e) for e in events[:-1]), out
            continue
        doc = json.loads(out)
        answers = doc if isinstance(doc, list) else [doc]
        assert all("label" in a for a in answers), f"{command}\n{out}"


def test_requests_example(served: Served, cwd: Path) -> None:
    (block,) = [b for b in blocks("python") if "import requests" in b]
    out = run(served, cwd, [sys.executable, "-c"], block)
    assert out.startswith("200 ") and "label" in out, out


def test_openai_example(served: Served, cwd: Path) -> None:
    (block,) = [b for b in blocks("python") if "from openai import OpenAI" in b]
    out = run(served, cwd, [sys.executable, "-c"], block)
    lines = out.splitlines()
    assert "tiny-text-generation" in lines[0], out
    assert lines[-1].split()[-1] in ("length", "stop"), out


def test_tritonclient_example(served: Served, cwd: Path) -> None:
    (block,) = [b for b in blocks("python") if "tritonclient" in b]
    out = run(served, cwd, [sys.executable, "-c"], block)
    assert out.splitlines()[0] == "True True", out
    # Two labels and two scores, as the numpy arrays tritonclient returns.
    assert re.fullmatch(r"\[b?'[^']+' b?'[^']+'\] \[[0-9.e\- ]+\]", out.splitlines()[1]), out
