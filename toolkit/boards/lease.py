"""One edge job per board at a time: a lease on the board with owner, start, expiry and token.

The lease belongs to the *physical board*, not to a target file, a login or a host
key: it lives in ``<lease root>/<board identity>/`` on the board (see
:func:`toolkit.boards.board.read_identity`: the board's machine id, hashed; the root is
``/tmp/edge-leases`` unless the board's environment sets ``$EDGE_LEASE_ROOT``), so
two target files, two known_hosts files (rsa or ed25519 negotiated) and two logins
reaching one board share it.  The root is made sticky and world-writable (1777,
like /tmp: nobody removes another user's board folder), each board folder and
its files world-writable (0777/0666, no sticky bit: another login's edge must
replace the owner file and append to the log).  The lease is a cooperative
protocol between edge processes, not a security boundary against local users.

Every check-and-write of the owner file happens under ``flock(1)`` on ``guard``
in that folder, so two hosts taking over one expired lease cannot both win.  The
owner file says who holds the lease, until when and since when (the board's
clock), and the lease's **fencing token**, new at every acquire.  The holder
renews the expiry while it works; a renewal that finds another token marks the
lease lost (:class:`LeaseLostError`): the runner then stops its job at once, and
starts no agent.  The agent itself is started with the token and checks it
against the owner file before each variant and every half second while it
measures (:mod:`device_agent.__main__`), so an agent whose host was paused past
its lease stops by itself, even one that another login's edge cannot kill.

Anything the lease cannot read counts as held, never as free: an owner file that
is not a readable lease, a broken ``/dev/null`` or a missing ``flock(1)`` is an
error naming what is wrong.  A release that fails is one warning line (the board
is then busy until the lease expires).

Each job's process group is named by ``job-<token>.pid`` in the same folder.
Before a lease is released its job's group is killed and waited for; before an
expired one is taken over, every job pid file's group is: a job never outlives
its lease, not even one whose host died.

Every acquire, take-over and release appends a line to ``lock.log`` there
(``<board time> <event> <owner>``): a lab can see who used a board when, and
check that no two jobs ever overlapped.

Example::

    with open_board(target) as board, board_lock(board, seconds=60):
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
from typing import TYPE_CHECKING

from toolkit.errors import BoardBusyError, InfrastructureError, LeaseLostError

if TYPE_CHECKING:
    from toolkit.boards.board import Board
    from toolkit.boards.ssh import Result

log = logging.getLogger(__name__)

_BUSY = 75  # EX_TEMPFAIL
_NO_GUARD = 74
#: The lease is another job's now; the agent exits with the same status when it sees that
#: (``device_agent.__main__.LEASE_LOST_EXIT``).
_NOT_OURS = LEASE_LOST_EXIT = 76
_UNREADABLE = 73
#: Default lease length (read at each acquire, so a test or a lab may shorten it);
#: renewed every third of it while held.
LEASE_SECONDS = 60.0
#: How long a lease command waits for another host's check-and-write to finish.
GUARD_WAIT_SECONDS = 10


def owner_token() -> str:
    """Who we are, readable by a person looking at the board: ``user@host pid N``."""
    return f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex[:8]}"


def lease_dir(board: Board) -> str:
    """The board's lease folder (an absolute path on the board), the same for every login."""
    return f"{board.lease_root()}/{board.identity()}"


def job_pid_file(board: Board, token: str) -> str:
    """Where the job holding lease ``token`` writes its process-group id (absolute)."""
    return f"{lease_dir(board)}/job-{token}.pid"


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


def read_lease(board: Board) -> tuple[Lease | None, int]:
    """The board's current lease (None when free) and the board's clock now."""
    owner = shlex.quote(f"{lease_dir(board)}/owner")
    answer = board.run(f"date +%s; cat -- {owner} 2>/dev/null")
    now, _, text = answer.stdout.decode("utf-8", "replace").partition("\n")
    return Lease.parse(text), int(now.strip() or 0)


def _guarded(folder: str, body: str) -> str:
    """``body`` run while holding ``flock`` on the lease folder's guard file.

    What the lease relies on is checked first, each with its own message: a /dev/null that
    is not a writable character device (every ``2>/dev/null`` would fail and read as
    "empty"), then flock(1), then the folders.
    """
    root = folder.rsplit("/", 1)[0] or "/"
    return (f"d={shlex.quote(folder)}; r={shlex.quote(root)}; "
            'if [ ! -c /dev/null ]; then echo "/dev/null on the board is not a character '
            'device: lease commands cannot run (as root: rm /dev/null; mknod -m 666 /dev/null '
            f'c 1 3)" >&2; exit {_NO_GUARD}; fi; '
            'if [ ! -w /dev/null ]; then echo "/dev/null on the board is not writable: lease '
            f'commands cannot run" >&2; exit {_NO_GUARD}; fi; '
            'command -v flock >/dev/null 2>&1 || { echo "flock(1) is not installed on the '
            f'board (util-linux)" >&2; exit {_NO_GUARD}; }}; '
            # Every login's edge writes here: files 0666, board folders 0777, the root 1777.
            'umask 000; if [ ! -d "$r" ]; then mkdir -p -- "${r%/*}" 2>/dev/null; '
            'mkdir -m 1777 -- "$r" 2>/dev/null; fi; '
            '[ -d "$d" ] || mkdir -m 0777 -- "$d" 2>/dev/null; '
            'if [ -L "$r" ] || [ -L "$d" ] || [ ! -d "$d" ] || [ ! -w "$d" ]; then '
            'echo "cannot use the lease folder $d: $(ls -ld -- "$r" "$d" 2>&1 | tr "\\n" " ")" '
            f'>&2; exit {_NO_GUARD}; fi; '
            f'exec 9>>"$d/guard" && flock -w {GUARD_WAIT_SECONDS} 9 || '
            f'{{ echo "cannot lock $d/guard" >&2; exit {_NO_GUARD}; }}; {body}')


