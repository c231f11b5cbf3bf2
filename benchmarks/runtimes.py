"""One PyTorch model on two runtimes: TFLite (ai-edge-litert) and ONNX Runtime, side by side.

    python benchmarks/runtimes.py [MODEL.py] [--target local] [--recipes fp32,int8-dynamic]

The model file (default: the README's ``examples/digits_cnn.py``) is deployed once as it
is (litert-torch converts it to ``.tflite``), and exported with
``torch.onnx.export(..., dynamo=True)`` (onnxscript) to an ``.onnx`` that is deployed as
given, its ``int8-dynamic`` through ``onnxruntime.quantization``.  One row per runtime
and variant: size, p50 and p99, peak memory, the board's output check and the verdict.
Two deploys, not one: a single deploy measuring both runtimes is not built yet.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def deploy(model: Path, target: str, recipes: str, out: Path) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "toolkit", "deploy", str(model), "--target",
                           target, "--recipe", recipes, "-o", str(out), "--json", "-q"],
                          capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode not in (0, 3):
        sys.exit(f"edge deploy {model} failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout)["results"]


def export_onnx(model: Path, out: Path) -> Path:
    """The model file's module exported to ``out/NAME.onnx`` on its own example input."""
    import torch

    sys.path.insert(0, str(REPO))
    from toolkit._quiet import captured_native_output
    from toolkit.model.load import load_model_source

    source = load_model_source(model)
    path = out / f"{model.stem}.onnx"
    with captured_native_output():  # the exporter's progress lines would split the table
        torch.onnx.export(source.module.eval(), source.example_input, str(path), dynamo=True,
                          external_data=False, verbose=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, default=REPO / "examples/digits_cnn.py")
    parser.add_argument("--target", default="local")
    parser.add_argument("--recipes", default="fp32,int8-dynamic")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows += deploy(args.model.resolve(), args.target, args.recipes, folder / "tflite")
        onnx_file = export_onnx(args.model.resolve(), folder)
        # The file as given is the onnx fp32: its variant is named after the file.
        onnx_recipes = args.recipes.replace("fp32", "").strip(",") or "fp32"
        rows += deploy(onnx_file, args.target, onnx_recipes, folder / "onnx")
    print(f"{args.model.name} on {args.target}")
    print("| runtime | variant | size | p50 ms | p99 ms | peak MiB | output check | verdict |")
    print("|---|---|---:|---:|---:|---:|---|---|")
    for r in rows:
        runtime = (r.get("runtime") or {})
        name = f"{runtime.get('name', '?')} {runtime.get('version', '')}".strip()
        if r["status"] != "ok":
            print(f"| {name} | {r['variant']} | | | | | | failed: {r.get('error')} |")
            continue
        latency = r["latency_ms"]
        check = r.get("output_check") or {}
        print(f"| {name} | {r['variant']} | {r['size_bytes'] / 1024:.1f} KiB | "
              f"{latency['p50']:.4f} | {latency['p99']:.4f} | "
              f"{r['peak_rss_bytes'] / 2**20:.1f} | "
              f"{'match' if check.get('ok') else 'MISMATCH' if check else 'none'} | "
              f"{_verdict(r)} |")


def _verdict(record: dict) -> str:
    verdict = record.get("verdict") or {}
    reasons = [*verdict.get("reasons", []), *verdict.get("conditions", [])]
    return f"{verdict.get('status', '?')}" + (f" ({'; '.join(reasons)})" if reasons else "")


if __name__ == "__main__":
    main()
