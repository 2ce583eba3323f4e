"""Tier 3: a real control plane (kube-apiserver, etcd, controller-manager, scheduler, kwok)
on loopback, and the operator running against it as its own ServiceAccount."""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from starkmatter_operator import testing

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "starkmatter"
OPERATOR_NS = "starkmatter-system"
RELEASE = "it"
BUILD_ERROR = Path(testing.bin_dir()) / "BUILD-ERROR.txt"
_namespaces = itertools.count(1)


def _missing_reason() -> str | None:
    missing = testing.missing_binaries()
    if not missing:
        return None
    detail = BUILD_ERROR.read_text()[-2000:] if BUILD_ERROR.exists() else "run: make k8s-tools"
    return f"kube binaries missing ({', '.join(missing)}): {detail}"


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(RuntimeError, KeyError, IndexError, TypeError):
            last = check()
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def chart_objects(*templates: str, release: str = RELEASE, namespace: str = OPERATOR_NS) -> str:
    args = [str(testing.bin_dir() / "helm"), "template", release, str(CHART), "-n", namespace]
    for t in templates:
        args += ["--show-only", f"templates/{t}"]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="session")
def cluster() -> Iterator[testing.ControlPlane]:
    reason = _missing_reason()
    assert reason is None, reason
    with testing.control_plane() as plane:
        plane.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        yield plane


class OperatorProcess:
    """The operator as a subprocess acting as the chart's ServiceAccount."""

    def __init__(
        self,
        plane: testing.ControlPlane,
        kubeconfig: Path,
        env: dict[str, str],
        *,
        name: str = "operator",
        peering: str = f"{RELEASE}-operator",
    ):
        self.plane = plane
        self.kubeconfig = kubeconfig
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_port = 0
        self.metrics_port = 0
        self.log_path = plane.workdir / f"{name}.log"
        self.peering = peering
        self._log: Any = None

    def start(self) -> OperatorProcess:
        self.health_port, self.metrics_port = testing.free_port(), testing.free_port()
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "starkmatter_operator",
                "--peering", self.peering,
                "--liveness", f"http://127.0.0.1:{self.health_port}/healthz",
            ],
            env={
                **os.environ,
                "KUBECONFIG": str(self.kubeconfig),
                "STARKMATTER_OPERATOR_METRICS_PORT": str(self.metrics_port),
                "STARKMATTER_OPERATOR_ALERTS_NAMESPACE": OPERATOR_NS,
                "STARKMATTER_OPERATOR_IMAGE": "starkmatter/starkmatter:test",
                "STARKMATTER_OPERATOR_DEBOUNCE": "0.1",
                **self.env,
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=testing.die_with_parent,
        )  # fmt: skip
        wait_for(self.healthy, timeout=60, what="operator liveness endpoint")
        return self

    def healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited:\n{self.log_tail()}")
        with contextlib.suppress(OSError):
            url = f"http://127.0.0.1:{self.health_port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as answer:
                return bool(answer.status == 200)
        return False

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return str(answer.read().decode())

    def reconciles(self) -> float:
        """Reconciles this process has run so far (its own Prometheus counter)."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith("starkmatter_operator_reconciles_total{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster: testing.ControlPlane) -> Path:
    """The chart's own ServiceAccount and RBAC, so the operator gets exactly that much."""
    cluster.kubectl("create", "namespace", OPERATOR_NS)
    rbac = chart_objects(
        "operator-serviceaccount.yaml",
        "operator-clusterrole.yaml",
        "operator-clusterrolebinding.yaml",
        "operator-peering.yaml",
    )
    cluster.kubectl("apply", "-f", "-", input=rbac)
    return cluster.service_account_kubeconfig(
        OPERATOR_NS, f"{RELEASE}-operator", cluster.workdir / "operator.kubeconfig"
    )


@pytest.fixture(scope="session")
def heartbeat_redis_url(redis_server: Any) -> str:
    return str(redis_server.url)


@pytest.fixture(scope="session")
def alerts_metrics_url() -> Iterator[str]:
    """The alert evaluator's own gauge, served the way the evaluator serves it."""
    import prometheus_client

    from starkmatter.alerts import evaluating

    assert evaluating.FIRING is not None
    port = testing.free_port()
    server, thread = prometheus_client.start_http_server(port, addr="127.0.0.1")
    yield f"http://127.0.0.1:{port}/metrics"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="session")
def operator(
    cluster: testing.ControlPlane,
    operator_kubeconfig: Path,
    heartbeat_redis_url: str,
    alerts_metrics_url: str,
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        cluster,
        operator_kubeconfig,
        {
            "STARKMATTER_OPERATOR_REDIS_URL": heartbeat_redis_url,
            "STARKMATTER_OPERATOR_ALERTS_METRICS_URL": alerts_metrics_url,
            "STARKMATTER_OPERATOR_STATUS_INTERVAL": "1",
            "STARKMATTER_OPERATOR_DISCOVERY_TTL": "1",
        },
    ).start()
    yield process
    process.stop()


def platform_secrets(namespace: str, *, skip: tuple[str, ...] = ()) -> str:
    def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }

    secrets = [
        secret("starkmatter-database", {"url": "postgresql://u:p@db.invalid/sm"}),
        secret("starkmatter-redis", {"url": "redis://redis.invalid:6379/0"}),
        secret("starkmatter-jwt", {"public.pem": "-----BEGIN PUBLIC KEY-----"}),
        secret("starkmatter-archive", {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}),
    ]
    return yaml.safe_dump_all([s for s in secrets if s["metadata"]["name"] not in skip])


@pytest.fixture
def namespace(cluster: testing.ControlPlane) -> Iterator[str]:
    """A fresh namespace that enforces the restricted Pod Security profile."""
    name = f"t{next(_namespaces)}-{os.getpid()}"
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": name,
                    "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
                },
            }
        ),
    )
    cluster.kubectl("apply", "-f", "-", input=platform_secrets(name))
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
