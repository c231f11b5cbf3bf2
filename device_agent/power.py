"""Board power sensors: one small reader per sensor kind, behind one interface.

Every reader has ``kind``, ``misses`` (what the sensor does not see, said in
reports) and ``read_watts()``, which returns the board power now in watts,
``None`` while it has no value yet (a counter needs two reads), or raises
:class:`SensorLost` when the sensor stops answering.  Roots (a sysfs root and a
command runner) are injectable, so tests use constructed trees and recorded
outputs in the layouts the boards really have.

Example::

    reader = open_power_reader("auto")          # None on a board without a sensor
    if reader is not None:
        sampler = PowerSampler(reader, rate_hz=20).start()
        ...                                     # idle window, measured runs
        samples = sampler.stop()
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .wire import PowerFigures, SensorFacts

#: Runs a command and returns its standard output; raises OSError when it cannot.
Runner = Callable[[Sequence[str]], str]

POWER_SENSORS = ("auto", "none", "ina3221-hwmon", "ina3221-iio", "tegrastats", "rpi5-pmic",
                 "ina219-hwmon", "rapl", "command")


class SensorUnavailable(Exception):
    """The sensor is not on this board, or cannot be read (e.g. permission denied)."""


class SensorLost(Exception):
    """A sensor that answered before stopped answering during a measurement."""


def run_command(command: Sequence[str]) -> str:
    """The default :data:`Runner`: the command's stdout; OSError if it fails."""
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=10,
                              check=False)
    except (subprocess.TimeoutExpired, OSError) as exc:
        raise OSError(f"{command[0]}: {exc}") from None
    if done.returncode != 0:
        raise OSError(f"{command[0]} exited {done.returncode}: {done.stderr.strip()[:200]}")
    return done.stdout


class PowerReader:
    """Base of all readers: a kind, what it misses, and one reading in watts."""

    kind = "none"
    misses = ""

    def read_watts(self) -> float | None:
        raise NotImplementedError

    def describe(self) -> SensorFacts:
        return {"kind": self.kind, "misses": self.misses}

    def close(self) -> None:
        """Release what the reader holds (a child process); most hold nothing."""


def _read_number(path: Path) -> float:
    try:
        return float(path.read_text().strip())
    except PermissionError as exc:
        raise SensorUnavailable(f"{path}: permission denied") from exc
    except (OSError, ValueError) as exc:
        raise SensorLost(f"{path}: {exc}") from None


def _hwmon_dirs(root: Path, driver: str) -> list[Path]:
    """hwmon folders whose ``name`` is ``driver``; the hwmonN number is not stable."""
    found: list[Path] = []
    patterns = (f"sys/bus/i2c/drivers/{driver}/*/hwmon/hwmon*", "sys/class/hwmon/hwmon*")
    for pattern in patterns:
        for folder in sorted(glob.glob(str(root / pattern))):
            path = Path(folder)
            try:
                name = (path / "name").read_text().strip()
            except OSError:
                continue
            if name == driver and path.resolve() not in {f.resolve() for f in found}:
                found.append(path)
    return found


class Ina3221Hwmon(PowerReader):
    """Jetson INA3221 on JetPack 5/6: ``inN_input`` mV times ``currN_input`` mA of one rail."""

    kind = "ina3221-hwmon"

    def __init__(self, root: Path = Path("/"), rail: str = "") -> None:
        for folder in _hwmon_dirs(root, "ina3221"):
            labels = {}
            for label_file in sorted(folder.glob("in*_label")):
                channel = label_file.name[2:-len("_label")]
                labels[label_file.read_text().strip()] = channel
            # VDD_IN (Orin) / POM_5V_IN (Nano, Xavier) is the whole-board input rail.
            wanted = rail or next((name for name in labels if name.endswith("_IN")), "")
            if wanted in labels:
                channel = labels[wanted]
                self.rail = wanted
                self._volts = folder / f"in{channel}_input"
                self._amps = folder / f"curr{channel}_input"
                self.misses = (f"rail {wanted} only" if not wanted.endswith("_IN") else
                               "losses before the module input (carrier board, USB devices)")
                return
        raise SensorUnavailable(f"no ina3221 hwmon device with rail {rail or '*_IN'}")

    def read_watts(self) -> float | None:
        return _read_number(self._volts) * _read_number(self._amps) / 1e6


