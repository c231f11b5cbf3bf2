"""`edge deploy` says what it is doing on a terminal, and every warning is one line.

The terminal is a real pseudo-terminal on the command's stderr (stdout stays a pipe, as
when the JSON is redirected to a file); outside a terminal stderr keeps only warnings,
failures and errors.
"""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from toolkit.cli.progress import LiveProgress, one_line_warnings
from toolkit.run.deploy import deploy

REPO = Path(__file__).resolve().parent.parent
FAST = {"min_runs": 5, "min_seconds": 0.3}
#: Terminal control sequences (cursor moves, colours) and the spinner's redraws.
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_deploy_tells_its_progress_callback_each_stage(tflite_copy: Path,
                                                       tmp_path: Path) -> None:
    told: list[str] = []
    deploy(tflite_copy, targets=["local"], recipes="fp32", out_dir=tmp_path / "out",
           settings=FAST, progress=told.append)
    assert told == ["loading model.tflite", "checking local",
                    "reference outputs on this machine", "local: measuring model.tflite",
                    "storing the run and writing its report"]


def test_a_warning_is_one_line_on_stderr_whatever_handlers_the_converters_left(
        capsys: pytest.CaptureFixture) -> None:
    left_behind = io.StringIO()  # a converter's root handler, bound to a captured stream
    handler = logging.StreamHandler(left_behind)
    logging.getLogger().addHandler(handler)
    try:
        with one_line_warnings():
            logging.getLogger("toolkit.run.runner").warning("upload failed:\n  EOFError\n"
                                                        "(attempt 1 of 3); retrying")
    finally:
        logging.getLogger().removeHandler(handler)
    assert capsys.readouterr().err == ("edge: warning: upload failed: EOFError (attempt 1 of 3); "
                                       "retrying\n")
    assert left_behind.getvalue() == ""
    assert logging.getLogger("toolkit").propagate  # as it was: library callers' caplog sees it


def run_edge(args: list[str], *, terminal: bool) -> tuple[int, str, str]:
    """``edge ARGS`` in a fresh process, its stderr on a pseudo-terminal or a pipe:
    exit status, stdout, stderr (terminal sequences removed, redraws one per line)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    env.pop("TTY_COMPATIBLE", None)
    env.pop("FORCE_COLOR", None)
    command = [sys.executable, "-m", "toolkit", *args]
    if not terminal:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300,
                              check=False)
        return done.returncode, done.stdout, done.stderr
    controller, terminal_side = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:  # the terminal's buffer is small: read it while the command runs
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the command ended and closed its side
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=terminal_side,
                          text=True) as edge:
        os.close(terminal_side)
        stdout, _ = edge.communicate(timeout=300)
    reader.join(10)
    os.close(controller)
    shown = ESCAPES.sub("", b"".join(chunks).decode("utf-8", "replace"))
    return edge.returncode, stdout, "\n".join(shown.replace("\r", "\n").splitlines())


@pytest.mark.slow
def test_on_a_terminal_deploy_shows_stage_board_and_time_and_warnings_stay_whole(
        tflite_copy: Path, tmp_path: Path) -> None:
    too_many = (os.cpu_count() or 1) + 1
    status, stdout, stderr = run_edge(
        ["deploy", str(tflite_copy), "-o", str(tmp_path / "out"), "--threads", str(too_many),
         "--min-runs", "5", "--min-seconds", "0.5", "--json"], terminal=True)
    assert status == 0, stderr
    assert stdout.lstrip().startswith("{")  # the progress never reaches stdout
    lines = stderr.splitlines()
    assert any(re.search(r"\d+:\d\d local: measuring model\.tflite +\(\d+:\d\d\)", line)
               for line in lines), stderr
    assert any("checking local" in line for line in lines)
    warnings = [line for line in lines if "edge: warning:" in line]
    assert warnings == [f"edge: warning: local: {too_many} threads on a board with "
                        f"{too_many - 1} cores: latency figures will suffer; set threads <= "
                        f"{too_many - 1}"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["--quiet", "not a terminal"])
def test_without_a_terminal_or_with_quiet_only_the_warning_shows(
        how: str, tflite_copy: Path, tmp_path: Path) -> None:
    too_many = (os.cpu_count() or 1) + 1
    args = ["deploy", str(tflite_copy), "-o", str(tmp_path / "out"), "--threads",
            str(too_many), "--min-runs", "5", "--min-seconds", "0.3", "--json"]
    status, _, stderr = run_edge([*args, "--quiet"] if how == "--quiet" else args,
                                 terminal=how == "--quiet")
    assert status == 0, stderr
    assert stderr.strip().splitlines() == [
        f"edge: warning: local: {too_many} threads on a board with {too_many - 1} cores: "
        f"latency figures will suffer; set threads <= {too_many - 1}"]


def test_a_stage_shorter_than_one_redraw_is_still_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    controller, terminal_side = pty.openpty()

    class TerminalStderr(io.StringIO):
        def fileno(self) -> int:
            return terminal_side

    monkeypatch.setattr(sys, "stderr", TerminalStderr())
    monkeypatch.setenv("COLUMNS", "120")
    with LiveProgress(enabled=True) as progress:
        for stage in ("loading", "checking local", "measuring"):
            progress(stage)  # back to back: far quicker than the 8 Hz redraw
    os.close(terminal_side)
    # Read to the end: the kernel hands what the terminal side wrote to this side in chunks,
    # from a worker of its own, so one read on a loaded machine can return only the first.
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the terminal side is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    drawn = b"".join(chunks).decode("utf-8", "replace")
    assert "checking local" in ESCAPES.sub("", drawn)
