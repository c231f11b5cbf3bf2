"""Cancellation of running jobs: one flag for the process, set by Ctrl-C, SIGTERM or SIGHUP.

Apart from :mod:`toolkit.runner` (which polls the flag while a job runs) so that the
command line can install :func:`cancel_on_signals` around every command without
importing the runner, paramiko and the rest of the job machinery first: ``edge
--help`` stays as fast as ``import click``.

Example::

    with cancel_on_signals():
        run_the_jobs()        # SIGTERM: cancel_requested() turns true, KeyboardInterrupt
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

_cancelled = threading.Event()


def cancel_running_jobs() -> None:
    """Make every job running in this process stop: its group killed, its lease released."""
    _cancelled.set()


def allow_jobs() -> None:
    """Let jobs run again after :func:`cancel_running_jobs` (for the next command in-process)."""
    _cancelled.clear()


def cancel_requested() -> bool:
    """True once :func:`cancel_running_jobs` was called (and :func:`allow_jobs` not since)."""
    return _cancelled.is_set()


@contextlib.contextmanager
def cancel_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) cancel like Ctrl-C does, while in the block.

    Python raises KeyboardInterrupt for SIGINT only; a service manager's SIGTERM or a
    closed terminal would otherwise end the process with no clean-up at all (staging
    folders left, the board's job running on under a lease that expires).
    """
    def interrupt(signum: int, frame: FrameType | None) -> None:
        cancel_running_jobs()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        allow_jobs()


__all__ = ["allow_jobs", "cancel_on_signals", "cancel_requested", "cancel_running_jobs"]
