"""A stored run outside the store: exported as JSON or CSV, and a run folder imported back.

``edge runs export`` writes :func:`export_json` (the whole run, raw samples included: what
``edge check --baseline FILE`` reads back with :func:`load_export`) or :func:`export_csv`
(one row of summary figures per target x variant).  Every run folder holds
:func:`run_folder_files`, so that a run the store could not take is imported later
(``edge runs import DIR``, :func:`import_run_folder`).

Example::

    Path("baseline.json").write_text(export_json(store.get_run("main")))
    load_export(Path("baseline.json")).run_id
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.errors import UsageError
from toolkit.results.store import StoredRun
from toolkit.safe_text import csv_cell

if TYPE_CHECKING:
    from toolkit.results.store import ResultsStore


#: ``run.json`` in a run folder: the run without its records (those are ``results.json``),
#: so that a run the store could not take can be imported later (``edge runs import DIR``).
RUN_FOLDER_FORMAT = "edge-run-folder"
RUN_FOLDER_VERSION = 1


def run_folder_files(run: StoredRun) -> dict[str, str]:
    """The files that make ``run`` importable from its folder: ``run.json`` and
    ``results.json`` (the records, as the store keeps them), by name."""
    meta = {key: value for key, value in run.to_dict().items() if key != "results"}
    document = {"format": RUN_FOLDER_FORMAT, "version": RUN_FOLDER_VERSION, "run": meta}
    return {"run.json": json.dumps(document, indent=1) + "\n",
            "results.json": json.dumps([r.to_dict() for r in run.results], indent=2) + "\n"}


def load_run_folder(folder: Path) -> StoredRun:
    """The run a run folder holds (``run.json`` and ``results.json``), its ``report_dir``
    that folder; a :class:`UsageError` naming the file when it is missing or malformed.

    Example: ``store.add_run(load_run_folder(Path("edge-out/runs/20261201-101500-ab12cd")))``
    """
    documents = []
    for name in ("run.json", "results.json"):
        path = folder / name
        try:
            documents.append(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            hint = (" (written by edge since the store keeps runs it could not store)"
                    if name == "run.json" else "")
            raise UsageError(f"{folder} is not an edge run folder: no {name}{hint}") from None
        except OSError as exc:
            raise UsageError(f"{path} cannot be read: {exc.strerror or exc}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"{path} is not JSON: {exc}") from None
    document, results = documents
    if not isinstance(document, dict) or document.get("format") != RUN_FOLDER_FORMAT:
        raise UsageError(f"{folder / 'run.json'} is not an edge run description")
    if document.get("version") != RUN_FOLDER_VERSION:
        raise UsageError(f"{folder / 'run.json'} has version {document.get('version')!r}; "
                         f"this edge reads {RUN_FOLDER_VERSION}")
    try:
        return StoredRun.from_dict({**document["run"], "report_dir": str(folder),
                                    "results": results})
    except KeyError as exc:
        raise UsageError(f"{folder / 'run.json'} is missing {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"{folder} holds a malformed run: {exc}") from None


def import_run_folder(store: ResultsStore, folder: Path) -> tuple[StoredRun, bool]:
    """Store the run in ``folder`` (see :func:`load_run_folder`); ``False`` when ``store``
    already holds it (importing twice changes nothing)."""
    run = load_run_folder(folder)
    if store.has_run(run.run_id):
        return run, False
    store.add_run(run)
    return run, True


EXPORT_FORMAT = "edge-run"
EXPORT_VERSION = 1
CSV_COLUMNS = ("run_id", "created_at", "model_name", "model_sha256", "git_commit", "target",
               "variant", "status", "recipe", "size_bytes", "accuracy", "runs", "p50_ms",
               "p90_ms", "p99_ms", "mean_ms", "peak_rss_bytes", "energy_per_inference_mj",
               "runtime", "board_machine", "board_cpu_model", "error")


def export_json(run: StoredRun) -> str:
    """The whole run, raw samples included: what ``edge check --baseline FILE`` reads back."""
    document = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "run": run.to_dict()}
    return json.dumps(document, indent=1) + "\n"


def export_csv(run: StoredRun) -> str:
    """One row per target x variant with the summary figures (no raw samples).

    Every cell passes :func:`~toolkit.safe_text.csv_cell`: a board's strings carry no
    control character into the file and none is read as a spreadsheet formula.
    """
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in run.results:
        board = record.board
        row = {
            "run_id": run.run_id, "created_at": run.created_at, "model_name": run.model_name,
            "model_sha256": run.model_sha256, "git_commit": run.git_commit or "",
            "target": record.target, "variant": record.variant,
            "status": record.status.value, "recipe": record.config.get("recipe", ""),
            "size_bytes": _blank(record.size_bytes), "accuracy": _blank(record.accuracy),
            "runs": _blank(record.runs), "p50_ms": _blank(record.latency("p50")),
            "p90_ms": _blank(record.latency("p90")), "p99_ms": _blank(record.latency("p99")),
            "mean_ms": _blank(record.latency("mean")),
            "peak_rss_bytes": _blank(record.peak_rss_bytes),
            "energy_per_inference_mj": _blank(record.energy_per_inference_mj),
            "runtime": record.runtime, "board_machine": board.get("machine", "") if board else "",
            "board_cpu_model": board.get("cpu_model", "") if board else "",
            "error": record.error or "",
        }
        writer.writerow({column: csv_cell(value) for column, value in row.items()})
    return buffer.getvalue()


def load_export(path: Path) -> StoredRun:
    """Read a file written by :func:`export_json` (a baseline kept in the user's repository)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"baseline file {path} cannot be read: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"baseline file {path} is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise UsageError(f"baseline file {path} is not an edge run export; write one with "
                         "edge runs export RUN --format json -o FILE")
    if document.get("version") != EXPORT_VERSION:
        raise UsageError(f"baseline file {path} has export version {document.get('version')!r}; "
                         f"this edge reads {EXPORT_VERSION}")
    try:
        return StoredRun.from_dict(document["run"])
    except KeyError as exc:
        raise UsageError(f"baseline file {path} is missing {exc} in its run") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"baseline file {path} has a malformed run: {exc}") from None


def _blank(value: float | None) -> float | str:
    return "" if value is None else value
