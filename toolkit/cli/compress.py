"""``edge compress``: build variants and their manifest without running them anywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from toolkit.cli.options import runtime_option
from toolkit.cli.table import echo_table
from toolkit.defaults import compress_budget_candidates
from toolkit.errors import UsageError

if TYPE_CHECKING:
    from toolkit.results.facts import Fidelity


def _progress(message: str) -> None:
    click.echo(f"  {message}", err=True)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--recipe",
              help="Comma-separated variants; each a chain joined with +, e.g. "
                   "fp32,int8,prune-channels:0.5+distill+int8 [default: fp32,int8; with "
                   "--max-accuracy-drop the candidates, in order: "
                   f"{compress_budget_candidates(0.5).replace('mixed:0.5', 'mixed:POINTS')}].")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Folder for the .tflite files and manifest.json.")
@click.option("--compat-python", "compat_pythons", multiple=True,
              type=click.Path(path_type=Path),
              help="Another Python whose TFLite runtime (e.g. tflite-runtime 2.14 in a venv) "
                   "must load every file and compute what the host runtime computes; "
                   "recorded as runtime_compat.")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0), metavar="POINTS",
              help="Try the candidate recipes in order of expected gain and keep the first "
                   "whose accuracy is at most POINTS below fp32's.")
@click.option("--analyze", is_flag=True,
              help="Instead of building variants, quantize each layer alone and write its "
                   "accuracy drop and output SQNR to sensitivity.json (what int8-mixed uses).")
@runtime_option
@click.option("--json", "as_json", is_flag=True, help="Print the manifest instead of a table.")
def compress(model: Path, recipe: str | None, out_dir: Path, compat_pythons: tuple[Path, ...],
             max_accuracy_drop: float | None, analyze: bool, runtimes: tuple[str, ...],
             as_json: bool) -> None:
    """Compress MODEL into one .tflite per recipe and a manifest.json with their figures.

    Example: edge compress examples/digits_cnn.py --recipe fp32,int8,prune:0.8 -o out

    Example: edge compress examples/digits_cnn.py --runtime tflite,onnxruntime -o out
    """
    from toolkit.artifacts.bundle import read_manifest
    from toolkit.compress import compress_to_folder

    if analyze:
        if recipe or max_accuracy_drop is not None or compat_pythons or runtimes:
            raise UsageError("--analyze builds no variants: drop --recipe, --max-accuracy-drop, "
                             "--compat-python and --runtime")
        _analyze(model, out_dir, as_json)
        return
    recipes = recipe or (compress_budget_candidates(max_accuracy_drop)
                         if max_accuracy_drop is not None else "fp32,int8")
    manifest_path = compress_to_folder(model, recipes, out_dir, progress=_progress,
                                       compat_pythons=compat_pythons,
                                       max_accuracy_drop=max_accuracy_drop,
                                       runtimes=runtimes)
    manifest = read_manifest(manifest_path)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    rows = []
    for v in manifest["variants"]:
        fidelity: Fidelity = v.get("fidelity") or {}
        sqnr = fidelity.get("sqnr_db")
        rows.append([v["variant"], str(v["size_bytes"]), str(v["gzip_bytes"]),
                     "-" if v.get("accuracy") is None else f"{v['accuracy']:.4f}",
                     _agreement(fidelity),
                     "-" if sqnr is None else f"{sqnr:.1f}", str(v.get("macs") or 0),
                     ", ".join(f"{r['name']} {r['version']} {'ok' if r['ok'] else 'FAILS'}"
                               for r in v.get("runtime_compat", []))])
    echo_table(["recipe", "size", "gzip", "accuracy", "agree", "SQNR dB", "MACs", "runtimes"],
               rows, numeric={"size", "gzip", "accuracy", "agree", "SQNR dB", "MACs"})
    selection = manifest.get("selection")
    if selection:
        click.echo(f"\ntried within a budget of {selection['max_accuracy_drop_points']:g} "
                   f"points (fp32 accuracy {selection['baseline_accuracy']:.4f}):")
        echo_table(["recipe", "outcome"], [
            [t["recipe"], t["skipped"] if "skipped" in t else
             f"{t['size_ratio']:.2f}x fp32 size, accuracy {t['accuracy']:.4f}, drop "
             f"{t['drop_points']:.2f} points: "
             f"{'within budget' if t['within_budget'] else 'over budget'}"]
            for t in selection["tried"]])
        click.echo(f"chosen: {selection['chosen']}")
    click.echo(f"manifest: {manifest_path}")


def _agreement(fidelity: Fidelity) -> str:
    """Agreement with the float model by the metric that fits the output: ``0.996`` (top-1
    of logits) or ``cos 0.9999`` (embeddings, for a model without labels)."""
    if fidelity.get("agreement_metric") == "cosine":
        cosine = fidelity.get("cosine_similarity")
        return "-" if cosine is None else f"cos {cosine:.4f}"
    agree = fidelity.get("top1_agreement")
    return "-" if agree is None else f"{agree:.3f}"


def _analyze(model: Path, out_dir: Path, as_json: bool) -> None:
    from toolkit.compress import analyze_to_folder

    table_path = analyze_to_folder(model, out_dir, progress=_progress)
    table = json.loads(table_path.read_text(encoding="utf-8"))
    if as_json:
        click.echo(json.dumps(table, indent=2))
        return
    metric = table["metric"]
    click.echo(f"{metric}: fp32 {table['fp32']:.2f}, every layer int8 {table['int8']:.2f} "
               f"(SQNR {table['int8_sqnr_db']} dB); each layer quantized alone:")
    echo_table(["layer", "type", "drop (points)", "SQNR dB"],
               [[row["layer"], row["type"], f"{row['drop_points']:.2f}",
                 "-" if row["sqnr_db"] is None else f"{row['sqnr_db']:.1f}"]
                for row in table["layers"]],
               numeric={"drop (points)", "SQNR dB"})
    click.echo(f"table: {table_path}")
