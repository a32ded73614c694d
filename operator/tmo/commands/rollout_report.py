"""`tmo rollout report NAME --out FILE.png`: a Rollout's history as a picture.

For a postmortem or a pull-request comment: the canary's weight over time (from the Rollout's
Events and its status), and per gate the canary's and the stable revision's values over time
with the gate's max/min and each measurement's verdict.

Two halves: `build_timeline` (pure: the Rollout and its Events as plain dicts in, a `Timeline`
out) and `draw` (matplotlib, imported only here and only when drawing, so `tmo` works without
it). The status keeps only the newest measurements (the operator keeps 32, the API at most
64), so a long canary's early measurements are gone; Events last as long as the API server
keeps them (1 hour by default).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from tmo.commands.rollout import (
    SETTLED_FAILED,
    Refused,
    _get,
    _get_rollout,
    format_value,
    metric_units,
    rfc3339,
)
from tmo.kube.client import ApiError, KubeClient
from tmo.rollout.machine import KEPT_MEASUREMENTS

if TYPE_CHECKING:
    from matplotlib.axes import Axes

INSTALL_HINT: Final = "pip install 'tmo[report]'"

# Events that move the canary's weight, and where to: None reads the number from the message.
WEIGHT_EVENTS: Final[dict[str, int | None]] = {
    "CanaryStarted": 0,
    "Retried": 0,
    "Superseded": 0,
    "WeightChanged": None,
    "Promoted": 100,  # the canary takes all traffic as the new stable revision
    "RolledBack": 0,
    "Aborted": 0,
    "CanaryAbandoned": 0,
}
# Events drawn as labelled lines across the panels.
MARKED_EVENTS: Final = frozenset(
    {"CanaryStarted", "StepPassed", "Approved", "Promoted", "RolledBack", "Aborted", "Retried"}
)
# Order of Events posted in the same second (they carry second precision): a canary starts
# before its weight moves, which comes before a step passes, before the canary ends.
_EVENT_ORDER: Final[dict[str, int]] = {
    "Superseded": 0,
    "CanaryStarted": 1,
    "Retried": 1,
    "WeightChanged": 2,
    "AnalysisFailed": 3,
    "AnalysisError": 3,
    "StepPassed": 3,
    "Approved": 3,
    "AwaitingApproval": 4,
    "RolledBack": 5,
    "Aborted": 5,
    "CanaryAbandoned": 5,
    "Promoted": 5,
}
_WEIGHT = re.compile(r"\bat (\d{1,3})% of traffic")
_STARTED = re.compile(r"canary (\S+) started beside stable (\S+)")

VERDICT_STYLE: Final[dict[str, tuple[str, str]]] = {  # verdict -> (colour, marker)
    "Passed": ("tab:green", "o"),
    "Failed": ("tab:red", "X"),
    "Inconclusive": ("grey", "o"),
    "Error": ("tab:orange", "D"),
}


# ---------------------------------------------------------------- the timeline (pure)


@dataclass(frozen=True)
class WeightPoint:
    time: datetime
    weight: int
    reason: str  # the Event it comes from, or "status"


@dataclass(frozen=True)
class Point:
    time: datetime
    value: float | None  # the canary's
    stable: float | None
    verdict: str
    requests: int | None = None
    message: str = ""


@dataclass(frozen=True)
class Gate:
    name: str
    unit: str  # "ms", "%" (values are fractions) or ""
    max: float | None
    min: float | None
    points: list[Point]

    def verdicts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.points:
            counts[p.verdict] = counts.get(p.verdict, 0) + 1
        return counts


@dataclass(frozen=True)
class Mark:
    time: datetime
    reason: str
    message: str


@dataclass(frozen=True)
class Timeline:
    namespace: str
    name: str
    phase: str
    stable_revision: str | None
    canary_revision: str | None
    start: datetime
    end: datetime
    weights: list[WeightPoint]
    gates: list[Gate]
    marks: list[Mark]
    measurements_in_status: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def points(self) -> int:
        return sum(len(g.points) for g in self.gates)


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 (`Z` or an offset, fractions allowed) as an aware datetime; None otherwise."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def event_time(event: Mapping[str, Any]) -> datetime | None:
    """When an Event happened: eventTime, firstTimestamp, lastTimestamp, then its creation."""
    for value in (
        event.get("eventTime"),
        event.get("firstTimestamp"),
        event.get("lastTimestamp"),
        _get(event, "metadata", "creationTimestamp"),
    ):
        t = parse_time(value)
        if t is not None:
            return t
    return None


def _resource_version(event: Mapping[str, Any]) -> int:
    try:
        return int(_get(event, "metadata", "resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def _sorted_events(
    events: Sequence[Mapping[str, Any]], name: str
) -> list[tuple[datetime, Mapping[str, Any]]]:
    mine = []
    for e in events:
        involved = e.get("involvedObject") or e.get("regarding") or {}
        if involved.get("kind", "Rollout") != "Rollout" or involved.get("name", name) != name:
            continue
        t = event_time(e)
        if t is not None:
            mine.append((t, e))
    mine.sort(
        key=lambda te: (
            te[0],
            _EVENT_ORDER.get(str(te[1].get("reason")), 3),
            _resource_version(te[1]),
        )
    )
    return mine


def _thresholds(
    spec: Mapping[str, Any], monitoring: Mapping[str, Any] | None
) -> dict[str, tuple[float | None, float | None]]:
    """Gate name -> (max, min) as the operator judges them (tmo.analysis.effective_metrics):
    the Rollout's metrics, or when it lists none the target's spec.monitoring. A gate the
    mannWhitney judge compares with stable has neither: no line is drawn for it."""
    from pydantic import ValidationError

    from tmo.analysis.metrics import effective_metrics
    from tmo.api.rollout import Analysis

    try:
        analysis = Analysis.model_validate(_get(spec, "analysis") or {})
    except ValidationError:
        return {}
    limits = {k: float(v) for k, v in (monitoring or {}).items() if _float(v) is not None}
    return {m.name: (m.max, m.min) for m in effective_metrics(analysis, limits)}


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def build_timeline(
    rollout: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    now: datetime,
    since: datetime | None = None,
    monitoring: Mapping[str, Any] | None = None,
) -> Timeline:
    """The Rollout's history from its object and its Events (plain dicts, as the API serves
    them), for `draw` and the summary.

    The time range starts at `since` when given, else when the current canary started
    (status.canaryStartedAt, or its latest CanaryStarted Event), else at the oldest Event or
    measurement. It ends at `now` while a canary is live, else at the last Event or
    measurement. `monitoring` is the target's spec.monitoring: the thresholds of the default
    gates when the Rollout lists no metrics.
    """
    meta = rollout.get("metadata") or {}
    spec = rollout.get("spec") or {}
    status = rollout.get("status") or {}
    name = str(meta.get("name", "?"))
    phase = str(status.get("phase") or "Unknown")
    timed = _sorted_events(events, name)
    measurements = [
        m
        for m in _get(status, "analysis", "measurements") or []
        if isinstance(m, Mapping) and parse_time(m.get("time"))
    ]
    notes: list[str] = []

    started = [(t, e) for t, e in timed if e.get("reason") == "CanaryStarted"]
    begin = since
    if begin is None:
        begin = parse_time(status.get("canaryStartedAt"))
        if begin is None and started:
            begin = started[-1][0]
    if begin is None:
        candidates = [t for t, _ in timed] + [_time(m) for m in measurements]
        begin = min(candidates) if candidates else now
    live = phase in ("Progressing", "Paused", "Promoting")
    weight_before = None  # where the weight stood when the range starts, if Events say
    for t, e in timed:
        if t < begin and e.get("reason") in WEIGHT_EVENTS:
            weight_before = _event_weight(e)
    timed = [(t, e) for t, e in timed if t >= begin]
    measurements = [m for m in measurements if _time(m) >= begin]

    # Revisions: the canary's and the stable one it ran beside (a promoted canary is the
    # stable revision now; the one it replaced is named by its CanaryStarted Event).
    stable, canary = status.get("stableRevision"), status.get("canaryRevision")
    in_range = [e for _, e in timed if e.get("reason") == "CanaryStarted"]
    match = _STARTED.search(str(in_range[-1].get("message", ""))) if in_range else None
    if match is not None:
        canary, stable = match.group(1), match.group(2)
        if status.get("canaryRevision") not in (None, canary):
            canary = status.get("canaryRevision")  # started before the range: status knows
    elif phase == "Succeeded" and canary is None:
        canary = stable

    # Weight: a step line through every Event that moves it, then where the status says.
    weights: list[WeightPoint] = []
    moved_at_begin = any(t == begin and _event_weight(e) is not None for t, e in timed)
    if weight_before is not None and not moved_at_begin:
        weights.append(WeightPoint(begin, weight_before, "before"))
    marks: list[Mark] = []
    for t, e in timed:
        reason = str(e.get("reason", ""))
        target = _event_weight(e)
        if target is not None:
            weights.append(WeightPoint(t, target, reason))
        if reason in MARKED_EVENTS:
            marks.append(Mark(t, reason, str(e.get("message", ""))))
    weight_now = status.get("canaryWeight")
    last_times = [t for t, _ in timed] + [_time(m) for m in measurements]
    # A settled rollout ends with its last Event or measurement; a live one, or a window asked
    # for with --since, ends now.
    end = now if live or since is not None or not last_times else max(last_times)
    end = max(end, begin)
    if isinstance(weight_now, int) and not isinstance(weight_now, bool):
        if not weights:
            # No Events (expired, or no permission to list them): the status alone.
            notes.append("no Events about the canary's weight in range: weight from status")
            weights.append(WeightPoint(begin, weight_now if live else 0, "status"))
        if live and weights[-1].weight != weight_now:
            weights.append(WeightPoint(end, weight_now, "status"))
        elif weights[-1].time < end:
            weights.append(WeightPoint(end, weights[-1].weight, "end"))

    # Gates: every metric of the status (spec order first, alert checks after).
    units = metric_units(spec)
    limits = _thresholds(spec, monitoring)
    by_metric: dict[str, list[Point]] = {}
    for m in measurements:
        by_metric.setdefault(str(m.get("metric", "?")), []).append(
            Point(
                time=_time(m),
                value=_float(m.get("value")),
                stable=_float(m.get("stableValue")),
                verdict=str(m.get("verdict") or "?"),
                requests=m.get("requests") if isinstance(m.get("requests"), int) else None,
                message=str(m.get("message") or ""),
            )
        )
    order = [n for n in limits if n in by_metric] + [n for n in by_metric if n not in limits]
    gates = [
        Gate(
            name=n,
            unit=units.get(n, ""),
            max=limits.get(n, (None, None))[0],
            min=limits.get(n, (None, None))[1],
            points=sorted(by_metric[n], key=lambda p: p.time),
        )
        for n in order
    ]
    kept = len(_get(status, "analysis", "measurements") or [])
    if not gates:
        notes.append("no measurements yet: drew the weight only")
    elif kept >= KEPT_MEASUREMENTS:
        notes.append(
            f"the status holds {kept} measurements, as many as it keeps: older ones may be gone"
        )
    if phase in SETTLED_FAILED and status.get("message"):
        notes.append(str(status["message"]))
    return Timeline(
        namespace=str(meta.get("namespace", "")),
        name=name,
        phase=phase,
        stable_revision=str(stable) if stable else None,
        canary_revision=str(canary) if canary else None,
        start=begin,
        end=end,
        weights=weights,
        gates=gates,
        marks=marks,
        measurements_in_status=kept,
        notes=notes,
    )


def _event_weight(e: Mapping[str, Any]) -> int | None:
    """The canary's weight after this Event, or None when it does not move it."""
    reason = str(e.get("reason", ""))
    if reason not in WEIGHT_EVENTS:
        return None
    target = WEIGHT_EVENTS[reason]
    if target is None:
        found = _WEIGHT.search(str(e.get("message", "")))
        target = int(found.group(1)) if found else None
    return target


