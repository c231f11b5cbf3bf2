"""Talking to a labgrid coordinator: one gRPC session, its places and resources.

labgrid's coordinator speaks gRPC; edge uses the stubs labgrid ships
(``labgrid.remote.generated``) rather than labgrid's ``ClientSession``, which mixes
that protocol with its command line (argparse arguments, prints).  A :class:`Session`
is one channel with the client stream the coordinator ties a caller's identity to;
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
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from toolkit.errors import InfrastructureError, UsageError

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


class Lost(Exception):
    """The connection to the coordinator broke (it stopped, restarted or is unreachable)."""


class Unreachable(InfrastructureError):
    """The coordinator could not be reached; ``reason`` is the short why."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"labgrid coordinator {address} is unreachable ({reason})")
        self.reason = reason


def _labgrid() -> tuple[Any, Any, Any]:
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
        self._out: queue.Queue[Any] = queue.Queue()
        self.resources: dict[tuple[str, str, str], dict[str, Any]] = {}
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

    def _requests(self) -> Iterator[Any]:
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

    def call(self, method: str, request: Any) -> Any:
        """One unary call; a broken link or a dead coordinator is :class:`Lost`."""
        if self.lost.is_set():
            raise Lost(self.error)
        try:
            return getattr(self._stub, method)(request, timeout=CALL_TIMEOUT_SECONDS)
        except self.grpc.RpcError as exc:
            code = exc.code()
            if code in (self.grpc.StatusCode.UNAVAILABLE,
                        self.grpc.StatusCode.DEADLINE_EXCEEDED,
                        self.grpc.StatusCode.CANCELLED):
                raise Lost(describe(exc)) from None
            raise

    def places(self) -> dict[str, dict[str, str]]:
        """Every place's tags."""
        answer = self.call("GetPlaces", self.pb.GetPlacesRequest())
        return {place.name: dict(place.tags) for place in answer.places}

    def place(self, name: str) -> Any:
        """The place ``name`` as the coordinator has it (tags, comment, who acquired it)."""
        for place in self.call("GetPlaces", self.pb.GetPlacesRequest()).places:
            if place.name == name:
                return place
        raise InfrastructureError(f"labgrid place {name} was deleted on {self.address}")

    def close(self) -> None:
        self._closing = True
        self._out.put(None)
        with contextlib.suppress(Exception):
            self._responses.cancel()
        self._channel.close()
        self._reader.join(2.0)


def matching_resources(session: Session, place: str, cls: str) -> list[dict[str, Any]]:
    """The parameters of ``place``'s available resources of class ``cls`` (by its matches)."""
    from labgrid.remote.common import Place

    matcher = Place.from_pb2(session.place(place))
    return [dict(entry["params"]) for (exporter, group, name), entry
            in list(session.resources.items())
            if entry.get("cls") == cls and entry.get("avail")
            and matcher.hasmatch((exporter, group, cls, name))]


def _labgrid_version() -> str:
    from labgrid.util import labgrid_version

    return str(labgrid_version())


__all__ = ["CALL_TIMEOUT_SECONDS", "DEFAULT_PORT", "Lost", "Session", "Unreachable",
           "client_name", "coordinator_address", "describe", "matching_resources"]
