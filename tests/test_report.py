"""Reports: the HTML opens offline in headless Chromium with every chart; Markdown is short."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from toolkit.cli.main import main
from toolkit.report.render import render_html, render_markdown, report_plots, report_rows
from toolkit.report.svgplot import Distribution, Point, latency_plot, pareto_front, tradeoff_plot
from toolkit.report.trend_page import render_trend_page
from toolkit.results.store import ResultsStore

from .chromium import Chromium, chromium_binary
from .hostile import Elements, hostile, hostile_run
from .records import BOARD, make_run, record
from .report_cases import CASES, PASSED, STEP_AT, failed_variant_run, stored_trend, trend_runs

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
PI = dict(BOARD, hostname="pi", machine="aarch64", cpu_model="Cortex-A76",
          board_model="Raspberry Pi 5 Model B Rev 1.0")
SVG = "{http://www.w3.org/2000/svg}"
ALL_PLOTS = ["plot-latency", "plot-tradeoff", "plot-size", "plot-energy"]
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
        "plot-latency", "plot-tradeoff", "plot-size"]
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


@pytest.mark.integration  # a real headless Chromium
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


# Everything a reader sees in each chart, as the browser laid it out: text boxes that
# leave their chart or cover each other, point labels over another variant's marker,
# and the size of every variant's marks.
GEOMETRY = """JSON.stringify([...document.querySelectorAll('svg.plot')].map(svg => {
  const frame = svg.getBoundingClientRect();
  const texts = [...svg.querySelectorAll('text')].map(t => ({text: t.textContent,
    box: t.getBoundingClientRect(), variant: t.dataset.variant || '',
    point: t.classList.contains('point-label')}));
  const cover = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1
    && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1;
  const clipped = texts.filter(t => t.box.left < frame.left - 0.5 || t.box.right > frame.right
    + 0.5 || t.box.top < frame.top - 0.5 || t.box.bottom > frame.bottom + 0.5).map(t => t.text);
  const overlapping = [];
  texts.forEach((a, i) => texts.slice(i + 1).forEach(b => {
    if (cover(a.box, b.box)) overlapping.push([a.text, b.text]); }));
  const marks = [...svg.querySelectorAll('.mark')].map(m => {
    const box = m.getBoundingClientRect();
    return {variant: m.dataset.variant, width: box.width, height: box.height, box: box,
            box_plot: m.classList.contains('box')}; });
  const covered = [];
  texts.filter(t => t.point).forEach(t => marks.forEach(m => {
    if (m.variant !== t.variant && cover(t.box, m.box)) covered.push([t.text, m.variant]); }));
  return {id: svg.id, clipped, overlapping, covered, ticks: texts.map(t => t.text),
          marks: marks.map(({box, ...rest}) => rest), width: frame.width,
          page: svg.closest('figure').getBoundingClientRect().width};
}))"""


@pytest.mark.integration  # a real headless Chromium
@pytest.mark.skipif(chromium_binary() is None, reason="needs Debian's chromium "
                    "(scripts/install-dev.sh installs it; CI always has it)")
def test_charts_are_readable_as_chromium_lays_them_out(tmp_path: Path) -> None:
    """No label clipped or covering another, no point label over another variant's marker,
    a visible mark per measured variant, and boxes of microsecond models wide enough to
    read beside a 15 ms hiccup (on the old linear axis they were a fraction of a pixel)."""
    laid_out = {}
    with Chromium(tmp_path / "profile") as browser:
        for name, make in CASES.items():
            run = make()
            path = tmp_path / f"{name}.html"
            path.write_text(render_html(run), encoding="utf-8")
            page = browser.open(path, probe=GEOMETRY)
            assert page.errors == [], name
            laid_out[name] = (run, {p["id"]: p for p in json.loads(page.probe)})
    for name, (run, plots) in laid_out.items():
        for plot in plots.values():
            where = (name, plot["id"])
            assert plot["clipped"] == [], where
            assert plot["overlapping"] == [], where
            assert plot["covered"] == [], where
            assert all(m["width"] > 0 and m["height"] > 0 for m in plot["marks"]), where
            assert plot["width"] >= 0.9 * plot["page"], where  # as wide as the page's column
        measured = [r for r in run.results if r.ok]
        shown = {m["variant"] for m in plots["plot-latency"]["marks"]}
        assert shown == {f"{r.target}/{r.variant}" for r in measured}, name
        in_tradeoff = {m["variant"] for m in plots["plot-tradeoff"]["marks"]}
        recipes = {f"{r.target}/{r.variant}": (r.target, r.recipe) for r in measured}
        assert {recipes[v] for v in in_tradeoff} == {(r.target, r.recipe) for r in measured}
        assert len(in_tradeoff) == len({(r.target, r.recipe) for r in measured}), name
        for target in {r.target for r in measured if r.swept}:
            plot_id = "plot-threads" + (f"-{target}" if len({r.target for r in run.results})
                                         > 1 else "")
            assert len(plots[plot_id]["marks"]) == sum(
                r.swept and r.target == target for r in measured), name
        boxes = [m["width"] for m in plots["plot-latency"]["marks"] if m["box_plot"]]
        assert min(boxes) > 8, (name, boxes)
        assert any(tick.endswith(" us") for tick in plots["plot-latency"]["ticks"]), name
    hiccup = laid_out["failed-variant"][1]["plot-latency"]["ticks"]
    assert "1 run: 15.2 ms" not in hiccup and "2 runs \u2264 15.2 ms" in hiccup
    assert "plot-threads-local" in laid_out["everything"][1]
    assert "plot-threads-rpi5" in laid_out["everything"][1]


#: Where the trend page's points, change lines and table rows are, and what they link to.
TREND = """JSON.stringify({
  points: [...document.querySelectorAll('#plot-trend circle.mark')].map(c => {
    const box = c.getBoundingClientRect(), link = c.closest('a');
    return {x: box.left + box.width / 2,
            link: link ? new URL(link.href.baseVal, document.baseURI).href : ''}; }),
  changes: [...document.querySelectorAll('#plot-trend line.change')].map(l => {
    const box = l.getBoundingClientRect(); return box.left + box.width / 2; }),
  rows: [...document.querySelectorAll('tbody tr')].map(r => ({
    change: r.classList.contains('change'), link: r.querySelector('a').href})),
  said: [...document.querySelectorAll('body > p')].map(p => p.textContent)})"""


@pytest.mark.integration  # a real headless Chromium
@pytest.mark.skipif(chromium_binary() is None, reason="needs Debian's chromium "
                    "(scripts/install-dev.sh installs it; CI always has it)")
def test_the_trend_page_marks_the_step_at_its_run_and_links_each_point(tmp_path: Path) -> None:
    """32 runs of the README model with a slower file from run 17: the chart laid out
    cleanly, its one change line between runs 16 and 17, that row marked; 30 runs without
    a step: no change point.  Every point and row opens its own run's report."""
    pages = {}
    for name, runs in (("step", trend_runs()), ("steady", trend_runs(30, step=False))):
        path = tmp_path / f"{name}.html"
        found = stored_trend(runs, tmp_path / f"{name}.sqlite")
        path.write_text(render_trend_page(found, page_dir=tmp_path), encoding="utf-8")
        pages[name] = runs, path
    laid_out = {}
    with Chromium(tmp_path / "profile") as browser:
        for name, (_, path) in pages.items():
            geometry, shown = (browser.open(path, probe=probe) for probe in (GEOMETRY, TREND))
            assert geometry.errors == [] and shown.errors == [], name
            laid_out[name] = json.loads(geometry.probe), json.loads(shown.probe)
    for name, (runs, _) in pages.items():
        [plot], shown = laid_out[name]
        assert (plot["id"], plot["clipped"], plot["overlapping"], plot["covered"]) == (
            "plot-trend", [], [], []), name
        assert plot["width"] >= 0.9 * plot["page"], name
        assert len(plot["marks"]) == len(runs) and all(
            m["width"] > 0 and m["height"] > 0 for m in plot["marks"]), name
        reports = [(Path.cwd() / run.report_dir / "report.html").as_uri() for run in runs]
        assert [point["link"] for point in shown["points"]] == reports, name
        assert [row["link"] for row in shown["rows"]] == reports, name
    step = laid_out["step"][1]
    xs = [point["x"] for point in step["points"]]
    [change] = step["changes"]
    assert xs[STEP_AT - 1] < change < xs[STEP_AT]
    assert "change at run 17" in laid_out["step"][0][0]["ticks"]
    assert [i for i, row in enumerate(step["rows"]) if row["change"]] == [STEP_AT]
    assert step["said"][0].startswith(f"Changed at run r-trend-17 (#{STEP_AT + 1}): ")
    steady = laid_out["steady"][1]
    assert steady["changes"] == [] and not any(row["change"] for row in steady["rows"])
    assert "No change point found." in steady["said"]