class Ina3221Iio(PowerReader):
    """Jetson INA3221 on JetPack 4 (IIO ``ina3221x``): ``in_powerN_input`` in mW."""

    kind = "ina3221-iio"

    def __init__(self, root: Path = Path("/"), rail: str = "") -> None:
        for folder in sorted(glob.glob(str(root / "sys/bus/i2c/drivers/ina3221x/*/iio:device*"))):
            for name_file in sorted(Path(folder).glob("rail_name_*")):
                name = name_file.read_text().strip()
                if (rail and name == rail) or (not rail and name.endswith("_IN")):
                    channel = name_file.name[len("rail_name_"):]
                    self.rail = name
                    self._power = Path(folder) / f"in_power{channel}_input"
                    self.misses = "losses before the module input (carrier board, USB devices)"
                    return
        raise SensorUnavailable(f"no ina3221x IIO device with rail {rail or '*_IN'}")

    def read_watts(self) -> float | None:
        return _read_number(self._power) / 1e3


_TEGRA_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?")


def parse_tegrastats_line(line: str, rail: str = "") -> float | None:
    """Watts of ``rail`` (default: the ``*_IN`` rail) in one tegrastats line, or None.

    >>> parse_tegrastats_line("RAM 1/2MB POM_5V_IN 2071/2071 POM_5V_GPU 0/0")
    2.071
    """
    for name, now, _average in _TEGRA_RAIL.findall(line):
        if (rail and name == rail) or (not rail and name.endswith("_IN")):
            return int(now) / 1e3
    return None


class Tegrastats(PowerReader):
    """``tegrastats --interval MS`` lines, one per sample (the reader blocks on the next line)."""

    kind = "tegrastats"
    misses = ("losses before the module input; tegrastats averages over its own interval "
              "and wakes the CPU itself")

    def __init__(self, lines: Iterator[str] | None = None, rail: str = "",
                 interval_ms: int = 50) -> None:
        self._process: subprocess.Popen[str] | None = None
        if lines is None:
            try:
                self._process = subprocess.Popen(
                    ["tegrastats", "--interval", str(interval_ms)], stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL, text=True)
            except OSError as exc:
                raise SensorUnavailable(f"tegrastats: {exc.strerror}") from None
            assert self._process.stdout is not None  # PIPE was asked for
            lines = iter(self._process.stdout)
        self._lines = lines
        self._rail = rail

    def read_watts(self) -> float | None:
        line = next(self._lines, None)
        if line is None:
            raise SensorLost("tegrastats stopped printing")
        return parse_tegrastats_line(line, self._rail)

    def close(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=5)


_PMIC_LINE = re.compile(r"^\s*(\S+)_([AV]) \w+\(\d+\)=([-0-9.eE+]+)[AV]\s*$")


def parse_pmic_read_adc(text: str) -> float:
    """Sum of volts times amps over the rails that have both, from ``vcgencmd pmic_read_adc``.

    >>> parse_pmic_read_adc("VDD_CORE_A current(7)=2.0A\\nVDD_CORE_V volt(15)=0.5V\\n")
    1.0
    """
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        match = _PMIC_LINE.match(line)
        if match:
            rail, unit, value = match.groups()
            (amps if unit == "A" else volts)[rail] = float(value)
    paired = [amps[rail] * volts[rail] for rail in amps if rail in volts]
    if not paired:
        raise SensorLost("vcgencmd pmic_read_adc printed no current/voltage pairs")
    return sum(paired)


