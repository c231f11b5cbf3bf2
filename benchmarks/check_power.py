"""How often `edge check` cries wolf on identical runs, and how often it catches a 10% slowdown.

On the README's own example (examples/digits_cnn.py, fp32 and int8, about 15 us an
inference) and on a model of about 1 ms (examples/digits_mobilenet96.py, fp32), local target,
the agent's default measurement settings (at least 50 runs and 1 s per variant, robust CV
limit 0.10):

- **identical pairs**: ``--baselines`` (default 2) baseline runs, then a new run of the
  same files; each pair is checked with ``edge check``'s default limits by three gates:
  ``1, no store``: against the baseline run just before it alone, nothing else known (a
  fresh store: the spread between runs is unknown, so a change past a limit can only be
  inconclusive); ``1 + store``: the same pair, plus what ``edge check --baseline B`` reads
  from the store, every earlier run of the same files on this board (the default use);
  ``N + store``: against all the baseline runs (``--baseline`` repeated, the README's CI
  recipe) plus the store;
- **slowed pairs**: the same pairs with every latency sample of the new run multiplied by
  1.10 (and its summary with them).  Scaling a real run keeps its real noise (bursts, tail,
  drift) and makes the slowdown exactly 10 %; a model change could only approximate that
  on a 15 us model (extra layers cost what they cost).  The two counts come from the same
  runs, so they are each over independent pairs, not independent of each other.

Each pair's outcome is the exit code edge check would give: 1 REGRESSION, 3 inconclusive
(something INVALID on the board or not measured), 0 pass.  Targets: at most 1 false
REGRESSION in 20 identical pairs; at least 19 of 20 slowed pairs caught, or honestly
inconclusive.  Each model is compressed once (as edge deploy would, accuracy included);
every run then measures those files on the local target through the same code as edge
deploy, without writing reports.

Usage: python benchmarks/check_power.py [--pairs 20] [--baselines 2] [--models cnn,mobilenet]
       [--min-seconds S] [--store-runs 1000]
Cost, measured with --pairs 3 on 2 busy cores (load 7): a digits CNN run (two variants, the
default 1 s cooldown between them) 5.7 s, a MobileNet run 2.1 s, compressing both once 170 s,
checking a CNN pair against 1 and 3 baselines 20 s (a bootstrap of 5,000 samples x 2,000
resamples: about 1.3 s at that load).  The full default run (20 pairs x 3 runs per model: 120
runs) is then about 16 minutes at that load; on idle cores the runs take as long (their floors
are in seconds) and the checks about a third: about 12 minutes.  ``--baselines 3`` (the
README's CI recipe) adds about 3 minutes, ``--baselines 1`` saves 4.
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
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from toolkit.boards.targets import load_target
from toolkit.compress import parse_recipes
from toolkit.errors import ExitCode
from toolkit.gate.check import Thresholds, check_runs
from toolkit.model.load import load_model_source
from toolkit.results.store import EarlierLatency, ResultsStore, StoredRun
from toolkit.run.execute import new_run, new_run_id, prepare_model, run_on_target
from toolkit.run.plan import Sweep
from toolkit.units import format_duration

REPO = Path(__file__).resolve().parent.parent
#: Short name -> (model file, recipes): the README example as edge deploy runs it by default,
#: and a model of about 1 ms.
MODELS = {"cnn": (REPO / "examples" / "digits_cnn.py", "fp32,int8"),
          "mobilenet": (REPO / "examples" / "digits_mobilenet96.py", "fp32")}
SLOWDOWN = 1.10
OUTCOME = {ExitCode.FAILED: "REGRESSION", ExitCode.INCOMPLETE: "inconclusive",
           ExitCode.OK: "pass"}


def slowed(run: StoredRun, factor: float) -> StoredRun:
    """``run`` as if every inference had taken ``factor`` times as long."""
    results = []
    for original in run.results:
        measured = dict(original.measured)
        if original.latency_samples_ms:
            measured["latency_samples_ms"] = [factor * x for x in original.latency_samples_ms]
        if original.latency_ms:  # every figure in ms scales; the CVs are ratios
            measured["latency_ms"] = {k: v if "cv" in k else factor * v
                                      for k, v in original.latency_ms.items()}
        results.append(original.replace(measured=measured))
    return dataclasses.replace(run, run_id=run.run_id + "-slowed", results=results)


def measure(model: str, work: Path, pairs: int, baselines: int,
            settings: dict[str, Any] | None) -> dict[str, Any]:
    """Compress ``model`` once, measure ``pairs`` x (``baselines`` + 1) runs, check each pair."""
    path, recipes = MODELS[model]
    source = load_model_source(path)
    target = load_target("local", None)
    started = time.perf_counter()
    artifacts, *_, references = prepare_model(source, parse_recipes(recipes), work / model)
    built = time.perf_counter() - started

    store = ResultsStore(work / model / "results.sqlite")

    def one_run() -> StoredRun:
        run_id = new_run_id()
        run = new_run(run_id, source, work / model / run_id,
                      run_on_target(target, run_id, artifacts, settings, Sweep(), references))
        store.add_run(run)
        return run

    def history(new: StoredRun) -> list[EarlierLatency]:
        """What edge check reads from the store: earlier runs (never the judged one, whose
        slowed twin is checked too)."""
        return [e for e in store.latency_history(new.model_name, until=new.created_at)
                if e.run_id != new.run_id]

    started = time.perf_counter()
    measured = [([one_run() for _ in range(baselines)], one_run()) for _ in range(pairs)]
    seconds = time.perf_counter() - started
    thresholds = Thresholds()
    # The one-baseline gates take the run just before the new one: a back-to-back pair.
    gates = {"1, no store": ([(bases[-1:], new) for bases, new in measured], False),
             "1 + store": ([(bases[-1:], new) for bases, new in measured], True)}
    if baselines > 1:
        gates[f"{baselines} + store"] = (measured, True)
    started = time.perf_counter()
    outcomes = {}
    for gate, (runs, with_store) in gates.items():
        same, slow = [], []
        for bases, new in runs:
            earlier = history(new) if with_store else []
            same.append(check_runs(bases, new, thresholds, history=earlier))
            slow.append(check_runs(bases, slowed(new, SLOWDOWN), thresholds, history=earlier))
        outcomes[gate] = (same, slow)
    check_seconds = time.perf_counter() - started
    store.close()
    medians = {r.variant: float(np.median([x.p50_ms for _, new in measured
                                           for x in new.results
                                           if x.variant == r.variant and x.p50_ms is not None]))
               for r in measured[0][1].results if r.p50_ms is not None}
    invalid = sum(1 for bases, new in measured for run in [*bases, new] for r in run.results
                  if r.verdict == "INVALID")
    return {"model": model, "recipes": recipes, "medians": medians, "outcomes": outcomes,
            "runs": pairs * (baselines + 1), "seconds": seconds, "checks": check_seconds,
            "spread": spread_seen(outcomes),
            "build_seconds": built, "invalid": invalid,
            "variants": pairs * (baselines + 1) * len(medians), "sample": measured[0][0][0]}


def spread_seen(outcomes: dict[str, Any]) -> str:
    """The between-run spreads the gates used, from the checks' details (median of pairs)."""
    found: dict[str, list[float]] = {}
    for gate, (same, _slow) in outcomes.items():
        for outcome in same:
            for c in outcome.checks:
                marker = "runs of the baseline's file ("
                if marker in c.detail:
                    value = float(c.detail.split(marker)[1].split(" %")[0])
                    found.setdefault(f"{gate}: {c.variant}/{c.metric}", []).append(value)
    return "; ".join(f"{name} {np.median(v):.1f} %" for name, v in found.items()) or "-"


