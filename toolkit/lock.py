"""One edge job per board at a time: a lease on the board with owner, start and expiry.

``mkdir`` is atomic, so two hosts racing for a board cannot both win.  The
owner file says who holds the lease, until when and since when (the board's
clock); the holder renews the expiry while it works, so a short lease covers a
long job, and a job that crashed or lost its link holds the board only until
the lease runs out.  An expired lease is taken over by the next job.

Every acquire, take-over and release appends a line to ``<work_dir>/lock.log``
(``<board time> <event> <owner>``): a lab can see who used a board when, and
check that no two jobs ever overlapped.

Example::

    with Connection(target) as board, board_lock(board, ".edge", seconds=60):
        ...  # upload and run; the lease is renewed every 20 s meanwhile
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import shlex
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import BoardBusyError, InfrastructureError
from .ssh import Connection

log = logging.getLogger(__name__)

_BUSY = 75  # EX_TEMPFAIL
#: Default lease length; renewed every third of it while held.
LEASE_SECONDS = 60.0


def owner_token() -> str:
    """Who we are, readable by a person looking at the board: ``user@host pid N``."""
    return f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Lease:
    """What the owner file of a held board says (times on the board's clock, epoch seconds)."""

    owner: str
    expires: int
    since: int | None

    @classmethod
    def parse(cls, text: str) -> Lease | None:
        lines = text.splitlines()
        try:
            return cls(owner=lines[0], expires=int(lines[1]),
                       since=int(lines[2]) if len(lines) > 2 else None)
        except (IndexError, ValueError):
            return None


def read_lease(board: Connection, work_dir: str) -> tuple[Lease | None, int]:
    """The board's current lease (None when free) and the board's clock now."""
    answer = board.run(f"date +%s; cat -- {shlex.quote(work_dir + '/lock/owner')} 2>/dev/null")
    now, _, owner = answer.stdout.decode("utf-8", "replace").partition("\n")
    return Lease.parse(owner), int(now.strip() or 0)


@contextlib.contextmanager
def board_lock(board: Connection, work_dir: str, *,
               seconds: float = LEASE_SECONDS) -> Iterator[str]:
    """Hold the board's lease, renewed every ``seconds / 3`` while held; yields our token."""
    token = owner_token()
    lock = shlex.quote(f"{work_dir}/lock")
    owner = shlex.quote(f"{work_dir}/lock/owner")
    journal = shlex.quote(f"{work_dir}/lock.log")
    lease = int(seconds) + 1
    quoted = shlex.quote(token)

    def note(event: str) -> str:
        return f'printf "%s %s %s\\n" "$(date +%s.%N)" {event} {quoted} >> {journal}'

    write = f'printf "%s\\n%s\\n%s\\n" {quoted} "$((now + {lease}))" "$now" > {owner}'
    acquired = board.run(
        f"mkdir -p -- {shlex.quote(work_dir)} && now=$(date +%s) && "
        f"if mkdir -- {lock} 2>/dev/null; then {write} && {note('acquire')}; exit 0; fi; "
        f"expiry=$(sed -n 2p {owner} 2>/dev/null); "
        f'if [ -n "$expiry" ] && [ "$expiry" -lt "$now" ]; then '
        f"rm -rf -- {lock} && mkdir -- {lock} && {write} && {note('takeover')} && exit 0; fi; "
        f"sed -n 1p {owner} 2>/dev/null; exit {_BUSY}")
    if acquired.exit_status == _BUSY:
        holder = acquired.stdout.decode("utf-8", "replace").strip() or "a job starting up"
        raise BoardBusyError(f"{board.target.name} is busy: locked by {holder}",
                             target=board.target.name)
    if not acquired.ok:
        raise InfrastructureError(f"cannot lock {board.target.name}: "
                                  f"{acquired.stderr.decode('utf-8', 'replace').strip()}",
                                  target=board.target.name)
    ours = f'[ "$(sed -n 1p {owner} 2>/dev/null)" = {quoted} ]'
    renew = (f"now=$(date +%s) && {ours} && "
             f'since=$(sed -n 3p {owner}) && printf "%s\\n%s\\n%s\\n" {quoted} '
             f'"$((now + {lease}))" "$since" > {owner}.new && mv -f -- {owner}.new {owner}')
    stop = threading.Event()
    renewer = threading.Thread(target=_keep_renewing, name=f"lease-{board.target.name}",
                               args=(board, renew, stop, max(seconds / 3, 0.5)), daemon=True)
    renewer.start()
    try:
        yield token
    finally:
        stop.set()
        renewer.join()
        if board.is_open:
            with contextlib.suppress(InfrastructureError):
                # Only our own lease: an expired one may have been taken over meanwhile.
                board.run(f"if {ours}; then {note('release')}; rm -rf -- {lock}; fi")


def _keep_renewing(board: Connection, command: str, stop: threading.Event,
                   every: float) -> None:
    """Push the lease's expiry forward until ``stop``; a dead link ends it (the job fails too)."""
    while not stop.wait(every):
        if not board.is_open:
            return
        try:
            board.run(command)
        except InfrastructureError as exc:
            log.debug("lease renewal on %s failed: %s", board.target.name, exc)
            return
