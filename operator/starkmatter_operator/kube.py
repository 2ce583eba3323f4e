"""A small asyncio client for the few Kubernetes API calls the operator makes.

Kopf watches and patches the custom resources itself; children are written with
server-side apply, so one idempotent PATCH per child both creates it and puts back any
field someone changed (drift correction), and never overwrites fields it does not own
(such as replicas set by an HPA).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from starkmatter_operator import config, metrics

# (apiVersion, kind) -> plural. Only what the operator reads or writes (never Secrets: its
# role grants no access to them).
PLURALS: dict[tuple[str, str], str] = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("v1", "Namespace"): "namespaces",
    ("apps/v1", "Deployment"): "deployments",
    ("batch/v1", "CronJob"): "cronjobs",
    ("batch/v1", "Job"): "jobs",
    ("v1", "Pod"): "pods",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrules",
    (config.API_VERSION, "MarketFeed"): "marketfeeds",
    (config.API_VERSION, "NewsSource"): "newssources",
    (config.API_VERSION, "RetentionPolicy"): "retentionpolicies",
    (config.API_VERSION, "AlertRule"): "alertrules",
}
TOKEN_REREAD_S = 60.0
SA_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class ApiError(Exception):
    """A non-2xx answer from the apiserver, with the Status message it gave."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclasses.dataclass(frozen=True)
class Credentials:
    server: str
    token: str | None
    ssl_context: ssl.SSLContext | bool


def path_for(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    plural = PLURALS[(api_version, kind)]
    out = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    return f"{out}/{name}" if name else out


class Kube:
    """One shared HTTP connection pool to the apiserver."""

    def __init__(
        self,
        creds: Callable[[], Credentials],
        *,
        connections: int = 32,
        discovery_ttl_s: float = 60.0,
    ) -> None:
        self._discovery_ttl_s = discovery_ttl_s
        # Credentials come from Kopf's login, which happens after the client is made.
        self._creds_source = creds
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._creds: Credentials | None = None
        self._token: tuple[float, str] | None = None
        self._discovery: dict[str, bool] = {}

    def _connect(self) -> tuple[aiohttp.ClientSession, Credentials]:
        # Credentials (and the SSL context, costly to build) are resolved once, not per call.
        if self._creds is None:
            self._creds = self._creds_source()
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._connections, ssl=self._creds.ssl_context)
            self._session = aiohttp.ClientSession(
                connector=connector,
                # No total limit: under load a request may first wait for a free connection.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
            )
        return self._session, self._creds

    def _headers(self, creds: Credentials) -> dict[str, str]:
        token = creds.token
        # A projected service-account token is rotated on disk: re-read it every minute.
        if SA_TOKEN.exists():
            now = time.monotonic()
            if self._token is None or now - self._token[0] > TOKEN_REREAD_S:
                self._token = (now, SA_TOKEN.read_text().strip())
            token = self._token[1]
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        text: bool = False,
    ) -> Any:
        session, creds = self._connect()
        metrics.API_REQUESTS.labels(method, metrics.resource_of(path)).inc()
        accept = "application/json, */*" if text else "application/json"
        headers = {**self._headers(creds), "Accept": accept}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        async with session.request(
            method, creds.server + path, params=params, data=data, headers=headers
        ) as response:
            answer = await response.text()
            if response.status == 401:
                # Pick up a re-login by Kopf or a rotated token on the next call.
                self._creds, self._token = None, None
            if response.status >= 400:
                try:
                    status = json.loads(answer)
                    raise ApiError(
                        response.status,
                        str(status.get("reason", "")),
                        str(status.get("message", answer)),
                    )
                except ValueError:
                    raise ApiError(response.status, "", answer) from None
            if text:
                return answer
            return json.loads(answer) if answer else None

    async def apply(
        self, manifest: Mapping[str, Any], *, manager: str = config.FIELD_MANAGER
    ) -> Any:
        meta = manifest["metadata"]
        return await self.request(
            "PATCH",
            path_for(manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"]),
            params={"fieldManager": manager, "force": "true"},
            body=manifest,
            content_type="application/apply-patch+yaml",
        )

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Any:
        try:
            return await self.request("GET", path_for(api_version, kind, namespace, name))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str
    ) -> list[Any]:
        answer = await self.request(
            "GET",
            path_for(api_version, kind, namespace),
            params={"labelSelector": label_selector},
        )
        return list(answer.get("items") or [])

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        try:
            await self.request(
                "DELETE",
                path_for(api_version, kind, namespace, name),
                body={"propagationPolicy": "Background"},
            )
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        return True

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Any:
        return await self.request(
            "PATCH",
            path_for(api_version, kind, namespace, name) + "/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    async def serves(self, group_version: str, plural: str) -> bool:
        """Whether the apiserver serves a resource (e.g. PrometheusRule), cached briefly."""
        key = f"{group_version}/{plural}"
        if key not in self._discovery:
            try:
                answer = await self.request("GET", f"/apis/{group_version}")
                found = any(r.get("name") == plural for r in answer.get("resources", []))
            except ApiError as e:
                if e.status != 404:
                    raise
                found = False
            self._discovery[key] = found
            # Forget the answer after a while so that a CRD installed later is noticed.
            asyncio.get_running_loop().call_later(
                self._discovery_ttl_s, self._discovery.pop, key, None
            )
        return self._discovery[key]
