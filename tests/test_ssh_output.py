"""A command's output that arrives together with its exit status is not lost."""

from __future__ import annotations

from pathlib import Path

from toolkit.boards.ssh import Connection
from toolkit.boards.targets import Target


class _LateChannel:
    """The exit status is seen first and the last output is still buffered: the order in
    which a loaded host can find them (seen once in 15 deploys under a load of 8)."""

    def __init__(self) -> None:
        self.out, self.err = [b"late line\n"], [b"late error\n"]

    def exec_command(self, _command: str) -> None:
        pass

    def recv_ready(self) -> bool:
        return bool(self.out) and self.exited

    def recv(self, _size: int) -> bytes:
        return self.out.pop()

    def recv_stderr_ready(self) -> bool:
        return bool(self.err) and self.exited

    def recv_stderr(self, _size: int) -> bytes:
        return self.err.pop()

    exited = False

    def exit_status_ready(self) -> bool:
        self.exited = True  # from now on the buffered output shows
        return True

    def recv_exit_status(self) -> int:
        return 0

    def close(self) -> None:
        pass


class _Transport:
    def is_active(self) -> bool:
        return True

    def open_session(self, timeout: float) -> _LateChannel:
        return _LateChannel()


class _Client:
    def get_transport(self) -> _Transport:
        return _Transport()


def test_output_buffered_with_the_exit_status_is_kept(tmp_path: Path) -> None:
    board = Connection(Target(name="fake", transport="ssh", host="fake"))
    board._client = _Client()  # type: ignore[assignment]
    result = board.run("echo late line")
    assert (result.stdout, result.stderr) == (b"late line\n", b"late error\n")
