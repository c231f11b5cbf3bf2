"""``edge compress``: build variants and their manifest without running them anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .defaults import compress_budget_candidates
from .errors import UsageError


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
@click.option("--json", "as_json", is_flag=True, help="Print the manifest instead of a table.")
def compress(model: Path, recipe: str | None, out_dir: Path, compat_pythons: tuple[Path, ...],
             max_accuracy_drop: float | None, analyze: bool, as_json: bool) -> None:
    """Compress MODEL into one .tflite per recipe and a manifest.json with their figures.

    Example: edge compress examples/digits_cnn.py --recipe fp32,int8,prune:0.8 -o out
    """
    from .compress import compress_to_folder

    if analyze:
        if recipe or max_accuracy_drop is not None or compat_pythons:
            raise UsageError("--analyze builds no variants: drop --recipe, --max-accuracy-drop "
                             "and --compat-python")
        _analyze(model, out_dir, as_json)
        return
    recipes = recipe or (compress_budget_candidates(max_accuracy_drop)
                         if max_accuracy_drop is not None else "fp32,int8")
    manifest_path = compress_to_folder(model, recipes, out_dir, progress=_progress,
                                       compat_pythons=compat_pythons,
                                       max_accuracy_drop=max_accuracy_drop)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    click.echo(f"{'recipe':<34} {'size':>9} {'gzip':>9} {'accuracy':>8} {'agree':>6} "
               f"{'SQNR dB':>7} {'MACs':>10}  runtimes")
    for v in manifest["variants"]:
        fidelity = v.get("fidelity") or {}
        accuracy = "-" if v.get("accuracy") is None else f"{v['accuracy']:.4f}"
        agree = fidelity.get("top1_agreement")
        sqnr = fidelity.get("sqnr_db")
        click.echo(f"{v['recipe']:<34} {v['size_bytes']:>9} {v['gzip_bytes']:>9} "
                   f"{accuracy:>8} {'-' if agree is None else f'{agree:.3f}':>6} "
                   f"{'-' if sqnr is None else f'{sqnr:.1f}':>7} {v.get('macs') or 0:>10}  "
                   + ", ".join(f"{r['name']} {r['version']} {'ok' if r['ok'] else 'FAILS'}"
                               for r in v.get("runtime_compat", [])))
    selection = manifest.get("selection")
    if selection:
        click.echo(f"\ntried within a budget of {selection['max_accuracy_drop_points']:g} "
                   f"points (fp32 accuracy {selection['baseline_accuracy']:.4f}):")
        for t in selection["tried"]:
            verdict = (t["skipped"] if "skipped" in t else
                       f"{t['size_ratio']:.2f}x fp32 size, accuracy {t['accuracy']:.4f}, drop "
                       f"{t['drop_points']:.2f} points: "
                       f"{'within budget' if t['within_budget'] else 'over budget'}")
            click.echo(f"  {t['recipe']:<34} {verdict}")
        click.echo(f"chosen: {selection['chosen']}")
    click.echo(f"manifest: {manifest_path}")


def _analyze(model: Path, out_dir: Path, as_json: bool) -> None:
    from .compress import analyze_to_folder

    table_path = analyze_to_folder(model, out_dir, progress=_progress)
    table = json.loads(table_path.read_text(encoding="utf-8"))
    if as_json:
        click.echo(json.dumps(table, indent=2))
        return
    metric = table["metric"]
    click.echo(f"{metric}: fp32 {table['fp32']:.2f}, every layer int8 {table['int8']:.2f} "
               f"(SQNR {table['int8_sqnr_db']} dB); each layer quantized alone:")
    click.echo(f"{'layer':<28} {'type':<8} {'drop (points)':>13} {'SQNR dB':>8}")
    for row in table["layers"]:
        sqnr = "-" if row["sqnr_db"] is None else f"{row['sqnr_db']:.1f}"
        click.echo(f"{row['layer']:<28} {row['type']:<8} {row['drop_points']:>13.2f} "
                   f"{sqnr:>8}")
    click.echo(f"table: {table_path}")
