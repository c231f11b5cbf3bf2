"""Compression figures (issues 3 and 16): what each recipe buys in size, accuracy and latency.

Prints one table and the floors; it is not a test.  Run it from the repository root on a
quiet machine, pinned to one CPU (timing on a shared machine is noisy):

    python benchmarks/compress.py [--models ...] [--recipes ...] [--rounds 5] [--cpu 1]

Issue 16's figures (the BERT-style encoder; clustering of the two CNNs):

    python benchmarks/compress.py --models examples/text_encoder.py \
        --recipes fp32,fp16,int8-dynamic,int4-weight
    python benchmarks/compress.py --recipes fp32,cluster:16,prune:0.5+cluster:16+int8

A model without labels (the encoder) has no accuracy: its column shows the cosine
similarity of its outputs with the float torch model's instead.  Token-id inputs are
timed on the model's own ``example_input()``, never random integers.

Per model x variant: file size and ratio to fp32, gzip size and ratio, accuracy on the eval
split through the TFLite interpreter and its drop against fp32 (points), median latency on
ai-edge-litert (1 thread) and ratio to fp32, and beside it the same on tflite-runtime 2.14
(its own venv, as the tests build it): on x86 its XNNPACK takes float models only, so int8
runs there an order of magnitude slower than fp32.

The variants are built by the library (``toolkit.compress.compress_to_folder``, with the
2.14 venv as a compatibility Python); their figures come from its manifest.  Latency is
timed with the agent's own loop (``device_agent.measure``) in one process per runtime:
every round times every variant (warm-up, then runs for at least ``--seconds``), the
order rotated each round so a drift in the machine's speed hits all variants alike; the
figure is the median of the per-round medians.  With ``--max-accuracy-drop`` the
library's budget search also runs for real and the variant it returns is checked.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from toolkit.compress import BUDGET_CANDIDATES, compress_to_folder  # noqa: E402
from toolkit.model.load import load_model_source  # noqa: E402

MODELS = ("examples/digits_cnn.py", "examples/digits_mobilenet96.py")
RECIPES_MEASURED = ("fp32,int8,prune-channels:0.5+distill,prune-channels:0.5+distill+int8,"
                    "prune:0.8,int8-mixed,qat")
TFLITE_214 = (Path(os.environ.get("EDGE_TEST_CACHE") or Path.home() / ".cache" / "edge-tests")
              / "tflite-runtime-2.14.0" / "bin" / "python")

#: One process per runtime times every variant; it runs under the 2.14 venv's Python too,
#: so it imports only the standard library, numpy and the agent.
TIMING = textwrap.dedent('''
    import json, statistics, sys
    sys.path.insert(0, sys.argv[1])
    from device_agent.measure import _measured_runs, _random_inputs, _warm_up
    from device_agent.runtime import find_runtime
    job = json.loads(sys.argv[2])
    runtime = find_runtime()
    import numpy as np
    example = np.load(job["example"])
    interpreters, refused = [], {}
    for path in job["files"]:
        try:  # a file this runtime cannot run (int4 on 2.14) is named, not timed
            interpreter = runtime.interpreter_class(model_path=path,
                                                    num_threads=job["threads"])
            interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            refused[path] = " ".join(str(exc).split())[:160]
            interpreters.append(None)
            continue
        details = interpreter.get_input_details()
        for n, (detail, tensor) in enumerate(zip(details, _random_inputs(interpreter))):
            given = example[f"input_{n}"]
            if np.issubdtype(given.dtype, np.integer) and not detail["quantization"][0]:
                tensor = given.astype(detail["dtype"]).reshape(detail["shape"])  # token ids
            interpreter.set_tensor(detail["index"], tensor)
        interpreters.append(interpreter)
    rounds = [[] for _ in interpreters]
    for round_ in range(job["rounds"]):
        for step in range(len(interpreters)):
            index = (round_ + step) % len(interpreters)
            interpreter = interpreters[index]
            if interpreter is None:
                continue
            _warm_up(interpreter, runs=5, seconds=job["warmup_seconds"])
            samples = _measured_runs(interpreter, min_runs=job["min_runs"], max_runs=10**7,
                                     min_seconds=job["seconds"], max_seconds=600.0)
            rounds[index].append(statistics.median(samples) / 1e6)
    print(json.dumps({"runtime": runtime.describe(), "rounds_ms": rounds, "refused": refused}))
''')


@dataclass(frozen=True)
class Floor:
    """``metric`` of ``recipe``'s row must be at most ``limit`` (at least, for cosine)."""

    recipe: str
    metric: str
    limit: float

    @property
    def at_least(self) -> bool:
        return self.metric == "cosine"

    def describe(self) -> str:
        what = {"size": "file", "gzip": "gzip size", "latency": "latency (ai-edge-litert)",
                "drop": "accuracy drop", "drop_vs_int8": "accuracy drop against int8",
                "cosine": "cosine with float"}
        unit = (" points" if self.metric.startswith("drop") else "" if self.at_least
                else "x fp32")
        return f"{what[self.metric]} {'>=' if self.at_least else '<='} {self.limit:g}{unit}"

    def met(self, value: float) -> bool:
        return value >= self.limit - 1e-9 if self.at_least else value <= self.limit + 1e-9


