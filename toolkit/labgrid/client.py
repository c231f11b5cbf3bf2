"""Talking to a labgrid coordinator: one gRPC session, its places and resources.

labgrid's coordinator speaks gRPC; edge uses the stubs labgrid ships
(``labgrid.remote.generated``) rather than labgrid's ``ClientSession``, which mixes
that protocol with its command line (argparse arguments, prints).  A :class:`Session`
is one channel with the client stream the coordinator ties a caller's identity to,
and one typed method per call edge makes (places, tags, locks, reservations);
:func:`client_name` gives each job an identity of its own.  A broken link is
:class:`Lost`, a coordinator that cannot be reached :class:`Unreachable`.

labgrid and grpc are imported when a session is opened, not with this module:
labgrid is an optional extra (``pip install 'edge[labgrid]'``).

Example::

    session = Session.open(coordinator_address("lab:20408"), client_name(), 10.0)
    try:
        print(session.places())   # {"pi-01": {"board": "rpi4"}, ...}
    finally:
        session.close()
"""

from __future__ import annotations

import contextlib
import getpass
import itertools
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, cast

from toolkit.errors import InfrastructureError, UsageError

if TYPE_CHECKING:  # labgrid is an optional extra; its messages name the types only
    from labgrid.remote.generated.labgrid_coordinator_pb2 import (
        ClientInMessage,
        CreateReservationResponse,
        GetPlacesResponse,
        GetReservationsResponse,
        Place,
        PollReservationResponse,
        Reservation,
    )

#: labgrid's default coordinator port, taken when an address gives none.
DEFAULT_PORT = 20408
#: How long one call to the coordinator may take.
CALL_TIMEOUT_SECONDS = 10.0


