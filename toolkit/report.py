"""Stage 7: a stored run as a report people read, in Markdown and in one HTML file.

Example::

    paths = write_report(run, out_dir)   # report.md and report.html
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from .store import StoredRun

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("toolkit", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class ReportRow:
    """One target x variant line, with every figure already formatted."""

    target: str
    variant: str
    status: str
    size: str
    size_ratio: str
    accuracy: str
    p50: str
    p90: str
    p99: str
    peak_memory: str
    runtime: str
    note: str


def report_rows(run: StoredRun) -> list[ReportRow]:
    baseline_size = {r["target"]: r["size_bytes"] for r in run.results if r["variant"] == "fp32"}
    rows = []
    for result in run.results:
        latency = result.get("latency_ms") or {}
        runtime = result.get("runtime") or {}
        base = baseline_size.get(result["target"])
        rows.append(ReportRow(
            target=result["target"],
            variant=result["variant"],
            status=result["status"],
            size=f"{result['size_bytes'] / 1024:.1f} KiB",
            size_ratio=f"{result['size_bytes'] / base:.2f}x" if base else "",
            accuracy=_percent(result.get("accuracy")),
            p50=_ms(latency.get("p50")),
            p90=_ms(latency.get("p90")),
            p99=_ms(latency.get("p99")),
            peak_memory=_mib(result.get("peak_rss_bytes")),
            runtime=f"{runtime['name']} {runtime['version']}" if runtime else "",
            note=result.get("error") or "",
        ))
    return rows


def render_markdown(run: StoredRun) -> str:
    return _TEMPLATES.get_template("report.md.j2").render(
        run=run, rows=report_rows(run), boards=_boards(run))


def render_html(run: StoredRun) -> str:
    return _TEMPLATES.get_template("report.html.j2").render(
        run=run, rows=report_rows(run), boards=_boards(run))


def write_report(run: StoredRun, out_dir: Path) -> dict[str, Path]:
    paths = {"markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    paths["markdown"].write_text(render_markdown(run), encoding="utf-8")
    paths["html"].write_text(render_html(run), encoding="utf-8")
    return paths


def _boards(run: StoredRun) -> dict[str, dict[str, Any]]:
    return {r["target"]: r["board"] for r in run.results if r.get("board")}


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _mib(value: int | None) -> str:
    return "" if value is None else f"{value / 2**20:.1f} MiB"
