"""What does ``edge check --history`` decide on real stored runs, with a step and without?

Real runs (the default): the README model (examples/digits_cnn.py, fp32) and the slower
file of the same name that benchmarks/trend.py swaps in (two C-channel convolutions on the
input pooled into a zero-weighted layer: the outputs are unchanged, the work is real) are
each converted once (``edge compress``); the files are then deployed as they are
(``edge deploy digits_cnn.tflite --target local --min-runs 50 --min-seconds 0.2``, a few
seconds a run, no conversion).  ``--runs - --after`` runs of the README file go into one
store, which is copied; then ``--after`` more runs go into each copy, alternately: the
slower file into one (a step ``--after`` runs before the end), the same file into the
other.  Prints ``edge check --history``'s verdicts on both, with the step measured (the
medians of p50 before and after the swap).  About 3 minutes on 2 cores; on 2026-12-07
(2-core x86, ai-edge-litert 2.3.0, load 4-7) the step store's p50 moved +14.9 % at run #26
of 30 and --history flagged it there (exit 1), the other store passed (exit 0).

``--simulate``: no runs, the table behind :mod:`toolkit.gate.history`'s choice of window.
Series of 25 runs at one level with 3 % lognormal noise between runs, then a step of
10, 15, 20 or 30 %: how often ``--history`` flags it as a regression at its run (or the one
beside it) when it checks the 3rd, 4th, ... 12th run after the step, and how often it
flags anything in 30 runs of noise alone.

Usage: python benchmarks/check_history.py [--runs 30] [--after 5] [--channels 3] [--keep DIR]
       python benchmarks/check_history.py --simulate [--series 150]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from trend import EDGE, REPO, slower_model  # a sibling script, not a package


def compress(model: Path, out: Path) -> Path:
    subprocess.run([*EDGE, "compress", str(model), "--recipe", "fp32", "-o", str(out)],
                   check=True, capture_output=True)
    return out / "fp32.tflite"


def deploy(tflite: Path, out: Path) -> None:
    subprocess.run([*EDGE, "deploy", str(tflite), "--target", "local", "--min-runs", "50",
                    "--min-seconds", "0.2", "-o", str(out)], check=True, capture_output=True)


def history(store: Path) -> tuple[int, dict]:
    # Exit 1 is a verdict, not a failure of the script.
    shown = subprocess.run([*EDGE, "check", "--history", "--store", str(store), "--json"],
                           check=False, capture_output=True, text=True)
    return shown.returncode, json.loads(shown.stdout)


def p50s(store: Path) -> list[float]:
    from toolkit.results.store import ResultsStore

    with ResultsStore(store, create=False) as opened:
        return [p.value for p in opened.figure_series("local", "digits_cnn.tflite",
                                                      ("latency_ms", "p50"))]


def real(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="edge-check-history-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        files = {}
        for name, model in (("same", REPO / "examples" / "digits_cnn.py"),
                            ("slower", slower_model(work, args.channels))):
            # One name for both files: one model's series.
            files[name] = work / f"file-{name}" / "digits_cnn.tflite"
            files[name].parent.mkdir(exist_ok=True)
            shutil.copy(compress(model, work / f"built-{name}"), files[name])
        before = args.runs - args.after
        print(f"{args.runs} runs of digits_cnn.tflite (fp32, local) per store; the slower "
              f"file in the last {args.after} of one; load {os.getloadavg()[0]:.1f}",
              flush=True)
        for _ in range(before):
            deploy(files["same"], work / "common")
        for name in ("step", "flat"):
            shutil.copytree(work / "common", work / name)
        for _ in range(args.after):
            deploy(files["slower"], work / "step")
            deploy(files["same"], work / "flat")
        print(f"stored in {time.monotonic() - started:.0f} s; load "
              f"{os.getloadavg()[0]:.1f}\n", flush=True)
        for name in ("step", "flat"):
            store = work / name / "results.sqlite"
            series = p50s(store)
            old, new = statistics.median(series[:before]), statistics.median(series[before:])
            code, outcome = history(store)
            print(f"{name}: p50 median {old * 1000:.2f} us over runs 1-{before}, "
                  f"{new * 1000:.2f} us over runs {before + 1}-{len(series)} "
                  f"({100 * (new / old - 1):+.1f} %); edge check --history exits {code}: "
                  f"{outcome['summary']}")
            for c in outcome["checks"]:
                if c["metric"] in ("latency_p50", "latency_p99"):
                    at = f" at run #{c['changed_at_number']}" if c["changed_at"] else ""
                    change = "" if c["change"] is None else f" {c['change']:+.1f} %"
                    print(f"  {c['metric']}: {c['verdict']}{change}{at} ({c['detail']})")
        print(f"\nstep at run #{before + 1} of {args.runs}")


def simulate(args: argparse.Namespace) -> None:
    import numpy as np

    from toolkit.gate.history import judge_series
    from toolkit.gate.thresholds import Thresholds
    from toolkit.results.store import FigurePoint

    def verdict(values: list[float]) -> tuple[str, int | None]:
        points = [FigurePoint(run_id=f"r{i}", created_at="", model_name="m", sha256="",
                              verdict="VALID", value=v) for i, v in enumerate(values)]
        found = judge_series(points, target="t", variant="v", metric="latency_p50",
                             thresholds=Thresholds())
        return found.verdict, found.changed_at_number

    checked = range(3, 13)
    print(f"{args.series} series each: 25 runs at one level (3 % noise), then a step; share "
          "flagged as a regression at the step (+-1 run) by the check of its k-th run")
    print("step " + "".join(f"{f'k={k}':>6}" for k in checked) + "  by k=6  by k=10")
    for step in (1.10, 1.15, 1.20, 1.30):
        hits = {k: 0 for k in checked}
        by6 = by10 = 0
        for seed in range(args.series):
            noise = np.random.default_rng(seed).lognormal(0.0, 0.03, 25 + max(checked))
            values = [f * (step if i >= 25 else 1.0) for i, f in enumerate(noise)]
            flagged = set()
            for k in checked:
                found, at = verdict(values[:25 + k])
                if found == "regression" and at is not None and abs(at - 26) <= 1:
                    hits[k] += 1
                    flagged.add(k)
            by6 += any(k <= 6 for k in flagged)
            by10 += any(k <= 10 for k in flagged)
        print(f"{100 * (step - 1):3.0f} %" + "".join(
            f"{100 * hits[k] / args.series:5.0f}%" for k in checked)
            + f"  {100 * by6 / args.series:5.0f}%  {100 * by10 / args.series:6.0f}%")
    false = sum(verdict(np.random.default_rng(10_000 + seed).lognormal(0.0, 0.03, 30)
                        .tolist())[0] != "pass" for seed in range(args.series))
    print(f"noise alone, 30 runs: {false} of {args.series} series not a pass")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--after", type=int, default=5,
                        help="runs of the slower file at the end of the stepped store")
    parser.add_argument("--channels", type=int, default=3,
                        help="channels of the two extra convolutions of the slower file (3: "
                             "p50 +15 %% on a 2-core x86 machine, 8: +30 %%)")
    parser.add_argument("--keep", type=Path, help="keep the stores in this folder")
    parser.add_argument("--simulate", action="store_true",
                        help="the simulation behind the window, instead of real runs")
    parser.add_argument("--series", type=int, default=150,
                        help="--simulate: series per step size")
    args = parser.parse_args()
    if args.simulate:
        simulate(args)
    else:
        real(args)


if __name__ == "__main__":
    main()
