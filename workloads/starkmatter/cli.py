"""The ``starkmatter`` command: one image, many entry points."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from starkmatter.core import loops, settings

Handler = Callable[[argparse.Namespace, settings.Settings], int]


def _cmd_dev(args: argparse.Namespace, config: settings.Settings) -> int:
    from starkmatter import dev

    dev.run(config)
    return 0


def _cmd_api(args: argparse.Namespace, config: settings.Settings) -> int:
    import uvicorn

    from starkmatter.api import app

    if args.host:
        config = config.model_copy(update={"api_host": args.host})
    # One uvicorn process: a second worker would bind the same probe port (and keep a
    # metrics registry of its own).
    uvicorn.run(
        app.create_app(config, settle=True, probes_port=config.metrics_port),
        host=config.api_host,
        port=config.api_port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
    )
    return 0


def _cmd_migrate(args: argparse.Namespace, config: settings.Settings) -> int:
    from starkmatter.core import db, migrating

    async def run() -> list[int]:
        pool = await db.create_pool(config)
        try:
            async with pool.acquire() as conn:
                return await migrating.apply(conn)
        finally:
            await pool.close()

    applied = asyncio.run(run())
    print(f"applied migrations: {applied or 'none (up to date)'}")
    return 0


def _cmd_audit_verify(args: argparse.Namespace, config: settings.Settings) -> int:
    from starkmatter.core import audit, db

    async def run() -> audit.ChainReport:
        pool = await db.create_pool(config)
        try:
            async with pool.acquire() as conn:
                return await audit.verify(conn)
        finally:
            await pool.close()

    report = asyncio.run(run())
    print(report.describe())
    return 0 if report.ok else 1


def _cmd_users_add(args: argparse.Namespace, config: settings.Settings) -> int:
    from starkmatter.core import audit, db
    from starkmatter.core.auth import accounts

    password = os.environ.get("STARKMATTER_NEW_USER_PASSWORD") or getpass.getpass("Password: ")

    async def run() -> accounts.User:
        pool = await db.create_pool(config)
        try:
            async with pool.acquire() as conn:
                return await accounts.create_user(
                    conn,
                    audit.Actor(
                        id=f"cli:{getpass.getuser()}",
                        service="cli",
                        endpoint="users add",
                    ),
                    email=args.email,
                    password=password,
                    display_name=args.name,
                    roles=args.role,
                    reason=args.reason,
                )
        finally:
            await pool.close()

    user = asyncio.run(run())
    print(f"created user {user.id} with roles {', '.join(user.roles)}")
    return 0


def _until_stopped(
    main: Coroutine[Any, Any, object],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> int:
    """Run a service's main coroutine until it ends or is stopped.

    Ctrl-C and SIGTERM (what Kubernetes sends a pod) both cancel it, so its clean-up runs
    (the ingest worker stores what it took in, the gateway tells clients to reconnect) and
    the process exits 0 without a traceback."""

    async def stoppable() -> object:
        task = asyncio.current_task()
        if task is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await main

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            result = runner.run(stoppable())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0
    return result if isinstance(result, int) else 0


def _cmd_gateway(args: argparse.Namespace, config: settings.Settings) -> int:
    from starkmatter.gateway import server

    return _until_stopped(
        server.run(
            config, host=args.host, port=args.port, probes_port=config.metrics_port, settle=True
        ),
        loop_factory=loops.new_event_loop,
    )


def _cmd_ingest(args: argparse.Namespace, config: settings.Settings) -> int:
    from starkmatter.ingest import worker

    return _until_stopped(
        worker.run(
            config,
            args.feed,
            spec_path=args.config,
            probes_port=worker.probes_port(config),
            settle=True,
        )
    )


def _cmd_simulate(args: argparse.Namespace, config: settings.Settings) -> int:
    from starkmatter.ingest import simulator

    return _until_stopped(
        simulator.serve(
            host=args.host, port=args.port, rate=args.rate, bad_share=args.bad_share, seed=args.seed
        )
    )


def _cmd_orders(args: argparse.Namespace, config: settings.Settings) -> int:
    from starkmatter.orders import service

    return _until_stopped(
        service.run(config, probes_port=config.metrics_port, settle=True),
        loop_factory=loops.new_event_loop,
    )


def _cmd_news(args: argparse.Namespace, config: settings.Settings) -> int:
    from starkmatter.news import worker

    return _until_stopped(worker.main(args.source, once=args.once))


def _cmd_alerts(args: argparse.Namespace, config: settings.Settings) -> int:
    from starkmatter.alerts import evaluating

    return _until_stopped(evaluating.main())


def _cmd_archive(args: argparse.Namespace, config: settings.Settings) -> int:
    from starkmatter.retention import worker

    return _until_stopped(worker.main(args.policy, dry_run=args.dry_run))


def _cmd_worker(args: argparse.Namespace, config: settings.Settings) -> int:
    from starkmatter.tasks import running

    running.run_worker(concurrency=args.concurrency)
    return 0


def _cmd_beat(args: argparse.Namespace, config: settings.Settings) -> int:
    from starkmatter.tasks import relaying, running

    relaying.start_beside_beat(config)
    running.run_beat(schedule_file=args.schedule_file)
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    parser = argparse.ArgumentParser(prog="starkmatter", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    handlers: dict[str, Handler] = {}

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        handlers[name] = handler
        return commands.add_parser(name, help=help_text, description=help_text)

    add(
        "dev",
        _cmd_dev,
        "run the whole platform locally on embedded PostgreSQL and Redis",
    )
    api = add("api", _cmd_api, "serve the REST API gateway (metrics on STARKMATTER_METRICS_PORT)")
    api.add_argument("--host", help="address to bind (default STARKMATTER_API_HOST)")
    gateway = add("gateway", _cmd_gateway, "serve the WebSocket (/ws) and SSE (/sse) gateway")
    gateway.add_argument("--host", help="address to bind (default STARKMATTER_API_HOST)")
    gateway.add_argument("--port", type=int, help="port (default STARKMATTER_GATEWAY_PORT)")
    ingest = add("ingest", _cmd_ingest, "run the ingestion worker of one MarketFeed")
    ingest.add_argument("--feed", required=True, help="the MarketFeed's name")
    ingest.add_argument("--config", help="feed spec JSON (default STARKMATTER_FEED_CONFIG)")
    simulate = add("simulate", _cmd_simulate, "serve the market simulator over WebSocket")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8765)
    simulate.add_argument("--rate", type=float, default=200.0, help="messages per second")
    simulate.add_argument(
        "--bad-share", type=float, default=0.01, help="share of deliberately bad messages"
    )
    simulate.add_argument("--seed", type=int, help="random seed, for reproducible streams")
    add("orders", _cmd_orders, "run the order service worker (outbox, broker, portfolio)")
    news = add("news", _cmd_news, "poll one NewsSource")
    news.add_argument("--source", required=True, help="the NewsSource's name")
    news.add_argument("--once", action="store_true", help="poll once and exit (CronJob mode)")
    add("alerts", _cmd_alerts, "run the alert evaluator")
    archive = add("archive", _cmd_archive, "run one RetentionPolicy: archive, then purge")
    archive.add_argument("--policy", required=True, help="the RetentionPolicy's name")
    archive.add_argument("--dry-run", action="store_true", help="report only; move nothing")
    worker = add("worker", _cmd_worker, "run a Celery worker for batch jobs")
    worker.add_argument("--concurrency", type=int)
    beat = add("beat", _cmd_beat, "run Celery beat (the batch schedule); one per deployment")
    beat.add_argument("--schedule-file")
    add("migrate", _cmd_migrate, "apply database migrations and exit")
    add("audit-verify", _cmd_audit_verify, "verify the audit trail's hash chain")
    users = add("users-add", _cmd_users_add, "create a user (password from a prompt)")
    users.add_argument("email")
    users.add_argument("--name", default="")
    users.add_argument("--role", action="append", choices=["trader", "admin", "service"])
    users.add_argument("--reason", default="created by an operator")
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    # Two-word commands read naturally: `starkmatter audit verify`, `starkmatter users add`.
    if len(raw) >= 2 and f"{raw[0]}-{raw[1]}" in handlers:
        raw = [f"{raw[0]}-{raw[1]}", *raw[2:]]
    args = parser.parse_args(raw)
    if getattr(args, "role", None) is None and args.command == "users-add":
        args.role = ["trader"]
    try:
        config = settings.for_command(args.command)
    except settings.SettingsError as exc:
        print(f"starkmatter: {exc}", file=sys.stderr)
        return 2
    from starkmatter.core import logs

    logs.configure(config.log_level, json=config.log_json)
    return handlers[args.command](args, config)


if __name__ == "__main__":
    sys.exit(main())
