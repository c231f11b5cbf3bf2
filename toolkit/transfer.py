"""Content-addressed uploads to a board: a file reaches its final name whole and
verified, or not at all.

Each upload goes to a temporary name beside its destination, the board hashes
it, and one remote command renames it into place only if the sha256 matches.
A file already present with the right hash is not sent again. Names are single
safe path components and every remote command is built with ``shlex.quote``.

Example::

    with Connection(target) as board:
        sent = upload(board, ".edge/cache", "ab12....tflite", Path("m.tflite"))
"""

from __future__ import annotations

import hashlib
import io
import shlex
import uuid
from pathlib import Path

from device_agent.protocol import sha256_file

from .errors import InfrastructureError, TransferError
from .ssh import Connection
from .targets import check_name

#: Temporary uploads older than this are leftovers of a killed transfer.
STALE_PART_MINUTES = 60


def sha256_of(source: Path | bytes) -> str:
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    return sha256_file(source)


def remote_sha256(board: Connection, path: str) -> str | None:
    """The sha256 of ``path`` on the board, or None if there is no such file."""
    q = shlex.quote(path)
    result = board.run(f"if [ -f {q} ]; then sha256sum < {q}; fi")
    if not result.ok:
        raise InfrastructureError(f"cannot hash {path} on {board.target.name}: "
                                  f"{_last_line(result.stderr)}", target=board.target.name)
    words = result.stdout.split()
    return words[0].decode("ascii", "replace") if words else None


def upload(board: Connection, folder: str, name: str, source: Path | bytes) -> bool:
    """Place ``source`` at ``folder/name`` on the board; return False if it was already there."""
    check_name(name, "file name")
    expected = sha256_of(source)
    destination = f"{folder}/{name}"
    if remote_sha256(board, destination) == expected:
        return False
    temporary = f"{destination}.part-{uuid.uuid4().hex}"
    qf, qt, qd = shlex.quote(folder), shlex.quote(temporary), shlex.quote(destination)
    prepare = board.run(
        f"mkdir -p -- {qf} && find {qf} -maxdepth 1 -name '*.part-*' "
        f"-mmin +{STALE_PART_MINUTES} -exec rm -f -- {{}} +")
    if not prepare.ok:
        raise InfrastructureError(f"cannot prepare {folder} on {board.target.name}: "
                                  f"{_last_line(prepare.stderr)}", target=board.target.name)
    try:
        if isinstance(source, bytes):
            board.put(io.BytesIO(source), temporary)
        else:
            with open(source, "rb") as handle:
                board.put(handle, temporary)
    except InfrastructureError:
        _remove_quietly(board, temporary)
        raise
    # One command: hash and rename cannot be separated by another writer of the temp name.
    placed = board.run(
        f'if [ "$(sha256sum < {qt} | cut -d " " -f 1)" = {shlex.quote(expected)} ]; '
        f"then mv -f -- {qt} {qd}; else rm -f -- {qt}; exit 3; fi")
    if placed.exit_status == 3:
        raise TransferError(f"upload of {name} to {board.target.name} arrived corrupt "
                            "(sha256 mismatch); nothing was placed", target=board.target.name)
    if not placed.ok:
        raise InfrastructureError(f"cannot place {name} on {board.target.name}: "
                                  f"{_last_line(placed.stderr)}", target=board.target.name)
    return True


def _remove_quietly(board: Connection, path: str) -> None:
    if not board.is_open:
        return  # the link is gone; reconnecting only to tidy up could wait a whole time-out
    try:
        board.run(f"rm -f -- {shlex.quote(path)}", timeout=board.target.connect_timeout)
    except InfrastructureError:
        pass  # the link is gone; the stale temporary is swept by the next upload


def _last_line(raw: bytes) -> str:
    lines = raw.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no message"
