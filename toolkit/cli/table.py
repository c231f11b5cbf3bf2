"""Tables on standard output: boxed in a terminal, plain aligned columns everywhere else.

Fixed-width f-string columns misalign as soon as one value outgrows its column (a long
model or recipe name pushes every later column of that row). rich sizes each column to
its content. In a terminal the table is boxed and fitted to the window; in a pipe, a CI
log or a test it is printed without box, colour or wrapping, one row per line with the
header first, so ``grep``, ``awk`` and the tests read whole rows.

Example::

    echo_table(["recipe", "size"], [["fp32", "4520"], ["int8", "1804"]], numeric={"size"})
"""

from __future__ import annotations

import io
import sys
from collections.abc import Collection, Iterable, Sequence
from typing import NamedTuple

import click

from toolkit.safe_text import printable

#: A VALID figure with a condition to look at (``stalls: ...``): amber, as the HTML report
#: draws it (a lighter amber than the report's, which is set on white).
CAVEAT = "#d08c00"


class Styled(NamedTuple):
    """A cell drawn in ``style`` (a rich style, e.g. :data:`CAVEAT`) in a terminal; plain
    text elsewhere."""

    text: str
    style: str


def echo_table(headers: Sequence[str], rows: Iterable[Sequence[str | Styled]], *,
               numeric: Collection[str] = ()) -> None:
    """Print ``rows`` under ``headers`` on stdout; columns named in ``numeric`` align right."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    terminal = Console(file=sys.stdout)
    table = Table(box=box.SIMPLE_HEAD if terminal.is_terminal else None,
                  show_edge=terminal.is_terminal, pad_edge=terminal.is_terminal,
                  padding=(0, 1))
    for header in headers:
        # A figure split over two lines ("97.7" / "KiB") reads as two: text columns wrap.
        table.add_column(header, justify="right" if header in numeric else "left",
                         overflow="fold", no_wrap=header in numeric)
    for row in rows:
        # A name like "[main]" is not markup; a board's control characters are shown escaped.
        table.add_row(*(Text(printable(cell.text), style=cell.style)
                        if isinstance(cell, Styled) else Text(printable(cell)) for cell in row))
    if terminal.is_terminal:
        terminal.print(table)
        return
    plain = Console(file=io.StringIO(), width=1_000_000, color_system=None, highlight=False,
                    markup=False, emoji=False, soft_wrap=False)
    with plain.capture() as captured:
        plain.print(table)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))
