"""TorchServe configuration as pure functions.

The reconciler renders the same text into the model pod's ConfigMap, so everything here takes
plain typed values (no API models, no I/O) and returns strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

# TorchServe's management API must never leave the pod (ShellTorch, CVE-2023-43654): every
# listener binds loopback and the gateway is the only port a client reaches.
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ModelEntry:
    """One model TorchServe loads at start-up from the model store."""

    name: str
    url: str  # file or directory name inside the model store (`NAME.mar` or `NAME`)
    workers: int = 1
    batch_size: int = 8
    max_batch_delay_ms: int = 20
    response_timeout_s: int = 120
    version: str = "1.0"


def request_limit_for(gateway_body_limit: int) -> int:
    """TorchServe's max_request_size for a gateway cap: base64 adds a third, JSON a little."""
    return gateway_body_limit * 4 // 3 + (1 << 20)


@dataclass(frozen=True)
class TorchServeSettings:
    model_store: str
    models: Sequence[ModelEntry]
    inference_port: int = 8080
    management_port: int = 8081
    metrics_port: int = 8082
    # TorchServe binds gRPC 7070/7071 whatever else is configured: give every instance its own.
    grpc_inference_port: int = 7070
    grpc_management_port: int = 7071
    # Queue in front of each model's workers; beyond it TorchServe answers 503.
    job_queue_size: int = 100
    token_auth: bool = True
    token_expiration_min: int = 60 * 24 * 365
    netty_threads: int = 0  # 0 = TorchServe's default (number of cores)
    # The gateway forwards images and audio as base64 inside JSON (4/3 of the bytes): room for
    # a body at the gateway's own 64 MiB cap.
    max_request_size: int = request_limit_for(64 * 1024 * 1024)
    max_response_size: int = 64 * 1024 * 1024
    log4j_config_path: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def allowed_urls_for(model_store: str) -> str:
    """Only the model store itself may be a model source (no http/s3 registration)."""
    return "file://" + re.escape(model_store.rstrip("/")) + "/.*"


def _escape_value(value: str) -> str:
    # java.util.Properties treats backslash as an escape: double it so regexes survive.
    return value.replace("\\", "\\\\")


def models_json(models: Sequence[ModelEntry]) -> str:
    doc = {
        m.name: {
            m.version: {
                "defaultVersion": True,
                "marName": m.url,
                "minWorkers": m.workers,
                "maxWorkers": m.workers,
                "batchSize": m.batch_size,
                "maxBatchDelay": m.max_batch_delay_ms,
                "responseTimeout": m.response_timeout_s,
            }
        }
        for m in models
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def render_config_properties(settings: TorchServeSettings) -> str:
    """config.properties text for one TorchServe instance."""
    s = settings
    props: dict[str, str] = {
        "inference_address": f"http://{LOOPBACK}:{s.inference_port}",
        "management_address": f"http://{LOOPBACK}:{s.management_port}",
        "metrics_address": f"http://{LOOPBACK}:{s.metrics_port}",
        "grpc_inference_address": LOOPBACK,
        "grpc_management_address": LOOPBACK,
        "grpc_inference_port": str(s.grpc_inference_port),
        "grpc_management_port": str(s.grpc_management_port),
        "model_store": s.model_store,
        "load_models": ",".join(m.url for m in s.models) if s.models else "",
        "models": models_json(s.models),
        "allowed_urls": allowed_urls_for(s.model_store),
        # Registering models over the management API is how ShellTorch got in: keep it off.
        "enable_model_api": "false",
        # Environment variables must not be able to override anything set here.
        "enable_envvars_config": "false",
        # Dependencies are baked into the image, never pip-installed from a model archive.
        "install_py_dep_per_model": "false",
        "disable_token_authorization": "false" if s.token_auth else "true",
        "token_expiration_min": str(s.token_expiration_min),
        "metrics_mode": "prometheus",
        "job_queue_size": str(s.job_queue_size),
        "max_request_size": str(s.max_request_size),
        "max_response_size": str(s.max_response_size),
        "default_workers_per_model": "1",
    }
    if s.netty_threads > 0:
        props["number_of_netty_threads"] = str(s.netty_threads)
    if s.log4j_config_path:
        props["vmargs"] = f"-Dlog4j.configurationFile=file://{s.log4j_config_path}"
    props.update(s.extra)
    lines = ["# Rendered by TMO (tmo_runtime.ts_config); edits are overwritten."]
    lines += [f"{k}={_escape_value(v)}" for k, v in props.items()]
    return "\n".join(lines) + "\n"


def render_log4j2_xml(level: str = "INFO") -> str:
    """INFO to stdout; access and metrics logs at WARN so they do not grow with traffic."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Rendered by TMO: TorchServe's default is DEBUG to files, which grows without bound. -->
<Configuration>
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="%d{{ISO8601}} [%-5p] %t %c - %m%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="WARN" additivity="false">
      <AppenderRef ref="STDOUT"/>
    </Logger>
    <Logger name="MODEL_LOG" level="{level}" additivity="false">
      <AppenderRef ref="STDOUT"/>
    </Logger>
    <Logger name="TS_METRICS" level="WARN" additivity="false">
      <AppenderRef ref="STDOUT"/>
    </Logger>
    <Logger name="MODEL_METRICS" level="WARN" additivity="false">
      <AppenderRef ref="STDOUT"/>
    </Logger>
    <!-- WorkerThread logs several lines per request at INFO. -->
    <Logger name="org.pytorch.serve.wlm.WorkerThread" level="WARN" additivity="false">
      <AppenderRef ref="STDOUT"/>
    </Logger>
    <Logger name="org.apache" level="WARN"/>
    <Logger name="io.netty" level="WARN"/>
    <Logger name="org.pytorch.serve" level="{level}" additivity="false">
      <AppenderRef ref="STDOUT"/>
    </Logger>
    <Root level="{level}">
      <AppenderRef ref="STDOUT"/>
    </Root>
  </Loggers>
</Configuration>
"""


@dataclass(frozen=True)
class HandlerSettings:
    """What the TMO handler inside TorchServe needs to know about its model."""

    task: str
    precision: str = "fp32"
    attention: str = "sdpa"
    max_sequence_length: int = 512
    max_new_tokens: int = 256
    max_chunks: int = 64
    model_path: str | None = None  # None: the archive's own directory


def render_model_config_yaml(entry: ModelEntry, handler: HandlerSettings) -> str:
    """model-config.yaml inside the archive; the `handler` block reaches the handler."""
    doc = {
        "minWorkers": entry.workers,
        "maxWorkers": entry.workers,
        "batchSize": entry.batch_size,
        "maxBatchDelay": entry.max_batch_delay_ms,
        "responseTimeout": entry.response_timeout_s,
        "handler": {
            "task": handler.task,
            "precision": handler.precision,
            "attention": handler.attention,
            "max_sequence_length": handler.max_sequence_length,
            "max_new_tokens": handler.max_new_tokens,
            "max_chunks": handler.max_chunks,
            **({"model_path": handler.model_path} if handler.model_path else {}),
        },
    }
    # JSON is valid YAML and needs no YAML library at render time.
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
