"""The Deployment of one model revision: fetch (init), torchserve (loopback only), gateway (ports).

Pods run with the least they need: non-root, read-only root filesystem with emptyDirs for the
few writable paths, no capabilities, RuntimeDefault seccomp, and no service-account token (nothing
in the pod talks to the Kubernetes API).
"""

from __future__ import annotations

import posixpath
from typing import Any

from tmo.render import names
from tmo.render.configmap import MODEL_STORE, MOUNT_PATH
from tmo.render.revision import runtime_image
from tmo.render.settings import RenderSettings

RUN_AS = 1000
SHARE_DIR = "/tmp/tmo"
DRAIN_DELAY_S = 5
DRAIN_TIMEOUT_S = 25
# Delay + drain + TorchServe's own stop (its supervisor gives it up to 15 s, usually ~1 s).
TERMINATION_GRACE_S = DRAIN_DELAY_S + DRAIN_TIMEOUT_S + 15
GPU_RESOURCE = "nvidia.com/gpu"
# Where the fetch container finds pvc:// models: pvc://CLAIM/path -> PVC_ROOT/CLAIM/path (the
# runtime's fetcher reads TMO_PVC_ROOT).
PVC_ROOT = "/mnt/pvc"
# Where the fetch container sees spec.model.credentialsSecretRef as files (a GCS service-account
# key must be a file; the fetcher reads TMO_CREDENTIALS_DIR). Its keys are also environment
# variables (AWS_*, HF_TOKEN, MLFLOW_*), which is how those SDKs read them.
CREDENTIALS_DIR = "/var/run/tmo/credentials"
# The fetch container's one-line verdict on failure (which URI, what went wrong), read by the
# operator from the pod's status. kubelet mounts this file writable even under a read-only root
# filesystem; the fetcher finds it through TMO_TERMINATION_MESSAGE_PATH.
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
# Where the fetch container sees spec.model.hfCacheClaim: a Hugging Face Hub cache, read offline.
HF_CACHE_DIR = "/mnt/hf-cache"
# The gateway is a small asyncio proxy: it needs little, and must never be starved by the model.
GATEWAY_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "256Mi"},
}
FETCH_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _env(obj: dict[str, Any], revision: str, settings: RenderSettings) -> list[dict[str, Any]]:
    meta = obj["metadata"]
    return [
        {"name": "TMO_MODEL_NAME", "value": meta["name"]},
        {"name": "TMO_NAMESPACE", "value": meta["namespace"]},
        {"name": "TMO_REVISION", "value": revision},
        {"name": "TMO_MANIFEST", "value": f"{MOUNT_PATH}/model.yaml"},
        {"name": "TMO_MODEL_STORE", "value": MODEL_STORE},
        {"name": "TMO_TORCHSERVE_CONFIG", "value": f"{MOUNT_PATH}/config.properties"},
        {
            "name": "TMO_TORCHSERVE_URL",
            "value": f"http://127.0.0.1:{settings.torchserve_inference_port}",
        },
        {
            "name": "TMO_TORCHSERVE_MANAGEMENT_URL",
            "value": f"http://127.0.0.1:{settings.torchserve_management_port}",
        },
        # Short, writable temp paths: TorchServe's AF_UNIX sockets must stay under 107 chars.
        {"name": "TMPDIR", "value": "/tmp"},
        {"name": "TEMP", "value": "/tmp"},
        {"name": "HOME", "value": "/tmp"},
        # Where the torchserve and gateway containers leave each other memory figures and the
        # drain mark (tmo_runtime.podshare): on the shared /tmp emptyDir.
        {"name": "TMO_SHARE_DIR", "value": SHARE_DIR},
        # On SIGTERM the gateway stays up (not ready) for the delay while the endpoints drop
        # the pod, then finishes what it admitted within the timeout; TorchServe outlives both.
        {"name": "TMO_GATEWAY_DRAIN_DELAY", "value": str(DRAIN_DELAY_S)},
        {"name": "TMO_GATEWAY_DRAIN_TIMEOUT", "value": str(DRAIN_TIMEOUT_S)},
    ]


def _mounts(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": "config", "mountPath": MOUNT_PATH, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        *extra,
    ]


def _credentials_secret(spec: dict[str, Any]) -> str | None:
    ref = (spec.get("model") or {}).get("credentialsSecretRef")
    return str(ref["name"]) if ref and ref.get("name") else None


