"""Shared fixtures: a fresh database per test, certificates made at run time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

import tidelog


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tidelog.Database]:
    with tidelog.open(tmp_path / "db", "node-a") as d:
        yield d


@pytest.fixture
def table(db: tidelog.Database) -> str:
    db.create_table("t", indexes=["sensor", "value"])
    return "t"


def wait_until(what: str, f: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not f():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(0.01)