def counts(outcomes: list[Any]) -> dict[str, int]:
    tally = {name: 0 for name in OUTCOME.values()}
    for outcome in outcomes:
        tally[OUTCOME[outcome.exit_code]] += 1
    return tally


def flagged_by(outcomes: list[Any], verdict: str) -> str:
    """Which metrics carried a verdict, e.g. ``latency_p99 x2``."""
    seen: dict[str, int] = {}
    for outcome in outcomes:
        for metric in sorted({f"{c.variant}/{c.metric}" for c in outcome.checks
                              if c.verdict == verdict}):
            seen[metric] = seen.get(metric, 0) + 1
    return ", ".join(f"{m} x{n}" for m, n in seen.items()) or "-"


def typical_changes(outcomes: list[Any]) -> str:
    """Per variant and latency metric: the median change and interval over the pairs."""
    found: dict[str, list[tuple[float, float, float]]] = {}
    for outcome in outcomes:
        for c in outcome.checks:
            if c.metric.startswith("latency") and c.interval is not None:
                found.setdefault(f"{c.variant}/{c.metric}", []).append((c.change, *c.interval))
    return "; ".join(f"{name} {np.median([x[0] for x in seen]):+.1f} % "
                     f"[{np.median([x[1] for x in seen]):+.1f}, "
                     f"{np.median([x[2] for x in seen]):+.1f}]"
                     for name, seen in found.items()) or "-"


