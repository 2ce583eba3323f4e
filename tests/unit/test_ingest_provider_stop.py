"""A stopping feed stops: a cancel is never lost to the reconnect loop."""

from __future__ import annotations

import asyncio

import pytest

from starkmatter.ingest.providers import base


class CloseOnCancel(base.Provider):
    """Turns the cancel into a connection error, as a socket library closing may do."""

    async def session(self, sink: base.Sink) -> None:
        self.mark_connected()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise OSError("connection closed while cancelling") from None


async def _sink(batch: list[base.Incoming]) -> None:
    return None


async def test_a_cancel_surfacing_as_a_connection_error_stops_the_provider() -> None:
    provider = CloseOnCancel("feed", backoff=base.Backoff(initial_s=0.01, maximum_s=0.01))
    task = asyncio.create_task(provider.run(_sink))
    await provider.connected.wait()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done, f"still running after the stop, {provider.sessions} sessions"
    assert task.cancelled() and provider.sessions == 1


async def test_a_real_connection_error_still_reconnects() -> None:
    class FailsOnce(base.Provider):
        async def session(self, sink: base.Sink) -> None:
            self.mark_connected()
            if self.sessions == 1:
                raise OSError("connection reset")
            await asyncio.sleep(3600)

    provider = FailsOnce("feed", backoff=base.Backoff(initial_s=0.01, maximum_s=0.01))
    task = asyncio.create_task(provider.run(_sink))
    async with asyncio.timeout(5):
        while provider.sessions < 2:  # noqa: ASYNC110 - the provider's own counter
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