def coordinator_address(address: str) -> str:
    """``HOST[:PORT]`` checked, with labgrid's default port added when none is given."""
    text = address.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(DEFAULT_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or any(
            c.isspace() for c in text):
        raise UsageError(f"coordinator {address!r} is not HOST:PORT (e.g. lab-server:20408)")
    return f"{host}:{port}"


_holds = itertools.count(1)


def client_name() -> str:
    """``host/user.edgePID-N``: labgrid's ``host/user`` owner, one per job, so that the
    coordinator tells a process's jobs apart: a place reserved for one cannot be taken by
    another, and a release after a coordinator restart frees only the job's own lock."""
    return f"{socket.gethostname()}/{getpass.getuser()}.edge{os.getpid()}-{next(_holds)}"


_EDGE_HOLDER = re.compile(r"\.edge\d+-\d+$")


def is_edge_holder(name: str) -> bool:
    """Whether a place's holder is an edge job (its name is a :func:`client_name`)."""
    return bool(_EDGE_HOLDER.search(name))


#: What a resource's parameters hold, as the exporter announced them.
ResourceParams = Mapping[str, object]


@dataclass(frozen=True)
class NetworkService:
    """A board's SSH address, from its place's ``NetworkService`` resource."""

    address: str
    port: int = 22
    username: str = ""

    @classmethod
    def from_params(cls, place: str, params: ResourceParams) -> NetworkService:
        """Checked: an exporter's config is a file someone wrote."""
        address, port, user = params.get("address"), params.get("port"), params.get("username")
        if not isinstance(address, str) or not address:
            raise InfrastructureError(f"labgrid place {place}: its NetworkService has no "
                                      "address", target=place)
        if port in (None, "", 0):
            port = 22
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise InfrastructureError(f"labgrid place {place}: its NetworkService port "
                                      f"{port!r} is not a port number", target=place)
        if user is not None and not isinstance(user, str):
            raise InfrastructureError(f"labgrid place {place}: its NetworkService username "
                                      f"{user!r} is not a name", target=place)
        return cls(address=address, port=port, username=user or "")


class Lost(Exception):
    """The connection to the coordinator broke (it stopped, restarted or is unreachable)."""


class Unreachable(InfrastructureError):
    """The coordinator could not be reached; ``reason`` is the short why."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"labgrid coordinator {address} is unreachable ({reason})")
        self.reason = reason


def _labgrid() -> tuple[ModuleType, ModuleType, ModuleType]:
    try:
        import grpc
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb
        from labgrid.remote.generated import labgrid_coordinator_pb2_grpc as pb_grpc
    except ImportError:
        raise UsageError("a labgrid coordinator needs labgrid: pip install 'edge[labgrid]'") \
            from None
    return grpc, pb, pb_grpc


def describe(exc: Exception) -> str:
    """One short line for a gRPC failure: 'connection refused', 'deadline exceeded'..."""
    details = str(getattr(exc, "details", lambda: "")() or exc)
    for known in ("Connection refused", "Deadline Exceeded", "Socket closed",
                  "Connection reset", "No route to host", "Name or service not known"):
        if known.lower() in details.lower():
            return known.lower()
    return details.splitlines()[0][:120] if details else type(exc).__name__


class Session:
    """One gRPC channel with the client stream labgrid ties a caller's identity to.

    The coordinator knows a client by the stream's peer: reservations and locks
    can only be asked for on a channel whose stream said who it is.  The stream also
    brings every resource (the boards' NetworkService addresses) and place change.

    ``pb`` is labgrid's coordinator protobuf module (to build requests) and ``grpc``
    the grpc module (``grpc.RpcError``, ``grpc.StatusCode``), imported on first use.
    """

    def __init__(self, address: str, name: str) -> None:
        grpc, pb, pb_grpc = _labgrid()
        self.address, self.name, self.pb, self.grpc = address, name, pb, grpc
        # labgrid's own client keepalive: a dead coordinator is noticed within seconds.
        # A subchannel of its own: gRPC shares one connection between a process's channels
        # to one address, and the coordinator knows a client by its connection.
        self._channel = grpc.insecure_channel(address, options=[
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.keepalive_time_ms", 7500), ("grpc.keepalive_timeout_ms", 10000),
            ("grpc.http2.ping_timeout_ms", 10000), ("grpc.http2.max_pings_without_data", 0)])
        self._stub = pb_grpc.CoordinatorStub(self._channel)
        self._out: queue.Queue[ClientInMessage | None] = queue.Queue()
        #: (exporter, group, resource name) -> what the coordinator says of the resource:
        #: its ``cls``, ``params`` (:data:`ResourceParams`), ``avail``...
        self.resources: dict[tuple[str, str, str], dict[str, object]] = {}
        self.changed = threading.Event()
        self.lost = threading.Event()
        self.error = ""
        self._synced = threading.Event()
        self._closing = False
        self._responses = self._stub.ClientStream(self._requests())
        self._reader = threading.Thread(target=self._read, name="labgrid-stream", daemon=True)
        self._reader.start()

    @classmethod
    def open(cls, address: str, name: str, timeout: float) -> Session:
        """Connected and introduced, or :class:`InfrastructureError` in one line."""
        session = cls(address, name)
        pb = session.pb
        for message in (pb.ClientInMessage(startup=pb.StartupDone(version=_labgrid_version(),
                                                                  name=name)),
                        pb.ClientInMessage(subscribe=pb.Subscribe(all_places=True)),
                        pb.ClientInMessage(subscribe=pb.Subscribe(all_resources=True)),
                        pb.ClientInMessage(sync=pb.Sync(id=1))):
            session._out.put(message)
        deadline = time.monotonic() + timeout
        while not session._synced.is_set():
            if session.lost.is_set() or time.monotonic() > deadline:
                reason = session.error or f"no answer within {timeout:g} s"
                session.close()
                raise Unreachable(address, reason)
            session._synced.wait(0.05)
        return session

    def _requests(self) -> Iterator[ClientInMessage]:
        while True:
            message = self._out.get()
            if message is None:
                return
            yield message

    def _read(self) -> None:
        from labgrid.remote.common import ResourceEntry

        try:
            for message in self._responses:
                for update in message.updates:
                    kind = update.WhichOneof("kind")
                    if kind == "resource":
                        path = update.resource.path
                        self.resources[(path.exporter_name, path.group_name,
                                        path.resource_name)] = \
                            ResourceEntry.data_from_pb2(update.resource)
                    elif kind == "del_resource":
                        path = update.del_resource
                        self.resources.pop((path.exporter_name, path.group_name,
                                            path.resource_name), None)
                if message.HasField("sync"):
                    self._synced.set()
                self.changed.set()
        except self.grpc.RpcError as exc:
            self.error = describe(exc)
        finally:
            if not self._closing:
                self.error = self.error or "the coordinator closed the connection"
            self.lost.set()
            self.changed.set()

    def _call(self, method: str, **fields: object) -> object:
        """One unary call (``method``'s request made of ``fields``); a broken link or a dead
        coordinator is :class:`Lost`, any other refusal ``grpc.RpcError``."""
        if self.lost.is_set():
            raise Lost(self.error)
        request = getattr(self.pb, f"{method}Request")(**fields)
        try:
            answer: object = getattr(self._stub, method)(request,
                                                         timeout=CALL_TIMEOUT_SECONDS)
        except self.grpc.RpcError as exc:
            code = exc.code()
            if code in (self.grpc.StatusCode.UNAVAILABLE,
                        self.grpc.StatusCode.DEADLINE_EXCEEDED,
                        self.grpc.StatusCode.CANCELLED):
                raise Lost(describe(exc)) from None
            raise
        return answer

    # -- places -------------------------------------------------------------------------
    def all_places(self) -> list[Place]:
        """Every place as the coordinator has it (tags, comment, holder, reservation)."""
        return list(cast("GetPlacesResponse", self._call("GetPlaces")).places)

    def places(self) -> dict[str, dict[str, str]]:
        """Every place's tags."""
        return {place.name: dict(place.tags) for place in self.all_places()}

    def place(self, name: str) -> Place:
        """The place ``name`` as the coordinator has it (tags, comment, who acquired it)."""
        for place in self.all_places():
            if place.name == name:
                return place
        raise InfrastructureError(f"labgrid place {name} was deleted on {self.address}")

    def acquire(self, place: str) -> None:
        """Lock ``place`` for this session's name (``labgrid-client acquire``)."""
        self._call("AcquirePlace", placename=place)

    def release(self, place: str, holder: str) -> None:
        """Free ``place`` if ``holder`` holds it (``labgrid-client release``; with another
        holder's name, ``release --kick``); a place someone else holds stays locked."""
        self._call("ReleasePlace", placename=place, fromuser=holder)

    def set_tags(self, place: str, tags: Mapping[str, str]) -> None:
        """Set (a value) or remove (``""``) each of ``tags`` on ``place``; others stay."""
        self._call("SetPlaceTags", placename=place, tags=dict(tags))

    def set_comment(self, place: str, comment: str) -> None:
        self._call("SetPlaceComment", placename=place, comment=comment)

    # -- reservations -------------------------------------------------------------------
    def reserve(self, tags: Mapping[str, str], priority: float) -> Reservation:
        """A reservation for a place whose tags include ``tags`` (``reserve --wait``)."""
        answer = self._call("CreateReservation", filters={
            "main": self.pb.Reservation.Filter(filter=dict(tags))}, prio=priority)
        return cast("CreateReservationResponse", answer).reservation

    def poll(self, token: str) -> Reservation:
        """The reservation ``token`` now (asking keeps a waiting one from expiring)."""
        return cast("PollReservationResponse",
                    self._call("PollReservation", token=token)).reservation

    def cancel(self, token: str) -> None:
        self._call("CancelReservation", token=token)

    def reservations(self) -> list[Reservation]:
        """Every reservation the coordinator keeps."""
        return list(cast("GetReservationsResponse", self._call("GetReservations")).reservations)

    def close(self) -> None:
        self._closing = True
        self._out.put(None)
        with contextlib.suppress(Exception):
            self._responses.cancel()
        self._channel.close()
        self._reader.join(2.0)


def matching_resources(session: Session, place: str, cls: str) -> list[ResourceParams]:
    """The parameters of ``place``'s available resources of class ``cls`` (by its matches)."""
    from labgrid.remote.common import Place as PlaceMatcher

    matcher = PlaceMatcher.from_pb2(session.place(place))
    found: list[ResourceParams] = []
    for (exporter, group, name), entry in list(session.resources.items()):
        params = entry.get("params")
        if (entry.get("cls") == cls and entry.get("avail") and isinstance(params, Mapping)
                and matcher.hasmatch((exporter, group, cls, name))):
            found.append(dict(params))
    return found


def _labgrid_version() -> str:
    from labgrid.util import labgrid_version

    return str(labgrid_version())


__all__ = ["CALL_TIMEOUT_SECONDS", "DEFAULT_PORT", "Lost", "NetworkService", "ResourceParams",
           "Session", "Unreachable", "client_name", "coordinator_address", "describe",
           "is_edge_holder", "matching_resources"]
