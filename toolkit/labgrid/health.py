"""A labgrid board that stopped answering: power-cycle it once, else mark its place bad.

When a job on an allotted place fails with an infrastructure error, the board is asked
once more (an SSH login and ``true``): a board that answers failed for another reason
(disk full, a dropped link) and the error stands.  A board that does not answer is
power-cycled once through labgrid, if its place has a ``NetworkPowerPort`` (any of
labgrid's models: ``rest``, ``simplerest``, ``gude``...; labgrid's own
``NetworkPowerDriver`` switches it, as ``labgrid-client power cycle`` would), and the
job runs again once it answers SSH.  Otherwise (no power control, the cycle failed, the
board stays silent, or it stops answering again) the place is marked bad, as LAVA
marks a device Bad after a failed health check, instead of retrying forever.

The health state lives on the coordinator, so every controller and ``labgrid-client``
sees it: the place tag ``edge_health=bad`` (tags are saved in the coordinator's
``places.yaml``) and the reason at the front of the place's comment.  labgrid's
reservation filters only match tags a place has (a subset test, no negation), so a tag
alone cannot keep a selector's reservation off the place.  edge therefore keeps the
bad place's lock (labgrid's locks never expire): no reservation is given a locked
place.  A coordinator restart forgets locks but not tags, so a job given a place
tagged bad takes its lock again and asks for another place.  ``edge lab mark-good
PLACE`` clears the tag and the comment and frees the lock, once the board is fixed;
``edge doctor --targets tag:board=KIND`` shows each place's state and that command.

Example::

    reason = board_silent(target)            # None: the board answers
    cycle_power(entry["params"], "pi-02")    # labgrid's NetworkPowerDriver: off, wait, on
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from toolkit.boards.board import open_board
from toolkit.boards.targets import Target
from toolkit.errors import EdgeError, InfrastructureError, TargetError
from toolkit.labgrid.client import (
    Lost,
    NetworkService,
    ResourceParams,
    Session,
    client_name,
    coordinator_address,
    describe,
    is_edge_holder,
    matching_resources,
)
from toolkit.run.cancel import cancel_requested

if TYPE_CHECKING:
    from toolkit.labgrid.selector import ScheduledTarget

#: The place tag that holds edge's health state (labgrid tag keys: ``[a-z][a-z0-9_]+``).
HEALTH_TAG = "edge_health"
BAD = "bad"
#: The labgrid resource edge can switch without the exporter's host.
POWER_RESOURCE = "NetworkPowerPort"
#: How long a power-cycled board has to answer SSH again.
BOOT_SECONDS = 120.0
#: How long the power stays off (labgrid's NetworkPowerDriver default).
POWER_OFF_SECONDS = 2.0
_COMMENT_START = "edge: bad since "
_COMMENT_JOIN = " | "


def board_silent(target: Target) -> str | None:
    """Why the board does not answer an SSH login (one line), or None when it answers.

    Only an infrastructure error counts: a board that refuses our key or shows another
    host key does answer, and power will not fix that.
    """
    try:
        with open_board(target) as board:
            board.run("true", timeout=min(target.command_timeout, 30.0))
    except InfrastructureError as exc:
        return str(exc)
    except EdgeError:
        return None
    return None


def wait_answering(target: Target, seconds: float) -> str | None:
    """Ask the board until it answers (None) or ``seconds`` pass (the last reason)."""
    deadline = time.monotonic() + seconds
    while True:
        reason = board_silent(target)
        if reason is None or time.monotonic() >= deadline:
            return reason
        if cancel_requested():
            raise KeyboardInterrupt("cancelled while waiting for a board to boot")
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def cycle_power(params: ResourceParams, place: str,
                off_seconds: float = POWER_OFF_SECONDS) -> None:
    """Off, ``off_seconds``, on: labgrid's ``NetworkPowerDriver`` on the exported port.

    The driver runs on a bare labgrid ``Target`` holding the resource as the exporter
    announced it (its ``extra`` too, so a port that needs the exporter's SSH proxy gets
    it), without a labgrid environment or client session.  Raises
    :class:`InfrastructureError` (one line) when the switch does not do it.
    """
    from labgrid import Target as LabgridTarget
    from labgrid.driver.powerdriver import NetworkPowerDriver
    from labgrid.factory import target_factory

    args = {key: value for key, value in params.items() if key != "extra"}
    target = LabgridTarget(place)
    try:
        port = target_factory.make_resource(target, POWER_RESOURCE, POWER_RESOURCE, args)
        extra = params.get("extra")
        port.extra = dict(extra) if isinstance(extra, Mapping) else {}
        driver = NetworkPowerDriver(target, name=None, delay=float(off_seconds))
        target.activate(driver)
        driver.cycle()
    except Exception as exc:  # noqa: BLE001  (each power backend raises its library's errors)
        raise InfrastructureError(f"power cycle of {place} through its {POWER_RESOURCE} "
                                  f"({args.get('model')} {args.get('host')}) failed: "
                                  f"{type(exc).__name__}: {_first_line(exc)}") from None
    finally:
        target.deactivate_all_drivers()


def bad_comment(reason: str, old: str = "", now: dt.datetime | None = None) -> str:
    """The place comment that says why: edge's reason first, the lab's own comment kept."""
    when = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M UTC")
    ours = f"{_COMMENT_START}{when}: {' '.join(reason.split())}"
    return f"{ours}{_COMMENT_JOIN}{old}" if old else ours


def good_comment(comment: str) -> str:
    """The comment without edge's reason: what the lab wrote before, if anything."""
    if not comment.startswith(_COMMENT_START):
        return comment
    _, sep, old = comment.partition(_COMMENT_JOIN)
    return old if sep else ""


