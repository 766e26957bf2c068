"""One view in every binding: the same log entries, change events and commit
info, read through C, Python and Node.js.

A cloud's data directory is built over a real mutual-TLS link on 127.0.0.1
(an edge's alerts applied there: entries with another origin and `local`
false, beside the cloud's own). Then, one process at a time, the C ABI,
Python and Node each open that directory, commit one transaction while
listening to the table, and read the whole log; at the end each reads the
whole log once more. The checks:

- the three final logs are equal field by field, once the two documented
  representation differences are undone (Node's camelCase names and its
  bigints), and every value has its binding's documented type (64-bit ids
  and stamps exact: JSON integers in C, int in Python, bigint in Node);
- each binding's objects have exactly the view's field names, no more;
- each change event and commit info agrees with the log entry of the same
  seq as every binding reads it, and means what the README says (origin is
  stamp.node, stamp_ms is stamp.time's milliseconds and the records'
  __updatedtime__, local is false exactly for the edge's entries).

Run by `bash tests/run_all.sh crosslang`, which builds the three bindings
first; by hand: `.venv/bin/python tests/cross_language/same_views.py`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TABLE = "alerts"

ENTRY = ["seq", "origin", "stamp", "stamp_ms", "local", "logged_ms", "writes"]
WRITE = ["table", "key", "op", "record"]
EVENT = ["table", "seq", "origin", "stamp", "stamp_ms", "local", "changes", "missed"]
CHANGE = ["key", "record"]
COMMIT = ["seq", "origin", "stamp", "stamp_ms"]
STAMP = ["time", "node"]
TIMES = ["__createdtime__", "__updatedtime__"]


class Mismatch(AssertionError):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Mismatch(what)


# ---- the Python reader (run as a child process, like the other two) ------


def python_reader(mode: str, path: str, table: str) -> None:
    import tidelog

    db = tidelog.open(path, "cloud")
    try:
        out: Dict[str, Any] = {"node_id": db.node_id}
        if mode == "write":
            got: List[Any] = []
            seen = threading.Event()
            db.on_change(table, lambda ev: (got.append(ev), seen.set()))
            tx = db.transaction()
            tx.upsert(table, {"id": "python-1", "lang": "python", "n": 1.5, "tags": ["x", "é"], "nested": {"a": None}})
            tx.upsert(table, {"id": "python-tmp"})
            tx.delete(table, "python-tmp")
            info = tx.commit()
            out["commit"] = {f: getattr(info, f) for f in COMMIT}
            check(seen.wait(10), "python: no change event in 10 s")
            out["event"] = got[0]
        out["log"] = db.read_log(1, 1000)
    finally:
        db.close()
    # Python's own types, checked before JSON hides them: bool is not int.
    for e in out["log"]:
        for f in ("seq", "origin", "stamp_ms", "logged_ms"):
            check(type(e[f]) is int, f"python: log {f} is {type(e[f]).__name__}, not int")
        check(all(type(e["stamp"][f]) is int for f in STAMP), "python: stamp values are not int")
    print(json.dumps(out, ensure_ascii=False))


# ---- running the three ---------------------------------------------------


def build_c(work: Path) -> Path:
    lib = ROOT / "target" / "debug"
    check((lib / "libtidelog.so").exists(), f"no {lib}/libtidelog.so: run `cargo build -p tidelog-ffi` first")
    exe = work / "views_c"
    subprocess.run(
        ["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{ROOT / 'include'}",
         str(HERE / "views_c.c"), f"-L{lib}", "-ltidelog", f"-Wl,-rpath,{lib}", "-o", str(exe)],
        check=True,
    )
    return exe


def run(lang: str, mode: str, path: Path, c_exe: Path) -> Dict[str, Any]:
    if lang == "c":
        argv = [str(c_exe), mode, str(path), TABLE]
    elif lang == "python":
        argv = [sys.executable, str(Path(__file__).resolve()), "--reader", mode, str(path), TABLE]
    else:
        argv = ["node", str(HERE / "views_node.js"), mode, str(path), TABLE]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise Mismatch(f"{lang} {mode} failed (rc {p.returncode}):\n{p.stderr}{p.stdout}")
    return json.loads(p.stdout)


# ---- what each binding's values must look like ---------------------------


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def u64(v: Any, lang: str, where: str) -> int:
    if lang == "node":
        check(isinstance(v, dict) and list(v) == ["$bigint"], f"node {where}: {v!r} is not a bigint")
        v = int(v["$bigint"])
    else:
        check(type(v) is int, f"{lang} {where}: {v!r} is not an integer")
    check(0 <= v < 1 << 64, f"{lang} {where}: {v} is not a 64-bit unsigned value")
    return int(v)


def plain(v: Any, lang: str, where: str) -> int:
    # Node hands these out as numbers; JSON writes a whole number as one.
    check(type(v) is int and 0 <= v < 1 << 53, f"{lang} {where}: {v!r} is not a plain whole number")
    return int(v)


def record(v: Any, lang: str, where: str) -> Any:
    if v is None:
        return None
    check(isinstance(v, dict), f"{lang} {where}: {v!r} is not an object")
    for t in TIMES:
        check(type(v.get(t)) is int, f"{lang} {where}: no integer {t} in {v!r}")
    return v


def canon(obj: Any, fields: List[str], lang: str, where: str) -> Dict[str, Any]:
    """The binding's object as the view's snake_case fields, each checked
    for its documented type, with 64-bit values as ints."""
    check(isinstance(obj, dict), f"{lang} {where}: {obj!r} is not an object")
    names = [camel(f) if lang == "node" else f for f in fields]
    check(sorted(obj) == sorted(names), f"{lang} {where}: fields {sorted(obj)}, the view has {sorted(names)}")
    out: Dict[str, Any] = {}
    for f, n in zip(fields, names):
        v, at = obj[n], f"{where}.{n}"
        if f in ("origin", "time", "node"):
            out[f] = u64(v, lang, at)
        elif f in ("seq", "stamp_ms", "logged_ms", "missed"):
            out[f] = plain(v, lang, at)
        elif f == "stamp":
            out[f] = canon(v, STAMP, lang, at)
        elif f == "local":
            check(type(v) is bool, f"{lang} {at}: {v!r} is not a boolean")
            out[f] = v
        elif f == "writes":
            out[f] = [canon(w, WRITE, lang, f"{at}[{i}]") for i, w in enumerate(v)]
        elif f == "changes":
            out[f] = [canon(c, CHANGE, lang, f"{at}[{i}]") for i, c in enumerate(v)]
        elif f == "record":
            out[f] = record(v, lang, at)
        elif f == "key":
            check(type(v) in (int, str), f"{lang} {at}: {v!r} is not an integer or a string key")
            out[f] = v
        else:
            check(isinstance(v, str), f"{lang} {at}: {v!r} is not a string")
            out[f] = v
    return out


def log_of(out: Dict[str, Any], lang: str) -> List[Dict[str, Any]]:
    return [canon(e, ENTRY, lang, f"log[{i}]") for i, e in enumerate(out["log"])]


def node_id_of(out: Dict[str, Any], lang: str) -> int:
    if lang == "c":
        return u64(out["info"]["node_id"], lang, "node_info.node_id")
    return u64(out["nodeId" if lang == "node" else "node_id"], lang, "node id")


def first_difference(a: Any, b: Any, at: str = "") -> str:
    if type(a) is not type(b):
        return f"{at}: {a!r} vs {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{at}.{k}: only in one"
            d = first_difference(a[k], b[k], f"{at}.{k}")
            if d:
                return d
        return ""
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{at}: {len(a)} items vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{at}[{i}]")
            if d:
                return d
        return ""
    return "" if a == b else f"{at}: {a!r} vs {b!r}"


# ---- the cloud's directory, with entries applied from an edge -------------


def build_cloud(work: Path) -> int:
    import tidelog

    fast = dict(heartbeat_interval="100ms", idle_timeout="1500ms", backoff_initial="50ms",
                backoff_max="500ms", connect_timeout="5s")
    pki = tidelog.dev_certs(work / "pki", ["cloud", "edge-1"])

    def tls(node: str) -> Dict[str, Any]:
        f = pki["nodes"][node]
        return dict(cert=f["cert"], key=f["key"], ca=pki["ca"], **fast)

    cloud = tidelog.open(work / "cloud", "cloud")
    edge = tidelog.open(work / "edge", "edge-1")
    try:
        cloud.create_table(TABLE)
        cloud.start_replication(**tls("cloud"))
        addr = cloud.listen("127.0.0.1:0")
        cloud.add_peer("edge-1", tables=[{"table": TABLE, "subscribe": True}])
        edge.create_table(TABLE)
        edge.start_replication(**tls("edge-1"))
        edge.add_peer("cloud", address=addr, tables=[{"table": TABLE, "publish": True}])
        edge.upsert(TABLE, {"id": 7, "level": 2, "text": "hot \"sensor\" \u00b0C"})
        tx = edge.transaction()
        tx.upsert(TABLE, {"id": 8, "level": 1, "where": {"site": "s-1", "floor": -2}})
        tx.delete(TABLE, 7)
        last = tx.commit().seq
        edge.wait_for_ack("cloud", last, timeout=30)
        cloud.upsert(TABLE, {"id": "cloud-1", "by": "cloud"})
        return edge.node_id
    finally:
        edge.close()
        cloud.close()


def main() -> int:
    if shutil.which("node") is None or shutil.which("gcc") is None:
        print("same_views: needs node and gcc on PATH", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="tidelog-views-"))
    try:
        c_exe = build_c(work)
        edge_id = build_cloud(work)
        cloud_dir = work / "cloud"
        langs = ["c", "python", "node"]
        wrote = {lang: run(lang, "write", cloud_dir, c_exe) for lang in langs}
        final = {lang: run(lang, "read", cloud_dir, c_exe) for lang in langs}

        ids = {lang: node_id_of(final[lang], lang) for lang in langs}
        check(len(set(ids.values())) == 1, f"node ids differ: {ids}")
        cloud_id = ids["c"]
        check(cloud_id != edge_id, "the cloud and the edge have one node id")

        logs = {lang: log_of(final[lang], lang) for lang in langs}
        for lang in ("python", "node"):
            d = first_difference(logs["c"], logs[lang], "log")
            check(not d, f"C and {lang} read different logs: {d}")
        log = logs["c"]
        by_seq = {e["seq"]: e for e in log}
        check(sorted(by_seq) == list(range(1, len(log) + 1)), "log seqs are not dense from 1")

        # What the fields mean, on every entry (the same in every binding now).
        now_ms = time.time() * 1000
        for e in log:
            check(e["origin"] == e["stamp"]["node"], f"seq {e['seq']}: origin is not stamp.node")
            check(e["stamp_ms"] == e["stamp"]["time"] >> 16, f"seq {e['seq']}: stamp_ms is not stamp.time's ms")
            check(e["local"] == (e["origin"] == cloud_id), f"seq {e['seq']}: local disagrees with origin")
            check(e["origin"] in (cloud_id, edge_id), f"seq {e['seq']}: origin is neither node")
            check(abs(e["logged_ms"] - now_ms) < 600_000, f"seq {e['seq']}: logged_ms {e['logged_ms']} is not now")
            for w in e["writes"]:
                check((w["op"] == "put") == (w["record"] is not None), f"seq {e['seq']}: op and record disagree")
                if w["record"] is not None:
                    check(w["record"]["__updatedtime__"] == e["stamp_ms"], f"seq {e['seq']}: __updatedtime__")
        applied = [e for e in log if not e["local"]]
        check(len(applied) >= 2 and all(e["origin"] == edge_id for e in applied),
              "the edge's transactions are not in the cloud's log with the edge's origin")
        kinds = {(type(w["key"]).__name__, w["op"]) for e in log for w in e["writes"]}
        check({("int", "put"), ("int", "delete"), ("str", "put"), ("str", "delete")} <= kinds,
              f"the log does not hold every key type and op: {kinds}")

        # Each writer's commit info and change event, against the log.
        for lang in langs:
            out = wrote[lang]
            commit = canon(out["commit"], COMMIT, lang, "commit")
            entry = by_seq.get(commit["seq"])
            check(entry is not None, f"{lang}: commit seq {commit['seq']} is not in the log")
            check(commit == {f: entry[f] for f in COMMIT}, f"{lang}: commit {commit} is not its log entry")
            check(entry["local"] and entry["writes"][0]["record"]["lang"] == lang, f"{lang}: wrong entry")
            event = canon(out["event"], EVENT, lang, "event")
            want = {f: entry[f] for f in EVENT if f in entry}
            want["table"] = TABLE
            want["missed"] = 0
            want["changes"] = [{"key": w["key"], "record": w["record"]} for w in entry["writes"] if w["table"] == TABLE]
            d = first_difference(want, event, "event")
            check(not d, f"{lang}: the change event is not its log entry: {d}")
            # The log it read right after committing is the final log's prefix.
            early = log_of(out, lang)
            d = first_difference(log[: len(early)], early, "log")
            check(not d and early[-1]["seq"] == commit["seq"], f"{lang}: its log then was not a prefix: {d}")

        print(f"same_views: {len(log)} log entries ({len(applied)} applied from the edge), "
              f"3 change events and 3 commit infos agree field by field in C, Python and Node")
        return 0
    except Mismatch as e:
        print(f"same_views: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--reader":
        python_reader(sys.argv[2], sys.argv[3], sys.argv[4])
        sys.exit(0)
    sys.exit(main())
