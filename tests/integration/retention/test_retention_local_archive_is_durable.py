"""A local archive object is on disk, name and folders included, before its rows are
deleted: the file, its folder and every folder the put created are fsynced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from starkmatter.retention import objectstore


async def test_a_put_fsyncs_the_file_its_folder_and_each_new_folders_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))

    monkeypatch.setattr(os, "fsync", recording_fsync)
    root = tmp_path / "archive"
    root.mkdir()
    await objectstore.LocalStore(root).put("news/run-1/part-00001.jsonl.gz", b"rows")
    part = root / "news" / "run-1" / "part-00001.jsonl.gz"
    assert part.read_bytes() == b"rows"
    # The rename is only durable with its folder; each new folder only with its parent.
    renamed = synced.index(part.parent)
    assert set(synced[renamed:]) >= {root / "news" / "run-1", root / "news", root}
    assert synced.index(root / "news") > renamed and synced.index(root) > renamed