def _time(m: Mapping[str, Any]) -> datetime:
    t = parse_time(m.get("time"))
    assert t is not None  # filtered before
    return t


def title(t: Timeline) -> str:
    revisions = f"canary {t.canary_revision or '-'} beside stable {t.stable_revision or '-'}"
    if t.phase == "Succeeded" and t.canary_revision and t.canary_revision == t.stable_revision:
        revisions = f"revision {t.canary_revision} promoted"
    elif t.phase == "Succeeded":
        revisions = f"canary {t.canary_revision} promoted over {t.stable_revision}"
    span = f"{rfc3339(t.start)} to {rfc3339(t.end)} ({_span(t.end - t.start)})"
    return f"Rollout {t.namespace}/{t.name}: {revisions}, {t.phase}\n{span}"


def _span(d: timedelta) -> str:
    s = max(0, int(d.total_seconds()))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def summary(t: Timeline, out: str) -> str:
    """What was drawn, for stdout."""
    lines = [f"wrote {out}: {title(t).splitlines()[0]}", f"  time:   {title(t).splitlines()[1]}"]
    path = " -> ".join(f"{w.weight}%" for w in _changes(t.weights))
    lines.append(f"  weight: {len(t.weights)} points ({path or 'none'})")
    for g in t.gates:
        counts = ", ".join(f"{n} {v}" for v, n in g.verdicts().items())
        limit = []
        if g.max is not None:
            limit.append(f"max {_limit(g.max, g.unit)}")
        if g.min is not None:
            limit.append(f"min {_limit(g.min, g.unit)}")
        text = f"  gate {g.name}: {len(g.points)} points ({counts})"
        lines.append(text + (f", {' '.join(limit)}" if limit else ""))
    lines.append(f"  {t.points} measurement points, {len(t.marks)} events marked")
    lines += [f"  note: {n}" for n in t.notes]
    return "\n".join(lines)


