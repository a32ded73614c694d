"""The per-revision ConfigMap: TorchServe's config.properties and the manifest the pod reads."""

from __future__ import annotations

from typing import Any

import yaml
from tmo_runtime.ts_config import (
    ModelEntry,
    TorchServeSettings,
    render_config_properties,
    render_log4j2_xml,
)

from tmo.render import names
from tmo.render.revision import POD_AFFECTING
from tmo.render.settings import RenderSettings

MOUNT_PATH = "/etc/tmo"
MODEL_STORE = "/models"


def torchserve_settings(
    name: str, spec: dict[str, Any], settings: RenderSettings
) -> TorchServeSettings:
    runtime = spec["runtime"]
    entry = ModelEntry(
        name=name,
        url=f"{name}.mar",
        workers=int(runtime["workers"]),
        batch_size=int(runtime["batchSize"]),
        max_batch_delay_ms=int(runtime["maxBatchDelayMs"]),
        response_timeout_s=int(runtime["responseTimeoutSeconds"]),
    )
    return TorchServeSettings(
        model_store=MODEL_STORE,
        models=[entry],
        inference_port=settings.torchserve_inference_port,
        management_port=settings.torchserve_management_port,
        metrics_port=settings.torchserve_metrics_port,
        grpc_inference_port=settings.torchserve_grpc_inference_port,
        grpc_management_port=settings.torchserve_grpc_management_port,
        # Every TorchServe listener is on loopback; the gateway checks the bearer token.
        token_auth=False,
        log4j_config_path=f"{MOUNT_PATH}/log4j2.xml",
    )


def config_properties(name: str, spec: dict[str, Any], settings: RenderSettings) -> str:
    """The runtime's own renderer: `tmo serve` and the pod get the same TorchServe settings."""
    return str(render_config_properties(torchserve_settings(name, spec, settings)))


def model_manifest(obj: dict[str, Any], revision: str) -> str:
    """The pod's view of its TransformerModel: the fetcher and gateway read the spec the
    operator read. Only pod-affecting fields, so that scaling or alert changes do not touch a
    revision's ConfigMap."""
    spec = obj["spec"]
    manifest = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"]},
        "spec": {k: spec[k] for k in POD_AFFECTING if k in spec},
        "status": {"revision": revision},
    }
    return yaml.safe_dump(manifest, sort_keys=False)


def render_config_map(
    obj: dict[str, Any], revision: str, settings: RenderSettings
) -> dict[str, Any]:
    name = obj["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": names.metadata(
            obj, names.config_map_name(name, revision), names.revision_labels(name, revision)
        ),
        "data": {
            "config.properties": config_properties(name, obj["spec"], settings),
            "log4j2.xml": render_log4j2_xml("INFO"),
            "model.yaml": model_manifest(obj, revision),
        },
    }
