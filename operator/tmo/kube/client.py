"""A small async Kubernetes REST client: server-side apply, get, list, delete, status, events.

Thin on purpose: it knows the handful of kinds TMO owns (no discovery round-trips), counts its
requests (the reconcile benchmark reads them) and never logs request bodies, which may hold
Secret names and, in other callers, Secret data.
"""

from __future__ import annotations

import json
import os
import ssl
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import httpx

# kind -> plural. Every kind the operator applies, reads or deletes.
PLURALS = {
    "ConfigMap": "configmaps",
    "Service": "services",
    "Secret": "secrets",
    "Pod": "pods",
    "Event": "events",
    "Deployment": "deployments",
    "NetworkPolicy": "networkpolicies",
    "ScaledObject": "scaledobjects",
    "ServiceMonitor": "servicemonitors",
    "PrometheusRule": "prometheusrules",
    "HTTPRoute": "httproutes",
    "TransformerModel": "transformermodels",
    "Rollout": "rollouts",
    "SelfSubjectReview": "selfsubjectreviews",
    "Lease": "leases",
}
IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retryable(self) -> bool:
        # Conflicts, throttling and server errors pass; bad requests do not.
        return self.status in (409, 429) or self.status >= 500


def resource_path(
    api_version: str, kind: str, namespace: str | None, name: str | None = None
) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    tail = f"/{name}" if name else ""
    return f"{base}{ns}/{PLURALS[kind]}{tail}"


@dataclass
class Connection:
    """Where the API server is and how to authenticate (from a kubeconfig or in-cluster)."""

    host: str
    verify: ssl.SSLContext | bool
    headers: dict[str, str] = field(default_factory=dict)
    # In-cluster: the projected ServiceAccount token rotates, so it is re-read when it changes.
    token_file: str | None = None

    @classmethod
    def load(cls, kubeconfig: str | None = None) -> Connection:
        from kubernetes import client, config  # only for reading kubeconfig / in-cluster files

        cfg = client.Configuration()
        token_file = None
        try:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        except config.ConfigException:
            config.load_incluster_config(client_configuration=cfg)
            token_file = IN_CLUSTER_TOKEN
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.verify_ssl else False
        if isinstance(ctx, ssl.SSLContext) and cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        headers = {}
        # The kubernetes client names the bearer token "BearerToken" (older: "authorization").
        token = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
            "authorization"
        )
        if token:
            headers["Authorization"] = token if " " in token else f"Bearer {token}"
        return cls(host=cfg.host, verify=ctx, headers=headers, token_file=token_file)


class _TokenFileAuth(httpx.Auth):
    """Bearer token from a file, re-read when the file changes (kubelet rotates it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._mtime = -1.0
        self._token = ""

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        mtime = os.stat(self.path).st_mtime
        if mtime != self._mtime:
            with open(self.path, encoding="utf-8") as f:
                self._token = f.read().strip()
            self._mtime = mtime
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


class KubeClient:
    def __init__(self, connection: Connection, field_manager: str, timeout: float = 30) -> None:
        self.field_manager = field_manager
        self._http = httpx.AsyncClient(
            base_url=connection.host,
            verify=connection.verify,
            headers={**connection.headers, "User-Agent": f"{field_manager}/tmo"},
            timeout=timeout,
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=20),
            auth=_TokenFileAuth(connection.token_file) if connection.token_file else None,
        )
        self.requests: Counter[str] = Counter()
        self.writes_by_namespace: Counter[str] = Counter()
        self.requests_by_namespace: Counter[str] = Counter()

    @property
    def writes(self) -> int:
        return sum(n for verb, n in self.requests.items() if verb in WRITE_VERBS)

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        """The parsed response; None for 404. Raises ApiError for other failures."""
        self.requests[method] += 1
        parts = path.split("/")
        ns = parts[parts.index("namespaces") + 1] if "namespaces" in parts else ""
        self.requests_by_namespace[ns] += 1
        if method in WRITE_VERBS:
            self.writes_by_namespace[ns] += 1
        content = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if content is not None else {}
        r = await self._http.request(method, path, content=content, params=params, headers=headers)
        if r.status_code == 404:
            return None
        if r.status_code >= 400:
            try:
                status = r.json()
                raise ApiError(r.status_code, status.get("reason", ""), status.get("message", ""))
            except ValueError:
                raise ApiError(r.status_code, r.reason_phrase, r.text[:200]) from None
        return dict(r.json()) if r.content else {}

    async def apply(self, obj: dict[str, Any], field_manager: str | None = None) -> dict[str, Any]:
        """Server-side apply under the operator's field manager, taking over conflicting fields."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        result = await self._request(
            "PATCH",
            path,
            body=obj,
            params={"fieldManager": field_manager or self.field_manager, "force": "true"},
            content_type="application/apply-patch+yaml",
        )
        if result is None:  # 404 on apply: the kind itself is not served (CRD missing)
            raise ApiError(404, "NotFound", f"{obj['apiVersion']} {obj['kind']} is not served")
        return result

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        return await self._request("GET", resource_path(api_version, kind, namespace, name))

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector, "resourceVersion": "0"}
        if field_selector:
            params["fieldSelector"] = field_selector
        result = await self._request(
            "GET",
            resource_path(api_version, kind, namespace),
            # resourceVersion=0: served from the API server's watch cache, not etcd. Possibly a
            # little stale, which a level-triggered reconciler tolerates (events follow).
            params=params,
        )
        return list((result or {}).get("items", []))

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        await self._request(
            "DELETE",
            resource_path(api_version, kind, namespace, name),
            body={"propagationPolicy": "Background"},
        )

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource; the spec is never written by the operator."""
        return await self._request(
            "PATCH",
            resource_path(api_version, kind, namespace, name) + "/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    async def merge_patch(
        self, api_version: str, kind: str, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        """A JSON merge patch of the object (the CLI sets one annotation with it)."""
        return await self._request(
            "PATCH",
            resource_path(api_version, kind, namespace, name),
            body=body,
            content_type="application/merge-patch+json",
        )

    async def replace(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """PUT: conditional on metadata.resourceVersion (409 when someone wrote first)."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        return await self._request("PUT", path, body=obj)

    async def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        meta = obj["metadata"]
        return await self._request(
            "POST", resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace")), body=obj
        )

    async def served(self, group_version: str, kinds: frozenset[str]) -> bool:
        """Whether the API server serves every one of `kinds` in this group/version.

        Kinds, not just the group: a group is served as soon as one of its CRDs is installed
        (KEDA's TriggerAuthentication without ScaledObject, say), and applying a missing kind
        would then fail on every reconcile."""
        resources = await self._request("GET", f"/apis/{group_version}")
        if resources is None:
            return False
        served = {r.get("kind") for r in resources.get("resources", [])}
        return kinds <= served
