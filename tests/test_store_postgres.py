"""The results store on a real PostgreSQL server: same behaviour as SQLite, shared by writers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli.main import main
from toolkit.errors import StoreError, UsageError
from toolkit.model.project import resolve_store_path
from toolkit.results.schema import SCHEMA_VERSION
from toolkit.results.store import ResultsStore, describe_store, store_location

from .records import make_run, record

REPO = Path(__file__).resolve().parent.parent


def test_a_url_is_a_store_location_and_its_password_is_never_shown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql://lab:hunter2@db.lab:5432/edge"
    assert store_location(url) == url and store_location("a/b.sqlite") == Path("a/b.sqlite")
    assert describe_store(url) == "postgresql://lab:***@db.lab:5432/edge"
    monkeypatch.setenv("EDGE_STORE", url)
    assert resolve_store_path(None, default=Path("x")) == url


def test_runs_tags_and_listing_work_as_on_sqlite(postgres_store: str) -> None:
    with ResultsStore(postgres_store) as store:
        assert store.schema_version == SCHEMA_VERSION
        store.add_run(make_run("r1", [record("fp32"), record("int8", target="rpi4")],
                               created_at="2026-11-22T20:00:00+00:00", tags=("nightly",)))
        store.add_run(make_run("r2", [record("fp32")], created_at="2026-11-22T21:00:00+00:00"))
        assert store.resolve("latest") == "r2" and store.resolve("nightly") == "r1"
        store.tag("nightly", "r2")  # a tag moves
        assert store.resolve("nightly") == "r2"
        run = store.get_run("r1")
        assert [r.variant for r in run.results] == ["fp32", "int8"]
        summaries = store.list_runs()
        assert [s.run_id for s in summaries] == ["r2", "r1"]
        assert summaries[1].targets == ("local", "rpi4") and summaries[0].tags == ("nightly",)
        with pytest.raises(StoreError, match="run r1 not stored"):
            store.add_run(make_run("r1", [record("fp32")]))  # a run id is stored once
        with pytest.raises(UsageError, match="no run or tag 'r9'"):
            store.resolve("r9")
    with ResultsStore(postgres_store) as again:  # reopening finds the schema in place
        assert again.run_ids() == ["r1", "r2"]


def test_edge_runs_list_reads_the_database_and_hides_the_password(postgres_store: str) -> None:
    with ResultsStore(postgres_store) as store:
        store.add_run(make_run("r1", [record("fp32")]))
    shown = CliRunner().invoke(main, ["runs", "list", "--store", postgres_store],
                               catch_exceptions=False)
    assert shown.exit_code == 0 and "r1" in shown.output and "secret" not in shown.output


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "toolkit", "runs", "list", "--store",
                           "postgresql://lab:hunter2@127.0.0.1:1/edge"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3  # ExitCode.INCOMPLETE: the store is unreachable, not a failure
    assert done.stderr.startswith("edge: error: results store postgresql://lab:***@127.0.0.1:1/"
                                  "edge cannot be reached")
    assert len(done.stderr.strip().splitlines()) == 1 and "hunter2" not in done.stderr


WRITER = """
import sys
sys.path.insert(0, sys.argv[1])
from tests.records import make_run, record
from toolkit.results.store import ResultsStore
url, who, count = sys.argv[2], sys.argv[3], int(sys.argv[4])
for index in range(count):
    with ResultsStore(url) as store:
        store.add_run(make_run(f"{who}-{index}", [record("fp32"), record("int8")],
                               created_at=f"2026-11-22T20:00:{index % 60:02d}+00:00"))
"""


@pytest.mark.parametrize("start", [0, 2])
def test_two_processes_writing_at_once_lose_and_duplicate_nothing(postgres_store: str,
                                                                  start: int) -> None:
    from .test_store_migrations import RUNS, old_postgres

    old_postgres(postgres_store, start)  # empty, or a schema-2 database holding two runs
    old_runs = 0 if start == 0 else len(RUNS)
    old_results = 0 if start == 0 else sum(len(results) for _, _, results in RUNS)
    count = 40
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(REPO), postgres_store, who,
                                 str(count)], stderr=subprocess.PIPE, text=True)
               for who in ("ci-a", "ci-b")]  # both also race to create or upgrade the schema
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
    with ResultsStore(postgres_store) as store:
        assert store.schema_version == SCHEMA_VERSION
        ids = store.run_ids()
        assert len(ids) == len(set(ids)) == 2 * count + old_runs
        assert sum(len(store.get_run(run_id).results) for run_id in ids) == (
            4 * count + old_results)


def test_latency_history_reads_only_sound_earlier_runs_on_postgres(postgres_store: str) -> None:
    from .test_store import fill_history

    with ResultsStore(postgres_store) as store:
        fill_history(store)
        found = store.latency_history("digits_cnn", until="2026-11-22T22:00:00+00:00")
    assert [(e.run_id, e.variant) for e in found] == [("h2", "fp32"), ("h1", "fp32")]
    assert found[0].board == ("x86_64", "Test CPU", "") and found[0].sha256 == "a" * 64
