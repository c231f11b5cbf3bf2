"""Does the paired gate decide?  False alarms on identical files, real slowdowns caught.

On the README's example (examples/digits_cnn.py, fp32 and int8, a few us an inference)
and on MobileNetV2-96 (examples/digits_mobilenet96.py, fp32, about 1 ms), local target,
every check a fresh board job as ``edge check --paired`` runs it (a new agent process each
time, so each check meets its own process offsets):

- **identical pairs**: the same files as baseline and candidate, ``--pairs`` checks
  (default 60) with the default 5 % limit: how many pass, regress, cannot tell;
- **real slowdowns**: the model with one extra layer in front of it (two convolutions on
  the input, ``C`` channels, their pooled result through a zero-weighted linear layer added
  to the logits: the outputs are unchanged, the work is real and the converter keeps it).
  A ladder of ``C`` is built; each rung's true ratio per variant is measured by a long
  paired calibration (``--calibration-rounds`` fresh jobs of 64 triples, the median ratio)
  and printed.  Rungs are then sorted into the bands the issue names (1.01-1.03 below the
  limit, 1.07-1.10 and 1.10-1.20 above it), and ``--slow-pairs`` checks (default 20) are run
  on the first rung in each band.

- **the README flow**: deploy the README model, ``edge runs tag latest main``, then
  ``--readme-flow`` times (default 20) ``edge deploy examples/digits_cnn.py --target local
  --against main`` as CI runs it, a whole process each: exit codes and seconds.

Usage: python benchmarks/paired_gate.py [--pairs 60] [--slow-pairs 20] [--models cnn,mobilenet]
       [--readme-flow 20] [--ssh]  (--ssh: also time a paired check over a loopback sshd;
       needs root and openssh-server)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device_agent import protocol
from toolkit.boards.targets import Target, load_target
from toolkit.gate.check import Thresholds
from toolkit.gate.paired import PairSpec, check_paired, paired_job
from toolkit.run.runner import JobRunner

REPO = Path(__file__).resolve().parent.parent
EDGE = [sys.executable, "-m", "toolkit"]
#: name -> (model file, recipes, ladder of extra layers: ("head", k) is k identity 10x10
#: linear layers on the logits, ("conv", C) two C-channel convolutions on the input,
#: ("conv1", C) one, ("wide", W) a 10 -> W -> 10 pair of linear layers after the logits
#: that passes them through unchanged: a 1 ms model needs hundreds of thousands of MACs
#: for a few per cent, and convolutions on its 96x96 input came in steps of 10 %)
MODELS = {"cnn": (REPO / "examples" / "digits_cnn.py", "fp32,int8",
                  (*(("head", k) for k in (2, 3, 4, 6, 8, 10, 12, 16, 20, 24)), ("conv", 2))),
          "mobilenet": (REPO / "examples" / "digits_mobilenet96.py", "fp32",
                        (*(("wide", w) for w in (4_000, 8_000, 16_000, 18_000, 24_000, 32_000,
                                                 48_000)), ("conv1", 2)))}
BANDS = {"1.01-1.03": (1.01, 1.03), "1.07-1.10": (1.07, 1.10), "1.10-1.20": (1.10, 1.20)}

SLOWER = '''\
"""{name} with extra layers ({kind} {size}) that leave its outputs as they were
(benchmarks/paired_gate.py)."""
import importlib.util
import sys

import torch
from torch import nn

_spec = importlib.util.spec_from_file_location("_inner_model", {path!r})
_inner = importlib.util.module_from_spec(_spec)
sys.modules["_inner_model"] = _inner
_spec.loader.exec_module(_inner)


class Slower(nn.Module):
    """``head``: ``size`` identity 10x10 linear layers after the logits; ``wide``: 10 -> size
    -> 10 linear layers that pass the logits through; ``conv`` (two) and
    ``conv1`` (one): ``size``-channel convolutions on the input, pooled into a
    zero-weighted linear layer added to the logits.  The outputs are unchanged; the work
    is real."""

    def __init__(self, inner: nn.Module, kind: str, size: int) -> None:
        super().__init__()
        self.inner, self.kind = inner, kind
        torch.manual_seed(0)
        if kind == "head":
            self.extra = nn.Sequential(*(nn.Linear(10, 10) for _ in range(size)))
            for layer in self.extra:
                nn.init.eye_(layer.weight)
                nn.init.zeros_(layer.bias)
            return
        if kind == "wide":
            self.extra = nn.Sequential(nn.Linear(10, size), nn.Linear(size, 10))
            for layer in self.extra:
                nn.init.eye_(layer.weight)  # the first 10 of W carry the logits through
                nn.init.zeros_(layer.bias)
            return
        layers = [nn.Conv2d(1, size, 3, padding=1), nn.ReLU()]
        if kind == "conv":
            layers += [nn.Conv2d(size, size, 3, padding=1), nn.ReLU()]
        self.extra = nn.Sequential(*layers)
        for layer in self.extra:
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.3)
        self.zero = nn.Linear(size, 10)
        nn.init.zeros_(self.zero.weight)
        nn.init.zeros_(self.zero.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind in ("head", "wide"):
            return self.extra(self.inner(x))
        side = x.reshape(1, 1, x.shape[-2] if x.shape[-1] == 1 else x.shape[-1], -1)
        return self.inner(x) + self.zero(self.extra(side).mean(dim=(2, 3)))


def build_model() -> nn.Module:
    return Slower(_inner.build_model(), {kind!r}, {size}).eval()


example_input = _inner.example_input
calibration_data = _inner.calibration_data
eval_data = _inner.eval_data
'''


def compress(model: Path, recipes: str, out: Path) -> dict[str, Path]:
    subprocess.run([*EDGE, "compress", str(model), "--recipe", recipes, "-o", str(out)],
                   check=True, capture_output=True)
    return {recipe: out / f"{recipe}.tflite" for recipe in recipes.split(",")}


def specs(base: dict[str, Path], new: dict[str, Path]) -> list[PairSpec]:
    return [PairSpec(variant=name, baseline_file=base[name],
                     baseline_sha256=protocol.sha256_file(base[name]),
                     candidate_file=new[name], candidate_sha256=protocol.sha256_file(new[name]))
            for name in base]


def calibrate(target: Target, pairs: list[PairSpec], rounds: int) -> dict[str, float]:
    """Each variant's true ratio: the median over ``rounds`` fresh jobs of 64 triples."""
    found: dict[str, list[float]] = {}
    for _ in range(rounds):
        job, files = paired_job(pairs, target, Thresholds(), f"cal-{time.time_ns()}")
        job["paired"] = {"round_triples": 64, "max_rounds": 1}
        result = protocol.parse_result(JobRunner(target).run_job(job, files), job)
        for pair in result["pairs"]:
            blocks = pair["block_median_ms"]
            ratio = np.exp(np.median(np.log(np.array(blocks["candidate"])
                                            / np.array(blocks["baseline"]))))
            found.setdefault(pair["name"], []).append(float(ratio))
    return {name: float(np.median(values)) for name, values in found.items()}


