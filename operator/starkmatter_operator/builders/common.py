"""Pieces every builder shares: names, labels, owner references, the restricted pod
security profile and the container shape of the one platform image."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from starkmatter_operator import config

Manifest = dict[str, Any]
Body = Mapping[str, Any]

CONFIG_DIR = "/etc/starkmatter/config"
METRICS_PORT = 9100
# The image's user: any non-zero id satisfies the restricted profile; this one is fixed so
# volumes (fsGroup) and the Dockerfile agree.
RUN_AS_USER = 10001


class InvalidSpec(Exception):
    """The CR passed the apiserver's schema but the operator still cannot act on it."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclasses.dataclass(frozen=True)
class SecretKeyRef:
    """A key of a Secret in the CR's namespace that a child needs: what the Degraded message
    names when the kubelet reports it missing (the operator cannot read Secrets)."""

    name: str
    key: str | None
    field: str  # where in the CR the reference comes from, for the Degraded message


def spec_secret_ref(spec: Mapping[str, Any], field: str, default_name: str) -> SecretKeyRef:
    """The Secret key a CR names in ``spec.<field>`` (``{name, key}``), with our defaults."""
    ref = spec.get(field) or {}
    return SecretKeyRef(ref.get("name", default_name), ref.get("key", "url"), f"spec.{field}")


def credentials_refs(spec: Mapping[str, Any]) -> list[SecretKeyRef]:
    """The provider credentials Secret, when the CR names one."""
    creds = spec.get("credentialsSecretRef")
    if not creds:
        return []
    return [SecretKeyRef(creds["name"], creds.get("key", "token"), "spec.credentialsSecretRef")]


def name_of(body: Body) -> str:
    return str(body["metadata"]["name"])


def namespace_of(body: Body) -> str:
    return str(body["metadata"].get("namespace") or "default")


def spec_of(body: Body) -> Mapping[str, Any]:
    spec = body.get("spec") or {}
    assert isinstance(spec, Mapping)
    return spec


def labels(body: Body, component: str) -> dict[str, str]:
    kind = str(body.get("kind", "")).lower()
    return {
        "app.kubernetes.io/name": "starkmatter",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/instance": name_of(body),
        "app.kubernetes.io/managed-by": config.MANAGED_BY,
        "app.kubernetes.io/part-of": "starkmatter",
        "starkmatter.io/owner-kind": kind,
        "starkmatter.io/owner-name": name_of(body),
    }


def selector(body: Body, component: str) -> dict[str, str]:
    """Labels that identify a workload's pods; a Deployment selector is immutable, so it
    only uses values that never change for a given CR."""
    kind = str(body.get("kind", "")).lower()
    return {
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/instance": name_of(body),
        "starkmatter.io/owner-kind": kind,
    }


def owner_reference(body: Body) -> dict[str, Any]:
    return {
        "apiVersion": str(body.get("apiVersion", config.API_VERSION)),
        "kind": str(body["kind"]),
        "name": name_of(body),
        "uid": str(body["metadata"]["uid"]),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(body: Body, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace_of(body),
        "labels": labels(body, component),
        "ownerReferences": [owner_reference(body)],
    }


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def content_hash(text: str) -> str:
    """Short digest put on pod templates so that a changed config rolls the pods."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pod_security_context() -> dict[str, Any]:
    """The Pod Security "restricted" profile, at pod level."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """The Pod Security "restricted" profile, at container level."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def secret_env(var: str, ref: Mapping[str, Any], default_name: str) -> dict[str, Any]:
    return {
        "name": var,
        "valueFrom": {
            "secretKeyRef": {
                "name": str(ref.get("name", default_name)),
                "key": str(ref.get("key", "url")),
            }
        },
    }


def resources(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Requests from the CR; memory is also the limit (a leak is killed, not swapped)."""
    cpu = str(spec.get("cpu", "100m"))
    memory = str(spec.get("memory", "256Mi"))
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}}


def http_probes(port: int | str) -> dict[str, Any]:
    return {
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": port},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": port},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": port},
            "periodSeconds": 2,
            "failureThreshold": 60,
        },
    }


def container(
    cfg: config.OperatorConfig,
    *,
    name: str,
    args: list[str],
    env: list[dict[str, Any]],
    resources_spec: Mapping[str, Any] | None = None,
    ports: list[dict[str, Any]] | None = None,
    probes: dict[str, Any] | None = None,
    mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "image": cfg.image,
        "imagePullPolicy": cfg.image_pull_policy,
        "args": args,
        # Servers and probes must listen on the pod's address (the default is loopback).
        "env": [
            {"name": "STARKMATTER_ENV", "value": "prod"},
            {"name": "STARKMATTER_API_HOST", "value": "0.0.0.0"},  # noqa: S104
            *env,
        ],
        "resources": resources(resources_spec or {}),
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *(mounts or [])],  # noqa: S108
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if ports:
        out["ports"] = ports
    if probes:
        out.update(probes)
    return out


def pod_spec(
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    *,
    restart_policy: str = "Always",
) -> dict[str, Any]:
    return {
        # Workloads never talk to the Kubernetes API, so they get no token.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": restart_policy,
        "securityContext": pod_security_context(),
        "containers": containers,
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}, *volumes],
    }


def config_map(body: Body, name: str, component: str, filename: str, text: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(body, name, component),
        "data": {filename: text},
    }


def config_volume(configmap: str) -> dict[str, Any]:
    return {"name": "config", "configMap": {"name": configmap}}


def config_mount() -> dict[str, Any]:
    return {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}


def deployment(
    body: Body,
    *,
    name: str,
    component: str,
    replicas: int | None,
    pod: dict[str, Any],
    template_annotations: dict[str, str],
    strategy: str = "RollingUpdate",
) -> Manifest:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(body, component)},
        "strategy": {"type": strategy},
        "revisionHistoryLimit": 3,
        "template": {
            "metadata": {
                "labels": {**labels(body, component), **selector(body, component)},
                "annotations": template_annotations,
            },
            "spec": pod,
        },
    }
    if replicas is not None:
        # Left out when an HPA owns the count, so applying never fights the autoscaler.
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(body, name, component),
        "spec": spec,
    }


def cron_job(
    body: Body,
    *,
    name: str,
    component: str,
    schedule: str,
    time_zone: str,
    suspend: bool,
    pod: dict[str, Any],
    template_annotations: dict[str, str],
    backoff_limit: int,
    active_deadline_s: int,
) -> Manifest:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata(body, name, component),
        "spec": {
            "schedule": schedule,
            "timeZone": time_zone,
            "suspend": suspend,
            # A run that overlaps the previous one would archive or fetch the same rows twice.
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels(body, component)},
                "spec": {
                    "backoffLimit": backoff_limit,
                    "activeDeadlineSeconds": active_deadline_s,
                    "ttlSecondsAfterFinished": 86400,
                    "template": {
                        "metadata": {
                            "labels": labels(body, component),
                            "annotations": template_annotations,
                        },
                        "spec": pod,
                    },
                },
            },
        },
    }
