"""Thermal zones, CPU clocks and Raspberry Pi throttle flags from constructed trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_agent.thermal import (
    THROTTLE_BITS,
    decode_throttled,
    parse_get_throttled,
    parse_zones,
    thermal_state,
    wait_until_cool,
    was_throttled,
)


def board_tree(root: Path, temps_mc: list[int], freqs_khz: list[int]) -> None:
    for index, temp in enumerate(temps_mc):
        zone = root / f"sys/class/thermal/thermal_zone{index}"
        zone.mkdir(parents=True)
        (zone / "temp").write_text(f"{temp}\n")
        (zone / "type").write_text("cpu-thermal\n" if index == 0 else "gpu-thermal\n")
    for cpu, freq in enumerate(freqs_khz):
        folder = root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        folder.mkdir(parents=True)
        (folder / "scaling_cur_freq").write_text(f"{freq}\n")


@pytest.mark.parametrize("bit, name", sorted(THROTTLE_BITS.items()))
def test_each_throttle_bit_alone(bit: int, name: str) -> None:
    assert decode_throttled(1 << bit) == [name]


def test_throttle_value_decoded_bit_by_bit() -> None:
    assert parse_get_throttled("throttled=0x50005\n") == 0x50005
    assert decode_throttled(0x50005) == ["under-voltage detected", "currently throttled",
                                         "under-voltage has occurred", "throttling has occurred"]
    assert decode_throttled(0) == []
    with pytest.raises(ValueError):
        parse_get_throttled("VCHI initialization failed")


def test_state_reads_zones_clocks_and_flags(tmp_path: Path) -> None:
    board_tree(tmp_path, [48312, 45100], [2400000, 1500000])
    state = thermal_state(tmp_path, runner=lambda command: "throttled=0x4\n")
    assert state["zones_c"] == {"thermal_zone0:cpu-thermal": 48.312,
                                "thermal_zone1:gpu-thermal": 45.1}
    assert state["cpu_mhz"] == {"cpu0": 2400.0, "cpu1": 1500.0}
    assert state["throttled_now"] is True
    assert state["throttled_flags"] == ["currently throttled"]


def test_the_target_files_zones_are_the_only_ones_read_and_waited_for(tmp_path: Path) -> None:
    # A Jetson-like board: zone1 sits at 80 C whatever the CPU does; the target names zone0.
    board_tree(tmp_path, [48000, 80000], [])
    zones = parse_zones(" thermal_zone0, ")
    assert zones == ("thermal_zone0",)
    state = thermal_state(tmp_path, runner=lambda command: "", zones=zones)
    assert state["zones_c"] == {"thermal_zone0:cpu-thermal": 48.0}
    # A clock of the test's own: zone0 is already cool, so no poll may be slept at all
    # (zone1's 80 C would make it wait), whatever the machine's load.
    now, slept = [0.0], []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    done = wait_until_cool(60.0, root=tmp_path, zones=zones, sleep=sleep, clock=lambda: now[0])
    assert done["reached"] is True and slept == [] and done["waited_s"] == 0
    assert parse_zones("") == ()  # empty: every zone
    assert len(thermal_state(tmp_path, runner=lambda command: "")["zones_c"]) == 2


def test_this_machine_without_zones_or_vcgencmd(tmp_path: Path) -> None:
    def missing(command: object) -> str:
        raise OSError("vcgencmd: not found")
    assert thermal_state(tmp_path, runner=missing) == {"zones_c": {}, "cpu_mhz": {}}


def test_throttling_during_a_run_is_caught_by_the_sticky_bits() -> None:
    before = {"throttled_raw": "0x0", "throttled_now": False}
    after = {"throttled_raw": "0x40000", "throttled_now": False}
    assert was_throttled(before, after) == [
        "throttling occurred during the run: throttling has occurred"]
    assert was_throttled(after, after) == []  # sticky since boot, not from this run
    assert was_throttled({}, {"throttled_raw": "0x2", "throttled_now": True}) == [
        "throttled after (0x2)"]


def test_cooldown_waits_until_the_hottest_zone_is_cool(tmp_path: Path) -> None:
    board_tree(tmp_path, [70000, 50000], [])
    temp = tmp_path / "sys/class/thermal/thermal_zone0/temp"
    readings = iter(["65000", "58000"])
    clock = iter(float(t) for t in range(100))

    def sleep(seconds: float) -> None:
        temp.write_text(next(readings))
    done = wait_until_cool(60.0, root=tmp_path, sleep=sleep, clock=lambda: next(clock))
    assert done["reached"] is True and done["start_c"] == 70.0 and done["end_c"] == 58.0


def test_cooldown_gives_up_at_its_ceiling_and_without_zones(tmp_path: Path) -> None:
    board_tree(tmp_path, [90000], [])
    clock = iter(float(t) for t in range(0, 1000, 10))
    done = wait_until_cool(60.0, max_seconds=30, root=tmp_path, sleep=lambda s: None,
                           clock=lambda: next(clock))
    assert done["reached"] is False and done["end_c"] == 90.0
    assert wait_until_cool(60.0, root=tmp_path / "none")["reached"] is None
