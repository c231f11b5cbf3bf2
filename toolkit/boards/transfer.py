"""Content-addressed uploads to a board: a file reaches its final name whole and
verified, or not at all.

Each upload goes to a temporary name beside its destination, the board hashes
it, and one remote command renames it into place only if the sha256 matches.
A file already present with the right hash is not sent again. Names are single
safe path components and every remote command is built with ``shlex.quote``.
On the local board a file is hard-linked, not copied (:meth:`LocalBoard.put_file`):
the hash check and the rename are the same, and nothing here writes into a placed file.

The cache folder is bounded: after a job's uploads, :func:`prune_cache` touches the
job's files (boards often mount ``noatime``, so a use is recorded in the mtime) and
removes the least recently used others until the folder is under the target's
``cache_max_mb``.

Example::

    with Connection(target) as board:
        sent = upload(board, ".edge/cache", "ab12....tflite", Path("m.tflite"))
        prune_cache(board, ".edge/cache", ["ab12....tflite"], 512 * 1024 * 1024)
"""

from __future__ import annotations

import hashlib
import io
import logging
import shlex
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from device_agent.protocol import sha256_file
from toolkit.boards.board import LocalBoard, Shell
from toolkit.boards.targets import check_name
from toolkit.errors import InfrastructureError, TransferError

_log = logging.getLogger(__name__)

#: Temporary uploads older than this are leftovers of a killed transfer.
STALE_PART_MINUTES = 60


def sha256_of(source: Path | bytes) -> str:
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    return sha256_file(source)


def remote_sha256s(board: Shell, paths: list[str]) -> list[str | None]:
    """The sha256 of each of ``paths`` on the board (None where absent), in one command.

    One round trip instead of one per file: on a slow lab link that is most of a job's set-up.
    """
    if not paths:
        return []
    script = "; ".join(f"if [ -f {shlex.quote(p)} ]; then sha256sum < {shlex.quote(p)}; "
                       "else echo -; fi" for p in paths)
    result = board.run(script)
    lines = result.stdout.decode("ascii", "replace").splitlines()
    if not result.ok or len(lines) != len(paths):
        raise InfrastructureError(f"cannot hash files on {board.target.name}: "
                                  f"{_last_line(result.stderr)}", target=board.target.name)
    return [None if line.strip() == "-" else line.split()[0] for line in lines]


def upload(board: Shell, folder: str, name: str, source: Path | bytes) -> bool:
    """Place ``source`` at ``folder/name`` on the board; return False if it was already there."""
    return upload_all(board, [(folder, name, source)])[0]


def upload_all(board: Shell,
               placements: list[tuple[str, str, Path | bytes]]) -> list[bool]:
    """Place each ``(folder, name, source)``; True for each file that had to be sent."""
    for _folder, name, _source in placements:
        check_name(name, "file name")
    expected = [sha256_of(source) for _folder, _name, source in placements]
    present = remote_sha256s(board, [f"{folder}/{name}" for folder, name, _ in placements])
    prepared: set[str] = set()
    sent = []
    for (folder, name, source), want, have in zip(placements, expected, present, strict=True):
        if have == want:
            sent.append(False)
            continue
        if folder not in prepared:
            _prepare(board, folder)
            prepared.add(folder)
        _send(board, folder, name, source, want)
        sent.append(True)
    return sent


def _prepare(board: Shell, folder: str) -> None:
    """Make ``folder`` and sweep temporaries left by transfers killed long ago."""
    qf = shlex.quote(folder)
    prepare = board.run(
        f"mkdir -p -- {qf} && find {qf} -maxdepth 1 -name '*.part-*' "
        f"-mmin +{STALE_PART_MINUTES} -exec rm -f -- {{}} +")
    if not prepare.ok:
        raise InfrastructureError(f"cannot prepare {folder} on {board.target.name}: "
                                  f"{_last_line(prepare.stderr)}", target=board.target.name)