def trials(target: Target, pairs: list[PairSpec], count: int) -> dict[str, Any]:
    """``count`` paired checks as edge check --paired runs them: verdicts per variant, and
    the seconds each check took."""
    verdicts: dict[str, Counter[str]] = {}
    ratios: dict[str, list[float]] = {}
    seconds = []
    rounds: list[int] = []
    for _ in range(count):
        started = time.perf_counter()
        outcome = check_paired(target, pairs, Thresholds())
        seconds.append(time.perf_counter() - started)
        for check in outcome.checks:
            if check.metric == "latency_p50":
                verdicts.setdefault(check.variant, Counter())[check.verdict] += 1
                if check.ratio is not None:
                    ratios.setdefault(check.variant, []).append(check.ratio)
        rounds += [m.get("rounds", 0) for m in outcome.measurements.values()]
    return {"verdicts": verdicts, "ratios": ratios, "seconds": seconds, "rounds": rounds}


def show(label: str, found: dict[str, Any], true: dict[str, float] | None = None) -> None:
    for variant, counts in found["verdicts"].items():
        total = sum(counts.values())
        seen = found["ratios"].get(variant, [])
        spread = (f"ratio {np.min(seen):.4f}-{np.max(seen):.4f}" if seen else "no ratio")
        truth = f" true {true[variant]:.4f}" if true else ""
        print(f"  {label:<22} {variant:<5}{truth}: {counts['regression']:>2} REGRESSION, "
              f"{counts['inconclusive']:>2} cannot tell, {counts['pass'] + counts['improved']:>2}"
              f" pass of {total}; {spread}")
    print(f"  {'':<22} seconds per check: median {np.median(found['seconds']):.1f}, max "
          f"{np.max(found['seconds']):.1f}; rounds per pair: median "
          f"{np.median(found['rounds']):.0f}, max {np.max(found['rounds'])}")