FLOORS = (
    Floor("int8", "size", 0.31), Floor("int8", "drop", 0.5), Floor("int8", "latency", 0.55),
    Floor("prune-channels:0.5+distill", "latency", 0.40),
    Floor("prune-channels:0.5+distill", "drop", 1.0),
    Floor("prune-channels:0.5+distill+int8", "latency", 0.25),
    Floor("prune-channels:0.5+distill+int8", "size", 0.10),
    Floor("prune-channels:0.5+distill+int8", "drop", 1.5),
    Floor("prune:0.8", "gzip", 0.35), Floor("prune:0.8", "drop", 1.0),
    Floor("int8-mixed", "drop_vs_int8", 0.0),
    # Issue 16: weights beyond int8, and models beyond CNNs.
    Floor("cluster:16", "drop", 1.0), Floor("cluster:16", "gzip", 0.35),
    Floor("prune:0.5+cluster:16+int8", "gzip", 0.15),
    Floor("int8-dynamic", "size", 0.30), Floor("int8-dynamic", "cosine", 0.99),
    Floor("int4-weight", "size", 0.20),
)
log = logging.getLogger("benchmarks.compress")


def time_variants(python: Path, files: list[Path], example: Path,
                  args: argparse.Namespace) -> dict[str, Any]:
    """Per-round median latencies (ms) of ``files`` under ``python``'s TFLite runtime."""
    job = {"files": [str(f) for f in files], "threads": 1, "rounds": args.rounds,
           "seconds": args.seconds, "warmup_seconds": 0.2, "min_runs": 20,
           "example": str(example)}
    done = subprocess.run([str(python), "-c", TIMING, str(REPO), json.dumps(job)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"timing under {python} failed: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_model(model: str, recipes: str, out: Path,
                  args: argparse.Namespace) -> list[dict[str, Any]]:
    """Build the variants with the library, time them on both runtimes; one row per variant."""
    name = Path(model).stem
    compat = [args.tflite214_python] if args.tflite214_python.is_file() else []
    manifest_path = compress_to_folder(REPO / model, recipes, out / name, compat_pythons=compat,
                                       progress=lambda line: log.info("%s: %s", name, line))
    variants = json.loads(manifest_path.read_text())["variants"]
    files = [manifest_path.parent / v["file"] for v in variants]
    example = out / f"{name}-example.npz"
    source = load_model_source(REPO / model)
    np.savez(example, **{f"input_{n}": tensor.numpy()
                         for n, tensor in enumerate(source.example_input)})
    log.info("%s: timing %d variants on ai-edge-litert", name, len(files))
    litert = time_variants(Path(sys.executable), files, example, args)
    old: dict[str, Any] | None = None
    if compat:
        log.info("%s: timing %d variants on tflite-runtime 2.14", name, len(files))
        old = time_variants(args.tflite214_python, files, example, args)
    rows = []
    for n, variant in enumerate(variants):
        on_old = {c["name"]: c for c in variant["runtime_compat"]}.get("tflite-runtime", {})
        rows.append({
            "model": name, "recipe": variant["recipe"], "size": variant["size_bytes"],
            "gzip": variant["gzip_bytes"], "accuracy": variant.get("accuracy"),
            "cosine": variant["fidelity"]["cosine_similarity"],
            "latency": statistics.median(litert["rounds_ms"][n]),
            "rounds": litert["rounds_ms"][n], "runtime": litert["runtime"],
            "latency_214": (statistics.median(old["rounds_ms"][n])
                            if old and old["rounds_ms"][n] else None),
            "refused_214": old["refused"].get(str(files[n])) if old else None,
            "runtime_214": old["runtime"] if old else None,
            "correct_214": on_old.get("ok"),
            "agreement_214": on_old.get("top1_agreement_with_host"),
            "error_214": on_old.get("max_relative_error"),
        })
    base = next(row for row in rows if row["recipe"] == "fp32")
    for row in rows:
        row["size_ratio"] = row["size"] / base["size"]
        row["gzip_ratio"] = row["gzip"] / base["gzip"]
        row["drop"] = (100 * (base["accuracy"] - row["accuracy"])
                       if row["accuracy"] is not None else None)
        row["latency_ratio"] = row["latency"] / base["latency"]
        row["latency_214_ratio"] = (row["latency_214"] / base["latency_214"]
                                    if row["latency_214"] is not None else None)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (f"{'model':<20} {'variant':<32} {'size KB':>8} {'x fp32':>6} {'gzip KB':>8} "
              f"{'x fp32':>6} {'acc %':>6} {'drop':>5} {'litert us':>9} {'x fp32':>6} "
              f"{'2.14 us':>8} {'x fp32':>6}")
    print(header)
    print("-" * len(header))
    for row in rows:
        if row["refused_214"]:
            old = f"{'refused':>8} {'-':>6}"
        elif row["latency_214"] is None:
            old = f"{'-':>8} {'-':>6}"
        else:
            # A file 2.14 runs but computes wrongly: its time is no use to anyone.
            mark = "" if row["correct_214"] else "!"
            old = (f"{1e3 * row['latency_214']:>8.1f} "
                   f"{row['latency_214_ratio']:>5.2f}{mark or 'x'}")
        print(f"{row['model']:<20} {row['recipe']:<32} {row['size'] / 1e3:>8.1f} "
              f"{row['size_ratio']:>5.3f}x {row['gzip'] / 1e3:>8.1f} {row['gzip_ratio']:>5.3f}x "
              f"{_quality(row)} {1e3 * row['latency']:>9.1f} "
              f"{row['latency_ratio']:>5.3f}x {old}")


def _quality(row: dict[str, Any]) -> str:
    """Accuracy and its drop, or (no labels) the cosine similarity with the float model."""
    if row["accuracy"] is None:
        return f"cos {row['cosine']:.4f}".rjust(12)
    return f"{100 * row['accuracy']:>6.2f} {row['drop']:>+5.2f}"


def check_floors(rows: list[dict[str, Any]]) -> list[tuple[str, Floor, float, bool]]:
    """(model, floor, measured value, met) for each floor whose recipe has a row."""
    checked = []
    by_key = {(row["model"], row["recipe"]): row for row in rows}
    for model in dict.fromkeys(row["model"] for row in rows):
        for floor in FLOORS:
            row = by_key.get((model, floor.recipe))
            if row is None:
                continue
            if floor.metric == "drop_vs_int8":
                int8 = by_key.get((model, "int8"))
                if int8 is None:
                    continue
                value = 100 * (int8["accuracy"] - row["accuracy"])
            elif floor.metric in ("drop", "cosine"):
                value = row[floor.metric]
            else:
                value = row[f"{floor.metric}_ratio"]
            if value is not None:  # no accuracy drop without labels
                checked.append((model, floor, value, floor.met(value)))
    return checked


def budget_check(model: str, max_drop: float, out: Path,
                 args: argparse.Namespace) -> tuple[str, float | None, bool, list[str]]:
    """What ``compress --max-accuracy-drop`` returns: (chosen, its drop, within?, rejected)."""
    name = Path(model).stem
    compat = [args.tflite214_python] if args.tflite214_python.is_file() else []
    manifest_path = compress_to_folder(REPO / model, BUDGET_CANDIDATES, out / f"{name}-budget",
                                       compat_pythons=compat, max_accuracy_drop=max_drop,
                                       progress=lambda line: log.info("%s budget: %s", name,
                                                                      line))
    selection = json.loads(manifest_path.read_text())["selection"]
    tried = {entry["recipe"]: entry for entry in selection["tried"]}
    drop = tried.get(selection["chosen"], {}).get("drop_points")
    rejected = [_why_not(entry) for entry in selection["tried"] if not entry.get("within_budget")]
    return selection["chosen"], drop, drop is not None and drop <= max_drop, rejected


def _why_not(entry: dict[str, Any]) -> str:
    """Why the budget search passed over a candidate: skipped, over budget, or wrong somewhere."""
    if "skipped" in entry:
        return f"{entry['recipe']} ({entry['skipped']})"
    wrong = "" if entry["runs_on_every_runtime"] else ", not correct on every runtime"
    return f"{entry['recipe']} (drop {entry['drop_points']}{wrong})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated model files, relative to the repository")
    parser.add_argument("--recipes", default=RECIPES_MEASURED,
                        help="comma-separated recipe chains (fp32 is added when missing)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="timed runs per variant per round last at least this long")
    parser.add_argument("--cpu", type=int, help="pin this process and its children to one CPU")
    parser.add_argument("--tflite214-python", type=Path, default=TFLITE_214,
                        help="a Python with tflite-runtime 2.14 (the tests build one here)")
    parser.add_argument("--max-accuracy-drop", type=float,
                        help="also run the library's budget search and check what it returns")
    parser.add_argument("--out", type=Path, help="keep the variants here (default: a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="  %(message)s", stream=sys.stderr)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})  # children inherit it: both timing processes
    import torch

    # Fine-tuning threads: one per CPU this process may use, not one per CPU of the machine.
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    recipes = args.recipes if "fp32" in args.recipes.split(",") else f"fp32,{args.recipes}"
    models = [m.strip() for m in args.models.split(",") if m.strip()]

    with tempfile.TemporaryDirectory(prefix="edge-compress-bench-") as scratch:
        out = args.out or Path(scratch)
        rows = [row for model in models for row in measure_model(model, recipes, out, args)]
        budgets = ([(Path(m).stem, *budget_check(m, args.max_accuracy_drop, out, args))
                    for m in models] if args.max_accuracy_drop is not None else [])

    runtime, old = rows[0]["runtime"], rows[0]["runtime_214"]
    print(f"\nload average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, pinned to CPU "
          f"{args.cpu if args.cpu is not None else '-'}; 1 thread; {args.rounds} rounds of "
          f">= {args.seconds:g} s per variant, median of the round medians")
    print(f"latency runtimes: {runtime['name']} {runtime['version']}; "
          + (f"{old['name']} {old['version']} ({args.tflite214_python})" if old
             else f"no tflite-runtime 2.14 at {args.tflite214_python}"))
    print()
    print_table(rows)
    for row in rows:
        if row["refused_214"]:
            print(f"- {row['model']} {row['recipe']}: tflite-runtime 2.14 refuses the file: "
                  f"{row['refused_214']}")
        elif row["correct_214"] is False:
            print(f"! {row['model']} {row['recipe']}: tflite-runtime 2.14's outputs differ from "
                  f"ai-edge-litert's beyond toolkit.compress.compat's tolerance (top-1 agreement "
                  f"{row['agreement_214']}, max relative error {row['error_214']})")
    print("\nfloors:")
    for model, floor, value, met in check_floors(rows):
        print(f"  {'PASS' if met else 'FAIL'}  {model:<20} {floor.recipe:<32} "
              f"{floor.describe():<40} measured {value:.3f}")
    for model, chosen, drop, within, rejected in budgets:
        print(f"  {'PASS' if within else 'FAIL'}  {model:<20} --max-accuracy-drop "
              f"{args.max_accuracy_drop:g} returned {chosen} (drop {drop} points)"
              + (f"; passed over: {', '.join(rejected)}" if rejected else ""))


if __name__ == "__main__":
    main()
