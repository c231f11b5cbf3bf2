"""ONNX Runtime's per-node profile (issue 25): ``edge deploy model.onnx --profile`` on two
boards, this Python's onnxruntime and a JetPack 5-like Python 3.8 with onnxruntime 1.19.2.

Prints tables; it is not a test (``tests/test_onnx.py`` holds the tests).  The README's
digits CNN (or the model file given) is exported with ``torch.onnx.export(..., dynamo=True)``
(as ``benchmarks/runtimes.py`` does) and deployed as given and as ``int8-dynamic`` with
``--profile`` on a local target running onnxruntime, then on one whose Python is the 3.8
board's.  For every profiled variant: each node as ORT ran it (its op, its name in the
graph ORT optimised, the execution provider that ran it, p50 and mean per run, share), then
the nodes' summed mean against the profiled run's mean and against the unprofiled pass's
mean (the latency figure), and what profiling cost.  Run it from the repository root::

    python benchmarks/ort_profile.py [MODEL.py] [--python38 VENV38/bin/python]
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

from runtimes import export_onnx  # noqa: E402  (benchmarks/runtimes.py, beside this one)

from toolkit.results.record import ResultRecord  # noqa: E402
from toolkit.run.deploy import deploy  # noqa: E402
from toolkit.safe_text import printable  # noqa: E402

DEFAULT_PYTHON38 = Path.home() / ".cache/edge-tests/python-3.8-tflite-runtime-2.14.0/bin/python"
#: Short timed passes: the profile is the subject (the profiled pass has its own floors).
SETTINGS = {"profile": 1, "min_seconds": 0.3, "cooldown_seconds": 0.0}


def ort_targets(folder: Path, python38: Path | None) -> Path:
    """``ort`` (this Python) and, given its Python, ``ort38``: local boards on onnxruntime."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ort.toml").write_text('transport = "local"\nruntime = "onnxruntime"\n'
                                     "threads = 1\n")
    if python38 is not None:
        (folder / "ort38.toml").write_text(f'transport = "local"\npython = "{python38}"\n'
                                           'runtime = "onnxruntime"\nthreads = 1\n')
    return folder


def report(record: ResultRecord) -> list[str]:
    """The variant's nodes as a table, then its sums against the whole run."""
    profile: dict[str, Any] = dict(record.profile or {})
    runtime = f"{record.runtime} on {record.target}, {record.variant}"
    if not record.ok or not profile or "error" in profile:
        return [f"{runtime}: {printable(record.error or profile.get('error', 'no profile'))}"]
    lines = [f"{runtime}: {printable(profile['method'])}, {profile['runs']} runs", "",
             "| # | op | node | provider | p50 per run | mean per run | share |",
             "|---:|---|---|---|---:|---:|---:|"]
    for row in profile["ops"]:
        lines.append(f"| {row['index']} | {printable(row['op'])} | "
                     f"{printable(row.get('kernel', ''))} | {printable(row.get('provider', ''))}"
                     f" | {row['p50_us']:.1f} us | {row['mean_us']:.2f} us | "
                     f"{row['share']:.0%} |")
    total, ops_sum = profile["total_us"], profile["ops_sum_us"]
    p50_sum = sum(row["p50_us"] for row in profile["ops"])
    mean_ms, p50_ms = record.latency_ms["mean"], record.latency_ms["p50"]
    # Both statistics: on a shared machine a few stalled runs move every mean.
    lines += ["", f"- nodes' means summed: {ops_sum:.1f} us = {profile['coverage']:.0%} of the "
              f"profiled run's mean ({total['mean']:.1f} us), {ops_sum / (mean_ms * 1e3):.0%} "
              f"of the unprofiled mean ({mean_ms * 1e3:.1f} us)",
              f"- nodes' p50s summed: {p50_sum:.1f} us = {p50_sum / total['p50']:.0%} of the "
              f"profiled run's p50 ({total['p50']:.1f} us), {p50_sum / (p50_ms * 1e3):.0%} of "
              f"the unprofiled p50 ({p50_ms * 1e3:.1f} us); profiling cost "
              f"{profile['overhead']:+.0%} (profiled p50 against unprofiled p50)", ""]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", type=Path, default=REPO / "examples/digits_cnn.py")
    parser.add_argument("--python38", type=Path, default=DEFAULT_PYTHON38,
                        help="a Python 3.8 with onnxruntime 1.19.2 and numpy<1.25 "
                             "(tests/conftest.py's python38_board builds one)")
    args = parser.parse_args()
    python38 = args.python38 if args.python38.is_file() else None
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    lines = []
    with tempfile.TemporaryDirectory(prefix="edge-ort-profile-") as scratch:
        folder = Path(scratch)
        onnx_file = export_onnx(args.model.resolve(), folder)
        targets = ["ort"] + (["ort38"] if python38 is not None else [])
        outcome = deploy(onnx_file, targets=targets,
                         targets_dir=ort_targets(folder / "targets", python38),
                         recipes="fp32,int8-dynamic", out_dir=folder / "out", settings=SETTINGS)
        for record in outcome.run.results:
            lines += report(record)
    if python38 is None:
        lines.append(f"(no {args.python38}: the Python 3.8 board was left out)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
