"""TFLite (ai-edge-litert) and ONNX Runtime side by side: one ``edge deploy`` per model.

    python benchmarks/runtimes.py [MODEL.py ...] [--target local] [--recipes fp32,int8,fp16]
                                  [--min-runs N] [--min-seconds S]

Each model file (default: the README's CNN, MobileNetV2-96 and the text encoder of
``examples/``) is deployed once with ``--runtime tflite,onnxruntime``: litert-torch
converts it to ``.tflite`` variants, ``torch.onnx.export(dynamo=True)`` and
``onnxruntime.quantization`` make the ``.onnx`` ones (named ``VARIANT-ort``), and the
board measures both.  One table: model, runtime, variant, p50 and p99, peak memory, size,
accuracy on the eval split (or, for a model without labels, the file's cosine similarity
with the torch model), and the verdict with its reasons and the board's output check.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = ("examples/digits_cnn.py", "examples/digits_mobilenet96.py", "examples/text_encoder.py")


def deploy(model: Path, target: str, recipes: str, out: Path, timing: list[str]) -> list[dict]:
    """The records of one ``edge deploy MODEL --runtime tflite,onnxruntime``."""
    done = subprocess.run([sys.executable, "-m", "toolkit", "deploy", str(model), "--target",
                           target, "--recipe", recipes, "--runtime", "tflite,onnxruntime",
                           "-o", str(out), "--json", "-q", *timing],
                          capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode not in (0, 3):
        sys.exit(f"edge deploy {model} failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout)["results"]


def row(model: str, record: dict) -> str:
    runtime = record.get("runtime") or {}
    name = f"{runtime.get('name', '?')} {runtime.get('version', '')}".strip()
    if record["status"] != "ok":
        return (f"| {model} | {name} | {record['variant']} | | | | | | "
                f"failed: {record.get('error')} |")
    latency = record["latency_ms"]
    return (f"| {model} | {name} | {record['variant']} | {latency['p50'] * 1000:.1f} | "
            f"{latency['p99'] * 1000:.1f} | {record['peak_rss_bytes'] / 2**20:.1f} | "
            f"{record['size_bytes'] / 1024:.1f} | {_quality(record)} | {_verdict(record)} |")


def _quality(record: dict) -> str:
    if record.get("accuracy") is not None:
        return f"{record['accuracy'] * 100:.2f} %"
    cosine = (record.get("fidelity") or {}).get("cosine_similarity")
    return "" if cosine is None else f"cosine {cosine:.4f}"


def _verdict(record: dict) -> str:
    verdict = record.get("verdict") or {}
    reasons = [*verdict.get("reasons", []), *verdict.get("conditions", [])]
    check = record.get("output_check") or {}
    reasons.append(f"output check {'ok' if check.get('ok') else 'MISMATCH'}" if check
                   else "no output check")
    return f"{verdict.get('status', '?')} ({'; '.join(reasons)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path,
                        default=[REPO / model for model in MODELS])
    parser.add_argument("--target", default="local")
    parser.add_argument("--recipes", default="fp32,int8,fp16")
    parser.add_argument("--min-runs", type=int)
    parser.add_argument("--min-seconds", type=float)
    args = parser.parse_args()
    timing = [*(["--min-runs", str(args.min_runs)] if args.min_runs else []),
              *(["--min-seconds", str(args.min_seconds)] if args.min_seconds is not None
                else [])]
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            records = deploy(model.resolve(), args.target, args.recipes,
                             Path(tmp) / model.stem, timing)
            lines += [row(model.stem, record) for record in records]
    print(f"one edge deploy per model, --runtime tflite,onnxruntime --recipe {args.recipes}, "
          f"on {args.target}")
    print("| model | runtime | variant | p50 us | p99 us | peak MiB | size KiB | accuracy "
          "| verdict |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
