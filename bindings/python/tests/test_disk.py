"""A full disk through the Python write path, and table disk budgets.

The full-disk test mounts a small tmpfs (root, as in CI) and fails, not
skips, where that is not permitted: the database fills it, the failing
write raises DiskFullError saying the disk is full and what to do, every
acknowledged write stays readable, writes resume once space is freed
(without a reopen), and a reopen keeps everything committed.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, List

import pytest

import tidelog


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", d],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, (
            "this test needs to mount a 24 MiB tmpfs (run it as root, as CI does): "
            f"mount said {out.stderr.strip()}"
        )
        try:
            yield Path(d)
        finally:
            subprocess.run(["umount", "-l", d], check=False)


def fill(path: Path, leave: int) -> None:
    """Takes the free space with a file, then gives `leave` bytes back."""
    written = 0
    chunk = b"\x07" * (64 << 10)
    with open(path, "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
                written += len(chunk)
        except OSError:
            pass
    with open(path, "r+b") as f:
        f.truncate(max(0, written - leave))


def test_full_disk_is_a_typed_error_and_writes_resume(tmpfs: Path) -> None:
    db_dir = tmpfs / "db"
    filler = tmpfs / "filler"
    acked: List[int] = []
    unknown: List[int] = []
    refused: List[int] = []
    pad = "x" * 4000
    with tidelog.open(db_dir, "full", durability="sync", memory_budget="8MiB") as db:
        db.create_table("t", indexes=["n"])
        fill(filler, 3 << 20)
        key = 0
        first: BaseException | None = None
        while len(refused) + len(unknown) < 5:
            key += 1
            assert key < 100_000, "the disk never filled"
            try:
                db.insert("t", {"id": key, "n": key, "pad": pad})
            except tidelog.DiskFullError as e:
                first = first or e
                refused.append(key)
            except tidelog.StorageError as e:
                # Only where the engine could not say whether it committed.
                assert "may or may not be committed" in str(e), repr(e)
                unknown.append(key)
            else:
                assert not refused and not unknown, "a write succeeded while the disk was full"
                acked.append(key)
        assert acked, "no write fitted"
        assert first is not None, "no DiskFullError among the refusals"
        assert isinstance(first, tidelog.StorageError) and first.kind == "storage"
        msg = str(first)
        assert "no space left" in msg and "resume" in msg, msg
        # Reads still work, and every acknowledged write is there.
        for k in acked:
            assert db.get("t", k) is not None, k
        # Free space: writes resume without a reopen.
        filler.unlink()
        key += 1
        resumed = key
        for _ in range(1200):
            try:
                db.insert("t", {"id": resumed, "n": resumed})
                break
            except tidelog.StorageError:
                import time

                time.sleep(0.05)
        else:
            pytest.fail("writes did not resume after space was freed")
        acked.append(resumed)
        assert db.get("t", resumed) is not None
    with tidelog.open(db_dir, "full", durability="sync", memory_budget="8MiB") as db:
        missing = [k for k in acked if db.get("t", k) is None]
        assert missing == [], f"acknowledged writes lost: {missing}"
        for k in refused:
            assert db.get("t", k) is None, f"refused write {k} is present"
        present_unknown = sum(1 for k in unknown if db.get("t", k) is not None)
        assert db.count("t") == len(acked) + present_unknown
        assert db.table_stats("t")["records"] == db.count("t")


def rec(i: int) -> "dict[str, object]":
    # 28 bytes of JSON and a 13-byte stored key: 41 counted bytes.
    return {"id": i, "v": "x" * 10}


REC = 41


def test_table_budget_refuse_drop_oldest_and_stats(db: tidelog.Database) -> None:
    db.create_table("sensor_data", disk_budget_bytes=3 * REC)
    db.create_table("alerts")
    for i in range(1000, 1003):
        db.insert("sensor_data", rec(i))
    with pytest.raises(tidelog.TableFullError) as e:
        db.insert("sensor_data", rec(1003))
    assert isinstance(e.value, tidelog.StorageError)
    assert "sensor_data" in str(e.value) and "disk_budget_bytes" in str(e.value)
    db.insert("alerts", rec(1000))
    assert db.table_stats("sensor_data") == {
        "records": 3,
        "bytes": 3 * REC,
        "dropped": 0,
        "disk_budget_bytes": 3 * REC,
    }
    info = db.describe_table("sensor_data")
    assert (info["disk_budget_bytes"], info["on_full"]) == (3 * REC, "refuse")

    db.set_table_budget("sensor_data", 2 * REC, "drop_oldest")
    s = db.table_stats("sensor_data")
    assert (s["records"], s["dropped"]) == (2, 1)
    db.insert("sensor_data", rec(1003))
    s = db.table_stats("sensor_data")
    assert (s["records"], s["dropped"]) == (2, 2)
    assert [r["id"] for r in db.scan("sensor_data")] == [1002, 1003]
    db.set_table_budget("sensor_data", None)
    assert db.table_stats("sensor_data")["disk_budget_bytes"] is None


@pytest.mark.parametrize(
    "bytes_, on_full",
    [(0, None), (-1, None), (10, "explode")],
)
def test_hostile_budgets_are_refused(db: tidelog.Database, bytes_: int, on_full: str | None) -> None:
    with pytest.raises(tidelog.InvalidInputError) as e:
        db.create_table("t", disk_budget_bytes=bytes_, on_full=on_full)  # type: ignore[arg-type]
    assert "disk_budget_bytes" in str(e.value) or "on_full" in str(e.value) or "refuse" in str(e.value)
    db.create_table("u")
    with pytest.raises(tidelog.InvalidInputError):
        db.set_table_budget("u", bytes_, on_full)  # type: ignore[arg-type]