def run_model(name: str, work: Path, args: argparse.Namespace, target: Target) -> None:
    path, recipes, ladder = MODELS[name]
    if args.ladder:  # e.g. wide:18000,wide:20000: rungs between the default ones
        ladder = tuple((kind, int(size)) for kind, size in
                       (rung.split(":") for rung in args.ladder.split(",")))
    print(f"\n## {name}: {path.name} ({recipes}), load {os.getloadavg()[0]:.1f}", flush=True)
    base = compress(path, recipes, work / name / "base")
    if args.pairs:
        show("identical", trials(target, specs(base, base), args.pairs))
    rungs: dict[str, tuple[list[PairSpec], dict[str, float]]] = {}
    for kind, size in ladder:
        rung = f"{kind} {size}"
        model = work / name / f"slower_{kind}_{size}.py"
        model.write_text(SLOWER.format(name=path.stem, kind=kind, size=size, path=str(path)))
        pairs = specs(base, compress(model, recipes, work / name / f"slower_{kind}_{size}"))
        rungs[rung] = (pairs, calibrate(target, pairs, args.calibration_rounds))
        print(f"  extra layers {rung:<8}: true ratio "
              + ", ".join(f"{v} {r:.4f}" for v, r in rungs[rung][1].items()), flush=True)
    for band, (low, high) in BANDS.items():
        for variant in recipes.split(","):
            chosen = next((c for c, (_, true) in rungs.items() if low <= true[variant] <= high),
                          None)
            if chosen is None:
                print(f"  {band} {variant}: no rung of the ladder fell in this band")
                continue
            pairs, true = rungs[chosen]
            one = [p for p in pairs if p.variant == variant]
            show(f"{band} ({chosen})", trials(target, one, args.slow_pairs),
                 {variant: true[variant]})


def time_over_ssh(work: Path) -> None:
    """One paired check of the README model over a loopback sshd, as edge check runs it."""
    sys.path.insert(0, str(REPO))
    from tests.lab import Sshd  # the test suite's real sshd on loopback

    path, recipes, _ = MODELS["cnn"]
    base = compress(path, recipes, work / "ssh" / "base")
    sshd = Sshd.create(work / "sshd")
    try:
        sshd.write_target(work / "targets", "loopback", work / "board")
        target = load_target("loopback", work / "targets")
        for attempt in ("first (uploads the agent and files)", "second (cached on the board)"):
            started = time.perf_counter()
            outcome = check_paired(target, specs(base, base), Thresholds())
            print(f"  over SSH (loopback sshd), {attempt}: "
                  f"{time.perf_counter() - started:.1f} s for {len(outcome.measurements)} "
                  f"variants; {outcome.summary}")
    finally:
        sshd.kill()


def readme_flow(work: Path, tries: int) -> None:
    """The README's CI recipe, as a user runs it: a whole ``edge`` process per step."""
    out = work / "readme"
    env = {**os.environ, "EDGE_CONVERSION_CACHE": str(work / "conversions"),
           "EDGE_STORE": str(out / "results.sqlite")}
    model = str(REPO / "examples" / "digits_cnn.py")
    subprocess.run([*EDGE, "deploy", model, "--target", "local", "-o", str(out), "-q"],
                   check=True, capture_output=True, env=env)
    subprocess.run([*EDGE, "runs", "tag", "latest", "main"], check=True, capture_output=True,
                   env=env)
    codes: Counter[int] = Counter()
    seconds = []
    for _ in range(tries):
        started = time.perf_counter()
        done = subprocess.run([*EDGE, "deploy", model, "--target", "local", "-o", str(out),
                               "-q", "--against", "main"], check=False, capture_output=True,
                              env=env)
        seconds.append(time.perf_counter() - started)
        codes[done.returncode] += 1
        if done.returncode:
            print("  not 0:", done.stderr.decode(errors="replace").strip().splitlines()[-1:])
    print(f"\n## README flow (deploy, tag main, then deploy --against main), load "
          f"{os.getloadavg()[0]:.1f}: exit 0 in {codes[0]} of {tries}, exit 1 in {codes[1]}, "
          f"exit 3 in {codes[3]}; seconds per CI command (model loading, a cached conversion, "
          f"the usual measurement and the paired one): median {np.median(seconds):.1f}, max "
          f"{np.max(seconds):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--slow-pairs", type=int, default=20)
    parser.add_argument("--calibration-rounds", type=int, default=3)
    parser.add_argument("--models", default="cnn,mobilenet")
    parser.add_argument("--readme-flow", type=int, default=20)
    parser.add_argument("--ladder", default="",
                        help="rungs instead of each model's default ladder, e.g. wide:20000")
    parser.add_argument("--ssh", action="store_true")
    args = parser.parse_args()
    target = load_target("local")
    print(f"paired gate on {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; defaults: "
          f"{json.dumps(protocol.PairedSettings().to_dict())}")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        if args.readme_flow:
            readme_flow(work, args.readme_flow)
        for name in [m for m in args.models.split(",") if m]:
            run_model(name, work, args, target)
        if args.ssh:
            time_over_ssh(work)
    print(f"\nload at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
