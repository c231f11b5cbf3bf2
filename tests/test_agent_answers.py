"""Whatever a board answers, edge deploy ends in one line and no traceback: a valid answer,
minimal or not, is stored and reported; a malformed one is refused before anything is stored."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from device_agent.protocol import MAX_RAW_SAMPLES
from toolkit.cli.main import main

MINIMAL_BOARD = {"hostname": "b", "machine": "x86_64", "system": "Linux", "python": "3.8.10"}


def measured(name: str, runs: int = 5, **changes: Any) -> dict[str, Any]:
    """The least a measured variant must carry, with ``changes``."""
    return {"name": name, "status": "ok", "runtime": {"name": "tflite-runtime",
                                                      "version": "2.14.0"},
            "load_ms": 1.0, "first_inference_ms": 1.0, "measured_seconds": 0.01, "runs": runs,
            "threads": 1, "peak_rss_bytes": 1_000_000, "latency_samples_ms": [0.5] * runs,
            "latency_ms": {"p50": 0.5, "p90": 0.5, "p99": 0.5, "mean": 0.5, "std": 0.0,
                           "min": 0.5, "max": 0.5}, **changes}


def answer(*, board: Any = None, **variant: Any) -> Callable[[dict], bytes]:
    """An answer to the job whose one variant is :func:`measured` with ``variant`` changed."""
    def make(job: dict) -> bytes:
        name = job["variants"][0]["name"]
        return json.dumps({"schema_version": 1, "job_id": job["job_id"],
                           "board": MINIMAL_BOARD if board is None else board,
                           "variants": [measured(name, **variant)]}).encode()
    return make


def raw(text: bytes) -> Callable[[dict], bytes]:
    return lambda _job: text


def document(change: Callable[[dict, dict], Any]) -> Callable[[dict], bytes]:
    """A valid answer with ``change(document, job)`` applied to it."""
    def make(job: dict) -> bytes:
        whole = json.loads(answer()(job))
        change(whole, job)
        return json.dumps(whole).encode()
    return make


def failed_variant(job: dict) -> bytes:
    return json.dumps({"schema_version": 1, "job_id": job["job_id"], "board": MINIMAL_BOARD,
                       "variants": [{"name": job["variants"][0]["name"], "status": "failed",
                                     "error": "the runtime refused the file"}]}).encode()


#: name -> (the board's answer, whether it is valid and the run must be stored)
ANSWERS: dict[str, tuple[Callable[[dict], bytes], bool]] = {
    "minimal": (answer(), True),
    "minimal-failed-variant": (failed_variant, True),
    "board-without-cpu-or-machine-details": (answer(board={**MINIMAL_BOARD, "release": ""}),
                                             True),
    "nested-200000-lists": (raw(b"[" * 200_000 + b"]" * 200_000), False),
    "nested-200000-objects": (raw(b'{"a":' * 200_000 + b"1" + b"}" * 200_000), False),
    "empty": (raw(b""), False),
    "not-utf8": (raw(b"\xff\xfe\x00garbage"), False),
    "null": (raw(b"null"), False),
    "a-list": (raw(b"[]"), False),
    "an-empty-object": (raw(b"{}"), False),
    "other-schema-version": (document(lambda d, _j: d.update(schema_version=2)), False),
    "other-job": (document(lambda d, _j: d.update(job_id="another")), False),
    "board-without-hostname": (answer(board={k: v for k, v in MINIMAL_BOARD.items()
                                             if k != "hostname"}), False),
    "hostname-a-number": (answer(board={**MINIMAL_BOARD, "hostname": 7}), False),
    "cpu-model-a-number": (answer(board={**MINIMAL_BOARD, "cpu_model": 5}), False),
    "cpu-count-text": (answer(board={**MINIMAL_BOARD, "cpu_count": "many"}), False),
    "no-variants": (document(lambda d, _j: d.pop("variants")), False),
    "other-variant": (document(lambda d, _j: d["variants"][0].update(name="other")), False),
    "status-maybe": (answer(status="maybe"), False),
    "no-runtime": (document(lambda d, _j: d["variants"][0].pop("runtime")), False),
    "thermal-hot": (answer(thermal="hot"), False),
    "thermal-throttled-a-number": (answer(thermal={"throttled": 1}), False),
    "model-load-ms-text": (answer(model_load_ms="x"), False),
    "samples-over-the-cap": (answer(runs=MAX_RAW_SAMPLES + 1), False),
    "percentiles-unordered": (answer(latency_ms={**measured("x")["latency_ms"], "p50": 9.0}),
                              False),
    "verdict-reasons-numbers": (answer(verdict={"status": "INVALID", "reasons": [1]}), False),
    "output-check-summary-a-number": (answer(output_check={
        "ok": True, "max_abs_diff": 0.0, "top1_agreement": 1.0, "summary": 3}), False),
    "accelerator-adapter-a-list": (answer(accelerator={
        "requested": "gpu", "used": "gpu", "api": "compiled", "adapter": []}), False),
    "profile-p50-text": (answer(profile={
        "ops": [{"op": "CONV_2D", "mean_us": 1.0, "p50_us": "x"}], "by_type": [],
        "total_us": {"p50": 1.0}, "ops_sum_us": 1.0}), False),
    "power-error-a-number": (answer(power={"error": 1}), False),
}


@pytest.mark.parametrize("name", ANSWERS)
def test_every_agent_answer_ends_in_one_line_and_no_traceback(
        name: str, tflite_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make, valid = ANSWERS[name]

    class Board:
        def run_job(self, job: dict, files: dict) -> bytes:
            return make(job)

    monkeypatch.setattr("toolkit.run.execute.JobRunner", lambda target: Board())
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["deploy", str(tflite_copy), "-o", str(out), "--quiet"])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert "Traceback" not in result.stderr
    with sqlite3.connect(out / "results.sqlite") as db:
        stored = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    if valid:
        assert result.exit_code in (0, 3), result.output
        assert stored == 1
        run_dir = next((out / "runs").iterdir())
        assert (run_dir / "report.html").stat().st_size > 0
        assert [line for line in result.stderr.splitlines() if "warning" in line] == []
    else:
        assert result.exit_code == 1, result.output
        assert stored == 0
        assert [line for line in result.stderr.splitlines() if line.startswith("edge:")] == \
            [result.stderr.strip()], "one line, the error"
        assert result.stderr.startswith("edge: error: ")


def test_a_report_that_cannot_be_rendered_loses_no_run(
        tflite_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Board:
        def run_job(self, job: dict, files: dict) -> bytes:
            return answer()(job)

    def broken(*_args: object) -> None:
        raise TypeError("a template bug")

    monkeypatch.setattr("toolkit.run.execute.JobRunner", lambda target: Board())
    monkeypatch.setattr("toolkit.run.execute.write_report", broken)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["deploy", str(tflite_copy), "-o", str(out), "--quiet"])
    assert result.exception is None, repr(result.exception)
    with sqlite3.connect(out / "results.sqlite") as db:
        (run_id,) = db.execute("SELECT run_id FROM runs").fetchone()
    assert result.stderr.strip() == (
        f"edge: warning: run {run_id} is stored, but its report could not be written "
        f"(TypeError: a template bug); `edge report {run_id}` renders it again")
    assert (out / "runs" / run_id / "results.json").exists()
