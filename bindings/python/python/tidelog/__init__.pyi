"""Type stubs for tidelog: an embedded database for edge gateways that
replicates chosen tables between instances over mutual TLS.

Threads: every method may be called from any thread; calls that can block
release the GIL. Change listeners run on tidelog's ``tidelog-events``
thread. After ``os.fork()`` a handle opened in the parent raises
:class:`ForkedError` in the child.
"""

import builtins
import os
from types import TracebackType
from typing import Any, Callable, Dict, Iterable, List, Literal, Mapping, Optional, Sequence, Type, TypedDict, Union, final


__version__: str

# ---- data shapes -----------------------------------------------------------
# Defined once, in _types.py, which is importable at run time too.

from ._types import (
    Change as Change,
    ChangeEvent as ChangeEvent,
    ConflictCase as ConflictCase,
    ConflictEntry as ConflictEntry,
    ConflictPolicy as ConflictPolicy,
    DevPki as DevPki,
    DurationOption as DurationOption,
    Key as Key,
    LogBounds as LogBounds,
    LogEntry as LogEntry,
    LogWrite as LogWrite,
    NodeCertFiles as NodeCertFiles,
    PeerStatus as PeerStatus,
    Record as Record,
    RefusalStatus as RefusalStatus,
    Resolution as Resolution,
    Stamp as Stamp,
    RecordIn as RecordIn,
    RetentionOptions as RetentionOptions,
    SizeOption as SizeOption,
    StrPath as StrPath,
    TableFlow as TableFlow,
    LinkBudget as LinkBudget,
    TrafficStatus as TrafficStatus,
    TableInfo as TableInfo,
    TableStats as TableStats,
    OnFull as OnFull,
    TableStatus as TableStatus,
)

# ---- API -------------------------------------------------------------------

def open(
    path: StrPath,
    node_name: str,
    *,
    engine: Literal["fjall", "sled"] = ...,
    durability: Literal["grouped", "sync"] = ...,
    flush_interval: Optional[DurationOption] = None,
    profile: Literal["edge", "hub"] = ...,
    memory_budget: Optional[SizeOption] = None,
    max_record_bytes: Optional[SizeOption] = None,
    max_clock_skew: Optional[DurationOption] = None,
    expiry_interval: Optional[DurationOption] = None,
    recover_prefix: bool = ...,
    retention: Optional[RetentionOptions] = None,
    conflict_log_max_bytes: Optional[SizeOption] = None,
    conflict_log_max_age: Optional[DurationOption] = None,
    listener_queue_max: Optional[int] = None,
) -> "Database":
    """Opens (creating if needed) the data directory ``path`` for node
    ``node_name``. Raises :class:`LockedError` if another handle or process
    has it open, :class:`CorruptError` if the engine's journal was damaged
    (unless ``recover_prefix`` keeps its longest valid prefix; see
    ``Database.dropped_transactions``). Use the result as a context manager
    to close it. The keywords are the options schema every binding shares:
    an unknown or out-of-range one raises :class:`InvalidInputError`
    naming it and what it accepts. ``conflict_log_max_bytes`` (default
    "4MiB"; 0 turns the conflict log off) and ``conflict_log_max_age``
    (default "7d") bound the conflict log (``Database.conflicts``)."""

def dev_certs(out_dir: StrPath, nodes: Sequence[str], *, ca_name: str = "tidelog dev CA") -> DevPki:
    """Writes a development CA and a certificate and key per node into
    ``out_dir`` (for tests and trying tidelog out). Refuses to overwrite."""

@final
class CommitInfo:
    """What a commit was given (the core's ``CommitInfoView``)."""

    @property
    def seq(self) -> int:
        """Local log sequence number (0 if the transaction wrote nothing)."""
    @property
    def origin(self) -> int:
        """Node id of this instance (= ``stamp["node"]``)."""
    @property
    def stamp(self) -> Stamp:
        """The version stamp: hybrid-logical-clock ``time`` and ``node``."""
    @property
    def stamp_ms(self) -> int:
        """Milliseconds since the epoch of the stamp (the records' ``__updatedtime__``)."""
    @property
    def time(self) -> int:
        """``stamp["time"]``; kept for one release."""
    @property
    def millis(self) -> int:
        """``stamp_ms``; kept for one release."""

