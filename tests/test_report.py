"""Reports: the HTML opens offline in headless Chromium with every chart; Markdown is short."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli import main
from toolkit.report import render_html, render_markdown, report_plots
from toolkit.store import ResultsStore
from toolkit.svgplot import pareto_front

from .chromium import Chromium, chromium_binary
from .records import BOARD, make_run, record

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
PI = dict(BOARD, hostname="pi", machine="aarch64", cpu_model="Cortex-A76",
          board_model="Raspberry Pi 5 Model B Rev 1.0")
ALL_PLOTS = ["plot-latency", "plot-pareto", "plot-energy", "plot-memory", "plot-boards"]
PROBE = """JSON.stringify([...document.querySelectorAll('svg.plot')].map(s => {
  const box = s.getBoundingClientRect();
  return {id: s.id, width: box.width, height: box.height,
          marks: s.querySelectorAll('rect, circle, polyline').length};
}))"""


def two_board_run():
    return make_run("r-two", [
        record("fp32", energy_mj=1.9, board=BOARD, seed=1),
        record("int8", size=30_000, accuracy=0.965, median_ms=0.7, energy_mj=1.2, seed=2,
               board=BOARD),
        {**record("fp32", target="rpi5", median_ms=3.1, energy_mj=6.0, seed=3, board=PI),
         "thermal": {"before": {"zones_c": {"cpu": 48.0}, "cpu_mhz": {}},
                     "after": {"zones_c": {"cpu": 61.5, "gpu": 55.0}, "cpu_mhz": {}},
                     "throttled": ["soft temperature limit active"]},
         "verdict": {"status": "INVALID", "reasons": ["throttled during the runs"]}},
        record("int8", target="rpi5", size=30_000, accuracy=0.965, median_ms=1.9,
               energy_mj=3.5, seed=4, board=PI),
    ], tags=("main",))


def test_pareto_front_keeps_only_undominated_variants() -> None:
    assert pareto_front([("a", 1.0, 0.9), ("b", 2.0, 0.95), ("c", 2.5, 0.94)]) == ["a", "b"]


def test_every_chart_is_made_when_the_data_supports_it() -> None:
    assert [p.plot_id for p in report_plots(two_board_run())] == ALL_PLOTS
    one_board_no_energy = make_run("r", [record("fp32"), record("int8", size=30_000)])
    assert [p.plot_id for p in report_plots(one_board_no_energy)] == [
        "plot-latency", "plot-pareto", "plot-memory"]
    assert "Energy per inference: not measured" in render_html(one_board_no_energy)


def test_html_is_one_offline_file() -> None:
    html = render_html(two_board_run())
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script" not in html and "<link" not in html
    assert "hottest 61.5 C after the runs" in html
    assert "INVALID: throttled during the runs" in html
    assert "throttled: soft temperature limit active" in html
    assert 'id="cross-board"' in html


def test_markdown_has_a_table_per_target_with_deltas_against_a_baseline() -> None:
    baseline = make_run("r-base", [record("fp32", median_ms=0.95, seed=9, accuracy=0.975)])
    text = render_markdown(make_run("r-new", [record("fp32", seed=1)]), baseline=baseline)
    assert "deltas against `r-base`" in text
    row = next(line for line in text.splitlines() if line.startswith("| local | fp32 |"))
    assert re.search(r"p50 \+[45]\.\d%", row) and "acc -0.50 pt" in row
    assert len(text.splitlines()) < 20


@pytest.mark.skipif(chromium_binary() is None, reason="needs Debian's chromium "
                    "(scripts/install-dev.sh installs it; CI always has it)")
def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    with ResultsStore(store) as opened:
        opened.add_run(two_board_run())
    html = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["report", "main", "--store", str(store), "--format",
                                       "html", "-o", str(html)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with Chromium(tmp_path / "profile") as browser:
        page = browser.open(html, probe=PROBE)
        broken = tmp_path / "broken.html"  # proves the harness sees errors at all
        broken.write_text('<p>x</p><script>console.error("seen"); undefinedCall();</script>'
                          '<img src="missing.png">')
        assert len(browser.open(broken, probe="1").errors) == 3
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "report-chromium.png").write_bytes(page.screenshot_png)
    assert page.errors == []
    plots = {p["id"]: p for p in json.loads(page.probe)}
    assert list(plots) == ALL_PLOTS
    for plot in plots.values():
        assert plot["width"] > 300 and plot["height"] > 100 and plot["marks"] >= 2, plot
    assert page.screenshot_png.startswith(b"\x89PNG") and len(page.screenshot_png) > 20_000


def test_a_thread_sweep_keeps_the_size_against_fp32() -> None:
    """Swept variants are named fp32-t1, int8-t2, ...: the fp32 recipe is still the reference."""
    from toolkit.report import report_rows

    from .records import make_run, record

    results = []
    for threads in (1, 2):
        for recipe, size in (("fp32", 100_000), ("int8", 30_000)):
            swept = record(f"{recipe}-t{threads}", size=size)
            swept.update(recipe=recipe, threads=threads)
            results.append(swept)
    rows = report_rows(make_run("sweep", results))
    assert [row.size_ratio for row in rows] == ["1.00x", "0.30x", "1.00x", "0.30x"]


def test_a_variant_measured_again_says_why_in_the_report() -> None:
    again = {**record("fp32"), "earlier_attempts": [{
        "verdict": {"status": "INVALID", "unsteady_only": True,
                    "reasons": ["coefficient of variation 0.110 (robust: MAD / median) above "
                                "the limit 0.1"]},
        "latency_ms": {"p50": 1.0}, "runs": 400}]}
    text = render_markdown(make_run("r", [again]))
    assert "measured again: attempt 1 was INVALID (coefficient of variation 0.110" in text
