"""Two instances in one process replicating over mutual TLS on 127.0.0.1:
thresholds flow down from the cloud, alerts up from the edge (SPEC §1),
with certificates made at run time; plus every peer call and its errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

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


@pytest.fixture
def pki(tmp_path: Path) -> tidelog.DevPki:
    return tidelog.dev_certs(tmp_path / "pki", ["cloud", "edge-1"])


def tls(pki: tidelog.DevPki, node: str) -> Dict[str, Any]:
    f = pki["nodes"][node]
    return dict(cert=f["cert"], key=f["key"], ca=pki["ca"], **FAST)


@pytest.fixture
def pair(tmp_path: Path, pki: tidelog.DevPki) -> Iterator[Tuple[tidelog.Database, tidelog.Database, str]]:
    cloud = tidelog.open(tmp_path / "cloud", "cloud")
    cloud.create_table("thresholds", primary_key="sensor")
    cloud.upsert("thresholds", {"sensor": "s1", "max": 50})
    cloud.start_replication(**tls(pki, "cloud"))
    addr = cloud.listen("127.0.0.1:0")
    cloud.add_peer(
        "edge-1",
        tables=[{"table": "thresholds", "publish": True}, {"table": "alerts", "subscribe": True}],
    )

    edge = tidelog.open(tmp_path / "edge", "edge-1")
    edge.create_table("sensor_data", indexes=["sensor"], expiration=3600)
    edge.create_table("alerts")
    edge.start_replication(**tls(pki, "edge-1"))
    edge.add_peer(
        "cloud",
        address=addr,
        tables=[{"table": "thresholds", "subscribe": True}, {"table": "alerts", "publish": True}],
    )
    try:
        yield cloud, edge, addr
    finally:
        edge.close()
        cloud.close()


def test_dev_certs(tmp_path: Path) -> None:
    out = tidelog.dev_certs(str(tmp_path / "p"), ["a", "b"], ca_name="my CA")
    assert Path(out["ca"]).exists()
    assert set(out["nodes"]) == {"a", "b"}
    for f in out["nodes"].values():
        assert "BEGIN CERTIFICATE" in Path(f["cert"]).read_text()
        assert Path(f["key"]).exists()
    with pytest.raises(tidelog.InvalidInputError, match="already exists"):
        tidelog.dev_certs(tmp_path / "p", ["a"])
    with pytest.raises(tidelog.InvalidInputError):
        tidelog.dev_certs(tmp_path / "q", ["bad name!"])


def test_edge_cloud_thresholds_down_alerts_up(
    pair: Tuple[tidelog.Database, tidelog.Database, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud, edge, _ = pair
    remote_events: List[Any] = []
    edge.on_change("thresholds", lambda ev: remote_events.append(ev))
    # A listener that always raises: reported and counted, and replication
    # carries on regardless.
    reported: List[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u))

    def broken(ev: Any) -> None:
        raise RuntimeError("listener bug")

    edge.on_change("thresholds", broken)
    cloud.on_change("alerts", broken)

    # Initial sync: the table appears on the edge with the publisher's key.
    wait_until("threshold on edge", lambda: _get(edge, "thresholds", "s1") is not None)
    assert edge.describe_table("thresholds")["primary_key"] == "sensor"

    # A cloud change arrives moments later, seen by the edge's listener as
    # remote, with the cloud as origin.
    cloud.upsert("thresholds", {"sensor": "s1", "max": 40})
    wait_until("new threshold", lambda: (_get(edge, "thresholds", "s1") or {}).get("max") == 40)
    wait_until("listener saw it", lambda: any(e["changes"][0]["record"]["max"] == 40 for e in remote_events))
    ev = [e for e in remote_events if e["changes"][0]["record"]["max"] == 40][0]
    assert ev["local"] is False and ev["origin"] == cloud.node_id

    # The edge app: readings stay local; a crossing raises an alert that
    # carries the preceding window and is published to the cloud.
    for i, v in enumerate([20, 30, 45]):
        edge.upsert("sensor_data", {"id": i, "sensor": "s1", "value": v})
    limit = edge.get("thresholds", "s1")
    assert limit is not None
    window = [r["value"] for r in edge.find_eq("sensor_data", "sensor", "s1")]
    with edge.transaction() as tx:
        tx.upsert("sensor_data", {"id": 3, "sensor": "s1", "value": 41})
        tx.insert("alerts", {"id": "a-1", "sensor": "s1", "reading": 41, "window": window, "max": limit["max"]})
    seq = edge.log_bounds()["last"]
    edge.wait_for_ack("cloud", seq, timeout=20)
    alert = cloud.get("alerts", "a-1")
    assert alert is not None and alert["window"] == [20, 30, 45]
    assert alert["__createdtime__"] == (edge.get("alerts", "a-1") or {})["__createdtime__"]
    with pytest.raises(tidelog.TableNotFoundError):
        cloud.count("sensor_data")  # never replicated

    # The applied remote transaction is in the cloud's log with its origin.
    entry = [e for e in cloud.read_log() if any(w["table"] == "alerts" for w in e["writes"])][-1]
    assert entry["origin"] == edge.node_id

    # Listeners run on their own thread after the commit: the cloud's may
    # not have run yet when the edge's wait_for_ack returns.
    wait_until("the raising listeners ran", lambda: edge.listener_errors >= 2 and cloud.listener_errors >= 1)
    assert edge.listener_errors >= 2 and cloud.listener_errors >= 1
    assert all(isinstance(u.exc_value, RuntimeError) for u in reported)

    st = edge.peer_status("cloud")
    assert st["connected"] is True and st["name"] == "cloud"
    assert st["acked_seq"] >= seq and st["backlog_txns"] == 0
    assert {t["table"]: (t["publish"], t["subscribe"]) for t in st["tables"]} == {
        "thresholds": (False, True),
        "alerts": (True, False),
    }
    all_status = cloud.replication_status()
    assert [s["name"] for s in all_status] == ["edge-1"]
    wait_until("cloud sees the edge", lambda: cloud.peer_status("edge-1")["connected"])
    assert cloud.peer_status("edge-1")["received_seq"] >= 1


def test_status_has_exactly_the_declared_fields(pair: Tuple[tidelog.Database, tidelog.Database, str]) -> None:
    # The stubs' TypedDicts (which a Rust test holds to the core's status)
    # are exactly what the live dicts carry.
    cloud, edge, _ = pair
    wait_until("connected", lambda: edge.peer_status("cloud")["connected"])
    for st in [edge.peer_status("cloud"), *cloud.replication_status()]:
        assert set(st) == set(tidelog.PeerStatus.__annotations__)
        assert st["tables"]
        for t in st["tables"]:
            assert set(t) == set(tidelog.TableStatus.__annotations__)
        assert isinstance(st["duplicates_received"], int) and isinstance(st["resyncs_sent"], int)
        assert st["last_resync_reason"] is None


def test_wait_for_delivery(pair: Tuple[tidelog.Database, tidelog.Database, str]) -> None:
    cloud, edge, _ = pair
    seq = edge.insert("alerts", {"id": "d-1"}).seq
    edge.wait_for_delivery(seq, timeout=20)
    assert _get(cloud, "alerts", "d-1") is not None, "applied on the cloud when the receipt passes"
    edge.insert("alerts", {"id": "d-2"})
    edge.wait_for_delivery(timeout=20)  # everything so far
    assert _get(cloud, "alerts", "d-2") is not None
    edge.wait_for_delivery(seq, timeout=0.1)  # already delivered
    with pytest.raises(tidelog.InvalidInputError):
        edge.wait_for_delivery(-1)
    with pytest.raises(tidelog.InvalidInputError):
        edge.wait_for_delivery(seq, timeout=-1)
    # Every peer the edge publishes to: one that never connects holds it back.
    edge.add_peer("ghost", address="127.0.0.1:9", tables=[{"table": "alerts", "publish": True}])
    seq = edge.upsert("alerts", {"id": "d-3"}).seq
    with pytest.raises(tidelog.TimeoutError, match=r"ghost"):
        edge.wait_for_delivery(seq, timeout=0.5)
    edge.remove_peer("ghost")
    edge.wait_for_delivery(seq, timeout=20)


def test_peer_management_and_errors(pair: Tuple[tidelog.Database, tidelog.Database, str]) -> None:
    cloud, edge, addr = pair
    with pytest.raises(tidelog.PeerExistsError):
        edge.add_peer("cloud", address=addr)
    with pytest.raises(tidelog.PeerNotFoundError):
        edge.peer_status("nobody")
    with pytest.raises(tidelog.PeerNotFoundError):
        edge.update_peer("nobody")
    with pytest.raises(tidelog.PeerNotFoundError):
        edge.remove_peer("nobody")
    with pytest.raises(tidelog.PeerNotFoundError):
        edge.wait_for_ack("nobody", 1, timeout=0.1)
    for bad in [
        dict(name="edge-1"),  # itself
        dict(name="x", address="no-port"),
        dict(name="x", tables=[{"table": "t", "bogus": True}]),
        dict(name="x", tables=[{"table": "t"}, {"table": "t"}]),
        dict(name="x", tables="alerts"),
        dict(name="bad name!"),
    ]:
        with pytest.raises(tidelog.InvalidInputError):
            edge.add_peer(**bad)  # type: ignore[arg-type]
    # Update: stop publishing alerts; new alerts stay on the edge.
    edge.update_peer("cloud", address=addr, tables=[{"table": "thresholds", "subscribe": True}])
    assert [t["table"] for t in edge.peer_status("cloud")["tables"]] == ["thresholds"]
    edge.remove_peer("cloud")
    assert edge.replication_status() == []
    # A peer can be added while unreachable; waiting for it times out.
    edge.add_peer("ghost", address="127.0.0.1:9", tables=[{"table": "alerts", "publish": True}])
    seq = edge.upsert("alerts", {"id": "late"}).seq
    with pytest.raises(tidelog.TimeoutError, match=r"the link is down.*127\.0\.0\.1:9"):
        edge.wait_for_ack("ghost", seq, timeout=0.3)
    assert edge.peer_status("ghost")["connected"] is False


def test_a_receipt_for_a_table_the_peer_does_not_take_raises(
    pair: Tuple[tidelog.Database, tidelog.Database, str],
) -> None:
    cloud, edge, addr = pair
    # The edge starts publishing its readings; the cloud never subscribed.
    edge.update_peer(
        "cloud",
        address=addr,
        tables=[
            {"table": "thresholds", "subscribe": True},
            {"table": "alerts", "publish": True},
            {"table": "sensor_data", "publish": True},
        ],
    )
    seq = edge.upsert("sensor_data", {"id": 1, "sensor": "s1", "value": 1}).seq
    with pytest.raises(tidelog.PeerError, match="`cloud` does not subscribe to"):
        edge.wait_for_ack("cloud", seq, timeout=20)
    with pytest.raises(tidelog.PeerError, match="`cloud` does not subscribe to"):
        edge.wait_for_delivery(seq, timeout=20)
    outbound = {t["table"]: t["outbound"] for t in edge.peer_status("cloud")["tables"]}
    assert outbound["sensor_data"] == "not subscribed by the peer"
    # What the cloud takes still gets its receipt.
    seq = edge.upsert("alerts", {"id": "a1"}).seq
    edge.wait_for_ack("cloud", seq, timeout=20)
    edge.wait_for_delivery(seq, timeout=20)
    assert _get(cloud, "alerts", "a1") is not None


def test_replication_setup_errors(tmp_path: Path, pki: tidelog.DevPki) -> None:
    with tidelog.open(tmp_path / "a", "node-a") as db:
        with pytest.raises(tidelog.UnsupportedError, match="start_replication"):
            db.listen("127.0.0.1:0")
        with pytest.raises(tidelog.UnsupportedError):
            db.add_peer("b")
        with pytest.raises(tidelog.UnsupportedError):
            db.replication_status()
        with pytest.raises(tidelog.InvalidInputError):
            db.start_replication()  # neither TLS nor insecure
        with pytest.raises(tidelog.InvalidInputError):
            db.start_replication(insecure=True, ca=pki["ca"])
        with pytest.raises(tidelog.InvalidInputError):
            db.start_replication(insecure=True, heartbeat_interval=-1)
        with pytest.raises(tidelog.InvalidInputError):
            db.start_replication(insecure=True, heartbeat_interval="2s", idle_timeout="1s")
        with pytest.raises(tidelog.InvalidInputError):
            db.start_replication(insecure=True, worker_threads=0)
        with pytest.raises(tidelog.TlsError):
            db.start_replication(cert=tmp_path / "missing.pem", key=tmp_path / "k", ca=pki["ca"])
        with pytest.raises(tidelog.TlsError):
            # A CA file that is not a certificate.
            f = pki["nodes"]["cloud"]
            db.start_replication(cert=f["cert"], key=f["key"], ca=f["key"])
        db.start_replication(insecure=True, window_txns=10, batch_max_txns=5, sync_chunk_rows=10,
                             max_frame_bytes=1 << 20, worker_threads=1)
        with pytest.raises(tidelog.UnsupportedError, match="already"):
            db.start_replication(insecure=True)
        with pytest.raises(tidelog.PeerError):
            db.listen("256.1.1.1:99999")
        addr = db.listen("127.0.0.1:0")
        host, port = addr.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0


def test_insecure_pair_replicates(tmp_path: Path) -> None:
    with tidelog.open(tmp_path / "a", "a") as a, tidelog.open(tmp_path / "b", "b") as b:
        # Both sides have the table: a publisher that lacks it when the link
        # comes up refuses it for that session (core behaviour, see report).
        a.create_table("t")
        b.create_table("t")
        a.start_replication(insecure=True, **FAST)
        addr = a.listen("127.0.0.1:0")
        a.add_peer("b", tables=[{"table": "t", "publish": True, "subscribe": True}])
        b.start_replication(insecure=True, **FAST)
        b.add_peer("a", address=addr, tables=[{"table": "t", "publish": True, "subscribe": True}])
        a.upsert("t", {"id": 1, "from": "a"})
        wait_until("a->b", lambda: _get(b, "t", 1) is not None)
        b.upsert("t", {"id": 2, "from": "b"})
        wait_until("b->a", lambda: _get(a, "t", 2) is not None)


def _get(db: tidelog.Database, table: str, key: Any) -> Any:
    try:
        return db.get(table, key)
    except tidelog.TableNotFoundError:
        return None


def test_metered_link_settings_reach_the_link_and_its_status(
    pair: Tuple[tidelog.Database, tidelog.Database, str],
) -> None:
    cloud, edge, addr = pair
    budget: tidelog.LinkBudget = {
        "max_bytes_per_sec": 65536,
        "quota_bytes": 10_000_000,
        "quota_period": "month",
        "windows": ["22:00-06:00"],
    }
    edge.update_peer(
        "cloud",
        address=addr,
        tables=[
            {"table": "thresholds", "subscribe": True},
            {"table": "alerts", "publish": True, "priority": 9, "exempt_from_quota": True},
            {"table": "sensor_data", "publish": True, "bulk": True, "coalesce_ms": 50},
        ],
        budget=budget,
        compression="zstd",
        deltas=True,
    )
    wait_until("the link back up", lambda: edge.peer_status("cloud")["connected"])
    seq = edge.upsert("alerts", {"id": "metered", "msg": "x" * 600}).seq
    edge.wait_for_ack("cloud", seq, timeout=20)
    t = edge.peer_status("cloud")["traffic"]
    assert t["max_bytes_per_sec"] == 65536
    assert t["compression"] == "zstd"
    assert t["quota_left_bytes"] is not None and t["quota_left_bytes"] < 10_000_000
    assert t["quota_period_end_ms"] is not None
    assert t["bytes_out_wire"] > 0 and t["bytes_out_raw"] >= t["bytes_out_wire"]
    for bad in [
        dict(budget={"max_bytes_per_sec": 10}),
        dict(budget={"windows": ["25:00-26:00"]}),
        dict(budget={"quota_period": "week"}),
        dict(compression="gzip"),
    ]:
        with pytest.raises(tidelog.InvalidInputError):
            edge.update_peer("cloud", address=addr, **bad)  # type: ignore[arg-type]
