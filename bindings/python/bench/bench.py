"""Single-record upserts and point gets: tidelog from Python vs the same loop
on the Rust API (same process, same database, `Database._rust_upserts` /
`_rust_gets`) vs Python's sqlite3 (WAL, synchronous=NORMAL, autocommit, an
index on `sensor`) on the same records.

Run by hand, on a release build:

    .venv/bin/maturin develop --release --features bench -m bindings/python/Cargo.toml

(the `bench` feature adds the Rust loops; a plain build leaves them out)
    .venv/bin/python bindings/python/bench/bench.py [N [ROUNDS]]

Python vs Rust is measured in pairs, as bindings/node/bench/bench.js does.
Each round opens a fresh database with two tables of N / 2 records each, one
written and read from Python, the other by the Rust loop; the two take turns
in chunks of CHUNK records, so both see the same memtable and the same
moments of a shared, noisy machine. (Separate databases per variant, compared
by their best rounds, let the machine's mood decide: the same build measured
Python upserts at 64 % to 108 % of Rust that way.) Whoever writes when a
memtable fills waits for it, so who goes first alternates round by round, and
the ratio is pooled: all of Python's time against all of Rust's, over an even
number of rounds. Each round's own ratio is printed too.

sqlite3 runs in its own fresh database of N records, taking turns with the
pair round by round; its rates are medians over rounds. The JSON-text
variants (json.dumps / json.loads around tidelog's text interface) run once
per round in their own database.

A Python get returns a dict, so the Rust loop it is held against turns each
record into a `serde_json::Value` too; the rate of a Rust get that leaves the
record as stored JSON text is printed alongside.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

import tidelog

CHUNK = 5_000


def record(i: int) -> Dict[str, Any]:
    # Exactly what the Rust loop builds (bindings/python/src/baseline.rs).
    return {"id": i, "sensor": f"s-{i % 100}", "value": i * 0.5, "unit": "C", "ok": True}


def seconds(f: Callable[[], None]) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def pair_round(root: str, half: int, python_first: bool) -> Dict[str, float]:
    """One round of Python vs Rust on one database, in turns; seconds."""
    t = {"py_up": 0.0, "rust_up": 0.0, "py_get": 0.0, "rust_get": 0.0, "rust_get_value": 0.0}
    with tidelog.open(f"{root}/pair", "bench") as db:
        for table in ("py", "rust"):
            db.create_table(table, indexes=["sensor"])
        upsert, get = db.upsert, db.get

        def turns(py_step: Callable[[int, int], None], rust_step: Callable[[int, int], None]) -> None:
            for start in range(0, half, CHUNK):
                stop = min(half, start + CHUNK)
                steps = (py_step, rust_step) if python_first else (rust_step, py_step)
                for step in steps:
                    step(start, stop)

        def py_upserts(start: int, stop: int) -> None:
            def loop() -> None:
                for i in range(start, stop):
                    upsert("py", record(i))

            t["py_up"] += seconds(loop)

        def rust_upserts(start: int, stop: int) -> None:
            t["rust_up"] += db._rust_upserts("rust", start, stop)

        sink = 0.0

        def py_gets(start: int, stop: int) -> None:
            def loop() -> None:
                nonlocal sink
                for i in range(start, stop):
                    r = get("py", i)
                    assert r is not None
                    sink += r["value"]

            t["py_get"] += seconds(loop)

        def rust_gets(start: int, stop: int) -> None:
            t["rust_get"] += db._rust_gets("rust", start, stop, False)
            t["rust_get_value"] += db._rust_gets("rust", start, stop, True)

        turns(py_upserts, rust_upserts)
        turns(py_gets, rust_gets)
        if sink != (half - 1) * half / 4:
            raise AssertionError(f"bad read-back: {sink}")
    return t


def json_text_round(root: str, n: int) -> Dict[str, float]:
    """Rates through tidelog's JSON-text interface, in a database of its own."""
    recs = [record(i) for i in range(n)]
    texts = [json.dumps(r) for r in recs]
    out: Dict[str, float] = {}
    with tidelog.open(f"{root}/json", "bench") as db:
        db.create_table("readings", indexes=["sensor"])
        upsert, get_json, dumps, loads = db.upsert, db._get_json, json.dumps, json.loads

        def ups_dumps() -> None:
            for r in recs:
                upsert("readings", dumps(r))

        def ups_pretext() -> None:
            for s in texts:
                upsert("readings", s)

        def gets_loads() -> None:
            for i in range(n):
                loads(get_json("readings", i))

        out["upserts_dumps"] = n / seconds(ups_dumps)
        out["upserts_pretext"] = n / seconds(ups_pretext)
        out["gets_loads"] = n / seconds(gets_loads)
    return out


