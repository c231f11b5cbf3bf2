"""Power readers against constructed sysfs trees and recorded outputs (layouts of real boards)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from device_agent import power
from device_agent.power import (
    CommandReader,
    Ina219Hwmon,
    Ina3221Hwmon,
    Ina3221Iio,
    PowerSampler,
    Rapl,
    RpiPmic,
    SensorLost,
    SensorUnavailable,
    Tegrastats,
    open_power_reader,
    summarize_power,
)

# Recorded on a Raspberry Pi 5 (bookworm firmware), trimmed.
PMIC_OUTPUT = """\
     3V7_WL_SW_A current(0)=0.10000000A
   3V3_SYS_A current(1)=0.05000000A
  VDD_CORE_A current(7)=0.79060000A
     3V7_WL_SW_V volt(8)=3.70000000V
   3V3_SYS_V volt(9)=3.30000000V
  VDD_CORE_V volt(15)=0.88035100V
     EXT5V_V volt(24)=5.15640000V
"""
TEGRA_JP4 = ("RAM 1500/3964MB (lfb 5x4MB) CPU [12%@1479,5%@1479] GPU@23C "
             "POM_5V_IN 2071/2071 POM_5V_GPU 0/0 POM_5V_CPU 329/329")
TEGRA_JP6 = ("11-22-2026 10:00:00 RAM 2900/7620MB CPU [3%@729] VDD_IN 4165mW/4165mW "
             "VDD_CPU_GPU_CV 520mW/520mW VDD_SOC 1200mW/1200mW")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return path


def jetson_hwmon(root: Path, number: int, *, volts_mv: int = 5000, amps_ma: int = 800) -> Path:
    """JetPack 5/6 layout; an unrelated hwmon device takes the lower number."""
    write(root / "sys/class/hwmon/hwmon0/name", "cpu_thermal")
    folder = root / f"sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon{number}"
    write(folder / "name", "ina3221")
    for channel, label in ((1, "VDD_IN"), (2, "VDD_CPU_GPU_CV"), (3, "VDD_SOC")):
        write(folder / f"in{channel}_label", label)
        write(folder / f"in{channel}_input", str(volts_mv // channel))
        write(folder / f"curr{channel}_input", str(amps_ma // channel))
    (root / "sys/class/hwmon").mkdir(parents=True, exist_ok=True)
    os.symlink(folder, root / f"sys/class/hwmon/hwmon{number}")
    return folder


@pytest.mark.parametrize("number", [1, 3, 7])
def test_ina3221_hwmon_is_found_by_name_and_label_whatever_its_number(
        tmp_path: Path, number: int) -> None:
    jetson_hwmon(tmp_path, number, volts_mv=5000, amps_ma=800)
    reader = Ina3221Hwmon(tmp_path)
    assert reader.rail == "VDD_IN"
    assert reader.read_watts() == pytest.approx(4.0)
    assert Ina3221Hwmon(tmp_path, rail="VDD_SOC").read_watts() == pytest.approx(
        (5000 // 3) * (800 // 3) / 1e6)
    assert open_power_reader("auto", root=tmp_path).kind == "ina3221-hwmon"  # type: ignore


def test_ina3221_iio_on_jetpack4(tmp_path: Path) -> None:
    folder = tmp_path / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for channel, (rail, mw) in enumerate((("POM_5V_IN", 2071), ("POM_5V_GPU", 0),
                                          ("POM_5V_CPU", 329))):
        write(folder / f"rail_name_{channel}", rail)
        write(folder / f"in_power{channel}_input", str(mw))
    assert Ina3221Iio(tmp_path).read_watts() == pytest.approx(2.071)
    assert Ina3221Iio(tmp_path, rail="POM_5V_CPU").read_watts() == pytest.approx(0.329)


def test_tegrastats_lines_of_both_jetpacks() -> None:
    reader = Tegrastats(lines=iter([TEGRA_JP4 + "\n", TEGRA_JP6 + "\n"]))
    assert reader.read_watts() == pytest.approx(2.071)
    assert reader.read_watts() == pytest.approx(4.165)
    with pytest.raises(SensorLost):
        reader.read_watts()
    assert power.parse_tegrastats_line(TEGRA_JP6, "VDD_SOC") == pytest.approx(1.2)


def test_rpi5_pmic_pairs_current_and_voltage_rails_by_name() -> None:
    reader = RpiPmic(runner=lambda command: PMIC_OUTPUT)
    expected = 0.1 * 3.7 + 0.05 * 3.3 + 0.7906 * 0.880351  # EXT5V has no current: left out
    assert reader.read_watts() == pytest.approx(expected)
    assert "USB" in reader.misses


def test_rpi5_pmic_without_vcgencmd_is_not_available() -> None:
    def missing(command: Sequence[str]) -> str:
        raise OSError("vcgencmd: not found")
    with pytest.raises(SensorUnavailable):
        RpiPmic(runner=missing)


def test_ina219_hwmon_power_in_microwatts(tmp_path: Path) -> None:
    folder = tmp_path / "sys/class/hwmon/hwmon2"
    write(folder / "name", "ina219")
    write(folder / "power1_input", "3250000")
    assert Ina219Hwmon(tmp_path).read_watts() == pytest.approx(3.25)


def rapl_tree(root: Path, energy: int, wrap: int = 262143328850) -> Path:
    zone = root / "sys/class/powercap/intel-rapl:0"
    write(zone / "max_energy_range_uj", str(wrap))
    return write(zone / "energy_uj", str(energy))


def test_rapl_differentiates_the_counter_and_survives_a_wrap(tmp_path: Path) -> None:
    wrap = 1_000_000
    counter = rapl_tree(tmp_path, 990_000, wrap=wrap)
    now = iter([0.0, 1.0, 2.0])
    reader = Rapl(tmp_path, clock=lambda: next(now))
    counter.write_text("995000\n")
    assert reader.read_watts() == pytest.approx(0.005)
    counter.write_text("2999\n")  # wrapped: 995000 -> 1000000 -> 0 -> 2999
    assert reader.read_watts() == pytest.approx((wrap - 995_000 + 1 + 2999) / 1e6)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_rapl_permission_denied_is_not_available(tmp_path: Path) -> None:
    rapl_tree(tmp_path, 5).chmod(0)
    with pytest.raises(SensorUnavailable, match="permission denied"):
        Rapl(tmp_path)


def test_rapl_permission_denied_as_root_sees_it(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Root ignores file modes, so the kernel's EACCES is reproduced at the read itself."""
    rapl_tree(tmp_path, 5)
    real = Path.read_text

    def denied(self: Path, *args: object, **kwargs: object) -> str:
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)
    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(SensorUnavailable, match="permission denied"):
        Rapl(tmp_path)
    assert open_power_reader("auto", root=tmp_path) is None


