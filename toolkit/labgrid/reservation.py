"""One job's reservation and labgrid place, kept through coordinator restarts: the machinery
under :func:`toolkit.labgrid.hold.run_scheduled` and :func:`~toolkit.labgrid.hold.hold_board`.

:class:`PlaceHold` waits in the coordinator's queue (reserve, poll, its queue position),
acquires the place it is allotted, beats while the job runs (:mod:`toolkit.labgrid.liveness`),
power-cycles or marks bad a board that stopped answering (:mod:`toolkit.labgrid.health`),
reconnects to a coordinator that went away and releases on every way out.  It lives apart
from :mod:`toolkit.labgrid.hold`, whose functions are what callers use, so that each reads
as one thing: the entry points there, the stateful reservation here.  See that module's
docstring for why a job keeps the board's lease under the place lock.

Example::

    hold = PlaceHold(slot, print, reconnect_seconds=30.0)
    try:
        held = hold.acquire(wait_seconds=600)
        run(held.target)
    finally:
        hold.release()
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from toolkit.boards.targets import Target
from toolkit.errors import BoardBusyError, InfrastructureError
from toolkit.labgrid import liveness
from toolkit.labgrid.client import (
    CALL_TIMEOUT_SECONDS,
    Lost,
    NetworkService,
    ResourceParams,
    Session,
    Unreachable,
    client_name,
    describe,
    matching_resources,
)
from toolkit.labgrid.health import (
    BAD,
    HEALTH_TAG,
    POWER_RESOURCE,
    bad_comment,
    bad_reason,
    board_silent,
    cycle_power,
    good_comment,
    is_bad,
    wait_answering,
)
from toolkit.labgrid.liveness import (
    BEAT_TAG,
    DEAD_CHECK_SECONDS,
    HOLDER_SILENCE_SECONDS,
    Beat,
    DeadHolders,
)
from toolkit.labgrid.selector import ScheduledTarget
from toolkit.run.cancel import cancel_requested

if TYPE_CHECKING:
    from labgrid.remote.generated.labgrid_coordinator_pb2 import Reservation

log = logging.getLogger(__name__)

#: How long a finished job tries to reach a lost coordinator to give its place back.
RELEASE_RECONNECT_SECONDS = 5.0
# labgrid's ReservationState values.
_WAITING, _ALLOCATED, _ACQUIRED, _EXPIRED, _INVALID = range(5)


@dataclass(frozen=True)
class SchedulerStatus:
    """What a job waiting for (or holding) a board is doing, for a progress display."""

    #: "queued", "acquired", "lease-busy" (the board's lease is held: waiting for it),
    #: "reconnecting", "lost" (while running), "reacquired", "not-reacquired";
    #: "released-dead" (a place whose holder died was released for the queue);
    #: a board that stopped answering: "power-cycling", "power-cycled", "marked-bad";
    #: "skipped-bad" (given a place marked bad: kept locked, another one asked for)
    state: str
    message: str
    place: str = ""
    position: int | None = None
    waiting: int | None = None
    #: With "acquired": the place, its reservation's creation and when it came.
    allocation: Allocation | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Allocation:
    """A held place: which, the reservation behind it, and when it came (for lab figures)."""

    place: str
    target: Target
    token: str
    priority: int
    created: float  # the reservation's creation, coordinator clock (epoch seconds)
    allocated: float  # when this process saw the allocation (epoch seconds)


class PlaceHold:
    """One job's reservation and place, kept through coordinator restarts."""

    def __init__(self, slot: ScheduledTarget, notify: Callable[[SchedulerStatus], None],
                 reconnect_seconds: float,
                 silence_seconds: float = HOLDER_SILENCE_SECONDS) -> None:
        self.slot, self.notify, self.reconnect_seconds = slot, notify, reconnect_seconds
        self.name = client_name()
        self._beat_sender = Beat()
        self._dead = DeadHolders(slot, self.name, silence_seconds)
        self.session: Session | None = None
        self.token = ""
        self.held: Allocation | None = None
        #: Every place this job acquired (an acquire whose answer was lost included):
        #: each is released with ``fromuser``, so only a lock still ours is freed.
        self.taken: list[str] = []
        #: Places marked bad that this job keeps locked, so that no reservation gets them:
        #: never released (``edge lab mark-good`` frees them).
        self.kept: set[str] = set()
        self._released = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- waiting ------------------------------------------------------------------------
    def acquire(self, wait_seconds: float) -> Allocation:
        deadline = time.monotonic() + wait_seconds
        try:
            self.session = Session.open(self.slot.coordinator, self.name, CALL_TIMEOUT_SECONDS)
        except Unreachable as exc:  # e.g. restarting: give it reconnect_seconds
            self._reconnect(exc.reason, "waiting")
        last: tuple[int, int] | None = None
        created = 0.0
        next_dead_check = 0.0
        while True:
            try:
                if not self.token:
                    created = self._reserve()
                res = self._poll()
                if res.state == _ALLOCATED:
                    place = next(iter(res.allocations.values()))
                    held = self._take(place, created)
                    if held is not None:
                        return held
                    continue
                if res.state in (_EXPIRED, _INVALID):  # e.g. its place was deleted
                    self.token = ""
                    continue
                position, waiting = self._position()
                if (position, waiting) != last:
                    last = (position, waiting)
                    self.notify(SchedulerStatus(
                        "queued", f"queue position {position} of {waiting} for "
                                  f"{self.slot.selector}", position=position, waiting=waiting))
                if time.monotonic() >= deadline:
                    raise BoardBusyError(f"no board for {self.slot.selector} within "
                                         f"{wait_seconds:g} s (queue position {position} of "
                                         f"{waiting} on {self.slot.coordinator})")
                assert self.session is not None
                if time.monotonic() >= next_dead_check:
                    next_dead_check = time.monotonic() + DEAD_CHECK_SECONDS
                    for released in self._dead.free(self.session):
                        self.notify(SchedulerStatus("released-dead", str(released),
                                                    place=released.place))
                self.session.changed.wait(1.0)
                self.session.changed.clear()
                if cancel_requested():
                    raise KeyboardInterrupt("cancelled while waiting for a board")
            except Lost as exc:
                self.token = ""  # a restarted coordinator forgot every reservation
                last = None
                self._reconnect(str(exc), "waiting")

    def _reserve(self) -> float:
        assert self.session is not None
        res = self.session.reserve(dict(self.slot.selector.tags), float(self.slot.priority))
        self.token = res.token
        return float(res.created)

    def _poll(self) -> Reservation:
        assert self.session is not None
        try:
            return self.session.poll(self.token)
        except self.session.grpc.RpcError as exc:  # not ours any more (expired, restart)
            log.info("reservation %s is gone (%s); reserving again", self.token, describe(exc))
            self.token = ""
            expired: Reservation = self.session.pb.Reservation(state=_EXPIRED)
            return expired

    def _position(self) -> tuple[int, int]:
        """Our place in the queue among waiting reservations that want the same boards."""
        assert self.session is not None
        ours = set(self.slot.selector.tags)
        rivals = []
        for res in self.session.reservations():
            if res.state != _WAITING or "main" not in res.filters:
                continue
            theirs = set(res.filters["main"].filter.items())
            if theirs <= ours or ours <= theirs:
                rivals.append(((-res.prio, res.created), res.token))
        rivals.sort()
        tokens = [token for _, token in rivals]
        position = tokens.index(self.token) + 1 if self.token in tokens else len(tokens) + 1
        return position, max(len(tokens), position)

    def _take(self, place: str, created: float) -> Allocation | None:
        """Acquire the allotted ``place``; None when someone took it first (queue again)."""
        assert self.session is not None
        try:
            self.session.acquire(place)
        except self.session.grpc.RpcError as exc:
            if exc.code() != self.session.grpc.StatusCode.FAILED_PRECONDITION:
                raise InfrastructureError(f"labgrid place {place} was allotted but could not "
                                          f"be acquired: {describe(exc)}") from None
            # Taken outside the queue meanwhile (labgrid-client acquire, or a job taking its
            # place back after a coordinator restart): reserve again.
            log.info("labgrid place %s was taken first (%s); reserving again", place,
                     describe(exc))
            with contextlib.suppress(Lost, self.session.grpc.RpcError):
                self.session.cancel(self.token)
            self.token = ""
            return None
        allocated = time.time()
        self.taken.append(place)
        found = self.session.place(place)
        if is_bad(dict(found.tags)):
            # Given again after a coordinator restart forgot its lock: lock it again.
            self.kept.add(place)
            with contextlib.suppress(Lost, self.session.grpc.RpcError):
                self.session.cancel(self.token)
            self.token = ""
            self.notify(SchedulerStatus(
                "skipped-bad", f"{place} is marked bad ({bad_reason(found.comment) or 'by edge'})"
                               f"; kept locked, asking for another place", place=place))
            return None
        target = self.slot.target(place, self._network_service(place))
        self.held = Allocation(place=place, target=target, token=self.token,
                               priority=self.slot.priority, created=created,
                               allocated=allocated)
        self._beat(place)
        self.notify(SchedulerStatus("acquired", f"acquired {place}", place=place,
                                    allocation=self.held))
        self._watcher = threading.Thread(target=self._watch, name=f"labgrid-{place}",
                                         daemon=True)
        self._watcher.start()
        return self.held

    def _network_service(self, place: str) -> NetworkService:
        """The SSH address of the place's board, from its (one) NetworkService resource.

        Waited for up to ``reconnect_seconds``: after a coordinator restart, its
        exporters come back later.
        """
        deadline = time.monotonic() + self.reconnect_seconds
        while True:
            found = self._resources(place, "NetworkService")
            if len(found) == 1:
                return NetworkService.from_params(place, found[0])
            assert self.session is not None
            if self.session.lost.is_set():
                raise Lost(self.session.error)
            if len(found) > 1 or time.monotonic() >= deadline:
                raise InfrastructureError(
                    f"labgrid place {place} has {len(found)} NetworkService resources; edge "
                    "needs exactly one (the board's SSH address; is its exporter running?)")
            self.session.changed.wait(0.5)
            self.session.changed.clear()

    def _resources(self, place: str, cls: str) -> list[ResourceParams]:
        """The parameters of the place's available resources of class ``cls``."""
        assert self.session is not None
        return matching_resources(self.session, place, cls)

    # -- a board that stopped answering ---------------------------------------------
    def recover(self, held: Allocation, failure: InfrastructureError, *, cycled: bool,
                boot_seconds: float, off_seconds: float) -> bool:
        """After ``failure``: True when the board answers again after a power cycle (run
        the job again); False when it answers anyway (``failure`` stands).  Else the place
        is marked bad and the error saying so is raised."""
        place = held.place
        silent = board_silent(held.target)
        if silent is None:
            return False
        if cycled:
            raise self._mark_bad(place, f"stopped answering again after a power cycle "
                                        f"({silent})") from failure
        try:
            ports = self._resources(place, POWER_RESOURCE)
        except Lost as lost:
            raise InfrastructureError(f"labgrid place {place} stopped answering ({silent}); "
                                      f"lost the coordinator before power-cycling it ({lost})",
                                      target=place) from failure
        if len(ports) != 1:
            why = ("no power control in labgrid (no NetworkPowerPort)" if not ports else
                   f"{len(ports)} NetworkPowerPorts (edge switches only one)")
            raise self._mark_bad(place, f"stopped answering ({silent}); {why}") from failure
        self.notify(SchedulerStatus("power-cycling", f"{place} stopped answering ({silent}); "
                                    "power-cycling it through labgrid", place=place))
        try:
            cycle_power(ports[0], place, off_seconds)
        except InfrastructureError as power:
            raise self._mark_bad(place, f"stopped answering ({silent}); {power}") from failure
        still = wait_answering(held.target, boot_seconds)
        if still is not None:
            raise self._mark_bad(place, f"still silent {boot_seconds:g} s after a power "
                                        f"cycle ({still})") from failure
        self.notify(SchedulerStatus("power-cycled", f"{place} answers again after a power "
                                    "cycle; running the job again", place=place))
        return True

    def _mark_bad(self, place: str, reason: str) -> InfrastructureError:
        """Tag the place bad with the reason in its comment, and keep its lock."""
        coordinator = self.slot.coordinator
        with self._lock:
            session = self.session
        assert session is not None  # a job ran: its place was acquired through a session
        try:
            comment = good_comment(session.place(place).comment)
            session.set_tags(place, {HEALTH_TAG: BAD, BEAT_TAG: ""})
            session.set_comment(place, bad_comment(reason, comment))
        except (Lost, InfrastructureError) as exc:
            return InfrastructureError(f"labgrid place {place} {reason}; could not mark it bad "
                                       f"on {coordinator} ({exc})", target=place)
        except session.grpc.RpcError as exc:
            return InfrastructureError(f"labgrid place {place} {reason}; could not mark it bad "
                                       f"on {coordinator} ({describe(exc)})", target=place)
        self.kept.add(place)
        self.notify(SchedulerStatus("marked-bad", f"{place} marked bad: {reason}", place=place))
        return InfrastructureError(f"labgrid place {place} {reason}: marked bad on {coordinator} "
                                   f"and kept locked so no job gets it (edge lab mark-good "
                                   f"{place} clears it)", target=place)

    # -- holding ------------------------------------------------------------------------
    def _watch(self) -> None:
        """While the job runs: beat; when the coordinator comes back, take the place again."""
        held = self.held
        assert held is not None
        next_beat = time.monotonic() + liveness.BEAT_SECONDS
        while not self._released.is_set():
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + liveness.BEAT_SECONDS
                self._beat(held.place)
            session = self.session
            if session is None or not session.lost.wait(0.2):
                continue
            if self._released.is_set():
                return
            self.notify(SchedulerStatus("lost", f"lost the coordinator while {held.place} "
                                        "runs; the board's lease keeps other jobs off it",
                                        place=held.place))
            self._reconnect(session.error, "running")
            if self._released.is_set():
                return
            with self._lock:
                current = self.session
                assert current is not None
                try:
                    current.acquire(held.place)
                    back = SchedulerStatus("reacquired", f"re-acquired {held.place} after the "
                                           "coordinator came back", place=held.place)
                except (Lost, current.grpc.RpcError) as exc:
                    back = SchedulerStatus("not-reacquired", f"could not re-acquire "
                                           f"{held.place} ({describe(exc)}); its lease still "
                                           "keeps other jobs off the board", place=held.place)
            self.notify(back)
            next_beat = 0.0

    def _beat(self, place: str) -> None:
        with self._lock:
            session = self.session
        if session is not None:
            self._beat_sender.send(session, place)

    def _reconnect(self, reason: str, doing: str) -> None:
        """A new session within ``reconnect_seconds``, else one line and exit 3."""
        old = self.session
        if old is not None:
            old.close()
        self.notify(SchedulerStatus("reconnecting", f"lost the labgrid coordinator "
                                    f"{self.slot.coordinator} ({reason}); reconnecting"))
        end = time.monotonic() + self.reconnect_seconds
        while True:
            if self._released.is_set():
                return
            if cancel_requested() and doing == "waiting":
                raise KeyboardInterrupt("cancelled while waiting for a board")
            try:
                with self._lock:
                    self.session = Session.open(self.slot.coordinator, self.name,
                                                 min(CALL_TIMEOUT_SECONDS, 2.0))
                return
            except Unreachable:
                if time.monotonic() >= end and doing == "waiting":
                    raise InfrastructureError(
                        f"labgrid coordinator {self.slot.coordinator} unreachable for "
                        f"{self.reconnect_seconds:g} s while waiting for a board "
                        f"{self.slot.selector} ({reason}); no job was started") from None
            time.sleep(0.5)

    # -- releasing ----------------------------------------------------------------------
    def release(self) -> None:
        """Cancel the reservation, then free the place (so the next in line gets it).

        A coordinator that went away is given ``RELEASE_RECONNECT_SECONDS`` to come back;
        one that restarted forgot both anyway.
        """
        self._released.set()
        if self._watcher is not None:
            self._watcher.join(5.0)
        with self._lock:
            session = self.session
        if session is None:
            return
        opened = [session]
        end = time.monotonic() + RELEASE_RECONNECT_SECONDS
        while True:
            try:
                if session.lost.is_set():
                    session = Session.open(self.slot.coordinator, self.name, 2.0)
                    opened.append(session)
                if self.token:
                    with contextlib.suppress(session.grpc.RpcError):  # forgot it: fine
                        session.cancel(self.token)
                for place in dict.fromkeys(self.taken):
                    if place not in self.kept:
                        self._release_place(place, session)
                break
            except (Lost, Unreachable) as exc:
                if time.monotonic() >= end:
                    why = exc.reason if isinstance(exc, Unreachable) else describe(exc)
                    for place in [p for p in dict.fromkeys(self.taken) if p not in self.kept]:
                        log.warning("could not give labgrid place %s back (%s); a coordinator "
                                    "restart frees it, or: labgrid-client -p %s release "
                                    "--kick", place, why, place)
                    break
                time.sleep(0.5)
        for each in opened:
            each.close()

    def _release_place(self, place: str, session: Session) -> None:
        """Release our own lock on ``place`` and clear our beat; a broken link is
        :class:`Lost` (retried)."""
        try:
            ours = session.place(place).acquired == self.name
        except InfrastructureError:  # the place was deleted: nothing to give back
            return
        try:
            if ours:
                session.set_tags(place, {BEAT_TAG: ""})
            # Our own lock only: after a restart the place may be someone else's.
            session.release(place, self.name)
        except session.grpc.RpcError as exc:
            log.warning("could not release labgrid place %s (%s)", place, describe(exc))


__all__ = ["RELEASE_RECONNECT_SECONDS", "Allocation", "PlaceHold", "SchedulerStatus"]