@final
class Transaction:
    """Writes to one or more tables that commit atomically, or not at all.
    As a context manager it commits on success and discards on an
    exception."""

    def insert(self, table: str, record: RecordIn) -> "Transaction":
        """Stages an insert; returns the transaction for chaining."""
    def upsert(self, table: str, record: RecordIn) -> "Transaction":
        """Stages an upsert; returns the transaction for chaining."""
    def update(self, table: str, patch: RecordIn) -> "Transaction":
        """Stages an update (merge into an existing record)."""
    def delete(self, table: str, key: Key) -> "Transaction":
        """Stages a delete."""
    def increment(self, table: str, key: Key, attr: str, by: int = 1) -> "Transaction":
        """Stages an increment of the integer attribute ``attr``."""
    def commit(self) -> CommitInfo:
        """Commits every staged write atomically."""
    def rollback(self) -> None:
        """Discards every staged write."""
    @property
    def active(self) -> bool:
        """Whether it can still take writes."""
    def __len__(self) -> int:
        """Number of staged writes."""
    def __enter__(self) -> "Transaction": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]] = None,
        exc: Optional[BaseException] = None,
        tb: Optional[TracebackType] = None,
    ) -> bool: ...

@final
class Database:
    """An open tidelog database (from :func:`open`)."""

    @property
    def node_name(self) -> str:
        """This node's name."""
    @property
    def node_id(self) -> int:
        """This instance's stable node id."""
    @property
    def dropped_transactions(self) -> int:
        """Transactions this handle lost: at open to a damaged journal (with
        ``recover_prefix=True``), or to a failed write the engine could not
        keep (sled, grouped durability)."""
    @property
    def path(self) -> str:
        """The data directory."""
    @property
    def engine(self) -> str:
        """The storage engine."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    @property
    def listener_errors(self) -> int:
        """Listener calls that raised (each reported via sys.unraisablehook)."""
    def close(self) -> None:
        """Flushes and closes; later calls raise :class:`ClosedError`."""
    def __enter__(self) -> "Database": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]] = None,
        exc: Optional[BaseException] = None,
        tb: Optional[TracebackType] = None,
    ) -> bool: ...
    def flush(self) -> None:
        """Makes every commit so far durable on disk."""
    def disk_bytes(self) -> int:
        """Bytes the data directory occupies."""

    # tables
    def create_table(
        self,
        name: str,
        *,
        primary_key: str = "id",
        indexes: Optional[Sequence[str]] = None,
        expiration: Optional[int] = None,
        conflict: Optional[ConflictPolicy] = None,
        disk_budget_bytes: Optional[int] = None,
        on_full: Optional[OnFull] = None,
    ) -> TableInfo:
        """Creates a table (raises :class:`TableExistsError` if it exists).
        ``conflict`` is its rule for concurrent writes (default "lww")."""
    def ensure_table(
        self,
        name: str,
        *,
        primary_key: str = "id",
        indexes: Optional[Sequence[str]] = None,
        expiration: Optional[int] = None,
        conflict: Optional[ConflictPolicy] = None,
        disk_budget_bytes: Optional[int] = None,
        on_full: Optional[OnFull] = None,
    ) -> bool:
        """Creates the table unless it exists; returns whether it did."""
    def drop_table(self, name: str) -> None:
        """Drops a table locally."""
    def list_tables(self) -> List[TableInfo]:
        """Every table, by name."""
    def describe_table(self, name: str) -> TableInfo:
        """A table's definition."""
    def table_stats(self, table: str) -> TableStats:
        """A table's live records, their logical bytes and what its budget
        dropped, read without a scan."""
    def set_table_budget(
        self, table: str, disk_budget_bytes: Optional[int], on_full: Optional[OnFull] = None
    ) -> None:
        """Sets (``None``: removes) a table's disk budget while running; a
        ``"drop_oldest"`` budget below the table's bytes drops at once."""

    # writes
    def insert(self, table: str, record: RecordIn) -> CommitInfo:
        """Inserts; raises :class:`DuplicateKeyError` if the key exists."""
    def upsert(self, table: str, record: RecordIn) -> CommitInfo:
        """Inserts or replaces."""
    def update(self, table: str, patch: RecordIn) -> CommitInfo:
        """Merges attributes; raises :class:`RecordNotFoundError` if absent."""
    def delete(self, table: str, key: Key) -> bool:
        """Deletes; returns whether a live record was there."""
    def increment(self, table: str, key: Key, attr: str, by: int = 1) -> CommitInfo:
        """Adds ``by`` to the integer attribute ``attr`` (creating the record
        if absent); increments from different nodes add up."""
    def transaction(self) -> Transaction:
        """Starts a transaction over any tables."""

    # reads
    def get(self, table: str, key: Key) -> Optional[Record]:
        """The record with this key, or None."""
    def get_many(self, table: str, keys: Iterable[Key]) -> List[Optional[Record]]:
        """Records for several keys, in order."""
    def scan(
        self,
        table: str,
        *,
        start: Optional[Key] = None,
        end: Optional[Key] = None,
        start_inclusive: bool = True,
        end_inclusive: bool = False,
        reverse: bool = False,
        limit: Optional[int] = None,
    ) -> List[Record]:
        """Records in primary-key order within a key range."""
    def find(
        self,
        table: str,
        attribute: str,
        *,
        lower: Any = None,
        upper: Any = None,
        lower_inclusive: bool = True,
        upper_inclusive: bool = True,
        limit: Optional[int] = None,
    ) -> List[Record]:
        """Records whose indexed attribute lies in a range."""
    def find_eq(self, table: str, attribute: str, value: Any) -> List[Record]:
        """Records whose indexed attribute equals ``value``."""
    def count(self, table: str) -> int:
        """Number of live records."""

    # log
    def log_bounds(self) -> LogBounds:
        """Oldest and newest sequence in the log."""
    def read_log(self, from_seq: int = 1, limit: int = 1000) -> List[LogEntry]:
        """Log entries from a sequence on."""
    def read_log_since(self, millis: int, limit: int = 1000) -> List[LogEntry]:
        """Log entries committed at or after a time (ms since the epoch)."""

    # conflicts
    def conflicts(self) -> List[ConflictEntry]:
        """The conflict log, oldest first (also the table ``_conflicts``)."""
    def conflicts_dropped(self) -> int:
        """Entries the conflict log dropped to stay within its bounds."""
    def set_conflict_resolver(self, table: str, resolver: Callable[[ConflictCase], Resolution]) -> None:
        """Makes ``resolver`` decide the conflicts of ``table`` (created with
        ``conflict="resolver"``). It runs on a tidelog thread holding the
        GIL; an exception or an invalid answer is logged (logger
        ``tidelog.resolver``) and counts as "take_remote"."""
    def clear_conflict_resolver(self, table: str) -> bool:
        """Removes the resolver of ``table``; returns whether one was set."""

    # listeners
    def on_change(self, table: str, callback: Callable[[ChangeEvent], object]) -> int:
        """Calls ``callback`` on the tidelog-events thread after each change
        to ``table``; returns a listener id."""
    def remove_listener(self, listener_id: int) -> bool:
        """Unregisters a listener; returns whether it was registered."""

    # replication
    def start_replication(
        self,
        *,
        cert: Optional[StrPath] = None,
        key: Optional[StrPath] = None,
        ca: Optional[StrPath] = None,
        insecure: bool = ...,
        heartbeat_interval: Optional[DurationOption] = None,
        idle_timeout: Optional[DurationOption] = None,
        connect_timeout: Optional[DurationOption] = None,
        backoff_initial: Optional[DurationOption] = None,
        backoff_max: Optional[DurationOption] = None,
        max_frame_bytes: Optional[SizeOption] = None,
        batch_max_txns: Optional[int] = None,
        window_txns: Optional[int] = None,
        sync_chunk_rows: Optional[int] = None,
        worker_threads: Optional[int] = None,
    ) -> None:
        """Starts replication: mutual TLS from PEM files, or insecure=True."""
    def listen(self, addr: str) -> str:
        """Accepts peers on ``addr``; returns the bound "host:port"."""
    def add_peer(
        self,
        name: str,
        *,
        address: Optional[str] = None,
        addresses: Optional[Sequence[str]] = None,
        tables: Optional[Sequence[TableFlow]] = None,
        relays: Optional[bool] = None,
        budget: Optional[LinkBudget] = None,
        compression: Optional[str] = None,
        deltas: Optional[bool] = None,
    ) -> None:
        """Adds a peer (dialed if it has an address; ``addresses``: more
        "host:port"s of the same logical peer, several hubs with one node
        name, tried after ``address`` in order). ``relays``: whether
        the peer may forward other nodes' writes to this instance (default:
        True with an address, False without; see the README's origin
        rules)."""
    def update_peer(
        self,
        name: str,
        *,
        address: Optional[str] = None,
        addresses: Optional[Sequence[str]] = None,
        tables: Optional[Sequence[TableFlow]] = None,
        relays: Optional[bool] = None,
        budget: Optional[LinkBudget] = None,
        compression: Optional[str] = None,
        deltas: Optional[bool] = None,
    ) -> None:
        """Replaces a peer's configuration."""
    def remove_peer(self, name: str) -> None:
        """Removes a peer."""
    def peer_status(self, name: str) -> PeerStatus:
        """Status of one peer."""
    def replication_status(self) -> List[PeerStatus]:
        """Status of every peer."""
    def wait_for_ack(self, peer: str, seq: int, timeout: float = 30.0) -> None:
        """Waits until ``peer`` acknowledged ``seq``; raises
        :class:`TimeoutError` after ``timeout`` seconds (saying what the
        link looks like), :class:`PeerError` if the transaction writes
        a table this instance publishes to ``peer`` but ``peer`` does not
        subscribe to, if ``peer`` refused it (the message names the table
        and why), or if its log entry was trimmed while ``peer`` skips a
        published table (delivery cannot be proven), and
        :class:`ClockSkewError` if ``peer`` refused its stamp as too far
        ahead."""
    def wait_for_delivery(self, seq: Optional[int] = None, timeout: float = 30.0) -> None:
        """Waits until every peer this instance publishes to acknowledged
        ``seq`` (``None``: everything committed so far); raises
        :class:`TimeoutError` after ``timeout`` seconds and
        :class:`PeerError` or :class:`ClockSkewError` as
        :meth:`wait_for_ack` does."""

