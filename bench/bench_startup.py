"""Start-up time of `starkmatter dev` (what `make run` runs), fresh and warm.

Baseline, measured in the same run: starting the bare embedded PostgreSQL and Redis on an
already initialised data directory — the floor that dev mode cannot go below.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import common
from starkmatter.core import embedded

RUNS = 3


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(1200):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("starkmatter dev exited before it was ready")
        time.sleep(0.05)
    raise RuntimeError("starkmatter dev never became ready")


def _start_dev(data_dir: Path) -> float:
    port = embedded.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARKMATTER_")}
    env.update(STARKMATTER_DATA_DIR=str(data_dir), STARKMATTER_API_PORT=str(port))
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "starkmatter.cli", "dev"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(port, proc)
        return time.perf_counter() - started
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def _start_bare(root: Path) -> float:
    started = time.perf_counter()
    pg = embedded.EmbeddedPostgres(root / "postgres").start()
    rd = embedded.EmbeddedRedis(root / "redis").start()
    elapsed = time.perf_counter() - started
    pg.stop()
    rd.stop()
    return elapsed


def main() -> None:
    fresh, warm, bare = [], [], []
    with tempfile.TemporaryDirectory(prefix="sm-bench-startup-") as tmp:
        for i in range(RUNS):
            data = Path(tmp) / f"run{i}"
            fresh.append(_start_dev(data))
            warm.append(_start_dev(data))
            bare.append(_start_bare(data / "bare"))  # first call initialises
            bare[-1] = _start_bare(data / "bare")
    f, w, b = common.median(fresh), common.median(warm), common.median(bare)
    common.report(
        f"starkmatter dev start-up to /readyz (median of {RUNS})",
        [
            ("fresh data dir", f, "s"),
            ("warm data dir", w, "s"),
            ("bare embedded pg+redis", b, "s"),
        ],
        baseline="bare embedded pg+redis",
    )
    common.ratio("warm / bare", w, b)
    common.ratio("fresh / bare", f, b)


if __name__ == "__main__":
    main()
