"""Which boards a job may get: ``tag:board=KIND[+KEY=VALUE]`` and the kind's settings.

A board entry ``tag:board=rpi4`` (a :class:`Selector`) asks the coordinator for any
place whose tags include ``board=rpi4``; the place's ``NetworkService`` resource gives
the SSH address (host, port, username), and the board kind's target file
(``targets/rpi4.toml``) gives everything else (Python, runtime, threads, identity,
known_hosts...).  A :class:`ScheduledTarget` is checked when it is resolved, before any
work; :mod:`toolkit.labgrid.hold` reserves a place for it.

Example::

    slot = ScheduledTarget.resolve("tag:board=rpi4+pool=ci", coordinator="lab:20408")
    slot.selector.matches({"board": "rpi4", "pool": "ci", "room": "2"})   # True
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.boards.targets import (
    Target,
    check_name,
    read_target_file,
    target_file,
    target_from_mapping,
)
from toolkit.errors import TargetError, UsageError
from toolkit.labgrid.client import NetworkService, coordinator_address

#: The tag whose value names the board kind (its target file).
KIND_TAG = "board"
_TAG_KEY = re.compile(r"^[a-z][a-z0-9_]+$")
_TAG_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_selector(spec: str) -> bool:
    """``tag:board=rpi4`` (a coordinator's place tags) rather than ``tag:rpi4`` (a lab tag)."""
    return spec.startswith("tag:") and "=" in spec


@dataclass(frozen=True)
class Selector:
    """Place tags a board must have: ``tag:board=rpi4+pool=ci`` -> board=rpi4, pool=ci."""

    tags: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, spec: str) -> Selector:
        body = spec.removeprefix("tag:")
        pairs: dict[str, str] = {}
        for part in body.split("+"):
            key, sep, value = part.partition("=")
            if not sep or not _TAG_KEY.match(key) or not _TAG_VALUE.match(value):
                raise TargetError(f"board selector {spec!r} is not tag:KEY=VALUE[+KEY=VALUE] "
                                  f"(e.g. tag:{KIND_TAG}=rpi4)")
            pairs[key] = value
        if KIND_TAG not in pairs:
            raise TargetError(f"board selector {spec!r} names no {KIND_TAG}=KIND: the kind "
                              f"names the target file the board's settings come from "
                              f"(e.g. tag:{KIND_TAG}=rpi4 for targets/rpi4.toml)")
        return cls(tuple(sorted(pairs.items())))

    @property
    def kind(self) -> str:
        return dict(self.tags)[KIND_TAG]

    def __str__(self) -> str:
        return "+".join(f"{key}={value}" for key, value in self.tags)

    def matches(self, tags: Mapping[str, str]) -> bool:
        return all(tags.get(key) == value for key, value in self.tags)


@dataclass(frozen=True, kw_only=True)
class ScheduledTarget:
    """A board the coordinator chooses: a selector, its kind's settings, a priority.

    ``name`` is the entry as the user wrote it; the results of a job are named by
    the place that ran it.
    """

    name: str
    selector: Selector
    coordinator: str
    priority: int = 0
    settings: Mapping[str, Any] = field(default_factory=dict)
    source: Path | None = None

    @classmethod
    def resolve(cls, spec: str, *, coordinator: str | None, priority: int = 0,
                targets_dir: str | Path | None = None) -> ScheduledTarget:
        """Check the selector and read its kind's target file now, before any work."""
        selector = Selector.parse(spec)
        if not coordinator:
            raise UsageError(f"{spec} is a labgrid place selector: give --coordinator "
                             "HOST:PORT (or coordinator = \"HOST:PORT\" in lab.toml)")
        path = target_file(selector.kind, targets_dir)
        settings = read_target_file(selector.kind, path)
        # Validated once with a stand-in address: a bad key fails here, not on a board.
        target_from_mapping(selector.kind, {**settings, "transport": "ssh", "host": "x"}, path)
        return cls(name=spec, selector=selector, coordinator=coordinator_address(coordinator),
                   priority=priority, settings=settings, source=path)

    def target(self, place: str, service: NetworkService) -> Target:
        """The place's board: the kind's settings with the NetworkService's address."""
        check_name(place, "labgrid place name")
        address: dict[str, object] = {"transport": "ssh", "host": service.address,
                                      "port": service.port}
        if service.username:
            address["user"] = service.username
        return target_from_mapping(place, {**self.settings, **address},
                                   self.source or Path(f"{self.selector.kind}.toml"))


__all__ = ["KIND_TAG", "ScheduledTarget", "Selector", "is_selector"]