class RpiPmic(PowerReader):
    """Raspberry Pi 5 PMIC rails read with ``vcgencmd pmic_read_adc``."""

    kind = "rpi5-pmic"
    misses = "PMIC conversion losses and USB/peripheral load on the 5 V input (EXT5V)"

    def __init__(self, runner: Runner = run_command) -> None:
        self._runner = runner
        try:
            parse_pmic_read_adc(self._runner(["vcgencmd", "pmic_read_adc"]))
        except (OSError, SensorLost) as exc:
            raise SensorUnavailable(f"vcgencmd pmic_read_adc: {exc}") from None

    def read_watts(self) -> float | None:
        try:
            return parse_pmic_read_adc(self._runner(["vcgencmd", "pmic_read_adc"]))
        except OSError as exc:
            raise SensorLost(str(exc)) from None


class Ina219Hwmon(PowerReader):
    """An INA219 on I2C (hwmon ``ina219``): ``power1_input`` in microwatts."""

    kind = "ina219-hwmon"
    misses = "whatever is not wired through the shunt (only the measured supply line)"

    def __init__(self, root: Path = Path("/")) -> None:
        folders = _hwmon_dirs(root, "ina219")
        if not folders:
            raise SensorUnavailable("no ina219 hwmon device")
        self._folder = folders[0]

    def read_watts(self) -> float | None:
        power = self._folder / "power1_input"
        if power.exists():
            return _read_number(power) / 1e6
        return _read_number(self._folder / "in1_input") * _read_number(
            self._folder / "curr1_input") / 1e6


class Rapl(PowerReader):
    """Intel RAPL package energy counter (microjoules), differentiated between reads."""

    kind = "rapl"
    misses = "everything outside the CPU package (DRAM on some parts, board, fans, PSU losses)"

    def __init__(self, root: Path = Path("/"), clock: Callable[[], float] = time.monotonic) -> None:
        zone = root / "sys/class/powercap/intel-rapl:0"
        self._energy = zone / "energy_uj"
        if not self._energy.exists():
            raise SensorUnavailable("no intel-rapl:0 powercap zone")
        try:
            self._wrap = _read_number(zone / "max_energy_range_uj")
            self._last = (clock(), _read_number(self._energy))
        except SensorLost as exc:
            raise SensorUnavailable(str(exc)) from None
        self._clock = clock

    def read_watts(self) -> float | None:
        now, energy = self._clock(), _read_number(self._energy)
        then, before = self._last
        self._last = (now, energy)
        if now <= then:
            return None
        delta = energy - before
        if delta < 0:  # the counter wrapped at max_energy_range_uj
            delta += self._wrap + 1
        return delta / 1e6 / (now - then)


class CommandReader(PowerReader):
    """A user command (for an external USB meter) whose last output line is watts."""

    kind = "command"
    misses = "whatever the external meter does not see; command start-up limits the rate"

    def __init__(self, command: str, runner: Runner = run_command) -> None:
        if not command.strip():
            raise SensorUnavailable("power_command is empty")
        self._command = shlex.split(command)
        self._runner = runner

    def read_watts(self) -> float | None:
        try:
            lines = self._runner(self._command).strip().splitlines()
            return float(lines[-1].split()[0])
        except (OSError, ValueError, IndexError) as exc:
            raise SensorLost(f"{self._command[0]}: {exc}") from None


