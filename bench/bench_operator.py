"""Operator: apply -> Ready latency (p50/p99) and 500 MarketFeeds at once (time, memory).

Against a real control plane on loopback (kube-apiserver, etcd, controller-manager,
scheduler, kwok) and the operator as a subprocess. Baselines measured in the same run:
- latency: a plain Deployment of the same pods applied with kubectl, until it is Ready
  (the Kubernetes machinery alone, without the operator);
- bulk: kubectl creating the same number of plain ConfigMaps (one object per feed), and
  the same 2000 child objects posted directly (no operator) until the controllers have
  observed every Deployment: the floor set by this cluster for that much work.
Targets: p50 under 1 s; 500 feeds in under 60 s with under 250 MB resident.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from starkmatter_operator import config, kube, testing  # noqa: E402
from starkmatter_operator.builders import marketfeed  # noqa: E402
from tests.cluster.conftest import platform_secrets  # noqa: E402

LATENCY_RUNS = int(os.environ.get("BENCH_LATENCY_RUNS", "20"))
BULK = int(os.environ.get("BENCH_FEEDS", "500"))
NS = "bench"


class Api:
    """Fast status polling and creation straight over HTTPS (kubectl would add ~100 ms per
    look). One kept-alive connection per thread: a TLS handshake per request would make
    the load generator, not the system under test, a large share of the machine's CPU."""

    def __init__(self, plane: testing.ControlPlane) -> None:
        self.plane = plane
        self.context = ssl.create_default_context(cafile=str(plane.ca_file))
        self.local = threading.local()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.plane.admin_token}"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        for attempt in (1, 2):
            connection = getattr(self.local, "connection", None)
            if connection is None:
                connection = http.client.HTTPSConnection(
                    "127.0.0.1", self.plane.api_port, context=self.context, timeout=30
                )
                self.local.connection = connection
            try:
                connection.request(method, path, body=data, headers=headers)
                answer = connection.getresponse()
                payload = answer.read()
            except (http.client.HTTPException, OSError):
                connection.close()
                self.local.connection = None
                if attempt == 2:
                    raise
                continue
            if answer.status >= 400:
                raise RuntimeError(f"{method} {path}: {answer.status} {payload[:300]!r}")
            return json.loads(payload) if payload else None
        raise AssertionError("unreachable")

    def post(self, path: str, body: dict[str, Any]) -> None:
        self._request("POST", path, body)

    def get(self, path: str) -> Any:
        return self._request("GET", path)


def feed(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "starkmatter.io/v1alpha1",
        "kind": "MarketFeed",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "symbols": ["AAPL", "MSFT"],
            "ingest": {"replicas": replicas},
            "gateway": {"replicas": replicas},
        },
    }


def is_ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
    )


