"""The shapes of the dicts tidelog hands out (``TypedDict`` classes) and
the type aliases of its API. The stubs declare the same names; defining them
here too makes ``tidelog.ChangeEvent`` and friends usable at run time (in
annotations that are evaluated, ``typing.get_type_hints``, pydantic...)."""

import os
from typing import Any, Dict, List, Literal, Mapping, Optional, TypedDict, Union

Key = Union[int, str]
"""A primary-key value: a str or a 64-bit int."""

Record = Dict[str, Any]
"""A record as read: its attributes plus ``__createdtime__`` and
``__updatedtime__`` (ms since the epoch)."""

RecordIn = Union[Mapping[str, Any], str, bytes]
"""A record to write: a dict, or JSON object text (str or UTF-8 bytes).
An insert or upsert stores text as written, attribute order included; a
dict is stored with its attributes sorted."""

StrPath = Union[str, "os.PathLike[str]"]

DurationOption = Union[str, float]
"""A duration option: a string with a unit (``"250ms"``, ``"10s"``,
``"5m"``, ``"1h"``, ``"7d"``), as in every binding. A number is the older
Python spelling, seconds: it still works in this release, with a
``DeprecationWarning``."""

SizeOption = Union[int, str]
"""A size option: an int of bytes or a string with a binary unit
(``"512KiB"``, ``"64MiB"``, ``"1GiB"``)."""

class RetentionOptions(TypedDict, total=False):
    """How long the transaction log and tombstones stay (``open(...,
    retention=...)``). Durations here are strings with a unit or ints of
    milliseconds, as in the other bindings."""

    log_max_bytes: SizeOption
    log_max_age: Union[str, int]
    log_min_age: Union[str, int]
    tombstone_min_age: Union[str, int]
    tombstone_max_age: Union[str, int]

# A Union of single Literals rather than one Literal: the same type to
# mypy, and a Union at run time too, which is what stubtest compares.
ConflictPolicy = Union[Literal["lww"], Literal["merge"], Literal["keep_local"], Literal["resolver"]]
"""A table's rule for concurrent writes from different nodes: last writer
wins (the default), per-attribute merge, keep the local version, or ask the
table's resolver (``Database.set_conflict_resolver``)."""

OnFull = Union[Literal["refuse"], Literal["drop_oldest"]]
"""What a write that would take a table past its ``disk_budget_bytes``
does: fail with :class:`TableFullError` (the default), or remove the
records written longest ago in the same commit, counted in
``TableStats.dropped``."""

class TableInfo(TypedDict):
    """A table definition."""

    name: str
    primary_key: str
    indexes: List[str]
    expiration: Optional[int]
    conflict: ConflictPolicy
    disk_budget_bytes: Optional[int]
    on_full: OnFull

class TableStats(TypedDict):
    """A table's statistics, kept with every commit (``Database.table_stats``).
    ``bytes`` is the logical size the budget limits: each live record's
    stored key plus its JSON text."""

    records: int
    bytes: int
    dropped: int
    disk_budget_bytes: Optional[int]

class LogBounds(TypedDict):
    """Where the transaction log starts and ends."""

    first: int
    last: int

class Stamp(TypedDict):
    """A version stamp, the same on every replica: ``time`` is the hybrid
    logical clock (milliseconds since the epoch << 16 | a counter), ``node``
    the node id of the instance that made the write."""

    time: int
    node: int

class LogWrite(TypedDict):
    """One write of a logged transaction."""

    table: str
    key: Key
    op: Literal["put", "delete"]
    record: Optional[Record]
    """The record after the write (with its two times); None for a delete."""

class LogEntry(TypedDict):
    """One committed transaction, local or applied from a peer. The same
    fields as the C ABI's and Node's log entries (the core's
    ``LogEntryView``)."""

    seq: int
    """This instance's log sequence number of the transaction."""
    origin: int
    """Node id of the instance where it was first committed (= ``stamp["node"]``)."""
    stamp: Stamp
    stamp_ms: int
    """Wall-clock ms of ``stamp["time"]`` (the records' ``__updatedtime__``)."""
    local: bool
    """True when this instance wrote it, False when applied from a peer."""
    logged_ms: int
    """When this instance wrote it to its log (what ``read_log_since`` compares)."""
    writes: List[LogWrite]

class Change(TypedDict):
    """One changed record: its key and the record after the change (None if
    deleted)."""

    key: Key
    record: Optional[Record]

class ChangeEvent(TypedDict):
    """What one transaction changed in one table, as a listener receives
    it (the core's ``ChangeEventView``). ``origin`` is the node id where it
    was first committed; ``local`` is False for changes applied from a
    peer."""

    table: str
    seq: int
    origin: int
    stamp: Stamp
    stamp_ms: int
    local: bool
    changes: List[Change]
    missed: int