def test_a_microsecond_model_beside_a_15_ms_hiccup_keeps_readable_boxes() -> None:
    """On the old linear axis out to the slowest run the boxes were a fraction of a pixel."""
    plot = next(p for p in report_plots(failed_variant_run()) if p.plot_id == "plot-latency")
    widths = [float(w) for w in re.findall(r'class="box mark"[^>]* width="([\d.]+)"', plot.svg)]
    assert len(widths) == 3 and min(widths) > 8
    ticks = re.findall(r'text-anchor="middle">([^<]+ (?:us|ms))</text>', plot.svg)
    assert "10 us" in ticks and "2 runs \u2264 15.2 ms" in plot.svg


def test_the_accuracy_axis_never_passes_100_percent() -> None:
    svg = tradeoff_plot("t", [Point("a", 0.01, 100.0, 10), Point("b", 0.02, 99.2, 5)],
                        plot_id="p")
    ticks = [float(t) for t in re.findall(r'text-anchor="end">([\d.]+)</text>', svg)]
    assert ticks and max(ticks) <= 100


def test_the_verdict_column_gives_reasons_and_the_output_check_as_a_pass_mark() -> None:
    rows = {row.variant: row for row in report_rows(failed_variant_run())}
    assert rows["int8"].verdict == "VALID"
    assert rows["int8"].output_check == "\u2713 outputs match on the board (within 2 output steps)"
    assert rows["int8"].outputs_match is True
    assert rows["int8-dynamic"].verdict.startswith("failed (compress): not built: ")
    assert rows["int8-dynamic"].output_check == "" and rows["int8-dynamic"].outputs_match is None
    html = render_html(failed_variant_run())
    assert 'class="verified">\u2713 outputs match on the board (within 2 output steps)' in html
    assert 'class="invalid">failed (compress): not built: ' in html
    assert "| VALID; \u2713 outputs match on the board (within 2 output steps) |" in \
        render_markdown(failed_variant_run())
    wrong = make_run("r", [{**record("int8"), "output_check": {
        "ok": False, "rule": "", "summary": "neither rule held: top-1 0.41"}}])
    assert report_rows(wrong)[0].output_check == (
        "\u2717 outputs differ from the host's on the board: neither rule held: top-1 0.41")
    assert 'class="mismatch">\u2717 outputs differ' in render_html(wrong)
    invalid = render_html(two_board_run())
    assert 'class="invalid">INVALID: throttled during the runs' in invalid