def wait(check: Any, timeout: float = 120, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError("benchmark step timed out")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def plain_deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    container = testing_container()
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def testing_container() -> dict[str, Any]:
    return {"name": "c", "image": "starkmatter/starkmatter:bench"}


def main() -> None:
    missing = testing.missing_binaries()
    if missing:
        print(f"bench_operator: skipped, kube binaries missing: {missing} (make k8s-tools)")
        return
    with testing.control_plane() as plane:
        api = Api(plane)
        plane.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        plane.kubectl("create", "namespace", NS)
        plane.kubectl("apply", "-f", "-", input=platform_secrets(NS))
        log = (plane.workdir / "operator.log").open("wb")
        metrics_port = testing.free_port()
        operator = subprocess.Popen(
            [sys.executable, "-m", "starkmatter_operator", "--standalone",
             "--liveness", f"http://127.0.0.1:{testing.free_port()}/healthz"],
            env={**os.environ, "KUBECONFIG": str(plane.kubeconfig),
                 "STARKMATTER_OPERATOR_METRICS_PORT": str(metrics_port)},
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=testing.die_with_parent,
        )  # fmt: skip
        try:
            time.sleep(3)  # the operator lists and starts its watches
            run(plane, api, operator.pid, f"http://127.0.0.1:{metrics_port}/metrics")
        finally:
            operator.terminate()
            operator.wait(timeout=30)
            log.close()


def operator_requests(url: str) -> dict[str, float]:
    """The operator's own counters: apiserver requests by method and resource, Events."""
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (loopback only)
        text = answer.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("starkmatter_operator_api_requests_total{"):
            inside = line[line.index("{") + 1 : line.index("}")].replace('"', "")
            labels = dict(item.split("=", 1) for item in inside.split(","))
            key = f"{labels['method']} {labels['resource']}"
        elif line.startswith("starkmatter_operator_events_total{"):
            key = "POST events"
        else:
            continue
        counts[key] = counts.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def run(plane: testing.ControlPlane, api: Api, pid: int, metrics_url: str) -> None:
    base = f"/apis/starkmatter.io/v1alpha1/namespaces/{NS}/marketfeeds"

    # 1. apply -> Ready, one feed at a time (ingest 1 pod + gateway 1 pod, Ready for real).
    latencies = []
    for i in range(LATENCY_RUNS):
        name = f"lat-{i}"
        started = time.perf_counter()
        plane.kubectl("apply", "-f", "-", input=json.dumps(feed(name, 1)))
        wait(lambda n=name: is_ready(api.get(f"{base}/{n}")))
        latencies.append(time.perf_counter() - started)
    raw = []
    for i in range(LATENCY_RUNS):
        name = f"raw-{i}"
        started = time.perf_counter()
        plane.kubectl("apply", "-f", "-", input=json.dumps(plain_deployment(name)))
        path = f"/apis/apps/v1/namespaces/{NS}/deployments/{name}"

        def deployment_ready(p: str = path) -> bool:
            d = api.get(p)
            return bool((d.get("status") or {}).get("readyReplicas") == 2)

        wait(deployment_ready)
        raw.append(time.perf_counter() - started)
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    raw50 = statistics.median(raw)
    print(f"apply -> Ready MarketFeed (2 pods, {LATENCY_RUNS} runs): "
          f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms (target p50 < 1000 ms)")  # fmt: skip
    print(f"  baseline: plain Deployment of 2 pods apply -> Ready p50 {raw50 * 1000:.0f} ms; "
          f"ratio {p50 / raw50:.2f}x")  # fmt: skip

    # 2. 500 feeds created at once (no pods: this measures the operator, not the
    # scheduler), by 8 parallel API clients so that creation is not the bottleneck.
    feeds = [feed(f"bulk-{i}", 0) for i in range(BULK)]
    requests_before = operator_requests(metrics_url)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda f: api.post(base, f), feeds))
    created = time.perf_counter() - started

    def all_ready() -> bool:
        items = api.get(base)["items"]
        done = sum(1 for f in items if f["metadata"]["name"].startswith("bulk-") and is_ready(f))
        return done == BULK

    wait(all_ready, timeout=600, interval=0.5)
    bulk = time.perf_counter() - started
    rss, peak = rss_mb(pid)
    requests_after = operator_requests(metrics_url)
    children = api.get(
        f"/api/v1/namespaces/{NS}/configmaps?labelSelector=starkmatter.io/owner-kind%3Dmarketfeed"
    )["items"]
    assert len(children) >= BULK, len(children)

    maps = [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": f"plain-{i}", "namespace": NS}, "data": {"k": "v"}}
        for i in range(BULK)
    ]  # fmt: skip
    started = time.perf_counter()
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(maps), timeout=300)
    baseline = time.perf_counter() - started
    print(f"{BULK} MarketFeeds reconciled ({BULK * 4} children applied, every status Ready): "
          f"{bulk:.1f} s from the first create")  # fmt: skip
    print(f"  (the {BULK} creates took {created:.1f} s; target < 60 s)")
    print(f"  operator memory: {rss:.0f} MB resident now, {peak:.0f} MB peak (target < 250 MB)")
    per_feed = {
        k: (v - requests_before.get(k, 0)) / BULK
        for k, v in sorted(requests_after.items())
        if v - requests_before.get(k, 0) > 0
    }
    print(f"  operator round trips per feed: {sum(per_feed.values()):.2f} "
          f"({', '.join(f'{k} {v:.2f}' for k, v in per_feed.items())})")  # fmt: skip
    print(f"  baseline: kubectl apply of {BULK} plain ConfigMaps {baseline:.1f} s; "
          f"ratio {bulk / baseline:.2f}x")  # fmt: skip
    floor = raw_children(plane, api)
    print(f"  baseline: the same {BULK * 4} children posted without the operator, until every "
          f"Deployment is observed: {floor:.1f} s; ratio {bulk / floor:.2f}x")  # fmt: skip


def raw_children(plane: testing.ControlPlane, api: Api) -> float:
    raw_ns = "bench-raw"
    plane.kubectl("create", "namespace", raw_ns)
    cfg = config.OperatorConfig()
    objects = []
    for i in range(BULK):
        body = {**feed(f"raw-{i}", 0), "metadata": {"name": f"raw-{i}", "namespace": raw_ns,
                                                      "uid": "none"}}  # fmt: skip
        for manifest in marketfeed.build(body, cfg):
            del manifest["metadata"]["ownerReferences"]
            objects.append(manifest)
    started = time.perf_counter()

    def post(m: dict[str, Any]) -> None:
        api.post(kube.path_for(m["apiVersion"], m["kind"], raw_ns), m)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(post, objects))

    def observed() -> bool:
        items = api.get(f"/apis/apps/v1/namespaces/{raw_ns}/deployments")["items"]
        done = [d for d in items if (d.get("status") or {}).get("observedGeneration") == 1]
        return len(done) == 2 * BULK

    wait(observed, timeout=600, interval=0.5)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
