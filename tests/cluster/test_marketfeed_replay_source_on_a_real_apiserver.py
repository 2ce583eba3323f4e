"""A csv MarketFeed whose file comes from spec.source, from `kubectl apply` to stored ticks.

kwok pods run no code and mount nothing, so the kubelet's part is done here, from what the
apiserver holds: the ingest Deployment's pod template, the ConfigMaps and the Secrets of
the feed's namespace. Its volumes are projected into a folder, the replay volume is
bind-mounted read-only at the template's own mountPath (in a private user and mount
namespace, so the host is untouched), and the ingest entry point runs with the template's
args and env against the test PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis
import yaml

from starkmatter_operator import testing
from starkmatter_operator.builders import common
from tests.cluster.conftest import wait_for

SAMPLE = Path(__file__).with_name("marketfeed-csv-backfill.yaml")
FEED = "aapl-backfill"


def _get(cluster: testing.ControlPlane, kind: str, namespace: str, name: str) -> Any:
    result = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _ready(cluster: testing.ControlPlane, namespace: str) -> Any:
    feed = _get(cluster, "mf", namespace, FEED)
    conditions = (feed or {}).get("status", {}).get("conditions") or []
    return feed if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else None


def _apply_sample(cluster: testing.ControlPlane, namespace: str) -> dict[str, Any]:
    cluster.kubectl("apply", "-n", namespace, "-f", str(SAMPLE))
    feed = wait_for(lambda: _ready(cluster, namespace), 60, "backfill feed Ready")
    return dict(feed)


def test_csv_feed_with_a_config_map_source_gets_the_file_mounted_read_only(
    cluster: testing.ControlPlane, operator: Any, namespace: str
):
    feed = _apply_sample(cluster, namespace)
    # Ready means the ingest pod exists and runs: the restricted namespace admitted it.
    assert feed["status"]["readyReplicas"] == 2
    ingest = _get(cluster, "deployment", namespace, f"{FEED}-ingest")
    pod = ingest["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["replay"]["configMap"]["name"] == "aapl-2024-01-02"
    assert volumes["replay"]["configMap"]["items"] == [{"key": "aapl.csv", "path": "aapl.csv"}]
    (container,) = pod["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["replay"]["readOnly"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    config = _get(cluster, "configmap", namespace, f"{FEED}-feed")
    path = json.loads(config["data"]["feed.json"])["path"]
    assert path == f"{mounts['replay']['mountPath']}/aapl.csv"
    gateway = _get(cluster, "deployment", namespace, f"{FEED}-gateway")
    assert "replay" not in {v["name"] for v in gateway["spec"]["template"]["spec"]["volumes"]}


def _project_volumes(
    cluster: testing.ControlPlane, namespace: str, pod: dict[str, Any], root: Path
) -> dict[str, Path]:
    """The folder the kubelet would mount for each volume of the pod: configMap keys
    written out, a claim's hostPath PersistentVolume as it is, an emptyDir empty."""
    out = {}
    for volume in pod["volumes"]:
        folder = root / volume["name"]
        if "configMap" in volume:
            source = volume["configMap"]
            cm = _get(cluster, "configmap", namespace, source["name"])
            texts = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
            texts |= {k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()}
            items = source.get("items") or [{"key": k, "path": k} for k in texts]
            for item in items:
                target = folder / item["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(texts[item["key"]])
                target.chmod(item.get("mode", source.get("defaultMode", 0o644)))
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            bound = _get(cluster, "pvc", namespace, claim)
            assert bound["status"]["phase"] == "Bound", bound["status"]
            pv = _get(cluster, "pv", "default", bound["spec"]["volumeName"])
            folder = Path(pv["spec"]["hostPath"]["path"])
        else:
            assert "emptyDir" in volume, f"no projection for volume {volume}"
            folder.mkdir(parents=True)
        out[volume["name"]] = folder
    return out


def _env(container: dict[str, Any], secrets: dict[str, Any]) -> dict[str, str]:
    """The container's env as the kubelet resolves it (values and Secret keys)."""
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            data = secrets[ref["name"]]["data"][ref["key"]]
            env[item["name"]] = base64.b64decode(data).decode()
    return env


def _mount_script(mounts: list[tuple[Path, str, bool]]) -> str:
    """Shell lines that bind each (host folder, mountPath, readOnly) in a private mount
    namespace: a tmpfs over the deepest existing parent makes room for the mount point."""
    lines = ["set -e"]
    for host, mount_path, read_only in mounts:
        anchor = Path(mount_path).parent
        while not anchor.exists():
            anchor = anchor.parent
        assert anchor != Path("/"), mount_path
        lines += [
            f"mount -t tmpfs -o mode=755 tmpfs {shlex.quote(str(anchor))}",
            f"mkdir -p {shlex.quote(mount_path)}",
            f"mount --bind {shlex.quote(str(host))} {shlex.quote(mount_path)}",
        ]
        if read_only:
            lines.append(f"mount -o remount,ro,bind {shlex.quote(mount_path)}")
    lines.append('exec "$@"')
    return "\n".join(lines)


def _claim_with_the_sample_file(namespace: str, folder: Path) -> list[dict[str, Any]]:
    """A hostPath PersistentVolume holding the sample's CSV under 2024-01/, and a claim bound
    to it (the restricted profile forbids hostPath in a pod, not behind a claim)."""
    (cm, _) = [o for o in yaml.safe_load_all(SAMPLE.read_text()) if o]
    (folder / "2024-01").mkdir(parents=True)
    (folder / "2024-01" / "aapl.csv").write_text(cm["data"]["aapl.csv"])
    return [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{namespace}-files"},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"],
                  "storageClassName": "", "hostPath": {"path": str(folder)}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
         "metadata": {"name": "backfills", "namespace": namespace},
         "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "",
                  "volumeName": f"{namespace}-files",
                  "resources": {"requests": {"storage": "1Gi"}}}},
        {"apiVersion": "starkmatter.io/v1alpha1", "kind": "MarketFeed",
         "metadata": {"name": FEED, "namespace": namespace},
         "spec": {"provider": "csv", "symbols": ["AAPL"], "referencePrices": {"AAPL": "185.64"},
                  "gateway": {"replicas": 1},
                  "source": {"persistentVolumeClaim": {"claimName": "backfills",
                                                       "subPath": "2024-01/aapl.csv"}}}},
    ]  # fmt: skip


