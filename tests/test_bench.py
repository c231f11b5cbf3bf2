"""`edge bench` and lab files: boards in parallel, a dead board, two benches on the same boards."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.boards.board import SshBoard
from toolkit.boards.lab import load_lab
from toolkit.boards.lease import lease_dir
from toolkit.boards.targets import load_target
from toolkit.errors import ModelError, TargetError
from toolkit.results.store import ResultsStore
from toolkit.run.bench import BenchCell, bench

from .lab import Sshd

REPO = Path(__file__).resolve().parent.parent
FAST = {"min_runs": 20, "min_seconds": 0.1, "warmup_runs": 2, "warmup_seconds": 0.0}


def write_lab(path: Path, boards: dict[str, dict[str, object]]) -> Path:
    lines = []
    for name, keys in boards.items():
        lines.append(f"[boards.{name}]")
        for key, value in keys.items():
            rendered = ("[" + ", ".join(f'"{v}"' for v in value) + "]"
                        if isinstance(value, list) else
                        repr(value) if isinstance(value, int) else f'"{value}"')
            lines.append(f"{key} = {rendered}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_lab_board_inherits_its_kind_and_is_chosen_by_tag(tmp_path: Path) -> None:
    lab = load_lab(write_lab(tmp_path / "lab.toml", {
        "pi-01": {"kind": "rpi4", "host": "10.0.0.11", "tags": ["shelf-a"]},
        "pi-02": {"kind": "rpi4", "host": "10.0.0.12", "port": 2222},
        "orin-01": {"kind": "jetson-orin-nano", "host": "10.0.0.21", "tags": ["shelf-a"]}}))
    pis = lab.select("tag:rpi4")
    assert [t.name for t in pis] == ["pi-01", "pi-02"]
    assert pis[1].port == 2222 and pis[1].threads == load_target("rpi4").threads
    assert pis[0].host == "10.0.0.11" and pis[0].user == "pi"
    chosen = lab.select("tag:shelf-a,pi-01,local")
    assert [t.name for t in chosen] == ["pi-01", "orin-01", "local"]  # once each, in order
    with pytest.raises(TargetError, match="no board tagged 'gpu'"):
        lab.select("tag:gpu")
    with pytest.raises(TargetError, match="unknown target 'pi-09'"):
        lab.select("pi-09")


def test_a_bad_lab_file_names_the_board_and_key(tmp_path: Path) -> None:
    bad = write_lab(tmp_path / "lab.toml", {"pi-01": {"kind": "rpi4", "colour": "red"}})
    with pytest.raises(TargetError, match="pi-01: unknown key 'colour'"):
        load_lab(bad)
    with pytest.raises(TargetError, match=r"lab file .*missing\.toml does not exist"):
        load_lab(tmp_path / "missing.toml")
    # Boards as a list, not tables: the same one line, not a Python error.
    (tmp_path / "flat.toml").write_text('boards = ["pi-01"]\n')
    with pytest.raises(TargetError, match=r"flat\.toml: boards must be tables"):
        load_lab(tmp_path / "flat.toml")


@pytest.fixture
def two_boards(tmp_path: Path) -> list[Sshd]:
    boards = [Sshd.create(tmp_path / f"sshd-{i}") for i in range(2)]
    yield boards
    for sshd in boards:
        sshd.kill()


def board_lab(boards: list[Sshd], tmp_path: Path, **extra: object) -> Path:
    for index, sshd in enumerate(boards):
        sshd.write_target(tmp_path / "targets", f"board-{index}", tmp_path / f"board-{index}",
                          **extra)
    return tmp_path / "targets"


@pytest.mark.slow
def test_a_dead_board_fails_alone_and_the_others_are_stored(
        two_boards: list[Sshd], digits_fp32_tflite: Path, tmp_path: Path) -> None:
    targets_dir = board_lab(two_boards, tmp_path, connect_timeout=2.0)
    two_boards[1].kill()
    targets = load_lab(None, targets_dir).select("board-0,board-1,local")
    outcome = bench([digits_fp32_tflite], targets=targets, recipes="fp32",
                    out_dir=tmp_path / "out", settings=FAST)
    status = {c.target: (c.status, c.error_class) for c in outcome.cells}
    assert status == {"board-0": ("ok", ""), "board-1": ("error", "infrastructure"),
                      "local": ("ok", "")}
    assert not outcome.complete
    with ResultsStore(outcome.store_path) as store:
        stored = store.get_run(outcome.runs[0].run_id)
    assert {r.target for r in stored.results} == {"board-0", "board-1", "local"}
    # board-0 and local share this machine's kernel and ran at the same time: the report says so.
    by_target = {r.target: r for r in stored.results}
    assert by_target["board-0"].measured_beside == ("local",)
    assert "same machine" in (Path(stored.report_dir) / "report.md").read_text()


def run_cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "toolkit", *args], cwd=cwd, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_two_benches_on_the_same_boards_never_overlap_and_both_finish(
        two_boards: list[Sshd], digits_fp32_tflite: Path, tmp_path: Path) -> None:
    targets_dir = board_lab(two_boards, tmp_path)
    args = [str(digits_fp32_tflite), "--targets", "board-0,board-1", "--targets-dir",
            str(targets_dir), "--recipe", "fp32", "--min-runs", "200", "--min-seconds", "1",
            "--json"]
    first = run_cli("bench", *args, "-o", str(tmp_path / "out-1"), cwd=tmp_path)
    second = run_cli("bench", *args, "-o", str(tmp_path / "out-2"), cwd=tmp_path)
    for process in (first, second):
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, (out[-2000:], err[-2000:])
        assert '"complete": true' in out, out[-2000:]
    for index in range(2):
        held: list[tuple[float, str]] = []
        # The lease is the board's (one folder per host key under the login's home).
        with SshBoard(load_target(f"board-{index}", targets_dir)) as board:
            home = board.run("pwd").stdout.decode().strip()
            lock_log = Path(home) / lease_dir(board) / "lock.log"
        for line in lock_log.read_text().splitlines():
            when, event, owner = line.split(" ", 2)
            held.append((float(when), f"{event} {owner}"))
        events = [what.split(" ", 1)[0] for _, what in sorted(held)]
        assert events == ["acquire", "release"] * 2  # each job released before the next began


def test_an_incomplete_matrix_exits_3_with_one_line(tmp_path: Path,
                                                    digits_fp32_tflite: Path) -> None:
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "gone.toml").write_text(
        'transport = "ssh"\nhost = "127.0.0.1"\nport = 1\nconnect_timeout = 1.0\n'
        f'retries = 0\nknown_hosts = "{tmp_path / "kh"}"\n')
    done = run_cli("bench", str(digits_fp32_tflite), "--targets", "gone", "--targets-dir",
                   str(tmp_path / "targets"), "-o", str(tmp_path / "out"), cwd=tmp_path)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 3, err
    assert err.strip().splitlines()[-1].startswith("edge: error: matrix incomplete: no results "
                                                   "from gone")
    assert "Traceback" not in err and "skipped (unhealthy)" in out
    assert "gone: skipped (reachable: " in err  # the health check's reason, shown


def test_a_truncated_tflite_is_refused_before_any_board_is_touched(
        digits_fp32_tflite: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(digits_fp32_tflite.read_bytes()[:1000])
    with pytest.raises(ModelError, match=r"broken\.tflite is truncated or corrupt"):
        bench([digits_fp32_tflite, broken], targets=[load_target("local")],
              out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_failed_cell_exits_3_and_the_summary_shows_why(digits_fp32_tflite: Path,
                                                          tmp_path: Path) -> None:
    from .models.segfaulting_tflite import write_segfaulting_tflite

    segfaults = write_segfaulting_tflite(tmp_path / "segfaults.tflite")
    done = run_cli("bench", str(digits_fp32_tflite), str(segfaults), "--targets", "local",
                   "--no-health-check", "-o", str(tmp_path / "out"), "--min-runs", "20",
                   "--min-seconds", "0.1", cwd=tmp_path)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 3, err
    rows = {line.split("│")[1].strip(): line for line in out.splitlines()
            if line.count("│") >= 5 and "tflite" in line}
    assert "failed: killed by signal SIGSEGV" in rows["segfaults"]
    # The measured cell shows the agent's verdict, never a bare "ok".
    assert "VALID" in rows[digits_fp32_tflite.stem] and " ok " not in rows[digits_fp32_tflite.stem]
    assert err.strip().splitlines()[-1] == ("edge: error: matrix incomplete: 1 of 2 cells failed "
                                            "(segfaults/local/segfaults.tflite)")
    with ResultsStore(tmp_path / "out" / "results.sqlite") as store:
        assert len(store.list_runs()) == 2  # both models' runs are stored


def test_the_summary_shows_invalid_cells_with_their_reasons() -> None:
    invalid = BenchCell(target="pi", model="m", variant="int8", status="ok", p50_ms=1.0,
                        verdict="INVALID", verdict_reasons=("too short: 0.1 s < 1 s",))
    assert invalid.shown_status == "INVALID: too short: 0.1 s < 1 s"
    assert BenchCell(target="pi", model="m", variant="fp32", status="ok",
                     verdict="VALID").shown_status == "VALID"
    failed = BenchCell(target="pi", model="m", variant="x", status="failed",
                       error="killed by signal SIGSEGV")
    assert failed.shown_status == "failed: killed by signal SIGSEGV"
    gone = BenchCell(target="pi", model="m", variant="x", status="error",
                     error_class="infrastructure", error="unreachable")
    assert gone.shown_status == "error (infrastructure): unreachable"


def test_the_summary_shows_stalls_beside_valid_in_amber_as_the_report_does() -> None:
    import io

    from rich.console import Console

    from toolkit.cli.bench import _summary
    from toolkit.results.record import ResultRecord
    from toolkit.run.bench import BenchOutcome

    from .records import record

    condition = "stalls: 10.2 % of runs above 10x the median (0.44 ms)"
    stalled = ResultRecord.from_dict({**record("int8", target="pi"), "verdict": {
        "status": "VALID", "reasons": [], "conditions": [condition]}})
    assert stalled.verdict_conditions == (condition,)
    cell = BenchCell(target="pi", model="m", variant="int8", status="ok", p50_ms=1.0,
                     verdict="VALID", conditions=stalled.verdict_conditions)
    steady = BenchCell(target="pi", model="m", variant="fp32", status="ok", p50_ms=1.0,
                       verdict="VALID")
    assert cell.shown_status == f"VALID; {condition}" and cell.caveat
    assert steady.shown_status == "VALID" and not steady.caveat
    invalid = BenchCell(target="pi", model="m", variant="x", status="ok", verdict="INVALID",
                        verdict_reasons=("too short",), conditions=(condition,))
    assert invalid.shown_status == "INVALID: too short" and not invalid.caveat
    outcome = BenchOutcome(runs=[], cells=[cell, steady], left_out={}, store_path="s")
    terminal = Console(file=io.StringIO(), force_terminal=True, color_system="truecolor",
                       width=200)
    terminal.print(_summary(outcome))
    drawn = terminal.file.getvalue()  # type: ignore[attr-defined]
    # Only the stalled cell is coloured (CAVEAT's amber, in the console's colours).
    coloured = re.findall(r"\x1b\[(?:3[0-7]|9[0-7]|38;5;\d+|38;2;\d+;\d+;\d+)m(VALID[^\x1b]*)",
                          drawn)
    assert [text.rstrip() for text in coloured] == [f"VALID; {condition}"], drawn


@pytest.mark.slow
def test_a_variant_that_cannot_be_built_is_a_failed_cell_and_the_rest_is_measured(
        tmp_path: Path) -> None:
    outcome = bench([REPO / "tests" / "models" / "embedding_bag.py"],
                    targets=[load_target("local")], recipes="fp32,int8",
                    out_dir=tmp_path / "out", settings=FAST)
    cells = {c.variant: c for c in outcome.cells}
    assert cells["fp32"].status == "ok" and cells["fp32"].p50_ms
    assert cells["int8"].status == "failed"
    assert cells["int8"].shown_status.startswith(
        "failed: not built: the model file defines no calibration_data()")
    incomplete = outcome.incomplete()
    assert incomplete is not None and incomplete.exit_code == 3
    assert str(incomplete) == ("matrix incomplete: 1 of 2 cells failed "
                               "(embedding_bag/local/int8)")
