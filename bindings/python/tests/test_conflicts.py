"""Concurrent writes from Python: the ``conflict`` table option, counters,
the conflict log and a Python resolver, with two databases in one process
replicating over mutual TLS on 127.0.0.1. Every conflict is made the same
way: while their link is down, both nodes write the same key (node a
first), so the writes are truly concurrent."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

import tidelog
from conftest import wait_until

FAST: Dict[str, Any] = dict(
    heartbeat_interval="100ms",
    idle_timeout="1500ms",
    backoff_initial="50ms",
    backoff_max="500ms",
    connect_timeout="5s",
)

Resolver = Callable[[tidelog.ConflictCase], tidelog.Resolution]


class Capture(logging.Handler):
    """Records of the ``tidelog.resolver`` logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: List[str] = []
        self.mu = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "tidelog.resolver":
            with self.mu:
                self.messages.append(record.getMessage())

    def saying(self, text: str) -> List[str]:
        with self.mu:
            return [m for m in self.messages if text in m]


@pytest.fixture
def capture() -> Iterator[Capture]:
    c = Capture()
    logger = logging.getLogger("tidelog")
    old = logger.level
    logger.addHandler(c)
    logger.setLevel(logging.INFO)
    try:
        yield c
    finally:
        logger.removeHandler(c)
        logger.setLevel(old)


class Pair:
    """Nodes a and b, each with tables `doc`, `counters` and `res`
    (conflict="resolver"), replicating all three both ways. They meet once
    (so the first, whole-table sync is behind them), then b drops the link:
    what each writes until `heal` arrives through the log, concurrently."""

    TABLES = ("doc", "counters", "res")

    def __init__(self, tmp_path: Path) -> None:
        self.pki = tidelog.dev_certs(tmp_path / "pki", ["a", "b"])
        self.a = tidelog.open(tmp_path / "a", "a")
        self.b = tidelog.open(tmp_path / "b", "b")
        for db in (self.a, self.b):
            db.create_table("doc")
            db.create_table("counters")
            db.create_table("res", conflict="resolver")
        self.flows: List[tidelog.TableFlow] = [
            {"table": t, "publish": True, "subscribe": True} for t in self.TABLES
        ]
        self.a.start_replication(**self.tls("a"))
        self.b.start_replication(**self.tls("b"))
        self.a.add_peer("b", tables=self.flows)
        self.addr = self.a.listen("127.0.0.1:0")
        self.b.add_peer("a", address=self.addr, tables=self.flows)
        for t in self.TABLES:
            self.a.upsert(t, {"id": "from-a"})
            self.b.upsert(t, {"id": "from-b"})
        for t in self.TABLES:
            wait_until(f"the nodes met ({t})", lambda: self.a.get(t, "from-b") and self.b.get(t, "from-a"))
        self.b.remove_peer("a")
        # Removing a peer ends its link asynchronously: frames still in
        # flight would make the writes that follow sequential, not concurrent.
        wait_until("a sees b's link end", lambda: not self.a.peer_status("b")["connected"])

    def tls(self, node: str) -> Dict[str, Any]:
        f = self.pki["nodes"][node]
        return dict(cert=f["cert"], key=f["key"], ca=self.pki["ca"], **FAST)

    def heal(self) -> None:
        self.b.add_peer("a", address=self.addr, tables=self.flows)

    def both(self, table: str, key: tidelog.Key) -> Tuple[Optional[tidelog.Record], Optional[tidelog.Record]]:
        return self.a.get(table, key), self.b.get(table, key)

    def close(self) -> None:
        self.b.close()
        self.a.close()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    try:
        yield p
    finally:
        p.close()


def v_of(r: Optional[tidelog.Record]) -> Any:
    return None if r is None else r.get("v")


def write_both(p: Pair, table: str, keys: List[int]) -> None:
    """Concurrent versions of `keys`: a's first, then b's (the later ones)."""
    for k in keys:
        p.a.upsert(table, {"id": k, "v": f"a{k}"})
    time.sleep(0.005)
    for k in keys:
        p.b.upsert(table, {"id": k, "v": f"b{k}"})


# ---- the table option ------------------------------------------------------


def test_conflict_option_round_trips(db: tidelog.Database) -> None:
    assert db.create_table("plain")["conflict"] == "lww"
    for policy in ("lww", "merge", "keep_local", "resolver"):
        info = db.create_table(f"t_{policy}", conflict=policy)  # type: ignore[arg-type]
        assert info["conflict"] == policy
        assert db.describe_table(f"t_{policy}")["conflict"] == policy
    assert db.ensure_table("t_new", conflict="merge") is True
    assert db.describe_table("t_new")["conflict"] == "merge"
    by_name = {t["name"]: t["conflict"] for t in db.list_tables()}
    assert by_name["t_keep_local"] == "keep_local" and by_name["plain"] == "lww"


