"""`edge runs diff` (two runs side by side) and `edge trend` (a figure over runs, change points)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from click.testing import CliRunner

from toolkit.cli.main import main
from toolkit.cli.trend import METRIC_NAMES
from toolkit.errors import UsageError
from toolkit.results.diff import diff_runs
from toolkit.results.store import ResultsStore
from toolkit.results.trend import METRICS, find_changes, trend

from .hostile import Elements
from .records import BOARD, make_run, record


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_two_runs_in_other_conditions_name_the_differences_first() -> None:
    base = make_run("run-a", [record("fp32"), record("int8", median_ms=0.5)])
    other = {**record("fp32", median_ms=2.0), "threads": 4,
             "runtime": {"name": "tflite-runtime", "version": "2.14.0"},
             "board": {**BOARD, "cpu_governor": "powersave"}}
    new = make_run("run-b", [other, record("int8", median_ms=0.5)])
    diff = diff_runs(base, new)
    assert diff.reading == ("runtime ai-edge-litert 2.3.0 vs tflite-runtime 2.14.0, "
                            "threads 1 vs 4: figures not comparable")
    fp32 = next(v for v in diff.variants if v.variant == "fp32")
    differing = [f.name for f in fp32.facts if f.differs]
    assert differing[:3] == ["runtime", "threads", "governor"]  # conditions, then figures
    assert {"p50", "p90", "p99"} <= set(differing[3:])
    assert [f.differs for f in fp32.facts] == sorted((f.differs for f in fp32.facts),
                                                     reverse=True)
    assert next(f for f in fp32.figures if f.name == "p50").change.startswith("+")


def test_same_conditions_read_as_the_latency_change_and_a_missing_variant() -> None:
    base = make_run("run-a", [record("fp32"), record("int8", median_ms=0.5)])
    new = make_run("run-b", [record("fp32", median_ms=1.2), record("int8", median_ms=0.5),
                             {**record("int4"), "recipe": "int4"}])
    reading = diff_runs(base, new).reading
    assert reading.startswith("same conditions: p50 +20.0 % on local/fp32")
    assert "local/int8" not in reading and "local/int4 only in run-b" in reading


def test_edge_runs_diff_prints_a_table_per_variant_and_json(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    board = {**BOARD, "hostname": "lab-\x1b[2J"}
    with ResultsStore(path) as store:
        store.add_run(make_run("run-a", [record("fp32")]))
        store.add_run(make_run("run-b", [{**record("fp32"), "threads": 2, "board": board}],
                               created_at="2026-11-23T20:00:00+00:00"))
    shown = invoke("runs", "diff", "run-a", "run-b", "--store", str(path))
    assert shown.exit_code == 0
    lines = shown.output.splitlines()
    assert lines[0] == "threads 1 vs 2, hostname lab-1 vs lab-\\x1b[2J: figures not comparable"
    assert "\x1b" not in shown.output
    table = lines[lines.index(next(line for line in lines if "local/fp32" in line)):]
    assert [row.split()[:2] for row in table[1:3]] == [["*", "threads"], ["*", "hostname"]]
    document = json.loads(invoke("runs", "diff", "run-a", "run-b", "--store", str(path),
                                 "--json").output)
    threads = next(f for f in document["variants"][0]["conditions"] if f["name"] == "threads")
    assert threads == {"name": "threads", "base": "1", "new": "2", "ratio": None,
                       "change": "", "differs": True}
    missing = invoke("runs", "diff", "run-a", "nope", "--store", str(path))
    assert missing.exit_code == 2 and "no run or tag 'nope'" in missing.output


def _series(path: Path, factors: list[float], *, model: str = "digits_cnn") -> None:
    with ResultsStore(path) as store:
        for i, factor in enumerate(factors):
            store.add_run(make_run(f"{model}-{i:02d}",
                                   [record("int8", median_ms=factor, seed=i, n=60)], model=model,
                                   created_at=f"2026-11-{1 + i // 24:02d}T{i % 24:02d}:00:00"))


def _noise(seed: int) -> list[float]:
    return np.random.default_rng(seed).lognormal(0.0, 0.03, 30).tolist()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_step_halfway_is_found_at_its_run(tmp_path: Path, seed: int) -> None:
    factors = [f * (1.2 if i >= 15 else 1.0) for i, f in enumerate(_noise(seed))]
    _series(tmp_path / "s.sqlite", factors)
    with ResultsStore(tmp_path / "s.sqlite") as store:
        found = trend(store, target="local", variant="int8")
    assert [(c.index, c.run_id) for c in found.changes] == [(15, "digits_cnn-15")]
    assert found.changes[0].p_value < 1e-3 and found.changes[0].change.startswith("+")
    assert len(found.points) == 30 and "penalty 5 ln n" in found.method


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_noise_alone_has_no_change_point(seed: int) -> None:
    assert find_changes(_noise(seed))[0] == []


@pytest.mark.parametrize("after", [3, 5, 8])
def test_a_figure_that_repeats_exactly_has_any_lasting_step_found(after: int) -> None:
    # A file's size or accuracy is the same in every run until the file changes: scaled by
    # the series' own deviation, a step of 5 runs in 30 would be hidden whatever its size.
    sizes = [100_000.0] * (30 - after) + [100_500.0] * after
    assert find_changes(sizes)[0] == [30 - after]
    assert find_changes([100_000.0] * 30)[0] == []


def test_too_short_a_series_is_not_searched() -> None:
    changes, method = find_changes([1.0, 2.0, 3.0])
    assert changes == [] and method.startswith("no change looked for")


def test_edge_trend_marks_the_change_row(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    _series(path, [f * (1.2 if i >= 15 else 1.0) for i, f in enumerate(_noise(1))])
    shown = invoke("trend", "--target", "local", "--variant", "int8", "--store", str(path))
    assert shown.exit_code == 0
    marked = [line for line in shown.output.splitlines() if "<- change" in line]
    assert len(marked) == 1 and marked[0].split()[:2] == ["16", "digits_cnn-15"]
    assert "Changed at run digits_cnn-15 (#16)" in shown.output
    document = json.loads(invoke("trend", "--target", "local", "--variant", "int8",
                                 "--store", str(path), "--json").output)
    assert [c["index"] for c in document["changes"]] == [15]


def test_a_trend_of_several_models_or_none_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    _series(path, [1.0] * 3)
    _series(path, [1.0] * 3, model="other")
    mixed = invoke("trend", "--target", "local", "--variant", "int8", "--store", str(path))
    assert mixed.exit_code == 2 and "--model" in mixed.output
    one = invoke("trend", "--target", "local", "--variant", "int8", "--model", "other",
                 "--store", str(path))
    assert one.exit_code == 0 and "3 runs" in one.output
    with ResultsStore(path) as store, pytest.raises(UsageError, match="no stored run"):
        trend(store, target="local", variant="fp32")


def test_the_cli_offers_every_metric_the_library_follows() -> None:
    assert METRIC_NAMES == tuple(METRICS)


def test_edge_trend_html_is_one_offline_page_with_the_change_marked(tmp_path: Path) -> None:
    path, page = tmp_path / "s.sqlite", tmp_path / "trend.html"
    _series(path, [f * (1.2 if i >= 15 else 1.0) for i, f in enumerate(_noise(2))],
            model="m<script>")
    shown = invoke("trend", "--target", "local", "--variant", "int8", "--store", str(path),
                   "--html", str(page))
    assert shown.exit_code == 0
    text = page.read_text()
    assert text.count("<svg") == 1 and text.count('class="change"') == 2  # the line, the row
    assert text.count('class="mark"') == 30 and text.count('class="level"') == 2
    assert "<script>" not in text and "http" not in text.replace("http://www.w3.org", "")
    assert "Changed at run m&lt;script&gt;-15 (#16)" in text


def test_edge_trend_takes_one_target(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    _series(path, [1.0] * 3)
    two = invoke("trend", "--target", "local,lab-1", "--variant", "int8", "--store", str(path))
    assert two.exit_code == 2 and "give one --target" in two.output


def test_each_point_of_the_trend_page_links_to_its_run_whatever_its_folder(
        tmp_path: Path) -> None:
    """A run folder from the store is hostile too: quoted into a relative path, escaped."""
    path, page = tmp_path / "s.sqlite", tmp_path / "pages" / "trend.html"
    folders = [str(tmp_path / "out" / "runs" / "r-1"), 'javascript:alert(1)//"><script>x',
               "edge-out/runs/r 3"]
    with ResultsStore(path) as store:
        for index, folder in enumerate(folders):
            run = make_run(f"r-{index + 1}", [record("int8")],
                           created_at=f"2026-11-01T0{index}:00:00")
            store.add_run(dataclasses.replace(run, report_dir=folder))
    page.parent.mkdir()
    assert invoke("trend", "--target", "local", "--variant", "int8", "--store", str(path),
                  "--html", str(page)).exit_code == 0
    text = page.read_text()
    assert Elements(text).injected() == [] and "<script>" not in text
    links = [value or "" for _, name, value in Elements(text).attributes if name == "href"]
    # each run from the chart, then from the table; each a path from the page's folder
    assert all(link.startswith("./") and ":" not in link for link in links)
    assert [(page.parent / unquote(link)).resolve() for link in links] == [
        Path(folder, "report.html").resolve() for _ in (1, 2) for folder in folders]
