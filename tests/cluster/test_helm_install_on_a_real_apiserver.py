"""The chart installs into a real apiserver (restricted Pod Security enforced) and leaves
nothing behind when uninstalled."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from starkmatter_operator import testing

CHART = Path(__file__).resolve().parents[2] / "charts" / "starkmatter"
NAMESPACE = "helm-smoke"


def test_helm_install_waits_for_ready_pods_and_uninstall_cleans_up(
    cluster: testing.ControlPlane, tmp_path: Path
):
    cluster.kubectl(
        "apply", "-f", "-",
        input=yaml.safe_dump({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NAMESPACE,
                         "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        }),
    )  # fmt: skip
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "database": {"url": "postgresql://u:p@db.invalid:5432/sm"},
                "redis": {"url": "redis://redis.invalid:6379/0"},
                "jwt": {"privateKey": "private", "publicKey": "public"},
                "postgresql": {"bundled": True, "persistence": {"enabled": False}},
                "ingress": {"enabled": True},
            }
        )
    )
    installed = cluster.helm(
        "install", "smoke", str(CHART), "-n", NAMESPACE, "-f", str(values),
        "--wait", "--timeout", "180s",
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    assert "StarkMatter" in installed.stdout  # NOTES.txt
    deployments = cluster.get_json("deployments", "-n", NAMESPACE)["items"]
    names = {d["metadata"]["name"] for d in deployments}
    assert {"smoke-api", "smoke-orders", "smoke-worker", "smoke-beat", "smoke-alerts",
            "smoke-web", "smoke-operator"} <= names  # fmt: skip
    for d in deployments:
        assert d["status"].get("readyReplicas") == d["spec"]["replicas"], d["metadata"]["name"]

    uninstalled = cluster.helm("uninstall", "smoke", "-n", NAMESPACE, "--wait")
    assert uninstalled.returncode == 0, uninstalled.stderr
    left = cluster.kubectl(
        "get", "deploy,svc,secret,cm,pdb,networkpolicy,ingress,sa",
        "-n", NAMESPACE, "-l", "app.kubernetes.io/instance=smoke", "-o", "name",
    ).stdout  # fmt: skip
    assert left.strip() == ""
    cluster_scoped = cluster.kubectl(
        "get", "clusterrole,clusterrolebinding", "-l", "app.kubernetes.io/instance=smoke",
        "-o", "name",
    ).stdout  # fmt: skip
    assert cluster_scoped.strip() == ""


def test_bundled_datastore_passwords_are_generated_once_and_kept_on_upgrade(
    cluster: testing.ControlPlane, tmp_path: Path
):
    namespace = "helm-redis"
    cluster.kubectl(
        "apply", "-f", "-",
        input=yaml.safe_dump({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace,
                         "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        }),
    )  # fmt: skip
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "jwt": {"privateKey": "private", "publicKey": "public"},
                "postgresql": {"bundled": True, "persistence": {"enabled": False}},
                "redisServer": {"bundled": True, "persistence": {"enabled": False}},
                "operator": {"enabled": False},
            }
        )
    )

    def secrets() -> tuple[str, str, str, str]:
        def read(name: str, key: str) -> str:
            data = cluster.get_json("secret", name, "-n", namespace)["data"]
            return base64.b64decode(data[key]).decode()

        return (
            read("dev-redis-auth", "password"), read("starkmatter-redis", "url"),
            read("dev-postgresql", "password"), read("starkmatter-database", "url"),
        )  # fmt: skip

    installed = cluster.helm(
        "install", "dev", str(CHART), "-n", namespace, "-f", str(values),
        "--wait", "--timeout", "180s",
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    assert "get secret dev-redis-auth" in installed.stdout  # NOTES.txt says where it is
    password, url, pg_password, pg_url = secrets()
    assert len(password) == 32 and len(pg_password) == 32 and password != pg_password
    assert url == f"redis://:{password}@dev-redis:6379/0"
    assert pg_url == f"postgresql://starkmatter:{pg_password}@dev-postgresql:5432/starkmatter"
    # The server's pod was admitted with the password file from the Secret.
    (pod,) = cluster.get_json("pods", "-n", namespace, "-l", "app.kubernetes.io/component=redis")[
        "items"
    ]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "auth"]
    assert volume["secret"]["secretName"] == "dev-redis-auth"

    # An upgrade finds the generated password with lookup: clients and server keep working.
    upgraded = cluster.helm(
        "upgrade", "dev", str(CHART), "-n", namespace, "-f", str(values),
        "--wait", "--timeout", "180s",
    )  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stderr
    assert secrets() == (password, url, pg_password, pg_url)

    uninstalled = cluster.helm("uninstall", "dev", "-n", namespace, "--wait")
    assert uninstalled.returncode == 0, uninstalled.stderr
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
