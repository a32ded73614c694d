"""`tmo rollout status|report|promote|abort|retry NAME`: watch, draw and steer canary Rollouts.

Also a kubectl plugin (`kubectl tmo rollout promote NAME`) through the `kubectl-tmo` entry point.

Actions never touch the spec (no Git drift): they write the `tmo.dev/rollout-action` annotation,
`{"action": "promote", "id": "<uuid4 hex>", "by": "<user>", "at": "<RFC 3339>"}`, with a JSON
merge patch of metadata.annotations only. The operator acts once per id and records it in
`status.lastAction`; the command waits for that acknowledgement unless told not to.

The formatting is pure (`format_status`, `format_steps`, `format_progress`, `format_gates`):
plain dicts in, text out. `report` lives in `tmo.commands.rollout_report`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from tmo.api.rollout import ACTION_ANNOTATION, KIND
from tmo.kube.client import ApiError, Connection, KubeClient

API_VERSION: Final = "tmo.dev/v1alpha1"
FIELD_MANAGER: Final = "tmo-cli"
SA_NAMESPACE_FILE: Final = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

ACTIONS: Final[dict[str, str]] = {
    "promote": "passes the current `pause: {}` approval gate (or skips the current step)",
    "abort": "rolls back to the stable revision now (all traffic on stable, canary removed)",
    "retry": "starts the canary again from step 0 (after a rollback or abort)",
}
RECENT_MEASUREMENTS: Final = 5  # per gate in `status`
PROGRESS_WIDTH: Final = 12
SETTLED_OK: Final = frozenset({"Idle", "Succeeded"})
SETTLED_FAILED: Final = frozenset({"RolledBack", "Aborted"})
AWAITING_APPROVAL: Final = "AwaitingApproval"

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # timeout, or a watched rollout that ended rolled back / aborted
EXIT_REFUSED: Final = 2  # no such Rollout, no access, no cluster


class Refused(Exception):
    """A problem the user has to fix first; the message says which."""


# ---------------------------------------------------------------- arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Show and steer canary Rollouts. Actions are recorded as the tmo.dev/rollout-action "
        "annotation (never the spec, so no Git drift); the operator acts on each once and "
        "records it in status.lastAction. Also runs as `kubectl tmo rollout ...`."
    )
    sub = parser.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)

    status = sub.add_parser(
        "status",
        help="show a Rollout's phase, steps, weights, revisions and analysis",
        description="Show a Rollout's phase, step progress, canary weight, stable and canary "
        "revisions, Ready/Stalled message, latest analysis verdict and measurements, and the "
        "last action. With --watch, print again on every change until the rollout settles: "
        "exit 0 when Idle/Succeeded, 1 when RolledBack/Aborted or on --timeout.",
    )
    _common(status)
    status.add_argument(
        "-w", "--watch", action="store_true", help="keep printing changes until it settles"
    )
    status.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        metavar="S",
        help="with --watch: give up (exit 1) after S seconds (default: wait indefinitely)",
    )

    from tmo.commands import rollout_report
    from tmo.rollout.machine import KEPT_MEASUREMENTS

    report = sub.add_parser(
        "report",
        help="draw a Rollout's weight, gate values and verdicts over time as a PNG",
        description="Draw a Rollout's history as a PNG (for a postmortem or a pull-request "
        "comment): the canary's weight over time (from the Rollout's Events and its status), "
        "and per gate the canary's and the stable revision's values over time with the gate's "
        "max/min and each verdict (Passed green, Failed red X, Inconclusive grey, Error "
        "orange). Prints what it drew. Only what the cluster still has can be drawn: the "
        f"status keeps the newest {KEPT_MEASUREMENTS} measurements (the API allows 64), so "
        "a long canary's early ones are gone, and the API server keeps Events for 1 hour by "
        f"default. Needs matplotlib: {rollout_report.INSTALL_HINT}.",
    )
    _common(report)
    rollout_report.add_arguments(report)

    for action, meaning in ACTIONS.items():
        p = sub.add_parser(
            action,
            help=meaning.split(" (")[0],
            description=f"`{action}` {meaning}. Writes the tmo.dev/rollout-action annotation "
            "(metadata only, no Git drift) and waits until the operator records it in "
            "status.lastAction; exit 1 if it does not acknowledge in time.",
        )
        _common(p)
        p.add_argument(
            "--no-wait",
            action="store_true",
            help="return once the request is written, without waiting for the operator",
        )
        p.add_argument(
            "--timeout",
            type=_seconds,
            default=30.0,
            metavar="S",
            help="how long to wait for the operator to acknowledge (default 30)",
        )


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the Rollout's name")
    p.add_argument(
        "-n",
        "--namespace",
        default=None,
        help="namespace (default: the kubeconfig context's namespace, else 'default')",
    )
    p.add_argument(
        "--kubeconfig",
        default=None,
        metavar="PATH",
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


# ---------------------------------------------------------------- pure parts


def rfc3339(now: datetime) -> str:
    """UTC, second precision, `Z` suffix: 2026-12-01T21:30:00Z."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_action(
    action: str, by: str, now: datetime, action_id: str | None = None
) -> dict[str, str]:
    """The annotation's content; `action_id` defaults to a fresh uuid4 hex."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    return {
        "action": action,
        "id": action_id or uuid.uuid4().hex,
        "by": by,
        "at": rfc3339(now),
    }


def action_patch(record: Mapping[str, str]) -> dict[str, Any]:
    """JSON merge patch that sets the action annotation and nothing else."""
    value = json.dumps(dict(record), separators=(",", ":"))
    return {"metadata": {"annotations": {ACTION_ANNOTATION: value}}}


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _condition(rollout: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for c in _get(rollout, "status", "conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == type_:
            return c
    return None


def _step_label(step: Any) -> str:
    if not isinstance(step, Mapping):
        return "?"
    if step.get("setWeight") is not None:
        return f"setWeight {step['setWeight']}"
    if "pause" in step:
        duration = _get(step, "pause", "duration")
        return f"pause {duration}" if duration else "pause (approval)"
    return "?"


def format_steps(steps: list[Any], current: int | None, phase: str | None) -> str:
    """`[x] setWeight 5  [x] pause 2m  [>] setWeight 25  [ ] pause 5m`.

    [x] done, [>] in progress, [!] where a rollback/abort happened, [ ] not reached.
    """
    if not steps:
        return "(no steps)"
    n = len(steps)
    if phase in ("Succeeded", "Promoting"):
        current_idx = n  # every step done
    elif current is None or phase == "Idle":
        current_idx = -1  # no canary: nothing started
    else:
        current_idx = current
    marks = []
    for i, step in enumerate(steps):
        if current_idx < 0 or i > current_idx:
            mark = " "
        elif i < current_idx:
            mark = "x"
        else:
            mark = "!" if phase in SETTLED_FAILED else ">"
        marks.append(f"[{mark}] {_step_label(step)}")
    return "  ".join(marks)


def _by_metric(measurements: list[Any]) -> dict[str, list[Mapping[str, Any]]]:
    """Measurements grouped by metric, oldest first, metrics in order of first appearance."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for m in measurements:
        if isinstance(m, Mapping):
            grouped.setdefault(str(m.get("metric", "?")), []).append(m)
    return grouped


