"""A small async client for Prometheus' instant-query API (GET/POST /api/v1/query)."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Final

import httpx

# Longer queries go as a POST form: URLs this long are cut by proxies and fill access logs.
_GET_LIMIT: Final = 2000
# How much of a non-Prometheus answer (a proxy's HTML page) to quote in an error.
_BODY_QUOTE: Final = 200

Sample = tuple[dict[str, str], float]


class PrometheusError(Exception):
    """Prometheus could not answer: unreachable, an HTTP error, or a query it refused (the
    message carries Prometheus' own words)."""


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _number(text: Any) -> float:
    # Prometheus sends sample values as strings: "1.5", "NaN", "+Inf", "-Inf".
    if not isinstance(text, str):
        raise PrometheusError(f"Prometheus sent a sample value that is not a string: {text!r}")
    try:
        return float(text)
    except ValueError:
        raise PrometheusError(
            f"Prometheus sent a sample value that is not a number: {text!r}"
        ) from None


class PrometheusClient:
    """Instant queries against one Prometheus. Use one per event loop; close() it when done."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout)

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def query(self, promql: str) -> list[Sample]:
        """Evaluate `promql` now: a vector as (labels, value) per series, a scalar as
        [({}, value)]. Values may be NaN or ±Inf. Raises PrometheusError."""
        # Prometheus' own timeout too, so an expensive query stops there and not only here.
        # (plain seconds: Prometheus reads "2.5" but refuses "2.5s").
        form = {"query": promql, "timeout": f"{self.timeout:g}"}
        try:
            if len(promql) > _GET_LIMIT:
                response = await self._http.post("/api/v1/query", data=form)
            else:
                response = await self._http.get("/api/v1/query", params=form)
        except httpx.HTTPError as exc:
            raise PrometheusError(
                f"Prometheus at {self.url} is unreachable: {_describe(exc)}"
            ) from exc
        return self._parse(response)

    def _parse(self, response: httpx.Response) -> list[Sample]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("status") == "error":
            # 400 bad_data (parse errors), 422 execution, 503 timeout: Prometheus says why.
            kind = body.get("errorType") or f"HTTP {response.status_code}"
            raise PrometheusError(f"Prometheus refused the query ({kind}): {body.get('error')}")
        if response.is_error or not isinstance(body, dict) or body.get("status") != "success":
            quoted = " ".join(response.text[:_BODY_QUOTE].split())
            raise PrometheusError(
                f"Prometheus at {self.url} answered HTTP {response.status_code}"
                + (f": {quoted}" if quoted else "")
            )
        try:
            data = body["data"]
            kind, result = data["resultType"], data["result"]
            if kind == "vector":
                return [(dict(item["metric"]), _number(item["value"][1])) for item in result]
            if kind == "scalar":
                return [({}, _number(result[1]))]
        except (KeyError, IndexError, TypeError) as exc:
            raise PrometheusError(
                f"Prometheus sent an answer this client cannot read: {exc!r}"
            ) from exc
        raise PrometheusError(f"query returned a {kind}, expected a vector or a scalar")
