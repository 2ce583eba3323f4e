"""A real Kubernetes control plane on loopback, for tests and benchmarks.

kube-apiserver + etcd + kube-controller-manager (so garbage collection and CronJob -> Job
work) + kube-scheduler + kwok (fake nodes that make pods Running and Ready), all built
from the official Go modules by hack/kube/build.sh. Like ``kopf.testing``, this ships in
the package so the cluster tests and the benchmarks share one launcher.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

KUBE_VERSION = "1.37.2"
ADMIN = "admin"
# kwok pods run no code; in this namespace kwok serves ControlPlane.pod_log_file as the log
# of every container, so `kubectl logs` and the pods/log API answer like a kubelet would.
POD_LOGS_NAMESPACE = "kwok-logs"
# kwok pods run no code, so none writes a termination message: a Job's pod with this
# annotation completes with its value as every container's termination message, as the
# kubelet would report what the container wrote to its terminationMessagePath.
TERMINATION_MESSAGE_ANNOTATION = "testing.starkmatter.io/termination-message"


def bin_dir() -> Path:
    explicit = os.environ.get("STARKMATTER_KUBE_BIN")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "starkmatter" / f"kube-v{KUBE_VERSION}"


def missing_binaries() -> list[str]:
    names = [
        "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
        "kubectl", "helm",
    ]  # fmt: skip
    return [n for n in names if not (bin_dir() / n).exists()]


def die_with_parent() -> None:
    """preexec_fn: the kernel kills the child when the test process dies, however it dies,
    so no apiserver or etcd outlives an interrupted run."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rsa_key_pem() -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@dataclasses.dataclass
