"""Screenshots of the HTML report for five runs, taken by a real headless Chromium.

All five are real runs, with short settings: the README example and a thread sweep
are ``edge deploy examples/digits_cnn.py --target local``; the 2-board bench is
``edge bench`` on ``local`` and a second board reached over SSH (a real OpenSSH server
on loopback, started here as the tests start it: both are this machine, so the report
notes they were measured side by side); the failed variant is a deploy of
tests/models/embedding_bag.py whose int8 cannot be built (the model file has no
calibration data); the multi-output profile is ``edge deploy tests/models/two_heads.py
--profile`` (two inputs, two outputs, fp32 and int8-dynamic, each profiled operator by
operator).  ``--from-records`` takes them from stored-shape records instead
(tests/report_cases.py: seconds, no conversion, no sshd; the profile there is the digits
CNN's).  Two ``edge trend --html`` pages follow: 32 runs of the README model on ``local``
with a slower file of the same name swapped in from run 17 (``trend-step``), and 30 runs
without a step (``trend-steady``); real deploys stored by benchmarks/trend.py's
``store_series`` under OUT_DIR/trend-runs/ (each page's points link to those runs'
reports), or with ``--from-records`` tests/report_cases.py's ``trend_runs`` (seeded
noise, a ~15 % slower level from run 17), whose reports are written there too.  Each
page is written as NAME.html beside NAME.png, and laid out through the geometry probe of
tests/test_report.py: a clipped or overlapping label, a point label over another
variant's marker or a chart narrower than the page stops it.

Usage::

    python benchmarks/report_screenshots.py [OUT_DIR] [--from-records]
    # OUT_DIR defaults to report-screenshots/
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from trend import store_series  # noqa: E402  (a sibling script, not a package)

from tests.chromium import Chromium, chromium_binary  # noqa: E402
from tests.lab import Sshd  # noqa: E402
from tests.report_cases import (  # noqa: E402
    STEP_AT,
    failed_variant_run,
    profiled_run,
    readme_run,
    stored_trend,
    thread_sweep_run,
    trend_runs,
    two_board_run,
)
from tests.test_report import GEOMETRY  # noqa: E402
from toolkit.report.render import render_html, write_report  # noqa: E402
from toolkit.report.trend_page import render_trend_page  # noqa: E402
from toolkit.results.store import ResultsStore, StoredRun  # noqa: E402
from toolkit.results.trend import Trend, trend  # noqa: E402

#: Short enough for a busy 2-core machine, long enough for a few hundred runs per variant.
SHORT = ("--target", "local", "--min-runs", "200", "--min-seconds", "0.5", "--cooldown", "0")


def deployed(out: Path, *extra: str) -> StoredRun:
    """The run a real ``edge deploy examples/digits_cnn.py`` stores under ``out``."""
    edge("deploy", str(REPO / "examples" / "digits_cnn.py"), *SHORT, *extra, "-o", str(out))
    with ResultsStore(out / "results.sqlite") as store:
        return store.get_run("latest")


def edge(*arguments: str, accept: tuple[int, ...] = (0,)) -> None:
    """Run the edge command line; stop with its last line if it fails."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "toolkit", *arguments], cwd=REPO,
                          capture_output=True, text=True, check=False)
    if done.returncode not in accept:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"edge {arguments[0]} failed ({done.returncode}): {tail}; "
                         "use --from-records to take every report from records")
    print(f"edge {' '.join(arguments[:2])} in {time.monotonic() - started:.0f} s")


def benched_on_two_boards(work: Path) -> StoredRun:
    """``edge bench`` of the digits CNN on local and on a loopback SSH board."""
    sshd = Sshd.create(work / "sshd")
    try:
        sshd.write_target(work / "targets", "lab-ssh", work / "ssh-board")
        edge("bench", str(REPO / "examples" / "digits_cnn.py"), "--targets", "local,lab-ssh",
             "--targets-dir", str(work / "targets"), "--recipe", "fp32,int8",
             "--min-runs", "200", "--min-seconds", "0.5", "-o", str(work / "bench"),
             "--store", str(work / "bench.sqlite"))
    finally:
        sshd.kill()
    with ResultsStore(work / "bench.sqlite") as store:
        return store.get_run("latest")


def deployed_with_a_failed_variant(work: Path) -> StoredRun:
    """A real deploy where one variant cannot be built: it exits 3 and stores the rest."""
    out = work / "failed"
    edge("deploy", str(REPO / "tests" / "models" / "embedding_bag.py"), *SHORT,
         "--recipe", "fp32,fp16,int8", "-o", str(out), accept=(3,))
    with ResultsStore(out / "results.sqlite") as store:
        return store.get_run("latest")


