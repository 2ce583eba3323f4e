"""Where archives go: any S3 API through boto3 (checksummed, optionally Object-Locked), or
a local folder (the embedded default), behind one small interface."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import os
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import boto3
import botocore.config


class ObjectStore(Protocol):
    url: str

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes: ...

    async def list(self, prefix: str) -> list[str]: ...


class LocalStore:
    """``file:///path``: objects are files, written whole (temp file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"object key escapes the archive root: {key!r}")
        return path

    async def put(self, key: str, data: bytes) -> None:
        """Durable on return: the rows it holds are deleted next. A rename and a new
        directory are entries in their parent directory, which is only on disk once that
        directory is fsynced; without it a crash can lose an object whose rows are gone."""
        path = self._path(key)
        created = self._make_parents(path.parent)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(path)
        _fsync_dir(path.parent)
        for folder in created:
            _fsync_dir(folder.parent)

    def _make_parents(self, folder: Path) -> list[Path]:
        """Creates ``folder`` and its missing parents; returns those created, deepest first."""
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for created in reversed(missing):
            created.mkdir(exist_ok=True)
        return missing

    async def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    async def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file()
            and not p.name.endswith(".tmp")
        )  # fmt: skip


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3Store:
    """``s3://bucket/prefix``: each put carries its SHA-256 so the server refuses a corrupted
    upload; with ``lock_days`` each object gets an Object Lock retention period."""

    def __init__(
        self,
        url: str,
        *,
        endpoint: str | None = None,
        lock_days: int | None = None,
        lock_mode: str = "GOVERNANCE",
        client: Any = None,
    ) -> None:
        parsed = urlparse(url)
        self.url = url
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.lock_days = lock_days
        self.lock_mode = lock_mode
        # A session of its own: credentials are resolved now, not cached from whatever the
        # process's default session saw first.
        self.client = client or boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            config=botocore.config.Config(
                retries={"max_attempts": 5, "mode": "standard"},
                request_checksum_calculation="when_required",
            ),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    async def put(self, key: str, data: bytes) -> None:
        extra: dict[str, Any] = {}
        if self.lock_days:
            extra["ObjectLockMode"] = self.lock_mode
            extra["ObjectLockRetainUntilDate"] = dt.datetime.now(dt.UTC) + dt.timedelta(
                days=self.lock_days
            )
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        await asyncio.to_thread(
            self.client.put_object,
            Bucket=self.bucket,
            Key=self._key(key),
            Body=data,
            ChecksumSHA256=checksum,
            **extra,
        )

    async def get(self, key: str) -> bytes:
        resp = await asyncio.to_thread(
            self.client.get_object, Bucket=self.bucket, Key=self._key(key)
        )
        body: bytes = await asyncio.to_thread(resp["Body"].read)
        return body

    async def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        full = self._key(prefix)

        def collect() -> None:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(o["Key"] for o in page.get("Contents", []))

        await asyncio.to_thread(collect)
        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[strip:] for k in keys)


def open_store(
    url: str, *, endpoint: str | None = None, lock_days: int | None = None
) -> ObjectStore:
    if url.startswith("file://"):
        return LocalStore(Path(urlparse(url).path))
    if url.startswith("s3://"):
        return S3Store(url, endpoint=endpoint, lock_days=lock_days)
    raise ValueError(f"archive url must be s3://bucket/prefix or file:///path, not {url!r}")
