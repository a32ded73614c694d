"""The CRDs against a real API server: install, examples, admission rules, explain, columns, status.

The invalid-manifest table is shared with the offline test (tests/api/invalid_cases.py): every
row must be refused both by `tmo validate` and by the API server itself, each naming the field.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tmo.api import check_manifest, load_manifest
from tmo.api.crd import CRD_FILES, all_crds

from e2e.kube import Cluster, wait_for
from tests.api.examples import doc_id, example_docs
from tests.api.invalid_cases import BASE_MODEL, BASE_ROLLOUT, CASES, InvalidCase

REPO = Path(__file__).resolve().parent.parent
CRD_NAMES = ["transformermodels.tmo.dev", "rollouts.tmo.dev"]


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Cluster:
    """The cluster with TMO's CRDs installed from crds/ (idempotent) and served."""
    for file in CRD_FILES.values():
        cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "--field-manager=tmo-e2e-api",
            "-f", str(REPO / "crds" / file),
        )  # fmt: skip
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{n}" for n in CRD_NAMES]
    )
    # Established comes before discovery and the published OpenAPI catch up.
    wait_for(
        "tm and tmro in discovery",
        lambda: cluster.kubectl("get", "tm,tmro", "-A", check=False).returncode == 0,
    )
    return cluster


@pytest.fixture(scope="module")
def shared_ns(api: Cluster) -> Iterator[str]:
    """One namespace for the tests whose objects never clash (saves a namespace per row)."""
    name = f"tmo-api-{uuid.uuid4().hex[:6]}"
    api.kubectl("create", "namespace", name)
    yield name
    api.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _apply(api: Cluster, doc: dict[str, Any], namespace: str) -> Any:
    return api.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc), check=False)