def _credentials_env(spec: dict[str, Any]) -> list[dict[str, Any]]:
    secret = _credentials_secret(spec)
    return [{"secretRef": {"name": secret}}] if secret else []


def credentials_volume(
    spec: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The credentials Secret as read-only files for the fetch container only (0440 to the pod's
    group: the containers run as a non-root user in fsGroup)."""
    secret = _credentials_secret(spec)
    if not secret:
        return [], []
    volume = {"name": "model-credentials", "secret": {"secretName": secret, "defaultMode": 0o440}}
    mount = {"name": "model-credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True}
    return [volume], [mount]


def model_source_volume(
    spec: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The volumes, fetch-container mounts and env a model source needs from the pod.

    pvc://CLAIM/path: the claim read-only, and just the URI's path in it (subPath) mounted where
    the fetcher looks. hf:// with hfCacheClaim: the Hub cache read-only, offline (air-gapped).
    """
    model = spec.get("model") or {}
    uri = str(model.get("uri", ""))
    if uri.lower().startswith("hf://"):
        # The Hub's usage reporting is off in every case: a model pod phones home for nothing.
        env = [{"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"}]
        claim = model.get("hfCacheClaim")
        if not claim:
            return [], [], env
        volume = {
            "name": "model-source",
            "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
        }
        mount = {"name": "model-source", "mountPath": HF_CACHE_DIR, "readOnly": True}
        env += [
            {"name": "HF_HUB_CACHE", "value": HF_CACHE_DIR},
            {"name": "HF_HUB_OFFLINE", "value": "1"},
        ]
        return [volume], [mount], env
    if not uri.lower().startswith("pvc://"):
        return [], [], []
    claim, _, sub = uri[len("pvc://") :].partition("/")
    sub = posixpath.normpath(sub.strip("/")) if sub.strip("/") else ""
    volume = {
        "name": "model-source",
        "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
    }
    pvc_mount: dict[str, Any] = {"name": "model-source", "readOnly": True}
    if sub and not sub.startswith(".."):
        pvc_mount |= {"mountPath": f"{PVC_ROOT}/{claim}/{sub}", "subPath": sub}
    else:  # the fetcher refuses a path that leaves the claim, with the URI in its message
        pvc_mount["mountPath"] = f"{PVC_ROOT}/{claim}"
    return [volume], [pvc_mount], []


def _token_env(spec: dict[str, Any]) -> list[dict[str, Any]]:
    ref = (spec.get("auth") or {}).get("tokenSecretRef")
    if not ref or not ref.get("name"):
        return []
    key = ref.get("key") or "token"
    return [
        {
            "name": "TMO_AUTH_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": key}},
        }
    ]


def model_resources(spec: dict[str, Any]) -> dict[str, Any]:
    """Spec resources for the torchserve container; a GPU request is also its limit (k8s rule)."""
    resources: dict[str, Any] = {
        k: dict(v)
        for k, v in (spec.get("resources") or {}).items()
        if v and k in ("requests", "limits")
    }
    gpus = resources.get("requests", {}).get(GPU_RESOURCE) or resources.get("limits", {}).get(
        GPU_RESOURCE
    )
    if gpus:
        resources.setdefault("limits", {})[GPU_RESOURCE] = gpus
        resources.setdefault("requests", {})[GPU_RESOURCE] = gpus
    return resources


def gpu_count(spec: dict[str, Any]) -> int:
    return int(str(model_resources(spec).get("limits", {}).get(GPU_RESOURCE, 0)))