# Built-in metric -> unit: latencies are milliseconds, the rest fractions shown as percent.
BUILTIN_UNITS: Final[dict[str, str]] = {
    "latencyP50": "ms",
    "latencyP95": "ms",
    "latencyP99": "ms",
    "memoryUtilization": "%",
    "errorRate": "%",
}


def metric_units(spec: Mapping[str, Any]) -> dict[str, str]:
    """Metric name -> unit ("ms", "%" or "") for the gates of a Rollout spec. Without listed
    metrics the gates are the target's thresholds, named after their built-ins."""
    metrics = _get(spec, "analysis", "metrics") or []
    if not metrics:
        return dict(BUILTIN_UNITS)
    return {
        str(m.get("name")): BUILTIN_UNITS.get(str(m.get("builtin")), "")
        for m in metrics
        if isinstance(m, Mapping)
    }


def format_value(value: Any, unit: str = "") -> str:
    """212.345 ms -> "212.3", 0.0123 % -> "1.23"; "-" for no number (the unit goes after)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    if unit == "%":
        return f"{value * 100:.3g}"
    return f"{value:.4g}"


def _series(values: list[Any], unit: str, arrow: str) -> str:
    if unit == "%":  # each value its own sign: 0.2% -> 0.35%
        return arrow.join(f"{format_value(v, unit)}%" if v is not None else "-" for v in values)
    text = arrow.join(format_value(v, unit) for v in values)
    return f"{text} {unit}" if unit else text


def format_gates(
    measurements: list[Any],
    units: Mapping[str, str] | None = None,
    recent: int = RECENT_MEASUREMENTS,
    unicode: bool = False,
) -> list[str]:
    """One line per gate: its last `recent` canary and stable values, oldest first, and the
    newest verdict with its request count and message.

    `  p99-latency  canary 212 -> 230 -> 241 ms  stable 200 -> 203 -> 199 ms  Passed, 1523
    requests - 241 <= 250`; a value that is missing (Error, Inconclusive) shows as "-", and a
    side with no value at all is left out. `(recent: P F P)` follows the verdict when the
    recent verdicts differ."""
    arrow = " \u2192 " if unicode else " -> "
    grouped = _by_metric(measurements)
    if not grouped:
        return []
    width = max(len(name) for name in grouped)
    lines = []
    for name, ms in grouped.items():
        last = ms[-recent:]
        unit = (units or {}).get(name, "")
        text = f"  {name:<{width}}"
        canary = [m.get("value") for m in last]
        stable = [m.get("stableValue") for m in last]
        if any(v is not None for v in canary):
            text += f"  canary {_series(canary, unit, arrow)}"
        if any(v is not None for v in stable):
            text += f"  stable {_series(stable, unit, arrow)}"
        newest = last[-1]
        text += f"  {newest.get('verdict', '?')}"
        verdicts = [str(m.get("verdict", "?")) for m in last]
        if len(set(verdicts)) > 1:
            text += f" (recent: {' '.join(v[:1] for v in verdicts)})"
        if newest.get("requests") is not None:
            text += f", {newest['requests']} requests"
        if newest.get("message"):
            text += f" - {newest['message']}"
        lines.append(text)
    return lines


def _done_steps(n: int, current: Any, phase: str | None) -> int:
    if phase in ("Succeeded", "Promoting"):
        return n
    if not isinstance(current, int) or phase in (None, "Idle"):
        return 0
    return max(0, min(current, n))


def format_progress(
    steps: list[Any],
    current: Any,
    phase: str | None,
    weight: Any,
    width: int = PROGRESS_WIDTH,
    unicode: bool = False,
) -> str:
    """`███████░░░░░ step 3/5, canary 25%` (`[#######-----]` without unicode): the share of
    steps done, where the canary is and its weight."""
    n = len(steps)
    done = _done_steps(n, current, phase)
    filled = round(width * done / n) if n else 0
    if unicode:
        bar = "\u2588" * filled + "\u2591" * (width - filled)
    else:
        bar = "[" + "#" * filled + "-" * (width - filled) + "]"
    pct = f", canary {weight}%" if isinstance(weight, int) else ""
    if not n:
        where = "no steps"
    elif phase == "Succeeded":
        where = f"all {n} steps done, promoted"
    elif phase == "Promoting":
        where = f"all {n} steps done, promoting"
    elif phase in (None, "Idle") or not isinstance(current, int):
        where = "no canary running"
    elif phase in SETTLED_FAILED:
        where = f"{phase} at step {min(current + 1, n)}/{n}{pct}"
    else:
        where = f"step {min(current + 1, n)}/{n}{pct}"
    return f"{bar} {where}"


def _pause_left(step: Any, started: Any, now: datetime | None) -> str:
    duration = _get(step, "pause", "duration")
    if now is None or not duration or not isinstance(started, str):
        return ""
    from tmo.api.common import parse_duration

    try:
        begin = datetime.fromisoformat(started.replace("Z", "+00:00"))
        left = parse_duration(duration) - (now - begin)
    except ValueError:
        return ""
    seconds = max(0, int(left.total_seconds()))
    return f", {seconds // 60}m{seconds % 60:02d}s left"


def format_status(
    rollout: Mapping[str, Any], now: datetime | None = None, unicode: bool = False
) -> str:
    """A Rollout as a few lines for people (`tmo rollout status`).

    `now` (aware) adds the time left in a timed pause; without it the output depends on the
    object alone (the watch loop compares it to spot changes). `unicode` draws the progress bar
    with blocks and the value series with arrows (for a UTF-8 terminal); else plain ASCII."""
    meta = rollout.get("metadata") or {}
    spec = rollout.get("spec") or {}
    status = rollout.get("status") or {}
    name, namespace = meta.get("name", "?"), meta.get("namespace", "")
    phase = status.get("phase")
    steps = _get(spec, "strategy", "canary", "steps") or []
    current = status.get("currentStep")
    lines = [f"Rollout {namespace}/{name} -> TransformerModel {_get(spec, 'targetRef', 'name')}"]

    observed, generation = status.get("observedGeneration"), meta.get("generation")
    phase_line = f"phase:     {phase or 'Unknown (not reconciled yet)'}"
    if spec.get("paused"):
        phase_line += "  (spec.paused: true, held)"
    if observed is not None and generation is not None and observed != generation:
        phase_line += f"  (status is for generation {observed}, spec is at {generation})"
    lines.append(phase_line)

    step_line = f"steps:     {format_steps(list(steps), current, phase)}"
    if isinstance(current, int) and 0 <= current < len(steps) and phase not in SETTLED_OK:
        step_line += f"  (step {current + 1}/{len(steps)}"
        step_line += _pause_left(steps[current], status.get("stepStartedAt"), now) + ")"
    lines.append(step_line)
    weight = status.get("canaryWeight")
    if steps:
        progress = format_progress(list(steps), current, phase, weight, unicode=unicode)
        lines.append(f"progress:  {progress}")

    if isinstance(weight, int):
        lines.append(f"weight:    canary {weight}%, stable {100 - weight}%")
    lines.append(
        f"revisions: stable {status.get('stableRevision') or '-'}, "
        f"canary {status.get('canaryRevision') or '-'}"
    )

    for type_ in ("Ready", "Stalled"):
        c = _condition(rollout, type_)
        if c is None or (type_ == "Stalled" and c.get("status") != "True"):
            continue
        text = f"{type_.lower() + ':':<10} {c.get('status', '?')}"
        if c.get("reason"):
            text += f" ({c['reason']})"
        if c.get("message"):
            text += f": {c['message']}"
        lines.append(text)
    if status.get("message"):
        lines.append(f"message:   {status['message']}")

    analysis = status.get("analysis")
    if isinstance(analysis, Mapping) and (analysis.get("verdict") or analysis.get("measurements")):
        counts = (
            f"passed {analysis.get('passed', 0)}, failed {analysis.get('failed', 0)}, "
            f"inconclusive {analysis.get('inconclusive', 0)}, "
            f"errors {analysis.get('consecutiveErrors', 0)} in a row"
        )
        when = f" at {analysis['lastRunTime']}" if analysis.get("lastRunTime") else ""
        lines.append(f"analysis:  {analysis.get('verdict') or 'no verdict yet'}{when} ({counts})")
        units = metric_units(spec)
        lines += format_gates(list(analysis.get("measurements") or []), units, unicode=unicode)
    else:
        lines.append("analysis:  no measurements yet")

    last = status.get("lastAction")
    if isinstance(last, Mapping):
        text = f"last action: {last.get('action', '?')} by {last.get('by') or '?'}"
        if last.get("requestedAt"):
            text += f" at {last['requestedAt']}"
        text += f", handled {last.get('handledAt', '?')}"
        if last.get("result"):
            text += f": {last['result']}"
        lines.append(text)

    ready = _condition(rollout, "Ready")
    if phase == "Paused" and ready is not None and ready.get("reason") == AWAITING_APPROVAL:
        ns = f" -n {namespace}" if namespace else ""
        lines.append(f"waiting for approval: tmo rollout promote {name}{ns}")
    return "\n".join(lines)


def stdout_is_utf8() -> bool:
    """Whether stdout takes the progress bar's blocks and the arrows (else plain ASCII)."""
    encoding = getattr(sys.stdout, "encoding", None) or ""
    return encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig")


