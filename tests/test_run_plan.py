"""One run plan, one executor: the drift between `edge deploy` and `edge bench`, fixed once.

Each test here failed on the two hand-written copies of the flow (pipeline.py, bench.py).
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from device_agent import protocol
from toolkit.boards.board import open_board
from toolkit.boards.lease import board_lock
from toolkit.boards.targets import Target, load_target
from toolkit.cli.main import main
from toolkit.errors import BoardBusyError, ModelError, TargetError
from toolkit.labgrid.selector import ScheduledTarget
from toolkit.run.bench import bench
from toolkit.run.deploy import deploy

FAST = {"min_runs": 5, "min_seconds": 0.05, "warmup_runs": 1, "warmup_seconds": 0.0,
        "cooldown_seconds": 0.0}


def test_a_misspelt_setting_in_a_job_names_the_nearest_one() -> None:
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.make_job(job_id="j", variants=[{"name": "a", "file": "a", "sha256": "a"}],
                          settings={"therads": 2})
    assert str(caught.value) == ("job.settings: unknown setting 'therads'; did you mean "
                                 "'threads'?")


def test_a_misspelt_key_in_a_target_file_names_the_nearest_one(tmp_path: Path) -> None:
    (tmp_path / "pi.toml").write_text('transport = "local"\ntherads = 2\n')
    with pytest.raises(TargetError) as caught:
        load_target("pi", tmp_path)
    assert str(caught.value).endswith("unknown key 'therads'; did you mean 'threads'?")
    assert "\n" not in str(caught.value)


def test_the_power_sensor_has_one_default_for_target_files_and_jobs() -> None:
    empty = protocol.make_job(job_id="j", variants=[{"name": "a", "file": "a", "sha256": "a"}])
    plain = Target(name="plain", transport="local")
    assert empty["settings"]["power_sensor"] == plain.power_sensor == "none"
    assert protocol.JobSettings().power_sensor == "none"


def test_bench_has_every_job_option_deploy_has() -> None:
    def options(command: str) -> set[str]:
        return {opt for param in main.commands[command].params
                if isinstance(param, click.Option) for opt in param.opts}

    shared = {"--threads", "--accelerator", "--api", "--cooldown", "--cooldown-to",
              "--power-sensor", "--power-command", "--busy-wait", "--conversion-cache",
              "--min-runs", "--min-seconds", "--profile"}
    assert shared <= options("deploy") and shared <= options("bench")


@pytest.fixture
def allotted(monkeypatch: pytest.MonkeyPatch) -> ScheduledTarget:
    """A labgrid selector whose coordinator allots this machine's local board."""
    monkeypatch.setattr("toolkit.labgrid.hold.check_coordinator", lambda slot: None)
    monkeypatch.setattr("toolkit.labgrid.hold.run_scheduled",
                        lambda slot, job, **_: job(load_target("local")))
    return ScheduledTarget.resolve("tag:board=local", coordinator="127.0.0.1:20408")


def test_bench_sweeps_accelerators_on_an_allotted_board(allotted: ScheduledTarget,
                                                       tflite_copy: Path,
                                                       tmp_path: Path) -> None:
    outcome = bench([tflite_copy], targets=[allotted], recipes="fp32", settings=FAST,
                    accelerators=["cpu", "xnnpack-off"], out_dir=tmp_path / "out")
    assert [(c.target, c.variant, c.status) for c in outcome.cells] == [
        ("local", "model.tflite@cpu", "ok"), ("local", "model.tflite@xnnpack-off", "ok")]


def test_edge_bench_sweeps_threads_and_accelerators(tflite_copy: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "bench", str(tflite_copy), "--targets", "local", "--threads", "1,2", "--accelerator",
        "cpu,xnnpack-off", "--cooldown", "0", "--min-runs", "5", "--min-seconds", "0.05",
        "--no-health-check", "-o", str(tmp_path / "out"), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cells = json.loads(result.stdout)["cells"]
    assert [(c["variant"], c["status"]) for c in cells] == [
        (f"model.tflite@{kind}-t{count}", "ok")
        for kind in ("cpu", "xnnpack-off") for count in (1, 2)]


def test_deploy_with_busy_wait_0_fails_at_once_before_compressing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compressed: list[object] = []
    monkeypatch.setattr("toolkit.run.prepare.prepare_model",
                        lambda *args, **kwargs: compressed.append(args))  # never reached
    with open_board(load_target("local")) as board, board_lock(board, seconds=60) as token:
        started = time.monotonic()
        with pytest.raises(BoardBusyError, match=f"locked by {re.escape(token)}.*--busy-wait 0"):
            deploy(Path(__file__).parent.parent / "examples" / "digits_cnn.py",
                   targets=["local"], recipes="fp32", out_dir=tmp_path / "out",
                   busy_wait_seconds=0)
    assert compressed == [] and time.monotonic() - started < 30


def test_deploy_waits_for_a_busy_board_saying_who_holds_it(tflite_copy: Path,
                                                          tmp_path: Path) -> None:
    held = threading.Event()

    def someone_else() -> None:  # holds the board longer than the job runner's retries
        with open_board(load_target("local")) as board, board_lock(board, seconds=60):
            held.set()
            time.sleep(6.0)

    other = threading.Thread(target=someone_else)
    other.start()
    assert held.wait(15)
    stages: list[str] = []
    outcome = deploy(tflite_copy, targets=["local"], recipes="fp32", settings=FAST,
                     out_dir=tmp_path / "out", progress=stages.append)
    other.join()
    waiting = [s for s in stages if s.startswith("local: waiting: local is busy: locked by ")]
    assert waiting and stages.index(waiting[0]) < len(stages) - 1 - stages[::-1].index(
        "local: measuring model.tflite")
    assert [r.ok for r in outcome.run.results] == [True]


def test_a_recipe_that_fine_tunes_without_train_data_fails_before_any_conversion(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "tiny.py"
    model.write_text("import torch\n\n\ndef build_model():\n    return torch.nn.Linear(4, 2)\n\n\n"
                     "def example_input():\n    return (torch.zeros(1, 4),)\n")
    compressed: list[object] = []
    monkeypatch.setattr("toolkit.run.prepare.prepare_model",
                        lambda *args, **kwargs: compressed.append(args))  # never reached
    with pytest.raises(ModelError, match=r"prune-channels:0.5 fine-tunes the model: .* must "
                                         r"define train_data\(\)"):
        deploy(model, targets=["local"], recipes="fp32,prune-channels:0.5",
               out_dir=tmp_path / "out")
    assert compressed == []
