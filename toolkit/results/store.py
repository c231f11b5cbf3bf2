"""Stage 6: the results store, a SQLite file or a PostgreSQL database, with a versioned schema.

A run is stored only once its agent answers have been validated, in one
transaction, so the store never holds half a run.  Each result record
(:class:`toolkit.results.record.ResultRecord`, kept as its JSON) holds the target, board
facts, variant, recipe, metrics and raw latency samples; the run keeps its id,
time, model hash and the user's git commit.

The schema is defined once, as steps (:data:`MIGRATIONS`) written for both dialects;
its version lives in ``PRAGMA user_version`` (SQLite) or the ``edge_schema`` table
(PostgreSQL, where records are JSONB, open to SQL).  Opening an older store migrates it
forward step by step in one transaction (on PostgreSQL under an advisory lock, since
several controllers may open it at once); a store from a newer edge is refused.

SQLite waits for other writers instead of giving up: the file is in WAL mode (readers and
the writer do not block each other), each connection waits up to :data:`BUSY_TIMEOUT_S`
for the write lock, and a write still refused as locked (or busy) is retried a bounded
number of times (:data:`LOCK_RETRIES`), so concurrent deploys into one file all land.

Example::

    with ResultsStore(path) as store:
        store.add_run(run)
        store.tag("baseline", run.run_id)
        store.resolve("baseline")   # -> run id
        store.get_run("baseline")
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from toolkit.errors import OutputError, StoreError, UsageError
from toolkit.results.record import BOARD_IDENTITY, STORED_PATHS, ResultRecord


@dataclass(frozen=True)
class Migration:
    """One step of the schema, from version ``n`` to ``n + 1``, for both dialects.

    ``sql`` is written once; the few words the dialects spell differently are ``{names}``
    from :data:`DIALECTS`.  ``prepare`` runs first in the same transaction, for rewrites
    SQL alone cannot do safely.
    """

    sql: str
    prepare: Callable[[_Writer], None] | None = None


def _finite_records(tx: _Writer) -> None:
    """Rewrite stored records that hold ``NaN``/``Infinity``: Python's JSON writes them, but
    they are not JSON (PostgreSQL's JSONB and SQLite's json_extract reject the whole record)."""
    rows = tx.rows("SELECT run_id, target, variant, record FROM results "
                   "WHERE record LIKE '%NaN%' OR record LIKE '%Infinity%'")
    for run_id, target, variant, text in rows:
        try:
            fixed = record_json(json.loads(text))
        except ValueError:  # not JSON at all: left as it is, reported when read
            continue
        if fixed != text:
            tx.execute("UPDATE results SET record = :record WHERE run_id = :run_id "
                       "AND target = :target AND variant = :variant",
                       {"record": fixed, "run_id": run_id, "target": target,
                        "variant": variant})


#: ``MIGRATIONS[n]`` takes a store from schema ``n`` to ``n + 1``, on SQLite and PostgreSQL.
MIGRATIONS: tuple[Migration, ...] = (
    Migration("""
        CREATE TABLE runs (
            {seq_unique}
            run_id       TEXT PRIMARY KEY,
            created_at   TEXT NOT NULL,
            model_name   TEXT NOT NULL,
            model_path   TEXT NOT NULL,
            model_sha256 TEXT NOT NULL,
            report_dir   TEXT NOT NULL
        );
        CREATE TABLE results (
            {seq}
            run_id   TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
            target   TEXT NOT NULL,
            variant  TEXT NOT NULL,
            status   TEXT NOT NULL,
            record   TEXT NOT NULL,  -- JSON: artifact facts, board facts, measurements
            PRIMARY KEY (run_id, target, variant)
        );
    """),
    Migration("""
        ALTER TABLE runs ADD COLUMN git_commit TEXT;
        CREATE TABLE tags (
            name       TEXT PRIMARY KEY,
            run_id     TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
            created_at TEXT NOT NULL DEFAULT {utc_now}
        );
        CREATE INDEX runs_by_time ON runs(created_at, run_id);
    """),
    # Records become JSONB on PostgreSQL, so that labs can query trends in SQL; the index
    # serves latency_history (one model's runs up to a time).
    Migration("""
        {record_to_jsonb}
        CREATE INDEX runs_by_model ON runs(model_name, created_at);
    """, prepare=_finite_records),
)
#: The schema this edge writes: every step applied.  An older store is upgraded on opening, a
#: newer one refused.
SCHEMA_VERSION = len(MIGRATIONS)

#: What each dialect writes for the ``{names}`` in :data:`MIGRATIONS`.  PostgreSQL has no
#: ``rowid``: its ``seq`` columns keep insertion order.
DIALECTS: dict[str, dict[str, str]] = {
    "sqlite": {"seq_unique": "", "seq": "",
               "utc_now": "(strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now'))",
               "record_to_jsonb": ""},
    "postgresql": {"seq_unique": "seq BIGSERIAL UNIQUE,", "seq": "seq BIGSERIAL,",
                   "utc_now": "to_char(now() AT TIME ZONE 'utc', "
                              "'YYYY-MM-DD\"T\"HH24:MI:SS+00:00')",
                   "record_to_jsonb": "ALTER TABLE results ALTER COLUMN record TYPE JSONB "
                                      "USING record::jsonb;"},
}


def migration_sql(step: int, dialect: str) -> str:
    """The SQL of ``MIGRATIONS[step]`` as ``dialect`` (``sqlite`` or ``postgresql``) runs it."""
    return MIGRATIONS[step].sql.format(**DIALECTS[dialect])


def record_json(record: dict[str, Any]) -> str:
    """``record`` as strict JSON: a non-finite float (an SQNR of ``inf``) is stored as null,
    the same on both dialects, since JSON has no such number."""
    return json.dumps(_finite(record), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


#: Rows :meth:`ResultsStore.latency_history` reads at most (newest first).
HISTORY_ROWS = 2_000

_TAG_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._/-]{0,99}$")
_RUN_COLUMNS = ("run_id, created_at, model_name, model_path, model_sha256, report_dir, "
                "git_commit")


@dataclass(frozen=True, kw_only=True)
class StoredRun:
    """One ``edge deploy``: where it came from, and one result record per target x variant."""

    run_id: str
    created_at: str
    model_name: str
    model_path: str
    model_sha256: str
    report_dir: str
    git_commit: str | None = None
    tags: tuple[str, ...] = ()
    results: list[ResultRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "created_at": self.created_at,
                "model_name": self.model_name, "model_path": self.model_path,
                "model_sha256": self.model_sha256, "report_dir": self.report_dir,
                "git_commit": self.git_commit, "tags": list(self.tags),
                "results": [record.to_dict() for record in self.results]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoredRun:
        """The inverse of :meth:`to_dict`; a ``KeyError``/``TypeError``/``ValueError`` on a
        malformed dict."""
        return cls(run_id=str(data["run_id"]), created_at=str(data["created_at"]),
                   model_name=str(data["model_name"]), model_path=str(data["model_path"]),
                   model_sha256=str(data["model_sha256"]),
                   report_dir=str(data.get("report_dir", "")),
                   git_commit=data.get("git_commit"), tags=tuple(data.get("tags", ())),
                   results=[ResultRecord.from_dict(record) for record in data["results"]])

    @property
    def targets(self) -> list[str]:
        return sorted({r.target for r in self.results})


@dataclass(frozen=True, kw_only=True)
class EarlierLatency:
    """One sound measurement of one file on one board, reduced to what the spread between
    runs needs (see :meth:`ResultsStore.latency_history`)."""

    run_id: str
    created_at: str
    target: str
    variant: str
    sha256: str
    board: tuple[str, ...]  # the results.BOARD_IDENTITY facts, in that order
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """One line of ``edge runs list``: a run without its records."""

    run_id: str
    created_at: str
    model_name: str
    model_sha256: str
    git_commit: str | None
    targets: tuple[str, ...]
    variants: tuple[str, ...]
    failed: int
    tags: tuple[str, ...]


_URL = re.compile(r"^postgres(ql)?(\+\w+)?://")


def store_location(value: str | Path) -> Path | str:
    """A database URL (``postgresql://user@host/db``) stays a string; anything else is a path."""
    if isinstance(value, str) and _URL.match(value):
        return value
    return Path(value)


def describe_store(location: Path | str) -> str:
    """``location`` fit to print: a URL's password is masked."""
    if isinstance(location, Path):
        return str(location)
    return re.sub(r"^([^:/]+://[^:@/]*):[^@/]*@", r"\1:***@", location)


_T = TypeVar("_T")

#: Seconds one SQLite connection waits for another writer's lock before SQLite says "locked".
BUSY_TIMEOUT_S = 30.0
#: Times a SQLite write refused as locked or busy is tried again (after the wait above),
#: with a growing, jittered pause: SQLite answers some conflicts at once, without waiting.
LOCK_RETRIES = 5


def _is_locked(exc: BaseException) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (any extended code): another connection holds the lock."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _is_damaged(exc: BaseException) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB: the file's pages are not what SQLite wrote."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.DatabaseError) and code is not None \
        and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _is_full_or_io(exc: BaseException) -> bool:
    """SQLITE_FULL, SQLITE_IOERR or SQLITE_CANTOPEN: the disk, not the file, is at fault."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in (
        sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN)


class _Database:
    """The few things the store asks of a database, with ``:name`` parameters."""

    dialect = ""  # a key of DIALECTS
    order_column = "rowid"

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def transaction(self) -> contextlib.AbstractContextManager[_Writer]:
        raise NotImplementedError

    def migration(self) -> contextlib.AbstractContextManager[_Writer]:
        """One transaction that no other writer's migration runs beside."""
        raise NotImplementedError

    def stored_version(self, tx: _Writer | None = None) -> int:
        """The schema version (0 for an empty database), read in ``tx`` when given."""
        raise NotImplementedError

    def set_version(self, tx: _Writer, version: int) -> None:
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