def test_energy_missing_for_a_reason_says_the_reason() -> None:
    slow_sensor = {**record("fp32"), "power": {
        "sensor": "tegrastats", "rate_hz_asked": 20.0,
        "error": "no power sample during the 1.00 s of measured runs (the sensor gave "
                 "0.5 Hz): measure longer (--min-seconds) or use a sensor that answers faster"}}
    text = render_markdown(make_run("r", [slow_sensor]))
    assert "energy not measured: no power sample during the 1.00 s of measured runs" in text


#: The fields of :func:`hostile_run` a report shows (the hostname and the file name are not).
SHOWN = ("model", "tag", "target", "int8", "broken", "error", "cpu_model", "board_model",
         "system", "release", "python", "other-cpu", "other-board", "runtime", "version",
         "reason", "requested", "adapter", "rule", "summary", "power", "throttled", "op",
         "kernel", "node-op", "method")


def test_hostile_strings_from_a_board_are_text_in_the_html_report() -> None:
    html = render_html(hostile_run())
    assert Elements(html).injected() == []
    missing = [field for field in SHOWN if f"{field}&lt;script&gt;alert(1)" not in html]
    assert missing == []


def test_hostile_strings_from_a_board_are_text_in_the_markdown_report() -> None:
    from markdown_it import MarkdownIt

    text = render_markdown(hostile_run())
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    assert Elements(html).injected() == []
    shown = set(SHOWN) - {"tag", "board_model", "system", "release", "python", "other-board"}
    missing = [field for field in shown if f"{field}&lt;script&gt;alert(1)" not in html]
    assert missing == []
    for table in re.findall(r"<table>.*?</table>", html, re.S):
        widths = {row.count("<td") + row.count("<th") for row in re.findall(
            r"<tr>.*?</tr>", table, re.S)}
        assert len(widths) == 1, "a string from the board split or merged a table cell"
    assert hostile("x").count("|") == 1 and "a | b c" in html


