"""The reconcile shell: read, call the pure core (render, status), apply, write status, post Events.

Level-triggered and idempotent: every trigger (a model event, a child Deployment event, a retry
timer, the periodic resync) recomputes the desired state from scratch. Writes happen only when
something differs: children whose rendered hash is already applied are skipped, and the status
is patched only when it changed, so an idle resync writes nothing.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tmo.api.rollout import RolloutSpec, RolloutStatus
from tmo.kube.client import ApiError, KubeClient
from tmo.kube.drift import fingerprint
from tmo.kube.metrics import CANARY_SECONDS, RECONCILE_SECONDS, canary_ending
from tmo.kube.pod_failures import REASONS as POD_FAILURE_REASONS
from tmo.kube.pod_failures import PodFailure, first_failure, pod_failure
from tmo.kube.rollouts import (
    RolloutIndex,
    deployments_by_revision,
    key_of,
    merge_patch,
    parse_rollout,
    ready_replicas,
    same_status,
    spec_replicas,
    target_of,
)
from tmo.kube.settings import OperatorSettings
from tmo.kube.status import (
    AUTOSCALING_READY,
    MONITORING_READY,
    READY,
    STALLED,
    DeploymentState,
    Observation,
    Problem,
    RolloutView,
    compute_status,
    status_changed,
)
from tmo.render import names
from tmo.render.children import (
    AUTOSCALING_GROUP,
    MONITORING_GROUP,
    ROUTING_GROUP,
    api_group,
    render_children,
)
from tmo.render.revision import stable_hash
from tmo.render.service import model_url
from tmo.render.source import describe_error
from tmo.render.traffic import Serving
from tmo.rollout import (
    LIVE,
    AnalysisResult,
    Decision,
    TrafficPlan,
    analysis_due,
    canary_look,
    held_decision,
    next_state,
    parse_action,
)
from tmo.rollout import Observation as RolloutObservation
from tmo.rollout import Problem as RolloutProblem

log = logging.getLogger("tmo.operator")

Key = tuple[str, str]  # (namespace, name)
# Each optional add-on: the group/version TMO writes and the kinds it needs from it.
ADDON_VERSIONS = {
    AUTOSCALING_GROUP: "keda.sh/v1alpha1",
    MONITORING_GROUP: "monitoring.coreos.com/v1",
    ROUTING_GROUP: "gateway.networking.k8s.io/v1",
}
ADDON_KINDS = {
    AUTOSCALING_GROUP: frozenset({"ScaledObject"}),
    MONITORING_GROUP: frozenset({"ServiceMonitor", "PrometheusRule"}),
    ROUTING_GROUP: frozenset({"HTTPRoute"}),
}


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Applied:
    digest: str  # "" = known absent
    at: float
    # tmo.kube.drift.fingerprint of the live child as TMO left it; "" = not known yet.
    fingerprint: str = ""


@dataclass
class _KeyState:
    running: bool = False
    dirty: bool = False
    attempts: int = 0
    timer: asyncio.TimerHandle | None = None
    # A Rollout's next due moment (a pause ends, an analysis run is due).
    wake: asyncio.TimerHandle | None = None
    wake_after: float | None = None
    own_status_rv: str | None = None


@dataclass
class Stats:
    reconciles: int = 0
    failures: int = 0
    status_writes: int = 0
    child_writes: int = 0
    events: int = 0
    rollout_status_writes: int = 0
    analysis_runs: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Reconciler:
    def __init__(
        self,
        settings: OperatorSettings,
        client: KubeClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.client = client
        self.clock = clock
        self.bodies: dict[Key, dict[str, Any]] = {}
        self.states: dict[Key, _KeyState] = {}
        self.applied: dict[tuple[str, str, str, str], _Applied] = {}
        self.addons: dict[str, tuple[bool, float]] = {}
        self.secrets_seen: dict[tuple[str, str], float] = {}
        # Pods that cannot start, per model, as the pod watch reports them: healthy pods are
        # not kept, and a model is reconciled only when this changes, not on every pod event.
        self.pod_failures: dict[Key, dict[str, PodFailure]] = {}
        self.rollouts = RolloutIndex()
        # resourceVersions of the operator's own Rollout status writes: their echoes are no news.
        self.rollout_status_rv: dict[Key, str] = {}
        self._prometheus: Any = None
        self.stats = Stats()
        self._sem = asyncio.Semaphore(settings.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._instance = socket.gethostname()

    # --- triggers ---------------------------------------------------------------------------

    def on_model_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if event_type == "DELETED":
            self.bodies.pop(key, None)
            state = self.states.pop(key, None)
            if state and state.timer:
                state.timer.cancel()
            return  # children go by ownerReferences (garbage collection)
        known = self.bodies.get(key)
        if known is not None and _older(body, known):
            return  # a late event from before our own status write: we hold newer
        self.bodies[key] = body
        state = self.states.setdefault(key, _KeyState())
        if state.own_status_rv and body["metadata"].get("resourceVersion") == state.own_status_rv:
            return  # the echo of our own status write: nothing new to act on
        self.trigger(key)

    def on_rollout_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        """A Rollout changed: reconcile the model it targets (the model's pass decides both)."""
        key = key_of(body)
        target = target_of(body)
        if event_type == "DELETED":
            self.rollouts.pop(key)
            self.rollout_status_rv.pop(key, None)
        else:
            known = self.rollouts.bodies.get(key)
            if known is not None and _older(body, known):
                return
            previous_target = self.rollouts.put(body)
            if previous_target:
                self.trigger((key[0], previous_target))
            if body["metadata"].get("resourceVersion") == self.rollout_status_rv.get(key):
                return  # the echo of our own status write
        if target:
            self.trigger((key[0], target))

    def on_child_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        model = (meta.get("labels") or {}).get(names.LABEL_MODEL)
        if not model:
            return
        if event_type == "DELETED":
            # Forget it was applied: the next reconcile re-creates it if it is still wanted.
            self.applied.pop(
                (body["apiVersion"], body["kind"], meta["namespace"], meta["name"]), None
            )
        key = (meta["namespace"], model)
        if key in self.bodies:
            self.trigger(key)

    def on_pod_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        """A model pod changed: reconcile its model only when whether (or why) it cannot start
        changed, so pods starting, becoming ready or restarting with the same failure cost
        nothing."""
        meta = body["metadata"]
        model = (meta.get("labels") or {}).get(names.LABEL_MODEL)
        if not model:
            return
        key = (meta["namespace"], model)
        failure = None if event_type == "DELETED" else pod_failure(body)
        known = self.pod_failures.get(key, {})
        if known.get(meta["name"]) == failure:
            return
        if failure is None:
            known.pop(meta["name"], None)
        else:
            known[meta["name"]] = failure
        if known:
            self.pod_failures[key] = known
        else:
            self.pod_failures.pop(key, None)
        if key in self.bodies:
            self.trigger(key)

    def trigger(self, key: Key) -> None:
        state = self.states.setdefault(key, _KeyState())
        if state.running:
            state.dirty = True
            return
        state.running = True
        self._spawn(self._run(key, state))

    def trigger_all(self) -> None:
        for key in list(self.bodies):
            self.trigger(key)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: Key, state: _KeyState) -> None:
        try:
            while True:
                state.dirty = False
                await self._reconcile_guarded(key, state)
                if not state.dirty:
                    break
        finally:
            state.running = False

    def _schedule_retry(self, key: Key, state: _KeyState) -> float:
        """Exponential backoff, capped: a stuck model costs one request per retry_max_seconds."""
        delay = float(
            min(
                self.settings.retry_max_seconds,
                self.settings.retry_initial_seconds * (2 ** min(state.attempts, 20)),
            )
        )
        state.attempts += 1
        if state.timer:
            state.timer.cancel()
        state.timer = asyncio.get_running_loop().call_later(delay, self.trigger, key)
        return delay

    def _clear_retry(self, state: _KeyState) -> None:
        state.attempts = 0
        if state.timer:
            state.timer.cancel()
            state.timer = None

    async def _reconcile_guarded(self, key: Key, state: _KeyState) -> None:
        body = self.bodies.get(key)
        if body is None:
            if self.rollouts.targeting(*key):
                async with self._sem:
                    try:
                        await self._orphan_rollouts(key)
                    except (ApiError, httpx.HTTPError) as e:
                        log.warning("rollouts of missing model %s/%s: %s", *key, e)
            return
        async with self._sem:
            self.stats.reconciles += 1
            try:
                with RECONCILE_SECONDS.labels("TransformerModel").time():
                    retry = await self.reconcile(body, state)
            except (ApiError, httpx.HTTPError) as e:
                self.stats.failures += 1
                delay = self._schedule_retry(key, state)
                log.warning("reconcile %s/%s failed (retry in %.0fs): %s", *key, delay, e)
                return
            except Exception:  # a bug must not kill the operator or hot-loop: back off
                self.stats.failures += 1
                delay = self._schedule_retry(key, state)
                log.exception("reconcile %s/%s crashed (retry in %.0fs)", *key, delay)
                return
        if state.wake_after is not None:
            if state.wake:
                state.wake.cancel()
            state.wake = asyncio.get_running_loop().call_later(state.wake_after, self.trigger, key)
            state.wake_after = None
        if retry:
            self._schedule_retry(key, state)
        else:
            self._clear_retry(state)

    # --- the reconcile itself ---------------------------------------------------------------

    async def reconcile(self, body: dict[str, Any], state: _KeyState) -> bool:
        """One pass over a model. Returns True when it should be retried later (Stalled)."""
        meta = body["metadata"]
        ns, name, generation = meta["namespace"], meta["name"], int(meta.get("generation", 1))
        previous = body.get("status") or {}
        addons = {group: await self._served(group) for group in ADDON_VERSIONS}
        try:
            rendered = render_children(
                body, self.settings.render, autoscaler_owns_replicas=addons[AUTOSCALING_GROUP]
            )
        except ValueError as e:
            # Admission (CRD schema + CEL) should have refused it; say why instead of crashing.
            # What already runs is left alone, and the status still counts it.
            running = await self.client.list(
                "apps/v1", "Deployment", ns, f"{names.LABEL_MODEL}={name}"
            )
            obs = Observation(
                generation=generation,
                revision=str(previous.get("revision", "")),
                url=model_url(body_with_ns(body), self.settings.render),
                problem=Problem("InvalidSpec", _short(describe_error(e))),
                replicas=sum(int((d.get("status") or {}).get("replicas", 0)) for d in running),
                ready_replicas=sum(
                    int((d.get("status") or {}).get("readyReplicas", 0)) for d in running
                ),
                autoscaling_installed=addons[AUTOSCALING_GROUP],
                monitoring_installed=addons[MONITORING_GROUP],
            )
            await self._write_status(body, state, obs)
            return False

        owner = {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "name": name,
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        problem = await self._missing_secrets(ns, rendered_spec(body))
        deployments = await self.client.list(
            "apps/v1", "Deployment", ns, f"{names.LABEL_MODEL}={name}"
        )
        # A Rollout governs this model: its state machine decides which revisions run and how
        # traffic splits; the children are rendered to match (tmo.rollout, tmo.render.traffic).
        targeting = self.rollouts.targeting(ns, name)
        governing = targeting[0] if targeting else None
        for other in targeting[1:]:
            await self._conflict(other, governing)
        decision: Decision | None = None
        serving: Serving | None = None
        if governing is not None and problem is None:
            decision = await self._decide(body, governing, rendered.revision, deployments)
            if decision.traffic is not None:
                t = decision.traffic
                router = ((governing.get("spec") or {}).get("traffic") or {}).get(
                    "router", "gatewayAPI"
                )
                serving = Serving(t.stable, t.canary, t.weight, t.canary_replicas, router)
                rendered = render_children(
                    body,
                    self.settings.render,
                    autoscaler_owns_replicas=addons[AUTOSCALING_GROUP],
                    serving=serving,
                )
        current_name = names.deployment_name(name, rendered.revision)
        current = next((d for d in deployments if d["metadata"]["name"] == current_name), None)
        old = [d for d in deployments if d["metadata"]["name"] != current_name]
        # A new revision whose Secret is missing could never start: leave the serving one alone.
        if problem is None or current is not None:
            # Never reconciled before: its children cannot exist yet, so skip the read-before-
            # apply that saves writes on restarts (a mass apply of new models halves its reads).
            new_model = not previous.get("revision") and not deployments
            for obj in rendered.objects:
                if not addons.get(api_group(obj), True):
                    continue
                listed = current if obj["kind"] == "Deployment" else None
                live = await self._apply(
                    obj, owner, read_first=not new_model, live=listed, body=body
                )
                if obj["kind"] == "Deployment" and live is not None:
                    current = live
            is_canary = serving is not None and rendered.revision == serving.canary
            if current is not None and is_canary and addons[AUTOSCALING_GROUP]:
                assert serving is not None
                current = await self._scale_canary(current, serving.canary_replicas) or current
            elif current is not None and addons[AUTOSCALING_GROUP] and not self._seeded(current):
                current = await self._seed_replicas(body, current, old) or current
            if addons[ROUTING_GROUP] and not rendered.of_kind("HTTPRoute"):
                await self._ensure_absent("gateway.networking.k8s.io/v1", "HTTPRoute", ns, name)

        if governing is not None and decision is not None:
            # Written before anything is deleted: a restart resumes from this status, so a
            # revision is never deleted while the status still names it stable or canary.
            await self._write_rollout_status(governing, decision, state)
        if serving is not None and governing is not None and decision is not None:
            keep = {serving.stable, serving.canary}
            by_revision = deployments_by_revision(deployments)
            gone = [d for r, d in by_revision.items() if r not in keep]
            if gone:
                await self._retire(body, gone)
            own = (
                current
                if current is not None and current["metadata"]["name"] == current_name
                else None
            )
            stable = own if rendered.revision == serving.stable else None
            stable = stable or by_revision.get(serving.stable)
            canary = own if serving.canary and rendered.revision == serving.canary else None
            running = [d for d in (stable, canary) if d is not None]
            obs = Observation(
                generation=generation,
                revision=rendered.revision,
                url=rendered.url,
                current=DeploymentState.from_object(stable) if stable is not None else None,
                replicas=sum(int((d.get("status") or {}).get("replicas", 0)) for d in running),
                ready_replicas=sum(
                    int((d.get("status") or {}).get("readyReplicas", 0)) for d in running
                ),
                rollout=_rollout_view(governing, decision, rendered.revision),
                autoscaling_installed=addons[AUTOSCALING_GROUP],
                monitoring_installed=addons[MONITORING_GROUP],
            )
            await self._write_status(body, state, obs)
            return False

        # A revision whose pods cannot start (a failed fetch, an image that cannot be pulled)
        # is Stalled; the old revision keeps serving, as it is retired only once this one is
        # complete. No retry timer: the pod watch reports when that changes.
        retry = problem is not None
        if problem is None and current is not None:
            problem = await self._pod_problem(ns, name, rendered.revision, previous)
        current_state = DeploymentState.from_object(current) if current is not None else None
        if old and current_state is not None and current_state.complete and problem is None:
            await self._retire(body, old)
            old = []
        obs = Observation(
            generation=generation,
            revision=rendered.revision,
            url=rendered.url,
            current=current_state,
            old_revisions=tuple(
                sorted(
                    (d["metadata"].get("labels") or {}).get(names.LABEL_REVISION, "?") for d in old
                )
            ),
            old_replicas=sum(int((d.get("status") or {}).get("replicas", 0)) for d in old),
            old_ready=sum(int((d.get("status") or {}).get("readyReplicas", 0)) for d in old),
            problem=problem,
            autoscaling_installed=addons[AUTOSCALING_GROUP],
            monitoring_installed=addons[MONITORING_GROUP],
        )
        await self._write_status(body, state, obs)
        return retry

    # --- rollouts ---------------------------------------------------------------------------

    async def _decide(
        self,
        model: dict[str, Any],
        rollout: dict[str, Any],
        desired: str,
        deployments: list[dict[str, Any]],
    ) -> Decision:
        """Observe what the Rollout's state machine needs (an analysis run when one is due),
        and ask it for the next state."""
        parsed = parse_rollout(rollout)
        status = parsed.status
        by_revision = deployments_by_revision(deployments)
        generation = int(rollout["metadata"].get("generation", 1))
        now = datetime.datetime.now(datetime.UTC)
        problem = parsed.problem
        spec = parsed.spec
        if spec is not None and problem is None:
            problem = self._rollout_problem(spec, model)
        analysis: AnalysisResult | None = None
        if spec is not None and problem is None and analysis_due(spec, status, now):
            analysis, problem = await self._analyse(spec, status, model, now)
        stable_dep = by_revision.get(status.stable_revision or "")
        canary_dep = by_revision.get(status.canary_revision or "")
        canary_failure = None
        if status.canary_revision and status.phase in LIVE:
            meta = model["metadata"]
            failing = await self._pod_problem(
                meta["namespace"], meta["name"], status.canary_revision, {}
            )
            canary_failure = failing.message if failing is not None else None
        obs = RolloutObservation(
            now=now,
            desired=desired,
            canary_ready=ready_replicas(canary_dep),
            stable_replicas=max(spec_replicas(stable_dep), 1),
            analysis=analysis,
            action=parse_action(rollout["metadata"].get("annotations")),
            problem=problem,
            # A stable revision that is also the desired one is (re)created by this pass.
            stable_exists=stable_dep is not None or status.stable_revision == desired,
            canary_failure=canary_failure,
        )
        if spec is None:
            # Unparseable: hold what runs (nothing changes) and say why.
            assert problem is not None
            held = held_decision(status, problem, generation, now)
            if not status.stable_revision:
                return held
            live = status.phase in LIVE and status.canary_revision
            traffic = TrafficPlan(
                status.stable_revision,
                status.canary_revision if live else None,
                status.canary_weight or 0,
                spec_replicas(canary_dep),
            )
            return Decision(held.status, traffic, held.events)
        return next_state(spec, status, obs, generation)

    def _rollout_problem(self, spec: RolloutSpec, model: dict[str, Any]) -> RolloutProblem | None:
        from tmo.analysis import UnsupportedJudge, judge_for

        if not self.settings.prometheus_configured:
            return RolloutProblem(
                "PrometheusNotConfigured",
                "analysis needs Prometheus: start the operator with --prometheus-url URL "
                "(or the environment variable TMO_PROMETHEUS_URL; Helm value prometheusUrl)",
            )
        if spec.traffic.router == "gatewayAPI" and not (model.get("spec") or {}).get("route"):
            return RolloutProblem(
                "RouteMissing",
                f"traffic.router gatewayAPI weights the model's HTTPRoute, but TransformerModel "
                f"{model['metadata']['name']} has no spec.route: add one, or set "
                "traffic.router: replicas",
            )
        try:
            judge_for(spec.analysis)
        except UnsupportedJudge as e:
            return RolloutProblem("UnsupportedJudge", str(e))
        return None

    async def _analyse(
        self,
        spec: RolloutSpec,
        status: RolloutStatus,
        model: dict[str, Any],
        now: datetime.datetime,
    ) -> tuple[AnalysisResult | None, RolloutProblem | None]:
        from tmo.analysis import AnalysisContext, PrometheusClient, run_analysis

        if self._prometheus is None:
            self._prometheus = PrometheusClient(self.settings.render.prometheus_url)
        meta = model["metadata"]
        age, look = canary_look(status, now)
        ctx = AnalysisContext(
            namespace=meta["namespace"],
            model=meta["name"],
            canary=status.canary_revision or "",
            stable=status.stable_revision or "",
            monitoring=dict((model.get("spec") or {}).get("monitoring") or {}),
            canary_age_seconds=age,
            look=look,
        )
        try:
            run = await run_analysis(spec.analysis, ctx, self._prometheus, now_rfc3339())
        except ValueError as e:  # a query template the operator cannot fill in
            return None, RolloutProblem("InvalidQuery", str(e))
        self.stats.analysis_runs += 1
        log.info(
            "analysis of %s/%s canary %s: %s: %s",
            meta["namespace"],
            meta["name"],
            ctx.canary,
            run.verdict,
            run.summary,
        )
        return (
            AnalysisResult(
                revision=status.canary_revision or "",
                verdict=run.verdict,
                summary=run.summary,
                measurements=list(run.measurements),
                requests=run.requests,
            ),
            None,
        )

    async def _write_rollout_status(
        self, rollout: dict[str, Any], decision: Decision, state: _KeyState
    ) -> None:
        meta = rollout["metadata"]
        key = key_of(rollout)
        previous = rollout.get("status") or {}
        if decision.requeue_after is not None:
            state.wake_after = decision.requeue_after
        if not same_status(decision.status, previous):
            ending = canary_ending(previous, decision.status, datetime.datetime.now(datetime.UTC))
            if ending is not None:
                CANARY_SECONDS.labels(ending[0]).observe(ending[1])
            result = await self.client.patch_status(
                names.API_VERSION,
                "Rollout",
                meta["namespace"],
                meta["name"],
                merge_patch(previous, decision.status),
            )
            self.stats.status_writes += 1
            self.stats.rollout_status_writes += 1
            if result is not None:
                self.rollout_status_rv[key] = str(result["metadata"].get("resourceVersion"))
                if key in self.rollouts.bodies:
                    self.rollouts.put(result)
        for e in decision.events:
            log.info("Rollout %s/%s: %s: %s", meta["namespace"], meta["name"], e.reason, e.message)
            await self.event(rollout, e.type, e.reason, e.message)

    async def _conflict(self, rollout: dict[str, Any], governing: dict[str, Any] | None) -> None:
        parsed = parse_rollout(rollout)
        generation = int(rollout["metadata"].get("generation", 1))
        owner = governing["metadata"]["name"] if governing is not None else "?"
        problem = RolloutProblem(
            "TargetConflict",
            f"Rollout {owner} already governs TransformerModel {target_of(rollout)}: one Rollout "
            "per model; delete this one or point it at another model",
        )
        decision = held_decision(
            parsed.status, problem, generation, datetime.datetime.now(datetime.UTC)
        )
        await self._write_rollout_status(rollout, decision, _KeyState())

    async def _orphan_rollouts(self, key: Key) -> None:
        """Rollouts whose target does not exist: Stalled TargetNotFound until it appears."""
        if await self.client.get(names.API_VERSION, names.KIND, *key) is not None:
            return  # it exists; its own event is on the way
        for rollout in self.rollouts.targeting(*key):
            parsed = parse_rollout(rollout)
            generation = int(rollout["metadata"].get("generation", 1))
            problem = RolloutProblem(
                "TargetNotFound",
                f"TransformerModel {key[0]}/{key[1]} (spec.targetRef) does not exist; the "
                "Rollout starts working once it does",
            )
            now = datetime.datetime.now(datetime.UTC)
            await self._write_rollout_status(
                rollout, held_decision(parsed.status, problem, generation, now), _KeyState()
            )

    async def _scale_canary(
        self, deployment: dict[str, Any], replicas: int
    ) -> dict[str, Any] | None:
        """The canary's size, under a field manager of its own: with KEDA installed the main
        apply leaves spec.replicas out (the HPA owns it once the canary is promoted), and a
        field the main manager dropped would be reset to 1 by Kubernetes."""
        if spec_replicas(deployment) == replicas and self._managed_by(
            deployment, self._canary_manager
        ):
            return None
        return await self._apply_replicas(deployment, replicas, self._canary_manager)

    @property
    def _canary_manager(self) -> str:
        return f"{self.settings.field_manager}-canary-replicas"

    @staticmethod
    def _managed_by(deployment: dict[str, Any], manager: str) -> bool:
        return any(
            m.get("manager") == manager for m in deployment["metadata"].get("managedFields") or []
        )

    async def _write_status(self, body: dict[str, Any], state: _KeyState, obs: Observation) -> None:
        meta = body["metadata"]
        previous = body.get("status") or {}
        status = compute_status(obs, previous, now_rfc3339())
        if not status_changed(status, previous):
            return
        result = await self.client.patch_status(
            names.API_VERSION, names.KIND, meta["namespace"], meta["name"], status
        )
        self.stats.status_writes += 1
        if result is not None:
            state.own_status_rv = result["metadata"].get("resourceVersion")
            key = (meta["namespace"], meta["name"])
            if key in self.bodies:
                self.bodies[key] = result
        await self._announce(body, previous, status)

    # --- children ---------------------------------------------------------------------------

    async def _apply(
        self,
        obj: dict[str, Any],
        owner: dict[str, Any],
        read_first: bool = True,
        live: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Apply unless this exact rendering is known to be applied and unedited since.

        `live`: the child as just listed (Deployments are listed on every pass), which spares a
        read. Returns the live object when it was read or written, None when skipped."""
        # The owner's uid is part of it: a model deleted and re-created under the same name
        # gets its children re-created even though they render the same.
        digest = stable_hash([obj, owner["uid"]])
        meta = obj["metadata"]
        meta["ownerReferences"] = [owner]
        meta.setdefault("annotations", {})[names.ANNOTATION_APPLIED_HASH] = digest
        key = (obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        cached = self.applied.get(key)
        fresh = cached is not None and self.clock() - cached.at < self.settings.resync_seconds * 0.9
        if live is None and cached is not None and fresh and cached.digest == digest:
            return None
        if live is None and read_first and (cached is None or not fresh):
            live = await self.client.get(
                obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]
            )
        if live is not None and _annotation(live, names.ANNOTATION_APPLIED_HASH) == digest:
            seen = fingerprint(obj["kind"], live)
            known = cached.fingerprint if cached is not None and cached.digest == digest else ""
            if not known or seen == known:
                # As TMO left it (or first seen since a restart: taken as the baseline).
                self.applied[key] = _Applied(digest, self.clock(), seen)
                return live
            edited: str | None = seen
        else:
            edited = None
        try:
            result = await self.client.apply(obj)
        except ApiError as e:
            if e.status == 404:  # the CRD vanished since the add-on check
                self.addons.pop(api_group(obj), None)
                return None
            raise
        self.stats.child_writes += 1
        after = fingerprint(obj["kind"], result)
        self.applied[key] = _Applied(digest, self.clock(), after)
        # Only when the apply undid something: an edit of fields TMO does not set (say,
        # `kubectl rollout restart`'s annotation) survives it and is nobody's mistake.
        if edited is not None and after != edited and body is not None:
            log.info("%s %s/%s was edited outside TMO: restored", obj["kind"], *key[2:])
            await self.event(
                body,
                "Warning",
                "ChildReverted",
                f"{obj['kind']} {meta['name']} was edited outside TMO and is restored from the "
                "TransformerModel: change the TransformerModel instead",
            )
        return result

    def _seeded(self, deployment: dict[str, Any]) -> bool:
        """Whether the starting replicas were applied already: once per Deployment, ever, so a
        restarted operator never resets what the HPA has scaled to.

        Once the HPA (or `kubectl scale`) writes spec.replicas through the scale subresource, the
        seed manager owns no field any more and the API server drops its managedFields entry:
        spec.replicas owned by a manager that is not TMO's counts as seeded too."""
        return self._managed_by(deployment, self._seed_manager) or any(
            not str(m.get("manager", "")).startswith(self.settings.field_manager)
            and "f:replicas" in ((m.get("fieldsV1") or {}).get("f:spec") or {})
            for m in deployment["metadata"].get("managedFields") or []
        )

    @property
    def _seed_manager(self) -> str:
        return f"{self.settings.field_manager}-initial-replicas"

    async def _seed_replicas(
        self, body: dict[str, Any], deployment: dict[str, Any], old: list[dict[str, Any]]
    ) -> dict[str, Any] | None:
        """Start a new revision at minReplicas (at least 1, so a revision is proven to start
        even when it may scale to zero later), or at the old revision's size if larger.

        With KEDA installed its HPA owns spec.replicas, so the main apply leaves it out. The
        starting count is applied once under a separate field manager: later applies by the
        operator then neither reset it nor fight the HPA, which takes the field over.
        """
        scaling = (body.get("spec") or {}).get("scaling") or {}
        serving = max((int((d.get("spec") or {}).get("replicas", 0)) for d in old), default=0)
        replicas = max(int(scaling.get("minReplicas", 1)), serving, 1)
        return await self._apply_replicas(deployment, replicas, self._seed_manager)

    async def _apply_replicas(
        self, deployment: dict[str, Any], replicas: int, manager: str
    ) -> dict[str, Any]:
        """spec.replicas alone, under `manager` (not the main field manager: see callers)."""
        meta = deployment["metadata"]
        result = await self.client.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                "spec": {"replicas": replicas},
            },
            field_manager=manager,
        )
        self.stats.child_writes += 1
        return result

    async def _ensure_absent(self, api_version: str, kind: str, ns: str, name: str) -> None:
        key = (api_version, kind, ns, name)
        cached = self.applied.get(key)
        if cached is not None and cached.digest == "":
            return
        if cached is None and await self.client.get(api_version, kind, ns, name) is None:
            self.applied[key] = _Applied("", self.clock())
            return
        await self.client.delete(api_version, kind, ns, name)
        self.stats.child_writes += 1
        self.applied[key] = _Applied("", self.clock())

    async def _retire(self, body: dict[str, Any], old: list[dict[str, Any]]) -> None:
        """The new revision is Available: delete older revisions (Deployment and its config)."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        for d in old:
            revision = (d["metadata"].get("labels") or {}).get(names.LABEL_REVISION, "")
            await self.client.delete("apps/v1", "Deployment", ns, d["metadata"]["name"])
            if revision:
                await self.client.delete(
                    "v1", "ConfigMap", ns, names.config_map_name(name, revision)
                )
                # A Rollout's per-revision Service (an HTTPRoute backend), where there is one.
                await self.client.delete(
                    "v1", "Service", ns, names.revision_service_name(name, revision)
                )
            self.stats.child_writes += 3
            for k in [k for k in self.applied if k[2] == ns and revision and revision in k[3]]:
                self.applied.pop(k, None)
            await self.event(
                body, "Normal", "RevisionRetired", f"revision {revision} replaced and deleted"
            )

    # --- reads ------------------------------------------------------------------------------

    async def _served(self, group: str) -> bool:
        cached = self.addons.get(group)
        if cached is not None and self.clock() - cached[1] < self.settings.addon_check_seconds:
            return cached[0]
        served = await self.client.served(ADDON_VERSIONS[group], ADDON_KINDS[group])
        self.addons[group] = (served, self.clock())
        return served

    async def _missing_secrets(self, ns: str, spec: dict[str, Any]) -> Problem | None:
        wanted = []
        creds = (spec.get("model") or {}).get("credentialsSecretRef") or {}
        if creds.get("name"):
            wanted.append(("model.credentialsSecretRef", creds["name"]))
        token = (spec.get("auth") or {}).get("tokenSecretRef") or {}
        if token.get("name"):
            wanted.append(("auth.tokenSecretRef", token["name"]))
        missing = []
        for field_path, secret in wanted:
            seen = self.secrets_seen.get((ns, secret))
            if seen is not None and self.clock() - seen < self.settings.resync_seconds:
                continue
            # Only existence is checked (get, never list/watch): Secret data is not kept.
            if await self.client.get("v1", "Secret", ns, secret) is None:
                missing.append(f"Secret {ns}/{secret} ({field_path}) not found")
            else:
                self.secrets_seen[(ns, secret)] = self.clock()
        if not missing:
            return None
        return Problem("SecretNotFound", "; ".join(missing) + "; retrying until it exists")

    async def _pod_problem(
        self, ns: str, name: str, revision: str, previous: dict[str, Any]
    ) -> Problem | None:
        """Why `revision`'s pods cannot start, if the pod watch says some cannot (or the status
        still says so). Then the pods are listed: the live list is the truth, so a DELETED event
        missed during a watch gap leaves nothing stale. Healthy models list no pods."""
        key = (ns, name)
        known = self.pod_failures.get(key, {})
        stalled = next(
            (c for c in previous.get("conditions") or [] if c.get("type") == STALLED), None
        )
        said = stalled is not None and stalled.get("reason") in POD_FAILURE_REASONS
        if not said and not any(f.revision == revision for f in known.values()):
            return None
        pods = await self.client.list(
            "v1", "Pod", ns, f"{names.LABEL_MODEL}={name},{names.LABEL_REVISION}={revision}"
        )
        fresh = {f.pod: f for f in map(pod_failure, pods) if f is not None}
        kept = {pod: f for pod, f in known.items() if f.revision != revision} | fresh
        if kept:
            self.pod_failures[key] = kept
        else:
            self.pod_failures.pop(key, None)
        failure = first_failure(fresh.values())
        return Problem(failure.reason, failure.message) if failure is not None else None

    # --- events -----------------------------------------------------------------------------

    async def _announce(
        self, body: dict[str, Any], previous: dict[str, Any], status: dict[str, Any]
    ) -> None:
        """Events for what a person must know: transitions only, never on an idle pass."""
        before = {c["type"]: c for c in previous.get("conditions") or []}
        after = {c["type"]: c for c in status["conditions"]}
        if previous.get("revision") != status["revision"] and status["revision"]:
            was = previous.get("revision")
            msg = f"rolling out revision {status['revision']}" + (f" (was {was})" if was else "")
            await self.event(body, "Normal", "NewRevision", msg)
        stalled, was_stalled = after.get(STALLED), before.get(STALLED)
        # Once per distinct reason; for pods that cannot start also per distinct message (the
        # message says which URI or image fails, and it is stable while the pod keeps failing).
        if stalled and (
            not was_stalled
            or was_stalled.get("reason") != stalled["reason"]
            or (
                stalled["reason"] in POD_FAILURE_REASONS
                and was_stalled.get("message") != stalled["message"]
            )
        ):
            await self.event(body, "Warning", stalled["reason"], stalled["message"])
        ready, was_ready = after[READY], before.get(READY)
        if ready["status"] == "True" and (not was_ready or was_ready.get("status") != "True"):
            await self.event(body, "Normal", "Ready", ready["message"])
        for type_ in (AUTOSCALING_READY, MONITORING_READY):
            c, was = after[type_], before.get(type_)
            if c["status"] == "False" and (not was or was.get("status") != "False"):
                await self.event(body, "Warning", c["reason"], c["message"])

    async def event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        now = now_rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": body.get("apiVersion", names.API_VERSION),
                "kind": body.get("kind", names.KIND),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": _short(message),
            "source": {"component": self.settings.field_manager},
            "reportingComponent": self.settings.field_manager,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.client.create(event)
            self.stats.events += 1
        except (ApiError, httpx.HTTPError) as e:  # an Event is best effort, never a failure
            log.warning(
                "cannot post event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], e
            )

    async def close(self) -> None:
        if self._prometheus is not None:
            await self._prometheus.close()
        await self.client.close()

    # --- background loops -------------------------------------------------------------------

    async def resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            self.trigger_all()

    def stats_snapshot(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "models": len(self.bodies),
            "requests": dict(self.client.requests),
            "request_total": sum(self.client.requests.values()),
            "writes": self.client.writes,
            "writes_by_namespace": dict(self.client.writes_by_namespace),
            "requests_by_namespace": dict(self.client.requests_by_namespace),
            "reconciles": self.stats.reconciles,
            "failures": self.stats.failures,
            "status_writes": self.stats.status_writes,
            "child_writes": self.stats.child_writes,
            "events": self.stats.events,
            "rollouts": len(self.rollouts.bodies),
            "rollout_status_writes": self.stats.rollout_status_writes,
            "analysis_runs": self.stats.analysis_runs,
        }


def _annotation(obj: dict[str, Any], key: str) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(key)


def _older(incoming: dict[str, Any], known: dict[str, Any]) -> bool:
    """Whether `incoming` predates `known`. resourceVersions are opaque by contract but are
    etcd revisions in practice; anything that is not a plain integer is treated as newer."""
    a = str(incoming["metadata"].get("resourceVersion", ""))
    b = str(known["metadata"].get("resourceVersion", ""))
    same_object = incoming["metadata"].get("uid") == known["metadata"].get("uid")
    return same_object and a.isdigit() and b.isdigit() and int(a) < int(b)


def body_with_ns(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "metadata": {**body["metadata"]}}


def rendered_spec(body: dict[str, Any]) -> dict[str, Any]:
    return dict(body.get("spec") or {})


def _short(text: str, limit: int = 1024) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _rollout_view(rollout: dict[str, Any], decision: Decision, revision: str) -> RolloutView:
    status = decision.status
    phase = str(status.get("phase") or "")
    # The Rollout's own message changes on every analysis run; the model's status says only
    # what changes per step (so it is not rewritten each interval), or the final word.
    message = (
        f"{phase}, canary at {status.get('canaryWeight', 0)}% (kubectl get tmro for details)"
        if phase in LIVE
        else str(status.get("message") or "")
    )
    return RolloutView(
        name=rollout["metadata"]["name"],
        phase=phase,
        message=message,
        stable=str(status.get("stableRevision") or ""),
        canary_live=status.get("phase") in LIVE and status.get("canaryRevision") == revision,
    )