class _Writer:
    def __init__(self, execute: Callable[..., Any]) -> None:
        self._execute = execute  # (sql, params | list of params) -> cursor or result

    def execute(self, sql: str, params: dict[str, Any] | list[dict[str, Any]] | None = None
                ) -> None:
        self._execute(sql, params)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._execute(sql, params).fetchall()]


class _Sqlite(_Database):
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
            if "readonly" not in str(exc) and not _is_locked(exc):
                raise

    def retrying(self, work: Callable[[], _T]) -> _T:
        for attempt in range(LOCK_RETRIES):
            try:
                return work()
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc):
                    raise
            time.sleep(min(0.1 * 2 ** attempt, 2.0) * random.uniform(0.5, 1.5))
        return work()

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return list(self.db.execute(sql, params or {}).fetchall())

    def _execute(self, sql: str, params: Any = None) -> sqlite3.Cursor:
        if isinstance(params, list):
            return self.db.executemany(sql, params)
        return self.db.execute(sql, params or {})

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Writer]:
        # IMMEDIATE takes the write lock at once, waiting (busy timeout) for another writer;
        # a read that later became a write could be refused at once instead (SQLITE_BUSY).
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield _Writer(self._execute)
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def migration(self) -> Iterator[_Writer]:
        # executescript() commits first; the steps run as one explicit transaction instead,
        # so an interrupted upgrade leaves the file at its old version, intact.  A second
        # opener waits for the write lock, then finds the new version.
        with self.transaction() as tx:
            yield tx

    def stored_version(self, tx: _Writer | None = None) -> int:
        return int(self.rows("PRAGMA user_version")[0][0])

    def set_version(self, tx: _Writer, version: int) -> None:
        tx.execute(f"PRAGMA user_version = {int(version)}")

    def agg(self, column: str) -> str:
        return f"group_concat(DISTINCT {column})"

    def json_text(self, column: str, *path: str) -> str:
        return f"json_extract({column}, '$.{'.'.join(path)}')"

    def close(self) -> None:
        self.db.close()