def _probe(path: str, settings: RenderSettings, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def render_pod_template(
    obj: dict[str, Any], revision: str, settings: RenderSettings
) -> dict[str, Any]:
    name = obj["metadata"]["name"]
    spec = obj["spec"]
    image = runtime_image(spec, settings)
    env = _env(obj, revision, settings)
    labels = {**names.revision_labels(name, revision), **names.pod_selector(name)}
    source_volumes, source_mounts, source_env = model_source_volume(spec)
    credential_volumes, credential_mounts = credentials_volume(spec)
    fetch = {
        "name": "fetch",
        "image": image,
        # The runtime's pod entry points (tmo_runtime.pod): fetch, verify sha256, package a .mar.
        "command": ["python", "-m", "tmo_runtime", "fetch"],
        "args": ["--manifest", f"{MOUNT_PATH}/model.yaml", "--model-store", MODEL_STORE],
        "env": [
            *env,
            {"name": "TMO_PVC_ROOT", "value": PVC_ROOT},
            {"name": "TMO_CREDENTIALS_DIR", "value": CREDENTIALS_DIR},
            *source_env,
            {"name": "TMO_TERMINATION_MESSAGE_PATH", "value": TERMINATION_MESSAGE_PATH},
        ],
        "envFrom": _credentials_env(spec),
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        # The file when the fetcher wrote it; the log's tail when it died before it could.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": FETCH_RESOURCES,
        "securityContext": container_security_context(),
        "volumeMounts": _mounts(
            {"name": "model-store", "mountPath": MODEL_STORE}, *source_mounts, *credential_mounts
        ),
    }
    torchserve = {
        "name": "torchserve",
        "image": image,
        # TorchServe under TMO's supervisor (tmo_runtime.supervisor): it reports this
        # container's memory to the gateway and keeps TorchServe up until the gateway drained.
        # Token auth is off in config.properties: every TorchServe port is on loopback.
        "command": ["python", "-m", "tmo_runtime", "torchserve"],
        "args": [
            "--config",
            f"{MOUNT_PATH}/config.properties",
            "--log4j",
            f"{MOUNT_PATH}/log4j2.xml",
            "--model-store",
            MODEL_STORE,
        ],
        "env": env,
        "resources": model_resources(spec),
        "securityContext": container_security_context(),
        "volumeMounts": _mounts(
            {"name": "model-store", "mountPath": MODEL_STORE, "readOnly": True}
        ),
    }
    gateway = {
        "name": "gateway",
        "image": image,
        "command": ["python", "-m", "tmo_runtime", "gateway"],
        "args": ["--manifest", f"{MOUNT_PATH}/model.yaml"],
        "env": [
            *env,
            {"name": "TMO_GATEWAY_PORT", "value": str(settings.http_port)},
            {"name": "TMO_GATEWAY_METRICS_PORT", "value": str(settings.metrics_port)},
            *_token_env(spec),
        ],
        "ports": [
            {"name": "http", "containerPort": settings.http_port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": settings.metrics_port, "protocol": "TCP"},
        ],
        # Ready only when TorchServe has the model loaded (the gateway asks it on loopback) and
        # the gateway is not draining; 503 takes the pod out of the Service before shutdown.
        "readinessProbe": _probe("/readyz", settings, period=5, failures=3),
        "livenessProbe": _probe("/livez", settings, period=10, failures=6),
        # Model loading can take minutes (8k-context LED, LLaMA): liveness waits for startup.
        "startupProbe": _probe("/livez", settings, period=5, failures=120),
        "resources": GATEWAY_RESOURCES,
        "securityContext": container_security_context(),
        "volumeMounts": _mounts(),
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "initContainers": [fetch],
        "containers": [torchserve, gateway],
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        "volumes": [
            {"name": "config", "configMap": {"name": names.config_map_name(name, revision)}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "model-store", "emptyDir": {}},
            *source_volumes,
            *credential_volumes,
        ],
    }
    if gpu_count(spec):
        # GPU nodes are commonly tainted; tolerate only the GPU taint.
        pod_spec["tolerations"] = [
            {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {
        "metadata": {
            "labels": labels,
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(settings.metrics_port),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": pod_spec,
    }


def render_deployment(
    obj: dict[str, Any], revision: str, settings: RenderSettings, replicas: int | None
) -> dict[str, Any]:
    """`replicas=None` leaves the count to the autoscaler (KEDA's HPA owns spec.replicas)."""
    name = obj["metadata"]["name"]
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {names.LABEL_MODEL: name, names.LABEL_REVISION: revision}},
        "progressDeadlineSeconds": settings.progress_deadline_seconds,
        "revisionHistoryLimit": 2,
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
        },
        "template": render_pod_template(obj, revision, settings),
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": names.metadata(
            obj,
            names.deployment_name(name, revision),
            {
                **names.revision_labels(name, revision),
                names.LABEL_COMPONENT: names.COMPONENT_MODEL_SERVER,
            },
        ),
        "spec": spec,
    }
