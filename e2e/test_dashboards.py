"""The Grafana dashboards the chart ships work against what TMO really exports.

A real Prometheus (the local data plane's) scrapes real gateways (`tmo serve` per revision) and
the real operator (`tmo operator --metrics-port`, scraped as the chart's Service would be, with
the series' own labels kept), while a TransformerModel runs a Rollout with a live canary. Then
every panel's PromQL, with Grafana's variables filled in, must run without error, and every
metric name it selects must be one those components exported. Prometheus 2.42 has no parse API,
so a small tokenizer finds the names. The chart must ship each dashboard file as is, in a
ConfigMap labelled for Grafana's dashboard sidecar.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml

from e2e.dataplane import LocalDataPlane, build_tiny_model
from e2e.helm import helm_binary
from e2e.kube import Cluster, wait_for
from e2e.rollouts import apply, change_runtime, model_manifest, rollout_manifest, wait_phase
from e2e.tmo_operator import CHART, OperatorProcess, install_crds, operator_kubeconfig

DASHBOARDS = CHART / "dashboards"
NAME = "dash"
# A canary that stays live: half the traffic, then a long pause. Analysis every 3 s with a
# failure limit it never reaches, so measurements and verdicts keep coming.
STEPS: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {"duration": "1h"}}]

# --- a PromQL tokenizer: which metric names does an expression select? ------------------------

# Prometheus 2.42's functions and aggregation operators (promql/parser/functions.go, lex.go).
# fmt: off
FUNCTIONS = frozenset([
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "days_in_month", "day_of_month", "day_of_week", "day_of_year", "deg",
    "delta", "deriv", "exp", "floor", "histogram_count", "histogram_fraction",
    "histogram_quantile", "histogram_sum", "holt_winters", "hour", "idelta", "increase", "irate",
    "label_join", "label_replace", "last_over_time", "ln", "log10", "log2", "max_over_time",
    "min_over_time", "minute", "month", "pi", "predict_linear", "present_over_time",
    "quantile_over_time", "rad", "rate", "resets", "round", "scalar", "sgn", "sin", "sinh",
    "sort", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan",
    "tanh", "time", "timestamp", "vector", "year", "start", "end",
])
AGGREGATIONS = frozenset([
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile",
])
# fmt: on
# Keywords followed by a parenthesised list of label names.
GROUPING = frozenset(["by", "without", "on", "ignoring", "group_left", "group_right"])
KEYWORDS = frozenset(["and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"])

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<duration>(?:\d+(?:ms|s|m|h|d|w|y))+(?![\w.]))
    |(?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    |(?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@:])
    """,
    re.VERBOSE,
)


def tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) of each token; whitespace dropped. Raises on a character PromQL lacks."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot tokenize {expr[pos : pos + 20]!r} in {expr!r}")
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append((kind, m.group()))
        pos = m.end()
    return out


def _closing(toks: list[tuple[str, str]], start: int, open_: str, close: str) -> int:
    """Index of the token closing the bracket at `start`."""
    depth = 0
    for i in range(start, len(toks)):
        if toks[i][1] == open_:
            depth += 1
        elif toks[i][1] == close:
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced {open_}{close}")


def selected_metrics(expr: str) -> set[str]:
    """Metric names the expression selects: identifiers used as vector selectors (and
    `{__name__="..."}`), not functions, aggregations, keywords, label names inside `{}` or in
    `by (...)`/`on (...)` lists, durations or strings. An unknown function raises."""
    toks = tokens(expr)
    names: set[str] = set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        after = toks[i + 1][1] if i + 1 < len(toks) else ""
        if text == "{":  # label matchers: name op "value", ...
            end = _closing(toks, i, "{", "}")
            inner = toks[i + 1 : end]
            for j in range(len(inner) - 2):
                if inner[j] == ("ident", "__name__") and inner[j + 1][1] == "=":
                    names.add(_unquote(inner[j + 2][1]))
            i = end + 1
            continue
        if text == "[":  # a range or subquery: durations only
            i = _closing(toks, i, "[", "]") + 1
            continue
        if kind == "ident":
            if text in GROUPING:
                if after == "(":
                    i = _closing(toks, i + 1, "(", ")") + 1
                    continue
            elif text.lower() in KEYWORDS or text in AGGREGATIONS:
                pass
            elif after == "(":
                if text not in FUNCTIONS:
                    raise ValueError(f"unknown function {text}() in {expr!r}")
            else:
                names.add(text)
        i += 1
    return names


