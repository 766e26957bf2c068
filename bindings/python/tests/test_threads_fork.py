"""Several Python threads at once, the GIL released while blocked, and
os.fork() with an open database."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import List

import pytest

import tidelog


def test_several_threads_writing_and_reading(db: tidelog.Database, table: str) -> None:
    n_threads, per_thread = 8, 300
    errors: List[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(per_thread):
                key = t * per_thread + i
                if i % 3 == 0:
                    with db.transaction() as tx:
                        tx.upsert(table, {"id": key, "sensor": f"s{t}", "value": i})
                else:
                    db.insert(table, {"id": key, "sensor": f"s{t}", "value": i})
                got = db.get(table, key)
                assert got is not None and got["value"] == i
                if i % 50 == 0:
                    db.scan(table, limit=20)
                    db.count(table)
        except BaseException as e:  # noqa: BLE001 - collected for the assert
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert db.count(table) == n_threads * per_thread
    assert db.log_bounds()["last"] == n_threads * per_thread
    for t in range(n_threads):
        assert len(db.find_eq(table, "sensor", f"s{t}")) == per_thread


def test_blocking_calls_release_the_gil(db: tidelog.Database) -> None:
    db.start_replication(insecure=True)
    db.add_peer("ghost", address="127.0.0.1:9")  # never answers
    db.create_table("t")
    seq = db.upsert("t", {"id": 1}).seq
    done = threading.Event()
    ticks = 0

    def waiter() -> None:
        with pytest.raises(tidelog.TimeoutError):
            db.wait_for_ack("ghost", seq, timeout=1.0)
        done.set()

    th = threading.Thread(target=waiter)
    th.start()
    while not done.is_set():
        ticks += 1  # pure Python: only runs if the waiter let go of the GIL
    th.join()
    assert ticks > 10_000


def _run_child(body: "callable[[], int]") -> int:  # type: ignore[valid-type]
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = body()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("forked child hung")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_gets_forked_error_and_never_hangs(tmp_path: Path) -> None:
    db = tidelog.open(tmp_path / "d", "n1")
    db.create_table("t")
    db.on_change("t", lambda ev: None)  # a live listener thread in the parent
    db.start_replication(insecure=True)
    db.listen("127.0.0.1:0")
    db.upsert("t", {"id": 1})
    tx = db.transaction()
    tx.upsert("t", {"id": 2})

    def child() -> int:
        for call in (
            lambda: db.get("t", 1),
            lambda: db.upsert("t", {"id": 3}),
            lambda: db.transaction(),
            lambda: tx.commit(),
            lambda: db.replication_status(),
            lambda: db.node_name,
        ):
            try:
                call()
                return 1
            except tidelog.ForkedError as e:
                if "fork" not in str(e):
                    return 2
        if "parent" not in repr(db):
            return 3
        db.close()  # only lets go of the parent's handle
        # The child can open its own database (a different directory).
        with tidelog.open(tmp_path / "child", "n2") as own:
            own.create_table("c")
            own.upsert("c", {"id": 1})
        return 0

    assert _run_child(child) == 0
    # The parent is unaffected.
    tx.commit()
    assert db.get("t", 2) is not None
    db.close()


CHILD_EXITS_NORMALLY = r"""
import os, sys, tidelog
db = tidelog.open(sys.argv[1], "n1")
db.create_table("t")
db.on_change("t", lambda ev: None)
db.start_replication(insecure=True)
db.listen("127.0.0.1:0")
db.upsert("t", {"id": 1})
pid = os.fork()
if pid == 0:
    try:
        db.get("t", 1)
        sys.exit(5)
    except tidelog.ForkedError:
        pass
    sys.exit(0)  # full interpreter shutdown: atexit close-all, finalizers
_, status = os.waitpid(pid, 0)
db.upsert("t", {"id": 2})
db.close()
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_exits_normally_without_hanging(tmp_path: Path) -> None:
    import subprocess

    r = subprocess.run(
        [sys.executable, "-c", CHILD_EXITS_NORMALLY, str(tmp_path / "d")],
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


class _Interrupted(Exception):
    pass


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_wait_for_ack_is_interruptible(db: tidelog.Database) -> None:
    db.start_replication(insecure=True)
    db.add_peer("ghost", address="127.0.0.1:9")
    db.create_table("t")
    seq = db.upsert("t", {"id": 1}).seq

    def on_alarm(signum: int, frame: object) -> None:
        raise _Interrupted()

    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        t = time.monotonic()
        with pytest.raises(_Interrupted):
            db.wait_for_ack("ghost", seq, timeout=30)
        assert time.monotonic() - t < 5
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
