"""`tmo operator`: run the TMO operator (kopf) against the current kubeconfig or in-cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable

from tmo.kube import settings as operator_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    operator_settings.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import os

    import kopf

    from tmo.kube.handlers import build_registry, kopf_settings

    settings = operator_settings.from_args(args)
    if settings.kubeconfig:
        os.environ["KUBECONFIG"] = settings.kubeconfig  # kopf's login reads it
    log_format = {
        "plain": kopf.LogFormat.PLAIN,
        "full": kopf.LogFormat.FULL,
        "json": kopf.LogFormat.JSON,
    }[settings.log_format]
    kopf.configure(log_format=log_format, verbose=False)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # kopf logs every handled watch event at INFO; the reconciler logs what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    namespaces = list(settings.namespaces)
    if settings.metrics_port:
        from tmo.kube import metrics

        metrics.serve(settings.metrics_port)

    async def operate() -> None:
        await kopf.operator(
            registry=build_registry(settings),
            settings=kopf_settings(settings),
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=settings.liveness_endpoint,
        )

    if not settings.leader_elect:
        from tmo.kube import metrics

        metrics.set_leader(True)
        asyncio.run(operate())
        return 0
    return asyncio.run(_elected(settings, operate))


async def _elected(
    settings: operator_settings.OperatorSettings, operate: Callable[[], Awaitable[None]]
) -> int:
    from tmo.kube import election, leader
    from tmo.kube.client import Connection, KubeClient

    client = KubeClient(Connection.load(settings.kubeconfig), settings.field_manager)
    elector = election.Elector(
        client,
        settings.leader_election_namespace or election.default_namespace(),
        settings.leader_election_name,
        election.default_identity(),
        leader.LeaseTiming(
            settings.lease_duration_seconds,
            settings.lease_renew_deadline_seconds,
            settings.lease_retry_seconds,
        ),
    )
    try:
        return await election.run_as_leader(elector, operate, settings.liveness_endpoint)
    finally:
        await client.close()
