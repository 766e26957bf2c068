"""The tidelog exception hierarchy.

Every error tidelog raises is a :class:`Error`. Subclasses say what went
wrong; some also derive from the matching built-in exception so generic
handlers work (``except ValueError`` catches :class:`InvalidInputError`,
``except LookupError`` catches :class:`NotFoundError`, ``except
TimeoutError`` catches :class:`tidelog.TimeoutError`).
"""

import builtins

__all__ = [
    "Error",
    "InvalidInputError",
    "NotFoundError",
    "TableNotFoundError",
    "RecordNotFoundError",
    "PeerNotFoundError",
    "AlreadyExistsError",
    "DuplicateKeyError",
    "TableExistsError",
    "PeerExistsError",
    "ClosedError",
    "ForkedError",
    "LockedError",
    "StorageError",
    "DiskFullError",
    "TableFullError",
    "CorruptError",
    "ClockSkewError",
    "TimeoutError",
    "TlsError",
    "PeerError",
    "UnsupportedError",
]


class Error(Exception):
    """Base class of every tidelog error. ``kind`` names the category."""

    kind: str = "error"


class InvalidInputError(Error, ValueError):
    """Malformed input: not a JSON object, a missing or wrongly typed primary
    key, invalid UTF-8, an oversized record, a bad name or option."""

    kind = "invalid_input"


class NotFoundError(Error, LookupError):
    """The named table, record or peer does not exist."""

    kind = "not_found"


class TableNotFoundError(NotFoundError):
    """The table does not exist: create it first."""


class RecordNotFoundError(NotFoundError):
    """``update`` found no record with that key."""


class PeerNotFoundError(NotFoundError):
    """The peer is not configured: add it with ``add_peer``."""


class AlreadyExistsError(Error):
    """A key, table or peer already exists."""

    kind = "already_exists"


class DuplicateKeyError(AlreadyExistsError):
    """``insert`` hit an existing key: use ``upsert`` to overwrite."""


class TableExistsError(AlreadyExistsError):
    """``create_table`` named an existing table."""


class PeerExistsError(AlreadyExistsError):
    """``add_peer`` named a configured peer: use ``update_peer``."""


class ClosedError(Error):
    """The database was closed."""

    kind = "closed"


class ForkedError(ClosedError):
    """The handle was opened before ``os.fork()`` and is unusable in the
    child process: open the database in the child instead."""

    kind = "forked"


class LockedError(Error):
    """The data directory is in use by another handle or process."""

    kind = "locked"


class StorageError(Error):
    """The storage engine or the file system failed."""

    kind = "storage"


class DiskFullError(StorageError):
    """The disk holding the database is full. Nothing of the failed write
    was committed (unless the message says its outcome is unknown); writes
    resume by themselves once space is freed, without a reopen."""


class TableFullError(StorageError):
    """A write would take a table past its ``disk_budget_bytes`` with
    ``on_full="refuse"``: nothing was written. Delete records from the
    table, raise its budget, or use ``on_full="drop_oldest"``."""


class CorruptError(Error):
    """Stored data could not be decoded."""

    kind = "corrupt"


class ClockSkewError(Error):
    """A version stamp is too far ahead of the local wall clock."""

    kind = "clock_skew"


class TimeoutError(Error, builtins.TimeoutError):
    """A wait (e.g. ``wait_for_ack``) ran out of time."""

    kind = "timeout"


class TlsError(Error):
    """TLS configuration (certificate, key, CA) or handshake problem."""

    kind = "tls"


class PeerError(Error):
    """A peer misbehaved, or listening / the replication link failed."""

    kind = "peer"


class UnsupportedError(Error):
    """Not allowed in the current state (e.g. replication not started)."""

    kind = "unsupported"


# Show them as tidelog.<Name> in tracebacks and reprs.
for _name in __all__:
    globals()[_name].__module__ = "tidelog"
del _name