class _TableFlowBase(TypedDict):
    table: str

class TableFlow(_TableFlowBase, total=False):
    """Which way one table flows with one peer."""

    publish: bool
    subscribe: bool
    since_ms: Optional[int]
    priority: int
    bulk: bool
    exempt_from_quota: bool
    coalesce_ms: Optional[int]
    filter: Optional[str]
    columns: Optional[List[str]]

class LinkBudget(TypedDict, total=False):
    """What a link may send: a rate cap, a quota per period ("day" or
    "month", UTC) and the UTC windows ("HH:MM-HH:MM") when bulk tables
    flow."""

    max_bytes_per_sec: Optional[int]
    quota_bytes: Optional[int]
    quota_period: Optional[str]
    windows: List[str]

class TableStatus(TypedDict):
    """Replication state of one table with one peer."""

    table: str
    publish: bool
    subscribe: bool
    inbound: str
    outbound: str
    coalesced: int
    # Why this table's flow stalled (the peer's "stalled"), or None.
    stalled: Optional[str]

class TrafficStatus(TypedDict):
    """Bytes on one link, and what holds back what this node sends."""

    bytes_out_raw: int
    bytes_out_wire: int
    bytes_in_raw: int
    bytes_in_wire: int
    # "zstd" or "none"; None while not connected.
    compression: Optional[str]
    max_bytes_per_sec: Optional[int]
    quota_left_bytes: Optional[int]
    quota_period_end_ms: Optional[int]
    # "rate", "quota" or "window"; None when nothing waits.
    held: Optional[str]
    deltas_sent: int
    delta_misses: int
    coalesced: int

class RefusalStatus(TypedDict):
    """Refused writes of one table in one direction, with the latest one."""

    table: str
    # "inbound" (this node refused the peer's writes) or "outbound".
    direction: str
    count: int
    # "clock_skew", "not_subscribed", "invalid_record" or "missing_table".
    kind: str
    reason: str
    at_ms: int
    stamp: Stamp
    seq: int

class PeerStatus(TypedDict):
    """Everything about one peer's link."""

    name: str
    address: Optional[str]
    #: The peer rule that admitted the peer (None: configured by name).
    rule: Optional[str]
    #: When a link to it last went up or down, ms since the epoch.
    last_contact_ms: Optional[int]
    connected: bool
    since_ms: Optional[int]
    last_error: Optional[str]
    node_id: Optional[int]
    tables: List[TableStatus]
    sent_seq: int
    acked_seq: int
    received_seq: int
    backlog_txns: int
    backlog_bytes: int
    lag_ms: int
    resync_needed: bool
    refused_writes: int
    origin_violations: int
    duplicates_received: int
    syncs_received: int
    resyncs_sent: int
    last_resync_reason: Optional[str]
    connects: int
    tls_failures: int
    # Why the link stalled, until a later link moves: "no_ack_progress: ...",
    # "write_blocked: ..." (half-open) or "apply_stuck: ..."; None if not.
    stalled: Optional[str]
    # Stalls found since this instance opened; each tore its link down.
    stalls: int
    traffic: TrafficStatus
    refusals: List[RefusalStatus]

class NodeCertFiles(TypedDict):
    """A node's certificate chain and private key (PEM file paths)."""

    cert: str
    key: str

class DevPki(TypedDict):
    """What :func:`dev_certs` wrote."""

    ca: str
    nodes: Dict[str, NodeCertFiles]


class ConflictEntry(TypedDict):
    """One entry of the conflict log: a write that lost to a concurrent one
    (also a record of the system table ``_conflicts``, keyed by ``id``)."""

    id: str
    """``"<node name>:<n>"``, unique across nodes."""
    table: str
    key: Key
    rule: ConflictPolicy
    """The rule that decided."""
    lost: Literal["local", "remote"]
    """Which write lost: a local one a remote write overwrote, or a remote one."""
    winner: Stamp
    winner_origin: str
    loser: Stamp
    loser_origin: str
    loser_values: Optional[Dict[str, Any]]
    """The losing record (under "merge" only the losing attributes); None for a delete."""
    at_ms: int
    """When it was logged, ms since the epoch."""

class ConflictCase(TypedDict):
    """What a conflict resolver is asked: two concurrent versions of one
    record (``None``: that side deleted it)."""

    table: str
    key: Key
    local: Optional[Dict[str, Any]]
    local_stamp: Stamp
    remote: Optional[Dict[str, Any]]
    remote_stamp: Stamp

Resolution = Union[Literal["take_remote", "keep_local", "delete"], Dict[str, Any]]
"""A conflict resolver's answer: keep one of the versions, delete the
record, or a dict: the record to write (with the primary key)."""
