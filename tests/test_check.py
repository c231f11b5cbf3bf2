"""`edge check`: noise passes, real regressions fail, incomparable runs are refused."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from toolkit.check import Thresholds, bootstrap_ratio, check_runs
from toolkit.cli import main
from toolkit.errors import CheckRefused, UsageError
from toolkit.store import ResultsStore, StoredRun

from .records import BOARD, make_run, record


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def pair(**new_changes) -> tuple[StoredRun, StoredRun]:
    base = make_run("base", [record("fp32", seed=1), record("int8", seed=2, size=30_000)])
    fp32 = dict({"seed": 3}, **new_changes)
    new = make_run("new", [record("fp32", **fp32), record("int8", seed=4, size=30_000)])
    return base, new


def verdicts(outcome, variant: str = "fp32") -> dict[str, str]:
    return {c.metric: c.verdict for c in outcome.checks if c.variant == variant}


def test_the_same_model_measured_again_passes() -> None:
    outcome = check_runs(*pair())
    assert outcome.passed, outcome.to_markdown()
    assert verdicts(outcome) == {"latency_p50": "pass", "latency_p99": "pass",
                                 "peak_memory": "pass", "size": "pass", "accuracy": "pass"}


def test_ten_percent_slower_is_a_latency_regression() -> None:
    outcome = check_runs(*pair(median_ms=1.10))
    assert not outcome.passed
    assert verdicts(outcome)["latency_p50"] == "regression"
    p50 = next(c for c in outcome.regressions if c.metric == "latency_p50")
    assert 5 < p50.interval[0] < p50.change < p50.interval[1]


def test_faster_is_reported_as_improved_not_failed() -> None:
    outcome = check_runs(*pair(median_ms=0.8))
    assert outcome.passed and verdicts(outcome)["latency_p50"] == "improved"


@pytest.mark.parametrize("change, metric", [
    ({"size": 102_000}, "size"),
    ({"accuracy": 0.96}, "accuracy"),
    ({"peak_rss": 66_000_000}, "peak_memory"),
])
def test_each_metric_has_its_limit(change: dict, metric: str) -> None:
    outcome = check_runs(*pair(**change))
    assert [c.metric for c in outcome.regressions] == [metric]


def test_energy_is_checked_when_both_runs_measured_it() -> None:
    base = make_run("b", [record("fp32", seed=1, energy_mj=2.0)])
    assert verdicts(check_runs(base, make_run("n", [record("fp32", seed=2, energy_mj=2.04)]))
                    )["energy"] == "pass"
    assert verdicts(check_runs(base, make_run("n", [record("fp32", seed=2, energy_mj=2.2)]))
                    )["energy"] == "regression"
    without = make_run("n", [record("fp32", seed=2)])
    assert verdicts(check_runs(base, without))["energy"] == "skipped"


def test_a_failed_or_missing_variant_is_a_regression() -> None:
    base, new = pair()
    new.results[1].update(status="failed", error="killed by signal SIGSEGV")
    del new.results[0]
    outcome = check_runs(base, new)
    assert [(c.variant, c.metric) for c in outcome.regressions] == [("fp32", "status"),
                                                                    ("int8", "status")]


@pytest.mark.parametrize("change, message", [
    ({"model": "other_model"}, "compare runs of one model"),
    ({"target": "rpi4"}, "compare runs on the same target"),
    ({"board": dict(BOARD, cpu_model="Cortex-A72")}, "different board"),
])
def test_incomparable_runs_are_refused(change: dict, message: str) -> None:
    base = make_run("base", [record("fp32")])
    new = make_run("new", [record("fp32", **{k: v for k, v in change.items() if k != "model"})],
                   model=change.get("model", "digits_cnn"))
    with pytest.raises(CheckRefused, match=message):
        check_runs(base, new)


def test_bootstrap_interval_covers_the_true_ratio() -> None:
    rng = np.random.default_rng(7)
    base, new = rng.lognormal(0, 0.1, 500), 1.2 * rng.lognormal(0, 0.1, 500)
    ratio, low, high = bootstrap_ratio(base, new, quantile=0.5, resamples=1000, confidence=0.95)
    assert low < 1.2 < high and low < ratio < high


def test_a_burst_of_disturbance_widens_the_tail_interval_a_steady_slowdown_does_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Latency samples come in time order and disturbances come in bursts: 4% of a run
    # (one stretch) at 1.6x lifts p99 by half.  Resampled sample by sample, that looks
    # certain; resampled in blocks, the burst is one event that a rerun may not have.
    rng = np.random.default_rng(3)
    base = rng.lognormal(0, 0.03, 4000)
    burst = rng.lognormal(0, 0.03, 4000)
    burst[2000:2160] *= 1.6
    _, low, _ = bootstrap_ratio(base, burst, quantile=0.99, resamples=1000, confidence=0.95)
    assert low < 1.10  # not a regression past the default p99 limit
    monkeypatch.setattr("toolkit.check.BLOCK_FRACTION", 0.0)  # blocks of one sample
    _, low, _ = bootstrap_ratio(base, burst, quantile=0.99, resamples=1000, confidence=0.95)
    assert low > 1.10
    # A slowdown through the whole run stays certain.
    _, low, _ = bootstrap_ratio(base, 1.2 * rng.lognormal(0, 0.03, 4000), quantile=0.99,
                                resamples=1000, confidence=0.95)
    assert low > 1.10


def test_thresholds_parse_percent_and_refuse_nonsense() -> None:
    assert Thresholds.from_mapping({"latency_p50": "3%", "accuracy": 1}).latency_p50 == 3.0
    with pytest.raises(UsageError, match="unknown check setting 'latency'"):
        Thresholds.from_mapping({"latency": 3})
    with pytest.raises(UsageError, match="must be a number"):
        Thresholds.from_mapping({"size": "big"})
    with pytest.raises(UsageError, match=">= 0"):
        Thresholds(size=-1)


def test_with_several_baseline_runs_a_regression_must_show_against_each() -> None:
    # Two measurements of main 7% apart (between-run spread on a shared machine), then a
    # run as slow as the slower one: against the faster alone it is +7%, past the 5% limit.
    main_a = make_run("main-a", [record("fp32", seed=1)])
    main_b = make_run("main-b", [record("fp32", seed=2, median_ms=1.07)])
    same = make_run("new", [record("fp32", seed=3, median_ms=1.07)])
    assert not check_runs(main_a, same).passed
    outcome = check_runs([main_a, main_b], same)
    assert outcome.passed, outcome.to_markdown()
    p50 = next(c for c in outcome.checks if c.metric == "latency_p50")
    assert abs(p50.change) < 3  # shown against the baseline run it is closest to
    assert "`main-a` (commit c0ffee), `main-b`" in outcome.to_markdown()
    assert outcome.to_dict()["more_baselines"] == ["main-b"]
    slower = make_run("slow", [record("fp32", seed=4, median_ms=1.25)])
    failed = check_runs([main_a, main_b], slower)
    assert [c.metric for c in failed.regressions] == ["latency_p50", "latency_p99"]
    assert next(c for c in failed.regressions if c.metric == "latency_p50").change < 20


@pytest.fixture
def store_file(tmp_path: Path) -> Path:
    base, new = pair(median_ms=1.10)
    path = tmp_path / "s.sqlite"
    with ResultsStore(path) as store:
        store.add_run(make_run("r-base", base.results, created_at="2026-01-01T00:00:00+00:00"))
        store.add_run(make_run("r-same", pair()[1].results,
                               created_at="2026-01-02T00:00:00+00:00"))
        store.add_run(make_run("r-slow", new.results, created_at="2026-01-03T00:00:00+00:00"))
        store.add_run(make_run("r-other", new.results, model="other",
                               created_at="2026-01-04T00:00:00+00:00"))
        store.tag("main", "r-base")
    return path


def test_cli_takes_the_baseline_option_several_times(store_file: Path) -> None:
    both = invoke("check", "--baseline", "main", "--baseline", "r-same", "r-slow", "--store",
                  str(store_file), "--json")
    assert both.exit_code == 1
    assert json.loads(both.stdout)["more_baselines"] == ["r-same"]


def test_cli_exit_codes_junit_and_markdown(store_file: Path, tmp_path: Path) -> None:
    same = invoke("check", "--baseline", "main", "r-same", "--store", str(store_file))
    assert same.exit_code == 0, same.output
    assert "edge check: passed" in same.stdout
    junit, markdown = tmp_path / "check.xml", tmp_path / "check.md"
    slow = invoke("check", "--baseline", "main", "r-slow", "--store", str(store_file),
                  "--junit", str(junit), "--markdown", str(markdown))
    assert slow.exit_code == 1
    suite = ET.parse(junit).getroot()
    # 10% slower: past the p50 limit (5%), not confidently past the p99 one (10%).
    assert suite.get("failures") == "1"
    failed = [(case.get("classname"), case.get("name")) for case in suite
              if case.find("failure") is not None]
    assert failed == [("edge.local.fp32", "latency_p50")]
    assert "**REGRESSION**" in markdown.read_text()
    relaxed = invoke("check", "--baseline", "main", "r-slow", "--store", str(store_file),
                     "--threshold", "latency_p50=25%", "--threshold", "latency_p99=25")
    assert relaxed.exit_code == 0


def test_cli_reads_thresholds_from_pyproject(store_file: Path, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.edge]\nstore = "s.sqlite"\n\n[tool.edge.check]\nlatency_p50 = "25%"\n'
        'latency_p99 = 25\n')
    assert invoke("check", "--baseline", "main", "r-slow").exit_code == 0


def test_cli_baseline_from_an_exported_file(store_file: Path, tmp_path: Path) -> None:
    exported = tmp_path / "edge-baseline.json"
    invoke("runs", "export", "main", "--store", str(store_file), "-o", str(exported))
    assert invoke("check", "--baseline", str(exported), "r-same",
                  "--store", str(store_file)).exit_code == 0
    assert invoke("check", "--baseline", str(exported), "r-slow",
                  "--store", str(store_file)).exit_code == 1


@pytest.mark.parametrize("args, message", [
    (("--baseline", "main", "r-other"), "compare runs of one model"),
    (("--baseline", "nope"), "no run or tag 'nope'"),
    (("--baseline", "missing.json"), "does not exist"),
    (("--baseline", "main", "--threshold", "latency"), "NAME=VALUE"),
    (("--baseline", "main", "--threshold", "speed=3"), "unknown check setting 'speed'"),
])
def test_cli_usage_errors_exit_2(store_file: Path, args: tuple[str, ...], message: str) -> None:
    result = invoke("check", *args, "--store", str(store_file))
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_deploy_twice_then_check_end_to_end(tflite_copy: Path, tmp_path: Path) -> None:
    """Real runs of a real model: the commit is recorded, and the gate wiring works.

    The limits are wide on purpose: this proves plumbing, never timing (see
    benchmarks/check_power.py for how the gate behaves on noise).
    """
    import subprocess

    repo = tflite_copy.parent
    for command in (["init", "-q"], ["add", tflite_copy.name],
                    ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "m"]):
        subprocess.run(["git", "-C", str(repo), *command], check=True)
    store = tmp_path / "lab.sqlite"
    (tmp_path / "pyproject.toml").write_text(f'[tool.edge]\nstore = "{store.name}"\n')
    for _ in range(2):
        deployed = invoke("deploy", str(tflite_copy), "-o", str(tmp_path / "out"),
                          "--min-runs", "20", "--min-seconds", "0.1")
        assert deployed.exit_code == 0, deployed.output
    first, second = (s.run_id for s in reversed(ResultsStore(store).list_runs()))
    with ResultsStore(store) as opened:
        run = opened.get_run(second)
    assert run.git_commit and len(run.git_commit) == 40
    assert len(run.results[0]["latency_samples_ms"]) == run.results[0]["runs"]
    wide = ["--threshold", "latency_p50=10000", "--threshold", "latency_p99=10000",
            "--threshold", "peak_memory=1000"]
    assert invoke("check", "--baseline", first, *wide).exit_code == 0
    assert invoke("check", "--baseline", first, "--threshold", "size=-1").exit_code == 2


def test_an_invalid_measurement_is_named_in_the_notes() -> None:
    base, new = pair()
    new.results[0]["verdict"] = {"status": "INVALID", "reasons": ["CV 0.31 above 0.10"]}
    outcome = check_runs(base, new)
    assert any("local/fp32 measurement is INVALID on the board: CV 0.31" in n
               for n in outcome.notes)
    assert "CV 0.31 above 0.10" in outcome.to_markdown()
