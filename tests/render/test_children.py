"""Rendered children: hardened pods, loopback TorchServe, one child per concern."""

from __future__ import annotations

from typing import Any

import pytest
from tmo.render import RenderSettings, render_children


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, [o["kind"] for o in objects]
    return found[0]


def test_renders_every_child_in_the_models_namespace(manifest: dict[str, Any]) -> None:
    r = render_children(manifest)
    kinds = [o["kind"] for o in r.objects]
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "ScaledObject",
        "ServiceMonitor",
        "PrometheusRule",
    ]
    for o in r.objects:
        assert o["metadata"]["namespace"] == "ml"
        assert o["metadata"]["labels"]["tmo.dev/model"] == "email-triage"
        assert o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tmo-operator"
    assert r.url == "http://email-triage.ml.svc:8080"


def test_route_adds_an_httproute_to_the_service(manifest: dict[str, Any]) -> None:
    manifest["spec"]["route"] = {
        "parentRefs": [{"name": "public-gw", "namespace": "gateways"}],
        "hostnames": ["triage.example.com"],
    }
    route = _one(render_children(manifest).objects, "HTTPRoute")
    assert route["spec"]["parentRefs"] == [{"name": "public-gw", "namespace": "gateways"}]
    assert route["spec"]["hostnames"] == ["triage.example.com"]
    assert route["spec"]["rules"][0]["backendRefs"][0]["name"] == "email-triage"


