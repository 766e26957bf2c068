"""tidelog's log records reach the standard logging module: a hub refusing
a node it does not list as a peer (mutual TLS on 127.0.0.1) is a warning
on the ``tidelog.repl`` logger."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Dict, List

import tidelog
from conftest import wait_until


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: List[logging.LogRecord] = []
        self.mu = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.mu:
            self.records.append(record)

    def refused(self) -> List[logging.LogRecord]:
        with self.mu:
            return [r for r in self.records if "refused replication link" in r.getMessage()]


def test_refused_link_is_logged_on_tidelog_repl(tmp_path: Path) -> None:
    pki = tidelog.dev_certs(tmp_path / "pki", ["hub", "stranger"])

    def tls(node: str) -> Dict[str, Any]:
        f = pki["nodes"][node]
        return dict(cert=f["cert"], key=f["key"], ca=pki["ca"], backoff_initial="50ms", backoff_max="500ms")

    capture = Capture()
    root = logging.getLogger("tidelog")
    root.addHandler(capture)
    old_level = root.level
    root.setLevel(logging.INFO)
    hub = tidelog.open(tmp_path / "hub", "hub")
    stranger = tidelog.open(tmp_path / "stranger", "stranger")
    try:
        hub.start_replication(**tls("hub"))
        addr = hub.listen("127.0.0.1:0")
        stranger.create_table("t")
        stranger.start_replication(**tls("stranger"))
        stranger.add_peer("hub", address=addr, tables=[{"table": "t", "publish": True}])
        wait_until("a refused-link record on the tidelog logger", capture.refused, timeout=60.0)
    finally:
        stranger.close()
        hub.close()
        root.removeHandler(capture)
        root.setLevel(old_level)
    record = capture.refused()[0]
    assert record.name == "tidelog.repl"
    assert record.levelno == logging.WARNING
    assert "`stranger` is not a configured peer of `hub`" in record.getMessage()
