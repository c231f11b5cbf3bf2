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
owner file says who holds the lease, until when and since when, and the lease's
**fencing token**, new at every acquire.  The holder renews the expiry while it
works; a renewal that finds another token marks the lease lost
(:class:`LeaseLostError`): the runner then stops its job at once, and starts no
agent.  The agent itself is started with the token and checks it against the
owner file before each variant and every half second while it measures
(:mod:`device_agent.__main__`), so an agent whose host was paused past its lease
stops by itself, even one that another login's edge cannot kill.

**Expiry is measured on a clock that does not step**: the board's ``/proc/uptime``,
with its boot id (``/proc/sys/kernel/random/boot_id``).  A board without a real-time
clock (a Raspberry Pi) boots with a wrong date and steps it when NTP answers; measured
on the date, a step forward of an hour made a healthy job's lease look expired, and
the next deploy took the board over and killed the job.  Uptime only moves forward,
and a lease from an earlier boot (another boot id) is over: its jobs died with the
reboot.  The wall-clock times in the file (until, since) are for people only.  An
owner file an older edge wrote (four lines, no uptime) still expires by its wall-clock
time.  The file's lines: owner, until and since (the date), token, boot id, until
(uptime seconds).

Anything the lease cannot read counts as held, never as free: an owner file that
is not a readable lease, a board clock that cannot be read, a broken ``/dev/null`` or a
missing ``flock(1)`` is an error naming what is wrong.  A release that fails is one
warning line (the board is then busy until the lease expires).

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


#: Files on the board the lease's clock is read from (Linux): seconds since boot, which no
#: date change moves, and the id of this boot.
UPTIME_FILE = "/proc/uptime"
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"

#: Sets ``now`` (the board's date, epoch seconds: shown, never compared), ``boot`` and
#: ``up`` (whole seconds since that boot: what expiry is measured on); an unreadable clock
#: ends the command with an error, never a guess.
_CLOCK = (
    'now=$(date +%s); case $now in ""|*[!0-9]*) echo "cannot read the board\'s date" >&2; '
    f'exit {_UNREADABLE};; esac; '
    f'boot=$(cat -- {BOOT_ID_FILE}) && up=$(cut -d " " -f 1 -- {UPTIME_FILE}) || up=; '
    'up=${up%%.*}; case $up in ""|*[!0-9]*) up=; esac; '
    'if [ -z "$up" ] || [ -z "$boot" ]; then echo "cannot read the board\'s uptime clock '
    f'({UPTIME_FILE}, {BOOT_ID_FILE}): its leases cannot expire safely" >&2; '
    f'exit {_UNREADABLE}; fi; ')

#: With ``$d/owner`` there: ``live`` set to 1 while that lease holds, else empty; an owner
#: file that cannot be read or is not a lease ends the command with an error (fail closed).
#: A lease on the uptime clock holds while its boot is this boot and its end is not past;
#: an older edge's lease (four lines) by its wall-clock expiry.
_LIVE = (
    'if [ ! -f "$d/owner" ] || ! text=$(cat -- "$d/owner"); then '
    f'echo "cannot read the lease file $d/owner" >&2; exit {_UNREADABLE}; fi; '
    'line() { printf "%s\\n" "$text" | sed -n "$1p"; }; '
    'expiry=$(line 2); lboot=$(line 5); luntil=$(line 6); '
    'case $expiry in ""|*[!0-9]*) echo "$d/owner is not a lease (line 2 is not an '
    'expiry time); if no job holds the board, remove it" >&2; '
    f'exit {_UNREADABLE};; esac; '
    'live=; if [ -n "$lboot$luntil" ]; then '
    'case $luntil in ""|*[!0-9]*) echo "$d/owner is not a lease (line 6 is not an uptime); '
    f'if no job holds the board, remove it" >&2; exit {_UNREADABLE};; esac; '
    '[ "$lboot" = "$boot" ] && [ "$luntil" -ge "$up" ] && live=1; '
    'elif [ "$expiry" -ge "$now" ]; then live=1; fi; ')


@dataclass(frozen=True)
class BoardClock:
    """The board's clocks at one moment: its date (for people) and where expiry is measured."""

    wall: int  # epoch seconds
    boot: str  # this boot's id
    uptime: int  # whole seconds since that boot


