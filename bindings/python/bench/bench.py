"""Single-record upserts and point gets: tidelog from Python vs the same loop
on the Rust API (in the same process, same records) vs Python's sqlite3
(WAL, synchronous=NORMAL, autocommit, an index on `sensor`).

Run by hand, on a release build:

    .venv/bin/maturin develop --release -m bindings/python/Cargo.toml
    .venv/bin/python bindings/python/bench/bench.py [N [ROUNDS]]

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


def rate(n: int, f: Callable[[], None], out: Dict[str, float], name: str) -> None:
    """Wall-clock rate, and the rate by process CPU time (all threads):
    the second is steadier on a machine shared with other work."""
    t, c = time.perf_counter(), time.process_time()
    f()
    out[name] = n / (time.perf_counter() - t)
    out[name + "_cpu"] = n / max(time.process_time() - c, 1e-9)


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

        rate(n, ups, out, "upserts")
        rate(n, gets, out, "gets")

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

        rate(n, ups_json, out, "upserts_json_dumps")
        rate(n, ups_json_pre, out, "upserts_json_pretext")
        rate(n, gets_json, out, "gets_json_loads")
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

    out: Dict[str, float] = {}
    rate(n, ups, out, "upserts")
    rate(n, gets, out, "gets")
    con.close()
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    recs = records(n)
    runs: Dict[str, List[Dict[str, float]]] = {"rust": [], "py": [], "sqlite": []}
    # Interleaved rounds, a fresh directory each time, order rotated, so
    # load from other processes on a shared machine hits all three alike;
    # the best round of each is reported.
    for r in range(rounds):
        order = ["rust", "py", "sqlite"][r % 3:] + ["rust", "py", "sqlite"][: r % 3]
        with tempfile.TemporaryDirectory() as root:
            for who in order:
                if who == "rust":
                    runs["rust"].append(_tidelog._rust_baseline(f"{root}/rust", n))
                elif who == "py":
                    runs["py"].append(bench_tidelog(n, recs, root))
                else:
                    runs["sqlite"].append(bench_sqlite(n, recs, root))

    def best(who: str, key: str) -> float:
        return max(run[key] for run in runs[who])

    rust = {k: best("rust", k) for k in runs["rust"][0]}
    py = {k: best("py", k) for k in runs["py"][0]}
    sq = {k: best("sqlite", k) for k in runs["sqlite"][0]}
    print(f"n = {n} single-record operations, one thread, default durability (grouped 50 ms), "
          f"best of {rounds} interleaved rounds")
    ok = lambda b: "ok" if b else "MISSED"  # noqa: E731
    for label, sfx in (("wall clock", ""), ("process CPU time (steadier under load)", "_cpu")):
        print(f"\n-- rates by {label}")
        print(f"{'':28}{'upserts/s':>12}{'gets/s':>12}")
        print(f"{'tidelog Rust API':28}{rust['upserts' + sfx]:12,.0f}{rust['gets' + sfx]:12,.0f}"
              "   (gets: Record::to_value, like a dict)")
        print(f"{'  (gets, JSON text only)':28}{'':>12}{rust['gets_raw' + sfx]:12,.0f}")
        print(f"{'tidelog Python (dicts)':28}{py['upserts' + sfx]:12,.0f}{py['gets' + sfx]:12,.0f}")
        print(f"{'tidelog Python (json text)':28}{py['upserts_json_dumps' + sfx]:12,.0f}"
              f"{py['gets_json_loads' + sfx]:12,.0f}   (json.dumps / json.loads)")
        print(f"{'  (pre-serialized text)':28}{py['upserts_json_pretext' + sfx]:12,.0f}")
        print(f"{'sqlite3 (WAL, NORMAL)':28}{sq['upserts' + sfx]:12,.0f}{sq['gets' + sfx]:12,.0f}")
        up_sq, get_sq = py["upserts" + sfx] / sq["upserts" + sfx], py["gets" + sfx] / sq["gets" + sfx]
        up_rs, get_rs = py["upserts" + sfx] / rust["upserts" + sfx], py["gets" + sfx] / rust["gets" + sfx]
        print(f"upserts: {up_sq:.2f}x sqlite3 (target >= 2x: {ok(up_sq >= 2)}), "
              f"{up_rs:.0%} of Rust (target >= 70%: {ok(up_rs >= 0.7)})")
        print(f"gets:    {get_sq:.2f}x sqlite3 (target >= 1.5x: {ok(get_sq >= 1.5)}), "
              f"{get_rs:.0%} of Rust (target >= 70%: {ok(get_rs >= 0.7)})")


if __name__ == "__main__":
    main()
