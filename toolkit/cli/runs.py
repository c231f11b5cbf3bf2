"""``edge runs list|show|diff|tag|export|import``: the results store from the command line.

Example: edge runs tag latest baseline && edge runs export baseline -o baseline.json
"""

from __future__ import annotations

import contextlib
import errno
import json
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import click

from toolkit.cli.options import output_file_option, store_option
from toolkit.cli.table import echo_table
from toolkit.defaults import DEFAULT_OUT_DIR
from toolkit.model.project import resolve_store_path
from toolkit.safe_text import printable

if TYPE_CHECKING:
    from toolkit.results.store import ResultsStore

def open_store(store_path: str | None) -> ResultsStore:
    """The store the user means; it must already exist (reading never creates one)."""
    from toolkit.results.store import ResultsStore

    default = DEFAULT_OUT_DIR / "results.sqlite"
    return ResultsStore(resolve_store_path(store_path, default=default), create=False)


@click.group()
def runs() -> None:
    """List, show, tag, export and import stored runs."""


@runs.command("list")
@store_option
@click.option("-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Show the newest N runs.")
@click.option("--model", "model_name", help="Only runs of this model (its file name stem).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
def list_runs(store_path: str | None, limit: int, model_name: str | None, as_json: bool) -> None:
    """List the newest runs.  Example: edge runs list -n 5"""
    with open_store(store_path) as store:
        summaries = store.list_runs(limit=limit, model_name=model_name)
    if as_json:
        click.echo(json.dumps([vars(s) for s in summaries], indent=1))
        return
    rows = []
    for s in summaries:
        commit = (s.git_commit or "-")[:10] + ("+" if (s.git_commit or "").endswith("dirty")
                                              else "")
        notes = " ".join(([f"[{', '.join(s.tags)}]"] if s.tags else [])
                         + ([f"({s.failed} failed)"] if s.failed else []))
        rows.append([s.run_id, s.created_at, s.model_name, commit, ",".join(s.targets),
                     ",".join(s.variants), notes])
    echo_table(["run", "created", "model", "commit", "targets", "variants", "notes"], rows)


@runs.command("show")
@click.argument("run")
@store_option
@click.option("--json", "as_json", is_flag=True, help="The whole run as JSON, raw samples too.")
def show_run(run: str, store_path: str | None, as_json: bool) -> None:
    """Show RUN (a run id, a tag, or latest).  Example: edge runs show latest"""
    from toolkit.report.render import render_markdown
    from toolkit.results.export import export_json

    with open_store(store_path) as store:
        stored = store.get_run(run)
    click.echo(export_json(stored) if as_json else render_markdown(stored), nl=not as_json)


@runs.command("diff")
@click.argument("base")
@click.argument("new")
@store_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
def diff_command(base: str, new: str, store_path: str | None, as_json: bool) -> None:
    """Show runs BASE and NEW side by side: conditions and figures of each target x variant,
    differences first.  Example: edge runs diff main latest"""
    from toolkit.results.diff import diff_runs

    with open_store(store_path) as store:
        diff = diff_runs(store.get_run(base), store.get_run(new))
    if as_json:
        click.echo(json.dumps(diff.to_dict(), indent=1))
        return
    click.echo(printable(diff.reading))
    click.echo()
    headers = ["", "run", diff.base_run, diff.new_run]
    echo_table(headers, [["*" if f.differs else "", f.name, _short(f.base), _short(f.new)]
                         for f in diff.run_facts])
    for variant in diff.variants:
        click.echo()
        where = f"{variant.target}/{variant.variant}"
        if variant.only_in is not None:
            click.echo(printable(f"{where}: only in run {variant.only_in}"))
            continue
        echo_table(["", where, diff.base_run, diff.new_run, "change"],
                   [["*" if f.differs else "", f.name, _short(f.base), _short(f.new),
                     f.change if f.differs else ""] for f in variant.facts],
                   numeric={"change"})


def _short(value: str) -> str:
    """A sha256 as its first 16 digits (enough to tell two files apart in a table)."""
    if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:16]
    return value


