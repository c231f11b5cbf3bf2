"""Whether a labgrid place's holder is alive: its beat on the place, its lease on the board.

labgrid's place locks never expire: a job SIGKILLed by the OOM killer or a CI timeout
kept its place locked for good.  So an edge job that holds a place beats (:class:`Beat`):
it rewrites the place's tag ``edge_beat`` every :data:`BEAT_SECONDS`.  A job waiting in
the queue watches the places its selector matches (:class:`DeadHolders`); one held by an
edge job whose beat has not changed for :data:`HOLDER_SILENCE_SECONDS` (by the waiting
job's own clock: no two machines' clocks are compared) *and* whose board's own lease is
over (read on the board, on its uptime clock: :mod:`toolkit.boards.lease`) is released
for its dead holder (``labgrid-client release --kick``), with the dead job's reservation,
which would keep the place allotted to it for another minute.  Both must hold: a live job
beats, and a job that lost the coordinator but still runs holds its board's lease.  A
board whose lease cannot be read keeps its place (fail closed); places held by anyone but
an edge job, and places marked bad (:mod:`toolkit.labgrid.health`), are never touched.

Example::

    beat = Beat()
    beat.send(session, "pi-05")                 # a holder, every BEAT_SECONDS
    dead = DeadHolders(slot, client_name(), HOLDER_SILENCE_SECONDS)
    for released in dead.free(session):         # a waiting job, every DEAD_CHECK_SECONDS
        print(released)                         # "released pi-05: its holder ... "
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

from toolkit.boards.board import open_board
from toolkit.boards.lease import read_lease
from toolkit.errors import EdgeError, InfrastructureError
from toolkit.labgrid.client import (
    Lost,
    NetworkService,
    Session,
    describe,
    is_edge_holder,
    matching_resources,
)
from toolkit.labgrid.health import is_bad
from toolkit.labgrid.selector import ScheduledTarget

log = logging.getLogger(__name__)

#: The place tag a job holding the place rewrites every :data:`BEAT_SECONDS`.
BEAT_TAG = "edge_beat"
BEAT_SECONDS = 10.0
#: A place's edge holder whose beat has not changed for this long is presumed dead, once
#: its board's lease is over too (several beats: a slow call or a loaded host is not death).
HOLDER_SILENCE_SECONDS = 45.0
#: How often a waiting job looks for places held by dead jobs.
DEAD_CHECK_SECONDS = 5.0


class Beat:
    """One holder's beat: a value of its own, and a count."""

    def __init__(self) -> None:
        self._id, self._count = secrets.token_hex(4), 0

    def send(self, session: Session, place: str) -> None:
        """Rewrite ``place``'s beat tag (a failed beat is only logged: waiting jobs allow
        several to fail before they look at the board's lease)."""
        self._count += 1
        try:
            session.set_tags(place, {BEAT_TAG: f"{self._id}_{self._count}"})
        except Lost as exc:
            log.debug("no beat on %s: %s", place, exc)
        except session.grpc.RpcError as exc:
            log.debug("no beat on %s: %s", place, describe(exc))


@dataclass(frozen=True)
class Released:
    """A place released for its dead holder."""

    place: str
    holder: str
    silent: float  # seconds its beat had not changed, as the releasing job saw it

    def __str__(self) -> str:
        return (f"released {self.place}: its holder {self.holder} stopped beating "
                f"{self.silent:.0f} s ago and the board's lease is over")


class DeadHolders:
    """What a waiting job saw of other holders' beats; releases the places of dead ones.

    ``name`` is the waiting job's own client name (its own places are never looked at).
    """

    def __init__(self, slot: ScheduledTarget, name: str, silence_seconds: float) -> None:
        self.slot, self.name, self.silence_seconds = slot, name, silence_seconds
        #: (place, holder, beat) -> when this job first saw that beat (its own clock).
        self._first_seen: dict[tuple[str, str, str], float] = {}

    def free(self, session: Session) -> list[Released]:
        """Release each place for the selector whose edge holder has been silent
        ``silence_seconds`` and whose board's lease is over."""
        now = time.monotonic()
        seen: dict[tuple[str, str, str], float] = {}
        released = []
        for place in session.all_places():
            tags = dict(place.tags)
            holder = place.acquired
            if (not holder or holder == self.name or not is_edge_holder(holder)
                    or is_bad(tags) or not self.slot.selector.matches(tags)):
                continue
            key = (place.name, holder, tags.get(BEAT_TAG, ""))
            since = seen[key] = self._first_seen.get(key, now)
            if now - since >= self.silence_seconds and self._release(session, key, now - since):
                released.append(Released(place.name, holder, now - since))
        self._first_seen = seen
        return released

    def _release(self, session: Session, key: tuple[str, str, str], silent: float) -> bool:
        """Release the place of ``key`` for its silent holder if its board's lease is over
        too and the holder has not beaten meanwhile."""
        name, holder, _ = key
        busy = self._board_in_use(session, name)
        if busy:
            log.info("labgrid place %s: its holder %s is silent for %.0f s, but %s; kept",
                     name, holder, silent, busy)
            return False
        try:
            current = session.place(name)
        except InfrastructureError:  # deleted meanwhile
            return False
        if (current.acquired, dict(current.tags).get(BEAT_TAG, "")) != key[1:]:
            return False
        try:
            session.set_tags(name, {BEAT_TAG: ""})
            session.release(name, holder)
            if current.reservation and any(r.token == current.reservation and r.owner == holder
                                           for r in session.reservations()):
                session.cancel(current.reservation)
        except session.grpc.RpcError as exc:
            log.warning("could not release labgrid place %s of the silent %s (%s)", name,
                        holder, describe(exc))
            return False
        return True

    def _board_in_use(self, session: Session, place: str) -> str:
        """Why ``place``'s board may still be in use ("" when its lease is over or free):
        a board whose lease cannot be read counts as in use."""
        services = matching_resources(session, place, "NetworkService")
        if len(services) != 1:
            return f"it has {len(services)} NetworkService resources"
        try:
            target = self.slot.target(place, NetworkService.from_params(place, services[0]))
            with open_board(target) as board:
                lease, _ = read_lease(board)
        except EdgeError as exc:
            return f"its board's lease cannot be read ({exc})"
        if lease is not None and lease.live:
            return f"its board's lease is held by {lease.owner}"
        return ""


__all__ = ["BEAT_SECONDS", "BEAT_TAG", "DEAD_CHECK_SECONDS", "HOLDER_SILENCE_SECONDS", "Beat",
           "DeadHolders", "Released"]
