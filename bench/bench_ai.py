"""AI analysis: cache-hit latency of ``POST /ai/analyze`` (target p99 < 5 ms) and coalescing
of identical concurrent requests, within one API process and across two.

Set-up, as in production: two API server processes (uvicorn, the app of ``starkmatter api``)
on embedded PostgreSQL (fsync on: the history row of a hit is durable) and Redis; the real
SDK in those processes calls a loopback server that speaks the Messages API (in this
process, which counts the upstream calls).

Latency is measured by a client in its own process, one request at a time over a kept-alive
connection, so the load generator is not what is measured. Each cache hit is paired with
the baseline, measured in the same run, interleaved request by request: ``GET /auth/me``,
a trivial authenticated endpoint through the same stack (JWT + Redis session check + one
PostgreSQL read). The client also times the floors under it: a Redis GET and a durable
single-row INSERT commit (fsync) on the same servers. The API process reports its own
server-side time per request and its garbage-collector pauses, to say where a tail comes
from. Run under ``flock /work/bench.lock``; the machine is shared, so note ``uptime``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common
from starkmatter.core import embedded, migrating
from starkmatter.core.auth import keys
from tests.integration.ai import anthropic_server

HITS = int(os.environ.get("BENCH_AI_HITS", "3000"))
WARMUP = 300
CONCURRENT = int(os.environ.get("BENCH_AI_CONCURRENT", "50"))
"""Identical requests fired at once in the coalescing runs (split over the processes)."""
API_PROCESSES = 2


def _env(pg_url: str, redis_url: str, key_file: Path, fake_url: str, stats: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STARKMATTER_", "ANTHROPIC_", "BENCH_AI_STATS"))
    }
    env.update(
        STARKMATTER_ENV="prod",
        STARKMATTER_DATABASE_URL=pg_url,
        STARKMATTER_REDIS_URL=redis_url,
        STARKMATTER_JWT_PRIVATE_KEY_FILE=str(key_file),
        STARKMATTER_AI_QUOTA_PER_HOUR="1000000",
        STARKMATTER_AI_COALESCE_POLL_S="0.02",
        ANTHROPIC_API_KEY="bench-not-a-real-key",
        ANTHROPIC_BASE_URL=fake_url,
        BENCH_AI_STATS=str(stats),
    )
    return env


# ----------------------------------------------------------------------------- API process


def serve_api(port: int) -> None:
    """Child process: the API as ``starkmatter api`` runs it, plus two probes that write
    their figures to ``$BENCH_AI_STATS.{pid}`` on exit: server-side time of each request by
    path, and every garbage-collector pause."""
    import uvicorn

    from starkmatter.api import app as api_app
    from starkmatter.core import logs, settings

    config = settings.load()
    logs.configure(config.log_level, json=config.log_json)
    app = api_app.create_app(config)
    timings: dict[str, list[tuple[float, float]]] = {}
    """Per path: (start, milliseconds) of each request, start on this process's clock."""
    pauses: list[tuple[float, int, float]] = []
    """(start, generation, milliseconds) of each collection."""
    started: dict[str, float] = {}

    def on_gc(phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            started["gc"] = now
        else:
            pauses.append((started["gc"], info["generation"], (now - started["gc"]) * 1000))

    gc.callbacks.append(on_gc)

    async def timed(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        t0 = time.perf_counter()
        try:
            await app(scope, receive, send)
        finally:
            timings.setdefault(scope["path"], []).append((t0, (time.perf_counter() - t0) * 1000))

    profile = os.environ.get("BENCH_AI_PROFILE")
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        uvicorn.run(
            timed,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            proxy_headers=True,
        )
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(f"{profile}.{os.getpid()}")
        out = Path(f"{os.environ['BENCH_AI_STATS']}.{os.getpid()}")
        out.write_text(json.dumps({"timings": timings, "gc": pauses}))


# ----------------------------------------------------------------------------- client process


def client(ports: str, token: str, body: str, hits: int, pg_url: str, redis_url: str) -> None:
    """Child process: sequential requests over kept-alive connections; prints JSON.

    Each round: a hit on API process 1 (durable history row), ``GET /auth/me`` on it (the
    baseline), a hit on API process 2 (history row committed asynchronously)."""
    import redis

    conns = [http.client.HTTPConnection("127.0.0.1", int(p)) for p in ports.split(",")]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(
        method: str, path: str, payload: str | None = None, to: int = 0
    ) -> tuple[float, bytes]:
        conn = conns[to]
        t0 = time.perf_counter()
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        elapsed = (time.perf_counter() - t0) * 1000
        if resp.status not in (200, 202):
            raise RuntimeError(f"{method} {path}: {resp.status} {data[:200]!r}")
        return elapsed, data

    hit_ms: list[float] = []
    me_ms: list[float] = []
    async_ms: list[float] = []
    for i in range(WARMUP + hits):
        elapsed, data = call("POST", "/ai/analyze", body)
        base, _ = call("GET", "/auth/me")
        other, data_2 = call("POST", "/ai/analyze", body, to=1)
        if not (json.loads(data)["cached"] and json.loads(data_2)["cached"]):
            raise RuntimeError("expected a cache hit")
        if i >= WARMUP:
            hit_ms.append(elapsed)
            me_ms.append(base)
            async_ms.append(other)

    r = redis.Redis.from_url(redis_url)
    r.set("bench:probe", "x" * 1500)
    get_ms: list[float] = []
    for _ in range(hits):
        t0 = time.perf_counter()
        r.get("bench:probe")
        get_ms.append((time.perf_counter() - t0) * 1000)
    commit_ms: list[float] = []

    async def commits() -> None:
        pg = await asyncpg.connect(pg_url)
        await pg.execute("CREATE TABLE bench_commit (id uuid PRIMARY KEY, at timestamptz)")
        for _ in range(min(hits, 1000)):
            t0 = time.perf_counter()
            await pg.execute("INSERT INTO bench_commit VALUES ($1, now())", uuid.uuid4())
            commit_ms.append((time.perf_counter() - t0) * 1000)
        await pg.close()

    asyncio.run(commits())
    print(
        json.dumps(
            {
                "hit": hit_ms,
                "me": me_ms,
                "async": async_ms,
                "redis_get": get_ms,
                "commit": commit_ms,
            }
        )
    )


# ----------------------------------------------------------------------------- orchestration


async def _wait_http(url: str) -> None:
    async with httpx.AsyncClient() as http_client:
        for _ in range(1200):
            try:
                if (await http_client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} never answered")


async def _sign_up(http_client: httpx.AsyncClient) -> str:
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    password = "correct horse battery staple"
    created = await http_client.post("/auth/register", json={"email": email, "password": password})
    created.raise_for_status()
    tokens = await http_client.post("/auth/login", json={"email": email, "password": password})
    tokens.raise_for_status()
    token: str = tokens.json()["access_token"]
    return token


async def _done(http_client: httpx.AsyncClient, token: str, ids: list[str]) -> list[dict[str, Any]]:
    out = []
    for analysis_id in ids:
        for _ in range(1500):
            got = await http_client.get(
                f"/ai/analyses/{analysis_id}", headers={"Authorization": f"Bearer {token}"}
            )
            body: dict[str, Any] = got.json()
            if body["status"] != "pending":
                out.append(body)
                break
            await asyncio.sleep(0.02)
        else:
            raise RuntimeError(f"analysis {analysis_id} never completed")
    return out


async def _coalescing(
    fake: anthropic_server.FakeAnthropic,
    clients: list[httpx.AsyncClient],
    tokens: list[str],
) -> tuple[int, float, int]:
    """N identical requests at once, spread over ``clients`` (one per API process), while
    the upstream holds its answer: (upstream calls, wall ms, distinct answers)."""
    fake.gate = asyncio.Event()
    fake.arrived.clear()
    before = len(fake.calls)
    body = {"symbols": ["NVDA"], "question": f"where next {uuid.uuid4().hex[:8]}"}
    t0 = time.perf_counter()

    async def one(i: int) -> tuple[int, str]:
        c = i % len(clients)
        resp = await clients[c].post(
            "/ai/analyze", json=body, headers={"Authorization": f"Bearer {tokens[c]}"}
        )
        resp.raise_for_status()
        return c, str(resp.json()["id"])

    accepted = await asyncio.gather(*(one(i) for i in range(CONCURRENT)))
    await asyncio.wait_for(fake.arrived.wait(), 30)
    # Every request is accepted (pending) while the one upstream call is held open.
    held = len(fake.calls) - before
    await asyncio.sleep(0.3)
    fake.gate.set()
    done: list[dict[str, Any]] = []
    for c, http_client in enumerate(clients):
        done += await _done(http_client, tokens[c], [rid for cc, rid in accepted if cc == c])
    elapsed = (time.perf_counter() - t0) * 1000
    fake.gate = None
    if held != 1:
        print(f"  note: {held} upstream calls were open at once")
    answers = {json.dumps(d["result"], sort_keys=True) for d in done}
    return len(fake.calls) - before, elapsed, len(answers)


def _read_stats(stats: Path, pid: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(f"{stats}.{pid}").read_text())
    return data


async def main(work: Path) -> None:
    pg = embedded.EmbeddedPostgres(work / "pg", durable=True).start()
    rd = embedded.EmbeddedRedis(work / "redis", durable=False).start()
    procs: list[subprocess.Popen[bytes]] = []
    stats = work / "api-stats"
    try:
        url = await pg.ensure_database("bench_ai")
        conn = await asyncpg.connect(url)
        await migrating.apply(conn)
        await conn.close()
        key_file = work / "jwt.pem"
        key_file.write_text(keys.generate_private_pem())
        async with anthropic_server.serve() as fake:
            env = _env(url, rd.url, key_file, fake.url, stats)
            ports = [embedded.free_port() for _ in range(API_PROCESSES)]
            for n, port in enumerate(ports):
                # Process 2 commits a hit's history row asynchronously, process 1 durably.
                commit = "async" if n == 1 else "durable"
                procs.append(
                    subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
                        [sys.executable, __file__, "serve-api", str(port)],
                        env=env | {"STARKMATTER_AI_HIT_HISTORY_COMMIT": commit},
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            for port in ports:
                await _wait_http(f"http://127.0.0.1:{port}/healthz")
            async with contextlib.AsyncExitStack() as stack:
                clients = [
                    await stack.enter_async_context(
                        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60)
                    )
                    for port in ports
                ]
                token = await _sign_up(clients[0])
                auth = {"Authorization": f"Bearer {token}"}
                request = {"symbols": ["AAPL", "MSFT"], "kind": "technical"}
                first = await clients[0].post("/ai/analyze", json=request, headers=auth)
                first.raise_for_status()
                await _done(clients[0], token, [first.json()["id"]])

                # Latency: a client process, alone, sequential, against API process 1.
                measured = await asyncio.to_thread(
                    subprocess.run,
                    [
                        sys.executable,
                        __file__,
                        "client",
                        ",".join(str(port) for port in ports),
                        token,
                        json.dumps(request),
                        str(HITS),
                        url,
                        rd.url,
                    ],
                    env=env,
                    capture_output=True,
                    check=True,
                )
                figures = json.loads(measured.stdout)
                load_after_latency = os.getloadavg()

                # Coalescing: one process, then two processes.
                one_calls, one_ms, one_answers = await _coalescing(fake, clients[:1], [token])
                two_calls, two_ms, two_answers = await _coalescing(fake, clients, [token, token])
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(30)
        server = [_read_stats(stats, p.pid) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        rd.stop()
        pg.stop()

    hit, me, hit_async = figures["hit"], figures["me"], figures["async"]
    # Process 1 served the latency run: its first analysis, then the client's requests.
    window = server[0]["timings"]["/ai/analyze"][1 + WARMUP : 1 + WARMUP + HITS]
    served = [ms for _, ms in window]
    served_me = [ms for _, ms in server[0]["timings"]["/auth/me"][WARMUP : WARMUP + HITS]]
    served_async = [ms for _, ms in server[1]["timings"]["/ai/analyze"][WARMUP : WARMUP + HITS]]
    begin, end = window[0][0], window[-1][0] + window[-1][1] / 1000
    # Collections in the API process while the measured requests ran, and the worst one.
    pauses = [ms for t, _, ms in server[0]["gc"] if begin <= t <= end]
    gen2 = [ms for t, gen, ms in server[0]["gc"] if begin <= t <= end and gen == 2]
    pct = common.percentile
    common.report(
        f"AI cache hit: POST /ai/analyze, {HITS} sequential requests from a client process,"
        " interleaved with the baseline",
        [
            ("GET /auth/me p50", pct(me, 50), "ms"),
            ("GET /auth/me p99", pct(me, 99), "ms"),
            ("cache hit p50 (durable history row)", pct(hit, 50), "ms"),
            ("cache hit p99 (durable history row)", pct(hit, 99), "ms"),
            ("cache hit p99.9 (durable history row)", pct(hit, 99.9), "ms"),
            ("cache hit p50 (async-commit history row)", pct(hit_async, 50), "ms"),
            ("cache hit p99 (async-commit history row)", pct(hit_async, 99), "ms"),
            ("in the API process: GET /auth/me p99", pct(served_me, 99), "ms"),
            ("in the API process: hit p50 (durable)", pct(served, 50), "ms"),
            ("in the API process: hit p99 (durable)", pct(served, 99), "ms"),
            ("in the API process: hit p99 (async commit)", pct(served_async, 99), "ms"),
            ("Redis GET p99 (client)", pct(figures["redis_get"], 99), "ms"),
            ("durable INSERT commit p50 (client)", pct(figures["commit"], 50), "ms"),
            ("durable INSERT commit p99 (client)", pct(figures["commit"], 99), "ms"),
            ("GC pauses in the API process meanwhile", float(len(pauses)), "pauses"),
            ("GC pause max", max(pauses, default=0.0), "ms"),
            ("GC pause total", sum(pauses), "ms"),
            ("GC gen-2 collections meanwhile", float(len(gen2)), "collections"),
        ],
        baseline="GET /auth/me p99",
    )
    common.ratio("cache-hit p50 / GET /auth/me p50 (durable)", pct(hit, 50), pct(me, 50))
    common.ratio("cache-hit p99 / GET /auth/me p99 (durable)", pct(hit, 99), pct(me, 99))
    common.ratio("cache-hit p99 / GET /auth/me p99 (async)", pct(hit_async, 99), pct(me, 99))
    for what, samples in (("GET /auth/me", me), ("hit, durable", hit), ("hit, async", hit_async)):
        under = sum(1 for ms in samples if ms < 5) / len(samples)
        print(f"  {what}: {under:.1%} of requests under 5 ms, p90 {pct(samples, 90):.2f} ms")
    for what, samples in (("durable", hit), ("async commit", hit_async)):
        print(
            f"  cache hit p99 ({what}) {pct(samples, 99):.2f} ms, target < 5 ms:"
            f" {'met' if pct(samples, 99) < 5 else 'MISSED'}"
        )
    print(f"  load average after the latency run: {load_after_latency}")
    common.report(
        f"coalescing: {CONCURRENT} identical concurrent requests while the upstream answers",
        [
            ("upstream calls without coalescing", float(CONCURRENT), "calls"),
            ("1 API process: upstream calls", float(one_calls), "calls"),
            ("1 API process: distinct answers", float(one_answers), "answers"),
            ("1 API process: wall time", one_ms, "ms"),
            (f"{API_PROCESSES} API processes: upstream calls", float(two_calls), "calls"),
            (f"{API_PROCESSES} API processes: distinct answers", float(two_answers), "answers"),
            (f"{API_PROCESSES} API processes: wall time", two_ms, "ms"),
        ],
        baseline="upstream calls without coalescing",
    )
    common.ratio("upstream calls / requests, 1 process", one_calls, CONCURRENT, target="1/N")
    common.ratio(
        f"upstream calls / requests, {API_PROCESSES} processes", two_calls, CONCURRENT, target="1/N"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve-api":
        serve_api(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "client":
        client(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), *sys.argv[6:8])
    else:
        print(f"load average at start: {os.getloadavg()}")
        with tempfile.TemporaryDirectory(prefix="bench-ai-") as tmp:
            asyncio.run(main(Path(tmp)))
