"""The results store's two databases, SQLite and PostgreSQL, behind one small interface.

:class:`Database` is what :class:`toolkit.results.store.ResultsStore` asks of a database:
rows with ``:name`` parameters, a transaction, a migration's transaction, the schema version,
and the few SQL words the dialects spell differently (:class:`Sqlite`, :class:`Postgres`).

SQLite waits for other writers instead of giving up: the file is in WAL mode (readers and
the writer do not block each other), each connection waits up to :data:`BUSY_TIMEOUT_S`
for the write lock, and a write still refused as locked (or busy) is retried a bounded
number of times (:data:`LOCK_RETRIES`, :meth:`Database.retrying`).  The ``is_*`` functions
tell the store which kind of database error it met, for a one-line message.

Example::

    database = Sqlite(Path("results.sqlite"))
    database.open()
    database.retrying(lambda: database.rows("SELECT run_id FROM runs WHERE model_name = :m",
                                            {"m": "digits_cnn"}))
"""

from __future__ import annotations

import contextlib
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from toolkit.errors import StoreError, UsageError

#: A value bound to a ``:name`` parameter (both drivers take these).
SqlValue = str | int | float | None
Params = Mapping[str, SqlValue]
#: One row as the driver gives it: text, numbers, NULL, and on PostgreSQL a JSONB column
#: already parsed.
Row = tuple[object, ...]

_T = TypeVar("_T")

#: Seconds one SQLite connection waits for another writer's lock before SQLite says "locked".
BUSY_TIMEOUT_S = 30.0
#: Times a SQLite write refused as locked or busy is tried again (after the wait above),
#: with a growing, jittered pause: SQLite answers some conflicts at once, without waiting.
LOCK_RETRIES = 5


def is_locked(exc: BaseException) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (any extended code): another connection holds the lock."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def is_damaged(exc: BaseException) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB: the file's pages are not what SQLite wrote."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.DatabaseError) and code is not None \
        and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def is_full_or_io(exc: BaseException) -> bool:
    """SQLITE_FULL, SQLITE_IOERR or SQLITE_CANTOPEN: the disk, not the file, is at fault."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in (
        sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN)


class Database:
    """The few things the store asks of a database, with ``:name`` parameters."""

    dialect = ""  # a key of toolkit.results.schema.DIALECTS
    order_column = "rowid"

    def rows(self, sql: str, params: Params | None = None) -> list[Row]:
        raise NotImplementedError

    def transaction(self) -> contextlib.AbstractContextManager[Writer]:
        raise NotImplementedError

    def migration(self) -> contextlib.AbstractContextManager[Writer]:
        """One transaction that no other writer's migration runs beside."""
        raise NotImplementedError

    def stored_version(self, tx: Writer | None = None) -> int:
        """The schema version (0 for an empty database), read in ``tx`` when given."""
        raise NotImplementedError

    def set_version(self, tx: Writer, version: int) -> None:
        raise NotImplementedError

    def agg(self, column: str) -> str:
        """Comma-joined distinct values of ``column`` in a group."""
        raise NotImplementedError

    def json_text(self, column: str, *path: str) -> str:
        """The value at ``path`` in the JSON ``column``, as SQL text (NULL when absent)."""
        raise NotImplementedError

    def json_param(self, name: str) -> str:
        """The bound JSON text ``:name`` as the record column takes it."""
        return f":{name}"

    def open(self) -> None:
        """Settings that read or change the file; run where its errors are reported."""

    def retrying(self, work: Callable[[], _T]) -> _T:
        """Call ``work`` (one whole transaction), again while the database says it is busy."""
        return work()

    def close(self) -> None:
        raise NotImplementedError


class Cursor(Protocol):
    """What is read of a statement's result: a ``sqlite3.Cursor`` or SQLAlchemy's ``Result``."""

    def fetchall(self) -> Sequence[Iterable[object]]: ...


class Writer:
    """Statements inside one transaction (:meth:`Database.transaction`)."""

    def __init__(self, execute: Callable[[str, Params | list[Params] | None], Cursor]) -> None:
        self._execute = execute  # a list of params: the statement once per item

    def execute(self, sql: str, params: Params | list[Params] | None = None) -> None:
        self._execute(sql, params)

    def rows(self, sql: str, params: Params | None = None) -> list[Row]:
        return [tuple(row) for row in self._execute(sql, params).fetchall()]


