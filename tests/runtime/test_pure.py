"""Pure parts of the runtime: config rendering, manifest adapter, fetcher, OIP, cgroups."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import fsspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from tmo_runtime import fetcher
from tmo_runtime.cgroup import parse_cgroup_value, process_group_rss, read_cgroup_memory
from tmo_runtime.gateway import oip
from tmo_runtime.gateway.metrics import GatewayMetrics
from tmo_runtime.manifest import ManifestError, serve_spec_from_dict
from tmo_runtime.packaging import package_huggingface
from tmo_runtime.podshare import (
    MEMORY_SUFFIX,
    MemoryReport,
    clear_drained,
    drained,
    mark_drained,
    read_memory_reports,
    write_memory_report,
)
from tmo_runtime.ts_config import (
    HandlerSettings,
    ModelEntry,
    TorchServeSettings,
    render_config_properties,
)


def _props(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


def test_config_properties_is_loopback_locked_down() -> None:
    entry = ModelEntry(name="m", url="m", workers=2, batch_size=4, max_batch_delay_ms=7)
    text = render_config_properties(
        TorchServeSettings(
            model_store="/models/store.v1",
            models=[entry],
            inference_port=1,
            management_port=2,
            metrics_port=3,
            grpc_inference_port=4,
            grpc_management_port=5,
        )
    )
    p = _props(text)
    assert p["inference_address"] == "http://127.0.0.1:1"
    assert p["management_address"] == "http://127.0.0.1:2"
    assert p["metrics_address"] == "http://127.0.0.1:3"
    assert (p["grpc_inference_port"], p["grpc_management_port"]) == ("4", "5")
    assert p["enable_model_api"] == "false"
    assert p["metrics_mode"] == "prometheus"
    assert p["disable_token_authorization"] == "false"
    assert p["install_py_dep_per_model"] == "false"
    # Properties-escaped regex: the dot in the store path is literal, nothing outside it allowed.
    assert p["allowed_urls"] == r"file:///models/store\\.v1/.*"
    models = json.loads(p["models"])
    assert models["m"]["1.0"]["batchSize"] == 4 and models["m"]["1.0"]["maxWorkers"] == 2
    assert models["m"]["1.0"]["maxBatchDelay"] == 7
    assert render_config_properties(
        TorchServeSettings(model_store="/s", models=[entry])
    ) == render_config_properties(TorchServeSettings(model_store="/s", models=[entry]))


def _doc(**spec: object) -> dict[str, object]:
    base: dict[str, object] = {"task": "text-classification", "model": {"uri": "file:///m"}}
    base.update(spec)
    return {
        "apiVersion": "tmo.dev/v1alpha1",
        "kind": "TransformerModel",
        "metadata": {"name": "m"},
        "spec": base,
    }


def test_manifest_defaults_and_fields() -> None:
    spec = serve_spec_from_dict(
        _doc(runtime={"precision": "bf16", "maxSequenceLength": 8192, "batchSize": 2}), Path("/x")
    )
    assert (spec.precision, spec.max_sequence_length, spec.batch_size) == ("bf16", 8192, 2)
    assert spec.attention == "sdpa" and spec.workers == 1 and not spec.auth_required
    assert len(spec.revision) == 7


@pytest.mark.parametrize(
    "bad",
    [
        {"task": "translation"},
        {"runtime": {"precision": "int4"}},
        {"runtime": {"batchSize": 0}},
        {"model": {}},
    ],
)
def test_manifest_refuses_bad_fields(bad: dict[str, object]) -> None:
    with pytest.raises(ManifestError):
        serve_spec_from_dict(_doc(**bad), Path("/x"))


def test_directory_digest_matches_coreutils(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "sub" / "w.bin").write_bytes(b"\x00" * 1000)
    (tmp_path / "B.txt").write_text("upper sorts first in C locale")
    shell = subprocess.run(
        "(find -L . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    assert fetcher.tree_sha256(tmp_path) == shell


def test_tampered_artifact_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    digest = fetcher.tree_sha256(tmp_path)
    assert fetcher.fetch(f"file://{tmp_path}", tmp_path / "d", base_dir=Path("/"), sha256=digest)
    (tmp_path / "model.safetensors").write_bytes(b"weightz")
    with pytest.raises(fetcher.IntegrityError, match=r"refusing to serve.*sha256 mismatch"):
        fetcher.fetch(f"file://{tmp_path}", tmp_path / "d", base_dir=Path("/"), sha256=digest)


def test_relative_file_uri_resolves_against_manifest_dir(tmp_path: Path) -> None:
    (tmp_path / "models" / "m").mkdir(parents=True)
    got = fetcher.fetch("file://models/m", tmp_path / "d", base_dir=tmp_path)
    assert got == (tmp_path / "models" / "m").resolve()


def test_pvc_uri_resolves_under_the_mount_root_and_refuses_dotdot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fetcher.PVC_ROOT_ENV, str(tmp_path / "pvc"))
    (tmp_path / "pvc" / "claim" / "bert").mkdir(parents=True)
    assert fetcher.fetch("pvc://claim/bert", tmp_path, base_dir=tmp_path).name == "bert"
    with pytest.raises(fetcher.FetchError):
        fetcher.resolve_pvc_uri("claim/../../etc")


def test_fsspec_remote_directory_is_downloaded_and_verified(tmp_path: Path) -> None:
    # memory:// goes through the same fsspec path as s3:// and gs://.
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/model/config.json", b"{}")
    fs.pipe("/bucket/model/model.safetensors", b"w")
    local = tmp_path / "ref"
    local.mkdir()
    (local / "config.json").write_bytes(b"{}")
    (local / "model.safetensors").write_bytes(b"w")
    got = fetcher.fetch(
        "memory://bucket/model",
        tmp_path / "dl",
        base_dir=tmp_path,
        sha256=fetcher.tree_sha256(local),
    )
    assert sorted(p.name for p in got.iterdir()) == ["config.json", "model.safetensors"]
    with pytest.raises(fetcher.IntegrityError):
        fetcher.fetch("memory://bucket/model", tmp_path / "dl2", base_dir=tmp_path, sha256="0" * 64)


def test_unknown_scheme() -> None:
    with pytest.raises(fetcher.FetchError, match="not supported"):
        fetcher.fetch("ftp://x/y", Path("/tmp"), base_dir=Path("/"))


def test_packaging_no_archive_and_archive(tmp_path: Path) -> None:
    model = tmp_path / "hf"
    model.mkdir()
    (model / "config.json").write_text("{}")
    entry = ModelEntry(name="m", url="")
    handler = HandlerSettings(task="text-classification", precision="int8")
    out = package_huggingface(model, tmp_path / "store", entry, handler)
    assert out.url == "m"
    manifest = json.loads((tmp_path / "store" / "m" / "MAR-INF" / "MANIFEST.json").read_text())
    assert manifest["model"]["handler"] == "tmo_handler.py:handle"
    cfg = json.loads((tmp_path / "store" / "m" / "model-config.yaml").read_text())
    assert cfg["handler"]["model_path"] == str(model.resolve())
    assert cfg["handler"]["precision"] == "int8"
    mar = package_huggingface(model, tmp_path / "store", entry, handler, archive=True)
    with zipfile.ZipFile(tmp_path / "store" / mar.url) as zf:
        names = set(zf.namelist())
        assert {"MAR-INF/MANIFEST.json", "config.json", "tmo_handler.py"} <= names
        assert "model_path" not in json.loads(zf.read("model-config.yaml"))["handler"]


def test_cgroup_v2_and_v1(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.current").write_text("1048576\n")
    (v2 / "memory.max").write_text("max\n")
    assert read_cgroup_memory(v2) == (1048576.0, math.inf)
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.usage_in_bytes").write_text("2000\n")
    (v1 / "memory.limit_in_bytes").write_text("4096\n")
    assert read_cgroup_memory(tmp_path / "v1") == (2000.0, 4096.0)
    assert parse_cgroup_value("9223372036854771712") == math.inf
    assert read_cgroup_memory(tmp_path / "none") is None


def test_cgroup_reads_this_process_directory_when_the_mount_is_the_whole_hierarchy(
    tmp_path: Path,
) -> None:
    # A host or a cgroup-v1 container without its own namespace: the mount's root is every
    # process's total; /proc/self/cgroup names ours.
    mine = tmp_path / "memory" / "kubepods" / "pod1" / "c1"
    mine.mkdir(parents=True)
    for d, usage in ((tmp_path / "memory", "9000"), (mine, "300")):
        (d / "memory.usage_in_bytes").write_text(usage)
        (d / "memory.limit_in_bytes").write_text("1000")
    proc = tmp_path / "cgroup"
    proc.write_text("5:cpu,cpuacct:/kubepods/pod1/c1\n4:memory:/kubepods/pod1/c1\n0::/\n")
    assert read_cgroup_memory(tmp_path, proc) == (300.0, 1000.0)
    # The directory it names is not mounted here (the mount is already ours): the root.
    proc.write_text("4:memory:/elsewhere\n")
    assert read_cgroup_memory(tmp_path, proc) == (9000.0, 1000.0)
    # cgroup v2 without a namespace: 0::/path under the unified mount.
    v2 = tmp_path / "v2"
    (v2 / "system.slice" / "tmo.service").mkdir(parents=True)
    (v2 / "system.slice" / "tmo.service" / "memory.current").write_text("42")
    (v2 / "system.slice" / "tmo.service" / "memory.max").write_text("max")
    proc.write_text("0::/system.slice/tmo.service\n")
    assert read_cgroup_memory(v2, proc) == (42.0, math.inf)


def test_oip_request_conversion() -> None:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]}
    assert oip.to_handler_payload("summarization", body) == {"inputs": ["a", "b"], "parameters": {}}
    msgs = json.dumps([{"role": "user", "content": "hi"}])
    chat = {"inputs": [{"name": "messages", "datatype": "BYTES", "shape": [1], "data": [msgs]}]}
    assert (
        oip.to_handler_payload("text-generation", chat)["inputs"][0]["messages"][0]["content"]
        == "hi"
    )
    with pytest.raises(oip.OipError, match="shape"):
        oip.to_handler_payload("summarization", {"inputs": [{**body["inputs"][0], "shape": [3]}]})
    with pytest.raises(oip.OipError):
        oip.to_handler_payload("summarization", {"inputs": []})


@given(
    st.lists(
        st.lists(st.floats(-1e3, 1e3, width=32), min_size=3, max_size=3), min_size=1, max_size=5
    )
)
def test_oip_embedding_output_is_row_major(rows: list[list[float]]) -> None:
    (out,) = oip.to_outputs("feature-extraction", [{"embedding": r} for r in rows])
    assert out["shape"] == [len(rows), 3]
    assert out["data"] == [x for r in rows for x in r]


def test_cpu_quota_from_cgroup_v2_and_v1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tmo_runtime.handlers.common import available_cpus, worker_threads

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("100000 100000\n")  # one CPU
    assert available_cpus(str(v2)) == 1
    (v2 / "cpu.max").write_text("max 100000\n")
    assert available_cpus(str(v2)) >= 1
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(str(tmp_path / "v1")) == 1
    monkeypatch.setenv("TMO_TORCH_THREADS", "3")
    assert worker_threads({"minWorkers": 4}) == 3
    monkeypatch.delenv("TMO_TORCH_THREADS")
    assert worker_threads({"minWorkers": 10_000}) == 1  # never below one thread


def test_memory_reports_cross_containers_and_go_stale(tmp_path: Path) -> None:
    share = tmp_path / "share"
    now = 1_000_000.0
    write_memory_report(share, MemoryReport("torchserve", 700.0, 1000.0, now))
    write_memory_report(share, MemoryReport("sidecar", 5.0, math.inf, now - 60))
    (share / f"torn{MEMORY_SUFFIX}").write_text('{"container": "torn", "usage')
    got = read_memory_reports(share, now=now + 3)
    # The unlimited one round-trips as +Inf, the old one is dropped, the torn one skipped.
    assert got == [MemoryReport("torchserve", 700.0, 1000.0, now)]
    assert read_memory_reports(share, now=now + 60) == []
    assert read_memory_reports(tmp_path / "missing") == []


def test_gateway_exports_each_container_memory(tmp_path: Path) -> None:
    own = tmp_path / "cg"
    own.mkdir()
    (own / "memory.current").write_text("100")
    (own / "memory.max").write_text("1000")
    share = tmp_path / "share"
    write_memory_report(share, MemoryReport("torchserve", 900.0, 2000.0, time.time()))
    metrics = GatewayMetrics([("m", "r1")], cgroup_root=own, share_dir=share)
    text = generate_latest(metrics.registry).decode()
    assert 'tmo_memory_usage_bytes{container="gateway",model="m",revision="r1"} 100.0' in text
    assert 'tmo_memory_usage_bytes{container="torchserve",model="m",revision="r1"} 900.0' in text
    assert 'tmo_memory_limit_bytes{container="torchserve",model="m",revision="r1"} 2000.0' in text


def test_drain_mark(tmp_path: Path) -> None:
    assert not drained(tmp_path)
    mark_drained(tmp_path / "share")
    assert drained(tmp_path / "share")
    clear_drained(tmp_path / "share")
    clear_drained(tmp_path / "share")  # twice: a restarted gateway finds none
    assert not drained(tmp_path / "share")


def test_process_group_rss_counts_the_group_and_the_named_processes() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; b = bytearray(32 << 20); time.sleep(30)"],
        start_new_session=True,
    )
    try:
        time.sleep(1.0)
        group = process_group_rss({child.pid}, set())
        mine = process_group_rss(set(), {os.getpid()})
        assert group >= 32 << 20  # the child's 32 MiB buffer is resident
        assert mine > 0
        assert process_group_rss({child.pid}, {os.getpid()}) >= group + mine * 0.5
        assert process_group_rss(set(), set()) == 0
    finally:
        child.kill()
        child.wait()
