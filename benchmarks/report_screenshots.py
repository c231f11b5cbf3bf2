"""Screenshots of the HTML report for four runs, taken by a real headless Chromium.

The README example and a thread sweep are real ``edge deploy`` runs of
examples/digits_cnn.py on ``--target local`` (short settings); the 2-board bench and
the run with a failed variant are stored-shape records (tests/report_cases.py), since
one machine has one board.  ``--from-records`` takes all four from records (seconds,
no conversion).  Each report is written as NAME.html beside NAME.png.

Usage::

    python benchmarks/report_screenshots.py [OUT_DIR] [--from-records]
    # OUT_DIR defaults to report-screenshots/
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.chromium import Chromium, chromium_binary  # noqa: E402
from tests.report_cases import failed_variant_run, readme_run, thread_sweep_run, two_board_run  # noqa: E402
from toolkit.report import render_html  # noqa: E402
from toolkit.store import ResultsStore, StoredRun  # noqa: E402

#: Short enough for a busy 2-core machine, long enough for a few hundred runs per variant.
SHORT = ("--target", "local", "--min-runs", "200", "--min-seconds", "0.5", "--cooldown", "0")


def deployed(out: Path, *extra: str) -> StoredRun:
    """The run a real ``edge deploy examples/digits_cnn.py`` stores under ``out``."""
    command = [sys.executable, "-m", "toolkit", "deploy", str(REPO / "examples" / "digits_cnn.py"),
               *SHORT, *extra, "-o", str(out)]
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"edge deploy {' '.join(extra)} failed ({done.returncode}): {tail}; "
                         "use --from-records to take every report from records")
    print(f"deployed {' '.join(extra) or 'fp32,int8'} in {time.monotonic() - started:.0f} s")
    with ResultsStore(out / "results.sqlite") as store:
        return store.get_run("latest")


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
        if args.from_records:
            runs = {"readme-example": readme_run(), "thread-sweep": thread_sweep_run()}
        else:
            runs = {"readme-example": deployed(work / "readme"),
                    "thread-sweep": deployed(work / "sweep", "--threads", "1,2,4")}
        runs.update({"two-boards": two_board_run(), "failed-variant": failed_variant_run()})
        with Chromium(work / "profile") as browser:
            for name, run in runs.items():
                started = time.monotonic()
                html = args.out_dir / f"{name}.html"
                html.write_text(render_html(run), encoding="utf-8")
                rendered = time.monotonic() - started
                page = browser.open(html, probe="document.querySelectorAll('svg.plot').length")
                if page.errors:
                    raise SystemExit(f"{name}: the browser reported {page.errors}")
                png = args.out_dir / f"{name}.png"
                png.write_bytes(page.screenshot_png)
                print(f"{png}: {page.probe} charts, report rendered in {1000 * rendered:.0f} ms")


if __name__ == "__main__":
    main()