def test_conflict_option_hostile_values(db: tidelog.Database) -> None:
    with pytest.raises(tidelog.InvalidInputError, match="conflict.*newest.*lww"):
        db.create_table("bad", conflict="newest")  # type: ignore[arg-type]
    with pytest.raises(tidelog.InvalidInputError, match="conflict"):
        db.create_table("bad", conflict="LWW")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        db.create_table("bad", conflict=1)  # type: ignore[arg-type]
    assert "bad" not in {t["name"] for t in db.list_tables()}


# ---- counters --------------------------------------------------------------


def test_increment_local_and_in_a_transaction(db: tidelog.Database) -> None:
    db.create_table("hits")
    c = db.increment("hits", "home", "n", 5)
    assert c.seq > 0
    db.increment("hits", "home", "n", -2)
    db.increment("hits", "home", "n")
    rec = db.get("hits", "home")
    assert rec is not None and rec["n"] == 4 and rec["id"] == "home"
    with db.transaction() as tx:
        tx.increment("hits", "home", "n", 10).increment("hits", 7, "n")
    assert v_n(db, "hits", "home") == 14 and v_n(db, "hits", 7) == 1


def v_n(db: tidelog.Database, table: str, key: tidelog.Key) -> Any:
    r = db.get(table, key)
    return None if r is None else r.get("n")


def test_increment_hostile_arguments(db: tidelog.Database) -> None:
    db.create_table("hits")
    db.upsert("hits", {"id": "text", "n": "many"})
    with pytest.raises(tidelog.InvalidInputError):
        db.increment("hits", "text", "n", 1)
    with pytest.raises(tidelog.InvalidInputError):
        db.increment("hits", 1.5, "n", 1)  # type: ignore[arg-type]
    with pytest.raises(tidelog.InvalidInputError):
        db.increment("hits", 1, "id", 1)
    with pytest.raises(OverflowError):
        db.increment("hits", 1, "n", 2**63)
    with pytest.raises(tidelog.TableNotFoundError):
        db.increment("nope", 1, "n", 1)
    db.increment("hits", "big", "n", 2**63 - 1)
    with pytest.raises(tidelog.InvalidInputError):
        db.increment("hits", "big", "n", 1)
    assert v_n(db, "hits", "big") == 2**63 - 1
    assert v_n(db, "hits", "text") == "many"


def test_increments_from_two_nodes_add_up(pair: Pair) -> None:
    pair.a.increment("counters", "c", "n", 3)
    pair.a.increment("counters", "c", "n", 3)
    pair.b.increment("counters", "c", "n", 4)
    pair.heal()
    wait_until("10 on both", lambda: [v_n(pair.a, "counters", "c"), v_n(pair.b, "counters", "c")] == [10, 10])


# ---- the conflict log ------------------------------------------------------------


def test_conflict_shows_up_in_both_logs_and_in_conflicts_table(pair: Pair) -> None:
    write_both(pair, "doc", [1])
    pair.heal()
    wait_until("b's version on both", lambda: [v_of(r) for r in pair.both("doc", 1)] == ["b1", "b1"])
    wait_until("an entry on a", lambda: [e for e in pair.a.conflicts() if e["table"] == "doc"])
    wait_until("an entry on b", lambda: [e for e in pair.b.conflicts() if e["table"] == "doc"])
    (ea,) = [e for e in pair.a.conflicts() if e["table"] == "doc"]
    assert ea["key"] == 1 and ea["rule"] == "lww" and ea["lost"] == "local"
    assert ea["winner_origin"] == "b" and ea["loser_origin"] == "a"
    assert ea["loser_values"] is not None and ea["loser_values"]["v"] == "a1"
    assert ea["winner"]["node"] == pair.b.node_id and ea["loser"]["node"] == pair.a.node_id
    assert ea["winner"]["time"] > ea["loser"]["time"]
    assert ea["id"].startswith("a:") and ea["at_ms"] > 0
    (eb,) = [e for e in pair.b.conflicts() if e["table"] == "doc"]
    assert eb["lost"] == "remote" and eb["loser_origin"] == "a"
    # The same entry as a record of the system table.
    row = pair.a.get("_conflicts", ea["id"])
    assert row is not None and row["table"] == "doc" and row["lost"] == "local"
    assert [r["id"] for r in pair.a.scan("_conflicts")] == [e["id"] for e in pair.a.conflicts()]
    assert pair.a.conflicts_dropped() == 0


def test_conflict_log_on_a_closed_database(db: tidelog.Database) -> None:
    db.close()
    with pytest.raises(tidelog.ClosedError):
        db.conflicts()


