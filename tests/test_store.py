"""The results store: schema migrations, runs, tags, exports, and `edge runs`."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli.main import main
from toolkit.errors import StoreError, UsageError
from toolkit.model.project import resolve_store_path
from toolkit.results.export import load_export
from toolkit.results.record import ResultRecord
from toolkit.results.schema import SCHEMA_VERSION, migration_sql
from toolkit.results.store import ResultsStore

from .records import make_run, record


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_a_schema_1_store_written_by_the_spine_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = record("fp32")
    with sqlite3.connect(path) as db:  # exactly what the spine (schema 1) wrote
        db.executescript(migration_sql(0, "sqlite"))
        db.execute("INSERT INTO runs VALUES ('r1', '2026-01-01T00:00:00+00:00', 'digits_cnn', "
                   "'/m.py', 'abc', 'edge-out/runs/r1')")
        db.execute("INSERT INTO results VALUES ('r1', 'local', 'fp32', 'ok', ?)",
                   (json.dumps(old),))
        db.execute("PRAGMA user_version = 1")
    db.close()
    with ResultsStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 3
        run = store.get_run("r1")
        assert run.git_commit is None and run.tags == ()
        assert run.results == [ResultRecord.from_dict(old)]
        assert run.results[0].to_dict() == {**old, "recipe": "fp32", "record_version": 2}
        store.tag("before-upgrade", "r1")
        store.add_run(make_run("r2", [record("fp32")]))
        assert store.resolve("latest") == "r2"
    with ResultsStore(path) as store:  # reopening does not migrate twice
        assert store.get_run("before-upgrade").run_id == "r1"


def test_a_store_from_a_newer_edge_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="newer than this edge"):
        ResultsStore(path)


def test_runs_keep_commit_tags_board_recipe_metrics_and_samples(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "s.sqlite") as store:
        store.add_run(make_run("r1", [record("fp32"), record("int8", size=30_000)],
                               tags=("main",)))
        run = store.get_run("main")
    assert run.git_commit == "c0ffee" and run.tags == ("main",)
    fp32 = run.results[0]
    assert fp32.board and fp32.board["cpu_model"] == "Test CPU" and fp32.recipe == "fp32"
    assert len(fp32.latency_samples_ms) == 400 and (fp32.p50_ms or 0) > 0


def test_tags_move_and_bad_names_are_usage_errors(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "s.sqlite") as store:
        store.add_run(make_run("r1", [record("fp32")], created_at="2026-01-01T00:00:00+00:00"))
        store.add_run(make_run("r2", [record("fp32")], created_at="2026-01-02T00:00:00+00:00"))
        store.tag("main", "r1")
        store.tag("main", "r2")
        assert store.resolve("main") == "r2"
        with pytest.raises(UsageError, match="must start with a letter"):
            store.tag("-x", "r1")
        with pytest.raises(UsageError, match="would hide a run id"):
            store.tag("r1", "r2")
        with pytest.raises(UsageError, match="no run or tag 'nope'"):
            store.get_run("nope")


def test_store_path_flag_then_environment_then_pyproject(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    default = Path("edge-out/results.sqlite")
    assert resolve_store_path(None, default=default) == default
    (tmp_path / "pyproject.toml").write_text('[tool.edge]\nstore = "lab/results.sqlite"\n')
    monkeypatch.chdir(tmp_path)
    assert resolve_store_path(None, default=default) == tmp_path / "lab" / "results.sqlite"
    monkeypatch.setenv("EDGE_STORE", "/env/store.sqlite")
    assert resolve_store_path(None, default=default) == Path("/env/store.sqlite")
    assert resolve_store_path("flag.sqlite", default=default) == Path("flag.sqlite")


@pytest.fixture
def store_file(tmp_path: Path) -> Path:
    path = tmp_path / "s.sqlite"
    with ResultsStore(path) as store:
        store.add_run(make_run("20261122-200000-aaaaaa",
                               [record("fp32"), record("int8", size=30_000)],
                               created_at="2026-11-22T20:00:00+00:00"))
        store.add_run(make_run("20261122-210000-bbbbbb",
                               [record("fp32", seed=1), record("int8", seed=1, size=30_000)],
                               created_at="2026-11-22T21:00:00+00:00", commit="abc+dirty"))
    return path


def test_edge_runs_list_show_tag_export(store_file: Path, tmp_path: Path) -> None:
    listed = invoke("runs", "list", "--store", str(store_file))
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[1].startswith("20261122-210000-bbbbbb") and "fp32,int8" in lines[1]
    assert invoke("runs", "tag", "20261122-200000-aaaaaa", "main",
                  "--store", str(store_file)).stdout.strip() == "main -> 20261122-200000-aaaaaa"
    assert "[main]" in invoke("runs", "list", "--store", str(store_file)).stdout
    shown = invoke("runs", "show", "main", "--store", str(store_file))
    assert "| local | int8 |" in shown.stdout
    exported = tmp_path / "baseline.json"
    result = invoke("runs", "export", "main", "--store", str(store_file), "-o", str(exported))
    assert result.exit_code == 0
    back = load_export(exported)
    assert back.run_id == "20261122-200000-aaaaaa" and back.tags == ("main",)
    assert len(back.results[0].latency_samples_ms) == 400
    rows = list(csv.DictReader(io.StringIO(invoke(
        "runs", "export", "latest", "--format", "csv", "--store", str(store_file)).stdout)))
    assert [(r["variant"], r["git_commit"]) for r in rows] == [("fp32", "abc+dirty"),
                                                                ("int8", "abc+dirty")]
    assert float(rows[0]["p50_ms"]) > 0


@pytest.mark.parametrize("args, message", [
    (("runs", "show", "nope"), "no run or tag 'nope'"),
    (("runs", "tag", "latest", "bad name"), "must start with a letter"),
])
def test_runs_usage_errors_exit_2(store_file: Path, args: tuple[str, ...], message: str) -> None:
    result = invoke(*args, "--store", str(store_file))
    assert result.exit_code == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_reading_a_missing_store_does_not_create_one(tmp_path: Path) -> None:
    result = invoke("runs", "list", "--store", str(tmp_path / "none.sqlite"))
    assert result.exit_code == 2 and "no results store" in result.stderr
    assert not (tmp_path / "none.sqlite").exists()


def fill_history(store: ResultsStore) -> None:
    """Runs of digits_cnn: two sound, one INVALID, one failed, one later, one other model."""
    invalid, failed = record("fp32", seed=3), record("fp32", seed=4)
    invalid["verdict"] = {"status": "INVALID", "reasons": ["too short"]}
    failed.update(status="failed", error="killed by signal SIGSEGV")
    for run_id, results, hour, model in (
            ("h1", [record("fp32", seed=1)], 20, "digits_cnn"),
            ("h2", [record("fp32", seed=2, median_ms=2.0)], 21, "digits_cnn"),
            ("h3", [invalid], 21, "digits_cnn"), ("h4", [failed], 21, "digits_cnn"),
            ("h5", [record("fp32", seed=5)], 23, "digits_cnn"),
            ("h6", [record("fp32", seed=6)], 21, "other")):
        store.add_run(make_run(run_id, results, model=model,
                               created_at=f"2026-11-22T{hour}:00:00+00:00"))


def test_latency_history_reads_only_sound_earlier_runs(tmp_path: Path) -> None:
    # edge check learns how much runs of one file differ on a board from these.
    with ResultsStore(tmp_path / "s.sqlite") as store:
        fill_history(store)
        found = store.latency_history("digits_cnn", until="2026-11-22T22:00:00+00:00")
    assert [(e.run_id, e.variant) for e in found] == [("h2", "fp32"), ("h1", "fp32")]
    samples = record("fp32", seed=2, median_ms=2.0)["latency_ms"]
    assert (found[0].p50_ms, found[0].p99_ms) == (samples["p50"], samples["p99"])
    assert found[0].board == ("x86_64", "Test CPU", "") and found[0].sha256 == "a" * 64
