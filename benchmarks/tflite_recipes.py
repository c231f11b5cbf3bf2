"""Recipes on float .tflite files from another toolchain: sizes, agreement, latency.

    python benchmarks/tflite_recipes.py FILE.tflite [FILE.tflite ...] [--target local]
        [--calibration DIR]

Each file is deployed with ``edge deploy FILE --recipe fp16,int8-dynamic,int4-weight``
(one deploy per file, the file as given measured beside its rewrites; with
``--calibration DIR``, full-integer ``int8`` calibrated on DIR's inputs too, and every
rewrite compared with the given file on them) and one row per
variant is printed: size and its ratio to the given file, cosine with the given file's
outputs on the host, the board's output check, p50 and p99, peak memory and the verdict.
Files to try: ``tests/data/keras_cnn.tflite``, or Keras's MobileNetV2 made by
``tests/models/keras_tflite.py --mobilenet`` under a Python with TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RECIPES = "fp16,int8-dynamic,int4-weight"


def deploy(model: Path, target: str, out: Path, calibration: Path | None) -> list[dict]:
    extra = ["--recipe", RECIPES + ",int8", "--calibration", str(calibration)] \
        if calibration else ["--recipe", RECIPES]
    done = subprocess.run([sys.executable, "-m", "toolkit", "deploy", str(model), "--target",
                           target, *extra, "-o", str(out), "--json", "-q"],
                          capture_output=True, text=True, check=False)
    if done.returncode not in (0, 3):
        sys.exit(f"edge deploy {model} failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout)["results"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--target", default="local")
    parser.add_argument("--calibration", type=Path, metavar="DIR",
                        help="Inputs to calibrate int8 on (one .npy per sample).")
    args = parser.parse_args()
    print("| file | variant | size | vs given | cosine with given | board output check | "
          "p50 ms | p99 ms | peak MiB | verdict |")
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---|")
    for model in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            records = deploy(model, args.target, Path(tmp) / "out", args.calibration)
        given = next(r for r in records if r.get("config", {}).get("recipe") == "as-is")
        for r in records:
            if r["status"] != "ok":
                print(f"| {model.name} | {r['variant']} | | | | | | | | failed: {r.get('error')} |")
                continue
            fidelity = r.get("fidelity") or {}
            cosine = fidelity.get("cosine_similarity")
            check = r.get("output_check") or {}
            latency = r.get("latency_ms") or {}
            print(f"| {model.name} | {r['variant']} | {r['size_bytes'] / 1024:.1f} KiB | "
                  f"{r['size_bytes'] / given['size_bytes']:.2f}x | "
                  f"{'' if cosine is None else f'{cosine:.4f}'} | "
                  f"{'match' if check.get('ok') else 'MISMATCH'} | "
                  f"{latency.get('p50', float('nan')):.3f} | "
                  f"{latency.get('p99', float('nan')):.3f} | "
                  f"{(r.get('peak_rss_bytes') or 0) / 2**20:.1f} | {_verdict(r)} |")


def _verdict(record: dict) -> str:
    verdict = record.get("verdict") or {}
    reasons = [*verdict.get("reasons", []), *verdict.get("conditions", [])]
    return f"{verdict.get('status', '?')}" + (f" ({'; '.join(reasons)})" if reasons else "")


if __name__ == "__main__":
    main()
