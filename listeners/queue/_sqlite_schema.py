"""Schema, migrations and connection set-up of the SQLite queue file.

One table, ``messages`` (and ``counters``, kept by triggers); each row is a received
message and its delivery state:

* ``pending``  waiting to be claimed (or waiting for ``next_attempt_at`` after a failure);
* ``inflight`` claimed by a delivery worker;
* ``done``     delivered; kept (without payload) only while it serves duplicate detection
  (the duplicate window; a row without digest, stored by an older version, serves
  nothing: deleted);
* ``dead``     given up on: a dead letter, kept until retried or purged.

``head`` marks, for each ordering key, its oldest ``pending``/``inflight`` row. Every
writer keeps that invariant inside its transaction, so a claim is an index range scan
(``messages_ready``) whatever the backlog, and other processes (the dead-letter CLI)
stay consistent with a running service without any shared memory.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from ..errors import QueueError
from ..file_modes import PRIVATE_FILE, make_private_dirs, restrict_file
from ..logs import describe_exception

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "connect",
    "connect_read_only",
    "storage_error",
]

#: ``PRAGMA application_id`` of a queue file ("PSRL"): refuses to adopt a foreign database.
APPLICATION_ID = 0x5053524C

_V1 = (
    """
    CREATE TABLE messages (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        payload         BLOB,
        sender          TEXT NOT NULL,
        listener        TEXT NOT NULL,
        received_at     REAL NOT NULL,
        ordering_key    TEXT NOT NULL,
        control_id      TEXT,
        message_type    TEXT,
        input_type      TEXT NOT NULL,
        route           TEXT NOT NULL,
        state           TEXT NOT NULL
                        CHECK (state IN ('pending', 'inflight', 'done', 'dead')),
        head            INTEGER NOT NULL DEFAULT 0
                        CHECK (head = 0 OR (head = 1 AND state IN ('pending', 'inflight'))),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error      TEXT,
        stored_at       REAL NOT NULL,
        updated_at      REAL NOT NULL,
        requeued_from   INTEGER
    )
    """,
    # Claiming: the claimable heads, earliest due first.
    "CREATE INDEX messages_ready ON messages (next_attempt_at, seq)"
    " WHERE state = 'pending' AND head = 1",
    # The next message of a key, and whether a key has work (put, complete, depth).
    "CREATE INDEX messages_key_active ON messages (ordering_key, seq)"
    " WHERE state IN ('pending', 'inflight')",
    # Duplicate detection.
    "CREATE INDEX messages_control_id ON messages (sender, control_id, stored_at)"
    " WHERE control_id IS NOT NULL",
    # Pruning of delivered rows, and listing / purging dead letters.
    "CREATE INDEX messages_done ON messages (stored_at) WHERE state = 'done'",
    "CREATE INDEX messages_dead ON messages (seq) WHERE state = 'dead'",
    # Crash recovery at start.
    "CREATE INDEX messages_inflight ON messages (seq) WHERE state = 'inflight'",
    # depth() in O(1): pending + inflight, kept by triggers (so also by other processes).
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT INTO counters VALUES ('active', 0)",
    """
    CREATE TRIGGER messages_active_insert AFTER INSERT ON messages
    WHEN new.state IN ('pending', 'inflight')
    BEGIN UPDATE counters SET value = value + 1 WHERE name = 'active'; END
    """,
    """
    CREATE TRIGGER messages_active_delete AFTER DELETE ON messages
    WHEN old.state IN ('pending', 'inflight')
    BEGIN UPDATE counters SET value = value - 1 WHERE name = 'active'; END
    """,
    """
    CREATE TRIGGER messages_active_update AFTER UPDATE OF state ON messages
    WHEN (old.state IN ('pending', 'inflight')) != (new.state IN ('pending', 'inflight'))
    BEGIN
        UPDATE counters
        SET value = value + CASE WHEN new.state IN ('pending', 'inflight') THEN 1 ELSE -1 END
        WHERE name = 'active';
    END
    """,
)


def _create_v1(conn: sqlite3.Connection) -> None:
    for statement in _V1:
        conn.execute(statement)


def _add_message_ids_v2(conn: sqlite3.Connection) -> None:
    # The AMQP message and correlation ids of messages consumed from RabbitMQ, carried
    # through to published bundles and logs.
    conn.execute("ALTER TABLE messages ADD COLUMN message_id TEXT")
    conn.execute("ALTER TABLE messages ADD COLUMN correlation_id TEXT")


def _add_content_digest_v3(conn: sqlite3.Connection) -> None:
    # Duplicate detection keyed on content too: a sender reusing an MSH-10 for another
    # message must not see it dropped (listeners.queue.digest). ``sender_id`` is the full
    # sender identity (every HD component of MSH-3/MSH-4), ``digest`` the content digest.
    # Rows stored before this version have neither: they can no longer be matched (a
    # delivered row has no payload left to digest), so a retransmission of one of them is
    # stored and delivered again — idempotent bundles make that harmless, whereas matching
    # on (sender, control id) alone is the silent loss this version removes.
    conn.execute("ALTER TABLE messages ADD COLUMN sender_id TEXT")
    conn.execute("ALTER TABLE messages ADD COLUMN digest BLOB")
    # The old (sender, control_id) index served only that lookup: replaced, not kept,
    # so each insert maintains one duplicate index, not two.
    conn.execute("DROP INDEX IF EXISTS messages_control_id")
    conn.execute(
        "CREATE INDEX messages_duplicate ON messages (sender_id, control_id, digest, stored_at)"
        " WHERE control_id IS NOT NULL"
    )


def _add_uncontrolled_duplicates_v4(conn: sqlite3.Connection) -> None:
    # Duplicate detection of messages without a control id (listeners.queue
    # ._sqlite_duplicates): a consumer killed between its commit and its ack has the
    # broker deliver the message again to the next one. Such rows now keep a digest (and,
    # once delivered, stay without payload for the window instead of being deleted).
    # Rows stored before have none: they match nothing, as before this version.
    conn.execute(
        "CREATE INDEX messages_uncontrolled ON messages (sender_id, digest, stored_at)"
        " WHERE control_id IS NULL"
    )


#: Migration hook: ``MIGRATIONS[n]`` takes a version-``n`` file to version ``n + 1`` inside
#: the caller's transaction. Append a function to change the schema; never edit one.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _create_v1,
    _add_message_ids_v2,
    _add_content_digest_v3,
    _add_uncontrolled_duplicates_v4,
)
SCHEMA_VERSION = len(MIGRATIONS)


#: SQLite's extended codes of an I/O error that mean the volume had no room for a file to
#: grow: the WAL index (``-shm``, grown with the WAL, and created at every start).
_NO_ROOM = frozenset({"SQLITE_IOERR_SHMSIZE"})


def storage_error(exc: BaseException, doing: str) -> QueueError:
    """A :class:`QueueError` for a storage failure (SQLite messages carry no content; of
    any other exception, only its kind and place).

    SQLite says "disk I/O error" for a failing disk and for a full one alike (the service
    then would not start, or refused every message, with the operator looking for a
    hardware fault): its extended code is added, and what it means when it is the want
    of room."""
    if isinstance(exc, QueueError):
        return exc
    if isinstance(exc, OSError) and exc.strerror:
        detail = exc.strerror
    elif isinstance(exc, OSError | sqlite3.Error):
        detail = str(exc)
    else:
        # Anything else (a bug, a MemoryError reaching the writer thread): its kind and
        # place only, its text may quote the message being stored.
        detail = describe_exception(exc)
    name = getattr(exc, "sqlite_errorname", None) if isinstance(exc, sqlite3.Error) else None
    if isinstance(name, str) and name.startswith("SQLITE_IOERR"):
        detail += f" ({name}"
        if name in _NO_ROOM:
            detail += ": the -shm file could not grow; is the volume full?"
        detail += ")"
    return QueueError(f"queue storage failed while {doing}: {detail}")


def connect(
    path: Path, *, busy_timeout_ms: int = 10_000, migrate: bool = True
) -> sqlite3.Connection:
    """Open the queue file for writing: WAL, ``synchronous=FULL``, ``secure_delete``.

    ``migrate`` (the service): create the file, or bring an older one to this version.
    Otherwise (the dead-letter CLI's retry and purge) the file must exist at this very
    version: a CLI of another version beside a running service must neither upgrade the
    file under it (the service would then refuse to start again) nor write rows an older
    or newer schema does not expect.

    The connection is in autocommit mode: callers issue ``BEGIN IMMEDIATE``/``COMMIT``.
    """
    try:
        if migrate:
            make_private_dirs(path.parent)
            # Created here, 0600: SQLite gives its -wal and -shm files the main file's mode.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
        elif not path.is_file():
            raise QueueError(f"no queue file at {path}")
        for name in (path.name, path.name + "-wal", path.name + "-shm"):
            restrict_file(path.with_name(name))
        conn = sqlite3.connect(
            # mode=rw: never creates the file (a typo in the path is not a new queue).
            str(path) if migrate else f"{path.absolute().as_uri()}?mode=rw",
            uri=not migrate,
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,
            cached_statements=128,
        )
    except (OSError, sqlite3.Error, QueueError) as exc:
        raise storage_error(exc, f"opening {path}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        # Deleted content (a delivered message's payload, a purged dead letter) is
        # overwritten with zeros, free pages included, rather than left readable in the
        # file until the page is reused. SQLite's default depends on how it was built.
        conn.execute("PRAGMA secure_delete = ON")
        if migrate:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise QueueError(f"queue storage failed: {path} cannot use WAL (mode {mode!r})")
        # FULL in WAL mode: every COMMIT fsyncs the WAL before returning.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA journal_size_limit = 67108864")
        conn.execute("PRAGMA cache_size = -16384")  # 16 MiB: the hot index pages of a backlog
        if migrate:
            _migrate(conn, path)
        else:
            _require_current(conn, path)
    except (sqlite3.Error, QueueError) as exc:
        conn.close()
        raise storage_error(exc, f"opening {path}") from None
    return conn


def connect_read_only(path: Path, *, busy_timeout_ms: int = 10_000) -> sqlite3.Connection:
    """Open the queue file to read it only (``dead-letters list`` and ``show``): SQLite's
    read-only mode, no migration, no write of any kind (not even the journal mode), so
    a CLI of another version never changes a running service's file; a file of another
    schema version is refused (:class:`QueueError`) rather than misread."""
    if not path.is_file():
        raise QueueError(f"no queue file at {path}")
    try:
        conn = sqlite3.connect(
            f"{path.absolute().as_uri()}?mode=ro",
            uri=True,
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,
        )
    except sqlite3.Error as exc:
        raise storage_error(exc, f"opening {path}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA query_only = ON")
        _require_current(conn, path)
    except (sqlite3.Error, QueueError) as exc:
        conn.close()
        raise storage_error(exc, f"opening {path}") from None
    return conn


def _require_current(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a file whose schema is not this version's (newer, older or none)."""
    version = _version(conn, path)
    if version == 0:
        raise QueueError(f"{path} is not a Passerelle queue")
    if version < SCHEMA_VERSION:
        raise QueueError(
            f"{path} has queue schema version {version}, older than this Passerelle's "
            f"({SCHEMA_VERSION}): start this version's service once to migrate it, or use "
            "the passerelle that runs the service"
        )


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    if _version(conn, path) == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _version(conn, path)  # another process may have migrated meanwhile
        if version == 0:
            has_tables = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' LIMIT 1"
            ).fetchone()
            if has_tables is not None:
                raise QueueError(f"{path} is an SQLite database but not a Passerelle queue")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        for migration in MIGRATIONS[version:]:
            migration(conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _version(conn: sqlite3.Connection, path: Path) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    application_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    if version and application_id != APPLICATION_ID:
        raise QueueError(f"{path} is an SQLite database but not a Passerelle queue")
    if version > SCHEMA_VERSION:
        raise QueueError(
            f"{path} has queue schema version {version}, newer than this Passerelle "
            f"supports ({SCHEMA_VERSION}); upgrade Passerelle"
        )
    return version
