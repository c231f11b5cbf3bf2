"""One edge job per board at a time: a lock folder on the board with owner and expiry.

``mkdir`` is atomic, so two hosts racing for a board cannot both win; the
owner file says who holds it and until when (the board's clock), so a job
that crashed or lost its link holds the board only until its expiry.

Example::

    with Connection(target) as board, board_lock(board, ".edge", seconds=600):
        ...  # upload and run
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shlex
import socket
import uuid
from collections.abc import Iterator

from .errors import BoardBusyError, InfrastructureError
from .ssh import Connection

_BUSY = 75  # EX_TEMPFAIL


def owner_token() -> str:
    """Who we are, readable by a person looking at the board: ``user@host pid N``."""
    return f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def board_lock(board: Connection, work_dir: str, *, seconds: float) -> Iterator[str]:
    """Hold the board's lock for at most ``seconds``; yields the owner token."""
    token = owner_token()
    lock = shlex.quote(f"{work_dir}/lock")
    owner = shlex.quote(f"{work_dir}/lock/owner")
    write = (f'printf "%s\\n%s\\n" {shlex.quote(token)} "$((now + {int(seconds) + 1}))" '
             f"> {owner}")
    acquired = board.run(
        f"mkdir -p -- {shlex.quote(work_dir)} && now=$(date +%s) && "
        f"if mkdir -- {lock} 2>/dev/null; then {write}; exit 0; fi; "
        f"expiry=$(sed -n 2p {owner} 2>/dev/null); "
        f'if [ -n "$expiry" ] && [ "$expiry" -lt "$now" ]; then '
        f"rm -rf -- {lock} && mkdir -- {lock} && {write} && exit 0; fi; "
        f"sed -n 1p {owner} 2>/dev/null; exit {_BUSY}")
    if acquired.exit_status == _BUSY:
        holder = acquired.stdout.decode("utf-8", "replace").strip() or "a job starting up"
        raise BoardBusyError(f"{board.target.name} is busy: locked by {holder}",
                             target=board.target.name)
    if not acquired.ok:
        raise InfrastructureError(f"cannot lock {board.target.name}: "
                                  f"{acquired.stderr.decode('utf-8', 'replace').strip()}",
                                  target=board.target.name)
    try:
        yield token
    finally:
        if board.is_open:
            with contextlib.suppress(InfrastructureError):
                # Only our own lock: an expired one may have been taken over meanwhile.
                board.run(f'if [ "$(sed -n 1p {owner} 2>/dev/null)" = {shlex.quote(token)} ]; '
                          f"then rm -rf -- {lock}; fi")
