"""The results store's schema: written once, as steps, for SQLite and PostgreSQL alike.

The schema is defined once, as steps (:data:`MIGRATIONS`) written for both dialects;
:func:`migrate` applies the steps a store lacks inside the transaction the store opened
for it (:meth:`toolkit.results.database.Database.migration`).  Its version lives in
``PRAGMA user_version`` (SQLite) or the ``edge_schema`` table (PostgreSQL, where records
are JSONB, open to SQL).  :data:`MIGRATIONS` is history: a step, once shipped, is never
edited; a change is a new step.

Records are stored as strict JSON (:func:`record_json`).

Example::

    migration_sql(0, "postgresql")   # the first step's DDL as PostgreSQL runs it
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from toolkit.results.database import Database, Writer


@dataclass(frozen=True)
class Migration:
    """One step of the schema, from version ``n`` to ``n + 1``, for both dialects.

    ``sql`` is written once; the few words the dialects spell differently are ``{names}``
    from :data:`DIALECTS`.  ``prepare`` runs first in the same transaction, for rewrites
    SQL alone cannot do safely.
    """

    sql: str
    prepare: Callable[[Writer], None] | None = None


def _finite_records(tx: Writer) -> None:
    """Rewrite stored records that hold ``NaN``/``Infinity``: Python's JSON writes them, but
    they are not JSON (PostgreSQL's JSONB and SQLite's json_extract reject the whole record)."""
    rows = tx.rows("SELECT run_id, target, variant, record FROM results "
                   "WHERE record LIKE '%NaN%' OR record LIKE '%Infinity%'")
    for run_id, target, variant, text in rows:
        try:
            fixed = record_json(json.loads(str(text)))
        except ValueError:  # not JSON at all: left as it is, reported when read
            continue
        if fixed != text:
            tx.execute("UPDATE results SET record = :record WHERE run_id = :run_id "
                       "AND target = :target AND variant = :variant",
                       {"record": fixed, "run_id": str(run_id), "target": str(target),
                        "variant": str(variant)})


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


def record_json(record: Mapping[str, object]) -> str:
    """``record`` as strict JSON: a non-finite float (an SQNR of ``inf``) is stored as null,
    the same on both dialects, since JSON has no such number."""
    return json.dumps(_finite(record), allow_nan=False)


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def migrate(db: Database, tx: Writer, version: int) -> None:
    """Take the store in ``tx`` from schema ``version`` to :data:`SCHEMA_VERSION`."""
    for step in range(version, SCHEMA_VERSION):
        prepare = MIGRATIONS[step].prepare
        if prepare:
            prepare(tx)
        for statement in _statements(migration_sql(step, db.dialect)):
            tx.execute(statement)
    if version != SCHEMA_VERSION:
        db.set_version(tx, SCHEMA_VERSION)


def _statements(script: str) -> list[str]:
    """Split a migration into statements (none of ours contains a ``;`` inside a literal)."""
    return [part.strip() for part in script.split(";") if part.strip()]