@dataclass(frozen=True)
class Lease:
    """What the owner file of a held board says, and whether it holds now.

    ``expires`` and ``since`` are the board's date (epoch seconds), for display;
    ``boot`` and ``until_uptime`` say when it really ends (None: an older edge's lease,
    which ends at ``expires``).  ``live`` is the board's own verdict when it was read, by
    the rule the acquire applies (:data:`_LIVE`).
    """

    owner: str
    expires: int
    since: int | None
    token: str = ""
    boot: str = ""
    until_uptime: int | None = None
    live: bool = False

    @property
    def expired(self) -> bool:
        return not self.live

    @classmethod
    def parse(cls, text: str, *, live: bool = False) -> Lease | None:
        lines = text.splitlines()
        if len(lines) == 5:  # a boot id without its uptime
            return None
        try:
            return cls(owner=lines[0], expires=int(lines[1]),
                       since=int(lines[2]) if len(lines) > 2 and lines[2] else None,
                       token=lines[3] if len(lines) > 3 else "",
                       boot=lines[4] if len(lines) > 4 else "",
                       until_uptime=int(lines[5]) if len(lines) > 5 else None, live=live)
        except (IndexError, ValueError):
            return None


#: Marks the line where a lease reading starts: whatever a chatty login shell printed
#: before it is not the lease.
_FRAME = "edge-lease-reading"


def read_lease(board: Board) -> tuple[Lease | None, BoardClock]:
    """The board's current lease (None when free) and the board's clocks now.

    An owner file that is there but is not a lease is an error, never a free board.
    """
    frame = f'printf "%s %s %s %s %s\\n" {_FRAME} "$now" "$boot" "$up" "${{live:-0}}"'
    answer = board.run(f'd={shlex.quote(lease_dir(board))}; {_CLOCK}'
                       'if [ -e "$d/owner" ] || [ -L "$d/owner" ]; then '
                       f'{_LIVE}{frame}; exec cat -- "$d/owner"; fi; {frame}')
    if not answer.ok:
        raise _fail(board, "cannot read the lease on", answer)
    _, framed, reading = answer.stdout.decode("utf-8", "replace").partition(f"{_FRAME} ")
    first, _, text = reading.partition("\n")
    fields = first.split(" ")
    if not framed or len(fields) != 4 or not all(fields[i].isdigit() for i in (0, 2, 3)):
        raise InfrastructureError(f"cannot read the lease on {board.target.name}: its answer "
                                  "was not a lease reading", target=board.target.name)
    clock = BoardClock(wall=int(fields[0]), boot=fields[1], uptime=int(fields[2]))
    if not text:
        return None, clock
    lease = Lease.parse(text, live=fields[3] == "1")
    if lease is None:
        raise InfrastructureError(f"the lease file {lease_dir(board)}/owner on "
                                  f"{board.target.name} is not a lease",
                                  target=board.target.name)
    return lease, clock


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
            self.holder = _holder(answer)
            self.lost.set()
            raise self.error()
        if not answer.ok:
            raise _fail(self.board, "cannot read the lease on", answer)

    def error(self) -> LeaseLostError:
        holder = f" ({self.holder})" if self.holder else ""
        return LeaseLostError(f"the lease on {self.board.target.name} passed to another "
                              f"job{holder} while this one was paused or cut off; this job "
                              "was stopped", target=self.board.target.name)


def _holder(answer: Result) -> str:
    """The owner line a lease command printed last (a login shell may have printed before)."""
    lines = answer.stdout.decode("utf-8", "replace").strip().splitlines()
    return lines[-1].strip() if lines else ""


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

    # Lines 2-3: the board's date (for people); 4: the token; 5-6: when it really ends.
    write = (f'printf "%s\\n%s\\n%s\\n%s\\n%s\\n%s\\n" {quoted} "$((now + {lease}))" '
             f'"$since" {held.token} "$boot" "$((up + {lease}))" > "$d/owner.new" && '
             'mv -f -- "$d/owner.new" "$d/owner"')
    # Fail closed: an owner file that is there but cannot be read as a lease is a held
    # board (an error that names it), never a free one.
    acquired = board.run(_guarded(folder, (
        f'{_CLOCK}since=$now; event=acquire; '
        'if [ -e "$d/owner" ] || [ -L "$d/owner" ]; then event=takeover; '
        f'{_LIVE}if [ -n "$live" ]; then sed -n 1p -- "$d/owner"; exit {_BUSY}; fi; fi; '
        # A job left by a host that died (its lease expired) is ended before ours starts.
        f'{_REAP_ALL}{write} && {note("$event")}')))
    if acquired.exit_status == _BUSY:
        holder = _holder(acquired) or "a job starting up"
        raise BoardBusyError(f"{board.target.name} is busy: locked by {holder}",
                             target=board.target.name)
    if not acquired.ok:
        raise _fail(board, "cannot lock", acquired)
    renew = _guarded(folder, f'{held.still_ours()} || {{ sed -n 1p -- "$d/owner" 2>/dev/null; '
                             f'exit {_NOT_OURS}; }}; {_CLOCK}'
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
            held.holder = _holder(answer)
            held.lost.set()
            log.warning("the lease on %s passed to another job; stopping this one",
                        board.target.name)
            return