def test_a_file_the_host_found_wrong_never_gets_a_green_mark_whatever_the_board_says() -> None:
    # int8 of a seeded random CNN whose float logits are about 1e-9: it computes only zeros,
    # on the host and on the board alike, so an older board's check "matched".
    zeros = "the file's outputs are all zero"
    garbage = {**record("int8"), "fidelity": {
        "top1_agreement": 0.0, "cosine_similarity": 0.0, "sqnr_db": 0.0, "degenerate": zeros,
        "agreement_metric": "cosine"}, "accuracy": None,
        "runtime_compat": [{"name": "ai-edge-litert", "version": "2.3.0", "loads": True,
                            "top1_agreement_with_source": 0.0, "cosine_with_source": 0.0,
                            "degenerate": zeros, "ok": False}],
        "output_check": {"ok": True, "rule": "within 2 output steps", "samples": 32,
                         "max_abs_diff": 0.0, "top1_agreement": 1.0, "summary": "ok"}}
    [row] = report_rows(make_run("r", [garbage]))
    assert row.outputs_match is False and "\u2713" not in row.output_check
    assert row.output_check == (
        "\u2717 disagrees with its source model on the host (cos 0.0000; the file's outputs are "
        "all zero): the board matching the host's outputs proves nothing")
    assert row.accuracy == "no signal (degenerate outputs)"
    html = render_html(make_run("r", [garbage]))
    assert 'class="mismatch">\u2717 disagrees with its source model' in html
    assert "class=\"verified\"" not in html
    # Without the degenerate name: the host's check alone (top-1 below the bar) is enough.
    wrong = {**record("int8"), "runtime_compat": [{"name": "ai-edge-litert", "loads": True,
                                                   "top1_agreement_with_source": 0.41,
                                                   "cosine_with_source": 0.8, "ok": False}],
             "output_check": PASSED}
    assert report_rows(make_run("r", [wrong]))[0].output_check.startswith(
        "\u2717 disagrees with its source model on the host (top-1 agreement 0.410)")
    # A compat runtime judged against the host (not the source) does not void the board's.
    other = {**record("int8"), "runtime_compat": [
        {"name": "ai-edge-litert", "top1_agreement_with_source": 1.0, "ok": True},
        {"name": "tflite-runtime", "top1_agreement_with_host": 0.02, "ok": False}],
        "output_check": PASSED}
    assert report_rows(make_run("r", [other]))[0].outputs_match is True