def _unquote(s: str) -> str:
    return s[1:-1].encode().decode("unicode_escape") if s[:1] in "\"'" else s[1:-1]


# --- the dashboards -----------------------------------------------------------------------------

# Grafana's own variables, with values for an instant query over the last few minutes.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((DASHBOARDS / name).read_text()))


def dashboards() -> dict[str, dict[str, Any]]:
    found = {p.name: load(p.name) for p in sorted(DASHBOARDS.glob("*.json"))}
    assert set(found) == {"tmo-model.json", "tmo-rollout.json"}, found.keys()
    return found


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those nested in collapsed rows included."""
    for p in dashboard.get("panels") or []:
        yield p
        yield from p.get("panels") or []


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, refId, expr) of every Prometheus target."""
    for p in panels(dashboard):
        for t in p.get("targets") or []:
            if t.get("expr"):
                yield str(p.get("title")), str(t.get("refId")), str(t["expr"])


def variable_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(variable, series selector) of every `label_values(SELECTOR, label)` variable."""
    for v in dashboard["templating"]["list"]:
        if v["type"] != "query":
            continue
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", str(query).strip())
        assert m, f"variable {v['name']}: {query!r} is not label_values(selector, label)"
        yield v["name"], m.group(1)


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variables replaced, as Grafana does before it sends a query."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(f"undefined variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(one, expr)


# --- against Prometheus -------------------------------------------------------------------------


def prom_query(url: str, expr: str) -> tuple[list[Any] | None, str]:
    """(result, "") of an instant query, or (None, Prometheus' error)."""
    r = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=30)
    body = r.json()
    if r.status_code != 200 or body.get("status") != "success":
        return None, f"{body.get('errorType')}: {body.get('error')}"
    return list(body["data"]["result"]), ""


def metric_names(url: str) -> set[str]:
    r = httpx.get(f"{url}/api/v1/label/__name__/values", timeout=30)
    r.raise_for_status()
    return set(r.json()["data"])


def problems(url: str, expr: str, exported: set[str]) -> list[str]:
    """What is wrong with one (substituted) expression: a query error, an unknown function, a
    metric name nothing exported. Empty when it is fine."""
    found: list[str] = []
    _, error = prom_query(url, expr)
    if error:
        found.append(f"query error {error}")
    try:
        missing = selected_metrics(expr) - exported
    except ValueError as e:
        found.append(str(e))
    else:
        found.extend(f"no component exports {name}" for name in sorted(missing))
    return found


# --- the pure checks ----------------------------------------------------------------------------


