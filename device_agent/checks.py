"""The one error of the protocol and the checks that raise it, one line naming the key.

Each check takes a decoded JSON value (``object``: nothing is known of it yet) and returns
it narrowed to what it was checked to be, so that code reading a document after a check
works with real types.

Example::

    board = require_dict(result.get("board"), "result.board")
    require_number(board.get("cpu_count"), "result.board.cpu_count", minimum=0)
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Tuple, cast


class ProtocolError(ValueError):
    """A job or result document does not follow the schema."""


def require_type(value: object, expected: type, where: str) -> None:
    if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
        raise ProtocolError(f"{where} must be a {expected.__name__}, got {type(value).__name__}")


def require_dict(value: object, where: str) -> Dict[str, object]:
    require_type(value, dict, where)
    return cast(Dict[str, object], value)  # a decoded JSON object's keys are text


def require_list(value: object, where: str) -> List[object]:
    require_type(value, list, where)
    return cast(List[object], value)


def require_text(value: object, where: str) -> str:
    require_type(value, str, where)
    return cast(str, value)


def require_texts(value: object, where: str) -> None:
    for index, text in enumerate(require_list(value, where)):
        require_type(text, str, f"{where}[{index}]")


def require_number(value: object, where: str, *, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"{where} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < minimum:
        raise ProtocolError(f"{where} must be a finite number >= {minimum}, got {value!r}")
    return value


def require_choice(value: object, choices: Tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise ProtocolError(f"{where} must be one of {', '.join(choices)}, got {value!r}")


def check_version(document: Mapping[str, object], where: str, version: int) -> None:
    found = document.get("schema_version")
    if found != version:
        raise ProtocolError(
            f"{where}.schema_version is {found!r}; this side speaks {version}")


#: The clocks (MHz) a cluster of a clock reading may carry.
CLUSTER_CLOCKS = ("cur_mhz", "min_mhz", "max_mhz", "cpuinfo_max_mhz")


def validate_clock_block(value: object, where: str) -> None:
    """The clock facts read before and after the runs (:mod:`device_agent.clocks`), as a
    measured variant and a measured pair carry them."""
    clocks = require_dict(value, where)
    for key in ("before", "after"):
        if key in clocks:
            _validate_clock_state(clocks[key], f"{where}.{key}")


def _validate_clock_state(value: object, where: str) -> None:
    """One reading of :func:`device_agent.clocks.clock_state`: text, CPU numbers, clocks."""
    state = require_dict(value, where)
    if "governor" in state:
        require_type(state["governor"], str, f"{where}.governor")
    for index, entry in enumerate(require_list(state.get("clusters", []), f"{where}.clusters")):
        at = f"{where}.clusters[{index}]"
        cluster = require_dict(entry, at)
        for cpu in require_list(cluster.get("cpus"), f"{at}.cpus"):
            require_number(cpu, f"{at}.cpus[]", minimum=0)
        if "governor" in cluster:
            require_type(cluster["governor"], str, f"{at}.governor")
        for key in CLUSTER_CLOCKS:
            if key in cluster:
                require_number(cluster[key], f"{at}.{key}", minimum=0)
    if "jetson" in state:
        jetson = require_dict(state["jetson"], f"{where}.jetson")
        for key in ("nvpmodel", "nvpmodel_source"):
            if key in jetson:
                require_type(jetson[key], str, f"{where}.jetson.{key}")
        if "jetson_clocks" in jetson:
            require_type(jetson["jetson_clocks"], bool, f"{where}.jetson.jetson_clocks")