# ---- resolvers ------------------------------------------------------------------


def test_resolver_is_called_and_its_answer_wins_on_both_nodes(pair: Pair) -> None:
    cases: List[tidelog.ConflictCase] = []
    threads: List[str] = []

    def resolve(case: tidelog.ConflictCase) -> tidelog.Resolution:
        cases.append(case)
        threads.append(threading.current_thread().name)
        if case["key"] == 1:
            return {"id": 1, "v": "resolved"}
        if case["key"] == 2:
            return "delete"
        return "keep_local"

    write_both(pair, "res", [1, 2, 3])
    pair.a.set_conflict_resolver("res", resolve)
    pair.b.set_conflict_resolver("res", resolve)
    pair.heal()
    wait_until("the resolver's record on both", lambda: [v_of(r) for r in pair.both("res", 1)] == ["resolved"] * 2)
    wait_until("deleted on both", lambda: pair.both("res", 2) == (None, None))
    wait_until("3 converged", lambda: len({v_of(r) for r in pair.both("res", 3)}) == 1)
    assert cases, "the resolver was never called"
    c = cases[0]
    assert c["table"] == "res" and c["key"] in (1, 2, 3)
    assert set(c) == {"table", "key", "local", "local_stamp", "remote", "remote_stamp"}
    assert c["local"] is not None and c["remote"] is not None
    assert {c["local"]["v"], c["remote"]["v"]} == {f"a{c['key']}", f"b{c['key']}"}
    assert set(c["local_stamp"]) == {"time", "node"}
    assert threading.main_thread().name not in threads
    assert any(e["rule"] == "resolver" for e in pair.a.conflicts() + pair.b.conflicts())


def test_hostile_resolvers_count_as_take_remote_and_are_logged(pair: Pair, capture: Capture) -> None:
    def resolve(case: tidelog.ConflictCase) -> Any:
        k = case["key"]
        if k == 1:
            raise RuntimeError("resolver bug")
        if k == 2:
            return 42
        if k == 3:
            return "bogus"
        if k == 4:
            return None
        if k == 5:
            return {"id": 5, "v": float("nan")}
        return {"id": 6, "v": object()}

    keys = [1, 2, 3, 4, 5, 6]
    write_both(pair, "res", keys)
    pair.a.set_conflict_resolver("res", resolve)
    pair.b.set_conflict_resolver("res", resolve)
    pair.heal()
    for k in keys:
        # Each node took the other's version, then the later of the two
        # writes won everywhere: the nodes converge.
        wait_until(f"key {k} converged", lambda: len({v_of(r) for r in pair.both("res", k)}) == 1)
        assert v_of(pair.a.get("res", k)) in (f"a{k}", f"b{k}")
    wait_until("the exception logged", lambda: capture.saying("RuntimeError: resolver bug"))
    assert "Traceback" in capture.saying("RuntimeError")[0]
    wait_until("garbage logged", lambda: capture.saying("of type int"))
    wait_until("unknown answer logged", lambda: capture.saying("'bogus'") or capture.saying('"bogus"'))
    wait_until("None logged", lambda: capture.saying("of type NoneType"))
    assert all("took the remote version" in m for m in capture.saying("res"))


def test_resolver_arguments(db: tidelog.Database) -> None:
    db.create_table("res", conflict="resolver")
    with pytest.raises(tidelog.InvalidInputError, match="callable"):
        db.set_conflict_resolver("res", 42)  # type: ignore[arg-type]
    with pytest.raises(tidelog.TableNotFoundError):
        db.set_conflict_resolver("nope", lambda c: "take_remote")
    assert db.clear_conflict_resolver("res") is False
    db.set_conflict_resolver("res", lambda c: "take_remote")
    db.set_conflict_resolver("res", lambda c: "keep_local")
    assert db.clear_conflict_resolver("res") is True
    assert db.clear_conflict_resolver("res") is False


def test_closing_with_a_resolver_registered(pair: Pair) -> None:
    started = threading.Event()

    def slow(case: tidelog.ConflictCase) -> tidelog.Resolution:
        started.set()
        time.sleep(0.2)
        return "keep_local"

    write_both(pair, "res", [1])
    pair.a.set_conflict_resolver("res", slow)
    pair.b.set_conflict_resolver("res", slow)
    pair.heal()
    assert started.wait(30), "the resolver was never called"
    # Closing while a call may be in progress on a library thread: no
    # deadlock (close releases the GIL), and the handle is closed.
    pair.a.close()
    pair.b.close()
    assert pair.a.closed and pair.b.closed
    with pytest.raises(tidelog.ClosedError):
        pair.a.set_conflict_resolver("res", slow)
