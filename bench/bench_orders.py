"""Orders through the full lifecycle, against the database's own single-row ceiling.

Measured: HTTP ``POST /orders`` -> validation and risk under the account lock -> outbox ->
order worker -> paper fill against depth -> position, cash, snapshot -> audit rows, all
committed in PostgreSQL (durable: fsync on). Throughput counts an order when it is
``Filled``; latency is the HTTP submit round trip seen by the client.

Baseline, measured in the same run on the same database: single-row INSERT transactions
(autocommit) from the same number of concurrent connections — the most a client can commit
one row at a time. The API server and the order worker run as separate processes, as in
production; the load generator (a minimal keep-alive HTTP client, see ``RawClient``) shares
the same 2 cores, and its CPU is reported separately.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common
from starkmatter.core import embedded, loops, migrating
from starkmatter.core.auth import keys

USERS = 20
CONCURRENCY = 32
BURST_ORDERS = int(os.environ.get("BENCH_ORDERS_BURST", "4000"))
PACED_RATE = int(os.environ.get("BENCH_ORDERS_PACED_RATE", "300"))
PACED_SECONDS = 8
CEILING_SECONDS = 4.0
KEEP_ALIVE_S = 3.0
"""the load generator reuses an idle connection only this long (uvicorn keeps it 5 s)"""
RESPONSE_TIMEOUT_S = 30.0
"""a request unanswered this long fails the run (rather than hanging it)"""
API_PROCESSES = int(os.environ.get("BENCH_ORDERS_API_PROCESSES", "2"))
"""API replicas (separate processes, one port each); clients spread over them"""


def _cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU time (user + system) used so far by each named group of processes; postgres
    backends are counted as the children of the postmaster."""
    import psutil

    out: dict[str, float] = {}
    for name, group in pids.items():
        total = 0.0
        for pid in group:
            try:
                proc = psutil.Process(pid)
                members = [proc, *proc.children(recursive=True)] if name == "postgres" else [proc]
                for m in members:
                    t = m.cpu_times()
                    total += t.user + t.system
            except psutil.NoSuchProcess:
                continue
        out[name] = total
    return out


async def _postgres_cpu(url: str, postmaster: int) -> dict[str, float]:
    """CPU seconds used so far by each kind of PostgreSQL process: client backends by their
    application_name, the rest by their title (BENCH_ORDERS_DIAG=1)."""
    import psutil

    conn = await asyncpg.connect(url)
    names = {
        r["pid"]: r["application_name"] or r["backend_type"]
        for r in await conn.fetch(
            "SELECT pid, application_name, backend_type FROM pg_stat_activity"
        )
    }
    await conn.close()
    out: collections.Counter[str] = collections.Counter()
    for child in psutil.Process(postmaster).children():
        try:
            t = child.cpu_times()
            title = " ".join(child.cmdline()).removeprefix("postgres: ")
        except psutil.NoSuchProcess:
            continue
        out[names.get(child.pid) or title.split(" ")[0]] += t.user + t.system
    return dict(out)


