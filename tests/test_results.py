"""Typed result records: one shape for store, report, choice and check; old stored runs load."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.artifacts.bundle import Artifact
from toolkit.cli.main import main
from toolkit.errors import ExitCode, StoreError
from toolkit.report.render import report_rows
from toolkit.results.record import (
    ARTIFACT_KEYS,
    RECORD_VERSION,
    STORED_PATHS,
    ResultRecord,
    Stage,
    Status,
)
from toolkit.results.schema import migration_sql
from toolkit.results.store import ResultsStore
from toolkit.run.deploy import deploy

from .records import BOARD, record

FAST = {"warmup_runs": 1, "min_runs": 5, "min_seconds": 0.05, "cooldown_seconds": 0.0}


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def an_artifact() -> Artifact:
    return Artifact(variant="int8", path=Path("/tmp/int8.tflite"), sha256="b" * 64,
                    size_bytes=30_000, config={"recipe": "int8"}, accuracy=0.96,
                    eval_samples=360)


AGENT_ANSWER = {"name": "int8-t2", "status": "ok", "threads": 2,
                "runtime": {"name": "ai-edge-litert", "version": "2.3.0"},
                "latency_ms": {"p50": 0.5, "p90": 0.6, "p99": 0.7, "robust_cv": 0.02},
                "latency_samples_ms": [0.5, 0.51, 0.49], "runs": 3, "peak_rss_bytes": 50_000_000,
                "verdict": {"status": "INVALID", "reasons": ["too short"]},
                "power": {"energy_per_inference_j": 0.002},
                "a_figure_from_a_newer_agent": {"kept": True}}


def test_a_measured_record_round_trips_through_the_json_the_store_keeps() -> None:
    made = ResultRecord.measured_on("pi", an_artifact(), AGENT_ANSWER, board=BOARD, threads=2,
                                    swept=True)
    assert (made.variant, made.recipe, made.threads, made.status) == ("int8-t2", "int8", 2,
                                                                      Status.OK)
    assert (made.p50_ms, made.size_bytes, made.accuracy, made.runtime) == (
        0.5, 30_000, 0.96, "ai-edge-litert 2.3.0")
    assert made.invalid_reasons == ["too short"] and made.energy_per_inference_mj == 2.0
    stored = json.loads(json.dumps(made.to_dict()))
    # The flat shape earlier versions stored, with the variant key spelled out.
    assert stored["variant"] == "int8-t2" and stored["recipe"] == "int8"
    assert stored["threads"] == 2 and stored["status"] == "ok"
    assert stored["record_version"] == RECORD_VERSION
    assert stored["size_bytes"] == 30_000 and stored["board"] == BOARD
    assert stored["latency_ms"]["p50"] == 0.5 and "name" not in stored
    assert stored["a_figure_from_a_newer_agent"] == {"kept": True}  # unknown keys are kept
    back = ResultRecord.from_dict(stored)
    assert back == made and back.to_dict() == stored


def test_a_board_error_names_the_file_by_its_name_not_by_its_hash_on_the_board() -> None:
    board_path = "/home/pi/.edge/cache/" + "b" * 64 + ".tflite"
    failed = {"name": "int8", "status": "failed",
              "error": f"ValueError: Could not open '{board_path}': unsupported op"}
    made = ResultRecord.measured_on("pi", an_artifact(), failed, board=BOARD, threads=2,
                                    swept=False)
    assert made.error == "ValueError: Could not open 'int8.tflite': unsupported op"


def test_the_paths_store_queries_read_are_where_the_record_writes_them() -> None:
    # ResultsStore.latency_history reads these inside the stored JSON, in SQL.
    stored = ResultRecord.measured_on("pi", an_artifact(), AGENT_ANSWER, board=BOARD,
                                      threads=2, swept=False).to_dict()
    found = {}
    for name, path in STORED_PATHS.items():
        value: object = stored
        for key in path:
            value = value[key]  # type: ignore[index]
        found[name] = value
    assert found == {"sha256": "b" * 64, "machine": BOARD["machine"],
                     "cpu_model": BOARD["cpu_model"], "board_model": BOARD["board_model"],
                     "p50_ms": 0.5, "p99_ms": 0.7, "verdict": "INVALID"}


def test_the_record_knows_every_key_an_artifact_writes() -> None:
    written = set(an_artifact().to_dict())
    assert ARTIFACT_KEYS == written - {"variant", "recipe"}


def test_replace_may_change_every_field_of_a_record() -> None:
    from toolkit.results.record import _Changes

    assert set(_Changes.__annotations__) == {f.name for f in dataclasses.fields(ResultRecord)}


def test_the_typed_blocks_keep_what_the_agent_sent_and_read_it_back() -> None:
    record = ResultRecord.measured_on("pi", an_artifact(), AGENT_ANSWER, board=BOARD,
                                      threads=2, swept=False)
    assert record.board == BOARD and record.board is not BOARD
    assert record.latency_ms["robust_cv"] == 0.02 and record.verdict == "INVALID"
    assert record.to_dict()["a_figure_from_a_newer_agent"] == {"kept": True}  # kept, untyped
    assert ResultRecord.from_dict(record.to_dict()) == record


def test_an_unknown_status_is_refused_with_the_known_ones_named() -> None:
    with pytest.raises(ValueError, match=r"status 'timeout' is not one of ok, failed, error, "
                                         "skipped"):
        ResultRecord(target="pi", recipe="fp32", status="timeout")
    with pytest.raises(ValueError, match="status None"):
        ResultRecord.from_dict({"target": "pi", "variant": "fp32"})
    # A record from a newer edge says so instead of being half read.
    with pytest.raises(ValueError, match="record version 3 is newer"):
        ResultRecord.from_dict({"target": "pi", "variant": "fp32", "status": "ok",
                                "record_version": 3})


@pytest.mark.parametrize("stored, key", [
    # A measured record of a run without a sweep (the recipe only in its config).
    ({"variant": "fp32", "config": {"recipe": "fp32"}, "threads": 1}, ("fp32", 1, False)),
    # A --threads sweep, as pipeline.py wrote it.
    ({"variant": "fp32-t2", "recipe": "fp32", "threads": 2}, ("fp32", 2, True)),
    # A variant that failed in a sweep: the agent's answer had no thread count.
    ({"variant": "int8-t2", "recipe": "int8", "status": "failed"}, ("int8", 2, True)),
    # A .tflite deployed as it is: recipe "as-is", variant "tflite".
    ({"variant": "tflite", "recipe": "as-is", "threads": 1}, ("tflite", 1, False)),
    ({"variant": "tflite-t2", "recipe": "as-is", "threads": 2}, ("tflite", 2, True)),
    # A suffix that is not the thread count is part of the name.
    ({"variant": "x-t3", "threads": 1}, ("x-t3", 1, False)),
    ({"variant": "int8-t4", "recipe": "int8", "threads": 1}, ("int8-t4", 1, False)),
])
def test_older_records_get_their_recipe_and_threads_from_the_name(
        stored: dict, key: tuple[str, int, bool]) -> None:
    loaded = ResultRecord.from_dict({"target": "pi", "status": "ok", **stored})
    assert (loaded.recipe, loaded.threads, loaded.swept) == key
    assert loaded.variant == stored["variant"]  # the name is kept exactly


def schema_2_store(path: Path) -> None:
    """A store exactly as schema-2 edge wrote it, records in that version's shapes."""
    measured = record("fp32", seed=1)  # no recipe key, no record_version
    int8 = record("int8", seed=2, size=30_000)
    failed_build = {"target": "local", "variant": "int8-dynamic", "recipe": "int8-dynamic",
                    "config": {"recipe": "int8-dynamic"}, "status": "failed",
                    "stage": "compress", "error": "not built: the converted file does not run"}
    # edge bench: a board that failed, and one left out; statuses the protocol never had.
    unreachable = {"target": "pi", "file": "fp32.tflite", "sha256": "a" * 64,
                   "size_bytes": 100_000, "config": {"recipe": "fp32"}, "recipe": "fp32",
                   "variant": "fp32", "status": "error", "error_class": "infrastructure",
                   "error": "pi unreachable"}
    skipped = {**unreachable, "target": "jetson", "status": "skipped",
               "error_class": "unhealthy", "error": "disk full"}
    runs = {"r-old": [measured, int8, failed_build, unreachable, skipped],
            "r-new": [record("fp32", seed=3), record("int8", seed=4, size=30_000),
                      failed_build, unreachable, skipped]}
    with sqlite3.connect(path) as db:
        db.executescript(migration_sql(0, "sqlite"))
        db.executescript(migration_sql(1, "sqlite"))
        for day, (run_id, results) in enumerate(runs.items(), start=1):
            db.execute("INSERT INTO runs VALUES (?, ?, 'digits_cnn', '/m.py', ?, ?, 'abc')",
                       (run_id, f"2026-01-0{day}T00:00:00+00:00", "f" * 64,
                        f"edge-out/runs/{run_id}"))
            db.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?)",
                           [(run_id, r["target"], r["variant"], r["status"], json.dumps(r))
                            for r in results])
        db.execute("PRAGMA user_version = 2")
    db.close()


