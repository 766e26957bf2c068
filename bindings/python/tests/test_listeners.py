"""Change listeners: Python callables run on the tidelog-events thread."""

from __future__ import annotations

import sys
import threading
from typing import Any, List

import pytest

import tidelog
from conftest import wait_until


def test_listener_gets_events_on_the_events_thread(db: tidelog.Database, table: str) -> None:
    events: List[Any] = []
    threads: List[str] = []

    def on(ev: Any) -> None:
        threads.append(threading.current_thread().name)
        events.append(ev)

    lid = db.on_change(table, on)
    assert isinstance(lid, int)
    with db.transaction() as tx:
        tx.upsert(table, {"id": 1, "sensor": "a"}).upsert(table, {"id": 2})
    db.delete(table, 1)
    wait_until("two events", lambda: len(events) == 2)
    ev = events[0]
    assert ev["table"] == table and ev["seq"] == 1 and ev["local"] is True
    assert ev["origin"] == ev["stamp"]["node"] == db.node_id and ev["stamp"]["time"] > 0
    assert ev["stamp_ms"] == ev["stamp"]["time"] >> 16
    assert [c["key"] for c in ev["changes"]] == [1, 2]
    assert ev["changes"][0]["record"]["sensor"] == "a"
    assert events[1]["changes"] == [{"key": 1, "record": None}]
    # Runs on a thread Python did not start (shown as a dummy thread).
    assert threads[0] != threading.main_thread().name
    assert db.remove_listener(lid) is True
    assert db.remove_listener(lid) is False
    db.upsert(table, {"id": 3})
    db.flush()
    assert len(events) == 2


def test_listener_exception_is_reported_counted_and_listener_stays(
    db: tidelog.Database, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: List[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u))
    calls: List[int] = []

    def bad(ev: Any) -> None:
        calls.append(ev["seq"])
        if len(calls) == 1:
            raise ValueError("listener bug")

    db.on_change(table, bad)
    db.upsert(table, {"id": 1})
    db.upsert(table, {"id": 2})
    wait_until("both calls", lambda: len(calls) == 2)
    wait_until("report", lambda: len(reported) == 1)
    assert isinstance(reported[0].exc_value, ValueError)
    assert reported[0].object is bad
    assert db.listener_errors == 1


def test_listener_may_write_to_the_database(db: tidelog.Database, table: str) -> None:
    db.create_table("audit")
    seen: List[int] = []

    def copy(ev: Any) -> None:
        for c in ev["changes"]:
            db.upsert("audit", {"id": c["key"], "seen": True})
        seen.append(1)

    db.on_change(table, copy)
    for i in range(20):
        db.upsert(table, {"id": i})
    wait_until("audit rows", lambda: db.count("audit") == 20)


def test_listener_argument_errors(db: tidelog.Database) -> None:
    with pytest.raises(tidelog.InvalidInputError, match="callable"):
        db.on_change("t", 42)  # type: ignore[arg-type]
    with pytest.raises(tidelog.InvalidInputError):
        db.on_change("bad name!", print)


def test_close_with_a_busy_listener_does_not_deadlock(tmp_path: Any) -> None:
    db = tidelog.open(tmp_path / "d", "n1")
    db.create_table("t")
    started = threading.Event()

    def slow(ev: Any) -> None:
        started.set()
        sum(range(200_000))  # holds the GIL for a while

    db.on_change("t", slow)
    for i in range(50):
        db.upsert("t", {"id": i})
    started.wait(10)
    db.close()  # waits for queued events without holding the GIL
    assert db.closed


def test_a_stalled_listener_is_told_what_it_missed(tmp_path: Any) -> None:
    # The queue holds 4 events: the rest are dropped, never queued without
    # bound, and the next delivered event says how many.
    gate = threading.Event()
    got: List[int] = []
    missed: List[int] = []
    with tidelog.open(tmp_path / "db", "n", listener_queue_max=4) as db:
        db.create_table("t")

        def on(e: tidelog.ChangeEvent) -> None:
            gate.wait()
            got.append(e["seq"])
            missed.append(e["missed"])

        db.on_change("t", on)
        for i in range(200):
            db.upsert("t", {"id": i})
        gate.set()
        wait_until("the queue drains", lambda: len(got) == 5)
        last = db.upsert("t", {"id": 0, "v": 1})
        wait_until("the last event", lambda: got[-1] == last.seq)
    assert len(got) == 6
    assert len(got) + sum(missed) == 201
    assert got == sorted(got)