def store_speed(template: StoredRun, work: Path, runs: int) -> None:
    """Wall time of edge runs list / report / check on a store of ``runs`` runs."""
    from toolkit.report.render import render

    big = work / "big.sqlite"
    with ResultsStore(big) as store:
        for index in range(runs):
            store.add_run(dataclasses.replace(
                template, run_id=f"{template.run_id}-{index:04d}",
                created_at=f"2026-01-01T00:{index // 60 % 60:02d}:{index % 60:02d}+00:00",
                tags=("main",) if index == 0 else ()))
    print(f"\nstore of {runs} runs ({big.stat().st_size / 1e6:.1f} MB):")
    with ResultsStore(big) as store:
        for name, work_of in (("list_runs(limit=20)", lambda: store.list_runs(limit=20)),
                              ("list_runs(all)", store.list_runs),
                              ("render html latest",
                               lambda: render(store.get_run("latest"), "html"))):
            times = []
            for _ in range(5):
                begin = time.perf_counter()
                work_of()
                times.append(time.perf_counter() - begin)
            print(f"  {name:<20} best {1000 * min(times):.0f} ms in process")
    commands = {"edge runs list": ["runs", "list"],
                "edge report (md)": ["report", "latest", "--format", "md"],
                "edge check": ["check", "--baseline", "main", "latest"]}
    for name, command in commands.items():
        times = []
        for _ in range(5):
            begin = time.perf_counter()
            subprocess.run([sys.executable, "-m", "toolkit", *command, "--store", str(big)],
                           check=False, capture_output=True, cwd=REPO)
            times.append(time.perf_counter() - begin)
        print(f"  {name:<20} best {min(times):.2f} s (new process, Python start-up included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--baselines", type=int, default=2,
                        help="baseline runs per pair: each pair is checked against the last "
                             "of them alone and (if more than 1) against all of them "
                             "(edge check --baseline repeated)")
    parser.add_argument("--models", default="cnn,mobilenet",
                        help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--min-seconds", type=float,
                        help="measured seconds per variant [default: the agent's, 1]")
    parser.add_argument("--store-runs", type=int, default=0,
                        help="also time a store of this many runs (0: skip)")
    args = parser.parse_args()
    settings = {"min_seconds": args.min_seconds} if args.min_seconds is not None else None
    work = Path(tempfile.mkdtemp(prefix="edge-check-power-"))
    load_before, started = os.getloadavg()[0], time.perf_counter()
    figures = [measure(model, work, args.pairs, args.baselines, settings)
               for model in args.models.split(",")]
    print(f"\nedge check on the local target, {args.pairs} pairs per model, "
          f"{args.baselines} baseline run(s) per pair, default limits (p50 +5 %, p99 +10 %, "
          f"95 % interval), measurement settings "
          f"{'default' if settings is None else settings}; load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs")
    print(f"{'model':<10} {'variants: median':<30} {'gate':<12} {'identical pairs':^24} "
          f"{'+10 % pairs':^24} {'runs':>5} {'measuring':>9}")
    print(f"{'':<10} {'':<30} {'':<12} {'REGRESSION incon. pass':^24} "
          f"{'detected incon. missed':^24}")
    for f in figures:
        medians = ", ".join(f"{v} {format_duration(m)}" for v, m in f["medians"].items())
        for gate, (same_outcomes, slow_outcomes) in f["outcomes"].items():
            same, slow = counts(same_outcomes), counts(slow_outcomes)
            print(f"{f['model']:<10} {medians:<30} {gate:<12} "
                  f"{same['REGRESSION']:>6}/{args.pairs:<3} {same['inconclusive']:>5} "
                  f"{same['pass']:>5}    "
                  f"{slow['REGRESSION']:>6}/{args.pairs:<3} {slow['inconclusive']:>5} "
                  f"{slow['pass']:>5}    {f['runs']:>5} {f['seconds']:>8.0f}s")
    for f in figures:
        checks = sum(len(same) + len(slow) for same, slow in f["outcomes"].values())
        print(f"\n{f['model']} ({f['recipes']}): compressed once in {f['build_seconds']:.0f} s; "
              f"{f['runs']} runs ({f['variants']} variant measurements, {f['invalid']} INVALID "
              f"on the board) in {f['seconds']:.0f} s; {checks} checks in {f['checks']:.0f} s")
        print(f"  between-run spread used (SD of log quantile): {f['spread']}")
        for gate, (same_outcomes, slow_outcomes) in f["outcomes"].items():
            print(f"  {gate}: identical pairs, REGRESSION by: "
                  f"{flagged_by(same_outcomes, 'regression')}")
            print(f"  {gate}: identical pairs, inconclusive by: "
                  f"{flagged_by(same_outcomes, 'inconclusive')}")
            print(f"  {gate}: +10 % pairs, caught by: {flagged_by(slow_outcomes, 'regression')}")
            print(f"  {gate}: +10 % pairs, inconclusive by: "
                  f"{flagged_by(slow_outcomes, 'inconclusive')}")
            print(f"  {gate}: median change [interval], identical pairs: "
                  f"{typical_changes(same_outcomes)}")
            print(f"  {gate}: median change [interval], +10 % pairs: "
                  f"{typical_changes(slow_outcomes)}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s, work folder {work}")
    if args.store_runs:
        store_speed(figures[0]["sample"], work, args.store_runs)


if __name__ == "__main__":
    main()