class _Postgres(_Database):
    dialect = "postgresql"
    order_column = "seq"

    def __init__(self, url: str) -> None:
        import sqlalchemy  # only a PostgreSQL store pays for importing it

        self.sql = sqlalchemy
        if url.startswith(("postgres://", "postgresql://")):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]  # psycopg 3, not psycopg2
        self.engine = sqlalchemy.create_engine(url, pool_pre_ping=True)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(self.sql.text(sql), params or {})]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Writer]:
        with self.engine.begin() as connection:
            yield _Writer(lambda sql, params=None: connection.execute(self.sql.text(sql),
                                                                       params or {}))

    @contextlib.contextmanager
    def migration(self) -> Iterator[_Writer]:
        with self.transaction() as tx:
            # Held to the end of the transaction: two controllers opening an old (or empty)
            # database at once upgrade it once; the second then finds the new version.
            tx.execute("SELECT pg_advisory_xact_lock(7141)")  # 7141: edge's schema lock
            tx.execute("CREATE TABLE IF NOT EXISTS edge_schema (version INTEGER NOT NULL)")
            yield tx

    def stored_version(self, tx: _Writer | None = None) -> int:
        read = tx.rows if tx else self.rows
        if read("SELECT to_regclass('edge_schema')")[0][0] is None:
            return 0
        found = read("SELECT version FROM edge_schema")
        return int(found[0][0]) if found else 0

    def set_version(self, tx: _Writer, version: int) -> None:
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