def test_degenerate_outputs_on_the_board_are_named_not_a_match() -> None:
    check = {"ok": False, "rule": "", "samples": 32, "max_abs_diff": 0.0,
             "top1_agreement": 1.0, "degenerate": "the host's outputs are all zero; the "
             "board's outputs are all zero", "summary": "degenerate outputs: ..."}
    [row] = report_rows(make_run("r", [{**record("int8"), "output_check": check}]))
    assert row.outputs_match is False
    assert row.output_check == ("\u2717 degenerate outputs on the board: the host's outputs "
                                "are all zero; the board's outputs are all zero")


def test_stalls_are_named_beside_valid() -> None:
    stalled = {**record("int8"), "verdict": {"status": "VALID", "reasons": [], "conditions": [
        "stalls: 10.2 % of runs above 10x the median (0.44 ms)"]}}
    [row] = report_rows(make_run("r", [stalled]))
    assert row.verdict == "VALID; stalls: 10.2 % of runs above 10x the median (0.44 ms)"
    assert row.trusted and row.conditions
    assert 'class="caveat">VALID; stalls: 10.2 %' in render_html(make_run("r", [stalled]))
    assert "| VALID; stalls: 10.2 % of runs above 10x the median (0.44 ms)" in \
        render_markdown(make_run("r", [stalled]))


def _svg(text: str) -> ET.Element:
    return ET.fromstring(text)


def test_a_tight_run_keeps_its_box_beside_thousands_of_runs_beyond_the_whiskers() -> None:
    """60,000 runs within 1 % of 1 ms and a tail of slow ones: 6,000 runs lie beyond the
    whiskers.  They are a strip below the box, counted, never marks on the box's line."""
    rng = np.random.default_rng(0)
    samples = np.concatenate([rng.normal(1.0, 0.01, 57_000), rng.uniform(1.5, 3.0, 3_000)])
    svg = _svg(latency_plot("Latency", [Distribution("fp32", samples, key="local/fp32")],
                            plot_id="plot-latency"))
    assert not svg.findall(f".//{SVG}circle")  # no dot per run
    box = next(r for r in svg.iter(f"{SVG}rect") if "box" in r.get("class", ""))
    top, bottom = float(box.get("y")), float(box.get("y")) + float(box.get("height"))
    assert float(box.get("width")) > 8  # the real p25-p75 box, visible
    strip = svg.find(f".//{SVG}g[@class='outliers']")
    assert strip is not None
    p5, p95 = np.percentile(samples, [5, 95])
    beyond = int(((samples < p5) | (samples > p95)).sum())
    assert strip.findtext(f"{SVG}title").startswith(f"{beyond} runs beyond the whiskers")
    cells = strip.findall(f"{SVG}rect")
    assert 0 < len(cells) <= 400
    for cell in cells:  # all below the box, none over it
        assert float(cell.get("y")) >= bottom and float(cell.get("y")) > top


def test_charts_take_the_width_of_the_page() -> None:
    """Each chart scales to its column (viewBox, width 100 %), not a fixed 760 px."""
    for plot in report_plots(two_board_run()):
        root = _svg(plot.svg)
        assert root.get("width") == "100%" and root.get("height") is None, plot.plot_id
        assert len(root.get("viewBox").split()) == 4


def test_energy_is_shown_in_the_unit_that_fits_it() -> None:
    run = make_run("r", [record("fp32", energy_mj=3220.0), record("int8", energy_mj=1900.0)])
    assert [row.energy for row in report_rows(run)] == ["3.22 J", "1.9 J"]
    energy = next(p for p in report_plots(run) if p.plot_id == "plot-energy").svg
    assert "3.22 J" in energy and "energy (J)" in energy and "e+03" not in energy
    assert "3.22 J" in render_markdown(run) and "e+03" not in render_html(run)