class ControlPlane:
    workdir: Path
    with_nodes: bool = True
    api_port: int = 0
    etcd_port: int = 0
    admin_token: str = dataclasses.field(default_factory=lambda: secrets.token_hex(16))
    procs: dict[str, subprocess.Popen[bytes]] = dataclasses.field(default_factory=dict)
    _logs: list[IO[bytes]] = dataclasses.field(default_factory=list)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "certs" / "apiserver.crt"

    @property
    def pod_log_file(self) -> Path:
        """What every container in POD_LOGS_NAMESPACE logs (see write_pod_log)."""
        return self.workdir / "pod-logs" / "container.log"

    def write_pod_log(self, text: str) -> None:
        """Set the log of every container in POD_LOGS_NAMESPACE, in the CRI log format a
        kubelet reads (`<RFC 3339 time> stdout F <line>`)."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
        lines = [f"{now} stdout F {line}\n" for line in text.splitlines()]
        self.pod_log_file.write_text("".join(lines))

    def _spawn(self, name: str, args: Sequence[str]) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        self._logs.append(log)
        self.procs[name] = subprocess.Popen(
            [str(bin_dir() / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _wait(self, name: str, check: Any, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.log_tail(name)}")
            with contextlib.suppress(OSError, ValueError):
                if check():
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{name} not ready after {timeout}s:\n{self.log_tail(name)}")

    def _get(self, url: str) -> str:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        request = urllib.request.Request(  # noqa: S310 (loopback https only)
            url, headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        with urllib.request.urlopen(request, context=context, timeout=5) as answer:  # noqa: S310
            return str(answer.read().decode())

    def start(self) -> ControlPlane:
        self.workdir.mkdir(parents=True, exist_ok=True)
        certs = self.workdir / "certs"
        certs.mkdir(exist_ok=True)
        private, public = _rsa_key_pem()
        (self.workdir / "sa.key").write_bytes(private)
        (self.workdir / "sa.pub").write_bytes(public)
        (self.workdir / "tokens.csv").write_text(
            f"{self.admin_token},{ADMIN},{ADMIN},system:masters\n"
        )
        self.etcd_port, peer_port = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn(
            "etcd",
            [
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--listen-metrics-urls=",
                # Test data is thrown away: durability would only cost time.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", lambda: urllib.request.urlopen(f"{etcd_url}/health", timeout=2))  # noqa: S310
        self.api_port = free_port()
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--cert-dir={certs}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={self.workdir / 'sa.pub'}",
                f"--service-account-signing-key-file={self.workdir / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16",
                # On loopback there is no node IP to publish as the kubernetes Service.
                "--endpoint-reconciler-type=none",
                # Pod logs are fetched from kwok's kubelet endpoint on the node's InternalIP
                # (the node's Hostname address does not resolve here).
                "--kubelet-preferred-address-types=InternalIP",
                "--max-requests-inflight=1000",
                "--max-mutating-requests-inflight=500",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
            ],
        )
        self._wait(
            "kube-apiserver",
            lambda: self.ca_file.exists() and self._get(f"{self.server}/readyz") == "ok",
        )
        self._write_kubeconfig(self.kubeconfig, ADMIN, self.admin_token, "default")
        kubeconfig = f"--kubeconfig={self.kubeconfig}"
        self._spawn(
            "kube-controller-manager",
            [
                kubeconfig,
                "--controllers=*,-serviceaccount-token",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--use-service-account-credentials=false",
                "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10",
                "--concurrent-gc-syncs=20",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
            ],
        )
        if self.with_nodes:
            self._spawn(
                "kube-scheduler",
                [
                    kubeconfig,
                    "--leader-elect=false",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                    "--kube-api-qps=500",
                    "--kube-api-burst=1000",
                ],
            )
            stages = bin_dir() / "kwok-stages"
            kubelet_port = free_port()
            self._spawn(
                "kwok",
                [
                    kubeconfig,
                    "--manage-all-nodes=true",
                    # kwok's kubelet endpoint (pod logs), on the node's address and port.
                    f"--server-address=127.0.0.1:{kubelet_port}",
                    "--node-ip=127.0.0.1",
                    f"--node-port={kubelet_port}",
                    f"--tls-cert-file={certs / 'apiserver.crt'}",
                    f"--tls-private-key-file={certs / 'apiserver.key'}",
                    *(f"--config={p}" for p in sorted(stages.glob("*.yaml"))),
                    f"--config={self._pod_logs_config()}",
                    f"--config={self._termination_message_stage()}",
                ],
            )
            self.kubectl("apply", "-f", "-", input=json.dumps(_node("kwok-node-0")))
        return self

    def _pod_logs_config(self) -> Path:
        self.pod_log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pod_log_file.touch()
        logs = {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "ClusterLogs",
            "metadata": {"name": "pod-logs"},
            "spec": {
                "selector": {"matchNamespaces": [POD_LOGS_NAMESPACE]},
                "logs": [{"containers": [], "logsFile": str(self.pod_log_file)}],
            },
        }
        path = self.workdir / "kwok-pod-logs.yaml"
        path.write_text(json.dumps(logs))
        return path

    def _termination_message_stage(self) -> Path:
        # kwok's own pod-complete stage with the message added; weight 1 against that
        # stage's 0, so kwok always picks this one for the pods it selects.
        template = """
{{ $now := Now }}
{{ $message := index .metadata.annotations "ANNOTATION" }}
containerStatuses:
{{ range $index, $item := .spec.containers }}
- image: {{ $item.image | Quote }}
  name: {{ $item.name | Quote }}
  ready: false
  restartCount: 0
  started: false
  state:
    terminated:
      exitCode: 0
      finishedAt: {{ $now | Quote }}
      message: {{ $message | Quote }}
      reason: Completed
      startedAt: {{ $now | Quote }}
{{ end }}
phase: Succeeded
""".replace("ANNOTATION", TERMINATION_MESSAGE_ANNOTATION)
        stage = {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "Stage",
            "metadata": {"name": "pod-complete-with-termination-message"},
            "spec": {
                "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
                "weight": 1,
                "selector": {
                    "matchExpressions": [
                        {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                        {"key": ".status.phase", "operator": "In", "values": ["Running"]},
                        {
                            "key": ".metadata.ownerReferences.[].kind",
                            "operator": "In",
                            "values": ["Job"],
                        },
                        {
                            "key": f'.metadata.annotations["{TERMINATION_MESSAGE_ANNOTATION}"]',
                            "operator": "Exists",
                        },
                    ]
                },
                "next": {"statusTemplate": template},
            },
        }
        path = self.workdir / "kwok-termination-message.yaml"
        path.write_text(json.dumps(stage))
        return path

    def _write_kubeconfig(self, path: Path, user: str, token: str, namespace: str) -> None:
        ca = base64.b64encode(self.ca_file.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": self.server, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "local",
                    "context": {"cluster": "local", "user": user, "namespace": namespace},
                }
            ],
            "current-context": "local",
        }
        path.write_text(json.dumps(config))
        path.chmod(0o600)

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path) -> Path:
        """A kubeconfig that acts as a ServiceAccount, so RBAC is really exercised."""
        token = self.kubectl(
            "create", "token", name, "-n", namespace, "--duration=24h"
        ).stdout.strip()
        self._write_kubeconfig(path, f"{namespace}-{name}", token, namespace)
        return path

    def kubectl(
        self,
        *args: str,
        input: str | None = None,  # noqa: A002 (subprocess's own name)
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(bin_dir() / "kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bin_dir() / "helm"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "HELM_CACHE_HOME": str(self.workdir / "helm-cache"),
                 "HELM_CONFIG_HOME": str(self.workdir / "helm-config"),
                 "HELM_DATA_HOME": str(self.workdir / "helm-data")},
        )  # fmt: skip

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def stop(self) -> None:
        # The apiserver shuts down slowly once etcd is gone, so etcd goes last.
        order = ["kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]
        for name in order:
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()


def _node(name: str) -> dict[str, Any]:
    capacity = {"cpu": "64", "memory": "512Gi", "pods": "2000"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
        },
        "spec": {},
        "status": {"allocatable": capacity, "capacity": capacity},
    }


@contextlib.contextmanager
def control_plane(with_nodes: bool = True, keep: bool = False) -> Iterator[ControlPlane]:
    keep = keep or bool(os.environ.get("STARKMATTER_KEEP_KUBE"))
    workdir = Path(tempfile.mkdtemp(prefix="starkmatter-kube-"))
    plane = ControlPlane(workdir, with_nodes=with_nodes)
    try:
        yield plane.start()
    finally:
        plane.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
