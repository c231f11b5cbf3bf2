"""``edge check``'s outcome for people and CI: a Markdown summary, JUnit XML, one line per metric.

:class:`toolkit.gate.check.CheckOutcome` renders itself through these
(:meth:`~toolkit.gate.check.CheckOutcome.to_markdown`,
:meth:`~toolkit.gate.check.CheckOutcome.to_junit`).  Every name that came from a board or a
model file (targets, variants, details, notes) is escaped for Markdown
(:func:`toolkit.safe_text.markdown_text`).

Example::

    markdown(outcome)   # "### edge check: passed\n\nRun `...` against baseline ..."
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

from toolkit.gate.metrics import WIDEST_SHOWN, Judged, MetricCheck
from toolkit.safe_text import markdown_text

if TYPE_CHECKING:
    from toolkit.gate.check import CheckOutcome
    from toolkit.gate.history import HistoryOutcome
    from toolkit.results.store import StoredRun

__all__ = ["describe", "history_markdown", "junit", "markdown"]


def markdown(outcome: CheckOutcome) -> str:
    """A short summary for a pull-request comment."""
    lines = [f"### edge check: {outcome.summary}", "",
             f"Run `{outcome.run.run_id}` ({_commit(outcome.run)}) against baseline "
             f"`{outcome.baseline.run_id}` ({_commit(outcome.baseline)})"
             + "".join(f", `{b.run_id}`" for b in outcome.more_baselines)
             + f", model {markdown_text(outcome.run.model_name)}."
             + (" A regression or an improvement must show against each baseline run; "
                "each metric is shown against the run it is closest to."
                if outcome.more_baselines else ""),
             "",
             "| target | variant | metric | baseline | new | change | limit | verdict |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for c in outcome.checks:
        change = "" if c.change is None else f"{c.change:+.2f} {c.unit}"
        if c.interval is not None:
            change += f" {c.interval_shown}"
        limit = _limit(c)
        mark = _mark(c)
        if c.conditions and c.verdict in ("regression", "improved"):
            mark += f" (conditions differ: {markdown_text(c.conditions)})"
        elif c.conditions and c.verdict == "pass":  # inconclusive: its detail says it
            mark += " (conditions differ: see the notes)"
        # Targets, variants and details name what the boards and the model file named.
        lines.append(f"| {markdown_text(c.target)} | {markdown_text(c.variant)} | "
                     f"{c.metric} | {c.shown(c.baseline)} | {c.shown(c.value)} | {change} "
                     f"| {limit} | {mark} |")
    lines.append("")
    lines.append(f"Latency changes show a {outcome.thresholds.confidence:.0%} bootstrap "
                 "interval (widened by the spread between runs of the baselines' files on "
                 "the board, when known); a latency regression needs the whole interval "
                 "past the limit, a pass the whole interval below it; one whose ends "
                 f"differ by more than {WIDEST_SHOWN:g}x (too few runs of the baseline's "
                 "file to know the spread) shows as [spread unknown].")
    lines.extend(f"- {markdown_text(note)}" for note in outcome.notes)
    return "\n".join(lines) + "\n"


def history_markdown(outcome: HistoryOutcome) -> str:
    """``edge check --history``'s summary: each metric's level before the change point
    that counts and now, and where it moved."""
    run = outcome.run
    lines = [f"### edge check --history: {outcome.summary}", "",
             f"Run `{run.run_id}` ({_commit(run)}) against its own stored history, model "
             f"{markdown_text(run.model_name)}.", "",
             "| target | variant | metric | runs | level before | level now | change | "
             "moved at | limit | verdict |",
             "|---|---|---|---:|---:|---:|---:|---|---:|---|"]
    for c in outcome.checks:
        change = "" if c.change is None else f"{c.change:+.2f} {c.unit}"
        moved = "" if c.changed_at is None else \
            f"`{markdown_text(c.changed_at)}` (#{c.changed_at_number})"
        mark = _mark(c)
        if c.verdict != "inconclusive" and c.detail:  # where it moved, or why it did not
            mark += f": {markdown_text(c.detail)}"
        lines.append(f"| {markdown_text(c.target)} | {markdown_text(c.variant)} | {c.metric} "
                     f"| {c.runs or ''} | {c.shown(c.baseline)} | {c.shown(c.value)} | "
                     f"{change} | {moved} | {_limit(c)} | {mark} |")
    lines.append("")
    lines.extend(f"- {markdown_text(note)}" for note in outcome.notes)
    return "\n".join(lines) + "\n"


def _limit(c: MetricCheck) -> str:
    if c.threshold is None:
        return ""
    return f"-{c.threshold:g} pt" if c.metric == "accuracy" else f"+{c.threshold:g} %"


def _mark(c: MetricCheck) -> str:
    """The verdict cell: a regression in bold, what could not be judged with why."""
    return {"regression": "**REGRESSION**",
            "inconclusive": f"inconclusive: {markdown_text(c.detail)}"}.get(c.verdict,
                                                                             c.verdict)


def junit(outcome: Judged[Any]) -> str:
    """JUnit XML: one test case per target x variant x metric."""
    suite = ElementTree.Element("testsuite", {
        "name": "edge check", "tests": str(len(outcome.checks)),
        "failures": str(len(outcome.regressions)), "errors": str(len(outcome.inconclusive)),
        "skipped": str(sum(c.verdict == "skipped" for c in outcome.checks))})
    for c in outcome.checks:
        case = ElementTree.SubElement(suite, "testcase", {
            "classname": f"edge.{c.target}.{c.variant}", "name": c.metric})
        text = describe(c)
        if c.verdict == "regression":
            ElementTree.SubElement(case, "failure", {"message": text}).text = text
        elif c.verdict == "inconclusive":  # JUnit's "could not run properly"
            ElementTree.SubElement(case, "error", {"message": text}).text = text
        elif c.verdict == "skipped":
            ElementTree.SubElement(case, "skipped", {"message": c.detail})
        else:
            ElementTree.SubElement(case, "system-out").text = text
    ElementTree.indent(suite)
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def describe(c: MetricCheck) -> str:
    """One metric's verdict as one line: figures, change, interval, limit, detail."""
    text = f"{c.target}/{c.variant} {c.metric}: {c.verdict}"
    if c.change is not None:
        text += f", {c.shown(c.baseline)} -> {c.shown(c.value)} ({c.change:+.2f} {c.unit}"
        if c.interval is not None:
            text += f", interval {c.interval_shown}"
        text += f", limit {c.threshold:g} {c.unit})"
    return text + (f"; {c.detail}" if c.detail else "")


def _commit(run: StoredRun) -> str:
    return f"commit {run.git_commit[:12]}" if run.git_commit else "no commit"
