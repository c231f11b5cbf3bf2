"""Durations print in the unit that fits them: a 15 us model is not 0.015 in every table."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli.main import main
from toolkit.report.render import render_html, render_markdown
from toolkit.results.store import ResultsStore
from toolkit.units import format_duration, format_energy, format_memory, format_size

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


@pytest.mark.parametrize("size, text", [
    (36_962_304, "35.2 MiB"), (30_000, "29.3 KiB"), (2**20, "1.0 MiB"), (512, "0.5 KiB")])
def test_sizes_print_as_the_report_prints_them(size: int, text: str) -> None:
    from toolkit.report.render import _size

    assert format_size(size) == text == _size(size)


@pytest.mark.parametrize("size", [60_000_000, 36_962_304, 500_000, 0])
def test_memory_prints_in_mib_as_the_report_prints_it(size: int) -> None:
    from toolkit.report.render import _mib

    assert format_memory(size) == _mib(size)
    assert format_memory(36_962_304) == "35.2 MiB"


@pytest.mark.parametrize("mj, text", [
    (9.247, "9.25 mJ"), (10.4, "10.4 mJ"), (0.0153, "15.3 uJ"), (1523.0, "1.52 J"),
    (999.6, "1 J"), (1.0, "1 mJ"), (0.0, "0 mJ"), (-2.5, "-2.5 mJ")])
def test_energy_prints_in_j_mj_or_uj(mj: float, text: str) -> None:
    assert format_energy(mj) == text


@pytest.mark.parametrize("mj", [9.247, 10.4, 0.0153, 1.0, 0.5, 999.0])
def test_energy_below_a_joule_prints_as_the_report_prints_it(mj: float) -> None:
    from toolkit.report.svgplot import format_energy as report_energy

    assert format_energy(mj) == report_energy(mj)
