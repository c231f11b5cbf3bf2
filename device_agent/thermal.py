"""Thermal state: zone temperatures, CPU clocks and Raspberry Pi throttle flags.

Read before and after each variant, so a figure measured while the board was
hot or throttled says so.  The sysfs root and the command runner are
injectable for tests on constructed trees.

Example::

    state = thermal_state()          # {"zones_c": {...}, "cpu_mhz": {...}, ...}
    wait_until_cool(60.0)            # --cooldown-to 60
"""

from __future__ import annotations

import glob
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .power import Runner, run_command
from .wire import Cooldown, ThermalState

#: ``vcgencmd get_throttled`` bits (Raspberry Pi firmware documentation).
THROTTLE_BITS = {
    0: "under-voltage detected",
    1: "arm frequency capped",
    2: "currently throttled",
    3: "soft temperature limit active",
    16: "under-voltage has occurred",
    17: "arm frequency capping has occurred",
    18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}
#: The bits that describe the board *now* (16-19 are sticky since boot).
CURRENT_THROTTLE_BITS = (0, 1, 2, 3)


def decode_throttled(value: int) -> list[str]:
    """Names of the set bits of a ``get_throttled`` value.

    >>> decode_throttled(0x50005)
    ['under-voltage detected', 'currently throttled', 'under-voltage has occurred', \
'throttling has occurred']
    """
    return [name for bit, name in sorted(THROTTLE_BITS.items()) if value >> bit & 1]


def parse_get_throttled(text: str) -> int:
    """``throttled=0x50005`` -> 0x50005; ValueError on anything else."""
    key, _, value = text.strip().partition("=")
    if key != "throttled":
        raise ValueError(f"unexpected get_throttled output {text.strip()[:80]!r}")
    return int(value, 16)


def zone_temperatures(root: Path = Path("/"), zones: Sequence[str] = ()) -> dict[str, float]:
    """Degrees C per thermal zone, keyed ``zoneN:type``; zones that do not answer are left out.

    ``zones`` (folder names such as ``thermal_zone0``) keeps only those: a target file names
    the zones that matter on its board (a Jetson also has zones that never change).
    """
    temps = {}
    for folder in sorted(glob.glob(str(root / "sys/class/thermal/thermal_zone*"))):
        path = Path(folder)
        if zones and path.name not in zones:
            continue
        try:
            millideg = int(path.joinpath("temp").read_text().strip())
            kind = path.joinpath("type").read_text().strip() if (path / "type").exists() else ""
        except (OSError, ValueError):
            continue
        temps[f"{path.name}:{kind}" if kind else path.name] = millideg / 1000.0
    return temps


def cpu_frequencies_mhz(root: Path = Path("/")) -> dict[str, float]:
    """Current clock of each CPU with cpufreq, in MHz."""
    freqs = {}
    pattern = str(root / "sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")
    for file in sorted(glob.glob(pattern)):
        try:
            freqs[Path(file).parent.parent.name] = int(Path(file).read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
    return freqs


def parse_zones(text: str) -> tuple[str, ...]:
    """The ``thermal_zones`` job setting, ``"thermal_zone0,thermal_zone1"``, as names."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def thermal_state(root: Path = Path("/"), runner: Runner | None = None,
                  zones: Sequence[str] = ()) -> ThermalState:
    """Temperatures, clocks and (where ``vcgencmd`` answers) the throttle flags, now."""
    state: ThermalState = {"zones_c": zone_temperatures(root, zones),
                             "cpu_mhz": cpu_frequencies_mhz(root)}
    try:
        value = parse_get_throttled((runner or run_command)(["vcgencmd", "get_throttled"]))
    except (OSError, ValueError):
        return state
    state["throttled_raw"] = hex(value)
    state["throttled_flags"] = decode_throttled(value)
    state["throttled_now"] = any(value >> bit & 1 for bit in CURRENT_THROTTLE_BITS)
    return state


def was_throttled(before: ThermalState, after: ThermalState) -> list[str]:
    """Reasons to believe the board throttled between two states (empty if none)."""
    reasons = []
    for when, state in (("before", before), ("after", after)):
        if state.get("throttled_now"):
            reasons.append(f"throttled {when} ({state['throttled_raw']})")
    # The sticky bits rising during the run mean it throttled in between.
    if "throttled_raw" in before and "throttled_raw" in after:
        risen = int(after["throttled_raw"], 16) & ~int(before["throttled_raw"], 16) & 0xF0000
        if risen:
            reasons.append("throttling occurred during the run: " +
                           ", ".join(decode_throttled(risen)))
    return reasons


def hottest(state: ThermalState) -> float | None:
    zones: Mapping[str, float] = state.get("zones_c") or {}
    return max(zones.values()) if zones else None


def wait_until_cool(target_c: float, *, max_seconds: float = 300.0, poll_seconds: float = 2.0,
                    root: Path = Path("/"), zones: Sequence[str] = (),
                    sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic) -> Cooldown:
    """Wait until the hottest zone is at or below ``target_c`` (or ``max_seconds`` passed).

    Returns what happened: ``{"target_c", "waited_s", "reached", "start_c", "end_c"}``;
    without thermal zones there is nothing to wait for and ``reached`` is None.
    """
    started = clock()
    start_c = hottest({"zones_c": zone_temperatures(root, zones)})
    now_c = start_c
    while now_c is not None and now_c > target_c and clock() - started < max_seconds:
        sleep(poll_seconds)
        now_c = hottest({"zones_c": zone_temperatures(root, zones)})
    return {"target_c": target_c, "waited_s": clock() - started, "start_c": start_c,
            "end_c": now_c, "reached": None if now_c is None else now_c <= target_c}