def _pruned(node: Any) -> Any:
    """Drop empty dicts/lists: pydantic fills them in, the API server leaves them absent."""
    if isinstance(node, dict):
        out = {k: _pruned(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v not in ({}, [])}
    if isinstance(node, list):
        return [_pruned(v) for v in node]
    return node


def test_crds_established(api: Cluster) -> None:
    for name in CRD_NAMES:
        crd = api.get("crd", name)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True"
        assert conditions.get("NamesAccepted") == "True"
        # No structural-schema complaints from the server.
        assert conditions.get("NonStructuralSchema") is None


def test_installed_crds_are_the_generated_ones(api: Cluster) -> None:
    generated = {d["metadata"]["name"]: d for d in all_crds().values()}
    for name in CRD_NAMES:
        served = api.get("crd", name)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert served == generated[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("doc", example_docs(), ids=doc_id)
def test_example_accepted_with_the_same_defaults(
    api: Cluster, shared_ns: str, doc: dict[str, Any]
) -> None:
    namespace = shared_ns
    result = _apply(api, doc, namespace)
    assert result.returncode == 0, result.stderr
    served = api.get(doc["kind"], doc["metadata"]["name"], namespace)
    offline = load_manifest(doc).model_dump(exclude_none=True, mode="json")
    # The API server's defaulting (from the CRD) and pydantic's defaults agree field by field.
    assert _pruned(served["spec"]) == _pruned(offline["spec"])


def _rule_messages() -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.update(v["message"] for v in node.get("x-kubernetes-validations", []))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(all_crds())
    return found


RULE_MESSAGES = _rule_messages()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_invalid_manifest_rejected_by_api_server(
    api: Cluster, shared_ns: str, case: InvalidCase
) -> None:
    namespace = shared_ns
    result = _apply(api, case.manifest, namespace)
    assert result.returncode != 0, f"API server accepted {case.id}: {result.stdout}"
    error = result.stderr
    assert case.path in error, f"{case.path!r} not named in:\n{error}"
    # The offline check refuses it too, on the same field...
    offline = check_manifest(case.manifest)
    assert any(p.field.startswith(case.path) for p in offline), offline
    # ...and where the refusal is one of our CEL rules, with the very same message.
    for problem in offline:
        if problem.field.startswith(case.path) and problem.message in RULE_MESSAGES:
            assert problem.message in error, f"{problem.message!r} not in:\n{error}"


def test_bases_of_the_table_are_accepted(api: Cluster, namespace: str) -> None:
    for doc in (BASE_MODEL, BASE_ROLLOUT):
        result = _apply(api, doc, namespace)
        assert result.returncode == 0, result.stderr


def test_explain_shows_descriptions(api: Cluster) -> None:
    def explained() -> str:
        out = api.kubectl("explain", "tm.spec.scaling", check=False)
        return out.stdout if out.returncode == 0 and "minReplicas" in out.stdout else ""

    text = wait_for("kubectl explain tm.spec.scaling", explained, timeout=60)
    assert "Autoscaling on queue length" in text
    assert "Fewest replicas" in text
    assert "maxReplicas" in text and "targetQueueLength" in text
    rollout = api.kubectl("explain", "tmro.spec.analysis.judge").stdout
    assert "mannWhitney" in rollout


@pytest.fixture
def served_pair(api: Cluster, namespace: str) -> Iterator[tuple[Cluster, str]]:
    with_status = {**BASE_MODEL, "status": {"url": "http://written-by-apply", "replicas": 9}}
    assert _apply(api, with_status, namespace).returncode == 0
    assert _apply(api, BASE_ROLLOUT, namespace).returncode == 0
    yield api, namespace


def _patch(api: Cluster, ns: str, kind: str, patch: dict[str, Any], *args: str) -> Any:
    return api.kubectl(
        "patch", kind, "case", "-n", ns, "--type=merge", "-p", json.dumps(patch), "-o", "json",
        *args, check=False,
    )  # fmt: skip


# An operator may be reconciling these objects while the tests run (other e2e tests start one),
# so each check reads the API server's answer to its own write instead of a later GET.
def test_status_only_through_subresource(served_pair: tuple[Cluster, str]) -> None:
    api, ns = served_pair
    # Status in a create/apply of the main resource is dropped...
    assert api.get("tm", "case", ns).get("status", {}).get("url") != "http://written-by-apply"
    # ...the status subresource takes it (schema-checked)...
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "Available",
        "message": "2/2 replicas ready",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
    status = {"url": "http://written-by-subresource", "conditions": [condition]}
    result = _patch(api, ns, "tm", {"status": status}, "--subresource=status")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"]["url"] == "http://written-by-subresource"
    # ...and a patch of the main resource cannot change it.
    result = _patch(api, ns, "tm", {"status": {"url": "http://forged"}})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout).get("status", {}).get("url") != "http://forged"
    # The status schema is enforced too: observedGeneration is an integer.
    bad = _patch(api, ns, "tm", {"status": {"observedGeneration": "1"}}, "--subresource=status")
    assert bad.returncode != 0 and "status.observedGeneration" in bad.stderr


def _tables(api: Cluster, ns: str) -> list[list[dict[str, str]]]:
    """`kubectl get tm,tmro` parsed by column position (empty cells print as blanks)."""
    out = api.kubectl("get", "tm,tmro", "-n", ns).stdout
    tables = []
    for block in out.strip().split("\n\n"):
        header, *rows = block.splitlines()
        names = header.split()
        starts = [header.index(f"{n} " if n != names[-1] else n) for n in names]
        bounds = [*starts[1:], None]
        tables.append(
            [
                {n: row[a:b].strip() for n, a, b in zip(names, starts, bounds, strict=True)}
                for row in rows
            ]
        )
    return tables


def test_printer_columns(served_pair: tuple[Cluster, str]) -> None:
    api, ns = served_pair
    tm_status = {"revision": "7f9c2d1a0b", "replicas": 3, "url": "http://case.x.svc:8080"}
    ro_status = {
        "phase": "Progressing",
        "currentStep": 2,
        "canaryWeight": 25,
        "stableRevision": "7f9c2d1a0b",
        "canaryRevision": "a1b2c3d4e5",
    }
    assert _patch(api, ns, "tm", {"status": tm_status}, "--subresource=status").returncode == 0
    assert _patch(api, ns, "tmro", {"status": ro_status}, "--subresource=status").returncode == 0
    tm_table, ro_table = _tables(api, ns)
    assert list(tm_table[0]) == ["NAME", "READY", "REVISION", "REPLICAS", "URL", "AGE"]
    assert list(ro_table[0]) == [
        "NAME",
        "PHASE",
        "STEP",
        "WEIGHT",
        "STABLE",
        "CANARY",
        "VERDICT",
        "AGE",
    ]

    def rows_match_status() -> bool:
        # Columns show exactly the status fields they name (whoever wrote them last).
        (tm_row,), (ro_row,) = _tables(api, ns)
        tm = api.get("tm", "case", ns).get("status", {})
        ro = api.get("tmro", "case", ns).get("status", {})
        ready = [c["status"] for c in tm.get("conditions", []) if c["type"] == "Ready"]
        want_tm = {"READY": ready[0] if ready else ""} | {
            col: str(tm.get(key, ""))
            for col, key in [("REVISION", "revision"), ("REPLICAS", "replicas"), ("URL", "url")]
        }
        want_ro = {
            col: str(ro.get(key, ""))
            for col, key in [
                ("PHASE", "phase"),
                ("STEP", "currentStep"),
                ("WEIGHT", "canaryWeight"),
                ("STABLE", "stableRevision"),
                ("CANARY", "canaryRevision"),
            ]
        }
        return all(tm_row[k] == v for k, v in want_tm.items()) and all(
            ro_row[k] == v for k, v in want_ro.items()
        )

    wait_for("printer columns to show the status", rows_match_status, timeout=30)
    # The category lists both kinds.
    everything = api.kubectl("get", "tmo", "-n", ns, "-o", "name").stdout.split()
    assert sorted(everything) == ["rollout.tmo.dev/case", "transformermodel.tmo.dev/case"]


# --- agreement beyond the table: seeded random mutations of the examples -------------------------

_ODD_VALUES: list[Any] = [
    -1, 0, 1, 2, 7, 100, 101, 1001, 2.5, 0.5, 1.5, -0.1, "", "x", "2", "30s", "5 m", "fp8",
    "s3://b/k", "hf://org", True, False, None, [], {}, [1], {"a": 1}, "a" * 300,
    "a" * 45, "a" * 46, "0" * 64, "pvc://claim", "hf://org/name@v1", "1d", "0s", "500ms",
    "flash_attention_2", "bf16", "int8", "mannWhitney", "rollback", "latencyP95", 0.0, 1.0, 1e9,
    {"setWeight": 30}, {"pause": {}}, {"name": "q", "query": "up", "max": 1}, "2Gi", "100m",
]  # fmt: skip
_NEW_KEYS = ["extra", "min", "max", "pause", "setWeight", "duration", "query", "builtin"]


def _containers(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [node, *(c for v in node.values() for c in _containers(v))]
    if isinstance(node, list):
        return [node, *(c for v in node for c in _containers(v))]
    return []


def _mutations(seed: int, count: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    bases = [d for d in example_docs()] + [BASE_MODEL, BASE_ROLLOUT]
    out = []
    for i in range(count):
        doc = json.loads(json.dumps(rng.choice(bases)))
        doc["metadata"] = {"name": f"m-{i}"}
        for _ in range(rng.randint(1, 2)):
            parent = rng.choice(_containers(doc["spec"]))
            if isinstance(parent, dict) and (not parent or rng.random() < 0.2):
                parent[rng.choice(_NEW_KEYS)] = copy.deepcopy(rng.choice(_ODD_VALUES))
            elif isinstance(parent, dict):
                parent[rng.choice(sorted(parent))] = copy.deepcopy(rng.choice(_ODD_VALUES))
            elif parent:
                parent[rng.randrange(len(parent))] = copy.deepcopy(rng.choice(_ODD_VALUES))
        out.append(doc)
    return out


def test_api_server_and_offline_agree_on_random_mutations(api: Cluster, shared_ns: str) -> None:
    namespace = shared_ns
    docs = _mutations(seed=20261129, count=300)
    result = api.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-",
        input="\n---\n".join(json.dumps(d) for d in docs), check=False, timeout=300,
    )  # fmt: skip
    accepted = {
        line.split()[0].split("/")[1] for line in result.stdout.splitlines() if "created" in line
    }
    disagreements = []
    for doc in docs:
        name = doc["metadata"]["name"]
        offline = check_manifest(doc)
        if (name in accepted) != (not offline):
            server = [line for line in result.stderr.splitlines() if f'"{name}"' in line]
            disagreements.append(f"{name}: offline={offline} server={server} doc={doc['spec']}")
    assert accepted, result.stderr
    assert len(accepted) < len(docs)
    assert not disagreements, "\n".join(disagreements)
    print(f"{len(accepted)} of {len(docs)} mutated manifests accepted by both")
