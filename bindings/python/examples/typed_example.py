"""The edge gateway of the reference scenario, typed: `mypy --strict` checks
it against tidelog's stubs (tests/run_all.sh runs it; it also runs as a
script, replicating with a cloud instance in the same process)."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional

import tidelog


def raise_alert_if_needed(db: tidelog.Database, reading: tidelog.Record, window_s: float = 60.0) -> Optional[int]:
    """Stores a reading; if it crosses its threshold, inserts an alert with
    the readings of the preceding window. Returns the alert's log seq."""
    threshold = db.get("thresholds", reading["sensor"])
    with db.transaction() as tx:
        tx.upsert("sensor_data", reading)
        if threshold is None or reading["value"] <= threshold["max"]:
            return None
        since = int((time.time() - window_s) * 1000)
        window: List[float] = [
            r["value"]
            for r in db.find_eq("sensor_data", "sensor", reading["sensor"])
            if r["__updatedtime__"] >= since
        ]
        tx.insert("alerts", {"id": f"alert-{reading['id']}", "reading": reading, "window": window})
    return db.log_bounds()["last"]


def main() -> None:
    root = Path(tempfile.mkdtemp())
    pki = tidelog.dev_certs(root / "pki", ["cloud", "edge-1"])

    def tls(node: str) -> tidelog.NodeCertFiles:
        return pki["nodes"][node]

    with tidelog.open(root / "cloud", "cloud") as cloud, tidelog.open(root / "edge", "edge-1") as edge:
        cloud.create_table("thresholds", primary_key="sensor")
        cloud.upsert("thresholds", {"sensor": "s-1", "max": 50.0})
        cloud.start_replication(cert=tls("cloud")["cert"], key=tls("cloud")["key"], ca=pki["ca"])
        addr: str = cloud.listen("127.0.0.1:0")
        cloud.add_peer("edge-1", tables=[{"table": "thresholds", "publish": True},
                                         {"table": "alerts", "subscribe": True}])

        edge.create_table("sensor_data", indexes=["sensor"], expiration=3600)
        edge.create_table("alerts")
        arrived = threading.Event()

        def on_threshold(ev: tidelog.ChangeEvent) -> None:
            if not ev["local"]:
                arrived.set()

        edge.on_change("thresholds", on_threshold)
        edge.start_replication(cert=tls("edge-1")["cert"], key=tls("edge-1")["key"], ca=pki["ca"],
                               heartbeat_interval="200ms", idle_timeout="2s")
        edge.add_peer("cloud", address=addr, tables=[{"table": "thresholds", "subscribe": True},
                                                     {"table": "alerts", "publish": True}])
        arrived.wait(20)

        seq: Optional[int] = None
        for i, value in enumerate([20.0, 35.0, 48.0, 61.5]):
            seq = raise_alert_if_needed(edge, {"id": i, "sensor": "s-1", "value": value}) or seq
        if seq is not None:
            try:
                edge.wait_for_ack("cloud", seq, timeout=20)
                edge.wait_for_delivery(seq, timeout=20)  # every peer it publishes to
            except tidelog.TimeoutError as e:
                print("not delivered yet:", e)
        status: tidelog.PeerStatus = edge.peer_status("cloud")
        print("connected:", status["connected"], "acked:", status["acked_seq"],
              "last resync:", status["last_resync_reason"])
        alert = cloud.get("alerts", "alert-3")
        print("alert at the cloud:", alert["window"] if alert else None)
        info: tidelog.CommitInfo = edge.upsert("sensor_data", {"id": 99, "sensor": "s-2", "value": 1.0})
        print("seq", info.seq, "at", info.stamp_ms)
        try:
            edge.insert("sensor_data", {"id": 99})
        except tidelog.DuplicateKeyError as e:
            print("typed error:", e.kind, e)

        # Concurrent writes: a counter, a resolver, the conflict log.
        policy: tidelog.ConflictPolicy = edge.create_table("visits", conflict="merge")["conflict"]
        edge.increment("visits", "home", "n", 2)
        with edge.transaction() as tx:
            tx.increment("visits", "home", "n")
        edge.create_table("settled", conflict="resolver")

        def settle(case: tidelog.ConflictCase) -> tidelog.Resolution:
            newer = case["remote"] if case["remote_stamp"]["time"] > case["local_stamp"]["time"] else case["local"]
            return "delete" if newer is None else {**newer, "settled": True}

        edge.set_conflict_resolver("settled", settle)
        entries: List[tidelog.ConflictEntry] = edge.conflicts()
        print(policy, len(entries), "conflicts,", edge.conflicts_dropped(), "dropped",
              [(e["table"], e["lost"], e["winner_origin"]) for e in entries])
        edge.clear_conflict_resolver("settled")


if __name__ == "__main__":
    main()