class Sqlite(Database):
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        # isolation_level None: transactions are begun explicitly (BEGIN IMMEDIATE, below).
        self.db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self.db.execute("PRAGMA foreign_keys = ON")

    def open(self) -> None:
        # WAL is a property of the file, set once by the first opener.  A file SQLite cannot
        # switch (read-only, or another process holds it past every retry) stays in its
        # journal mode: slower under contention, still correct.
        def wal() -> None:
            self.db.execute("PRAGMA journal_mode = WAL").fetchall()

        try:
            self.retrying(wal)
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc) and not is_locked(exc):
                raise

    def retrying(self, work: Callable[[], _T]) -> _T:
        for attempt in range(LOCK_RETRIES):
            try:
                return work()
            except sqlite3.OperationalError as exc:
                if not is_locked(exc):
                    raise
            time.sleep(min(0.1 * 2 ** attempt, 2.0) * random.uniform(0.5, 1.5))
        return work()

    def rows(self, sql: str, params: Params | None = None) -> list[Row]:
        return list(self.db.execute(sql, params or {}).fetchall())

    def _execute(self, sql: str, params: Params | list[Params] | None = None) -> sqlite3.Cursor:
        if isinstance(params, list):
            return self.db.executemany(sql, params)
        return self.db.execute(sql, params or {})

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Writer]:
        # IMMEDIATE takes the write lock at once, waiting (busy timeout) for another writer;
        # a read that later became a write could be refused at once instead (SQLITE_BUSY).
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield Writer(self._execute)
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def migration(self) -> Iterator[Writer]:
        # executescript() commits first; the steps run as one explicit transaction instead,
        # so an interrupted upgrade leaves the file at its old version, intact.  A second
        # opener waits for the write lock, then finds the new version.
        with self.transaction() as tx:
            yield tx

    def stored_version(self, tx: Writer | None = None) -> int:
        return _version(self.rows("PRAGMA user_version")[0][0])

    def set_version(self, tx: Writer, version: int) -> None:
        tx.execute(f"PRAGMA user_version = {int(version)}")

    def agg(self, column: str) -> str:
        return f"group_concat(DISTINCT {column})"

    def json_text(self, column: str, *path: str) -> str:
        return f"json_extract({column}, '$.{'.'.join(path)}')"

    def close(self) -> None:
        self.db.close()


class Postgres(Database):
    dialect = "postgresql"
    order_column = "seq"

    def __init__(self, url: str) -> None:
        import sqlalchemy  # only a PostgreSQL store pays for importing it

        self.sql = sqlalchemy
        if url.startswith(("postgres://", "postgresql://")):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]  # psycopg 3, not psycopg2
        self.engine = sqlalchemy.create_engine(url, pool_pre_ping=True)

    def rows(self, sql: str, params: Params | None = None) -> list[Row]:
        with self.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(self.sql.text(sql), params or {})]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Writer]:
        with self.engine.begin() as connection:
            def execute(sql: str, params: Params | list[Params] | None = None) -> Cursor:
                return connection.execute(self.sql.text(sql), params or {})

            yield Writer(execute)

    @contextlib.contextmanager
    def migration(self) -> Iterator[Writer]:
        with self.transaction() as tx:
            # Held to the end of the transaction: two controllers opening an old (or empty)
            # database at once upgrade it once; the second then finds the new version.
            tx.execute("SELECT pg_advisory_xact_lock(7141)")  # 7141: edge's schema lock
            tx.execute("CREATE TABLE IF NOT EXISTS edge_schema (version INTEGER NOT NULL)")
            yield tx

    def stored_version(self, tx: Writer | None = None) -> int:
        read = tx.rows if tx else self.rows
        if read("SELECT to_regclass('edge_schema')")[0][0] is None:
            return 0
        found = read("SELECT version FROM edge_schema")
        return _version(found[0][0]) if found else 0

    def set_version(self, tx: Writer, version: int) -> None:
        tx.execute("DELETE FROM edge_schema")
        tx.execute("INSERT INTO edge_schema VALUES (:v)", {"v": version})

    def agg(self, column: str) -> str:
        return f"string_agg(DISTINCT {column}, ',')"

    def json_text(self, column: str, *path: str) -> str:
        return f"({column} #>> '{{{','.join(path)}}}')"

    def json_param(self, name: str) -> str:
        return f"CAST(:{name} AS JSONB)"

    def close(self) -> None:
        self.engine.dispose()



def _version(value: object) -> int:
    """A schema version as the database keeps it (an integer)."""
    if isinstance(value, int | str) and not isinstance(value, bool):
        return int(value)
    raise TypeError(f"a schema version must be a whole number, got {value!r}")


def is_database_error(exc: Exception) -> bool:
    """An error of the database (either driver's), as opposed to one of edge's own."""
    if isinstance(exc, sqlite3.Error):
        return True
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:
        return False
    return isinstance(exc, SQLAlchemyError)


def connect_postgres(url: str, name: str) -> Postgres:
    """The PostgreSQL database at ``url``, reached once; ``name`` is the URL fit to print.

    A :class:`UsageError` when SQLAlchemy or psycopg is missing, a :class:`StoreError` when
    the server cannot be reached (authentication, DNS, refused, a bad URL).
    """
    try:
        from sqlalchemy.exc import SQLAlchemyError

        database = Postgres(url)
        database.rows("SELECT 1")
    except ImportError as exc:
        raise UsageError(f"results store {name} needs SQLAlchemy and psycopg: "
                         f"pip install 'edge[postgres]' ({exc})") from None
    except SQLAlchemyError as exc:  # wraps the driver's errors: auth, DNS, refused, bad URL
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"results store {name} cannot be reached: "
                         f"{mask_password(reason) if '://' in reason else reason}") from None
    return database


def mask_password(url: str) -> str:
    """``url`` with its password shown as ``***``."""
    return re.sub(r"^([^:/]+://[^:@/]*):[^@/]*@", r"\1:***@", url)
