"""Store figures: a PostgreSQL store upgraded in place and written by 2 controllers (issue 18);
SQLite written by 8 (issue 26).

Prints:

1. A schema-2 database exactly as today's edge writes it (its DDL, records as JSON text,
   one holding an SQNR of inf), with a few runs: counts before, then opened by this edge
   (schema 3, records JSONB): counts after, and whether every row reads back the same.
2. The same kind of schema-2 database written by ``--writers`` controller processes at once,
   ``--runs`` runs each (2 result records per run), each process opening the store per run
   as ``edge deploy`` does, so their first opens race to upgrade it: runs present out of
   expected, duplicates, old rows intact, wall time.
3. The same race on an empty database (both create the schema).

With ``--sqlite``, instead: ``--writers`` processes (default 8) store ``--runs`` runs each
(default 60) into one SQLite file at once, each run protocol-sized (2 records of
``MAX_RAW_SAMPLES`` raw latency samples, as big as an agent answer may make them), each
process opening the store per run as ``edge deploy`` does: runs lost (``add_run`` refused
them) out of the total, runs present, wall time.

A private PostgreSQL server is started as in tests/postgres.py (needs root and Debian's
postgresql package), unless ``--url`` names a server whose user may create databases.

    python benchmarks/store_writers.py [--runs 200] [--writers 2] [--url postgresql://...]
    python benchmarks/store_writers.py --sqlite [--runs 60] [--writers 8]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.postgres import SCHEMA_2_DDL, postgres_server  # noqa: E402
from tests.postgres import unavailable as postgres_unavailable  # noqa: E402
from tests.records import make_run, record  # noqa: E402
from toolkit.results.record import ResultRecord  # noqa: E402
from toolkit.results.schema import record_json  # noqa: E402
from toolkit.results.store import ResultsStore, StoredRun  # noqa: E402

#: One controller: waits for the common start, then stores its runs one ``edge deploy`` each.
WRITER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from tests.records import make_run, record
from toolkit.results.store import ResultsStore
url, who, count, start = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
time.sleep(max(0.0, start - time.time()))
for index in range(count):
    with ResultsStore(url) as store:
        store.add_run(make_run(f"{who}-{index:04d}", [record("fp32", seed=index),
                                                      record("int8", seed=index + 1)],
                               created_at=f"2026-12-01T{index // 3600 % 24:02d}:"
                                          f"{index // 60 % 60:02d}:{index % 60:02d}+00:00"))
"""

#: One SQLite writer: stores its runs, counting (not stopping at) the ones the store refuses.
SQLITE_WRITER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from device_agent.protocol import MAX_RAW_SAMPLES
from tests.records import make_run, record
from toolkit.errors import StoreError
from toolkit.results.store import ResultsStore
from pathlib import Path
path, who, count, start = Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
runs = [make_run(f"{who}-{index:04d}",
                 [record("fp32", seed=index, n=MAX_RAW_SAMPLES),
                  record("int8", seed=index + 1, n=MAX_RAW_SAMPLES)])
        for index in range(count)]
time.sleep(max(0.0, start - time.time()))
lost = []
for run in runs:
    try:
        with ResultsStore(path) as store:
            store.add_run(run)
    except StoreError as exc:
        lost.append(str(exc))
print(len(lost))
for line in sorted(set(lost))[:3]:
    print(line, file=sys.stderr)
"""


def sqlite_race(path: Path, writers: int, runs: int) -> str:
    names = [f"w{n}" for n in range(writers)]
    start = time.time() + 8.0 + 0.2 * runs  # every process has built its runs and waits
    processes = [subprocess.Popen([sys.executable, "-c", SQLITE_WRITER, str(REPO), str(path),
                                   name, str(runs), str(start)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name in names]
    lost, crashed, messages = 0, 0, set()
    for process in processes:
        out, err = process.communicate(timeout=3600)
        if process.returncode:
            crashed += 1
            messages.add(err.strip().splitlines()[-1] if err.strip() else "no message")
        else:
            lost += int(out.split()[0])
            messages.update(line for line in err.splitlines() if line.strip())
    wall = time.time() - start
    expected = {f"{name}-{index:04d}" for name in names for index in range(runs)}
    with ResultsStore(path) as store:
        present = len(expected & set(store.run_ids()))
    total = len(expected)
    return (f"{total - present}/{total} runs lost ({lost} refused by the store, {crashed} "
            f"writers crashed), {present}/{total} present, file "
            f"{path.stat().st_size / 1e6:.0f} MB, wall {wall:.1f} s"
            + (f"; e.g. {sorted(messages)[0]}" if messages else ""))


def old_runs() -> list[StoredRun]:
    """What a lab's database held before the upgrade: three runs, one record with inf."""
    odd = record("int8", seed=9, size=30_000)
    odd["details"] = {"sqnr_db": float("inf")}
    return [make_run("old-1", [record("fp32", seed=1), odd],
                     created_at="2026-11-20T10:00:00+00:00", tags=("nightly",)),
            make_run("old-2", [record("fp32", seed=2), record("int8", seed=3)],
                     created_at="2026-11-21T10:00:00+00:00"),
            make_run("old-3", [record("fp32", seed=4), record("int8", seed=5)],
                     created_at="2026-11-22T10:00:00+00:00")]