def _spy(groups: dict[str, list[int]]) -> list[subprocess.Popen[bytes]]:
    """Sample the first API process and the worker with py-spy during the burst, or the
    paced phase with BENCH_ORDERS_PYSPY_PHASE=paced (BENCH_ORDERS_PYSPY=DIR; investigation
    only, it slows what it samples)."""
    out = Path(os.environ["BENCH_ORDERS_PYSPY"])
    spy = Path(sys.executable).with_name("py-spy")
    return [
        subprocess.Popen(
            [
                str(spy),
                "record",
                "--format",
                "raw",
                "-r",
                "200",
                "-o",
                str(out / f"{name}.txt"),
                "-p",
                str(group[0]),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, group in groups.items()
        if name in ("api", "worker")
    ]


def _env(pg_url: str, redis_url: str, key_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARKMATTER_")}
    env.update(
        STARKMATTER_ENV="prod",
        STARKMATTER_DATABASE_URL=pg_url,
        STARKMATTER_REDIS_URL=redis_url,
        STARKMATTER_JWT_PRIVATE_KEY_FILE=str(key_file),
        STARKMATTER_LOG_LEVEL="WARNING",
        STARKMATTER_DB_POOL_MAX="20",
        STARKMATTER_ORDERS_MAX_ORDERS_PER_SECOND="1000000",
        STARKMATTER_ORDERS_MAX_OPEN_ORDERS="1000000",
        STARKMATTER_ORDERS_MAX_POSITION_NOTIONAL="1e15",
        STARKMATTER_ORDERS_MAX_GROSS_EXPOSURE="1e15",
        STARKMATTER_ORDERS_POLL_INTERVAL_MS="100",
        STARKMATTER_PORTFOLIO_STARTING_CASH="1000000000",
    )
    # BENCH_ORDERS_ENV="NAME=value,..." adds settings, to compare configurations in one place
    extra = os.environ.get("BENCH_ORDERS_ENV", "")
    for item in filter(None, extra.split(",")):
        name, _, value = item.partition("=")
        env[name] = value
    return env


def serve_api() -> None:
    """Child process: the API gateway with the trading routers."""
    import uvicorn

    from starkmatter.api import app as api_app
    from starkmatter.core import logs, settings
    from starkmatter.orders import routes as order_routes
    from starkmatter.portfolio import routes as portfolio_routes

    config = settings.load()
    logs.configure(config.log_level, json=config.log_json)
    # As ``starkmatter api`` does: /metrics on a probe listener of its own (argv[3]).
    app = api_app.create_app(config, settle=True, probes_port=int(sys.argv[3]))
    paths = {getattr(r, "path", "") for r in app.routes}
    if "/orders" not in paths:
        app.include_router(order_routes.router)
        app.include_router(portfolio_routes.router)
    if os.environ.get("BENCH_ORDERS_PROFILE_API"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            uvicorn.run(
                app, host="127.0.0.1", port=int(sys.argv[2]), log_config=None, access_log=False
            )
        finally:
            profiler.disable()
            profiler.dump_stats(os.environ["BENCH_ORDERS_PROFILE_API"])
        return
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[2]),
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


class RawClient:
    """A minimal HTTP/1.1 keep-alive client for the load generator.

    httpx spends about 1.4 ms of CPU per request, on the same 2 cores as the servers it
    measures; this one spends a few tens of microseconds, so the figures describe the
    server. One request per connection at a time; idle connections are reused.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle:
            reader, writer, since = self._idle.pop()
            # uvicorn closes a keep-alive connection idle for 5 s; a request written to it
            # would be lost in transit and counted as a server error.
            if time.monotonic() - since < KEEP_ALIVE_S:
                return reader, writer
            writer.close()
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        reader, writer = await self._connection()
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(
            f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        try:
            # asyncio.timeout, not wait_for: wait_for runs the read as a task of its own
            async with asyncio.timeout(RESPONSE_TIMEOUT_S):
                raw = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            writer.close()
            raise RuntimeError(f"POST {path}: no response in {RESPONSE_TIMEOUT_S:.0f} s") from None
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await reader.readexactly(length)
        self._idle.append((reader, writer, time.monotonic()))
        return status, payload

    async def aclose(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()


async def _wait_http(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} never answered")


async def _users(client: httpx.AsyncClient) -> list[dict[str, str]]:
    headers = []
    for i in range(USERS):
        email, password = f"bench{i}-{uuid.uuid4().hex[:6]}@example.com", "bench password 123"
        r = await client.post("/auth/register", json={"email": email, "password": password})
        assert r.status_code == 201, r.text
        token = await client.post("/auth/login", json={"email": email, "password": password})
        headers.append({"Authorization": f"Bearer {token.json()['access_token']}"})
    return headers


def _order(n: int) -> bytes:
    return json.dumps(
        {
            "client_order_id": f"b{n}-{uuid.uuid4().hex[:8]}",
            "symbol": "BENCH",
            "side": "buy",
            "quantity": "1",
        }
    ).encode()


async def _submit(
    client: RawClient, headers: dict[str, str], n: int, latencies: list[float]
) -> None:
    started = time.perf_counter()
    status, body = await client.post("/orders", headers, _order(n))
    latencies.append(time.perf_counter() - started)
    if status != 201:
        raise RuntimeError(f"order refused: {status} {body!r}")


async def _filled(conn: asyncpg.Connection, want: int, stall_s: float = 30.0) -> None:
    """Wait until ``want`` orders are Filled; fail with the orders' states if none is filled
    for ``stall_s`` (an order that cannot fill would otherwise hang the benchmark)."""
    sql = "SELECT count(*) FROM trading_orders WHERE status = 'Filled'"
    seen, since = -1, time.monotonic()
    while (done := await conn.fetchval(sql)) < want:
        if done != seen:
            seen, since = done, time.monotonic()
        elif time.monotonic() - since > stall_s:
            states = await conn.fetch(
                "SELECT status, reject_code, count(*) AS n FROM trading_orders"
                " WHERE status <> 'Filled' GROUP BY 1, 2 ORDER BY 3 DESC"
            )
            outbox = await conn.fetchval("SELECT count(*) FROM trading_outbox")
            raise RuntimeError(
                f"{done} of {want} orders Filled, none for {stall_s:.0f} s; others:"
                f" {[tuple(r) for r in states]}; outbox rows: {outbox}"
            )
        await asyncio.sleep(0.02)


async def _burst(
    clients: list[RawClient],
    users: list[dict[str, str]],
    conn: asyncpg.Connection,
    base: int,
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = iter(range(BURST_ORDERS))

    async def lane(client: RawClient) -> None:
        for n in queue:
            await _submit(client, users[n % USERS], n, latencies)

    started = time.perf_counter()
    await asyncio.gather(*(lane(clients[i % len(clients)]) for i in range(CONCURRENCY)))
    await _filled(conn, base + BURST_ORDERS)
    return BURST_ORDERS / (time.perf_counter() - started), latencies


async def _paced(clients: list[RawClient], users: list[dict[str, str]]) -> tuple[list[float], int]:
    """Open loop at PACED_RATE: each order is due at its time, late or not; latency counts
    from when it was due, so a server that falls behind shows it."""
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    started = time.perf_counter()

    async def one(n: int, due: float) -> None:
        try:
            client = clients[n % len(clients)]
            status, body = await client.post("/orders", users[n % USERS], _order(n))
            if status != 201:
                errors[f"HTTP {status} {body[:160]!r}"] += 1
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors[repr(exc)[:160]] += 1
        latencies.append(time.perf_counter() - due)

    tasks = []
    for n in range(PACED_RATE * PACED_SECONDS):
        due = started + n / PACED_RATE
        if due > time.perf_counter():
            await asyncio.sleep(due - time.perf_counter())
        tasks.append(asyncio.create_task(one(n, due)))
    await asyncio.gather(*tasks)
    for what, count in errors.most_common(5):
        print(f"  paced error x{count}: {what}", flush=True)
    return latencies, sum(errors.values())


async def _served(ports: list[int]) -> collections.Counter[str]:
    """Cumulative POST /orders latency buckets (``le`` -> count) the API processes report on
    their metrics ports."""
    out: collections.Counter[str] = collections.Counter()
    async with httpx.AsyncClient() as scrape:
        for port in ports:
            for line in (await scrape.get(f"http://127.0.0.1:{port}/metrics")).text.splitlines():
                if line.startswith("starkmatter_http_request_duration_seconds_bucket{") and (
                    'method="POST",route="/orders",status="201"' in line
                ):
                    le = line.split('le="')[1].split('"')[0]
                    out[le] += int(float(line.split()[-1]))
    return out


async def _sample_waits(url: str, stop: asyncio.Event) -> collections.Counter[str]:
    """What PostgreSQL backends wait on during the burst (BENCH_ORDERS_DIAG=1)."""
    seen: collections.Counter[str] = collections.Counter()
    conn = await asyncpg.connect(url)
    while not stop.is_set():
        for r in await conn.fetch(
            "SELECT a.application_name, wait_event_type, wait_event, left(a.query, 60) AS q,"
            " (SELECT string_agg(DISTINCT b.application_name, ',') FROM pg_stat_activity b"
            "   WHERE b.pid = ANY(pg_blocking_pids(a.pid))) AS blocker"
            " FROM pg_stat_activity a WHERE state = 'active' AND pid <> pg_backend_pid()"
        ):
            by = f" (behind {r['blocker']})" if r["blocker"] else ""
            seen[
                f"{r['application_name']} {r['wait_event_type']}:{r['wait_event']}{by} {r['q']}"
            ] += 1
        await asyncio.sleep(0.01)
    await conn.close()
    return seen


def _with_statement_stats(pg: embedded.EmbeddedPostgres) -> embedded.EmbeddedPostgres:
    """Restart with pg_stat_statements tracking nested statements (BENCH_ORDERS_PGSS=1;
    investigation only: it costs the server a little per statement)."""
    pg.stop()
    with (pg.pgdata / "postgresql.auto.conf").open("a") as conf:
        conf.write(
            "shared_preload_libraries = 'pg_stat_statements'\n"
            "pg_stat_statements.track = all\ntrack_functions = all\n"
        )
    return pg.start()


def _with_settings(pg: embedded.EmbeddedPostgres, settings: str) -> embedded.EmbeddedPostgres:
    """Restart with extra server settings (BENCH_ORDERS_PGCONF="name=value;..."; to find
    what the time depends on, e.g. synchronous_commit=off: never for reported figures)."""
    pg.stop()
    with (pg.pgdata / "postgresql.auto.conf").open("a") as conf:
        conf.write("".join(f"{item.strip()}\n" for item in settings.split(";") if item.strip()))
    return pg.start()


async def _statement_stats(url: str, orders: int) -> None:
    conn = await asyncpg.connect(url)
    rows = await conn.fetch(
        "SELECT calls, total_exec_time, toplevel, left(regexp_replace(query, '\\s+', ' ', 'g'), 90)"
        " AS q FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 30"
    )
    print("  PostgreSQL statements, ms per order (calls per order), top-level marked *:")
    for r in rows:
        print(
            f"  {r['total_exec_time'] / orders:7.3f} ms {r['calls'] / orders:6.2f}"
            f" {'*' if r['toplevel'] else ' '} {r['q']}"
        )
    await conn.close()


async def _ceiling(url: str) -> float:
    setup = await asyncpg.connect(url)
    await setup.execute(
        "CREATE TABLE IF NOT EXISTS bench_ceiling (id bigserial PRIMARY KEY, user_id uuid,"
        " quantity numeric, ts timestamptz)"
    )
    await setup.close()
    conns = [await asyncpg.connect(url) for _ in range(CONCURRENCY)]
    count = 0
    deadline = time.perf_counter() + CEILING_SECONDS

    async def lane(conn: asyncpg.Connection) -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await conn.execute(
                "INSERT INTO bench_ceiling (user_id, quantity, ts) VALUES ($1, $2, now())",
                uuid.uuid4(),
                1,
            )
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(lane(c) for c in conns))
    elapsed = time.perf_counter() - started
    for c in conns:
        await c.close()
    return count / elapsed


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-orders-") as tmp:
        root = Path(tmp)
        pg = embedded.EmbeddedPostgres(root / "pg").start()
        if os.environ.get("BENCH_ORDERS_PGSS"):
            pg = _with_statement_stats(pg)
        if os.environ.get("BENCH_ORDERS_PGCONF"):
            pg = _with_settings(pg, os.environ["BENCH_ORDERS_PGCONF"])
        rd = embedded.EmbeddedRedis(root / "redis", durable=False).start()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            url = await pg.ensure_database("bench")
            conn = await asyncpg.connect(url)
            await migrating.apply(conn)
            key_file = root / "jwt.pem"
            key_file.write_text(keys.generate_private_pem())
            env = _env(url, rd.url, key_file)
            ports = [embedded.free_port() for _ in range(API_PROCESSES)]
            metrics_ports = [embedded.free_port() for _ in range(API_PROCESSES)]
            for port, metrics_port in zip(ports, metrics_ports, strict=True):
                procs.append(
                    subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
                        [sys.executable, __file__, "serve-api", str(port), str(metrics_port)],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            procs.append(
                subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
                    [sys.executable, "-m", "starkmatter.orders.service"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            for port in ports:
                await _wait_http(f"http://127.0.0.1:{port}/healthz")
            import redis.asyncio as aioredis

            from tests.integration.trading.conftest import publish_market

            r = aioredis.Redis.from_url(rd.url)
            await publish_market(
                r, "BENCH", bid="99.99", ask="100.01", asks=(("100.01", "1000000000"),)
            )
            limits = httpx.Limits(max_connections=CONCURRENCY * 4, keepalive_expiry=2)
            clients = [RawClient(port) for port in ports]
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{ports[0]}", limits=limits, timeout=30
            ) as setup_client:
                users = await _users(setup_client)
            try:
                await _burst(clients, users, conn, 0)  # warm-up (same size, not reported)
                # As autovacuum would within a minute on a live database: without fresh
                # statistics, the plans the placement functions cached while the tables were
                # empty go on scanning trading_orders whole for the client order id look-up
                # (0.7 ms of PostgreSQL per order at 8,000 orders, pg_stat_statements).
                await conn.execute("ANALYZE")
                diag = bool(os.environ.get("BENCH_ORDERS_DIAG"))
                stop = asyncio.Event()
                # Sampling takes the lock manager's locks (pg_blocking_pids) every 10 ms:
                # investigation only, it slows what it measures.
                sampler = asyncio.create_task(_sample_waits(url, stop)) if diag else None
                groups = {
                    "api": [p.pid for p in procs[:API_PROCESSES]],
                    "worker": [procs[API_PROCESSES].pid],
                    "postgres": [int((pg.pgdata / "postmaster.pid").read_text().split()[0])],
                    "load generator": [os.getpid()],
                }
                spy_phase = os.environ.get("BENCH_ORDERS_PYSPY_PHASE", "burst")
                spying = bool(os.environ.get("BENCH_ORDERS_PYSPY"))
                spies = _spy(groups) if spying and spy_phase == "burst" else []
                if os.environ.get("BENCH_ORDERS_PGSS"):
                    await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                    await conn.execute("SELECT pg_stat_statements_reset()")
                pg_before = await _postgres_cpu(url, groups["postgres"][0]) if diag else {}
                cpu_before = _cpu_seconds(groups)
                machine = common.MachineShare()
                throughput, burst_lat = await _burst(clients, users, conn, BURST_ORDERS)
                cpu_after = _cpu_seconds(groups)
                burst_machine = machine.line()
                pg_after = await _postgres_cpu(url, groups["postgres"][0]) if diag else {}
                for spy in spies:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(30)
                cpu_ms = {k: (cpu_after[k] - cpu_before[k]) * 1000 / BURST_ORDERS for k in groups}
                stop.set()
                waits = await sampler if sampler else collections.Counter()
                if os.environ.get("BENCH_ORDERS_PGSS"):
                    await _statement_stats(url, BURST_ORDERS)
                if diag:
                    print("  PostgreSQL CPU per order by process kind:")
                    for kind, after in sorted(pg_after.items(), key=lambda kv: -kv[1]):
                        used = (after - pg_before.get(kind, 0.0)) * 1000 / BURST_ORDERS
                        print(f"  {used:7.3f} ms  {kind}")
                    user = await conn.fetchval("SELECT user_id FROM trading_orders LIMIT 1")
                    for _ in range(2):
                        plan = await conn.fetch(
                            "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM trading_orders"
                            " WHERE user_id = $1 AND client_order_id = 'nope'",
                            user,
                        )
                    print("\n".join("  " + r[0] for r in plan))
                    for what, n in waits.most_common(25):
                        print(f"  {n:6d}  {what}")
                retries = 0.0
                async with httpx.AsyncClient() as scrape:
                    for port in ports:
                        text = (await scrape.get(f"http://127.0.0.1:{port}/metrics")).text
                        retries += sum(
                            float(line.split()[-1])
                            for line in text.splitlines()
                            if line.startswith("starkmatter_orders_placement_retries_total")
                        )
                print(
                    f"  placement retries (warm-up + burst): {retries:.0f}"
                    f" ({retries / (2 * BURST_ORDERS):.2f} per order)",
                    flush=True,
                )
                print(
                    f"  burst: {throughput:.0f} orders/s, submit p50"
                    f" {common.percentile(burst_lat, 50) * 1000:.1f} ms",
                    flush=True,
                )
                stop = asyncio.Event()
                sampler = asyncio.create_task(_sample_waits(url, stop)) if diag else None
                served_before = await _served(metrics_ports)
                pg_before = await _postgres_cpu(url, groups["postgres"][0]) if diag else {}
                spies = _spy(groups) if spying and spy_phase == "paced" else []
                cpu_before = _cpu_seconds(groups)
                machine = common.MachineShare()
                paced, paced_errors = await _paced(clients, users)
                cpu_after = _cpu_seconds(groups)
                paced_machine = machine.line()
                for spy in spies:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(30)
                pg_after = await _postgres_cpu(url, groups["postgres"][0]) if diag else {}
                served = {
                    k: v - served_before[k] for k, v in (await _served(metrics_ports)).items()
                }
                stop.set()
                waits = await sampler if sampler else collections.Counter()
                if diag:
                    late = sum(s > 0.025 for s in paced) / len(paced)
                    print(
                        f"  at {PACED_RATE}/s, share of submits over 25 ms: seen by the client"
                        f" {late:.2%}, inside the API (request read to response written)"
                        f" {1 - served['0.025'] / served['+Inf']:.2%}; over 10 ms inside the"
                        f" API {1 - served['0.01'] / served['+Inf']:.2%}"
                    )
                    busy = {k: cpu_after[k] - cpu_before[k] for k in groups}
                    busy |= {
                        f"postgres: {k}": v - pg_before.get(k, 0.0)
                        for k, v in pg_after.items()
                        if v - pg_before.get(k, 0.0) > 0.01
                    }
                    print(f"  CPU seconds used during the {PACED_SECONDS} s at {PACED_RATE}/s:")
                    for name, used in busy.items():
                        print(f"  {used:7.2f} s  {name}")
                    print(f"  PostgreSQL waits at {PACED_RATE}/s (samples every 10 ms):")
                    for what, n in waits.most_common(12):
                        print(f"  {n:6d}  {what}")
            finally:
                for c in clients:
                    await c.aclose()
            await _filled(conn, 2 * BURST_ORDERS + PACED_RATE * PACED_SECONDS - paced_errors)
            audited = await conn.fetchval("SELECT count(*) FROM audit_log")
            ceiling = await _ceiling(url)
            await r.aclose()
            await conn.close()
        finally:
            for p in procs:
                p.send_signal(signal.SIGINT)
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
            rd.stop()
            pg.stop()
    ms = 1000.0
    common.report(
        f"orders: full lifecycle, {BURST_ORDERS} orders, {CONCURRENCY} concurrent clients,"
        f" {API_PROCESSES} API processes",
        [
            ("single-row INSERT transactions/s", ceiling, "rows/s"),
            ("orders/s submitted -> Filled", throughput, "orders/s"),
            ("submit p50 under burst", common.percentile(burst_lat, 50) * ms, "ms"),
            ("submit p99 under burst", common.percentile(burst_lat, 99) * ms, "ms"),
            (f"submit p50 at {PACED_RATE}/s", common.percentile(paced, 50) * ms, "ms"),
            (f"submit p99 at {PACED_RATE}/s", common.percentile(paced, 99) * ms, "ms"),
            (f"submit errors at {PACED_RATE}/s", float(paced_errors), "requests"),
            ("audit rows written", float(audited), "rows"),
            *((f"CPU per order: {k}", v, "ms") for k, v in cpu_ms.items()),
            ("CPU per order: all", sum(cpu_ms.values()), "ms"),
        ],
        baseline="single-row INSERT transactions/s",
    )
    common.ratio("lifecycle orders/s vs single-row inserts/s", throughput, ceiling)
    own = sum(v for k, v in cpu_ms.items() if k != "load generator")
    print(
        f"  CPU-bound ceiling on 2 dedicated cores: {2000 / own:.0f} orders/s"
        f" ({own:.2f} ms of CPU per order in API + worker + PostgreSQL)"
    )
    print(f"  during the burst, {burst_machine}; at {PACED_RATE}/s, {paced_machine}")
    print(
        f"  target: >= 1000 orders/s (got {throughput:.0f}); "
        f"p99 < 25 ms at {PACED_RATE}/s (got {common.percentile(paced, 99) * ms:.1f} ms)"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve-api":
        serve_api()
    else:
        # uvloop, like the services: the load generator shares the 2 cores it measures
        with asyncio.Runner(loop_factory=loops.new_event_loop) as runner:
            runner.run(main())