def settled(rollout: Mapping[str, Any]) -> int | None:
    """Exit code once the rollout has settled (0 Idle/Succeeded, 1 RolledBack/Aborted)."""
    phase = _get(rollout, "status", "phase")
    if phase in SETTLED_OK:
        return EXIT_OK
    if phase in SETTLED_FAILED:
        return EXIT_FAILED
    return None


# ---------------------------------------------------------------- cluster access


def default_namespace(kubeconfig: str | None) -> str:
    """The current context's namespace, the ServiceAccount's in a pod, else "default"."""
    context = _current_context(kubeconfig)
    if context is not None:
        return str(context.get("namespace") or "default")
    try:
        with open(SA_NAMESPACE_FILE, encoding="utf-8") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def _current_context(kubeconfig: str | None) -> Mapping[str, Any] | None:
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except Exception:  # no kubeconfig, unreadable, no current context: in-cluster or defaults
        return None
    context = active.get("context") if isinstance(active, Mapping) else None
    return context if isinstance(context, Mapping) else None


async def whoami(client: KubeClient, kubeconfig: str | None) -> str:
    """The user the API server authenticates us as (SelfSubjectReview, no RBAC needed), else
    the kubeconfig's user name."""
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview", "metadata": {}}
    try:
        result = await client.create(review)
    except (ApiError, httpx.HTTPError):
        result = None
    username = _get(result, "status", "userInfo", "username")
    if isinstance(username, str) and username:
        return username
    context = _current_context(kubeconfig)
    return str((context or {}).get("user") or "unknown")


