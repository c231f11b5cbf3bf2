"""`edge deploy --threads` sweeps, and every result carries its checks, verdict and board facts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli.main import main

from .conftest import DIGITS_MODEL


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.slow
def test_thread_sweep_runs_each_variant_per_count_with_output_check(tmp_path: Path) -> None:
    result = invoke("deploy", str(DIGITS_MODEL), "--target", "local", "--recipe", "fp32",
                    "-o", str(tmp_path / "out"), "--threads", "1,2", "--min-runs", "10",
                    "--cooldown", "0.5",
                    "--min-seconds", "0.05", "--json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)["results"]
    assert [(r["variant"], r["threads"]) for r in records] == [("fp32-t1", 1), ("fp32-t2", 2)]
    assert "cooldown" not in records[0]
    assert records[1]["cooldown"] == {"paused_s": 0.5}
    for record in records:
        assert record["output_check"]["ok"] is True
        assert record["output_check"]["top1_agreement"] == 1.0
        assert record["verdict"]["status"] in ("VALID", "INVALID")
        assert "cv" in record["latency_ms"]
        assert record["runtime"]["name"] in record["board"]["runtimes"]
        assert record["board"]["cpu_model"] and record["board"]["release"]
        assert "power" not in record  # this machine has no sensor: absent, not zero
        assert set(record["thermal"]) == {"before", "after", "throttled"}


@pytest.mark.parametrize("threads", ["one,two", "1,1", "-1", ","])
def test_bad_thread_lists_are_usage_errors(threads: str, tmp_path: Path) -> None:
    result = invoke("deploy", str(DIGITS_MODEL), "--threads", threads, "-o", str(tmp_path))
    assert result.exit_code == 2
    assert "--threads" in result.output
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_a_power_command_gives_energy_per_inference_end_to_end(tmp_path: Path) -> None:
    result = invoke("deploy", str(DIGITS_MODEL), "--target", "local", "--recipe", "fp32",
                    "-o", str(tmp_path / "out"), "--power-command", "echo 3.0",
                    "--min-runs", "10", "--min-seconds", "0.3", "--json")
    assert result.exit_code == 0, result.output
    power = json.loads(result.stdout)["results"][0]["power"]
    assert power["sensor"]["kind"] == "command"
    assert power["idle_power_w"] == power["active_power_w"] == 3.0
    assert power["energy_per_inference_j"] == pytest.approx(
        3.0 * power["wall_seconds"] / power["runs"])
    assert power["sample_rate_hz"] > 0
