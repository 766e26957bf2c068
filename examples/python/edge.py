#!/usr/bin/env python3
"""The edge application of the reference scenario (SPEC §1), in Python.

The same job as examples/node/edge.js: simulated sensors write every reading
into a local ``sensor_data`` table (never replicated, expiring on its own),
the alert thresholds come from the cloud's ``thresholds`` table (read with
local calls only), and a reading above its threshold raises an alert holding
the reading plus the preceding window of that sensor's readings, taken from
``sensor_data``. tidelog publishes ``alerts`` to the cloud over the one
connection the edge dials out; the app never touches the network itself. A
receipt thread reports, in alert order, when the cloud confirmed each alert.

    EDGE_LANG=python bash examples/edge_scenario.sh

Settings come from the environment, as for edge.js: EDGE_DATA, EDGE_PKI,
CLOUD_ADDR, EDGE_LOG, WINDOW_SECS, EXPIRE_SECS, TICK_MS. SIGTERM/SIGINT stop
the sensors, wait (up to 15 s) for the last receipts, close, exit.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional

import tidelog

HERE = Path(__file__).resolve().parent
NODE = os.environ.get("EDGE_NODE", "edge-1")
DATA = os.environ.get("EDGE_DATA", str(HERE.parent / ".edge-data"))
PKI = Path(os.environ.get("EDGE_PKI", str(HERE.parent / "pki")))
CLOUD = os.environ.get("CLOUD_ADDR", "127.0.0.1:7000")
LOG = os.environ.get("EDGE_LOG")
WINDOW_MS = int(float(os.environ.get("WINDOW_SECS", "60")) * 1000)
EXPIRE_SECS = int(os.environ.get("EXPIRE_SECS", "120"))
TICK_MS = int(os.environ.get("TICK_MS", "200"))
SENSORS = ["s-1", "s-2", "s-3"]

_say_lock = threading.Lock()


def say(msg: str) -> None:
    line = f"  edge   | {msg}"
    with _say_lock:
        print(line, flush=True)
        if LOG:
            with open(LOG, "a", encoding="utf-8") as f:
                f.write(line + "\n")


def pad(ms: int) -> str:
    return str(ms).rjust(15, "0")


class Sensors:
    """Deterministic simulated sensors: a noisy baseline near 50 with a spike
    to 90..99 every few seconds on one sensor or another."""

    def __init__(self) -> None:
        self.seed = 7
        self.spike_left = {s: 0 for s in SENSORS}

    def rnd(self) -> float:
        self.seed = (self.seed * 1103515245 + 12345) % 2147483648
        return self.seed / 2147483648

    def value(self, sensor: str) -> float:
        if self.spike_left[sensor] == 0 and self.rnd() < TICK_MS / 1000 / 8:
            self.spike_left[sensor] = 3
        if self.spike_left[sensor] > 0:
            self.spike_left[sensor] -= 1
            return round(90 + self.rnd() * 9, 1)
        return round(45 + self.rnd() * 10, 1)


def main() -> int:
    db = tidelog.open(DATA, NODE)
    # Readings keyed "<sensor>/<ms, 15 digits>": the window before an alert
    # is one primary-key range scan. No peer flow names this table.
    db.ensure_table("sensor_data", expiration=EXPIRE_SECS)
    db.ensure_table("alerts", indexes=["sensor"])
    db.ensure_table("receipts")  # when the cloud confirmed each alert; local only
    db.ensure_table("thresholds", primary_key="sensor")  # as the cloud defines it

    db.start_replication(
        cert=PKI / f"{NODE}.pem",
        key=PKI / f"{NODE}.key",
        ca=PKI / "ca.pem",
        heartbeat_interval="500ms",
        idle_timeout="3s",
        backoff_initial="100ms",
        backoff_max="1s",  # redial quickly once the cloud is back
    )
    # The edge dials out; nothing dials in (no listen()).
    db.add_peer(
        "cloud",
        address=CLOUD,
        tables=[{"table": "thresholds", "subscribe": True}, {"table": "alerts", "publish": True}],
    )
    say(f"opened {DATA} as {NODE} (node id {db.node_id:016x}); dialing the cloud at {CLOUD}")

    stop = threading.Event()
    got: Dict[str, str] = {}

    def on_signal(signum: int, _frame: Any) -> None:
        got["signal"] = signal.Signals(signum).name
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # Receipts, in alert order, on their own thread (wait_for_ack blocks;
    # it releases the GIL while it waits).
    receipts: "queue.Queue[Optional[tuple[str, int, float]]]" = queue.Queue()

    def receipt_worker() -> None:
        while True:
            item = receipts.get()
            if item is None:
                return
            alert_id, seq, t0 = item
            while True:
                try:
                    db.wait_for_ack("cloud", seq, timeout=5.0)
                    break
                except tidelog.TimeoutError:
                    if closing.is_set():
                        return
            waited = time.time() - t0
            db.upsert("receipts", {"id": alert_id, "acked_ms": int(time.time() * 1000), "waited_ms": int(waited * 1000)})
            say(f"cloud confirmed {alert_id}, {waited:.1f} s after it was raised")

    closing = threading.Event()
    worker = threading.Thread(target=receipt_worker, name="receipts")
    worker.start()

    sensors = Sensors()
    in_effect: Dict[str, Any] = {}
    above = {s: False for s in SENSORS}
    link_up: Optional[bool] = None
    readings = 0
    alert_no = db.count("alerts")
    next_report = time.time() + 5

    def raise_alert(reading: Dict[str, Any], max_: Any) -> None:
        nonlocal alert_no
        window = [
            {"ts": r["ts"], "value": r["value"]}
            for r in db.scan("sensor_data", start=f"{reading['sensor']}/{pad(reading['ts'] - WINDOW_MS)}", end=reading["id"])
        ]
        alert_no += 1
        alert_id = f"{NODE}-{alert_no:05d}"
        offline = link_up is not True
        commit = db.insert(
            "alerts",
            {
                "id": alert_id,
                "n": alert_no,
                "sensor": reading["sensor"],
                "reading": {"ts": reading["ts"], "value": reading["value"]},
                "threshold": max_,
                "window_secs": WINDOW_MS // 1000,
                "window": window,
                "raised_offline": offline,
            },
        )
        say(
            f"ALERT {alert_id}: {reading['sensor']}={reading['value']:g} > {max_:g}, with {len(window)} readings of the "
            f"preceding {WINDOW_MS // 1000} s (log seq {commit.seq})" + (" -- cloud unreachable, queued" if offline else "")
        )
        receipts.put((alert_id, commit.seq, time.time()))

    next_tick = time.time()
    while not stop.is_set():
        st = db.peer_status("cloud")
        if st["connected"] != link_up:
            if st["connected"]:
                say("link to the cloud is UP")
            elif link_up is None:
                say("not connected to the cloud yet")
            else:
                say(f"link to the cloud is DOWN ({st['last_error'] or 'closed'}); collecting and queueing locally")
            link_up = st["connected"]

        now = int(time.time() * 1000)
        for sensor in SENSORS:
            value = sensors.value(sensor)
            reading = {"id": f"{sensor}/{pad(now)}", "sensor": sensor, "ts": now, "value": value}
            db.upsert("sensor_data", reading)
            readings += 1
            th = db.get("thresholds", sensor)  # a local read, on every reading
            if th is None:
                continue  # no threshold from the cloud yet
            if in_effect.get(sensor) != th["max"]:
                in_effect[sensor] = th["max"]
                changed = datetime.fromtimestamp(th["__updatedtime__"] / 1000, timezone.utc).isoformat(timespec="milliseconds")
                say(f"threshold {sensor} max={th['max']:g} now in effect (from the cloud, changed {changed})")
            crossing = value > th["max"]
            if crossing and not above[sensor]:
                raise_alert(reading, th["max"])
            above[sensor] = crossing

        if time.time() >= next_report:
            next_report += 5
            first = db.scan("sensor_data", start="s-1/", limit=1)
            age = f" oldest s-1 reading {(time.time() * 1000 - first[0]['ts']) / 1000:.0f} s old;" if first else ""
            say(
                f"{readings} readings so far; sensor_data holds {db.count('sensor_data')} (local only, expiring after "
                f"{EXPIRE_SECS} s);{age} {db.count('alerts')} alerts, {receipts.qsize()} awaiting the cloud"
            )
        next_tick += TICK_MS / 1000
        stop.wait(max(0.0, next_tick - time.time()))

    say(f"{got.get('signal', 'SIGTERM')}: sensors stopped; waiting for the cloud to confirm {db.count('alerts') - db.count('receipts')} queued alert(s)")
    receipts.put(None)
    worker.join(15.0)
    gave_up = worker.is_alive()
    closing.set()
    worker.join()
    raised, confirmed = db.count("alerts"), db.count("receipts")
    say(f"{raised} alerts raised, {confirmed} confirmed by the cloud" + (" (gave up waiting)" if gave_up else ""))
    db.close()
    return 0 if raised == confirmed else 3


if __name__ == "__main__":
    sys.exit(main())
