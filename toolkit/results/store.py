"""Stage 6: the results store, a SQLite file or a PostgreSQL database, with a versioned schema.

A run is stored only once its agent answers have been validated, in one
transaction, so the store never holds half a run.  Each result record
(:class:`toolkit.results.record.ResultRecord`, kept as its JSON) holds the target, board
facts, variant, recipe, metrics and raw latency samples; the run keeps its id,
time, model hash and the user's git commit.

The schema is defined once, as steps written for both dialects
(:mod:`toolkit.results.schema`).  Opening an older store migrates it forward step by step
in one transaction (on PostgreSQL under an advisory lock, since several controllers may
open it at once); a store from a newer edge is refused.

SQLite waits for other writers instead of giving up, so concurrent deploys into one file
all land (:mod:`toolkit.results.database`: WAL, a busy timeout, bounded retries).  Exports
and run folders are :mod:`toolkit.results.export`.

Example::

    with ResultsStore(path) as store:
        store.add_run(run)
        store.tag("baseline", run.run_id)
        store.resolve("baseline")   # -> run id
        store.get_run("baseline")
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from toolkit.errors import OutputError, StoreError, UsageError
from toolkit.results import database
from toolkit.results.database import (
    Database,
    Params,
    Row,
    Sqlite,
    connect_postgres,
    is_damaged,
    is_database_error,
    is_full_or_io,
    is_locked,
    mask_password,
)
from toolkit.results.facts import StoredRecord
from toolkit.results.record import BOARD_IDENTITY, STORED_PATHS, ResultRecord
from toolkit.results.schema import SCHEMA_VERSION, migrate, record_json

#: Rows :meth:`ResultsStore.latency_history` reads at most (newest first).
HISTORY_ROWS = 2_000

_TAG_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._/-]{0,99}$")
_RUN_COLUMNS = ("run_id, created_at, model_name, model_path, model_sha256, report_dir, "
                "git_commit")


class RunDocument(TypedDict):
    """A run as JSON (:meth:`StoredRun.to_dict`): what exports and run folders hold."""

    run_id: str
    created_at: str
    model_name: str
    model_path: str
    model_sha256: str
    report_dir: str
    git_commit: str | None
    tags: list[str]
    results: list[StoredRecord]


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

    def to_dict(self) -> RunDocument:
        return {"run_id": self.run_id, "created_at": self.created_at,
                "model_name": self.model_name, "model_path": self.model_path,
                "model_sha256": self.model_sha256, "report_dir": self.report_dir,
                "git_commit": self.git_commit, "tags": list(self.tags),
                "results": [record.to_dict() for record in self.results]}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> StoredRun:
        """The inverse of :meth:`to_dict`; a ``KeyError``/``TypeError``/``ValueError`` on a
        malformed dict."""
        commit = data.get("git_commit")
        return cls(run_id=str(data["run_id"]), created_at=str(data["created_at"]),
                   model_name=str(data["model_name"]), model_path=str(data["model_path"]),
                   model_sha256=str(data["model_sha256"]),
                   report_dir=str(data.get("report_dir", "")),
                   git_commit=_text(commit),
                   tags=tuple(str(tag) for tag in _array(data.get("tags", ()), "tags")),
                   results=[ResultRecord.from_dict(_object(record, "a result record"))
                            for record in _array(data["results"], "results")])

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
class FigurePoint:
    """One figure of one target x variant in one run (see :meth:`ResultsStore.figure_series`)."""

    run_id: str
    created_at: str
    model_name: str
    sha256: str
    verdict: str
    value: float
    #: The run's folder as stored (its ``report.html`` is there), for a link to the run.
    report_dir: str


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
    return mask_password(location)



class ResultsStore:
    """A results store, a SQLite file or a PostgreSQL database; use as a context manager.

    ``location`` is a path or a ``postgresql://user:password@host/db`` URL (several
    lab machines and CI runners writing to one database).
    """

    def __init__(self, location: Path | str, *, create: bool = True) -> None:
        self.location = location
        self.name = describe_store(location)
        if isinstance(location, str):
            self._db: Database = connect_postgres(location, self.name)
        else:
            if not create and not location.is_file():
                raise UsageError(f"no results store at {location}; run edge deploy first, or "
                                 "give --store / $EDGE_STORE / [tool.edge] store")
            try:
                location.parent.mkdir(parents=True, exist_ok=True)
                self._db = Sqlite(location)
            except (OSError, sqlite3.Error) as exc:
                raise OutputError(f"results store {location} cannot be opened: {exc}",
                                  path=location) from None
        try:
            self._migrate()
        except BaseException:
            self._db.close()
            raise

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
                migrate(db, tx, version)

        try:
            db.open()
            version = db.stored_version()
            self._refuse_newer(version)
            if version == SCHEMA_VERSION:
                return
            db.retrying(upgrade)
        except Exception as exc:
            if not is_database_error(exc):
                raise
            if is_locked(exc):
                raise StoreError(f"results store {self.name} stayed locked by other writers "
                                 f"through {database.LOCK_RETRIES + 1} waits of "
                                 f"{database.BUSY_TIMEOUT_S:g} s") from None
            if is_full_or_io(exc):
                raise StoreError(self._failed(exc, "cannot be opened")) from None
            what = (" is not a usable SQLite file" if isinstance(db, Sqlite)
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
        records: list[Params] = [
            {"run_id": run.run_id, "target": r.target, "variant": r.variant,
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
            if not is_database_error(exc):
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
                                              else json.loads(str(record)))
                       for (record,) in records]
        except (ValueError, TypeError, AttributeError) as exc:  # json's errors are ValueErrors
            raise StoreError(f"results store {self.name}: run {run_id} has an unreadable "
                             f"result record: {exc}") from None
        return StoredRun(run_id=str(row[0]), created_at=str(row[1]), model_name=str(row[2]),
                         model_path=str(row[3]), model_sha256=str(row[4]),
                         report_dir=str(row[5]), git_commit=_text(row[6]),
                         tags=self._tags_of(run_id), results=results)

    def has_run(self, run_id: str) -> bool:
        return bool(self._rows("SELECT 1 FROM runs WHERE run_id = :id", {"id": run_id}))

    def run_ids(self) -> list[str]:
        return [str(row[0]) for row in self._rows(
            f"SELECT run_id FROM runs ORDER BY created_at, {self._db.order_column}")]

    def list_runs(self, *, limit: int | None = None,
                  model_name: str | None = None) -> list[RunSummary]:
        """Newest first, without loading any record (fast on stores of thousands of runs)."""
        params: dict[str, str | int] = {"model": model_name} if model_name else {}
        where = "WHERE r.model_name = :model" if model_name else ""
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
        return [RunSummary(run_id=str(row[0]), created_at=str(row[1]), model_name=str(row[2]),
                           model_sha256=str(row[3]), git_commit=_text(row[4]),
                           targets=tuple(sorted(str(row[5]).split(","))) if row[5] else (),
                           variants=tuple(str(row[6]).split(",")) if row[6] else (),
                           failed=int(_number(row[7])),
                           tags=tuple(sorted(str(row[8]).split(","))) if row[8] else ())
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
        return [EarlierLatency(run_id=str(row[0]), created_at=str(row[1]), target=str(row[2]),
                               variant=str(row[3]), sha256=str(row[4] or ""),
                               board=tuple(str(x or "") for x in row[5:8]),
                               p50_ms=_number(row[8]), p99_ms=_number(row[9]))
                for row in rows if row[8] is not None and row[9] is not None
                and _number(row[8]) > 0 and _number(row[9]) > 0]

    def figure_series(self, target: str, variant: str, path: tuple[str, ...], *,
                      model_name: str | None = None) -> list[FigurePoint]:
        """The figure at ``path`` in the stored record (``("latency_ms", "p50")``) of every
        measured ``target``/``variant``, oldest run first; records without it are left out.

        Only the few fields needed are read out of each record (never its raw samples).
        """
        def field(*where: str) -> str:
            return self._db.json_text("s.record", *where)

        params: dict[str, str | int] = {"target": target, "variant": variant}
        if model_name is not None:
            params["model"] = model_name
        rows = self._rows(
            f"""SELECT s.run_id, r.created_at, r.model_name, {field(*STORED_PATHS["sha256"])},
                       {field(*STORED_PATHS["verdict"])}, {field(*path)}, r.report_dir
                FROM results s JOIN runs r ON r.run_id = s.run_id
                WHERE s.target = :target AND s.variant = :variant AND s.status = 'ok'
                  {"AND r.model_name = :model" if model_name is not None else ""}
                ORDER BY r.created_at, r.{self._db.order_column}""", params)
        return [FigurePoint(run_id=str(row[0]), created_at=str(row[1]), model_name=str(row[2]),
                            sha256=str(row[3] or ""), verdict=str(row[4] or ""),
                            value=_number(row[5]), report_dir=str(row[6]))
                for row in rows if row[5] is not None]

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
            if not is_database_error(exc):
                raise
            raise StoreError(self._failed(exc, f"tag {name} not written")) from None
        return run_id

    def _rows(self, sql: str, params: Params | None = None) -> list[Row]:
        """``rows``, waiting out writers; a database error is one line (:class:`StoreError`)."""
        try:
            return self._db.retrying(lambda: self._db.rows(sql, params))
        except Exception as exc:
            if not is_database_error(exc):
                raise
            raise StoreError(self._failed(exc, "cannot be read")) from None

    def _failed(self, exc: Exception, what: str) -> str:
        """One line: ``results store X is damaged (why): what`` or ``results store X: what:
        why`` (``database or disk is full``)."""
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if is_damaged(exc):
            return f"results store {self.name} is damaged ({reason}): {what}"
        return f"results store {self.name}: {what}: {reason}"

    def _tags_of(self, run_id: str) -> tuple[str, ...]:
        return tuple(str(row[0]) for row in self._rows(
            "SELECT name FROM tags WHERE run_id = :id ORDER BY name", {"id": run_id}))


# Both SQLite (3.24+) and PostgreSQL take this upsert; a moved tag keeps its first date.
_UPSERT_TAG = ("INSERT INTO tags (name, run_id) VALUES (:name, :run_id) "
               "ON CONFLICT (name) DO UPDATE SET run_id = excluded.run_id")


def _check_tag_name(name: str) -> None:
    if not _TAG_NAME.match(name) or name == "latest":
        raise UsageError(f"tag {name!r} must start with a letter, use only letters, digits "
                         "and . _ / -, and not be 'latest'")


def _text(value: object) -> str | None:
    """A nullable text column."""
    return None if value is None else str(value)


def _number(value: object) -> float:
    """A number column, or a number SQLite's ``json_extract`` or PostgreSQL's ``#>>`` read
    out of a record (the latter as text)."""
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"a number was expected in the results store, got {value!r}")


def _array(value: object, what: str) -> list[object]:
    """A JSON array of a run document."""
    if not isinstance(value, list | tuple):
        raise TypeError(f"{what} must be a list, got {type(value).__name__}")
    return list(value)


def _object(value: object, what: str) -> Mapping[str, object]:
    """A JSON object of a run document."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be an object, got {type(value).__name__}")
    return value