def _limit(value: float, unit: str) -> str:
    return (
        f"{format_value(value, unit)}%" if unit == "%" else f"{format_value(value)} {unit}".strip()
    )


def _changes(weights: list[WeightPoint]) -> list[WeightPoint]:
    out: list[WeightPoint] = []
    for w in weights:
        if not out or out[-1].weight != w.weight:
            out.append(w)
    return out


# ---------------------------------------------------------------- drawing (matplotlib)


class MatplotlibMissing(Exception):
    pass


def _scale(value: float | None, unit: str) -> float | None:
    if value is None:
        return None
    return value * 100 if unit == "%" else value


def draw(t: Timeline, out: str | os.PathLike[str], dpi: int = 110) -> None:
    """Draw the timeline to a PNG (Agg, no display). Raises MatplotlibMissing or OSError."""
    try:
        import matplotlib.dates as mdates
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
    except ImportError as e:
        raise MatplotlibMissing(str(e)) from None

    panels = 1 + len(t.gates)
    fig = Figure(figsize=(11, 2.4 + 2.3 * panels), layout="constrained")
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    fig.suptitle(title(t), fontsize=11)

    ax = axes[0]
    if t.weights:
        xs = [w.time for w in t.weights]
        ys = [w.weight for w in t.weights]
        ax.step(xs, ys, where="post", color="tab:blue", linewidth=2, label="canary weight")
        ax.fill_between(xs, ys, step="post", color="tab:blue", alpha=0.15)
    ax.set_ylim(-3, 105)
    ax.set_ylabel("canary weight (%)")
    ax.set_title("traffic on the canary", fontsize=10, loc="left")
    if not t.gates:
        ax.text(
            0.5,
            0.5,
            "no measurements yet",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="grey",
            fontsize=12,
        )
    _marks(axes, t.marks)

    for ax, gate in zip(axes[1:], t.gates, strict=True):
        _gate(ax, gate)

    legend = [
        Line2D([], [], color=color, marker=marker, linestyle="", label=verdict)
        for verdict, (color, marker) in VERDICT_STYLE.items()
    ]
    axes[0].legend(
        handles=legend, loc="upper left", fontsize=8, ncols=4, title="verdicts", title_fontsize=8
    )
    last = axes[-1]
    pad = max(t.end - t.start, timedelta(seconds=10)) * 0.02  # room for the first/last marks
    last.set_xlim(t.start - pad, t.end + pad)
    locator = mdates.AutoDateLocator(tz=UTC)  # type: ignore[no-untyped-call]
    last.xaxis.set_major_locator(locator)
    formatter = mdates.DateFormatter("%H:%M:%S", tz=UTC)  # type: ignore[no-untyped-call]
    last.xaxis.set_major_formatter(formatter)
    last.set_xlabel("time (UTC)")
    fig.savefig(out, format="png", dpi=dpi)