def _send(board: Shell, folder: str, name: str, source: Path | bytes,
          expected: str) -> None:
    destination = f"{folder}/{name}"
    temporary = f"{destination}.part-{uuid.uuid4().hex}"
    qt, qd = shlex.quote(temporary), shlex.quote(destination)
    try:
        if isinstance(source, bytes):
            board.put(io.BytesIO(source), temporary)
        elif isinstance(board, LocalBoard):
            board.put_file(source, temporary)  # a link: the bytes stay on the disk once
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


@dataclass(frozen=True)
class PrunedCache:
    """What :func:`prune_cache` removed, and the folder's size afterwards."""

    evicted: tuple[str, ...]
    total_bytes: int


def prune_cache_command(folder: str, keep: Iterable[str], max_bytes: int) -> str:
    """The POSIX shell command of :func:`prune_cache` (``sh``, coreutils or busybox).

    Prints ``evicted NAME`` per removed file, then ``total BYTES``. Temporary uploads
    (``*.part-*``) are neither counted nor removed: :func:`upload_all` sweeps them.
    """
    names = [check_name(name, "file name") for name in keep]
    touch = f"touch -c -- {' '.join(shlex.quote(n) for n in names)}; " if names else ""
    # Oldest first (mtime, then size and name for ties); the kept files are skipped.
    select = ("BEGIN { n = split(keep, k, \" \"); for (i = 1; i <= n; i++) kept[\"./\" k[i]] = 1 } "
              "{ name = $0; sub(/^[^ ]+ [^ ]+ /, \"\", name); size[NR] = $2; file[NR] = name; "
              "total += $2 } "
              "END { for (i = 1; i <= NR && total > cap; i++) if (!(file[i] in kept)) "
              "{ print \"evict \" file[i]; total -= size[i] } "
              "printf \"total %.0f\\n\", total }")
    return (f"cd -- {shlex.quote(folder)} 2>/dev/null || {{ echo 'total 0'; exit 0; }}; "
            f"{touch}"
            "find . -maxdepth 1 -type f ! -name '*.part-*' -exec stat -c '%Y %s %n' -- {} + "
            f"| sort -n | awk -v cap={int(max_bytes)} -v keep={shlex.quote(' '.join(names))} "
            f"{shlex.quote(select)} | while read -r what name; do "
            'if [ "$what" = evict ]; then rm -f -- "$name" && echo "evicted ${name#./}"; '
            'else echo "$what $name"; fi; done')


def prune_cache(board: Shell, folder: str, keep: Iterable[str],
                max_bytes: int) -> PrunedCache:
    """Mark ``keep`` (the job's files in ``folder``) used and evict least recently used
    other files until ``folder`` holds at most ``max_bytes``; one remote command.

    The job's own files are never evicted: if they alone exceed the cap, the folder
    stays above it and a warning says so.
    """
    keep = list(keep)
    result = board.run(prune_cache_command(folder, keep, max_bytes))
    lines = result.stdout.decode("utf-8", "replace").splitlines()
    if not result.ok or not lines or not lines[-1].startswith("total "):
        raise InfrastructureError(f"cannot prune the cache {folder} on {board.target.name}: "
                                  f"{_last_line(result.stderr)}", target=board.target.name)
    pruned = PrunedCache(
        evicted=tuple(line.split(" ", 1)[1] for line in lines if line.startswith("evicted ")),
        total_bytes=int(lines[-1].split()[1]))
    if pruned.total_bytes > max_bytes:
        _log.warning("the cache on %s holds %d bytes, over its cap of %d: this job's own "
                     "files are that large (raise cache_max_mb)", board.target.name,
                     pruned.total_bytes, max_bytes)
    return pruned


def _remove_quietly(board: Shell, path: str) -> None:
    if not board.is_open:
        return  # the link is gone; reconnecting only to tidy up could wait a whole time-out
    try:
        board.run(f"rm -f -- {shlex.quote(path)}", timeout=board.target.connect_timeout)
    except InfrastructureError:
        pass  # the link is gone; the stale temporary is swept by the next upload


def _last_line(raw: bytes) -> str:
    lines = raw.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no message"
