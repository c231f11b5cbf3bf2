"""Cancellation of running jobs, and interrupts that cannot be lost.

One flag for the process, set by Ctrl-C, SIGTERM or SIGHUP (and by
:func:`cancel_running_jobs`, e.g. a bench whose other board failed); the job runner
polls it while a job runs.  Apart from :mod:`toolkit.run.runner` so that the command line
can install :func:`cancel_on_signals` around every command without importing the
runner, paramiko and the rest of the job machinery first: ``edge --help`` stays as
fast as ``import click``.

A signal is also *remembered* until the command ends (:func:`interrupted_by`), so an
interrupt that a library swallowed (a converter that catches ``KeyboardInterrupt``, or
native code that drops it) still stops the command at its next
:func:`raise_if_interrupted`.  Code that must not be interrupted halfway (native
conversion code aborts the process on a Python exception; a run is moved into place
and stored) runs in :func:`interrupts_deferred`: a signal there is remembered and
raised as ``KeyboardInterrupt`` when the block ends.

Example::

    with cancel_on_signals():
        with interrupts_deferred():
            convert()             # Ctrl-C here: KeyboardInterrupt once convert() returns
        run_the_jobs()            # Ctrl-C or SIGTERM: KeyboardInterrupt, jobs cancelled
    # the CLI exits 128 + interrupted_by(): 130 for Ctrl-C, 143 for SIGTERM
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

_cancelled = threading.Event()
#: Signals received while :func:`cancel_on_signals` was active, first first.
_received: list[int] = []
#: How many :func:`interrupts_deferred` blocks are open (signal handlers run in the
#: main thread, whichever thread opened the block).
_deferring = [0]
#: Signals that stop a command the way Ctrl-C does.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def cancel_running_jobs() -> None:
    """Make every job running in this process stop: its group killed, its lease released."""
    _cancelled.set()


def allow_jobs() -> None:
    """Let jobs run again after :func:`cancel_running_jobs` (for the next command in-process).

    A signal received meanwhile still cancels: it is forgotten only when
    :func:`cancel_on_signals` ends."""
    _cancelled.clear()


def cancel_requested() -> bool:
    """True once :func:`cancel_running_jobs` was called (and :func:`allow_jobs` not since),
    or a stop signal arrived in :func:`cancel_on_signals`."""
    return _cancelled.is_set() or bool(_received)


def interrupted_by() -> int | None:
    """The first stop signal received in :func:`cancel_on_signals`, or None."""
    return _received[0] if _received else None


def exit_status(signum: int | None) -> int:
    """The shell's convention for a command ended by ``signum``: 128 + its number
    (130 for Ctrl-C, 143 for SIGTERM); Ctrl-C's when the signal is not known."""
    return 128 + int(signum if signum is not None else signal.SIGINT)


def raise_if_interrupted() -> None:
    """``KeyboardInterrupt`` if a stop signal arrived, even one a library swallowed."""
    if _received:
        raise KeyboardInterrupt(signal.Signals(_received[0]).name)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """A stop signal in the block is remembered, not raised, and raised when it ends.

    For native code that must not see a Python exception (a converter's C++ callback
    aborts the whole process on one: no clean-up at all) and for steps that must not
    stop halfway.  The block runs to its end; :func:`raise_if_interrupted` follows.
    """
    _deferring[0] += 1
    try:
        yield
    finally:
        _deferring[0] -= 1
        # Also when the block failed: an error the interrupt caused is the interrupt.
        raise_if_interrupted()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    cancel_running_jobs()
    if not _deferring[0]:
        raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def cancel_on_signals() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP (a closed terminal) cancel, while in the block.

    Python raises KeyboardInterrupt for SIGINT only; a service manager's SIGTERM or a
    closed terminal would otherwise end the process with no clean-up at all (staging
    folders left, the board's job running on under a lease that expires).  A signal that
    was ignored when the block began stays ignored: ``edge deploy &`` from a script and
    ``nohup edge deploy`` ask for exactly that.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, _interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        _received.clear()
        allow_jobs()


__all__ = ["STOP_SIGNALS", "allow_jobs", "cancel_on_signals", "cancel_requested",
           "cancel_running_jobs", "exit_status", "interrupted_by", "interrupts_deferred",
           "raise_if_interrupted"]