def sqlite_round(root: str, n: int) -> Dict[str, float]:
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
        # The same record built per row as tidelog's loop builds its dict.
        for i in range(n):
            r = record(i)
            ex(up_sql, (r["id"], r["sensor"], r["value"], r["unit"], r["ok"]))

    def gets() -> None:
        # Rows as tuples: sqlite3's fastest form (tidelog builds dicts).
        for i in range(n):
            if ex(get_sql, (i,)).fetchone() is None:
                raise AssertionError(i)

    out = {"upserts": n / seconds(ups), "gets": n / seconds(gets)}
    con.close()
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    # Even, so that each side goes first equally often.
    rounds = 2 * -(-int(sys.argv[2] if len(sys.argv) > 2 else 8) // 2)
    half = n // 2
    pairs: List[Dict[str, float]] = []
    sq: List[Dict[str, float]] = []
    js: List[Dict[str, float]] = []
    for r in range(rounds):
        with tempfile.TemporaryDirectory() as root:
            pairs.append(pair_round(root, half, python_first=r % 2 == 0))
        with tempfile.TemporaryDirectory() as root:
            sq.append(sqlite_round(root, n))
        with tempfile.TemporaryDirectory() as root:
            js.append(json_text_round(root, n))

    total = {k: sum(p[k] for p in pairs) for k in pairs[0]}
    ops = half * rounds
    rate = {k: ops / v for k, v in total.items()}
    sq_med = {k: statistics.median(s[k] for s in sq) for k in sq[0]}
    js_med = {k: statistics.median(s[k] for s in js) for k in js[0]}
    print(f"tidelog bench: {n:,} records per database, {rounds} rounds, "
          f"Python {sys.version.split()[0]}, default durability (grouped 50 ms)")
    print(f"{'':34}{'upserts/s':>12}{'gets/s':>12}")
    rows = [
        ("tidelog from Python (dicts)", rate["py_up"], rate["py_get"]),
        ("tidelog Rust API (same loop)", rate["rust_up"], rate["rust_get_value"]),
        ("  (Rust get, record left as text)", None, rate["rust_get"]),
        ("tidelog, json.dumps / json.loads", js_med["upserts_dumps"], js_med["gets_loads"]),
        ("  (pre-serialized text)", js_med["upserts_pretext"], None),
        ("sqlite3 (WAL, NORMAL)", sq_med["upserts"], sq_med["gets"]),
    ]
    for label, up, gt in rows:
        cell = lambda v: f"{v:12,.0f}" if v is not None else " " * 12  # noqa: E731
        print(f"{label:34}{cell(up)}{cell(gt)}")

    def per_round(py: str, rust: str) -> str:
        return " ".join(f"{p[rust] / p[py]:.0%}" for p in pairs)

    ok = lambda b: "ok" if b else "MISSED"  # noqa: E731
    up_rs = total["rust_up"] / total["py_up"]
    get_rs = total["rust_get_value"] / total["py_get"]
    get_raw = total["rust_get"] / total["py_get"]
    print("\nPython vs Rust API, paired, pooled over rounds (target >= 70%):")
    print(f"  upserts {up_rs:.0%} {ok(up_rs >= 0.7)} (rounds: {per_round('py_up', 'rust_up')})")
    print(f"  gets    {get_rs:.0%} {ok(get_rs >= 0.7)} against a Rust get that builds a Value "
          f"(rounds: {per_round('py_get', 'rust_get_value')})")
    print(f"  gets    {get_raw:.0%} against a Rust get that leaves the record as text")
    up_sq, get_sq = rate["py_up"] / sq_med["upserts"], rate["py_get"] / sq_med["gets"]
    print(f"Python vs sqlite3 {sqlite3.sqlite_version}: upserts {up_sq:.2f}x (target >= 2x: "
          f"{ok(up_sq >= 2)}), gets {get_sq:.2f}x (target >= 1.5x: {ok(get_sq >= 1.5)})")


if __name__ == "__main__":
    main()