#: Shell functions over the job whose id is ``$pid`` (the agent starts a session of its own,
#: so its session, process group and pid are one number): ``job_alive`` while any process of
#: its session (its group where pgrep is missing) lives; ``signal_job SIG`` signals its group
#: and its whole session, which also reaches children the agent put in groups of their own.
#: Only a plain number above 1 is ever used: "kill -KILL -1" would end every process of the
#: login. (``kill -SIG -PGID``, not ``kill -s SIG -- -PGID``: dash's kill refuses the latter.)
JOB_FUNCTIONS = (
    'job_alive() { if command -v pgrep >/dev/null 2>&1; then pgrep -s "$pid" >/dev/null 2>&1; '
    'else kill -0 "-$pid" 2>/dev/null; fi; }; '
    'signal_job() { kill -"$1" "-$pid" 2>/dev/null; if command -v pkill >/dev/null 2>&1; then '
    'pkill -"$1" -s "$pid" 2>/dev/null; fi; return 0; }; '
    'wait_job() { i=0; while job_alive && [ $i -lt "$1" ]; do sleep 0.05; i=$((i+1)); done; }; ')

#: Kill the job ``$f`` names and wait (up to 5 s) until it is gone; remove ``$f``.
_REAP_ONE = ('if [ -f "$f" ]; then pid=$(cat -- "$f"); '
             'if [ "$pid" -gt 1 ] 2>/dev/null; then signal_job KILL; wait_job 100; fi; '
             'rm -f -- "$f"; fi; ')
#: Kill every job a pid file names (an expired lease's, and any older host's that died).
_REAP_ALL = (f'{JOB_FUNCTIONS}for f in "$d"/job-*.pid "$d/job.pid"; do {_REAP_ONE}done; ')


class Held:
    """A lease this process holds: its owner line, its fencing token, where its job's pid goes.

    ``lost`` is set once a renewal finds another job's token in the owner file.
    """

    def __init__(self, board: Board, owner: str, token: str) -> None:
        self.board, self.owner, self.token = board, owner, token
        self.folder = lease_dir(board)
        self.lost = threading.Event()
        self.holder = ""  # who holds it instead, once lost

    @property
    def owner_file(self) -> str:
        return f"{self.folder}/owner"

    @property
    def pid_file(self) -> str:
        return f"{self.folder}/job-{self.token}.pid"

    def still_ours(self) -> str:
        """A shell test: the owner file names this lease's token (unreadable: not ours)."""
        return f'[ "$(sed -n 4p {shlex.quote(self.owner_file)} 2>/dev/null)" = {self.token} ]'

    def raise_if_lost(self) -> None:
        if self.lost.is_set():
            raise self.error()

    def confirm(self) -> None:
        """Ask the board now whether the lease is still ours; raise if it is not.

        The renewal thread may not have run yet after a pause: this is the check that a
        host resuming from SIGSTOP meets before it uploads anything.
        """
        self.raise_if_lost()
        answer = self.board.run(f'{self.still_ours()} || {{ sed -n 1p -- '
                                f'{shlex.quote(self.owner_file)} 2>/dev/null; '
                                f'exit {LEASE_LOST_EXIT}; }}')
        if answer.exit_status == LEASE_LOST_EXIT:
            self.holder = answer.stdout.decode("utf-8", "replace").strip()
            self.lost.set()
            raise self.error()
        if not answer.ok:
            raise _fail(self.board, "cannot read the lease on", answer)

    def error(self) -> LeaseLostError:
        holder = f" ({self.holder})" if self.holder else ""
        return LeaseLostError(f"the lease on {self.board.target.name} passed to another "
                              f"job{holder} while this one was paused or cut off; this job "
                              "was stopped", target=self.board.target.name)


def _fail(board: Board, what: str, answer: Result) -> InfrastructureError:
    reason = answer.stderr.decode("utf-8", "replace").strip().splitlines()
    return InfrastructureError(f"{what} {board.target.name}: "
                               f"{reason[-1] if reason else f'exit status {answer.exit_status}'}",
                               target=board.target.name)