def test_a_run_stored_by_schema_2_edge_loads_and_is_shown_exported_and_checked(
        tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    schema_2_store(path)
    with ResultsStore(path, create=False) as store:
        old = store.get_run("r-old")
    statuses = {(r.target, r.variant): r.status for r in old.results}
    assert statuses == {("jetson", "fp32"): Status.SKIPPED, ("local", "fp32"): Status.OK,
                        ("local", "int8"): Status.OK,
                        ("local", "int8-dynamic"): Status.FAILED,
                        ("pi", "fp32"): Status.ERROR}
    by_key = {r.key: r for r in old.results}
    assert by_key[("local", "int8")].recipe == "int8"
    assert by_key[("local", "int8-dynamic")].stage is Stage.COMPRESS
    assert by_key[("pi", "fp32")].error_class == "infrastructure"
    rows = {(row.target, row.variant): row for row in report_rows(old)}
    assert rows[("local", "int8")].size_ratio == "0.30x"
    assert rows[("pi", "fp32")].status == "error"
    assert rows[("pi", "fp32")].verdict == "error: pi unreachable"

    shown = invoke("runs", "show", "r-old", "--store", str(path))
    assert shown.exit_code == 0 and "| local | int8 |" in shown.stdout
    assert "| pi | fp32 |" in shown.stdout
    exported = invoke("runs", "export", "r-old", "--format", "csv", "--store", str(path))
    assert exported.exit_code == 0 and ",skipped,fp32," in exported.stdout
    checked = invoke("check", "--baseline", "r-old", "r-new", "--store", str(path), "--json")
    outcome = json.loads(checked.stdout)
    assert checked.exit_code == ExitCode.INCOMPLETE  # the failed cells cannot be judged
    judged = {(c["target"], c["variant"], c["metric"]): c["verdict"] for c in outcome["checks"]}
    assert judged[("local", "int8", "size")] == "pass"
    assert judged[("pi", "fp32", "status")] == "inconclusive"


def test_a_stored_record_with_an_unknown_status_is_a_store_error_not_a_traceback(
        tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    schema_2_store(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE results SET record = json_set(record, '$.status', 'exploded') "
                   "WHERE run_id = 'r-old' AND target = 'pi'")
    db.close()
    with ResultsStore(path) as store, pytest.raises(StoreError, match=(
            r"run r-old has an unreadable result record: result record pi/fp32: status "
            r"'exploded' is not one of ok, failed, error, skipped")):
        store.get_run("r-old")
    shown = invoke("runs", "show", "r-old", "--store", str(path))
    assert shown.exit_code == ExitCode.INCOMPLETE
    assert shown.stderr.count("\n") == 1 and "Traceback" not in shown.stderr


@pytest.mark.slow
def test_a_thread_sweep_stores_recipe_and_threads_on_every_record(tflite_copy: Path,
                                                                  tmp_path: Path) -> None:
    outcome = deploy(tflite_copy, targets=["local"], threads=[1, 2], out_dir=tmp_path / "out",
                     settings=FAST)
    records = outcome.run.results
    assert [(r.variant, r.recipe, r.threads, r.swept) for r in records] == [
        ("model.tflite-t1", "model.tflite", 1, True), ("model.tflite-t2", "model.tflite", 2, True)]
    with ResultsStore(outcome.store_path) as store:
        assert store.get_run(outcome.run.run_id).results == records
    written = json.loads((outcome.run_dir / "results.json").read_text())
    # The recipe is the variant as built (its config still says the file went as it is).
    assert [(r["variant"], r["recipe"], r["threads"], r["config"]["recipe"]) for r in written] \
        == [("model.tflite-t1", "model.tflite", 1, "as-is"),
            ("model.tflite-t2", "model.tflite", 2, "as-is")]
