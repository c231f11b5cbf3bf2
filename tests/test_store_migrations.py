"""Schema migrations: a store of every older schema, SQLite or PostgreSQL, opened by this edge.

Older stores are built the way older edge built them: on SQLite by running the old steps
(:data:`toolkit.results.schema.MIGRATIONS` is history, never edited), on PostgreSQL from the DDL
schema-2 edge ran (``tests/postgres.SCHEMA_2_DDL``, a copy of its text).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from toolkit.errors import StoreError
from toolkit.results.record import ResultRecord
from toolkit.results.schema import SCHEMA_VERSION, migration_sql, record_json
from toolkit.results.store import ResultsStore

from .postgres import SCHEMA_2_DDL
from .records import make_run, record

Execute = Callable[[str, dict[str, Any]], None]


def odd_record() -> dict[str, Any]:
    """A sound record as Python's JSON wrote it: an SQNR of inf and a NaN (not JSON), and
    text that merely names them."""
    odd = record("int8", seed=7, size=30_000)
    odd["details"] = {"sqnr_db": float("inf"), "drift": float("nan"),
                      "note": "NaN and Infinity stay text here"}
    return odd


#: What each older schema holds: runs (with or without a commit), results, tags.
RUNS = [("o1", "2026-01-01T00:00:00+00:00", [record("fp32", seed=1), odd_record()]),
        ("o2", "2026-01-02T00:00:00+00:00", [record("fp32", seed=2, median_ms=2.0)])]


def fill_old(execute: Execute, version: int) -> None:
    """Rows in the shapes schema ``version`` edge wrote (nothing at 0: an empty store)."""
    if version == 0:
        return
    for run_id, created_at, results in RUNS:
        columns = "run_id, created_at, model_name, model_path, model_sha256, report_dir"
        values = {"run_id": run_id, "created_at": created_at, "model": "digits_cnn",
                  "path": "/m.py", "sha": "f" * 64, "dir": f"edge-out/runs/{run_id}"}
        if version >= 2:
            columns += ", git_commit"
            values["commit"] = "abc"
        execute(f"INSERT INTO runs ({columns}) VALUES (:run_id, :created_at, :model, :path, "
                f":sha, :dir{', :commit' if version >= 2 else ''})", values)
        for result in results:
            execute("INSERT INTO results (run_id, target, variant, status, record) "
                    "VALUES (:run_id, :target, :variant, :status, :record)",
                    {"run_id": run_id, "target": result["target"],
                     "variant": result["variant"], "status": result["status"],
                     "record": json.dumps(result)})  # as old edge did: NaN, Infinity
    if version >= 2:
        execute("INSERT INTO tags (name, run_id) VALUES ('nightly', 'o1')", {})


def assert_upgraded_intact(store: ResultsStore, version: int) -> None:
    assert store.schema_version == SCHEMA_VERSION == 3
    if version == 0:
        assert store.run_ids() == []
    else:
        assert store.run_ids() == ["o1", "o2"]
        for run_id, created_at, results in RUNS:
            run = store.get_run(run_id)
            assert run.created_at == created_at and run.model_sha256 == "f" * 64
            assert run.git_commit == ("abc" if version >= 2 else None)
            expected = [ResultRecord.from_dict(json.loads(record_json(r))) for r in results]
            assert sorted(run.results, key=lambda r: r.variant) == expected
        odd = store.get_run("o1").results[1].to_dict()["details"]
        assert odd == {"sqnr_db": None, "drift": None, "note": "NaN and Infinity stay text here"}
        assert store.get_run("o1").tags == (("nightly",) if version >= 2 else ())
        found = store.latency_history("digits_cnn", until="2026-12-01T00:00:00+00:00")
        assert [e.run_id for e in found] == ["o2", "o1", "o1"]
        assert {(e.variant, e.p50_ms) for e in found if e.run_id == "o1"} == {
            (r["variant"], r["latency_ms"]["p50"]) for r in RUNS[0][2]}
    # The upgraded store takes new runs, a non-finite figure among them, and new tags.
    store.add_run(make_run("n1", [odd_record()], created_at="2026-02-01T00:00:00+00:00",
                           tags=("after",)))
    assert store.get_run("after").results[0].to_dict()["details"]["sqnr_db"] is None
    assert store.resolve("latest") == "n1"


@pytest.mark.parametrize("version", range(SCHEMA_VERSION))
def test_a_sqlite_store_of_every_older_schema_is_upgraded_with_every_row_intact(
        tmp_path: Path, version: int) -> None:
    path = tmp_path / f"v{version}.sqlite"
    with sqlite3.connect(path) as db:
        def execute(sql: str, params: dict[str, Any]) -> None:
            db.execute(sql, params)

        for step in range(version):
            db.executescript(migration_sql(step, "sqlite"))
        fill_old(execute, version)
        db.execute(f"PRAGMA user_version = {version}")
    db.close()
    with ResultsStore(path) as store:
        assert_upgraded_intact(store, version)
    with ResultsStore(path) as store:  # reopening migrates nothing twice
        assert store.schema_version == SCHEMA_VERSION and len(store.run_ids()) == (
            1 if version == 0 else 3)


@contextmanager
def connection(url: str) -> Iterator[Any]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def script(execute: Execute, sql: str) -> None:
    for statement in sql.split(";"):
        if statement.strip():
            execute(statement, {})


def old_postgres(url: str, version: int) -> None:
    """A database as schema-``version`` edge left it: schema 2 from its own DDL text, 1 from
    the first step (never shipped alone on PostgreSQL; kept reachable), 0 empty."""
    import sqlalchemy

    with connection(url) as conn:
        def execute(sql: str, params: dict[str, Any]) -> None:
            conn.execute(sqlalchemy.text(sql), params)

        if version == 2:
            script(execute, SCHEMA_2_DDL)
        elif version == 1:
            script(execute, migration_sql(0, "postgresql"))
            script(execute, "CREATE TABLE edge_schema (version INTEGER NOT NULL);"
                            "INSERT INTO edge_schema VALUES (1)")
        fill_old(execute, version)


@pytest.mark.parametrize("version", range(SCHEMA_VERSION))
def test_a_postgres_store_of_every_older_schema_is_upgraded_with_every_row_intact(
        postgres_store: str, version: int) -> None:
    old_postgres(postgres_store, version)
    with ResultsStore(postgres_store) as store:
        assert_upgraded_intact(store, version)
    with connection(postgres_store) as conn:
        import sqlalchemy

        kind = conn.execute(sqlalchemy.text(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'results' AND column_name = 'record'")).scalar()
        p50 = conn.execute(sqlalchemy.text(  # what labs query: JSON fields in plain SQL
            "SELECT (record -> 'latency_ms' ->> 'p50')::float FROM results "
            "WHERE run_id = 'n1'")).scalar()
    assert kind == "jsonb" and p50 is not None and p50 > 0


def catalog(url: str) -> dict[str, Any]:
    """Tables, columns, defaults, indexes and constraints of a database's public schema."""
    import sqlalchemy

    with connection(url) as conn:
        def rows(sql: str) -> list[tuple[Any, ...]]:
            return sorted(tuple(row) for row in conn.execute(sqlalchemy.text(sql)))

        return {
            "columns": rows("SELECT table_name, ordinal_position, column_name, data_type, "
                            "column_default, is_nullable FROM information_schema.columns "
                            "WHERE table_schema = 'public'"),
            "indexes": rows("SELECT indexname, indexdef FROM pg_indexes "
                            "WHERE schemaname = 'public'"),
            "constraints": rows("SELECT conrelid::regclass::text, conname, "
                                "pg_get_constraintdef(oid) FROM pg_constraint "
                                "WHERE connamespace = 'public'::regnamespace"),
        }


