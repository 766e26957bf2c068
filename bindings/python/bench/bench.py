"""Single-record upserts and point gets: tidelog from Python vs the same loop
on the Rust API (in the same process, same records) vs Python's sqlite3
(WAL, synchronous=NORMAL, autocommit, an index on `sensor`).

Run by hand, on a release build:

    .venv/bin/maturin develop --release -m bindings/python/Cargo.toml
    .venv/bin/python bindings/python/bench/bench.py [N]

It also compares the two ways records can cross the boundary: dicts
converted in Rust (the default) and JSON text with the stdlib json module.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

import tidelog
from tidelog import _tidelog


def records(n: int) -> List[Dict[str, Any]]:
    # Exactly what _rust_baseline builds.
    return [
        {"id": i, "sensor": f"s-{i % 100}", "value": i * 0.5, "unit": "C", "ok": True}
        for i in range(n)
    ]


def rate(n: int, f: Callable[[], None]) -> float:
    t = time.perf_counter()
    f()
    return n / (time.perf_counter() - t)


def bench_tidelog(n: int, recs: List[Dict[str, Any]], root: str) -> Dict[str, float]:
    out: Dict[str, float] = {}
    with tidelog.open(f"{root}/py", "bench") as db:
        db.create_table("readings", indexes=["sensor"])
        upsert, get = db.upsert, db.get

        def ups() -> None:
            for r in recs:
                upsert("readings", r)

        def gets() -> None:
            for i in range(n):
                if get("readings", i) is None:
                    raise AssertionError(i)

        out["upserts"] = rate(n, ups)
        out["gets"] = rate(n, gets)

        texts = [json.dumps(r) for r in recs]
        loads, get_json = json.loads, db._get_json
        dumps = json.dumps

        def ups_json() -> None:
            for r in recs:
                upsert("readings", dumps(r))

        def ups_json_pre() -> None:
            for t in texts:
                upsert("readings", t)

        def gets_json() -> None:
            for i in range(n):
                loads(get_json("readings", i))

        out["upserts_json_dumps"] = rate(n, ups_json)
        out["upserts_json_pretext"] = rate(n, ups_json_pre)
        out["gets_json_loads"] = rate(n, gets_json)
    return out


def bench_sqlite(n: int, recs: List[Dict[str, Any]], root: str) -> Dict[str, float]:
    con = sqlite3.connect(f"{root}/bench.sqlite", isolation_level=None)  # autocommit
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute(
        "CREATE TABLE readings (id INTEGER PRIMARY KEY, sensor TEXT, value REAL, unit TEXT, ok INTEGER)"
    )
    con.execute("CREATE INDEX readings_sensor ON readings(sensor)")
    ex = con.execute
    up_sql = (
        "INSERT INTO readings (id, sensor, value, unit, ok) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET sensor=excluded.sensor, value=excluded.value, "
        "unit=excluded.unit, ok=excluded.ok"
    )
    get_sql = "SELECT id, sensor, value, unit, ok FROM readings WHERE id = ?"

    def ups() -> None:
        for r in recs:
            ex(up_sql, (r["id"], r["sensor"], r["value"], r["unit"], r["ok"]))

    def gets() -> None:
        # Rows as tuples: sqlite3's fastest form (tidelog builds dicts).
        for i in range(n):
            if ex(get_sql, (i,)).fetchone() is None:
                raise AssertionError(i)

    out = {"upserts": rate(n, ups), "gets": rate(n, gets)}
    con.close()
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    recs = records(n)
    with tempfile.TemporaryDirectory() as root:
        rust = _tidelog._rust_baseline(f"{root}/rust", n)
        py = bench_tidelog(n, recs, root)
        sq = bench_sqlite(n, recs, root)
    print(f"n = {n} single-record operations, one thread, default durability (grouped 50 ms)")
    print(f"{'':28}{'upserts/s':>12}{'gets/s':>12}")
    print(f"{'tidelog Rust API':28}{rust['upserts_per_s']:12,.0f}{rust['gets_per_s']:12,.0f}")
    print(f"{'tidelog Python (dicts)':28}{py['upserts']:12,.0f}{py['gets']:12,.0f}")
    print(f"{'tidelog Python (json text)':28}{py['upserts_json_dumps']:12,.0f}{py['gets_json_loads']:12,.0f}")
    print(f"{'  (pre-serialized text)':28}{py['upserts_json_pretext']:12,.0f}{'':>12}")
    print(f"{'sqlite3 (WAL, NORMAL)':28}{sq['upserts']:12,.0f}{sq['gets']:12,.0f}")
    up_sq, get_sq = py["upserts"] / sq["upserts"], py["gets"] / sq["gets"]
    up_rs, get_rs = py["upserts"] / rust["upserts_per_s"], py["gets"] / rust["gets_per_s"]
    ok = lambda b: "ok" if b else "MISSED"  # noqa: E731
    print(f"upserts: {up_sq:.2f}x sqlite3 (target >= 2x: {ok(up_sq >= 2)}), "
          f"{up_rs:.0%} of Rust (target >= 70%: {ok(up_rs >= 0.7)})")
    print(f"gets:    {get_sq:.2f}x sqlite3 (target >= 1.5x: {ok(get_sq >= 1.5)}), "
          f"{get_rs:.0%} of Rust (target >= 70%: {ok(get_rs >= 0.7)})")


if __name__ == "__main__":
    main()
