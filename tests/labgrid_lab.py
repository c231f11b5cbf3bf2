"""A labgrid lab on this machine: a real coordinator, an exporter, places with tags.

The coordinator and the exporter are labgrid's own programs (``labgrid-coordinator``,
``labgrid-exporter``), started as its own tests start them: the coordinator in a
working folder of its own on a free loopback port, the exporter with one
``NetworkService`` per board (and a ``NetworkPowerPort`` for boards on a
:class:`PowerSwitch`).  The exporter exits when its coordinator goes away
(labgrid leaves restarting it to systemd); :class:`Exporter` restarts it the same way.
Places are made through the coordinator's gRPC API, as ``labgrid-client create``,
``add-match`` and ``set-tags`` do, without a client start-up per command.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .lab import Sshd, free_port

BIN = Path(sys.executable).parent


class Coordinator:
    """``labgrid-coordinator`` in ``folder`` on a free loopback port; restartable in place."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        log = self.folder / "coordinator.log"
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / "labgrid-coordinator"), "--listen", self.address],
                cwd=self.folder, stdout=out, stderr=subprocess.STDOUT)
        start = log.stat().st_size if log.exists() else 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("labgrid-coordinator exited: " + log.read_text())
            if b"Coordinator ready" in log.read_bytes()[start:]:
                return
            time.sleep(0.05)
        raise RuntimeError("labgrid-coordinator did not get ready within 20 s")

    def kill(self) -> None:
        """SIGKILL, as a crash or a reboot of the lab server would end it."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self, down_seconds: float = 0.0) -> None:
        self.kill()
        time.sleep(down_seconds)
        self.start()

    def wait_saved(self, places: Mapping[str, Mapping[str, str]], timeout: float = 30) -> None:
        """Until ``places.yaml`` holds every place with its tags (the coordinator saves every
        15 s): only saved places come back after a restart."""
        import yaml

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                saved = yaml.safe_load((self.folder / "places.yaml").read_text()) or {}
            except (OSError, yaml.YAMLError):
                saved = {}
            if all(dict(saved.get(name, {}).get("tags") or {}) == dict(tags)
                   for name, tags in places.items()):
                return
            time.sleep(0.2)
        raise RuntimeError("the coordinator did not save its places within the timeout")


class PowerSwitch:
    """A network power switch on loopback that speaks labgrid's ``rest`` model.

    ``GET /relay/N/value`` answers ``1`` or ``0``, ``PUT`` with ``0`` or ``1`` switches port
    N.  Port N feeds a board: off kills its sshd (and every session, as a power cut does),
    on starts it again, unless the board is in ``dead`` (it stays silent, as a board that
    does not boot), and answers 500 for a port in ``broken``.  ``log`` holds
    ``(N, "off"|"on")`` in order.
    """

    def __init__(self, boards: Mapping[int, Sshd]) -> None:
        import http.server

        self.boards = dict(boards)
        self.dead: set[int] = set()
        self.broken: set[int] = set()
        self.log: list[tuple[int, str]] = []
        switch = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _index(self) -> int:
                return int(self.path.split("/")[2])

            def do_GET(self) -> None:
                board = switch.boards[self._index()]
                self._answer(b"1" if board.process is not None else b"0")

            def do_PUT(self) -> None:
                index = self._index()
                value = self.rfile.read(int(self.headers["Content-Length"])).strip()
                if index in switch.broken:
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                board = switch.boards[index]
                switch.log.append((index, "on" if value == b"1" else "off"))
                if value == b"0":
                    board.kill()
                elif board.process is None and index not in switch.dead:
                    board.start()
                self._answer(b"")

            def _answer(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/relay/{{index}}/value"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Exporter:
    """``labgrid-exporter`` with one NetworkService per board, restarted when it exits;
    boards in ``power`` (board -> port N of ``switch``) get a ``NetworkPowerPort`` too."""

    def __init__(self, folder: Path, coordinator: str, boards: Mapping[str, Sshd],
                 name: str = "lab-host", switch: PowerSwitch | None = None,
                 power: Mapping[str, int] | None = None) -> None:
        self.name, self.coordinator = name, coordinator
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "exports.yaml"
        power = power or {}
        self.config.write_text("".join(
            f"{board}:\n  NetworkService:\n    address: {sshd.address}\n"
            f"    username: {sshd.user}\n    port: {sshd.port}\n"
            + (f"  NetworkPowerPort:\n    model: rest\n    host: '{switch.url}'\n"
               f"    index: {power[board]}\n" if switch is not None and board in power else "")
            for board, sshd in boards.items()))
        self.log = folder / "exporter.log"
        self.restarts = 0
        self._stop = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self._start()
        self._keeper = threading.Thread(target=self._keep, daemon=True)
        self._keeper.start()

    def _start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / "labgrid-exporter"), "-c", self.coordinator, "-n", self.name,
                 "--hostname", "127.0.0.1", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT)

    def _keep(self) -> None:
        while not self._stop.wait(0.2):
            if self.process is not None and self.process.poll() is not None:
                self.restarts += 1
                time.sleep(0.5)  # systemd's RestartSec, shortened
                if not self._stop.is_set():
                    self._start()

    def stop(self) -> None:
        self._stop.set()
        self._keeper.join()
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)


def add_places(address: str, places: Mapping[str, Mapping[str, str]],
               exporter: str = "lab-host") -> None:
    """``create``, ``add-match EXPORTER/NAME/*`` and ``set-tags`` for each place."""
    import grpc
    from labgrid.remote.generated import labgrid_coordinator_pb2 as pb
    from labgrid.remote.generated import labgrid_coordinator_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.CoordinatorStub(channel)
        for name, tags in places.items():
            stub.AddPlace(pb.AddPlaceRequest(name=name), timeout=10)
            stub.AddPlaceMatch(pb.AddPlaceMatchRequest(placename=name,
                                                       pattern=f"{exporter}/{name}/*"),
                               timeout=10)
            stub.SetPlaceTags(pb.SetPlaceTagsRequest(placename=name, tags=dict(tags)),
                              timeout=10)


def acquired_places(address: str) -> dict[str, str]:
    """Place -> holder, as ``labgrid-client who`` would say."""
    import grpc
    from labgrid.remote.generated import labgrid_coordinator_pb2 as pb
    from labgrid.remote.generated import labgrid_coordinator_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        places = pb_grpc.CoordinatorStub(channel).GetPlaces(pb.GetPlacesRequest(),
                                                            timeout=10).places
    return {p.name: p.acquired for p in places if p.acquired}


def places(address: str) -> dict[str, dict[str, Any]]:
    """Place -> its tags, comment and holder, as ``labgrid-client show`` would say."""
    import grpc
    from labgrid.remote.generated import labgrid_coordinator_pb2 as pb
    from labgrid.remote.generated import labgrid_coordinator_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        found = pb_grpc.CoordinatorStub(channel).GetPlaces(pb.GetPlacesRequest(),
                                                           timeout=10).places
    return {p.name: {"tags": dict(p.tags), "comment": p.comment, "acquired": p.acquired}
            for p in found}


def set_comment(address: str, place: str, comment: str) -> None:
    """``labgrid-client -p PLACE set-comment COMMENT``."""
    import grpc
    from labgrid.remote.generated import labgrid_coordinator_pb2 as pb
    from labgrid.remote.generated import labgrid_coordinator_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        pb_grpc.CoordinatorStub(channel).SetPlaceComment(
            pb.SetPlaceCommentRequest(placename=place, comment=comment), timeout=10)


def reservations(address: str) -> list[str]:
    """``owner state`` of every reservation the coordinator keeps."""
    import grpc
    from labgrid.remote.generated import labgrid_coordinator_pb2 as pb
    from labgrid.remote.generated import labgrid_coordinator_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        found = pb_grpc.CoordinatorStub(channel).GetReservations(
            pb.GetReservationsRequest(), timeout=10).reservations
    return [f"{r.owner} {r.state}" for r in found]


def wait_for_resources(address: str, boards: int, timeout: float = 30) -> None:
    """Until the exporter has announced ``boards`` NetworkServices to the coordinator."""
    out = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([str(BIN / "labgrid-client"), "-x", address, "resources"],
                             capture_output=True, text=True, timeout=30, check=False).stdout
        if out.count("NetworkService") >= boards:
            return
        time.sleep(0.3)
    raise RuntimeError(f"the exporter announced only: {out!r}")


def shared_kind(folder: Path, kind: str, boards: Mapping[str, Sshd], work_root: Path,
                **extra: object) -> Path:
    """``folder/KIND.toml``: one client key and one known_hosts file for every board, as a
    lab keeps them; the address of each board comes from its place's NetworkService."""
    from .lab import _toml, keygen

    folder.mkdir(parents=True, exist_ok=True)
    key = folder / f"{kind}_ed25519"
    if not key.exists():
        keygen(key)
    known = folder / f"{kind}_known_hosts"
    known.write_text("".join(sshd.known_hosts.read_text() for sshd in boards.values()))
    for sshd in boards.values():
        sshd.authorize(Path(f"{key}.pub"))
    fields: dict[str, object] = {
        "transport": "ssh", "host": "set-by-the-place", "identity": str(key),
        "known_hosts": str(known), "python": sys.executable,
        "work_dir": str(work_root / "work"), "connect_timeout": 5.0,
        "command_timeout": 30.0, "retries": 0, **extra}
    path = folder / f"{kind}.toml"
    path.write_text("".join(f"{key_} = {_toml(value)}\n" for key_, value in fields.items()))
    return path


@dataclass(frozen=True)
class RunningLab:
    coordinator: Coordinator
    exporter: Exporter
    boards: dict[str, Sshd]
    targets_dir: Path
    switch: PowerSwitch | None = None


@contextlib.contextmanager
def running_lab(root: Path, places: Mapping[str, Mapping[str, str]],
                power: Mapping[str, int] | None = None) -> Iterator[RunningLab]:
    """A loopback sshd board per place, the coordinator, the exporter (and a power switch
    for the boards in ``power``), the places with their tags, and one target file per board
    kind (each place's ``board`` tag) in ``root/targets``; everything stopped afterwards."""
    boards = {name: Sshd.create(root / name) for name in places}
    switch = (PowerSwitch({index: boards[name] for name, index in power.items()})
              if power else None)
    coordinator = Coordinator(root / "coordinator")
    exporter = Exporter(root / "exporter", coordinator.address, boards, switch=switch,
                        power=power)
    try:
        add_places(coordinator.address, places)
        wait_for_resources(coordinator.address, len(places))
        for kind in dict.fromkeys(tags["board"] for tags in places.values()):
            shared_kind(root / "targets", kind,
                        {n: b for n, b in boards.items() if places[n]["board"] == kind}, root)
        yield RunningLab(coordinator, exporter, boards, root / "targets", switch)
    finally:
        exporter.stop()
        coordinator.kill()
        if switch is not None:
            switch.stop()
        for board in boards.values():
            board.kill()


def lease_job(target: object, hold_seconds: float) -> dict[str, object]:
    """A light job that still takes the board's edge lease: ``sleep`` on the board under it.

    The start and end are taken inside the lease, on the board's clock (this machine's).
    """
    from toolkit.boards.board import open_board
    from toolkit.boards.lease import board_lock
    from toolkit.boards.targets import Target

    assert isinstance(target, Target)
    with open_board(target) as board, board_lock(board):
        answer = board.run(f'date +%s.%N; echo "$SSH_CONNECTION"; sleep {hold_seconds}; '
                           "date +%s.%N")
    start, connection, end = answer.stdout.decode().split("\n")[:3]
    return {"place": target.name, "start": float(start), "end": float(end),
            "server_port": int(connection.split()[3])}


def controller(coordinator: str, targets_dir: str, selector: str, priority: int, jobs: int,
               parallel: int, hold_seconds: float, name: str, out: str) -> None:
    """One controller process: ``jobs`` jobs through the scheduler, ``parallel`` at a time;
    one JSON line per job (place, times, queue positions, what happened) into ``out``."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    from toolkit.labgrid.hold import SchedulerStatus, run_scheduled
    from toolkit.labgrid.selector import ScheduledTarget

    slot = ScheduledTarget.resolve(selector, coordinator=coordinator, priority=priority,
                                   targets_dir=targets_dir)
    lock = threading.Lock()

    def one(index: int) -> None:
        statuses: list[str] = []
        states: list[str] = []
        record: dict[str, object] = {"controller": name, "job": f"{name}-{index}",
                                     "priority": priority, "asked": time.time()}

        def status(update: SchedulerStatus) -> None:
            statuses.append(str(update))
            states.append(update.state)
            if update.allocation is not None:  # the last allocation is the one that ran
                record.update(created=update.allocation.created,
                              allocated=update.allocation.allocated)

        try:
            record.update(run_scheduled(slot, lambda target: lease_job(target, hold_seconds),
                                        on_status=status, wait_seconds=300))
            record["done"] = True
        except Exception as exc:  # noqa: BLE001  (recorded: the figures count failed jobs)
            record.update(done=False, error=f"{type(exc).__name__}: {exc}")
        record.update(statuses=statuses, states=states)
        with lock, open(out, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(one, range(jobs)))


def overlaps(records: list[dict[str, Any]]) -> int:
    """Pairs of jobs whose time under one board's lease intersected."""
    count = 0
    done = [r for r in records if r.get("done")]
    for index, first in enumerate(done):
        for second in done[index + 1:]:
            if first["place"] == second["place"] and first["start"] < second["end"] and \
                    second["start"] < first["end"]:
                count += 1
    return count


def order_inversions(records: list[dict[str, Any]], slack: float = 0.3) -> int:
    """Jobs given a board while one ranked before them (higher priority, else older
    reservation) was already waiting for the same boards: labgrid's order broken."""
    done = [r for r in records if r.get("done")]
    count = 0
    for got in done:
        for other in done:
            waiting = (other["created"] < got["allocated"] - slack
                       and other["allocated"] > got["allocated"] + slack)
            ahead = (-other["priority"], other["created"]) < (-got["priority"], got["created"])
            if waiting and ahead:
                count += 1
    return count


if __name__ == "__main__":
    if sys.argv[1] == "controller":
        coordinator_, targets_dir_, selector_, priority_, jobs_, parallel_, hold_, name_, out_ = \
            sys.argv[2:]
        controller(coordinator_, targets_dir_, selector_, int(priority_), int(jobs_),
                   int(parallel_), float(hold_), name_, out_)
