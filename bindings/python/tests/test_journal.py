"""A damaged journal: opening it is a CorruptError unless recover_prefix
keeps its longest valid prefix, which dropped_transactions then counts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import tidelog

ROWS = 2000

# Writes ROWS one-row transactions, flushes, and is killed, so the rows live
# only in fjall's journal.
CHILD = f"""
import os, signal, sys, tidelog
db = tidelog.open(sys.argv[1], "jnl")
db.create_table("t")
for i in range({ROWS}):
    db.insert("t", {{"id": i, "v": "y" * 40}})
db.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def used_len(p: Path) -> int:
    """fjall preallocates its journal: the written part ends at the last
    nonzero byte."""
    return len(p.read_bytes().rstrip(b"\0"))


@pytest.mark.parametrize("damage", ["zero_middle_4k", "truncate_to_third"])
def test_damaged_journal_is_corrupt_unless_recover_prefix(tmp_path: Path, damage: str) -> None:
    d = tmp_path / "db"
    child = subprocess.run([sys.executable, "-c", CHILD, str(d)], check=False)
    assert child.returncode == -signal.SIGKILL, "the child flushed and was killed"
    journal = max((d / "data").rglob("*.jnl"), key=used_len)
    used = used_len(journal)
    with open(journal, "r+b") as f:
        if damage == "zero_middle_4k":
            f.seek(used // 2)
            f.write(b"\0" * 4096)
        else:
            f.truncate(used // 3)
        f.flush()
        os.fsync(f.fileno())

    for _ in range(2):
        with pytest.raises(tidelog.CorruptError, match="recover_prefix"):
            tidelog.open(str(d), "jnl")
    with tidelog.open(str(d), "jnl", recover_prefix=True) as db:
        rows = db.count("t")
        assert rows < ROWS
        assert rows + db.dropped_transactions == ROWS
    with tidelog.open(str(d), "jnl") as db:
        assert db.dropped_transactions == 0
        assert db.count("t") == rows
