"""One file's bytes in a second place without a second copy on disk, where that is safe.

A converted variant used to be copied three times on the host: from the conversion cache
into the run folder (or from the run folder into the cache), and into the local board's
cache.  A 2 GB model then took 6 GB.  :func:`place` puts a file's bytes at another path,
cheapest first:

- a hard link (``link=True``): both names are one file.  Safe only where no holder of
  either name ever writes into the file in place, which is true of edge's files: a
  variant is written once under a new name, then only read, renamed, touched (its mtime)
  or unlinked, and every reader checks its sha256 (the conversion cache, uploads, the
  agent), so a file a user did change is converted or sent again, never trusted;
- a reflink (``FICLONE``, btrfs, XFS, bcachefs): two files that share their blocks until
  one is written, safe for any file;
- ``os.copy_file_range``: a copy made inside the kernel (which shares blocks itself on file
  systems that can, NFS 4.2 and others), no user-space buffer;
- an ordinary copy, when the kernel refuses both (another file system on old kernels).

A link cannot cross file systems; the fall-backs then apply.

Example::

    place(Path("cache/ab12/model.tflite"), Path("run/artifacts/fp32.tflite"))  # 'link'
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from pathlib import Path
from typing import BinaryIO

#: ``_IOW(0x94, 9, int)``: linux/fs.h's FICLONE, a whole-file reflink.
FICLONE = 0x40049409
#: What ``copy_file_range`` answers where it cannot copy (another file system on kernels
#: before 5.3, a file system without it, a sandbox that forbids it): copy in user space.
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM,
                   errno.EBADF}


def place(source: Path, destination: Path, *, link: bool = True) -> str:
    """Make ``destination`` (replaced if present) hold ``source``'s bytes; say how:
    ``"link"``, ``"reflink"`` or ``"copy"``.

    ``link=False`` where the two names must stay separate files, e.g. a user's own file
    that the user may rewrite in place later.
    """
    with contextlib.suppress(FileNotFoundError):
        destination.unlink()
    if link:
        try:
            os.link(source, destination)
        except OSError:  # another file system, no hard links there, a protected link
            pass
        else:
            return "link"
    with open(source, "rb") as reader, open(destination, "wb") as writer:
        try:
            fcntl.ioctl(writer.fileno(), FICLONE, reader.fileno())
        except OSError:
            pass
        else:
            return "reflink"
        _copy(reader, writer)
    return "copy"


def _copy(reader: BinaryIO, writer: BinaryIO) -> None:
    copy_range = getattr(os, "copy_file_range", None)  # Linux only
    if copy_range is not None:
        try:
            while copy_range(reader.fileno(), writer.fileno(), 1 << 30):
                pass
            return
        except OSError as exc:
            if exc.errno not in _NO_KERNEL_COPY:
                raise
            reader.seek(0)
            writer.seek(0)
            writer.truncate()
    shutil.copyfileobj(reader, writer, 1 << 20)


__all__ = ["FICLONE", "place"]