# ---- errors ----------------------------------------------------------------

class Error(Exception):
    """Base class of every tidelog error."""

    kind: str

class InvalidInputError(Error, ValueError):
    """Malformed input."""

class NotFoundError(Error, LookupError):
    """A table, record or peer does not exist."""

class TableNotFoundError(NotFoundError):
    """The table does not exist."""

class RecordNotFoundError(NotFoundError):
    """No record with that key."""

class PeerNotFoundError(NotFoundError):
    """The peer is not configured."""

class AlreadyExistsError(Error):
    """A key, table or peer already exists."""

class DuplicateKeyError(AlreadyExistsError):
    """insert hit an existing key."""

class TableExistsError(AlreadyExistsError):
    """The table exists."""

class PeerExistsError(AlreadyExistsError):
    """The peer is configured."""

class ClosedError(Error):
    """The database was closed."""

class ForkedError(ClosedError):
    """The handle came from the parent of a fork."""

class LockedError(Error):
    """The data directory is in use."""

class StorageError(Error):
    """Storage engine or file system failure."""

class DiskFullError(StorageError):
    """The disk is full; writes resume once space is freed."""

class TableFullError(StorageError):
    """A write would take a table past its ``disk_budget_bytes``."""

class CorruptError(Error):
    """Stored data could not be decoded."""

class ClockSkewError(Error):
    """A stamp is too far ahead of the local clock."""

class TimeoutError(Error, builtins.TimeoutError):
    """A wait ran out of time."""

class TlsError(Error):
    """TLS configuration or handshake problem."""

class PeerError(Error):
    """A peer or the replication link failed."""

class UnsupportedError(Error):
    """Not allowed in the current state."""
