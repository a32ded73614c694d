"""kopf wiring: watches feed the Reconciler; nothing here decides anything.

Only event-watching handlers are used: they keep no state in the watched objects (no finalizers,
no last-handled annotations), so the operator never writes to a user's object outside its status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

import kopf

from tmo.kube import metrics
from tmo.kube.client import Connection, KubeClient
from tmo.kube.reconcile import Reconciler
from tmo.kube.settings import OperatorSettings
from tmo.render import names

log = logging.getLogger("tmo.operator")


def _plain(body: Any) -> dict[str, Any]:
    # kopf's Body is a read-only view; the reconciler keeps plain dicts.
    return dict(json.loads(json.dumps(dict(body))))


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    s.peering.standalone = True  # one replica; no KopfPeering objects to create or watch
    s.posting.enabled = False  # Events are posted deliberately, on transitions only
    s.scanning.disabled = True  # no CRD/namespace watching: less RBAC
    s.watching.server_timeout = 600
    return s


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    holder: dict[str, Any] = {}

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(**_: Any) -> None:
        client = KubeClient(Connection.load(settings.kubeconfig), settings.field_manager)
        reconciler = Reconciler(settings, client)
        holder["reconciler"] = reconciler
        metrics.attach(reconciler)
        holder["tasks"] = [asyncio.create_task(reconciler.resync_forever())]
        if settings.stats_file:
            holder["tasks"].append(
                asyncio.create_task(_write_stats(reconciler, settings.stats_file))
            )
        log.info(
            "tmo operator started: namespaces=%s image=%s prometheus=%s",
            ",".join(settings.namespaces) or "*",
            settings.render.runtime_image,
            settings.render.prometheus_url,
        )

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        for task in holder.get("tasks", []):
            task.cancel()
        reconciler: Reconciler | None = holder.get("reconciler")
        metrics.attach(None)
        if reconciler is not None:
            if settings.stats_file:
                _dump(reconciler, settings.stats_file)
            await reconciler.close()

    @kopf.on.event(names.GROUP, names.VERSION, names.PLURAL, registry=registry)
    # async: kopf runs sync handlers in threads, and the reconciler schedules asyncio tasks.
    async def on_model(type: str, body: kopf.Body, **_: Any) -> None:
        holder["reconciler"].on_model_event(type, _plain(body))

    @kopf.on.event(names.GROUP, names.VERSION, "rollouts", registry=registry)
    async def on_rollout(type: str, body: kopf.Body, **_: Any) -> None:
        obj = _plain(body)
        obj.setdefault("apiVersion", names.API_VERSION)
        obj.setdefault("kind", "Rollout")
        holder["reconciler"].on_rollout_event(type, obj)

    @kopf.on.event(
        "apps",
        "v1",
        "deployments",
        labels={"app.kubernetes.io/managed-by": names.MANAGED_BY},
        registry=registry,
    )
    async def on_deployment(type: str, body: kopf.Body, **_: Any) -> None:
        obj = _plain(body)
        obj.setdefault("apiVersion", "apps/v1")
        obj.setdefault("kind", "Deployment")
        holder["reconciler"].on_child_event(type, obj)

    # Model pods: why a revision cannot start (a failed fetch, an image that cannot be pulled)
    # is only in pod status. The reconciler acts only when that changes (on_pod_event).
    @kopf.on.event(
        "",
        "v1",
        "pods",
        labels={"app.kubernetes.io/managed-by": names.MANAGED_BY},
        registry=registry,
    )
    async def on_pod(type: str, body: kopf.Body, **_: Any) -> None:
        holder["reconciler"].on_pod_event(type, _plain(body))

    return registry


def _dump(reconciler: Reconciler, path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(reconciler.stats_snapshot(), f)
    os.replace(tmp, path)


async def _write_stats(reconciler: Reconciler, path: str) -> None:
    while True:
        _dump(reconciler, path)
        await asyncio.sleep(0.5)