def test_user_command_printing_watts() -> None:
    reader = CommandReader("usbmeter --watts", runner=lambda command: "meter ok\n4.5 W\n")
    assert reader.read_watts() == pytest.approx(4.5)
    assert CommandReader("x", runner=lambda c: "garbage\n").describe()["kind"] == "command"
    with pytest.raises(SensorLost):
        CommandReader("x", runner=lambda c: "garbage\n").read_watts()


def test_a_real_command_through_the_default_runner() -> None:
    assert CommandReader("echo 2.5").read_watts() == pytest.approx(2.5)


def test_no_sensor_on_this_machine_means_none(tmp_path: Path) -> None:
    assert open_power_reader("auto", root=tmp_path) is None
    assert open_power_reader("none") is None
    with pytest.raises(SensorUnavailable):
        open_power_reader("ina219-hwmon", root=tmp_path)
    with pytest.raises(SensorUnavailable, match="unknown power sensor"):
        open_power_reader("usb-magic", root=tmp_path)


def test_sensor_vanishing_mid_run_stops_the_sampler_with_a_reason(tmp_path: Path) -> None:
    folder = tmp_path / "sys/class/hwmon/hwmon4"
    write(folder / "name", "ina219")
    file = write(folder / "power1_input", "1000000")
    reader = Ina219Hwmon(tmp_path)
    sampled = threading.Event()

    class Watching(Ina219Hwmon):
        def read_watts(self) -> float | None:
            value = reader.read_watts()
            sampled.set()
            return value
    watching = Watching(tmp_path)
    sampler = PowerSampler(watching, rate_hz=200).start()
    assert sampled.wait(10)
    file.unlink()  # the device is unbound (driver unloaded, cable pulled)
    sampler._thread.join(10)
    samples = sampler.stop()
    assert samples and all(watts == 1.0 for _, watts in samples)
    assert "sensor lost" in sampler.error


def test_energy_per_inference_is_power_times_window_over_runs() -> None:
    # 5 W idle for 1 s, then 8 W for 2 s of 400 inferences, sampled at 10 Hz.
    samples = [(t / 10, 5.0) for t in range(0, 10)] + [(1 + t / 10, 8.0) for t in range(0, 21)]
    figures = summarize_power(samples, idle=(0.0, 0.95), active=(1.0, 3.0), runs=400)
    assert figures["idle_power_w"] == pytest.approx(5.0)
    assert figures["active_power_w"] == pytest.approx(8.0)
    assert figures["energy_per_inference_j"] == pytest.approx(8.0 * 2 / 400)
    assert figures["energy_above_idle_per_inference_j"] == pytest.approx(3.0 * 2 / 400)
    assert figures["sample_rate_hz"] == pytest.approx(10.5)


def test_no_samples_means_no_energy_figures_rather_than_zero() -> None:
    assert summarize_power([], idle=(0, 1), active=(1, 2), runs=10) == {
        "error": "no power sample during the 1.00 s of measured runs (the sensor gave 0 "
                 "sample(s) in all): measure longer (--min-seconds) or use a sensor that "
                 "answers faster"}
    # tegrastats at 0.5 Hz where 20 Hz was asked: one sample before the runs, one after.
    slow = summarize_power([(0.0, 5.0), (2.0, 5.0)], idle=(0.0, 0.5), active=(0.6, 1.6),
                           runs=100)
    assert set(slow) == {"error"} and "the sensor gave 0.5 Hz" in slow["error"]