def bad_reason(comment: str) -> str:
    """edge's reason from a place comment ("" when the comment has none)."""
    if not comment.startswith(_COMMENT_START):
        return ""
    return comment.partition(_COMMENT_JOIN)[0].removeprefix("edge: ")


def is_bad(tags: Mapping[str, str]) -> bool:
    return tags.get(HEALTH_TAG) == BAD


@dataclass(frozen=True)
class PlaceHealth:
    """A place's edge health as the coordinator keeps it, and its board, for ``edge doctor``."""

    place: str
    bad: bool
    reason: str  # "bad since ...: why" when bad
    holder: str  # who holds its lock ("" when free)
    #: The place's board (its NetworkService's address), or None (``problem`` says why).
    target: Target | None = None
    problem: str = ""

    @property
    def detail(self) -> str:
        if not self.bad:
            return "good" + (f" (held by {self.holder})" if self.holder else "")
        return (f"{self.reason or 'marked bad'}; after fixing the board: "
                f"edge lab mark-good {self.place}")


def place_health(slot: ScheduledTarget, timeout: float = 10.0) -> list[PlaceHealth]:
    """Every place ``slot``'s selector matches, with its health and its board.

    Nothing is reserved or locked: this only reads what the coordinator knows.
    """
    session = Session.open(slot.coordinator, client_name(), timeout)
    try:
        places = [p for p in session.all_places() if slot.selector.matches(dict(p.tags))]
        if not places:
            raise TargetError(f"no labgrid place on {slot.coordinator} is tagged {slot.selector}")
        _wait_for_resources(session, [p.name for p in places], timeout)
        found = []
        for place in sorted(places, key=lambda p: p.name):
            services = matching_resources(session, place.name, "NetworkService")
            target, problem = None, ""
            if len(services) == 1:
                try:
                    target = slot.target(place.name,
                                         NetworkService.from_params(place.name, services[0]))
                except InfrastructureError as exc:
                    problem = str(exc)
            else:
                problem = (f"labgrid place {place.name} has {len(services)} available "
                           "NetworkService resources; edge needs exactly one")
            found.append(PlaceHealth(place=place.name, bad=is_bad(dict(place.tags)),
                                     reason=bad_reason(place.comment),
                                     holder=place.acquired, target=target, problem=problem))
        return found
    except Lost as exc:
        raise InfrastructureError(f"lost the labgrid coordinator {slot.coordinator} ({exc})") \
            from None
    finally:
        session.close()


def _wait_for_resources(session: Session, places: list[str], timeout: float) -> None:
    """Until each place has a NetworkService, or ``timeout`` (its exporter may be down)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(
            matching_resources(session, place, "NetworkService") for place in places):
        session.changed.wait(0.2)
        session.changed.clear()


def mark_good(coordinator: str, place: str, timeout: float = 10.0) -> str:
    """Clear edge's bad mark on ``place`` (tag, comment) and free the lock edge kept.

    Only a lock an edge job holds is freed (its owner ends ``.edgePID-N``); a lock someone
    else took stays.  Returns what was done, one line.
    """
    address = coordinator_address(coordinator)
    session = Session.open(address, client_name(), timeout)
    try:
        found = {p.name: p for p in session.all_places()}
        if place not in found:
            raise TargetError(f"no labgrid place {place} on {address} (places: "
                              f"{', '.join(sorted(found)) or 'none'})")
        current = found[place]
        if not is_bad(dict(current.tags)):
            return f"{place} is not marked bad on {address}: nothing to do"
        try:
            session.set_tags(place, {HEALTH_TAG: ""})
            session.set_comment(place, good_comment(current.comment))
            holder = current.acquired
            if holder and is_edge_holder(holder):
                session.release(place, holder)
                return f"{place} marked good on {address}; freed the lock edge kept ({holder})"
        except session.grpc.RpcError as exc:
            raise InfrastructureError(f"could not mark {place} good on {address}: "
                                      f"{describe(exc)}") from None
        kept = f"; its lock stays with {holder}" if holder else ""
        return f"{place} marked good on {address}{kept}"
    except Lost as exc:
        raise InfrastructureError(f"lost the labgrid coordinator {address} ({exc})") from None
    finally:
        session.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no message"


__all__ = ["BAD", "BOOT_SECONDS", "HEALTH_TAG", "POWER_OFF_SECONDS", "POWER_RESOURCE",
           "PlaceHealth", "bad_comment", "bad_reason", "board_silent", "cycle_power",
           "good_comment", "is_bad", "mark_good", "place_health", "wait_answering"]