def test_pod_is_hardened(manifest: dict[str, Any]) -> None:
    pod = _one(render_children(manifest).objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    containers = pod["initContainers"] + pod["containers"]
    assert [c["name"] for c in containers] == ["fetch", "torchserve", "gateway"]
    for c in containers:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        # Every writable path is an emptyDir or a read-only ConfigMap.
        for m in c["volumeMounts"]:
            volume = next(v for v in pod["volumes"] if v["name"] == m["name"])
            assert "emptyDir" in volume or m.get("readOnly") is True


def test_only_the_gateway_has_ports_and_probes(manifest: dict[str, Any]) -> None:
    objects = render_children(manifest).objects
    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
    by_name = {c["name"]: c for c in pod["containers"]}
    assert "ports" not in by_name["torchserve"]
    assert {p["name"] for p in by_name["gateway"]["ports"]} == {"http", "metrics"}
    for probe in ("readinessProbe", "livenessProbe"):
        assert by_name["gateway"][probe]["httpGet"]["port"] == "http"
        assert probe not in by_name["torchserve"]
    svc = _one(objects, "Service")
    assert {p["name"] for p in svc["spec"]["ports"]} == {"http", "metrics"}
    netpol = _one(objects, "NetworkPolicy")
    assert {p["port"] for p in netpol["spec"]["ingress"][0]["ports"]} == {8080, 9090}


def test_torchserve_listens_on_loopback_with_model_control_off(manifest: dict[str, Any]) -> None:
    cm = _one(render_children(manifest).objects, "ConfigMap")
    props = dict(
        line.split("=", 1)
        for line in cm["data"]["config.properties"].splitlines()
        if line and not line.startswith("#")
    )
    for key in ("inference_address", "management_address", "metrics_address"):
        assert props[key].startswith("http://127.0.0.1:"), props[key]
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert props["grpc_inference_port"] and props["grpc_management_port"]
    assert props["enable_model_api"] == "false"
    assert props["allowed_urls"].startswith("file:///models")
    assert '"batchSize":8' in props["models"] and '"maxBatchDelay":20' in props["models"]
    assert '"minWorkers":2' in props["models"]
    assert 'level="INFO"' in cm["data"]["log4j2.xml"]


def test_resources_and_gpus_go_to_torchserve(manifest: dict[str, Any]) -> None:
    manifest["spec"]["resources"] = {"requests": {"cpu": "4"}, "limits": {"nvidia.com/gpu": "1"}}
    pod = _one(render_children(manifest).objects, "Deployment")["spec"]["template"]["spec"]
    ts = next(c for c in pod["containers"] if c["name"] == "torchserve")
    assert ts["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert ts["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_secrets_are_referenced_never_inlined(manifest: dict[str, Any]) -> None:
    pod = _one(render_children(manifest).objects, "Deployment")["spec"]["template"]["spec"]
    fetch = pod["initContainers"][0]
    assert fetch["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    # ...and as files (a GCS key must be a file), for the fetch container alone.
    volume = next(v for v in pod["volumes"] if v["name"] == "model-credentials")
    assert volume["secret"] == {"secretName": "s3-creds", "defaultMode": 0o440}
    mount = next(m for m in fetch["volumeMounts"] if m["name"] == "model-credentials")
    assert mount["readOnly"] is True
    assert {"name": "TMO_CREDENTIALS_DIR", "value": mount["mountPath"]} in fetch["env"]
    for c in pod["containers"]:
        assert "envFrom" not in c
        assert all(m["name"] != "model-credentials" for m in c["volumeMounts"])
    gateway = next(c for c in pod["containers"] if c["name"] == "gateway")
    token = next(e for e in gateway["env"] if e["name"] == "TMO_AUTH_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "email-triage-token", "key": "token"}


def test_scaled_object_scales_the_current_revision_on_inflight_requests(
    manifest: dict[str, Any],
) -> None:
    settings = RenderSettings(prometheus_url="http://prom.example:9090")
    r = render_children(manifest, settings)
    so = _one(r.objects, "ScaledObject")["spec"]
    assert so["scaleTargetRef"]["name"] == f"email-triage-{r.revision}"
    assert (so["minReplicaCount"], so["maxReplicaCount"], so["cooldownPeriod"]) == (2, 10, 300)
    trigger = so["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["serverAddress"] == "http://prom.example:9090"
    assert trigger["metadata"]["threshold"] == "4"
    assert "tmo_inflight_requests" in trigger["metadata"]["query"]
    assert f'revision="{r.revision}"' in trigger["metadata"]["query"]


@pytest.mark.parametrize("owned", [False, True])
def test_replicas_are_left_to_keda_when_it_owns_them(manifest: dict[str, Any], owned: bool) -> None:
    d = _one(render_children(manifest, autoscaler_owns_replicas=owned).objects, "Deployment")
    assert ("replicas" in d["spec"]) is not owned
    if not owned:
        assert d["spec"]["replicas"] == 2


def test_invalid_spec_is_refused(manifest: dict[str, Any]) -> None:
    manifest["spec"]["scaling"] = {"minReplicas": 5, "maxReplicas": 2}
    with pytest.raises(ValueError, match="minReplicas"):
        render_children(manifest)


def test_revision_config_does_not_change_with_scaling(manifest: dict[str, Any]) -> None:
    before = _one(render_children(manifest).objects, "ConfigMap")
    manifest["spec"]["scaling"]["maxReplicas"] = 20
    manifest["spec"]["monitoring"]["latencyP99Ms"] = 900
    assert _one(render_children(manifest).objects, "ConfigMap") == before


def test_containers_run_the_runtime_entry_points(manifest: dict[str, Any]) -> None:
    pod = _one(render_children(manifest).objects, "Deployment")["spec"]["template"]["spec"]
    fetch = pod["initContainers"][0]
    assert fetch["command"] == ["python", "-m", "tmo_runtime", "fetch"]
    by_name = {c["name"]: c for c in pod["containers"]}
    assert by_name["gateway"]["command"] == ["python", "-m", "tmo_runtime", "gateway"]
    assert by_name["torchserve"]["command"] == ["python", "-m", "tmo_runtime", "torchserve"]
    # Both containers find the shared directory on the /tmp emptyDir they both mount.
    for c in ("torchserve", "gateway"):
        c_env = {e["name"]: e.get("value") for e in by_name[c]["env"]}
        assert c_env["TMO_SHARE_DIR"].startswith("/tmp/")
        assert {"name": "tmp", "mountPath": "/tmp"} in by_name[c]["volumeMounts"]
    assert by_name["gateway"]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e.get("value") for e in by_name["gateway"]["env"]}
    assert env["TMO_TORCHSERVE_URL"] == "http://127.0.0.1:8085"
    assert env["TMO_GATEWAY_PORT"] == "8080" and env["TMO_GATEWAY_METRICS_PORT"] == "9090"
    # kubelet's SIGKILL comes after the grace period: the gateway's delay and drain, and then
    # TorchServe's stop, must fit in it.
    drain = float(env["TMO_GATEWAY_DRAIN_DELAY"]) + float(env["TMO_GATEWAY_DRAIN_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] >= drain + 10


@pytest.mark.parametrize(
    ("uri", "mount_path", "sub_path"),
    [
        (
            "pvc://model-weights/llama-2-7b-chat-hf",
            "/mnt/pvc/model-weights/llama-2-7b-chat-hf",
            "llama-2-7b-chat-hf",
        ),
        ("pvc://weights/a/b/", "/mnt/pvc/weights/a/b", "a/b"),
        ("pvc://weights", "/mnt/pvc/weights", None),
    ],
)
def test_a_pvc_model_mounts_only_its_path_read_only_into_fetch(
    manifest: dict[str, Any], uri: str, mount_path: str, sub_path: str | None
) -> None:
    manifest["spec"]["model"]["uri"] = uri
    pod = _one(render_children(manifest).objects, "Deployment")["spec"]["template"]["spec"]
    claim = uri.removeprefix("pvc://").split("/")[0]
    (volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"] == {"claimName": claim, "readOnly": True}
    fetch = pod["initContainers"][0]
    (mount,) = [m for m in fetch["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True and mount["mountPath"] == mount_path
    assert mount.get("subPath") == sub_path
    assert {"name": "TMO_PVC_ROOT", "value": "/mnt/pvc"} in fetch["env"]
    # Only the fetch container reads the claim; the model server gets the packaged copy.
    for c in pod["containers"]:
        assert all(m["name"] != volume["name"] for m in c["volumeMounts"])


def test_other_schemes_mount_no_claim(manifest: dict[str, Any]) -> None:
    pod = _one(render_children(manifest).objects, "Deployment")["spec"]["template"]["spec"]
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
