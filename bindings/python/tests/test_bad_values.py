"""The shared list of bad values (tests/bad_values.txt), which the Node and C
tests read too: each is refused with InvalidInputError through every kind of
write, and leaves the table as it was."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

import tidelog

CASES_FILE = Path(__file__).resolve().parents[3] / "tests" / "bad_values.txt"

NATIVE = {"<nan>": math.nan, "<inf>": math.inf, "<-inf>": -math.inf}


def native(v: object) -> object:
    if isinstance(v, str):
        return NATIVE.get(v, v)
    if isinstance(v, list):
        return [native(x) for x in v]
    if isinstance(v, dict):
        return {k: native(x) for k, x in v.items()}
    return v


def cases() -> List[str]:
    lines = CASES_FILE.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def test_the_shared_list_is_there() -> None:
    assert len(cases()) >= 10


def transaction_upsert(db: tidelog.Database, table: str, record: Any) -> None:
    with db.transaction() as tx:
        tx.upsert(table, record)


WRITES: Dict[str, Callable[[tidelog.Database, str, Any], object]] = {
    "insert": lambda db, t, r: db.insert(t, r),
    "upsert": lambda db, t, r: db.upsert(t, r),
    "update": lambda db, t, r: db.update(t, r),
    "transaction": transaction_upsert,
}


@pytest.mark.parametrize("form", ["dict", "text"])
@pytest.mark.parametrize("write", sorted(WRITES))
@pytest.mark.parametrize("line", cases())
def test_bad_value_is_refused_and_changes_nothing(db: tidelog.Database, line: str, write: str, form: str) -> None:
    db.create_table("t")
    db.insert("t", {"id": 1, "v": 0})
    before = db.get("t", 1)
    last = db.log_bounds()["last"]
    record = native(json.loads(line))
    assert isinstance(record, dict)
    # As text: what json.dumps writes for the same dict (NaN, Infinity).
    arg = record if form == "dict" else json.dumps(record)
    with pytest.raises(tidelog.InvalidInputError):
        WRITES[write](db, "t", arg)
    assert db.count("t") == 1
    assert db.get("t", 1) == before
    assert db.log_bounds()["last"] == last
