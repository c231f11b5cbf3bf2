"""The checks of a paired job's answer (:mod:`device_agent.paired`): per pair, equal numbers
of blocks on every side, each figure a finite number above zero, the clock facts when sent,
or the reason it failed.

Part of :func:`device_agent.protocol.validate_result`, which calls
:func:`validate_pair_results` for a job with ``pairs``.
"""

from __future__ import annotations

from typing import List

from .checks import (
    ProtocolError,
    require_dict,
    require_list,
    require_number,
    require_type,
    validate_clock_block,
)
from .settings import SIDES
from .wire import LATENCY_KEYS, MAX_RAW_SAMPLES, VARIANT_STATUSES


def validate_pair_results(value: object, expected: List[str]) -> None:
    """A paired job's answer: per pair, equal numbers of blocks on every side, each figure a
    finite number above zero, the clock facts when sent, or the reason it failed."""
    pairs = require_list(value, "result.pairs")
    got = [p.get("name") if isinstance(p, dict) else None for p in pairs]
    if got != expected:
        raise ProtocolError(f"result.pairs are {got}, expected {expected}")
    for index, entry in enumerate(pairs):
        where = f"result.pairs[{index}]"
        pair = require_dict(entry, where)  # a dict: its name matched above
        if pair.get("status") not in VARIANT_STATUSES:
            raise ProtocolError(f"{where}.status must be one of {VARIANT_STATUSES}, "
                                f"got {pair.get('status')!r}")
        if pair["status"] == "failed":
            require_type(pair.get("error"), str, f"{where}.error")
            continue
        require_number(pair.get("block_runs"), f"{where}.block_runs", minimum=1)
        require_number(pair.get("seconds"), f"{where}.seconds", minimum=0)
        if len({_blocks_per_side(pair.get(figure), f"{where}.{figure}")
                for figure in ("block_median_ms", "block_p90_ms")}) != 1:
            raise ProtocolError(f"{where} has unequal numbers of blocks per side")
        runtime = require_dict(pair.get("runtime"), f"{where}.runtime")
        for key in ("name", "version"):
            require_type(runtime.get(key), str, f"{where}.runtime.{key}")
        latency = require_dict(pair.get("latency_ms"), f"{where}.latency_ms")
        for side in SIDES:
            summary = require_dict(latency.get(side), f"{where}.latency_ms.{side}")
            for key in LATENCY_KEYS:
                require_number(summary.get(key), f"{where}.latency_ms.{side}.{key}",
                               minimum=0)
        if "clocks" in pair:
            validate_clock_block(pair["clocks"], f"{where}.clocks")
        if "energy" in pair:
            _validate_pair_energy(pair["energy"], f"{where}.energy")


def _blocks_per_side(value: object, where: str) -> int:
    """Check one figure's blocks (side -> figures above 0, at most MAX_RAW_SAMPLES, as many
    on every side) and return how many each side has."""
    blocks = require_dict(value, where)
    counts = set()
    for side in SIDES:
        values = require_list(blocks.get(side), f"{where}.{side}")
        if len(values) > MAX_RAW_SAMPLES:
            raise ProtocolError(f"{where}.{side} has {len(values)} blocks, "
                                f"over {MAX_RAW_SAMPLES}")
        for figure in values:
            if require_number(figure, f"{where}.{side}[]", minimum=0) <= 0:
                raise ProtocolError(f"{where}.{side}[] must be above 0")
        counts.add(len(values))
    if len(counts) != 1:
        raise ProtocolError(f"{where} has unequal numbers of blocks per side")
    return counts.pop()


def _validate_pair_energy(value: object, where: str) -> None:
    """A pair's energy pass: the sensor, and either why there is no figure or each side's
    block energies per inference (mJ, above 0), as many on every side."""
    energy = require_dict(value, where)
    sensor = require_dict(energy.get("sensor"), f"{where}.sensor")
    require_type(sensor.get("kind"), str, f"{where}.sensor.kind")
    if "error" in energy:
        require_type(energy["error"], str, f"{where}.error")
        return
    require_number(energy.get("block_seconds"), f"{where}.block_seconds", minimum=0)
    require_number(energy.get("seconds"), f"{where}.seconds", minimum=0)
    _blocks_per_side(energy.get("block_energy_mj"), f"{where}.block_energy_mj")
