"""`edge check --history`: RUN judged against its own stored runs (change points, a window)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from toolkit.cli.main import main
from toolkit.errors import ExitCode
from toolkit.gate.history import GATED, WINDOW, check_history
from toolkit.gate.thresholds import Thresholds
from toolkit.results.store import ResultsStore
from toolkit.results.trend import METRICS, MIN_RUNS, MIN_SEGMENT

from .records import changed, make_run, record


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def noise(seed: int, n: int = 30) -> list[float]:
    """Run-to-run drift of a median: 3 % lognormal, seeded."""
    return np.random.default_rng(seed).lognormal(0.0, 0.03, n).tolist()


def store_series(path: Path, factors: list[float], **changes: object) -> None:
    """One run per factor of the int8 variant (its median scaled by it), oldest first;
    ``changes`` set stored keys of every record."""
    with ResultsStore(path) as store:
        for i, factor in enumerate(factors):
            result = record("int8", median_ms=factor, seed=i, n=60)
            store.add_run(make_run(f"r-{i:02d}", [{**result, **changes}],
                                   created_at=f"2026-11-{1 + i // 24:02d}T{i % 24:02d}:00:00"))


def stepped(seed: int, step: float, at: int, n: int = 30) -> list[float]:
    return [f * (step if i >= at else 1.0) for i, f in enumerate(noise(seed, n))]


def latency(document: dict) -> dict[str, dict]:
    return {c["metric"]: c for c in document["checks"] if c["metric"].startswith("latency")}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_step_five_runs_before_the_end_is_a_regression_at_its_run(tmp_path: Path,
                                                                    seed: int) -> None:
    path = tmp_path / "s.sqlite"
    store_series(path, stepped(seed, 1.2, at=25))
    shown = invoke("check", "--history", "--store", str(path), "--json")
    assert shown.exit_code == ExitCode.FAILED
    document = json.loads(shown.stdout)
    assert document["run"] == "r-29"
    assert "regression(s) in the stored history, e.g. local/int8 latency_p50" in \
        document["summary"]
    p50, p99 = latency(document)["latency_p50"], latency(document)["latency_p99"]
    assert p50["verdict"] == "regression"
    assert (p50["changed_at"], p50["changed_at_number"]) == ("r-25", 26)
    assert 12 < p50["change"] < 28 and p50["p_value"] < 0.05 and p50["runs"] == 30
    # The p99 of 60 samples is noisier: found at the same run, or not found yet.
    assert p99["verdict"] in ("regression", "pass") and p99["changed_at"] in ("r-25", None)
    others = {c["metric"]: c["verdict"] for c in document["checks"]
              if not c["metric"].startswith("latency")}
    assert others == {"peak_memory": "pass", "size": "pass", "accuracy": "pass"}


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_thirty_runs_of_noise_flag_nothing(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "s.sqlite"
    store_series(path, noise(seed))
    shown = invoke("check", "--history", "--store", str(path))
    assert shown.exit_code == ExitCode.OK, shown.output
    assert shown.stdout.startswith("### edge check --history: passed")
    assert f"no change point in the newest {WINDOW} of 30 runs" in shown.stdout
    assert shown.stderr == ""


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_step_to_faster_is_an_improvement_not_a_regression(tmp_path: Path,
                                                             seed: int) -> None:
    path = tmp_path / "s.sqlite"
    store_series(path, stepped(seed, 0.83, at=25))
    shown = invoke("check", "--history", "--store", str(path), "--json")
    assert shown.exit_code == ExitCode.OK
    p50 = latency(json.loads(shown.stdout))["latency_p50"]
    # Found at its run, or the one before when that run's noise happened to be low.
    assert p50["verdict"] == "improved" and p50["changed_at"] in ("r-24", "r-25")
    assert -25 < p50["change"] < -10


def test_a_step_counts_only_inside_the_window_and_up_to_the_run_judged(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store_series(path, stepped(1, 1.2, at=15))
    with ResultsStore(path) as store:
        def judged(ref: str) -> dict[str, str]:
            outcome = check_history(store, store.get_run(ref))
            return {c.metric: c.verdict for c in outcome.checks}

        # r-19: the step has 5 runs at its new level; the later runs are not its history.
        assert judged("r-19")["latency_p50"] == "regression"
        # The newest run has 15 at the new level: the step is older than the window.
        latest = check_history(store, store.get_run("latest"))
        p50 = next(c for c in latest.checks if c.metric == "latency_p50")
        assert p50.verdict == "pass" and p50.changed_at is None
        assert "the newest at run r-15, #16" in p50.detail
        # Two runs at the new level: PELT cannot tell a step from noise yet.
        assert judged("r-16")["latency_p50"] == "pass"


def test_a_step_that_came_and_went_inside_the_window_passes(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    factors = [f * (1.3 if 22 <= i < 26 else 1.0) for i, f in enumerate(noise(1))]
    store_series(path, factors)
    with ResultsStore(path) as store:
        outcome = check_history(store, store.get_run("latest"))
    p50 = next(c for c in outcome.checks if c.metric == "latency_p50")
    assert p50.verdict == "pass" and p50.changed_at == "r-22", p50
    assert "moved again at run r-26" in p50.detail and abs(p50.change or 0) < 5


def test_the_same_thresholds_as_edge_check_apply(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store_series(path, stepped(1, 1.2, at=25))
    relaxed = invoke("check", "--history", "--store", str(path), "--threshold",
                     "latency_p50=30%", "--threshold", "latency_p99=30")
    assert relaxed.exit_code == ExitCode.OK, relaxed.output
    assert "within the limit" in relaxed.stdout
    (tmp_path / "pyproject.toml").write_text(
        '[tool.edge]\nstore = "s.sqlite"\n\n[tool.edge.check]\nlatency_p50 = "30%"\n'
        'latency_p99 = 30\n')
    assert invoke("check", "--history").exit_code == ExitCode.OK


def test_too_few_runs_are_inconclusive_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store_series(path, noise(1, MIN_RUNS - 1))
    shown = invoke("check", "--history", "--store", str(path))
    assert shown.exit_code == ExitCode.INCOMPLETE
    assert shown.stderr.count("\n") == 1
    assert shown.stderr.startswith("edge: check inconclusive: ")
    assert f"only {MIN_RUNS - 1} stored run(s) up to this one" in shown.stderr
    assert "never a pass" in shown.stdout


def test_an_unknown_run_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store_series(path, noise(1, 8))
    shown = invoke("check", "--history", "nope", "--store", str(path))
    assert shown.exit_code == ExitCode.USAGE
    assert "no run or tag 'nope'" in shown.stderr and shown.stderr.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (("--history", "--baseline", "r-00"), "leave out --baseline"),
    (("--history", "--paired"), "leave out --paired"),
    ((), "give --baseline BASE"),
])
def test_history_and_baseline_options_are_one_or_the_other(tmp_path: Path,
                                                           args: tuple[str, ...],
                                                           message: str) -> None:
    path = tmp_path / "s.sqlite"
    store_series(path, noise(1, 8))
    shown = invoke("check", *args, "--store", str(path))
    assert shown.exit_code == ExitCode.USAGE and message in shown.stderr


def test_junit_and_markdown_files_name_the_regression(tmp_path: Path) -> None:
    path, junit, markdown = tmp_path / "s.sqlite", tmp_path / "c.xml", tmp_path / "c.md"
    store_series(path, stepped(2, 1.2, at=25))
    shown = invoke("check", "--history", "--store", str(path), "--junit", str(junit),
                   "--markdown", str(markdown))
    assert shown.exit_code == ExitCode.FAILED
    suite = ET.parse(junit).getroot()
    failed = {case.get("name"): case.find("failure") for case in suite
              if case.find("failure") is not None}
    assert suite.get("failures") == str(len(failed)) and "latency_p50" in failed
    assert "change point at run r-25 (#26 of 30)" in failed["latency_p50"].get("message")
    text = markdown.read_text()
    assert text == shown.stdout.removesuffix("\n")  # echo adds a line end
    assert "| local | int8 | latency_p50 | 30 |" in text and "**REGRESSION**" in text


def test_invalid_runs_are_left_out_and_an_invalid_run_judged_is_inconclusive(
        tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    invalid = {"status": "INVALID", "reasons": ["variation 30 % > 10 %"]}
    with ResultsStore(path) as store:
        for i, factor in enumerate(noise(3, 12)):
            # Every other run INVALID and twice as slow: left out, they make no step.
            result = record("int8", median_ms=factor * (2 if i % 2 else 1), seed=i, n=60)
            if i % 2:
                result["verdict"] = invalid
            store.add_run(make_run(f"r-{i:02d}", [result],
                                   created_at=f"2026-11-01T{i:02d}:00:00"))
        outcome = check_history(store, store.get_run("r-10"))
        verdicts = {c.metric: (c.verdict, c.runs) for c in outcome.checks}
        assert verdicts["latency_p50"] == ("pass", 6) and verdicts["size"] == ("pass", 11)
        latest = check_history(store, store.get_run("latest"))
    shown = {c.metric: c.verdict for c in latest.checks}
    assert shown["latency_p50"] == shown["latency_p99"] == "inconclusive"
    assert shown["size"] == "pass" and latest.exit_code == ExitCode.INCOMPLETE


def test_a_failed_variant_is_inconclusive(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store_series(path, noise(1, 8))
    with ResultsStore(path) as store:
        good = store.get_run("latest").results[0]
        store.add_run(make_run("r-failed", [changed(good, status="failed", error="boom")],
                               created_at="2026-12-01T00:00:00"))
        outcome = check_history(store, store.get_run("latest"))
    assert [(c.metric, c.verdict) for c in outcome.checks] == [("status", "inconclusive")]
    assert "boom" in outcome.checks[0].detail


def test_a_step_where_the_file_and_the_runtime_changed_says_so(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with ResultsStore(path) as store:
        for i, factor in enumerate(stepped(1, 1.2, at=25)):
            result = record("int8", median_ms=factor, seed=i, n=60)
            if i >= 25:
                result.update(sha256="b" * 64,
                              runtime={"name": "tflite-runtime", "version": "2.14.0"})
            store.add_run(make_run(f"r-{i:02d}", [result],
                                   created_at=f"2026-11-{1 + i // 24:02d}T{i % 24:02d}:00:00"))
        outcome = check_history(store, store.get_run("latest"), Thresholds())
    p50 = next(c for c in outcome.checks if c.metric == "latency_p50")
    assert p50.verdict == "regression" and "the file changed at that run" in p50.detail
    assert p50.conditions == "runtime ai-edge-litert 2.3.0 vs tflite-runtime 2.14.0"


def test_energy_and_accuracy_are_judged_in_their_units(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with ResultsStore(path) as store:
        for i, factor in enumerate(noise(2)):
            result = record("int8", seed=i, n=60, energy_mj=2.0 * factor * (
                1.25 if i >= 25 else 1), accuracy=0.97 - (0.02 if i >= 25 else 0))
            store.add_run(make_run(f"r-{i:02d}", [result],
                                   created_at=f"2026-11-{1 + i // 24:02d}T{i % 24:02d}:00:00"))
        outcome = check_history(store, store.get_run("latest"))
    found = {c.metric: c for c in outcome.checks}
    assert found["energy"].verdict == "regression" and found["energy"].shown(
        found["energy"].value).endswith("mJ")
    assert found["accuracy"].verdict == "regression"
    assert found["accuracy"].change == pytest.approx(-2.0)


def test_the_help_says_the_window_the_library_uses() -> None:
    text = " ".join(invoke("check", "--help").output.split())
    assert f"among the newest {WINDOW} runs" in text
    assert f"PELT needs {MIN_SEGMENT} runs at a new level" in text
    assert f"fewer than {MIN_RUNS} runs stored is inconclusive (exit 3)" in text
    assert {figure for _, figure, _ in GATED} <= set(METRICS)