@contextlib.contextmanager
def board_lock(board: Board, *, seconds: float | None = None) -> Iterator[str]:
    """Hold the board's lease, renewed every ``seconds / 3`` while held; yields our owner line."""
    with hold_lease(board, seconds=seconds) as held:
        yield held.owner


@contextlib.contextmanager
def hold_lease(board: Board, *, seconds: float | None = None) -> Iterator[Held]:
    """Hold the board's lease (``seconds``, default :data:`LEASE_SECONDS`), renewed every
    third of it while held; yields the :class:`Held` lease with its fencing token."""
    seconds = LEASE_SECONDS if seconds is None else seconds
    held = Held(board, owner_token(), uuid.uuid4().hex)
    folder = held.folder
    lease = int(seconds) + 1
    quoted = shlex.quote(held.owner)

    def note(event: str) -> str:
        return f'printf "%s %s %s\\n" "$(date +%s.%N)" {event} {quoted} >> "$d/lock.log"'

    write = (f'printf "%s\\n%s\\n%s\\n%s\\n" {quoted} "$((now + {lease}))" "$since" '
             f'{held.token} > "$d/owner.new" && mv -f -- "$d/owner.new" "$d/owner"')
    clock = ('now=$(date +%s); case $now in ""|*[!0-9]*) echo "cannot read the board\'s '
             f'clock" >&2; exit {_UNREADABLE};; esac; ')
    # Fail closed: an owner file that is there but cannot be read as a lease is a held
    # board (an error that names it), never a free one.
    acquired = board.run(_guarded(folder, (
        f'{clock}since=$now; event=acquire; '
        'if [ -e "$d/owner" ] || [ -L "$d/owner" ]; then event=takeover; '
        'if [ ! -f "$d/owner" ] || ! expiry=$(sed -n 2p -- "$d/owner"); then '
        f'echo "cannot read the lease file $d/owner" >&2; exit {_UNREADABLE}; fi; '
        'case $expiry in ""|*[!0-9]*) echo "$d/owner is not a lease (line 2 is not an '
        'expiry time); if no job holds the board, remove it" >&2; '
        f'exit {_UNREADABLE};; esac; '
        f'if [ "$expiry" -ge "$now" ]; then sed -n 1p -- "$d/owner"; exit {_BUSY}; fi; fi; '
        # A job left by a host that died (its lease expired) is ended before ours starts.
        f'{_REAP_ALL}{write} && {note("$event")}')))
    if acquired.exit_status == _BUSY:
        holder = acquired.stdout.decode("utf-8", "replace").strip() or "a job starting up"
        raise BoardBusyError(f"{board.target.name} is busy: locked by {holder}",
                             target=board.target.name)
    if not acquired.ok:
        raise _fail(board, "cannot lock", acquired)
    renew = _guarded(folder, f'{held.still_ours()} || {{ sed -n 1p -- "$d/owner" 2>/dev/null; '
                             f'exit {_NOT_OURS}; }}; {clock}'
                             f'since=$(sed -n 3p "$d/owner"); {write}')
    stop = threading.Event()
    renewer = threading.Thread(target=_keep_renewing, name=f"lease-{board.target.name}",
                               args=(held, renew, stop, max(seconds / 3, 0.5)), daemon=True)
    renewer.start()
    try:
        yield held
    finally:
        stop.set()
        renewer.join()
        _release(held, note("release"))


def _release(held: Held, note: str) -> None:
    """End our job and free the board if the lease is still ours; warn (one line) if we
    cannot: the board then stays busy until the lease expires."""
    board = held.board
    # Our own job's pid file only: another job's is not ours to touch.
    command = _guarded(held.folder, (f'f="$d/job-{held.token}.pid"; {JOB_FUNCTIONS}{_REAP_ONE}'
                                     f'{held.still_ours()} || exit {_NOT_OURS}; {note} && '
                                     'rm -f -- "$d/owner"'))
    why = ""
    if not board.is_open:
        why = "the link is gone"
    else:
        try:
            answer = board.run(command)
        except InfrastructureError as exc:
            why = str(exc)
        else:
            if answer.exit_status == _NOT_OURS:
                return  # taken over meanwhile: nothing of ours to free
            if not answer.ok:
                why = str(_fail(board, "release on", answer))
    if why:
        log.warning("could not release the lease on %s (%s); the board stays busy until it "
                    "expires", board.target.name, why)


def _keep_renewing(held: Held, command: str, stop: threading.Event, every: float) -> None:
    """Push the lease's expiry forward until ``stop``; a dead link ends it (the job fails too).

    Another job's token in the owner file sets ``held.lost``: the runner stops the job.
    """
    board = held.board
    while not stop.wait(every):
        if not board.is_open:
            return
        try:
            answer = board.run(command)
        except InfrastructureError as exc:
            log.debug("lease renewal on %s failed: %s", board.target.name, exc)
            return
        if answer.exit_status == _NOT_OURS:
            held.holder = answer.stdout.decode("utf-8", "replace").strip()
            held.lost.set()
            log.warning("the lease on %s passed to another job; stopping this one",
                        board.target.name)
            return
