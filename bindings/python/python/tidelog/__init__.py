"""tidelog: an embedded database for edge gateways.

Open a data directory with :func:`open`, write and read records as dicts,
group writes in transactions (``with db.transaction() as tx:``), read the
transaction log, listen to changes, and replicate chosen tables with other
instances over mutual TLS. See ``tidelog/__init__.pyi`` for the full typed
API. Every call is thread-safe; blocking calls release the GIL. Change
listeners run on tidelog's ``tidelog-events`` thread.

Log records (refused replication links, resyncs, failed background work)
go to the standard :mod:`logging` module: logger ``tidelog``, with a child
per source (``tidelog.repl``, ``tidelog.storage``, ``tidelog.maintenance``,
``tidelog.listener``). They are emitted from tidelog's ``tidelog-log``
thread, shortly after they happen.
"""

import atexit as _atexit

from ._errors import __all__ as _errors_all
from ._errors import (
    AlreadyExistsError,
    ClockSkewError,
    ClosedError,
    CorruptError,
    DuplicateKeyError,
    Error,
    ForkedError,
    InvalidInputError,
    LockedError,
    NotFoundError,
    PeerError,
    PeerExistsError,
    PeerNotFoundError,
    RecordNotFoundError,
    StorageError,
    DiskFullError,
    TableFullError,
    TableExistsError,
    TableNotFoundError,
    TimeoutError,
    TlsError,
    UnsupportedError,
)
from ._types import (
    Change,
    ChangeEvent,
    ConflictCase,
    ConflictEntry,
    ConflictPolicy,
    DevPki,
    DurationOption,
    Key,
    LogBounds,
    LogEntry,
    LogWrite,
    NodeCertFiles,
    PeerStatus,
    Record,
    RefusalStatus,
    Resolution,
    Stamp,
    RecordIn,
    RetentionOptions,
    SizeOption,
    StrPath,
    TableFlow,
    LinkBudget,
    TrafficStatus,
    TableInfo,
    TableStats,
    TableStatus,
    OnFull,
)
from ._tidelog import (
    CommitInfo,
    Database,
    Transaction,
    __version__,
    _close_all,
    _stop_logging,
    dev_certs,
    open,
)

# Close what is still open before the interpreter shuts down, so no listener
# thread tries to call into a finalizing interpreter; then (atexit runs in
# reverse order) stop handing log records to the `logging` module.
_atexit.register(_stop_logging)
_atexit.register(_close_all)

__all__ = [
    "open",
    "dev_certs",
    "Database",
    "Transaction",
    "CommitInfo",
    "__version__",
    "Key",
    "Record",
    "RecordIn",
    "StrPath",
    "DurationOption",
    "SizeOption",
    "RetentionOptions",
    "TableInfo",
    "TableStats",
    "OnFull",
    "LogBounds",
    "LogWrite",
    "LogEntry",
    "Change",
    "ChangeEvent",
    "ConflictPolicy",
    "ConflictEntry",
    "ConflictCase",
    "Resolution",
    "TableFlow",
    "LinkBudget",
    "TrafficStatus",
    "TableStatus",
    "PeerStatus",
    "RefusalStatus",
    "Stamp",
    "NodeCertFiles",
    "DevPki",
]
# Every exception class, as listed once in _errors.
__all__ += _errors_all
