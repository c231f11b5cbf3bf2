"""Durations print in the unit that fits them: a 15 us model is not 0.015 in every table."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli import main
from toolkit.report import render_html, render_markdown
from toolkit.store import ResultsStore
from toolkit.units import format_duration

from .records import make_run, record


@pytest.mark.parametrize("ms, text", [
    (0.00235, "2.35 us"), (0.684, "0.684 ms"), (1523.0, "1.52 s"), (0.015, "15.0 us"),
    (0.002, "2.00 us"), (0.09996, "0.100 ms"), (12.345, "12.3 ms"), (150.0, "150 ms"),
    (999.6, "1.00 s"), (0.00005, "50.0 ns"), (-0.5, "-0.500 ms"), (0.0, "0 ms"),
])
def test_three_significant_figures_in_a_fitting_unit(ms: float, text: str) -> None:
    assert format_duration(ms) == text


def microsecond_run():
    result = record("fp32", median_ms=0.015)
    result["latency_ms"].update(p50=0.01512, p90=0.01634, p99=0.0402)
    return make_run("r-us", [result])


def test_reports_and_runs_show_show_microseconds(tmp_path: Path) -> None:
    markdown, html = render_markdown(microsecond_run()), render_html(microsecond_run())
    assert "| 15.1 us | 16.3 us | 40.2 us |" in markdown
    assert '<td class="num">15.1 us</td>' in html
    assert "0.015" not in markdown
    store = tmp_path / "s.sqlite"
    with ResultsStore(store) as opened:
        opened.add_run(microsecond_run())
    shown = CliRunner().invoke(main, ["runs", "show", "latest", "--store", str(store)],
                               catch_exceptions=False)
    assert shown.exit_code == 0 and "| 15.1 us | 16.3 us | 40.2 us |" in shown.output