class ResultsStore:
    """A results store, a SQLite file or a PostgreSQL database; use as a context manager.

    ``location`` is a path or a ``postgresql://user:password@host/db`` URL (several
    lab machines and CI runners writing to one database).
    """

    def __init__(self, location: Path | str, *, create: bool = True) -> None:
        self.location = location
        self.name = describe_store(location)
        if isinstance(location, str):
            self._db: _Database = self._connect_postgres(location)
        else:
            if not create and not location.is_file():
                raise UsageError(f"no results store at {location}; run edge deploy first, or "
                                 "give --store / $EDGE_STORE / [tool.edge] store")
            try:
                location.parent.mkdir(parents=True, exist_ok=True)
                self._db = _Sqlite(location)
            except (OSError, sqlite3.Error) as exc:
                raise OutputError(f"results store {location} cannot be opened: {exc}",
                                  path=location) from None
        try:
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def _connect_postgres(self, url: str) -> _Database:
        try:
            from sqlalchemy.exc import SQLAlchemyError

            database = _Postgres(url)
            database.rows("SELECT 1")
        except ImportError as exc:
            raise UsageError(f"results store {self.name} needs SQLAlchemy and psycopg: "
                             f"pip install 'edge[postgres]' ({exc})") from None
        except SQLAlchemyError as exc:  # wraps the driver's errors: auth, DNS, refused, bad URL
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"results store {self.name} cannot be reached: "
                             f"{describe_store(reason) if '://' in reason else reason}") from None
        return database

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    @property
    def path(self) -> Path | str:
        return self.location

    @property
    def schema_version(self) -> int:
        return self._db.stored_version()

    def _migrate(self) -> None:
        """Bring the schema to :data:`SCHEMA_VERSION`, step by step in one transaction."""
        db = self._db

        def upgrade() -> None:
            with db.migration() as tx:
                version = db.stored_version(tx)  # another writer may have upgraded meanwhile
                self._refuse_newer(version)
                for step in range(version, SCHEMA_VERSION):
                    prepare = MIGRATIONS[step].prepare
                    if prepare:
                        prepare(tx)
                    for statement in _statements(migration_sql(step, db.dialect)):
                        tx.execute(statement)
                if version != SCHEMA_VERSION:
                    db.set_version(tx, SCHEMA_VERSION)

        try:
            db.open()
            version = db.stored_version()
            self._refuse_newer(version)
            if version == SCHEMA_VERSION:
                return
            db.retrying(upgrade)
        except Exception as exc:
            if not _is_database_error(exc):
                raise
            if _is_locked(exc):
                raise StoreError(f"results store {self.name} stayed locked by other writers "
                                 f"through {LOCK_RETRIES + 1} waits of {BUSY_TIMEOUT_S:g} s"
                                 ) from None
            if _is_full_or_io(exc):
                raise StoreError(self._failed(exc, "cannot be opened")) from None
            what = (" is not a usable SQLite file" if isinstance(db, _Sqlite)
                    else ": schema not usable")
            raise StoreError(f"results store {self.name}{what}: "
                             f"{str(exc).splitlines()[0]}") from None

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(f"results store {self.name} has schema {version}, newer than "
                             f"this edge ({SCHEMA_VERSION}); upgrade edge")

    def add_run(self, run: StoredRun) -> None:
        """Store ``run`` whole in one transaction; a run id already stored is refused."""
        for tag in run.tags:
            _check_tag_name(tag)
        records = [{"run_id": run.run_id, "target": r.target, "variant": r.variant,
                    "status": r.status.value, "record": record_json(r.to_dict())}
                   for r in run.results]

        def write() -> None:
            with self._db.transaction() as tx:
                tx.execute(
                    f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (:run_id, :created_at, "
                    ":model_name, :model_path, :model_sha256, :report_dir, :git_commit)",
                    {"run_id": run.run_id, "created_at": run.created_at,
                     "model_name": run.model_name, "model_path": run.model_path,
                     "model_sha256": run.model_sha256, "report_dir": run.report_dir,
                     "git_commit": run.git_commit})
                if records:
                    tx.execute(
                        "INSERT INTO results (run_id, target, variant, status, record) "
                        f"VALUES (:run_id, :target, :variant, :status, "
                        f"{self._db.json_param('record')})", records)
                for tag in run.tags:
                    tx.execute(_UPSERT_TAG, {"name": tag, "run_id": run.run_id})

        try:
            self._db.retrying(write)
        except Exception as exc:  # sqlite3.Error or the PostgreSQL driver's errors
            if not _is_database_error(exc):
                raise
            raise StoreError(self._failed(exc, f"run {run.run_id} not stored")) from None

    def resolve(self, ref: str) -> str:
        """A run id, a tag, or ``latest`` -> the run id; a :class:`UsageError` when unknown."""
        order = self._db.order_column
        if ref == "latest":
            rows = self._rows(
                f"SELECT run_id FROM runs ORDER BY created_at DESC, {order} DESC LIMIT 1")
            if not rows:
                raise UsageError(f"results store {self.name} holds no runs yet")
            return str(rows[0][0])
        rows = self._rows("SELECT run_id FROM runs WHERE run_id = :ref", {"ref": ref})
        if not rows:
            rows = self._rows("SELECT run_id FROM tags WHERE name = :ref", {"ref": ref})
        if not rows:
            raise UsageError(f"no run or tag {ref!r} in {self.name}; see edge runs list")
        return str(rows[0][0])

    def get_run(self, ref: str) -> StoredRun:
        """The run named by ``ref`` (id, tag or ``latest``) with all its records."""
        run_id = self.resolve(ref)
        row = self._rows(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = :id",
                            {"id": run_id})[0]
        records = self._rows(
            f"SELECT record FROM results WHERE run_id = :id "
            f"ORDER BY target, {self._db.order_column}", {"id": run_id})
        try:
            # PostgreSQL's driver hands JSONB over already parsed; SQLite gives the text.
            results = [ResultRecord.from_dict(record if isinstance(record, dict)
                                              else json.loads(record))
                       for (record,) in records]
        except (ValueError, TypeError, AttributeError) as exc:  # json's errors are ValueErrors
            raise StoreError(f"results store {self.name}: run {run_id} has an unreadable "
                             f"result record: {exc}") from None
        return StoredRun(run_id=row[0], created_at=row[1], model_name=row[2], model_path=row[3],
                         model_sha256=row[4], report_dir=row[5], git_commit=row[6],
                         tags=self._tags_of(run_id), results=results)

    def has_run(self, run_id: str) -> bool:
        return bool(self._rows("SELECT 1 FROM runs WHERE run_id = :id", {"id": run_id}))

    def run_ids(self) -> list[str]:
        return [row[0] for row in self._rows(
            f"SELECT run_id FROM runs ORDER BY created_at, {self._db.order_column}")]

    def list_runs(self, *, limit: int | None = None,
                  model_name: str | None = None) -> list[RunSummary]:
        """Newest first, without loading any record (fast on stores of thousands of runs)."""
        where, params = ("WHERE r.model_name = :model", {"model": model_name}) if model_name \
            else ("", {})
        agg, order = self._db.agg, self._db.order_column
        rows = self._rows(
            f"""SELECT r.run_id, r.created_at, r.model_name, r.model_sha256, r.git_commit,
                       (SELECT {agg("target")} FROM results s WHERE s.run_id = r.run_id),
                       (SELECT {agg("variant")} FROM results s WHERE s.run_id = r.run_id),
                       (SELECT COUNT(*) FROM results s
                            WHERE s.run_id = r.run_id AND s.status != 'ok'),
                       (SELECT {agg("name")} FROM tags t WHERE t.run_id = r.run_id)
                FROM runs r {where}
                ORDER BY r.created_at DESC, r.{order} DESC
                {"" if limit is None else "LIMIT :limit"}""",
            {**params, **({} if limit is None else {"limit": limit})})
        return [RunSummary(run_id=row[0], created_at=row[1], model_name=row[2],
                           model_sha256=row[3], git_commit=row[4],
                           targets=tuple(sorted((row[5] or "").split(",")) if row[5] else ()),
                           variants=tuple(row[6].split(",")) if row[6] else (),
                           failed=int(row[7]),
                           tags=tuple(sorted(row[8].split(","))) if row[8] else ())
                for row in rows]

    def latency_history(self, model_name: str, *, until: str,
                        limit: int = HISTORY_ROWS) -> list[EarlierLatency]:
        """Sound latency summaries of ``model_name``'s runs created at or before ``until``,
        newest first: what ``edge check`` learns the spread between runs from.

        Sound: measured (status ok), not INVALID on the board, with a median and a p99.
        Only the few fields needed are read out of each record (never its raw samples).
        """
        def field(name: str) -> str:
            return self._db.json_text("s.record", *STORED_PATHS[name])

        rows = self._rows(
            f"""SELECT s.run_id, r.created_at, s.target, s.variant, {field("sha256")},
                       {", ".join(field(fact) for fact in BOARD_IDENTITY)},
                       {field("p50_ms")}, {field("p99_ms")}
                FROM results s JOIN runs r ON r.run_id = s.run_id
                WHERE r.model_name = :model AND r.created_at <= :until AND s.status = 'ok'
                  AND COALESCE({field("verdict")}, '') != 'INVALID'
                ORDER BY r.created_at DESC, r.{self._db.order_column} DESC
                LIMIT :limit""",
            {"model": model_name, "until": until, "limit": limit})
        return [EarlierLatency(run_id=row[0], created_at=row[1], target=row[2], variant=row[3],
                               sha256=str(row[4] or ""),
                               board=tuple(str(x or "") for x in row[5:8]),
                               p50_ms=float(row[8]), p99_ms=float(row[9]))
                for row in rows if row[8] is not None and row[9] is not None
                and float(row[8]) > 0 and float(row[9]) > 0]

    def tag(self, name: str, ref: str) -> str:
        """Point tag ``name`` at the run ``ref`` (moving it if it exists); return the run id."""
        _check_tag_name(name)
        run_id = self.resolve(ref)
        if self._rows("SELECT 1 FROM runs WHERE run_id = :name", {"name": name}):
            raise UsageError(f"tag {name!r} would hide a run id; choose another name")
        def write() -> None:
            with self._db.transaction() as tx:
                tx.execute(_UPSERT_TAG, {"name": name, "run_id": run_id})

        try:
            self._db.retrying(write)
        except Exception as exc:
            if not _is_database_error(exc):
                raise
            raise StoreError(self._failed(exc, f"tag {name} not written")) from None
        return run_id

    def _rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """``rows``, waiting out writers; a database error is one line (:class:`StoreError`)."""
        try:
            return self._db.retrying(lambda: self._db.rows(sql, params))
        except Exception as exc:
            if not _is_database_error(exc):
                raise
            raise StoreError(self._failed(exc, "cannot be read")) from None

    def _failed(self, exc: Exception, what: str) -> str:
        """One line: ``results store X is damaged (why): what`` or ``results store X: what:
        why`` (``database or disk is full``)."""
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if _is_damaged(exc):
            return f"results store {self.name} is damaged ({reason}): {what}"
        return f"results store {self.name}: {what}: {reason}"

    def _tags_of(self, run_id: str) -> tuple[str, ...]:
        return tuple(row[0] for row in self._rows(
            "SELECT name FROM tags WHERE run_id = :id ORDER BY name", {"id": run_id}))


# Both SQLite (3.24+) and PostgreSQL take this upsert; a moved tag keeps its first date.
_UPSERT_TAG = ("INSERT INTO tags (name, run_id) VALUES (:name, :run_id) "
               "ON CONFLICT (name) DO UPDATE SET run_id = excluded.run_id")


def _is_database_error(exc: Exception) -> bool:
    if isinstance(exc, sqlite3.Error):
        return True
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:
        return False
    return isinstance(exc, SQLAlchemyError)


def _check_tag_name(name: str) -> None:
    if not _TAG_NAME.match(name) or name == "latest":
        raise UsageError(f"tag {name!r} must start with a letter, use only letters, digits "
                         "and . _ / -, and not be 'latest'")


def _statements(script: str) -> list[str]:
    """Split a migration into statements (none of ours contains a ``;`` inside a literal)."""
    return [part.strip() for part in script.split(";") if part.strip()]


#: ``run.json`` in a run folder: the run without its records (those are ``results.json``),
#: so that a run the store could not take can be imported later (``edge runs import DIR``).
RUN_FOLDER_FORMAT = "edge-run-folder"
RUN_FOLDER_VERSION = 1


def run_folder_files(run: StoredRun) -> dict[str, str]:
    """The files that make ``run`` importable from its folder: ``run.json`` and
    ``results.json`` (the records, as the store keeps them), by name."""
    meta = {key: value for key, value in run.to_dict().items() if key != "results"}
    document = {"format": RUN_FOLDER_FORMAT, "version": RUN_FOLDER_VERSION, "run": meta}
    return {"run.json": json.dumps(document, indent=1) + "\n",
            "results.json": json.dumps([r.to_dict() for r in run.results], indent=2) + "\n"}


def load_run_folder(folder: Path) -> StoredRun:
    """The run a run folder holds (``run.json`` and ``results.json``), its ``report_dir``
    that folder; a :class:`UsageError` naming the file when it is missing or malformed.

    Example: ``store.add_run(load_run_folder(Path("edge-out/runs/20261201-101500-ab12cd")))``
    """
    documents = []
    for name in ("run.json", "results.json"):
        path = folder / name
        try:
            documents.append(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            hint = (" (written by edge since the store keeps runs it could not store)"
                    if name == "run.json" else "")
            raise UsageError(f"{folder} is not an edge run folder: no {name}{hint}") from None
        except OSError as exc:
            raise UsageError(f"{path} cannot be read: {exc.strerror or exc}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"{path} is not JSON: {exc}") from None
    document, results = documents
    if not isinstance(document, dict) or document.get("format") != RUN_FOLDER_FORMAT:
        raise UsageError(f"{folder / 'run.json'} is not an edge run description")
    if document.get("version") != RUN_FOLDER_VERSION:
        raise UsageError(f"{folder / 'run.json'} has version {document.get('version')!r}; "
                         f"this edge reads {RUN_FOLDER_VERSION}")
    try:
        return StoredRun.from_dict({**document["run"], "report_dir": str(folder),
                                    "results": results})
    except KeyError as exc:
        raise UsageError(f"{folder / 'run.json'} is missing {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"{folder} holds a malformed run: {exc}") from None


def import_run_folder(store: ResultsStore, folder: Path) -> tuple[StoredRun, bool]:
    """Store the run in ``folder`` (see :func:`load_run_folder`); ``False`` when ``store``
    already holds it (importing twice changes nothing)."""
    run = load_run_folder(folder)
    if store.has_run(run.run_id):
        return run, False
    store.add_run(run)
    return run, True


EXPORT_FORMAT = "edge-run"
EXPORT_VERSION = 1
CSV_COLUMNS = ("run_id", "created_at", "model_name", "model_sha256", "git_commit", "target",
               "variant", "status", "recipe", "size_bytes", "accuracy", "runs", "p50_ms",
               "p90_ms", "p99_ms", "mean_ms", "peak_rss_bytes", "energy_per_inference_mj",
               "runtime", "board_machine", "board_cpu_model", "error")


def export_json(run: StoredRun) -> str:
    """The whole run, raw samples included: what ``edge check --baseline FILE`` reads back."""
    document = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "run": run.to_dict()}
    return json.dumps(document, indent=1) + "\n"


def export_csv(run: StoredRun) -> str:
    """One row per target x variant with the summary figures (no raw samples)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in run.results:
        board = record.board or {}
        writer.writerow({
            "run_id": run.run_id, "created_at": run.created_at, "model_name": run.model_name,
            "model_sha256": run.model_sha256, "git_commit": run.git_commit or "",
            "target": record.target, "variant": record.variant,
            "status": record.status.value, "recipe": record.config.get("recipe", ""),
            "size_bytes": _blank(record.size_bytes), "accuracy": _blank(record.accuracy),
            "runs": _blank(record.runs), "p50_ms": _blank(record.latency("p50")),
            "p90_ms": _blank(record.latency("p90")), "p99_ms": _blank(record.latency("p99")),
            "mean_ms": _blank(record.latency("mean")),
            "peak_rss_bytes": _blank(record.peak_rss_bytes),
            "energy_per_inference_mj": _blank(record.energy_per_inference_mj),
            "runtime": record.runtime, "board_machine": board.get("machine", ""),
            "board_cpu_model": board.get("cpu_model", ""), "error": record.error or "",
        })
    return buffer.getvalue()


def load_export(path: Path) -> StoredRun:
    """Read a file written by :func:`export_json` (a baseline kept in the user's repository)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"baseline file {path} cannot be read: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"baseline file {path} is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise UsageError(f"baseline file {path} is not an edge run export; write one with "
                         "edge runs export RUN --format json -o FILE")
    if document.get("version") != EXPORT_VERSION:
        raise UsageError(f"baseline file {path} has export version {document.get('version')!r}; "
                         f"this edge reads {EXPORT_VERSION}")
    try:
        return StoredRun.from_dict(document["run"])
    except KeyError as exc:
        raise UsageError(f"baseline file {path} is missing {exc} in its run") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"baseline file {path} has a malformed run: {exc}") from None


def _blank(value: Any) -> Any:
    return "" if value is None else value
