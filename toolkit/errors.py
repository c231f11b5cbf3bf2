"""Every error ``edge`` raises on purpose, one subclass per pipeline stage.

Exit codes (:class:`ExitCode`, the same for every command)::

    0 OK          everything asked was done and measured; edge check: no regression
    1 FAILED      edge check: a regression; elsewhere: a stage failed (compress, agent)
    2 USAGE       the user must fix an input (a path, a name, a model file, a target)
    3 INCOMPLETE  the answer is not known: infrastructure (board unreachable, store
                  unreachable or corrupt, this machine short of disk or memory), a
                  variant or cell not measured, or an edge check that is inconclusive

::

    EdgeError                   exit 1 unless the subclass says otherwise
    ├── UsageError              exit 2  the user must fix an input
    │   ├── ModelError                  model file missing, malformed, or rejects its input
    │   ├── TargetError                 unknown or malformed target file, unsafe name
    │   ├── HostKeyError                board's host key unknown or changed (never auto-added)
    │   ├── AuthError                   the board refused our key
    │   ├── BoardSetupError             the board lacks Python >= 3.8, numpy or a runtime
    │   ├── OutputError                 output folder or store path not writable
    │   └── CheckRefused                edge check asked to compare different models or boards
    ├── InfrastructureError     exit 3  board unreachable, link dropped, time-out, disk full,
    │   ├── TransferError               upload arrived corrupt (retried a bounded number of times)
    │   ├── BoardBusyError              another edge job holds the board's lock
    │   ├── LeaseLostError              another job took the lease over mid-job (not retried)
    │   └── HostResourceError           this machine lacks the disk or memory a run needs
    │                                   (checked before it starts, nothing written)
    ├── CompressError                   conversion or quantization failed
    ├── AgentError                      the agent could not run, or crashed, on the board
    ├── ResultError                     the agent's answer broke the job protocol
    ├── StoreError              exit 3  the results store could not be read or written
    └── MatrixIncomplete        exit 3  edge bench: some target x variant cells have no result

Three kinds of failure on a board: infrastructure (``InfrastructureError``,
``retryable``), job (``AgentError``: the model or agent failed, not retried)
and result (``ResultError``: the answer failed a check).

The CLI shows ``str(error)`` as one line and exits with ``error.exit_code``;
library callers catch the class they care about.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """What every ``edge`` command exits with; see the table above."""

    OK = 0
    FAILED = 1
    USAGE = 2
    INCOMPLETE = 3


class EdgeError(Exception):
    """Root of the tree; ``exit_code`` is what the CLI exits with."""

    exit_code: ExitCode = ExitCode.FAILED


class UsageError(EdgeError):
    """The user gave something to fix: a path, a name, a model file."""

    exit_code = ExitCode.USAGE


class ModelError(UsageError):
    """The model file cannot be loaded or does not follow the model protocol."""

    def __init__(self, message: str, *, path: object = None) -> None:
        super().__init__(message)
        self.path = path


class TargetError(UsageError):
    """The target is unknown or its file is malformed."""

    def __init__(self, message: str, *, target: str | None = None) -> None:
        super().__init__(message)
        self.target = target


class OutputError(UsageError):
    """An output location cannot be written."""

    def __init__(self, message: str, *, path: object = None) -> None:
        super().__init__(message)
        self.path = path


class CheckRefused(UsageError):
    """``edge check`` was asked to compare runs that are not comparable."""


class HostKeyError(UsageError):
    """The board's host key is not in known_hosts, or differs from the recorded one."""

    def __init__(self, message: str, *, target: str | None = None,
                 fingerprint: str | None = None) -> None:
        super().__init__(message)
        self.target = target
        self.fingerprint = fingerprint


class AuthError(UsageError):
    """The board refused every key we offered."""

    def __init__(self, message: str, *, target: str | None = None) -> None:
        super().__init__(message)
        self.target = target


class BoardSetupError(UsageError):
    """The board cannot run the agent yet; ``edge targets setup NAME`` fixes it."""

    def __init__(self, message: str, *, target: str | None = None) -> None:
        super().__init__(message)
        self.target = target


class InfrastructureError(EdgeError):
    """The way to the board failed (unreachable, dropped, timed out, disk full): retry."""

    exit_code = ExitCode.INCOMPLETE
    retryable = True

    def __init__(self, message: str, *, target: str | None = None) -> None:
        super().__init__(message)
        self.target = target


class TransferError(InfrastructureError):
    """An upload did not arrive intact; nothing was placed at its final name."""


class BoardBusyError(InfrastructureError):
    """Another job holds the board's lock and it has not expired."""


class LeaseLostError(InfrastructureError):
    """Another job holds the board's lease now (this host was paused or cut off past its
    expiry): this job was stopped and is not retried, its figures would not be its own."""

    retryable = False


class HostResourceError(InfrastructureError):
    """This machine has not the disk or the memory a run will need (an estimate, checked
    before anything is built or written): what is short, where, and by how much."""

    retryable = False


class CompressError(EdgeError):
    """A variant could not be produced from the model."""

    def __init__(self, message: str, *, recipe: str | None = None) -> None:
        super().__init__(message)
        self.recipe = recipe


class AgentError(EdgeError):
    """The board agent failed as a whole (not one variant: those are results)."""

    def __init__(self, message: str, *, target: str | None = None) -> None:
        super().__init__(message)
        self.target = target


class ResultError(EdgeError):
    """The agent answered something that is not a valid result."""

    def __init__(self, message: str, *, target: str | None = None) -> None:
        super().__init__(message)
        self.target = target


class StoreError(EdgeError):
    """The results store failed: unreachable, corrupt, or refused a write."""

    exit_code = ExitCode.INCOMPLETE


class MatrixIncomplete(EdgeError):
    """``edge bench`` finished, but some boards failed: the rest of the matrix is stored."""

    exit_code = ExitCode.INCOMPLETE