def test_postgres_steps_to_2_make_exactly_the_schema_2_edge_created(postgres_store: str) -> None:
    # Old databases (made at once by schema-2 DDL) and new ones (made step by step) must be
    # the same, so that every later step finds the same tables.
    old_postgres(postgres_store, 2)
    made_by_schema_2_edge = catalog(postgres_store)
    import sqlalchemy

    with connection(postgres_store) as conn:
        def execute(sql: str, params: dict[str, Any]) -> None:
            conn.execute(sqlalchemy.text(sql), params)

        execute("DROP TABLE tags, results, runs, edge_schema", {})
        execute("CREATE TABLE edge_schema (version INTEGER NOT NULL)", {})
        for step in (0, 1):
            script(execute, migration_sql(step, "postgresql"))
    assert catalog(postgres_store) == made_by_schema_2_edge
    assert made_by_schema_2_edge["indexes"]  # the comparison saw the tables


def test_both_dialects_describe_the_same_tables_columns_and_indexes(
        tmp_path: Path, postgres_store: str) -> None:
    path = tmp_path / "s.sqlite"
    ResultsStore(path).close()
    ResultsStore(postgres_store).close()
    with sqlite3.connect(path) as db:
        tables = [name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        sqlite_columns = {table: [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
                          for table in tables}
        sqlite_indexes = sorted(name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
    db.close()
    postgres = catalog(postgres_store)
    postgres_columns: dict[str, list[str]] = {}
    for table, _, column, *_ in sorted(postgres["columns"]):
        if table != "edge_schema" and column != "seq":  # its version table; rowid's stand-in
            postgres_columns.setdefault(table, []).append(column)
    postgres_indexes = sorted(name for name, _ in postgres["indexes"]
                              if not name.endswith(("_pkey", "_key")))
    assert sqlite_columns == postgres_columns and set(tables) == {"runs", "results", "tags"}
    assert sqlite_indexes == postgres_indexes == ["runs_by_model", "runs_by_time"]


def test_a_postgres_store_from_a_newer_edge_is_refused(postgres_store: str) -> None:
    import sqlalchemy

    with connection(postgres_store) as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE edge_schema (version INTEGER NOT NULL)"))
        conn.execute(sqlalchemy.text("INSERT INTO edge_schema VALUES (99)"))
    with pytest.raises(StoreError, match="has schema 99, newer than this edge"):
        ResultsStore(postgres_store)


def test_the_readme_trend_query_reads_p50_over_time_from_jsonb(postgres_store: str) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    query = readme.split("```sql\n", 1)[1].split("```", 1)[0]
    earlier, later = record("int8", target="rpi4", median_ms=3.0), record("int8", target="rpi4")
    with ResultsStore(postgres_store) as store:
        store.add_run(make_run("t2", [later], created_at="2026-11-23T00:00:00+00:00"))
        store.add_run(make_run("t1", [earlier, record("fp32", target="rpi4")],
                               created_at="2026-11-22T00:00:00+00:00"))
    import sqlalchemy

    with connection(postgres_store) as conn:
        trend = [tuple(row) for row in conn.execute(sqlalchemy.text(query))]
    assert trend == [("2026-11-22T00:00:00+00:00", "c0ffee", earlier["latency_ms"]["p50"]),
                     ("2026-11-23T00:00:00+00:00", "c0ffee", later["latency_ms"]["p50"])]