def open_power_reader(sensor: str = "auto", *, root: Path = Path("/"), rail: str = "",
                      command: str = "", runner: Runner = run_command) -> PowerReader | None:
    """The reader for ``sensor`` (one of :data:`POWER_SENSORS`), or None when there is none.

    ``auto`` tries the kinds that need no extra process, in order; a named kind that is
    not available raises :class:`SensorUnavailable` with the reason.
    """
    makers: dict[str, Callable[[], PowerReader]] = {
        "ina3221-hwmon": lambda: Ina3221Hwmon(root, rail),
        "ina3221-iio": lambda: Ina3221Iio(root, rail),
        "tegrastats": lambda: Tegrastats(rail=rail),
        "rpi5-pmic": lambda: RpiPmic(runner),
        "ina219-hwmon": lambda: Ina219Hwmon(root),
        "rapl": lambda: Rapl(root),
        "command": lambda: CommandReader(command, runner),
    }
    if sensor == "none":
        return None
    if sensor != "auto":
        if sensor not in makers:
            raise SensorUnavailable(f"unknown power sensor {sensor!r}; one of {POWER_SENSORS}")
        return makers[sensor]()
    if command:
        return makers["command"]()
    for kind in ("ina3221-hwmon", "ina3221-iio", "ina219-hwmon", "rpi5-pmic", "rapl"):
        if kind == "rpi5-pmic" and not _on_path("vcgencmd"):
            continue
        try:
            return makers[kind]()
        except SensorUnavailable:
            continue
    return None


def _on_path(program: str) -> bool:
    return any(os.access(os.path.join(folder, program), os.X_OK)
               for folder in os.environ.get("PATH", "").split(os.pathsep) if folder)


class PowerSampler:
    """Reads a sensor at a fixed rate in a background thread; keeps (monotonic s, watts)."""

    def __init__(self, reader: PowerReader, rate_hz: float = 20.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reader = reader
        self.period = 1.0 / rate_hz
        self.samples: list[tuple[float, float]] = []
        self.error = ""
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="power-sampler", daemon=True)

    def start(self) -> PowerSampler:
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join(timeout=10)
        self.reader.close()
        return self.samples

    def _loop(self) -> None:
        # Absolute deadlines keep the rate fixed however long a read takes.
        deadline = self._clock()
        while not self._stop.is_set():
            try:
                watts = self.reader.read_watts()
            except (SensorLost, SensorUnavailable) as exc:
                self.error = f"sensor lost at {self._clock():.3f} s: {exc}"
                return
            if watts is not None:
                self.samples.append((self._clock(), watts))
            deadline += self.period
            self._stop.wait(max(0.0, deadline - self._clock()))


def summarize_power(samples: list[tuple[float, float]], *, idle: tuple[float, float],
                    active: tuple[float, float], runs: int) -> PowerFigures:
    """Idle and active average power and energy per inference from timed samples.

    ``idle`` and ``active`` are (start, end) on the sampler's clock.  Energy over the
    active window is its average power times its duration; per inference it is that
    divided by ``runs``, in total and above the idle power.  When the active window
    holds no sample (a sensor slower than the runs: tegrastats gave 0.5 Hz where 20 Hz
    was asked), only an ``error`` saying so and the rate achieved: the figures are
    absent, never zero, and never absent without a reason.
    """
    def window(bounds: tuple[float, float]) -> list[float]:
        return [watts for at, watts in samples if bounds[0] <= at <= bounds[1]]

    idle_w, active_w = window(idle), window(active)
    duration = active[1] - active[0]
    if not active_w or runs < 1:
        span = samples[-1][0] - samples[0][0] if len(samples) > 1 else 0.0
        achieved = f"{(len(samples) - 1) / span:.2g} Hz" if span > 0 else \
            f"{len(samples)} sample(s) in all"
        return {"error": f"no power sample during the {duration:.2f} s of measured runs "
                         f"(the sensor gave {achieved}): measure longer (--min-seconds) or "
                         "use a sensor that answers faster"}
    active_avg = sum(active_w) / len(active_w)
    figures: PowerFigures = {
        "active_power_w": active_avg,
        "energy_per_inference_j": active_avg * duration / runs,
        "sample_rate_hz": len(active_w) / duration if duration > 0 else 0.0,
        "active_samples": float(len(active_w)),
    }
    if idle_w:
        idle_avg = sum(idle_w) / len(idle_w)
        figures["idle_power_w"] = idle_avg
        figures["energy_above_idle_per_inference_j"] = (active_avg - idle_avg) * duration / runs
    return figures
