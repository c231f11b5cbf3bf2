"""How well `edge check` tells noise from a real slowdown, and how fast the store answers.

Prints the figures the issue asks for:

1. False alarms: baseline runs, then 20 identical runs of the same model on the local
   target, each checked against the first baseline run (at most 1 may be flagged), and
   against three baseline runs (``edge check --baseline A --baseline B --baseline C``: a
   regression must show against each).
2. Detection: 20 runs of a 10% slower variant of the same model (at least 19 flagged), and
   20 runs of a 5% slower one (rate reported).  "Slower" comes from extra passes through one
   layer (a CNN of 20 conv layers against 22 and 21, weights shared so the file size stays);
   the true slowdown is measured and printed.  The CNN is small enough to stay in cache, so
   memory traffic from other processes disturbs it less than a large model.
3. A store of 1,000 runs: wall time of `edge runs list` and `edge report` (new processes).

The three kinds of run are interleaved so that load from other processes falls on all of
them alike.  Usage: python benchmarks/check_power.py [--runs 20] [--min-seconds 1.0]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from toolkit.check import Thresholds, check_runs
from toolkit.pipeline import deploy
from toolkit.store import ResultsStore

CHANNELS, SIDE, BASE_LAYERS = 16, 16, 20
BASELINE_RUNS = 3


def build_cnn(extra: int, folder: Path) -> Path:
    """An fp32 CNN of BASE_LAYERS 3x3 conv+ReLU blocks plus ``extra`` passes through the last.

    The extra passes reuse the last layer's weights, so the file size barely changes and
    only the work per inference grows.  Always named cnn.tflite: one model for edge check.
    """
    import litert_torch
    import torch

    torch.manual_seed(0)
    layers = [torch.nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1) for _ in range(BASE_LAYERS)]
    blocks: list[torch.nn.Module] = []
    for layer in layers + [layers[-1]] * extra:
        blocks += [layer, torch.nn.ReLU()]
    model = torch.nn.Sequential(*blocks).eval()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cnn.tflite"  # one name: edge check compares runs of one model
    litert_torch.convert(model, (torch.randn(1, CHANNELS, SIDE, SIDE),)).export(str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--store-runs", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edge-check-power-"))
    print(f"working in {work}")
    models = {"same": build_cnn(0, work / "base"),
              "10% slower": build_cnn(2, work / "slow10"),
              "5% slower": build_cnn(1, work / "slow5")}
    for kind, path in models.items():
        print(f"{kind:<12} {path.stat().st_size:,} bytes")
    store_path, out = work / "results.sqlite", work / "edge-out"
    settings = {"min_runs": 200, "min_seconds": args.min_seconds}

    def run(kind: str) -> str:
        outcome = deploy(models[kind], targets=["local"], recipes="fp32", out_dir=out,
                         store_path=store_path, settings=settings)
        return outcome.run.run_id

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    baseline_ids = [run("same") for _ in range(BASELINE_RUNS)]
    baseline_id = baseline_ids[0]
    ids: dict[str, list[str]] = {kind: [] for kind in models}
    for _ in range(args.runs):
        for kind in models:
            ids[kind].append(run(kind))
    print(f"{BASELINE_RUNS + args.runs * len(models)} runs on the local target in "
          f"{time.perf_counter() - started:.0f} s (min {settings['min_runs']} inferences and "
          f"{args.min_seconds} s each); load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs")

    thresholds = Thresholds()
    with ResultsStore(store_path) as store:
        baseline = store.get_run(baseline_id)
        base_samples = np.asarray(baseline.results[0]["latency_samples_ms"])
        print(f"\nbaseline {baseline_id}: p50 {np.median(base_samples):.3f} ms, "
              f"{base_samples.size} samples; limits p50 +{thresholds.latency_p50}%, "
              f"p99 +{thresholds.latency_p99}% (whole {thresholds.confidence:.0%} bootstrap "
              "interval past the limit)")
        for label, bases in (("first baseline run", [baseline]),
                             (f"{BASELINE_RUNS} baseline runs",
                              [store.get_run(b) for b in baseline_ids])):
            print(f"\nagainst the {label}:")
            print(f"\n{'runs':<12} {'true p50 change':>16} {'flagged':>8} {'by p50':>7} "
                  f"{'by p99':>7} {'other':>6}  p50 changes seen (min / median / max)")
            for kind, run_ids in ids.items():
                outcomes = [check_runs(bases, store.get_run(r), thresholds) for r in run_ids]
                medians = [np.median(store.get_run(r).results[0]["latency_samples_ms"])
                           for r in run_ids]
                true_change = 100 * (np.median(medians) / np.median(
                    [np.median(store.get_run(r).results[0]["latency_samples_ms"])
                     for r in ids["same"]]) - 1)
                flagged = sum(not o.passed for o in outcomes)
                by = {m: sum(any(c.metric == m for c in o.regressions) for o in outcomes)
                      for m in ("latency_p50", "latency_p99")}
                other = sorted({c.metric for o in outcomes for c in o.regressions
                                if not c.metric.startswith("latency")})
                changes = [next(c.change for c in o.checks if c.metric == "latency_p50")
                           for o in outcomes]
                print(f"{kind:<12} {true_change:>+15.1f}% {flagged:>5}/{len(outcomes):<2} "
                      f"{by['latency_p50']:>7} {by['latency_p99']:>7} {','.join(other) or '-':>6}  "
                      f"{min(changes):+.1f}% / {np.median(changes):+.1f}% / {max(changes):+.1f}%")
        template = store.get_run(baseline_id)

    big = work / "big.sqlite"
    with ResultsStore(big) as store:
        for index in range(args.store_runs):
            store.add_run(dataclasses.replace(
                template, run_id=f"{template.run_id}-{index:04d}",
                created_at=f"2026-01-01T00:{index // 60 % 60:02d}:{index % 60:02d}+00:00",
                tags=("main",) if index == 0 else ()))
    size_mb = big.stat().st_size / 1e6
    print(f"\nstore of {args.store_runs} runs ({size_mb:.1f} MB; each run one variant with "
          f"{base_samples.size}+ raw samples):")
    from toolkit.report import render

    with ResultsStore(big) as store:
        for name, work_of in (("list_runs(limit=20)", lambda: store.list_runs(limit=20)),
                              ("list_runs(all)", store.list_runs),
                              ("render html latest", lambda: render(store.get_run("latest"),
                                                                    "html"))):
            times = []
            for _ in range(5):
                begin = time.perf_counter()
                work_of()
                times.append(time.perf_counter() - begin)
            print(f"  {name:<20} best {1000 * min(times):.0f} ms in process")
    commands = {"edge runs list": ["runs", "list"],
                "edge report (html)": ["report", "latest", "--format", "html", "-o",
                                       str(work / "r.html")],
                "edge report (md)": ["report", "latest", "--format", "md"],
                "edge check": ["check", "--baseline", "main", "latest"]}
    for name, command in commands.items():
        times = []
        for _ in range(5):
            begin = time.perf_counter()
            subprocess.run([sys.executable, "-m", "toolkit", *command, "--store", str(big)],
                           check=False, capture_output=True,
                           cwd=Path(__file__).resolve().parent.parent)
            times.append(time.perf_counter() - begin)
        print(f"  {name:<20} best {min(times):.2f} s, median {np.median(times):.2f} s "
              "(new process, Python start-up included)")


if __name__ == "__main__":
    main()
