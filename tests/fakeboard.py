"""A board in this process for unit tests: the local board on a folder of the test's, with
faults a test scripts (in the spirit of httpx's ``MockTransport``).

The host logic (the job runner, the lease, uploads, the Python probe, ``edge doctor``,
``edge lab status``) talks to the :class:`~toolkit.boards.board.Board` interface only.  A
:class:`FakeBoard` runs every command it was not told about for real, ``sh -c`` in its
folder (a :class:`~toolkit.boards.board.LocalBoard` underneath), so a lease, an upload or
the agent behave as on a board; a scripted command answers as told instead::

    board = FakeBoard(fake_target(tmp_path, "lab"), tmp_path / "board")
    board.script("importlib import metadata", stdout=b"...", exit_status=1)  # the probe
    board.script("", error=HostKeyError("..."))   # every command: a refused host key
    board.fail_puts(InfrastructureError("..."))   # uploads fail
    board.drop()                                  # the link is gone, for good
    mount(monkeypatch, board)   # open_board() gives this board for its target's name

The board is the machine's own (one lease folder per identity, under ``$EDGE_LEASE_ROOT``)
unless ``identity`` names another.  Each ``open_board`` (a retry, the job after the check)
is a session of its own to the same board: its script, faults and log are the board's, so a
dropped board stays dropped.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from toolkit.boards import board as boards
from toolkit.boards.board import Board, LocalBoard
from toolkit.boards.ssh import Result
from toolkit.boards.targets import Target, load_target
from toolkit.errors import EdgeError, InfrastructureError

from .lab import _toml


@dataclass
class _Answer:
    fragment: str
    result: tuple[int, bytes, bytes]
    error: EdgeError | None
    times: int | None  # answers left; None: every time


@dataclass
class _Board:
    """What every session to one fake board shares: its script, faults and log."""

    answers: list[_Answer] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    puts: list[str] = field(default_factory=list)
    put_error: EdgeError | None = None
    dropped: bool = False


class FakeBoard(LocalBoard):
    """The Board protocol in this process, on ``home``, with scripted answers and faults."""

    def __init__(self, target: Target, home: Path, *, identity: str | None = None) -> None:
        super().__init__(target, home=home)
        self.other_identity = identity
        self.shared = _Board()

    def session(self) -> FakeBoard:
        """Another session to this board, as ``open_board`` gives one: the same script,
        faults and log; open and closed on its own."""
        other = copy.copy(self)
        other.close()
        return other

    @property
    def commands(self) -> list[str]:
        """Every command asked of the board (by any session), in order."""
        return self.shared.commands

    @property
    def puts(self) -> list[str]:
        """Every path an upload wrote to, or tried to."""
        return self.shared.puts

    def script(self, fragment: str, *, stdout: bytes = b"", stderr: bytes = b"",
               exit_status: int = 0, error: EdgeError | None = None,
               times: int | None = None) -> None:
        """Commands containing ``fragment`` ("": every command) answer this, or raise
        ``error``, instead of running; only the next ``times`` of them when given."""
        self.shared.answers.append(_Answer(fragment, (exit_status, stdout, stderr), error,
                                           times))

    def fail_puts(self, error: EdgeError) -> None:
        """Every upload from now raises ``error`` (nothing is written)."""
        self.shared.put_error = error

    def drop(self) -> None:
        """The link is gone, for every session: each command and upload fails as on a dead
        SSH link."""
        self.shared.dropped = True

    @property
    def is_open(self) -> bool:
        return super().is_open and not self.shared.dropped

    def identity(self) -> str:
        return self.other_identity or super().identity()

    def run(self, command: str, *, timeout: float | None = None) -> Result:
        self.commands.append(command)
        self._link()
        for answer in self.shared.answers:
            if answer.fragment in command and answer.times != 0:
                if answer.times is not None:
                    answer.times -= 1
                if answer.error is not None:
                    raise answer.error
                status, out, err = answer.result
                return Result(command=command, exit_status=status, stdout=out, stderr=err)
        return super().run(command, timeout=timeout)

    def put(self, source: IO[bytes], remote_path: str) -> int:
        self.puts.append(remote_path)
        self._link()
        if self.shared.put_error is not None:
            raise self.shared.put_error
        return super().put(source, remote_path)

    def put_file(self, source: Path, remote_path: str) -> int:
        self.puts.append(remote_path)
        self._link()
        if self.shared.put_error is not None:
            raise self.shared.put_error
        return super().put_file(source, remote_path)

    def _link(self) -> None:
        if self.shared.dropped:
            raise InfrastructureError(f"SSH to {self.target.name}: the connection dropped",
                                      target=self.target.name)


def mount(monkeypatch: pytest.MonkeyPatch, *fakes: FakeBoard) -> None:
    """``open_board(target)`` gives a session to the fake of ``target``'s name (any other
    target its real board), in every module that imported it."""
    real = boards.open_board
    by_name = {fake.target.name: fake for fake in fakes}

    def open_board(target: Target) -> Board:
        return by_name[target.name].session() if target.name in by_name else real(target)

    for module in list(sys.modules.values()):
        if getattr(module, "open_board", None) is real:
            monkeypatch.setattr(module, "open_board", open_board)


def fake_target(tmp_path: Path, name: str, **extra: object) -> Target:
    """A target file ``tmp_path/targets/NAME.toml`` for an SSH board nobody can reach but a
    mounted fake (``host`` is a reserved name), with ``extra`` keys."""
    folder = tmp_path / "targets"
    folder.mkdir(exist_ok=True)
    fields = {"transport": "ssh", "host": "board.invalid", "python": sys.executable,
              "retries": 0, **extra}
    (folder / f"{name}.toml").write_text("".join(f"{key} = {_toml(value)}\n"
                                                 for key, value in fields.items()))
    return load_target(name, folder)
