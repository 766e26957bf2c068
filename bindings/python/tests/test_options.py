"""The options schema from Python: the units every binding shares, the
older float-seconds spelling (deprecated), and unknown or out-of-range
options refused with a message naming the option and what it accepts."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import tidelog


def test_options_take_strings_with_units_and_ints_of_bytes(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling warns about nothing
        with tidelog.open(
            tmp_path / "db",
            "n1",
            flush_interval="20ms",
            memory_budget="8MiB",
            max_record_bytes=4096,
            max_clock_skew="30s",
            expiry_interval="500ms",
            retention={"log_max_bytes": "32MiB", "log_max_age": "1d", "tombstone_min_age": 60_000},
        ) as db:
            db.create_table("t")
            with pytest.raises(tidelog.InvalidInputError, match="4096"):
                db.insert("t", {"id": 1, "blob": "x" * 5000})
            db.start_replication(insecure=True, heartbeat_interval="100ms", idle_timeout="2s",
                                 max_frame_bytes="1MiB")


def test_unknown_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(tidelog.InvalidInputError, match=r"memory_budgit.*memory_budget"):
        tidelog.open(tmp_path / "db", "n1", memory_budgit=8 << 20)  # type: ignore[call-arg]
    with pytest.raises(tidelog.InvalidInputError, match=r"retention.*log_max.*log_max_bytes"):
        tidelog.open(tmp_path / "db", "n1", retention={"log_max": 1})  # type: ignore[typeddict-unknown-key]
    with tidelog.open(tmp_path / "db", "n1") as db:
        with pytest.raises(tidelog.InvalidInputError, match=r"heartbeat.*heartbeat_interval"):
            db.start_replication(insecure=True, heartbeat=5)  # type: ignore[call-arg]
        db.start_replication(insecure=True)
        with pytest.raises(tidelog.InvalidInputError, match=r"tables\[0\].*pubish"):
            db.add_peer("p1", tables=[{"table": "t", "pubish": True}])  # type: ignore[typeddict-unknown-key]
        with pytest.raises(tidelog.InvalidInputError, match=r"adress"):
            db.add_peer("p1", adress="h:1")  # type: ignore[call-arg]


def test_out_of_range_options_say_what_they_accept(tmp_path: Path) -> None:
    with pytest.raises(tidelog.InvalidInputError, match=r"memory_budget.*between 4MiB and 1TiB.*got 1MiB"):
        tidelog.open(tmp_path / "db", "n1", memory_budget="1MiB")
    with pytest.raises(tidelog.InvalidInputError, match=r"retention.log_max_age.*between 1s and"):
        tidelog.open(tmp_path / "db", "n1", retention={"log_max_age": "0ms"})
    with pytest.raises(tidelog.InvalidInputError, match=r"max_clock_skew.*duration"):
        tidelog.open(tmp_path / "db", "n1", max_clock_skew="soon")
    with tidelog.open(tmp_path / "db", "n1") as db:
        with pytest.raises(tidelog.InvalidInputError, match=r"replication.worker_threads.*between 1 and 256"):
            db.start_replication(insecure=True, worker_threads=0)
        with pytest.raises(tidelog.InvalidInputError, match=r"max_frame_bytes.*between 64KiB"):
            db.start_replication(insecure=True, max_frame_bytes="1KiB")


def test_float_seconds_still_work_for_one_release_with_a_warning(tmp_path: Path) -> None:
    with pytest.warns(DeprecationWarning, match=r'max_clock_skew=0.5: .*max_clock_skew="0.5s"'):
        db = tidelog.open(tmp_path / "db", "n1", max_clock_skew=0.5)
    with db:
        with pytest.warns(DeprecationWarning, match="heartbeat_interval"):
            db.start_replication(insecure=True, heartbeat_interval=0.1, idle_timeout="1s")
    with pytest.raises(tidelog.InvalidInputError, match="flush_interval"):
        tidelog.open(tmp_path / "db2", "n1", flush_interval=float("nan"))


def test_a_peer_option_added_in_core_reaches_python_without_code(tmp_path: Path) -> None:
    # `relays` is a field of core's PeerConfig; the keywords go to the
    # schema as they are, so it needs no Python code.
    with tidelog.open(tmp_path / "db", "n1") as db:
        db.start_replication(insecure=True)
        with pytest.raises(tidelog.InvalidInputError, match="relays"):
            db.add_peer("p1", relays="yes")  # type: ignore[arg-type]
        db.add_peer("p1", relays=True, tables=[{"table": "t", "subscribe": True}])
        db.update_peer("p1", relays=False)
