"""`make run` on a fresh machine: starts from nothing, answers /readyz, keeps data on restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets

from starkmatter.core import embedded
from tests.support import sign_up

REPO = Path(__file__).resolve().parents[2]


def test_make_run_runs_the_dev_command_after_its_own_setup() -> None:
    plan = subprocess.run(
        ["make", "-n", "run"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "starkmatter dev" in plan


async def _start_dev(
    data_dir: Path, port: int, gateway_port: int | None = None, metrics_port: int | None = None
) -> tuple[asyncio.subprocess.Process, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STARKMATTER_", "ANTHROPIC_"))}
    env.update(
        STARKMATTER_DATA_DIR=str(data_dir),
        STARKMATTER_API_PORT=str(port),
        STARKMATTER_GATEWAY_PORT=str(gateway_port or embedded.free_port()),
        STARKMATTER_METRICS_PORT=str(metrics_port or embedded.free_port()),
    )
    started = time.monotonic()
    with _log_file(data_dir).open("ab") as log:  # the child keeps its own copy
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "starkmatter.cli",
            "dev",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:
        for _ in range(600):
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return proc, time.monotonic() - started
            except httpx.TransportError:
                pass
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
    proc.kill()
    raise AssertionError("starkmatter dev never became ready")


def _log_file(data_dir: Path) -> Path:
    return data_dir.parent / "dev-stderr.log"


async def _stop(proc: asyncio.subprocess.Process, data_dir: Path) -> int:
    """Ctrl-C, as a user would; a process that does not stop is killed and the test fails.
    A non-zero exit prints the end of the process's log."""
    proc.send_signal(signal.SIGINT)
    try:
        code = await asyncio.wait_for(proc.wait(), timeout=60)
        if code != 0:
            print(_log_file(data_dir).read_text(errors="replace")[-6000:])
        return code
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("starkmatter dev did not stop within 60 s of Ctrl-C") from None


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.mark.timeout(300)
async def test_fresh_start_is_ready_and_a_restart_keeps_a_registered_user(data_dir: Path) -> None:
    port = embedded.free_port()
    proc, fresh_s = await _start_dev(data_dir, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            created = await client.post(
                "/auth/register",
                json={"email": "keep@example.com", "password": "correct horse battery"},
            )
            assert created.status_code == 201
    finally:
        assert await _stop(proc, data_dir) == 0
    # Ctrl-C stopped the embedded servers too: nothing is left listening on their data.
    assert not (data_dir / "postgres" / "pgdata" / "postmaster.pid").exists()

    proc, warm_s = await _start_dev(data_dir, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            login = await client.post(
                "/auth/login",
                json={"email": "keep@example.com", "password": "correct horse battery"},
            )
            assert login.status_code == 200
            me = await client.get(
                "/auth/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"}
            )
            assert me.json()["email"] == "keep@example.com"
    finally:
        assert await _stop(proc, data_dir) == 0
    print(f"\ndev start-up: fresh {fresh_s:.2f}s, warm {warm_s:.2f}s")


@pytest.mark.timeout(300)
async def test_dev_platform_streams_quotes_and_fills_a_market_order(data_dir: Path) -> None:
    port, gateway_port = embedded.free_port(), embedded.free_port()
    proc, _ = await _start_dev(data_dir, port, gateway_port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            user = await sign_up(client)
            uri = f"ws://127.0.0.1:{gateway_port}/ws?token={user.access_token}"
            async with websockets.connect(uri) as ws:
                await ws.send(json.dumps({"op": "subscribe", "topics": ["market:quotes:AAPL"]}))
                kinds = set()
                async with asyncio.timeout(30):
                    while "update" not in kinds:
                        frame = json.loads(await ws.recv())
                        if frame.get("topic") == "market:quotes:AAPL":
                            kinds.add(frame["type"])
                assert frame["data"]["symbol"] == "AAPL"
            placed = await client.post(
                "/orders",
                headers=user.headers,
                json={
                    "symbol": "AAPL",
                    "side": "buy",
                    "type": "market",
                    "quantity": "5",
                    "time_in_force": "day",
                    "client_order_id": "e2e-1",
                },
            )
            assert placed.status_code == 201, placed.text
            order_id = placed.json()["id"]
            async with asyncio.timeout(30):
                while True:
                    order = (await client.get(f"/orders/{order_id}", headers=user.headers)).json()
                    if order["status"] == "Filled":
                        break
                    await asyncio.sleep(0.2)
            positions = (await client.get("/portfolio/positions", headers=user.headers)).json()
            assert [(p["symbol"], p["quantity"]) for p in positions] == [("AAPL", "5")]
    finally:
        assert await _stop(proc, data_dir) == 0


@pytest.mark.timeout(300)
async def test_dev_mode_serves_the_api_docs_and_the_metrics_of_its_services_apart(
    data_dir: Path,
) -> None:
    port, gateway_port, metrics_port = (embedded.free_port() for _ in range(3))
    proc, _ = await _start_dev(data_dir, port, gateway_port, metrics_port)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            public = f"http://127.0.0.1:{port}"
            assert (await http.get(f"{public}/docs")).status_code == 200
            assert "/orders" in (await http.get(f"{public}/openapi.json")).json()["paths"]
            assert (await http.get(f"{public}/metrics")).status_code == 404
            assert (await http.get(f"http://127.0.0.1:{gateway_port}/metrics")).status_code == 404
            text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
            # one listener for the one process: the API's requests (the readiness polls of
            # _start_dev) and the gateway's gauges
            assert (
                'starkmatter_http_request_duration_seconds_count{method="GET",route="/readyz"'
                in text
            )
            assert "starkmatter_gateway_connections" in text
    finally:
        assert await _stop(proc, data_dir) == 0
