"""Market-data integration fixtures."""

from __future__ import annotations

import pytest

from starkmatter.core import logs


@pytest.fixture(autouse=True)
def _log_to_this_tests_stderr() -> None:
    # structlog's print logger keeps the stream it was configured with; another test may
    # have configured it with a capture stream pytest has since closed. Providers log on
    # reconnects, so each test logs to the stream that is open now.
    logs.configure("INFO", json=True)