def _marks(axes: Any, marks: list[Mark]) -> None:
    colours = {"Promoted": "tab:green", "RolledBack": "tab:red", "Aborted": "tab:red"}
    for m in marks:
        colour = colours.get(m.reason, "0.6")
        for ax in axes:
            ax.axvline(m.time, color=colour, linestyle=":", linewidth=1, zorder=0)
        if m.reason != "StepPassed":
            axes[0].annotate(
                m.reason,
                (m.time, 1.0),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=7,
                color=colour,
            )


def _gate(ax: Axes, gate: Gate) -> None:
    unit = gate.unit
    # matplotlib takes datetimes on the x axis; its stubs want numbers, hence Any.
    times: list[Any] = [p.time for p in gate.points]
    canary = [_scale(p.value, unit) for p in gate.points]
    stable = [_scale(p.stable, unit) for p in gate.points]
    if any(v is not None for v in stable):
        xs, ys = _present(times, stable)
        ax.plot(xs, ys, color="0.45", linestyle="--", marker=".", linewidth=1.2, label="stable")
    if any(v is not None for v in canary):
        xs, ys = _present(times, canary)
        ax.plot(xs, ys, color="tab:blue", linewidth=1.5, label="canary")
    for limit, word in ((gate.max, "max"), (gate.min, "min")):
        if limit is not None:
            shown = limit * 100 if unit == "%" else limit
            ax.axhline(
                shown, color="tab:red", linestyle="-.", linewidth=1,
                label=f"{word} {_limit(limit, unit)}",
            )  # fmt: skip
    for verdict, (colour, marker) in VERDICT_STYLE.items():
        size = 50 if marker == "X" else 26
        mine = [i for i, p in enumerate(gate.points) if p.verdict == verdict]
        xs, ys = _present([times[i] for i in mine], [canary[i] for i in mine])
        if xs:
            ax.scatter(xs, ys, color=colour, marker=marker, s=size, zorder=3)
        # No value (a measurement error, no traffic): the verdict sits on the axis' floor.
        without: list[Any] = [times[i] for i in mine if canary[i] is None]
        if without:
            ax.scatter(
                without, [0.04] * len(without), color=colour, marker=marker, s=size, zorder=3,
                transform=ax.get_xaxis_transform(), clip_on=False,
            )  # fmt: skip
    ax.set_ylabel(f"{gate.name} ({unit})" if unit else gate.name)
    ax.set_title(f"gate {gate.name}", fontsize=10, loc="left")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, alpha=0.3)