def deployed_multi_output_with_profile(work: Path) -> StoredRun:
    """A real deploy of a two-input, two-output model, each variant profiled per operator."""
    out = work / "two-heads"
    edge("deploy", str(REPO / "tests" / "models" / "two_heads.py"), *SHORT, "--profile",
         "--recipe", "fp32,int8-dynamic", "-o", str(out))
    with ResultsStore(out / "results.sqlite") as store:
        return store.get_run("latest")


def deployed_series(folder: Path, runs: int, *, swap: int | None) -> Trend:
    """The p50 trend of ``runs`` real deploys of the README model kept in ``folder``."""
    with ResultsStore(store_series(folder, runs, swap=swap)) as store:
        return trend(store, target="local", variant="fp32")


def recorded_series(folder: Path, runs: list[StoredRun]) -> Trend:
    """The p50 trend of stored-shape ``runs``, each given a folder under ``folder`` with its
    report, so that the page's links open them."""
    placed = [dataclasses.replace(run, report_dir=str(folder / "runs" / run.run_id))
              for run in runs]
    for run in placed:
        Path(run.report_dir).mkdir(parents=True, exist_ok=True)
        write_report(run, Path(run.report_dir))
    return stored_trend(placed, folder / "results.sqlite")


def layout_problems(probe: str) -> list[str]:
    """What the geometry probe found wrong in each chart of a page, one line each."""
    problems = []
    for plot in json.loads(probe):
        for kind in ("clipped", "overlapping", "covered"):
            if plot[kind]:
                problems.append(f"{plot['id']}: {kind} {plot[kind]}")
        if plot["width"] < 0.9 * plot["page"]:
            problems.append(f"{plot['id']}: {plot['width']:.0f} px of a {plot['page']:.0f} px "
                            "page")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=Path("report-screenshots"))
    parser.add_argument("--from-records", action="store_true",
                        help="build every report from records instead of real deploys")
    args = parser.parse_args()
    if chromium_binary() is None:
        raise SystemExit("chromium is not installed (scripts/install-dev.sh installs it)")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-screenshots-") as scratch:
        work = Path(scratch)
        series = args.out_dir / "trend-runs"
        shutil.rmtree(series, ignore_errors=True)  # a series of its own on every call
        if args.from_records:
            runs = {"readme-example": readme_run(), "thread-sweep": thread_sweep_run(),
                    "two-boards": two_board_run(), "failed-variant": failed_variant_run(),
                    "profile": profiled_run()}
            trends = {"trend-step": recorded_series(series / "step", trend_runs()),
                      "trend-steady": recorded_series(series / "steady",
                                                      trend_runs(30, step=False))}
        else:
            runs = {"readme-example": deployed(work / "readme"),
                    "thread-sweep": deployed(work / "sweep", "--threads", "1,2,4"),
                    "two-boards": benched_on_two_boards(work),
                    "failed-variant": deployed_with_a_failed_variant(work),
                    "multi-output-profile": deployed_multi_output_with_profile(work)}
            trends = {"trend-step": deployed_series(series / "step", 32, swap=STEP_AT),
                      "trend-steady": deployed_series(series / "steady", 30, swap=None)}
        pages: dict[str, Callable[[], str]] = {name: partial(render_html, run)
                                               for name, run in runs.items()}
        pages.update({name: partial(render_trend_page, found, page_dir=args.out_dir)
                      for name, found in trends.items()})
        for name, found in trends.items():
            print(f"{name}: change points: "
                  f"{', '.join(f'run {c.index + 1}' for c in found.changes) or 'none'}")
        with Chromium(work / "profile") as browser:
            for name, render in pages.items():
                started = time.monotonic()
                html = args.out_dir / f"{name}.html"
                html.write_text(render(), encoding="utf-8")
                rendered = time.monotonic() - started
                page = browser.open(html, probe=GEOMETRY)
                if page.errors:
                    raise SystemExit(f"{name}: the browser reported {page.errors}")
                png = args.out_dir / f"{name}.png"
                png.write_bytes(page.screenshot_png)
                problems = layout_problems(page.probe)
                if problems:
                    raise SystemExit(f"{name}: " + "; ".join(problems))
                print(f"{png}: {len(json.loads(page.probe))} charts laid out cleanly, page "
                      f"rendered in {1000 * rendered:.0f} ms")


if __name__ == "__main__":
    main()