@runs.command("tag")
@click.argument("run")
@click.argument("name")
@store_option
def tag_run(run: str, name: str, store_path: str | None) -> None:
    """Name RUN as NAME (moving NAME if set).  Example: edge runs tag latest main"""
    with open_store(store_path) as store:
        run_id = store.tag(name, run)
    click.echo(f"{name} -> {run_id}")


@runs.command("export")
@click.argument("run")
@store_option
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json",
              show_default=True, help="json keeps raw samples (a baseline for edge check).")
@output_file_option
def export_run(run: str, store_path: str | None, fmt: str, output: Path | None) -> None:
    """Export RUN as JSON or CSV.  Example: edge runs export main -o edge-baseline.json"""
    from toolkit.results.export import export_csv, export_json

    with open_store(store_path) as store:
        stored = store.get_run(run)
    text = export_json(stored) if fmt == "json" else export_csv(stored)
    if output is None:
        click.echo(text, nl=False)
        return
    write_output(output, text)
    click.echo(f"wrote {output}", err=True)


@runs.command("import")
@click.argument("folder", type=click.Path(path_type=Path))
@store_option
def import_run(folder: Path, store_path: str | None) -> None:
    """Store the run kept in FOLDER when the store could not take it (a damaged store, a
    full disk); importing it twice changes nothing.

    Example: edge runs import edge-out/runs/20261201-101500-ab12cd --store fixed.sqlite
    """
    from toolkit.results.export import import_run_folder
    from toolkit.results.store import ResultsStore

    default = DEFAULT_OUT_DIR / "results.sqlite"
    with ResultsStore(resolve_store_path(store_path, default=default)) as store:
        run, added = import_run_folder(store, folder)
        name = store.name
    click.echo(f"{'imported' if added else 'already stored:'} run {run.run_id} "
               f"({len(run.results)} results) {'into' if added else 'in'} {name}")


#: Write failures that are not the path's fault: the same command may work again later.
_NOT_THE_PATH = (errno.ENOSPC, errno.EDQUOT, errno.EIO)


def write_output(path: Path, text: str) -> None:
    """Write ``text`` whole, or raise one line and leave nothing behind.

    The text goes to a temporary file beside ``path``, renamed over it once complete, so
    a failure leaves neither a half-written ``path`` nor the temporary file.  A ``path``
    that exists and is not a regular file (``/dev/null``, a FIFO a reader waits on) is
    written in place instead: renamed over, a device would become a regular file, and
    as root ``-o /dev/null`` broke every later shell command on the machine.  A folder is
    refused.  A path that
    cannot be written (read-only file system, no permission, a file where a folder must
    be) is the user's to change: :class:`OutputError`, exit 2; a full disk or an I/O
    error is not: :class:`InfrastructureError`, exit 3.
    """
    from toolkit.errors import InfrastructureError, OutputError

    partial = path.with_name(f".{path.name}.partial")
    try:
        kind = path.stat().st_mode
    except OSError:  # a new path (or one stat cannot see: the write will say why)
        kind = stat.S_IFREG
    if stat.S_ISDIR(kind):
        raise OutputError(f"cannot write {path}: it is a folder; give a file name", path=path)
    try:
        if not stat.S_ISREG(kind):
            with open(path, "w", encoding="utf-8") as stream:
                stream.write(text)
            return
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    except OSError as exc:
        # Only a partial file that exists is removed: on a read-only file system even
        # unlinking a file that is not there fails (EROFS), and would hide the real error.
        if partial.is_file():
            with contextlib.suppress(OSError):
                partial.unlink()
        message = f"cannot write {path}: {exc.strerror or exc}"
        if exc.errno in _NOT_THE_PATH:
            raise InfrastructureError(message) from None
        raise OutputError(message, path=path) from None
