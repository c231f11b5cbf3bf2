"""Issue 13's runtime-floor figure: correct quantized files are VALID on tflite-runtime 2.14.

Prints one table; it is not a test (``tests/test_board_outputs.py`` holds the tests).  A
local target whose Python has only ``tflite-runtime==2.14.0`` and ``numpy<2`` (the runtime
many Raspberry Pi and Jetson images carry) stands for the board; ``edge deploy`` runs the
digits CNN's quantized variants on it with the default measurement settings, so the
on-board output check and the verdict are the ones a user gets.  Then a file 2.14 really
computes wrongly (ai-edge-quantizer's dynamic-range MLP) is deployed as it is: it must stay
INVALID.  Run it from the repository root (about 3 minutes for 3 repeats)::

    python benchmarks/runtime_floor.py [--python VENV214/bin/python] [--repeat 3]

The default Python is the one the test suite builds (``tflite_runtime_214`` fixture); make
one with ``python3 -m venv V && V/bin/pip install tflite-runtime==2.14.0 'numpy<2'``.
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

from tests.models.wrongly_computed_mlp import write_wrongly_computed_mlp  # noqa: E402
from toolkit.results.record import ResultRecord  # noqa: E402
from toolkit.run.deploy import deploy  # noqa: E402

RECIPES = "int8,int8-dynamic,prune-channels:0.5+int8"
DEFAULT_PYTHON = Path.home() / ".cache/edge-tests/tflite-runtime-2.14.0/bin/python"


def floor_target(folder: Path, python: Path) -> Path:
    """A local board whose Python has tflite-runtime 2.14 only."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "floor214.toml").write_text(
        'transport = "local"\n'
        f'python = "{python}"\n'
        'runtime = "tflite-runtime"\n'
        "threads = 1\n")
    return folder


def rows(model: str, results: list[ResultRecord]) -> list[str]:
    lines = []
    for record in results:
        if not record.ok:
            lines.append(f"| {model} | {record.variant} | - | failed | {record.error} | - |")
            continue
        check = record.measured.get("output_check", {})
        why = "; ".join(record.verdict_reasons)
        judged = check.get("rule") or check.get("summary", "")
        again = "".join(f"; measured again, attempt {n} was INVALID ({reason})"
                        for n, reason in enumerate(record.earlier_attempts, start=1))
        lines.append(f"| {model} | {record.variant} | {record.runtime} | "
                     f"{'pass' if check.get('ok') else 'FAIL'} ({judged}) | "
                     f"{check.get('max_abs_diff', float('nan')):.3g} | "
                     f"{record.verdict}{': ' + why if why else ''}{again} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", type=Path, default=DEFAULT_PYTHON,
                        help="a Python with tflite-runtime 2.14.0 and numpy<2")
    parser.add_argument("--repeat", type=int, default=3,
                        help="deploys of the digits CNN (each a fresh measurement)")
    args = parser.parse_args()
    if not args.python.is_file():
        parser.error(f"{args.python} does not exist; see this script's docstring")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    table = ["| model | variant | runtime on the board | output check | max abs diff | verdict |",
             "|---|---|---|---|---:|---|"]
    with tempfile.TemporaryDirectory(prefix="edge-floor-") as scratch:
        folder = Path(scratch)
        targets = floor_target(folder / "targets", args.python)
        common: dict[str, Any] = {"targets": ["floor214"], "targets_dir": targets,
                                  "out_dir": folder / "out", "conversion_cache": None}
        valid: dict[str, int] = {}
        for _ in range(args.repeat):
            digits = deploy(REPO / "examples" / "digits_cnn.py", recipes=RECIPES, **common)
            table += rows("digits CNN", digits.run.results)
            for record in digits.run.results:
                valid[record.variant] = valid.get(record.variant, 0) + (
                    record.verdict == "VALID")
        _, dynamic = write_wrongly_computed_mlp(folder)
        mlp = deploy(dynamic, **common)
        table += rows("MLP (ai-edge-quantizer dynamic)", mlp.run.results)
    print("\n".join(table))
    print("\ndigits CNN VALID on tflite-runtime 2.14: " + ", ".join(
        f"{variant} {count}/{args.repeat}" for variant, count in valid.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
