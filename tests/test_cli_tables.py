"""`edge runs list` and `edge compress` tables stay aligned whatever the length of a name.

Outside a terminal (here, a pipe, a CI log) they are plain: the header, then one row per
line, every column starting where its header starts. In a terminal they are boxed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli.main import main
from toolkit.cli.table import echo_table
from toolkit.results.store import ResultsStore

from .records import make_run, record

BOX = set("─│┃━┏┓┗┛┡┩╇")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_aligned(lines: list[str], headers: list[str], rows: list[list[str]], *,
                   right: tuple[str, ...] = ()) -> None:
    """``lines`` are the header then ``rows``, each value where its header is: starting
    where it starts, or for the columns in ``right``, ending where it ends."""
    assert len(lines) == 1 + len(rows), lines
    for line, row in zip(lines[1:], rows, strict=True):
        for header, value in zip(headers, row, strict=True):
            start = lines[0].index(header)
            if header in right:
                end = start + len(header)
                assert line[:end].endswith(value) and line[end:end + 1] in ("", " "), line
            else:
                assert line[start:].startswith(value) and line[start - 1:start] in ("", " "), \
                    line


def test_runs_list_lines_up_long_model_and_board_names(tmp_path: Path) -> None:
    long_model = "a_model_whose_name_outgrows_any_fixed_column"
    boards = "jetson-orin-nano-02,rpi5-lab-bench-01"
    store_path = tmp_path / "results.sqlite"
    with ResultsStore(store_path) as store:
        store.add_run(make_run("r1", [record("fp32")], model="m",
                               created_at="2026-01-01T00:00:00+00:00"))
        failed = {**record("int8", target="jetson-orin-nano-02"), "status": "failed",
                  "error": "boom"}
        store.add_run(make_run("r2", [record("fp32", target="rpi5-lab-bench-01"), failed],
                               model=long_model, created_at="2026-01-02T00:00:00+00:00"))
        store.tag("main", "r2")
    listed = invoke("runs", "list", "--store", str(store_path))
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert not BOX & set(listed.stdout)
    headers = ["run", "created", "model", "commit", "targets", "variants", "notes"]
    assert_aligned(lines, headers, [
        ["r2", "2026-01-02T00:00:00+00:00", long_model, "c0ffee", boards, "int8,fp32",
         "[main] (1 failed)"],
        ["r1", "2026-01-01T00:00:00+00:00", "m", "c0ffee", "local", "fp32", ""]])


def test_a_long_recipe_does_not_push_the_other_columns(capsys: pytest.CaptureFixture) -> None:
    headers = ["recipe", "size", "runtimes"]
    echo_table(headers, [["prune:0.5+prune-channels:0.25+distill+int8-mixed:0.5", "1804",
                          "ai-edge-litert 2.3.0 ok"], ["fp32", "123456", "tflite-runtime ok"]],
               numeric={"size"})
    assert_aligned(capsys.readouterr().out.splitlines(), headers, [
        ["prune:0.5+prune-channels:0.25+distill+int8-mixed:0.5", "1804",
         "ai-edge-litert 2.3.0 ok"], ["fp32", "123456", "tflite-runtime ok"]], right=("size",))


def test_in_a_terminal_the_table_is_boxed(capsys: pytest.CaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # what rich reads to treat the output as one
    echo_table(["run", "model"], [["r1", "[main]"]])
    shown = capsys.readouterr().out
    assert BOX & set(shown) and "[main]" in shown  # brackets are text, not rich markup


TINY_MODEL = """
import torch

def build_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))

def example_input():
    return (torch.zeros(1, 4),)
"""


@pytest.mark.slow
def test_compress_prints_one_aligned_row_per_variant(tmp_path: Path) -> None:
    model = tmp_path / "tiny.py"
    model.write_text(TINY_MODEL)
    result = invoke("compress", str(model), "--recipe", "fp32,fp16", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    *table, manifest = result.stdout.splitlines()
    assert not BOX & set(result.stdout)
    headers = ["recipe", "size", "gzip", "accuracy", "agree", "SQNR dB", "MACs", "runtimes"]
    manifest_file = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert_aligned(table, headers, [
        # No labels: agreement with the float model is its outputs' cosine similarity.
        [v["recipe"], str(v["size_bytes"]), str(v["gzip_bytes"]), "-", "cos 1.0000",
         "-" if v["fidelity"]["sqnr_db"] is None else f"{v['fidelity']['sqnr_db']:.1f}",
         str(v["macs"]), "ai-edge-litert"] for v in manifest_file["variants"]],
        right=("size", "gzip", "accuracy", "agree", "SQNR dB", "MACs"))
    assert [line.split()[0] for line in table[1:]] == ["fp32", "fp16"]
    assert manifest == f"manifest: {tmp_path / 'out' / 'manifest.json'}"


def test_deploy_shows_its_results_as_a_table_not_raw_markdown(
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a pipe: plain columns, one row per variant; in a terminal: boxed. Never the
    Markdown table that wrapped mid-word in a 100-column terminal."""
    from toolkit.cli.main import echo_results

    run = make_run("r1", [record("fp32", energy_mj=3220.0),
                          record("int8", size=30_000, energy_mj=1900.0)])
    echo_results(run)
    lines = capsys.readouterr().out.splitlines()
    assert not any(line.lstrip().startswith("|") for line in lines)
    headers = ["target", "variant", "size", "accuracy", "p50", "p99", "energy", "verdict"]
    assert all(header in lines[0] for header in headers)
    assert [line.split()[:2] for line in lines[1:]] == [["local", "fp32"], ["local", "int8"]]
    assert "3.22 J" in lines[1] and len(lines) == 3
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "100")
    echo_results(run)
    shown = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # rich's bold headers
    assert BOX & set(shown) and "| local |" not in shown
    assert all(len(line) <= 100 for line in shown.splitlines())
    assert "3.22 J" in shown and "97.7 KiB" in shown  # a figure stays on one line


def test_deploys_table_names_the_stalls_the_report_names_in_amber(
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report says "VALID; stalls: ..." in amber; the terminal's table said "VALID"."""
    from toolkit.cli.main import echo_results

    condition = "stalls: 10.2 % of runs above 10x the median (0.44 ms)"
    run = make_run("r1", [{**record("fp32"), "verdict": {"status": "VALID", "reasons": []}},
                          {**record("int8"), "verdict": {"status": "VALID", "reasons": [],
                                                         "conditions": [condition]}}])
    echo_results(run)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[-1] == "VALID" and lines[2].endswith("VALID; stalls")
    assert lines[3] == f"local int8: VALID; {condition}"  # the words, below the table
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "120")
    echo_results(run)
    shown = capsys.readouterr().out
    # The amber of CAVEAT in the terminal's colours (true colour, else the nearest one).
    coloured = re.findall(r"\x1b\[(?:3[0-7]|9[0-7]|38;5;\d+|38;2;\d+;\d+;\d+)m(VALID[^\x1b]*)",
                          shown)
    assert coloured == ["VALID; stalls"], shown
