"""Staging folders: where a deploy builds a run before it moves into place, and the sweep
of those that killed deploys left behind.

Example::

    sweep_staging(Path("edge-out"))   # -> the folders removed
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

_log = logging.getLogger(__name__)

#: A ``.staging-*`` folder is only ever swept once nothing in it has changed for this long.
STALE_STAGING_S = 3600.0
#: ... and when its owner cannot be shown gone on this machine (another host's deploy on a
#: shared folder, a folder an older edge made without an owner file): this long.
STALE_UNOWNED_S = 3 * 24 * 3600.0
_OWNER = ".owner"
#: This process's staging folders -> the open owner file whose lock says they are in use.
_held: dict[Path, int] = {}


def sweep_staging(out_dir: Path, *, now: float | None = None) -> list[Path]:
    """Remove the ``.staging-*`` folders in ``out_dir`` whose deploy is gone; return them.

    A deploy holds an exclusive ``flock`` on its folder's ``.owner`` file (which also names
    its host and pid) for as long as it runs; the kernel releases it when the process dies,
    however it dies.  A folder is swept when nothing in its top level changed for
    :data:`STALE_STAGING_S` (1 h) and either its owner file names this host and its lock is
    free (its pid no longer running, where locks are not supported), or nothing changed for
    :data:`STALE_UNOWNED_S` (3 days: a deploy of another host on a shared folder, whose
    locks this host may not see, or a folder of an older edge) and no lock is held on it.
    Anything this cannot read is kept.
    """
    now = time.time() if now is None else now
    swept = []
    for folder in sorted(out_dir.glob(".staging-*")):
        if folder in _held:
            continue
        try:
            if folder.is_symlink() or not folder.is_dir():
                continue
            age = now - folder.stat().st_mtime
        except OSError:
            continue
        if age < STALE_STAGING_S:
            continue
        gone = _owner_gone(folder / _OWNER)
        if gone is False or (gone is None and age < STALE_UNOWNED_S):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        _log.info("removed %s, left by a deploy that is gone", folder)
        swept.append(folder)
    return swept


def _owner_gone(owner: Path) -> bool | None:
    """True: the deploy that made the folder is gone; False: it runs; None: not known here
    (no owner file, another host)."""
    try:
        facts = json.loads(owner.read_text(encoding="utf-8"))
        mine = facts.get("host") == socket.gethostname()
        pid = int(facts["pid"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    try:
        fd = os.open(owner, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # no locks on this file system: the pid says, on this host only
        return (not _alive(pid)) if mine else None
    finally:
        os.close(fd)
    return True if mine else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, another user's
        return True
    return True


def hold(staging: Path) -> None:
    """Mark ``staging`` as this process's: its owner file, locked until released."""
    for folder in [f for f in _held if not f.exists()]:  # staging removed on failure
        os.close(_held.pop(folder))
    owner = staging / _OWNER
    try:
        fd = os.open(owner, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:
        return  # the folder is kept only by the age rule
    with contextlib.suppress(OSError):  # no locks here: the pid in the file is checked instead
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": started}).encode())
    _held[staging] = fd


def release(staging: Path) -> None:
    """``staging`` is about to become the run's folder: its owner file goes."""
    fd = _held.pop(staging, None)
    with contextlib.suppress(OSError):
        (staging / _OWNER).unlink()
    if fd is not None:
        os.close(fd)


__all__ = ["STALE_STAGING_S", "STALE_UNOWNED_S", "hold", "release", "sweep_staging"]
