"""Issue 15's per-operator profile figures: ``edge deploy --profile`` on both runtimes.

Prints tables; it is not a test (``tests/test_profile.py`` holds the tests).  The digits
CNN and the MobileNetV2-96 example are deployed (fp32 and int8) with ``--profile`` on
the ``local`` target (ai-edge-litert 2.3, this venv) and on a local target whose Python
has only tflite-runtime 2.14 (the board floor), ``--repeat`` times each, and for every
profiled variant it prints: the operators' summed time against the profiled pass's own
total (the issue asks for within 15 %), the profiling overhead against the unprofiled
p50, and the three heaviest operators, then whether that ranking was the same in every
repeat.  Last, fp32 against int8 of MobileNetV2-96 per op type, naming the op types that
make int8 slower on this CPU.  (Not named ``profile.py``: run as a script, that name would
shadow the standard library's ``profile`` module, which PyTorch imports.)  Run it from the
repository root (about 4 minutes)::

    python benchmarks/op_profile.py [--python VENV214/bin/python] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from toolkit.report.profile import heaviest, profile_comparisons  # noqa: E402
from toolkit.results.record import ResultRecord  # noqa: E402
from toolkit.run.deploy import deploy  # noqa: E402
from toolkit.units import format_duration  # noqa: E402

MODELS = {"digits CNN": REPO / "examples" / "digits_cnn.py",
          "MobileNetV2-96": REPO / "examples" / "digits_mobilenet96.py"}
DEFAULT_PYTHON = Path.home() / ".cache/edge-tests/tflite-runtime-2.14.0/bin/python"
#: Short timed passes: the profile is the subject (the profiled pass has its own floors).
SETTINGS = {"profile": 1, "min_seconds": 0.3, "cooldown_seconds": 0.0}


def floor_target(folder: Path, python: Path) -> Path:
    """A local board whose Python has tflite-runtime 2.14 only."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "floor214.toml").write_text(
        f'transport = "local"\npython = "{python}"\nruntime = "tflite-runtime"\nthreads = 1\n')
    return folder


def top3(record: ResultRecord) -> tuple[str, ...]:
    rows = heaviest(record.profile or {})[:3]
    return tuple(f"#{row['index']} {row.get('node_op') or row['op']}" for row in rows)


def next_gaps(record: ResultRecord) -> str:
    """How far apart the 2nd, 3rd and 4th heaviest operators were (p50): an order that
    changes between operators a few per cent apart is the runs' noise, not the model."""
    rows = heaviest(record.profile or {})[:4]
    times = [float(row.get("p50_us", row["mean_us"])) for row in rows]
    return ", ".join(f"#{rows[at]['index']} {times[at]:.1f} us vs "
                     f"#{rows[at + 1]['index']} {times[at + 1]:.1f} us"
                     for at in range(1, len(rows) - 1))


def line(model: str, repeat: int, record: ResultRecord) -> str:
    profile: dict[str, Any] = dict(record.profile or {})
    if not record.ok or "error" in profile or not profile:
        why = record.error or profile.get("error", "no profile")
        return f"| {model} | {record.runtime} | {record.variant} | {repeat} | {why} |||||"
    total = profile["total_us"]
    coverage = profile["coverage"]
    return (f"| {model} | {record.runtime} | {record.variant} | {repeat} | "
            f"{format_duration(record.p50_ms or 0.0)} | {format_duration(total['p50'] / 1e3)} | "
            f"{profile['overhead']:+.0%} | {coverage:.0%} "
            f"({'within' if abs(1 - coverage) <= 0.15 else 'OUTSIDE'} 15 %) | "
            f"{', '.join(top3(record))} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", type=Path, default=DEFAULT_PYTHON,
                        help="a Python with tflite-runtime 2.14.0 and numpy<2")
    parser.add_argument("--repeat", type=int, default=3, help="deploys per model and runtime")
    args = parser.parse_args()
    if not args.python.is_file():
        parser.error(f"{args.python} does not exist (python3 -m venv V && "
                     "V/bin/pip install tflite-runtime==2.14.0 'numpy<2')")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    table = ["| model | runtime | variant | repeat | unprofiled p50 | profiled total p50 | "
             "overhead | ops sum / total | three heaviest ops (p50) |",
             "|---|---|---|---:|---:|---:|---:|---|---|"]
    rankings: dict[tuple[str, str, str], list[tuple[str, ...]]] = {}
    gaps_between: dict[tuple[str, str, str], list[str]] = {}
    gaps: dict[tuple[str, str, str], list[float]] = {}
    slower: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edge-profile-") as scratch:
        folder = Path(scratch)
        boards = {"local": None, "floor214": floor_target(folder / "targets", args.python)}
        for model, path in MODELS.items():
            for board, targets_dir in boards.items():
                for repeat in range(1, args.repeat + 1):
                    outcome = deploy(path, targets=[board], targets_dir=targets_dir,
                                     recipes="fp32,int8", out_dir=folder / "out",
                                     settings=SETTINGS, conversion_cache=folder / "cache")
                    for record in outcome.run.results:
                        table.append(line(model, repeat, record))
                        key = (model, record.runtime, record.variant)
                        rankings.setdefault(key, []).append(top3(record))
                        gaps_between.setdefault(key, []).append(next_gaps(record))
                        profile = record.profile or {}
                        if profile.get("ops"):
                            gaps.setdefault(key, []).append(
                                (profile["total_us"]["mean"] - profile["ops_sum_us"])
                                / len(profile["ops"]))
                    if model == "MobileNetV2-96":
                        runtime = outcome.run.results[0].runtime
                        slower += [f"- {runtime}, repeat {repeat}: {c.slower}"
                                   for c in profile_comparisons(outcome.run)]
    print("\n".join(table))
    print("\nThree heaviest operators, same ranking in every repeat?")
    for (model, runtime, variant), seen in rankings.items():
        stable = "same order every time" if len(set(seen)) == 1 else (
            "same three, order changed" if len({frozenset(r) for r in seen}) == 1
            else "CHANGED") + ": " + " / ".join(", ".join(ranking)
                                               for ranking in dict.fromkeys(seen))
        if not any(seen):
            stable = "no profile"
        print(f"- {model}, {runtime}, {variant}: {stable}")
        if len(set(seen)) > 1:
            for repeat, between in enumerate(gaps_between[(model, runtime, variant)], 1):
                print(f"    repeat {repeat}: {between}")
    print("\nTime of the profiled run outside the operators, per operator row (the "
          "interpreter between operators and the profiler's own bookkeeping):")
    for (model, runtime, variant), per_op in gaps.items():
        print(f"- {model}, {runtime}, {variant}: {sum(per_op) / len(per_op):.2f} us")
    print("\nMobileNetV2-96, fp32 against int8 per op type on this CPU:")
    print("\n".join(slower))
    return 0


if __name__ == "__main__":
    sys.exit(main())
