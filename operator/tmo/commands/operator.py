"""`tmo operator`: run the TMO operator (kopf) against the current kubeconfig or in-cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging

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
    asyncio.run(
        kopf.operator(
            registry=build_registry(settings),
            settings=kopf_settings(settings),
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=settings.liveness_endpoint,
        )
    )
    return 0