async def _get_rollout(client: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    rollout = await client.get(API_VERSION, KIND, namespace, name)
    if rollout is not None:
        return rollout
    if not await client.served(API_VERSION, frozenset({KIND})):
        raise Refused(
            f"rollout {namespace}/{name} not found: this cluster does not serve {KIND} "
            f"({API_VERSION}); install the CRDs (tmo crds | kubectl apply -f -)"
        )
    raise Refused(f"rollout {namespace}/{name} not found")


async def _act(args: argparse.Namespace, client: KubeClient, namespace: str) -> int:
    name, action = args.name, args.rollout_command
    await _get_rollout(client, namespace, name)
    by = await whoami(client, args.kubeconfig)
    record = build_action(action, by, datetime.now(UTC))
    print(f"{action} rollout {namespace}/{name}: {ACTIONS[action]}")
    patched = await client.merge_patch(API_VERSION, KIND, namespace, name, action_patch(record))
    if patched is None:  # deleted in between
        raise Refused(f"rollout {namespace}/{name} not found")
    print(f"requested as {by} (id {record['id']})")
    if args.no_wait:
        print(f"not waiting; see: tmo rollout status {name} -n {namespace}")
        return EXIT_OK

    deadline = time.monotonic() + args.timeout
    while True:
        rollout = await client.get(API_VERSION, KIND, namespace, name)
        if rollout is None:
            raise Refused(f"rollout {namespace}/{name} was deleted")
        last = _get(rollout, "status", "lastAction") or {}
        if last.get("id") == record["id"]:
            phase = _get(rollout, "status", "phase") or "Unknown"
            print(f"done: {last.get('result') or '(no result recorded)'}")
            print(f"phase: {phase}")
            return EXIT_OK
        if time.monotonic() >= deadline:
            print(
                f"the operator did not acknowledge {action} (id {record['id']}) within "
                f"{args.timeout:g}s: is it running? The request stays on the Rollout and is "
                f"acted on once the operator sees it.",
                file=sys.stderr,
            )
            return EXIT_FAILED
        await asyncio.sleep(0.5)


async def _status(args: argparse.Namespace, client: KubeClient, namespace: str) -> int:
    rollout = await _get_rollout(client, namespace, args.name)
    fancy = stdout_is_utf8()
    if not args.watch:
        print(format_status(rollout, datetime.now(UTC), unicode=fancy))
        return EXIT_OK
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    shown = None
    while True:
        key = format_status(rollout)
        if key != shown:
            if shown is not None:
                print()
            print(f"--- {rfc3339(datetime.now(UTC))}")
            print(format_status(rollout, datetime.now(UTC), unicode=fancy), flush=True)
            shown = key
        code = settled(rollout)
        if code is not None:
            return code
        if deadline is not None and time.monotonic() >= deadline:
            print(
                f"timed out after {args.timeout:g}s; rollout {namespace}/{args.name} is still "
                f"{_get(rollout, 'status', 'phase') or 'not reconciled'}",
                file=sys.stderr,
            )
            return EXIT_FAILED
        await asyncio.sleep(1.0)
        latest = await client.get(API_VERSION, KIND, namespace, args.name)
        if latest is None:
            print(f"rollout {namespace}/{args.name} was deleted", file=sys.stderr)
            return EXIT_FAILED
        rollout = latest


async def _main(args: argparse.Namespace) -> int:
    try:
        connection = Connection.load(args.kubeconfig)
    except Exception as e:  # kubernetes' ConfigException and file errors
        raise Refused(f"no cluster to talk to: cannot load a kubeconfig ({e})") from None
    namespace = args.namespace or default_namespace(args.kubeconfig)
    client = KubeClient(connection, FIELD_MANAGER)
    try:
        if args.rollout_command == "status":
            return await _status(args, client, namespace)
        if args.rollout_command == "report":
            from tmo.commands import rollout_report

            return await rollout_report.run_report(args, client, namespace)
        return await _act(args, client, namespace)
    except ApiError as e:
        raise Refused(f"rollout {namespace}/{args.name}: the API server said {e}") from None
    except httpx.HTTPError as e:
        raise Refused(f"cannot reach the API server at {connection.host}: {e}") from None
    finally:
        await client.close()


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_main(args))
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_REFUSED
