"""``edge trend``: a figure of one target x variant over the stored runs, change points marked.

Example: edge trend --target local --variant int8 --metric p50
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from toolkit.cli.options import store_option, targets_option
from toolkit.cli.table import echo_table

#: The metrics edge trend follows (toolkit.results.trend.METRICS, kept here so that
#: ``edge trend --help`` does not import the store); a test holds the two in step.
METRIC_NAMES = ("p50", "p90", "p99", "mean", "peak-memory", "size", "accuracy", "energy")


@click.command("trend")
@targets_option(required=True)
@click.option("--variant", required=True, help="The variant (fp32, int8, fp32-t2, ...).")
@click.option("--model", "model_name", help="The model (its file name stem), when the store "
              "holds several measured on this target x variant.")
@click.option("--metric", type=click.Choice(METRIC_NAMES), default="p50", show_default=True,
              help="The figure to follow.")
@store_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.option("--html", type=click.Path(path_type=Path), metavar="FILE",
              help="Also write the series as one offline HTML page with its chart.")
def trend_command(targets: tuple[str, ...], variant: str, model_name: str | None, metric: str,
                  store_path: str | None, as_json: bool, html: Path | None) -> None:
    """Show METRIC of TARGET/VARIANT over the stored runs, oldest first, with the runs it
    moved at marked (change points found by PELT, each with a Mann-Whitney p-value).

    Example: edge trend --target local --variant int8
    """
    from toolkit.cli.runs import open_store
    from toolkit.errors import UsageError
    from toolkit.results.trend import trend
    from toolkit.safe_text import printable

    names = [name.strip() for spec in targets for name in spec.split(",") if name.strip()]
    if len(names) != 1:
        raise UsageError("edge trend follows one target x variant; give one --target")
    target = names[0]
    with open_store(store_path) as store:
        found = trend(store, target=target, variant=variant, metric=metric,
                      model_name=model_name)
    if html is not None:
        from toolkit.cli.runs import write_output
        from toolkit.report.trend_page import render_trend_page

        write_output(html, render_trend_page(found, page_dir=html.parent))
        click.echo(f"wrote {html}", err=True)
    if as_json:
        click.echo(json.dumps(found.to_dict(), indent=1))
        return

    shown = found.shown
    changes = {c.index: c for c in found.changes}
    rows = []
    for index, point in enumerate(found.points):
        change = changes.get(index)
        mark = "" if change is None else \
            f"<- change {change.change} (p={change.p_value:.2g})"
        rows.append([str(index + 1), point.run_id, point.created_at, point.sha256[:12],
                     point.verdict or "-", shown(point.value), mark])
    click.echo(printable(f"{metric} of {found.target}/{found.variant} "
                         f"({found.model_name}), {len(found.points)} runs, oldest first"))
    echo_table(["#", "run", "created", "file sha256", "verdict", metric, "change"], rows,
               numeric={"#", metric})
    click.echo(printable(f"Change points: {found.method}."))
    if not found.changes:
        click.echo("No change point found.")
    for c in found.changes:
        click.echo(printable(
            f"Changed at run {c.run_id} (#{c.index + 1}): {shown(c.before)} -> "
            f"{shown(c.after)} ({c.change}; Mann-Whitney p = {c.p_value:.2g}, "
            "runs before against runs after)."))