@contextlib.contextmanager
def database(server: str) -> Iterator[str]:
    """A fresh database on ``server``, dropped afterwards."""
    import sqlalchemy

    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(server.replace("postgresql://", "postgresql+psycopg://"),
                                     isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


def sql(url: str, statement: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as connection:
            found = connection.execute(sqlalchemy.text(statement), params or {})
            return [tuple(row) for row in found] if found.returns_rows else []
    finally:
        engine.dispose()


def write_schema_2(url: str, runs: list[StoredRun]) -> None:
    """The DDL schema-2 edge ran, and its add_run's inserts (records as ``json.dumps``)."""
    for statement in SCHEMA_2_DDL.split(";"):
        if statement.strip():
            sql(url, statement)
    for run in runs:
        sql(url, "INSERT INTO runs (run_id, created_at, model_name, model_path, model_sha256, "
                 "report_dir, git_commit) VALUES (:run_id, :created_at, :model_name, "
                 ":model_path, :model_sha256, :report_dir, :git_commit)",
            {k: v for k, v in run.to_dict().items() if k not in ("tags", "results")})
        for result in run.results:
            sql(url, "INSERT INTO results (run_id, target, variant, status, record) "
                     "VALUES (:run_id, :target, :variant, :status, :record)",
                {"run_id": run.run_id, "target": result.target, "variant": result.variant,
                 "status": result.status.value, "record": json.dumps(result.to_dict())})
        for tag in run.tags:
            sql(url, "INSERT INTO tags (name, run_id) VALUES (:name, :run_id)",
                {"name": tag, "run_id": run.run_id})


def describe(url: str) -> str:
    counts = {table: sql(url, f"SELECT COUNT(*) FROM {table}")[0][0]
              for table in ("runs", "results", "tags")}
    version = sql(url, "SELECT version FROM edge_schema")[0][0]
    kind = sql(url, "SELECT data_type FROM information_schema.columns "
                    "WHERE table_name = 'results' AND column_name = 'record'")[0][0]
    return (f"schema {version}, {counts['runs']} runs, {counts['results']} results, "
            f"{counts['tags']} tags, record {kind}")


def intact(store: ResultsStore, runs: list[StoredRun]) -> bool:
    """Every old run reads back as it was stored (a non-finite figure now null)."""
    for run in runs:
        back = store.get_run(run.run_id)
        expected = [ResultRecord.from_dict(json.loads(record_json(r.to_dict())))
                    for r in run.results]
        if (back.results != expected or back.tags != run.tags
                or back.created_at != run.created_at or back.git_commit != run.git_commit):
            return False
    return True


def race(url: str, writers: int, runs: int, old: list[StoredRun]) -> str:
    names = [f"ctl{n}" for n in range(writers)]
    start = time.time() + 3.0  # every process imported and waiting: the first opens coincide
    processes = [subprocess.Popen([sys.executable, "-c", WRITER, str(REPO), url, name,
                                   str(runs), str(start)], stderr=subprocess.PIPE, text=True)
                 for name in names]
    failures = []
    for process in processes:
        _, err = process.communicate(timeout=3600)
        if process.returncode:
            failures.append(err.strip().splitlines()[-1] if err.strip() else "no message")
    wall = time.time() - start
    expected = {f"{name}-{index:04d}" for name in names for index in range(runs)}
    with ResultsStore(url) as store:
        stored = store.run_ids()
        present = len(expected & set(stored))
        duplicates = len(stored) - len(set(stored))
        results = sql(url, "SELECT COUNT(*) FROM results WHERE run_id NOT LIKE 'old-%'")[0][0]
        old_ok = "" if not old else f"old runs intact: {'yes' if intact(store, old) else 'NO'}, "
        version = store.schema_version
    return (f"{present}/{len(expected)} present, duplicates {duplicates}, results "
            f"{results}/{2 * len(expected)}, {old_ok}schema {version}, "
            f"wall {wall:.1f} s ({len(expected) / wall:.0f} runs/s), "
            f"writers failed: {len(failures)}{' ' + '; '.join(failures) if failures else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="runs per controller (200; --sqlite 60)")
    parser.add_argument("--writers", type=int,
                        help="controller processes (2; --sqlite 8)")
    parser.add_argument("--url", help="an existing server (postgresql://user@host:port/db)")
    parser.add_argument("--sqlite", action="store_true",
                        help="race --writers (8) x --runs (60) into one SQLite file instead")
    args = parser.parse_args()
    if args.sqlite:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            writers, runs = args.writers or 8, args.runs or 60
            found = sqlite_race(Path(folder) / "results.sqlite", writers, runs)
            print(f"SQLite {sqlite3.sqlite_version}: {writers} writers x {runs} protocol-sized "
                  f"runs into one file: {found}")
        return
    args.writers, args.runs = args.writers or 2, args.runs or 200
    with contextlib.ExitStack() as stack:
        if args.url:
            server = args.url
        else:
            reason = postgres_unavailable()
            if reason:
                sys.exit(f"store_writers: {reason}")
            server = stack.enter_context(postgres_server())
        print(f"PostgreSQL: {sql(server, 'SHOW server_version')[0][0]}")

        old = old_runs()
        with database(server) as url:
            write_schema_2(url, old)
            print(f"1. schema-2 database as today's edge writes it: {describe(url)}")
            began = time.perf_counter()
            with ResultsStore(url) as store:
                took = time.perf_counter() - began
                same = intact(store, old)
                history = len(store.latency_history("digits_cnn",
                                                    until="2026-12-31T00:00:00+00:00"))
            print(f"   opened by this edge ({took:.2f} s): {describe(url)}; rows intact: "
                  f"{'yes' if same else 'NO'}; latency_history: {history} records")

        with database(server) as url:
            write_schema_2(url, old)
            print(f"2. {args.writers} controllers x {args.runs} runs at once on a schema-2 "
                  f"database (they race to upgrade it): "
                  f"{race(url, args.writers, args.runs, old)}")

        with database(server) as url:
            print(f"3. {args.writers} controllers x {args.runs} runs at once on an empty "
                  f"database (they race to create it): "
                  f"{race(url, args.writers, args.runs, [])}")


if __name__ == "__main__":
    main()
