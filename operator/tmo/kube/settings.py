"""The operator's settings: flags, each with an environment variable default (12-factor)."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field

from tmo.render import RenderSettings


@dataclass(frozen=True)
class OperatorSettings:
    render: RenderSettings = field(default_factory=RenderSettings)
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    log_format: str = "plain"
    kubeconfig: str | None = None
    field_manager: str = "tmo-operator"
    # A full pass over every model: repairs drift (a deleted child), writes nothing when idle.
    resync_seconds: float = 300.0
    # Retry after a failure or a Stalled problem that may clear by itself (a Secret appearing).
    retry_initial_seconds: float = 2.0
    retry_max_seconds: float = 120.0
    # How long "is KEDA / the Prometheus Operator installed" is cached.
    addon_check_seconds: float = 30.0
    # Models reconciled at once: bounds the API server load of a mass apply.
    concurrency: int = 16
    stats_file: str | None = None
    liveness_endpoint: str | None = None
    metrics_port: int | None = None  # the operator's own /metrics (tmo.kube.metrics)
    # Whether --prometheus-url (TMO_PROMETHEUS_URL) was given: Rollout analysis needs it. Without
    # it the ScaledObjects still name the Prometheus Operator's usual in-cluster address.
    prometheus_configured: bool = True
    # Leader election on a Lease: replicas > 1 stand by instead of writing twice.
    leader_elect: bool = False
    leader_election_namespace: str | None = None  # None: the pod's own namespace
    leader_election_name: str = "tmo-operator"
    lease_duration_seconds: int = 15
    lease_renew_deadline_seconds: float = 10.0
    lease_retry_seconds: float = 2.0


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = OperatorSettings()
    r = d.render
    a = parser.add_argument
    a(
        "--kubeconfig",
        default=_env("KUBECONFIG", "") or None,
        help="kubeconfig (env KUBECONFIG); in-cluster config when unset",
    )
    a(
        "--namespace",
        dest="namespaces",
        action="append",
        default=None,  # flags replace TMO_NAMESPACES rather than add to it
        help="watch only this namespace (repeatable; env TMO_NAMESPACES, comma-separated); "
        "default: all namespaces",
    )
    a(
        "--runtime-image",
        default=_env("TMO_RUNTIME_IMAGE", r.runtime_image),
        help="default model server image (env TMO_RUNTIME_IMAGE)",
    )
    a(
        "--prometheus-url",
        default=_env("TMO_PROMETHEUS_URL", ""),
        help="Prometheus that KEDA queries for tmo_inflight_requests and that Rollouts query "
        "for analysis (env TMO_PROMETHEUS_URL); without it Rollouts are Stalled and "
        f"ScaledObjects use {r.prometheus_url}",
    )
    a(
        "--progress-deadline-seconds",
        type=int,
        default=int(_env("TMO_PROGRESS_DEADLINE_SECONDS", str(r.progress_deadline_seconds))),
        help="a revision not Available by then is Stalled (env TMO_PROGRESS_DEADLINE_SECONDS)",
    )
    a(
        "--alert-for",
        default=_env("TMO_ALERT_FOR", r.alert_for),
        help="how long a latency or error-rate condition holds before TMO's alert fires "
        "(env TMO_ALERT_FOR; Prometheus duration)",
    )
    a(
        "--alert-window",
        default=_env("TMO_ALERT_WINDOW", r.alert_window),
        help="rate() window of TMO's latency and error-rate alerts (env TMO_ALERT_WINDOW)",
    )
    a(
        "--log-format",
        choices=("plain", "full", "json"),
        default=_env("TMO_LOG_FORMAT", "plain"),
        help="log format (env TMO_LOG_FORMAT)",
    )
    a(
        "--resync-seconds",
        type=float,
        default=float(_env("TMO_RESYNC_SECONDS", str(d.resync_seconds))),
        help="period of the full re-check of every model (env TMO_RESYNC_SECONDS)",
    )
    a(
        "--retry-initial-seconds",
        type=float,
        default=float(_env("TMO_RETRY_INITIAL_SECONDS", str(d.retry_initial_seconds))),
        help="first retry delay after a failure; doubles up to --retry-max-seconds",
    )
    a(
        "--retry-max-seconds",
        type=float,
        default=float(_env("TMO_RETRY_MAX_SECONDS", str(d.retry_max_seconds))),
        help="longest retry delay (env TMO_RETRY_MAX_SECONDS)",
    )
    a(
        "--addon-check-seconds",
        type=float,
        default=float(_env("TMO_ADDON_CHECK_SECONDS", str(d.addon_check_seconds))),
        help="how often to re-check whether KEDA / Prometheus Operator / Gateway API are installed",
    )
    a(
        "--concurrency",
        type=int,
        default=int(_env("TMO_CONCURRENCY", str(d.concurrency))),
        help="models reconciled at the same time (env TMO_CONCURRENCY)",
    )
    a(
        "--liveness",
        dest="liveness_endpoint",
        default=_env("TMO_LIVENESS", "") or None,
        help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz",
    )
    a(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=_env("TMO_LEADER_ELECT", "false").lower() in ("1", "true", "yes"),
        help="hold a coordination.k8s.io Lease before reconciling, so several replicas are "
        "safe: one leads, the others stand by (env TMO_LEADER_ELECT)",
    )
    a(
        "--leader-election-namespace",
        default=_env("TMO_LEADER_ELECTION_NAMESPACE", "") or None,
        help="namespace of the Lease (env TMO_LEADER_ELECTION_NAMESPACE); default: "
        "$POD_NAMESPACE, else the in-cluster namespace, else default",
    )
    a(
        "--leader-election-name",
        default=_env("TMO_LEADER_ELECTION_NAME", d.leader_election_name),
        help="name of the Lease (env TMO_LEADER_ELECTION_NAME)",
    )
    a(
        "--lease-duration-seconds",
        type=int,
        default=int(_env("TMO_LEASE_DURATION_SECONDS", str(d.lease_duration_seconds))),
        help="a standby takes over this long after the leader's last renewal (failover time)",
    )
    a(
        "--lease-renew-deadline-seconds",
        type=float,
        default=float(
            _env("TMO_LEASE_RENEW_DEADLINE_SECONDS", str(d.lease_renew_deadline_seconds))
        ),
        help="the leader exits when it could not renew for this long (< lease duration)",
    )
    a(
        "--lease-retry-seconds",
        type=float,
        default=float(_env("TMO_LEASE_RETRY_SECONDS", str(d.lease_retry_seconds))),
        help="how often the leader renews and a standby tries to take the Lease",
    )
    a(
        "--metrics-port",
        type=int,
        default=int(_env("TMO_METRICS_PORT", "0")) or None,
        help="serve the operator's Prometheus metrics on this port at /metrics, on every replica "
        "(tmo_operator_leader tells the leader); env TMO_METRICS_PORT; default: off",
    )
    a(
        "--stats-file",
        default=_env("TMO_STATS_FILE", "") or None,
        help="write request/reconcile counters as JSON to this file (benchmarks)",
    )


_PROM_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def from_args(args: argparse.Namespace) -> OperatorSettings:
    from tmo.kube.leader import LeaseTiming

    try:
        LeaseTiming(
            args.lease_duration_seconds, args.lease_renew_deadline_seconds, args.lease_retry_seconds
        )
    except ValueError as e:
        raise SystemExit(f"tmo operator: {e}") from None
    for flag, value in (("--alert-for", args.alert_for), ("--alert-window", args.alert_window)):
        if not _PROM_DURATION.match(value):
            raise SystemExit(
                f"tmo operator: {flag} {value!r} is not a Prometheus duration (30s, 2m)"
            )
    return OperatorSettings(
        render=RenderSettings(
            runtime_image=args.runtime_image,
            prometheus_url=args.prometheus_url or RenderSettings.prometheus_url,
            progress_deadline_seconds=args.progress_deadline_seconds,
            alert_for=args.alert_for,
            alert_window=args.alert_window,
        ),
        namespaces=tuple(
            args.namespaces or [n for n in _env("TMO_NAMESPACES", "").split(",") if n]
        ),
        log_format=args.log_format,
        kubeconfig=args.kubeconfig,
        resync_seconds=args.resync_seconds,
        retry_initial_seconds=args.retry_initial_seconds,
        retry_max_seconds=args.retry_max_seconds,
        addon_check_seconds=args.addon_check_seconds,
        concurrency=args.concurrency,
        stats_file=args.stats_file,
        liveness_endpoint=args.liveness_endpoint,
        metrics_port=args.metrics_port,
        prometheus_configured=bool(args.prometheus_url),
        leader_elect=args.leader_elect,
        leader_election_namespace=args.leader_election_namespace,
        leader_election_name=args.leader_election_name,
        lease_duration_seconds=args.lease_duration_seconds,
        lease_renew_deadline_seconds=args.lease_renew_deadline_seconds,
        lease_retry_seconds=args.lease_retry_seconds,
    )