@pytest.mark.timeout(240)
@pytest.mark.parametrize("source", ["configMapRef", "persistentVolumeClaim"])
async def test_ingest_entry_point_replays_the_file_mounted_from_the_feeds_source(
    cluster: testing.ControlPlane,
    operator: Any,
    namespace: str,
    database_url: str,
    redis_server: Any,
    db: asyncpg.Connection[Any],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    source: str,
):
    heartbeats = redis.Redis.from_url(str(redis_server.url))
    request.addfinalizer(heartbeats.close)
    # A stamp left by the other parametrization would make the status check below vacuous.
    heartbeats.delete(f"feed:heartbeat:{FEED}")
    # The platform Secrets of the namespace point at the test's own servers.
    urls = {"starkmatter-database": database_url, "starkmatter-redis": str(redis_server.url)}
    cluster.kubectl(
        "apply", "-f", "-",
        input=yaml.safe_dump_all([
            {"apiVersion": "v1", "kind": "Secret",
             "metadata": {"name": name, "namespace": namespace},
             "stringData": {"url": url}}
            for name, url in urls.items()
        ]),
    )  # fmt: skip
    if source == "configMapRef":
        _apply_sample(cluster, namespace)
    else:
        objects = _claim_with_the_sample_file(namespace, tmp_path / "claim")
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
        request.addfinalizer(
            lambda: cluster.kubectl("delete", "pv", f"{namespace}-files", "--wait=false")
        )
        # Ready means the scheduler placed the pod with its claim bound.
        wait_for(lambda: _ready(cluster, namespace), 60, "feed on a claim Ready")
    ingest = _get(cluster, "deployment", namespace, f"{FEED}-ingest")
    assert ingest["spec"]["template"]["spec"]["volumes"][-1][source.removesuffix("Ref")]
    pod = ingest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    secrets = {
        s["metadata"]["name"]: s for s in cluster.get_json("secret", "-n", namespace)["items"]
    }
    folders = _project_volumes(cluster, namespace, pod, tmp_path / "volumes")

    env = _env(container, secrets)
    # /etc is not ours to mount over: the feed config is read from its projected folder.
    assert env["STARKMATTER_FEED_CONFIG"] == f"{common.CONFIG_DIR}/feed.json"
    env["STARKMATTER_FEED_CONFIG"] = str(folders["config"] / "feed.json")
    env["STARKMATTER_METRICS_PORT"] = str(testing.free_port())
    # Everything but the scratch /tmp and the config is mounted where the pod has it.
    mounts = [
        (folders[m["name"]], m["mountPath"], bool(m.get("readOnly")))
        for m in container["volumeMounts"]
        if m["name"] not in ("tmp", "config")
    ]
    assert [(m[1], m[2]) for m in mounts] == [("/var/lib/starkmatter/replay", True)]
    entry_point = str(Path(sys.executable).parent / "starkmatter")
    process = await asyncio.create_subprocess_exec(
        "unshare", "--user", "--map-root-user", "--mount", "sh", "-c", _mount_script(mounts),
        "sh", entry_point, *container["args"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("STARKMATTER_")}, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    seen: list[bytes] = []
    try:
        # A finished replay is reported and the worker stays up (a pod restarted after an
        # exit would replay the file again); a worker that cannot read its file retries.
        async with asyncio.timeout(120):
            while b'"ingest.replay_finished"' not in (seen[-1] if seen else b""):
                line = await process.stdout.readline()
                assert line, b"".join(seen).decode(errors="replace")[-3000:]
                seen.append(line)
        alive = process.returncode is None
        assert alive, "the worker exited after its replay"
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), 60)
        output = b"".join(seen) + rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output.decode(errors="replace")[-3000:]
    rows = await db.fetch(
        "SELECT price::text, size::text FROM market_ticks WHERE symbol = 'AAPL' ORDER BY ts"
    )
    assert [(r["price"], r["size"]) for r in rows] == [
        ("187.15000000", "100.00000000"), ("187.18000000", "250.00000000"),
        ("187.10000000", "50.00000000"), ("187.32000000", "300.00000000"),
    ]  # fmt: skip
    assert await db.fetchval("SELECT count(*) FROM market_rejections") == 0
    # The operator reads the worker's heartbeat: the MarketFeed says the replay finished.
    stamp = heartbeats.hget(f"feed:heartbeat:{FEED}", "replay_finished_ts")
    assert stamp is not None
    text = stamp.decode() if isinstance(stamp, bytes) else str(stamp)
    finished = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    want = finished.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")

    def reported() -> Any:
        feed = _get(cluster, "mf", namespace, FEED)
        status = (feed or {}).get("status", {})
        replay = [c for c in status.get("conditions") or [] if c["type"] == "ReplayFinished"]
        return status if replay and replay[0]["status"] == "True" else None

    status = wait_for(reported, 30, "ReplayFinished=True in the feed's status")
    assert status["replayFinishedTime"] == want
    (replay,) = [c for c in status["conditions"] if c["type"] == "ReplayFinished"]
    assert replay["reason"] == "ReplayFinished"
    assert f"stored at {want}" in replay["message"]
