"""Does ``edge trend`` find the run a model got slower at, on real runs?

Stores ``--runs`` (default 32) real ``edge deploy`` runs of the README model
(examples/digits_cnn.py, fp32, local target, ``--min-runs 50 --min-seconds 0.2``) in a fresh
store; from the middle run on, the model file is a slower one of the same name (the README
model with two C-channel convolutions on its input pooled into a zero-weighted layer, as
benchmarks/paired_gate.py builds it: the outputs are unchanged, the work is real).  The
conversion cache makes every run after the first of each file a few seconds.  Then prints
``edge trend`` of p50 and says where the change point was found against where the swap was.

Usage: python benchmarks/trend.py [--runs 32] [--channels 8] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EDGE = [sys.executable, "-m", "toolkit"]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_gate import SLOWER  # noqa: E402  (a sibling script, not a package)


def deploy(model: Path, out: Path) -> None:
    subprocess.run([*EDGE, "deploy", str(model), "--target", "local", "--recipe", "fp32",
                    "--min-runs", "50", "--min-seconds", "0.2", "-o", str(out)],
                   check=True, capture_output=True)


def slower_model(work: Path, channels: int) -> Path:
    """The README model with two ``channels``-channel convolutions that change nothing but
    the work, under the README model's name (so both are one model's series)."""
    source = REPO / "examples" / "digits_cnn.py"
    slower = work / "slower" / source.name
    slower.parent.mkdir(parents=True, exist_ok=True)
    slower.write_text(SLOWER.format(name=source.stem, kind="conv", size=channels,
                                    path=str(source)))
    return slower


def store_series(work: Path, runs: int, *, swap: int | None, channels: int = 8) -> Path:
    """Deploy the README model ``runs`` times into ``work/out`` (the slower file of the same
    name from run ``swap + 1`` on; None: never) and return the store they are in."""
    source = REPO / "examples" / "digits_cnn.py"
    slower = source if swap is None else slower_model(work, channels)
    for index in range(runs):
        deploy(source if swap is None or index < swap else slower, work / "out")
    return work / "out" / "results.sqlite"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--channels", type=int, default=8,
                        help="channels of the two extra convolutions of the slower file")
    parser.add_argument("--keep", type=Path, help="keep the store in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-trend-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        swap = args.runs // 2
        print(f"{args.runs} runs of digits_cnn.py (fp32, local), the slower file from run "
              f"#{swap + 1}; load {os.getloadavg()[0]:.1f}", flush=True)
        started = time.monotonic()
        store = store_series(work, args.runs, swap=swap, channels=args.channels)
        print(f"stored in {time.monotonic() - started:.0f} s; load "
              f"{os.getloadavg()[0]:.1f}\n", flush=True)
        shown = subprocess.run([*EDGE, "trend", "--target", "local", "--variant", "fp32",
                                "--store", str(store)], check=True, capture_output=True,
                               text=True).stdout
        print(shown)
        marked = [line.split()[0] for line in shown.splitlines() if "<- change" in line]
        print(f"swap at run #{swap + 1}; change points found at "
              f"{', '.join('#' + m for m in marked) or 'none'}")


if __name__ == "__main__":
    main()