def _present(xs: list[Any], ys: list[float | None]) -> tuple[list[Any], list[float]]:
    out_x: list[Any] = []
    out_y: list[float] = []
    for x, y in zip(xs, ys, strict=True):
        if y is not None:
            out_x.append(x)
            out_y.append(y)
    return out_x, out_y


# ---------------------------------------------------------------- the command


def since_argument(text: str) -> timedelta:
    from tmo.api.common import parse_duration

    try:
        value = parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 15m, 2h)") from None
    if value.total_seconds() <= 0:
        raise argparse.ArgumentTypeError("must be longer than 0s")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE.png",
        help="where to write the PNG (its folder must exist)",
    )
    p.add_argument(
        "--since",
        type=since_argument,
        default=None,
        metavar="DURATION",
        help="draw the last DURATION (30s, 15m, 2h), earlier canaries included (default: "
        "from when the current canary started)",
    )


def check_out(out: str) -> None:
    """Refuse an --out the PNG cannot be written to, before any work."""
    path = Path(out)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise Refused(f"--out {out} is a directory: name a file, e.g. {path / 'rollout.png'}")
    if not folder.is_dir():
        raise Refused(f"--out {out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise Refused(f"--out {out}: not writable")


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise Refused(f"`tmo rollout report` draws with matplotlib: {INSTALL_HINT}") from None


async def list_events(client: KubeClient, namespace: str, name: str) -> list[dict[str, Any]]:
    """The Events about one Rollout (a field selector: only these come over the wire)."""
    selector = f"involvedObject.kind=Rollout,involvedObject.name={name}"
    return await client.list("v1", "Event", namespace, field_selector=selector)


async def run_report(args: argparse.Namespace, client: KubeClient, namespace: str) -> int:
    check_out(args.out)
    require_matplotlib()
    rollout = await _get_rollout(client, namespace, args.name)
    now = datetime.now(UTC)
    notes = []
    try:
        events = await list_events(client, namespace, args.name)
    except ApiError as e:
        events = []
        notes.append(f"cannot list Events ({e}): weight from status only")
    monitoring: Mapping[str, Any] | None = None
    target = _get(rollout, "spec", "targetRef", "name")
    if not _get(rollout, "spec", "analysis", "metrics") and isinstance(target, str):
        try:  # the default gates' thresholds are the target's; best effort
            model = await client.get("tmo.dev/v1alpha1", "TransformerModel", namespace, target)
            monitoring = _get(model, "spec", "monitoring")
        except ApiError:
            monitoring = None
    since = now - args.since if args.since is not None else None
    timeline = build_timeline(rollout, events, now, since=since, monitoring=monitoring)
    timeline.notes.extend(notes)
    try:
        draw(timeline, args.out)
    except MatplotlibMissing as e:
        raise Refused(f"`tmo rollout report` draws with matplotlib ({e}): {INSTALL_HINT}") from None
    except OSError as e:
        raise Refused(f"cannot write --out {args.out}: {e}") from None
    print(summary(timeline, args.out))
    return 0
