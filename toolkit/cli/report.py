"""``edge report RUN``: a stored run as HTML, Markdown or JSON.

Example: edge report latest --format md --baseline main -o report.md
"""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli.options import output_file_option, store_option
from toolkit.cli.runs import open_store, write_output
from toolkit.defaults import FORMATS


@click.command()
@click.argument("run", default="latest")
@store_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="html", show_default=True)
@output_file_option
@click.option("--baseline", "baseline_ref",
              help="Show deltas against this run id, tag or baseline JSON file.")
def report(run: str, store_path: str | None, fmt: str, output: Path | None,
           baseline_ref: str | None) -> None:
    """Render RUN (a run id, a tag, default latest) as one offline HTML file, Markdown or JSON.

    Example: edge report latest --format html -o report.html
    """
    from toolkit.gate.check import load_baseline
    from toolkit.report.render import render

    with open_store(store_path) as store:
        stored = store.get_run(run)
        baseline = load_baseline(baseline_ref, store) if baseline_ref else None
    text = render(stored, fmt, baseline=baseline)
    if output is None:
        click.echo(text, nl=False)
        return
    write_output(output, text)
    click.echo(f"wrote {output}", err=True)
