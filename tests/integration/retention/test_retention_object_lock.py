"""Archives on a real S3 server that enforces what moto cannot prove: checksums refused
when wrong, Object Lock retention and legal holds blocking deletion (versitygw)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import botocore.exceptions
import pytest

from starkmatter.core import embedded
from starkmatter.retention import archiving, objectstore, policies

pytestmark = pytest.mark.timeout(90)
NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
BINARY = Path(
    os.environ.get("STARKMATTER_VERSITYGW")
    or CACHE / "starkmatter" / "versitygw-v1.8.0" / "versitygw"
)
KEY, SECRET = "archive-tests", "archive-tests-secret"


@pytest.fixture(scope="module")
def versitygw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = BINARY if BINARY.exists() else shutil.which("versitygw")
    assert binary is not None, f"versitygw not built ({BINARY}); `make versitygw` builds it"
    root = tmp_path_factory.mktemp("versitygw")
    (root / "data").mkdir()
    (root / "versions").mkdir()
    port = embedded.free_port()
    proc = subprocess.Popen(
        [str(binary), "--port", f"127.0.0.1:{port}", "--access", KEY, "--secret", SECRET,
         "--quiet", "posix", "--versioning-dir", str(root / "versions"), str(root / "data")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def s3(versitygw: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return boto3.session.Session().client("s3", endpoint_url=versitygw)


async def test_locked_archive_cannot_be_deleted_and_a_bad_checksum_is_refused(
    db: asyncpg.Connection[Any], s3: Any, versitygw: str
) -> None:
    bucket = f"locked-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    await db.executemany(
        """INSERT INTO news_articles (source, url, content_hash, title, published_at, category,
                                      sentiment, sentiment_label)
           VALUES ('t', $1, $2, 'old story', $3, 'other', 0, 'neutral')""",
        [(f"http://x/{i}", f"h{i}".encode(), NOW - dt.timedelta(days=800)) for i in range(5)],
    )
    policy = policies.Policy.model_validate(
        {"name": "locked", "archive": {"url": f"s3://{bucket}/a", "endpoint": versitygw,
                                       "lockDays": 1},
         "rules": [{"dataset": "news", "olderThanDays": 730, "action": "archiveThenDelete"}]}
    )  # fmt: skip
    store = objectstore.open_store(f"s3://{bucket}/a", endpoint=versitygw, lock_days=1)
    (report,) = await archiving.run_policy(db, policy, store, now=NOW)
    assert report.archived == 5 and report.manifest_key is not None
    assert await archiving.verify(store, report.manifest_key) == 5

    key = f"a/{report.manifest_key}"
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ObjectLockMode"] == "GOVERNANCE"
    with pytest.raises(botocore.exceptions.ClientError):
        s3.delete_object(Bucket=bucket, Key=key, VersionId=head["VersionId"])

    part = f"a/{report.manifest_key.rsplit('/', 1)[0]}/part-00001.jsonl.gz"
    part_head = s3.head_object(Bucket=bucket, Key=part)
    s3.put_object_legal_hold(
        Bucket=bucket, Key=part, VersionId=part_head["VersionId"], LegalHold={"Status": "ON"}
    )
    with pytest.raises(botocore.exceptions.ClientError):
        s3.delete_object(
            Bucket=bucket, Key=part, VersionId=part_head["VersionId"],
            BypassGovernanceRetention=True,
        )  # fmt: skip

    wrong = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    with pytest.raises(botocore.exceptions.ClientError):
        s3.put_object(Bucket=bucket, Key="a/tampered", Body=b"payload", ChecksumSHA256=wrong)
