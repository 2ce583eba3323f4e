"""``starkmatter orders`` as its Deployment runs it serves /healthz, /readyz and /metrics on
its metrics port (the chart probes it there), and stops cleanly on SIGTERM."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from starkmatter.core import embedded, settings
from tests.support import command_env, running_command, until_healthy

pytestmark = pytest.mark.timeout(90)


async def test_the_orders_command_answers_its_probes_and_stops_on_sigterm(
    config: settings.Settings, tmp_path: Path
) -> None:
    metrics_port = embedded.free_port()
    env = command_env(config, STARKMATTER_METRICS_PORT=str(metrics_port))
    log_path = tmp_path / "orders.log"
    async with (
        running_command(["orders"], env, log_path) as proc,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics_port}", timeout=5) as client,
    ):
        await until_healthy(client, proc, log_path)
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert "starkmatter_orders_outbox_lag_seconds" in (await client.get("/metrics")).text
        proc.terminate()
        assert await proc.wait() == 0, log_path.read_text()
