"""Stage 6: the results store, one SQLite file.

A run is stored only once its agent answers have been validated, in one
transaction, so the store never holds half a run.

Example::

    with ResultsStore(path) as store:
        store.add_run(run)
        store.get_run(run.run_id)
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import OutputError, StoreError

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE runs (
    run_id       TEXT PRIMARY KEY,
    created_at   TEXT NOT NULL,
    model_name   TEXT NOT NULL,
    model_path   TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    report_dir   TEXT NOT NULL
);
CREATE TABLE results (
    run_id   TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    target   TEXT NOT NULL,
    variant  TEXT NOT NULL,
    status   TEXT NOT NULL,
    record   TEXT NOT NULL,  -- JSON: artifact facts, board facts, measurements
    PRIMARY KEY (run_id, target, variant)
);
"""


@dataclass(frozen=True, kw_only=True)
class StoredRun:
    run_id: str
    created_at: str
    model_name: str
    model_path: str
    model_sha256: str
    report_dir: str
    results: list[dict[str, Any]] = field(default_factory=list)


class ResultsStore:
    """A SQLite results store; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path)
        except (OSError, sqlite3.Error) as exc:
            raise OutputError(f"results store {path} cannot be opened: {exc}", path=path) from None
        self._db.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                with self._db:
                    self._db.executescript(_SCHEMA)
                    self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version > SCHEMA_VERSION:
                raise StoreError(f"results store {self.path} has schema {version}, newer than "
                                 f"this edge ({SCHEMA_VERSION}); upgrade edge")
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"results store {self.path} is not a usable SQLite file: {exc}") from None

    def add_run(self, run: StoredRun) -> None:
        try:
            with self._db:
                self._db.execute(
                    "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                    (run.run_id, run.created_at, run.model_name, run.model_path,
                     run.model_sha256, run.report_dir))
                self._db.executemany(
                    "INSERT INTO results VALUES (?, ?, ?, ?, ?)",
                    [(run.run_id, r["target"], r["variant"], r["status"], json.dumps(r))
                     for r in run.results])
        except sqlite3.Error as exc:
            raise StoreError(
                f"results store {self.path}: run {run.run_id} not stored: {exc}") from None

    def get_run(self, run_id: str) -> StoredRun:
        row = self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id!r} in {self.path}")
        records = self._db.execute(
            "SELECT record FROM results WHERE run_id = ? ORDER BY target, rowid",
            (run_id,)).fetchall()
        return StoredRun(run_id=row[0], created_at=row[1], model_name=row[2], model_path=row[3],
                         model_sha256=row[4], report_dir=row[5],
                         results=[json.loads(record) for (record,) in records])

    def run_ids(self) -> list[str]:
        return [row[0] for row in
                self._db.execute("SELECT run_id FROM runs ORDER BY created_at, run_id")]