def test_the_tokenizer_finds_selected_metric_names_and_nothing_else() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (revision, le) (rate(tmo_request_duration_seconds_bucket"
        '{namespace="ml",model=~"a|b",code!="500"}[1m:10s] offset 5m))) * 1000 > bool 2'
        " and on (namespace) group_left (pod) max without (container) (tmo_memory_usage_bytes)"
        ' or label_replace(up, "x", "$1", "job", "(.*)") unless {__name__="tmo_model_ready"}'
        ' / count_values("v", tmo_operator_leader) < +Inf'
    )
    assert selected_metrics(expr) == {
        "tmo_request_duration_seconds_bucket",
        "tmo_memory_usage_bytes",
        "up",
        "tmo_model_ready",
        "tmo_operator_leader",
    }
    # A misspelled metric is a name like any other: the check against Prometheus' names
    # catches it (below, against the real one); an unknown function is caught here.
    assert selected_metrics('sum(rate(tmo_request_totl{code=~"5.."}[5m]))') == {"tmo_request_totl"}
    with pytest.raises(ValueError, match="unknown function"):
        selected_metrics("rate_of(tmo_requests_total[1m])")


def test_dashboards_are_grafana_dashboards_on_a_chosen_prometheus() -> None:
    for name, d in dashboards().items():
        assert d["schemaVersion"] >= 39 and d["uid"] == name.removesuffix(".json"), name
        variables = {v["name"]: v for v in d["templating"]["list"]}
        ds = variables["datasource"]
        assert (ds["type"], ds["query"]) == ("datasource", "prometheus"), name
        for v in ("namespace", "model") + (("rollout",) if "rollout" in name else ()):
            assert variables[v]["type"] == "query", (name, v)
        ids = [p["id"] for p in panels(d)]
        assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
        for p in panels(d):
            if p["type"] == "row":
                continue
            assert p["datasource"]["uid"] == "${datasource}", (name, p["title"])
            assert p.get("description"), f"{name}: {p['title']} says nothing of what it shows"
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${datasource}", (name, p["title"])
                # A threshold is the model's own, read from the operator: never a literal.
                if t["refId"] == "GATE":
                    assert selected_metrics(t["expr"]) == {"tmo_operator_model_gate"}, t
            steps = p["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
            assert all(s["value"] is None for s in steps), f"{name}: {p['title']} hard-codes"
            # Every variable a query uses is one the dashboard defines (or Grafana's own).
            for t in p["targets"]:
                substitute(t["expr"], {**BUILTINS, **{k: "x" for k in variables}})


# --- the chart ----------------------------------------------------------------------------------


def _template(*args: str) -> list[dict[str, Any]]:
    r = subprocess.run(
        [str(helm_binary()), "template", "tmo", str(CHART), "-n", "tmo-system", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "ConfigMap"]


def test_the_chart_ships_each_dashboard_file_in_a_configmap_for_grafanas_sidecar() -> None:
    maps = _template()
    assert sorted(m["metadata"]["name"] for m in maps) == [
        "tmo-model-dashboard",
        "tmo-rollout-dashboard",
    ]
    shipped: dict[str, str] = {}
    for m in maps:
        assert m["metadata"]["namespace"] == "tmo-system"
        assert m["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert "annotations" not in m["metadata"]
        shipped.update(m["data"])
    # Byte for byte what is in charts/tmo/dashboards/.
    assert shipped == {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}

    custom = _template(
        "--set",
        "dashboards.label=grafana.example.com/dashboard",
        "--set",
        "dashboards.labelValue=tmo",
        "--set",
        "dashboards.namespace=monitoring",
        "--set",
        "dashboards.annotations.grafana_folder=TMO",
    )
    for m in custom:
        meta = m["metadata"]
        assert meta["labels"]["grafana.example.com/dashboard"] == "tmo"
        assert "grafana_dashboard" not in meta["labels"]
        assert meta["namespace"] == "monitoring"
        assert meta["annotations"] == {"grafana_folder": "TMO"}
    assert _template("--set", "dashboards.enabled=false") == []
    # The schema refuses a label Kubernetes would refuse, naming the value.
    bad = subprocess.run(
        [str(helm_binary()), "template", "tmo", str(CHART), "--set", "dashboards.label=a b"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "dashboards" in bad.stderr, bad.stderr


# --- against the real components ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ns(cluster: Cluster) -> Iterator[str]:
    name = f"dash-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return _free_port()


@pytest.fixture(scope="module")
def plane(
    cluster: Cluster, ns: str, metrics_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalDataPlane]:
    # The operator is scraped too, as the chart's tmo-operator-metrics Service would be: the
    # target's labels, with the series' own `namespace` (the model's) kept over the target's.
    operator_job = {
        "job_name": "tmo-operator",
        "honor_labels": True,
        "static_configs": [
            {
                "targets": [f"127.0.0.1:{metrics_port}"],
                "labels": {
                    "namespace": "tmo-system",
                    "service": "tmo-operator-metrics",
                    "endpoint": "metrics",
                    "pod": "tmo-operator-0",
                },
            }
        ],
    }
    dp = LocalDataPlane(
        cluster, ns, tmp_path_factory.mktemp("plane"), rps=10, extra_scrape_configs=[operator_job]
    )
    with dp:
        yield dp


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster,
    ns: str,
    plane: LocalDataPlane,
    metrics_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    install_crds(cluster)
    workdir = tmp_path_factory.mktemp("operator")
    op = OperatorProcess(
        cluster,
        workdir,
        kubeconfig=operator_kubeconfig(cluster, workdir),
        args=[
            "--namespace",
            ns,
            "--prometheus-url",
            plane.prometheus_url,
            "--metrics-port",
            str(metrics_port),
            "--alert-for",
            "5s",
            "--alert-window",
            "30s",
            "--resync-seconds",
            "5",
            "--retry-initial-seconds",
            "1",
            "--retry-max-seconds",
            "3",
        ],
    )
    op.start()
    yield op
    op.stop()


@pytest.fixture(scope="module")
def live_canary(
    cluster: Cluster,
    ns: str,
    plane: LocalDataPlane,
    operator: OperatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """A model with a Rollout whose canary is live and measured; Prometheus has scraped it
    all. Returns the values of the dashboards' variables."""
    uri = f"file://{build_tiny_model(tmp_path_factory.mktemp('tiny') / 'model')}"
    analysis: dict[str, Any] = {
        "minRequests": 5,
        "failureLimit": 1000,
        "maxConsecutiveErrors": 1000,
    }
    apply(cluster, model_manifest(ns, NAME, uri), rollout_manifest(ns, NAME, STEPS, **analysis))
    obj = wait_phase(cluster, ns, NAME, {"Idle"}, timeout=60)
    plane.wait_serving(str(obj["status"]["stableRevision"]), timeout=180)
    canary = change_runtime(cluster, ns, NAME, maxBatchDelayMs=6)
    wait_phase(cluster, ns, NAME, {"Progressing"}, timeout=60, canaryWeight=50)
    plane.wait_serving(canary, timeout=180)
    sel = f'namespace="{ns}",rollout="{NAME}"'
    for what in (
        f'tmo_operator_rollout_measurement{{{sel},metric="latencyP99",revision_role="canary"}}',
        f'tmo_operator_rollout_gate_verdict{{{sel},metric="latencyP99"}} == 1',
        f'tmo_operator_rollout_revision{{{sel},role="canary",revision="{canary}"}}',
        f'tmo_requests_total{{namespace="{ns}",model="{NAME}",revision="{canary}"}}',
        f'tmo_operator_model_gate{{namespace="{ns}",model="{NAME}",gate="latencyP99"}} == 1500',
    ):
        wait_for(f"Prometheus has {what}", _querying(plane, what), timeout=180, interval=1)
    return {"namespace": ns, "model": NAME, "rollout": NAME, "metric": "latencyP99"}


def _querying(plane: LocalDataPlane, expr: str) -> Callable[[], list[dict[str, Any]]]:
    return lambda: plane.query(expr)


# Targets that may rightly find nothing here: no request failed, and `tmo serve` reports no
# memory limit (+Inf, which the panel leaves out).
MAY_BE_EMPTY = {
    ("tmo-model.json", "5xx per second", "A"),
    ("tmo-model.json", "Memory used and limit", "B"),
}


def test_every_panel_query_runs_and_selects_only_exported_metrics(
    plane: LocalDataPlane, live_canary: dict[str, str]
) -> None:
    url = plane.prometheus_url
    # Rate windows need a few scrapes of the canary behind them.
    wait_for(
        "a rate over the canary's requests",
        lambda: plane.query(
            f'rate(tmo_requests_total{{namespace="{live_canary["namespace"]}"}}[1m]) > 0'
        ),
        timeout=60,
        interval=1,
    )
    exported = metric_names(url)
    values = {**BUILTINS, **live_canary, "datasource": "prometheus"}
    failures: list[str] = []
    empty: list[tuple[str, str, str]] = []
    checked = 0
    for name, d in dashboards().items():
        for variable, selector in variable_queries(d):
            expr = substitute(selector, values)
            for problem in problems(url, expr, exported):
                failures.append(f"{name} variable ${variable}: {expr}\n    {problem}")
            result, _ = prom_query(url, expr)
            if not result:
                failures.append(f"{name} variable ${variable} has no values: {expr}")
        for title, ref, raw in targets(d):
            expr = substitute(raw, values)
            checked += 1
            found = problems(url, expr, exported)
            failures.extend(f"{name} / {title} / {ref}: {expr}\n    {p}" for p in found)
            result, _ = prom_query(url, expr)
            if not found and not result and (name, title, ref) not in MAY_BE_EMPTY:
                empty.append((name, title, ref))
    assert checked >= 30, checked
    assert not failures, "\n".join(failures)
    # With a model serving and a canary measured, every panel shows something.
    assert not empty, empty


def test_a_bad_panel_query_is_caught(plane: LocalDataPlane, live_canary: dict[str, str]) -> None:
    url = plane.prometheus_url
    exported = metric_names(url)
    good = f'sum(rate(tmo_requests_total{{namespace="{live_canary["namespace"]}"}}[1m]))'
    assert problems(url, good, exported) == []
    # A misspelled metric runs without error (Prometheus just finds nothing): the name check
    # is what catches it.
    typo = good.replace("tmo_requests_total", "tmo_request_total")
    assert prom_query(url, typo) == ([], "")
    assert problems(url, typo, exported) == ["no component exports tmo_request_total"]
    # A query Prometheus refuses.
    broken = good.replace("[1m]", "[1m")
    assert problems(url, broken, exported)[0].startswith("query error bad_data")
    # A variable the dashboard never defines.
    with pytest.raises(KeyError, match="undefined variable"):
        substitute('tmo_model_ready{pod="$pod"}', {"namespace": "x"})
