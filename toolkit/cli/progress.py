"""What ``edge`` shows on stderr while it works: one line per warning, and live progress.

Warnings: the library logs them (``logging``, under ``toolkit``); while a command runs,
:func:`one_line_warnings` prints each as ``edge: warning: ...`` on one line. Without
it, what became of a warning depended on the model: a converter run leaves a root
handler bound to the stream that was captured during the conversion, so a retry after
converting a ``.py`` model vanished where the same retry for a ``.tflite`` showed.

Progress: :class:`LiveProgress` is the ``progress`` callback of
:func:`toolkit.run.deploy.deploy`; in a terminal it keeps one transient line with a
spinner, the time since the start, the current stage (``compress int8: converting``,
``rpi5: measuring fp32, int8``) and how long that stage has taken. Elsewhere (a pipe,
a CI log) it writes the same facts as one line every :data:`LOG_INTERVAL_S` seconds
(``edge: 2:30 compress fp32: converting (fp32) (1:45)``), so a long conversion is not 11
silent minutes in a CI log, and a command shorter than that writes none: stderr holds
only warnings, failures and errors.  ``--quiet`` turns both off.

Example::

    with one_line_warnings(), LiveProgress(enabled=not quiet) as progress:
        deploy("model.py", targets=["local"], progress=progress)
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

import click

from toolkit.safe_text import one_line, printable

if TYPE_CHECKING:
    import logging

    from rich.live import Live
    from rich.spinner import Spinner


#: The live display being drawn, if any: warnings are printed above it, through it.
_drawing: list[Live] = []


def _one_line(record: logging.LogRecord) -> str:
    """``edge: warning: MESSAGE``, every line break of the message (or of its exception)
    folded into a space and its control characters escaped (it may quote a board)."""
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        text += f": {record.exc_info[1]}"
    return "edge: warning: " + one_line(text)


def _print_warning(line: str) -> None:
    """On stderr; above the live line when one is drawn."""
    if _drawing:
        _drawing[-1].console.print(line, markup=False, highlight=False, soft_wrap=True)
    else:
        click.echo(line, err=True)


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """While in the block, ``toolkit``'s warnings go to stderr, one line each, and only there.

    Not propagated to the root logger: handlers that third-party code leaves there would
    print them a second time, in another format, or into a stream nobody reads.
    """
    import logging  # here: ``edge --help`` never gets this far, and need not pay for it

    class OneLineHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                _print_warning(_one_line(record))
            except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
                self.handleError(record)

    logger = logging.getLogger("toolkit")
    handler = OneLineHandler(logging.WARNING)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


#: Outside a terminal, one progress line this often (seconds).
LOG_INTERVAL_S = 30.0


class LiveProgress:
    """A ``progress(message)`` callback, when ``enabled``: drawn as one live line on stderr
    when it is a terminal, else written as one line every ``log_interval`` seconds; a
    no-op when not ``enabled``."""

    def __init__(self, *, enabled: bool, log_interval: float = LOG_INTERVAL_S) -> None:
        self.enabled = enabled
        self.message = "starting"
        self.log_interval = log_interval
        self._started = self._stage_started = time.monotonic()
        self._live: Live | None = None
        self._spinner: Spinner | None = None
        self._stream: TextIO | None = None
        self._logger: threading.Thread | None = None
        self._stop = threading.Event()

    def __enter__(self) -> LiveProgress:
        if not self.enabled:
            return self
        from rich.console import Console
        from rich.live import Live
        from rich.spinner import Spinner

        self._stream = _own_stderr()
        console = Console(file=self._stream) if self._stream else Console(stderr=True)
        if not console.is_terminal:
            self._logger = threading.Thread(target=self._log_lines, args=(self._stream or
                                                                          sys.stderr,),
                                            name="edge-progress", daemon=True)
            self._logger.start()
            return self
        self._spinner = Spinner("dots", style="cyan")
        # Transient: the line goes when the command ends. stdout and stderr are left alone
        # (not redirected through the display): what third-party code writes there while
        # converting must stay where the conversion captures it; warnings come through it.
        self._live = Live(get_renderable=self._render, console=console, transient=True,
                          refresh_per_second=8, redirect_stdout=False, redirect_stderr=False)
        self._live.__enter__()
        _drawing.append(self._live)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._live is not None:
            _drawing.remove(self._live)
            self._live.__exit__(kind, error, traceback)
            self._live = None
        if self._logger is not None:
            self._stop.set()
            self._logger.join()
            self._logger = None
        self._close_stream()

    def _log_lines(self, stream: TextIO) -> None:
        """Every ``log_interval`` seconds until the command ends: the live line's facts."""
        while not self._stop.wait(self.log_interval):
            now = time.monotonic()
            line = (f"edge: {_clock(now - self._started)} {self.message} "
                    f"({_clock(now - self._stage_started)})")
            try:
                stream.write(line + "\n")  # one write: a warning line cannot split it
                stream.flush()
            except (OSError, ValueError):  # stderr closed: nobody reads the log any more
                return

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def __call__(self, message: str) -> None:
        self.message = printable(message)  # it names targets and variants
        self._stage_started = time.monotonic()
        if self._live is not None:  # draw now: a stage shorter than a refresh still shows
            self._live.refresh()

    def _render(self) -> Spinner:
        from rich.text import Text

        assert self._spinner is not None  # drawn only between __enter__ and __exit__
        now = time.monotonic()
        line = Text.assemble((f"{_clock(now - self._started)} ", "bold"), self.message,
                             (f"  ({_clock(now - self._stage_started)})", "dim"))
        line.truncate(max(20, self._live.console.width - 3) if self._live else 200,
                      overflow="ellipsis")
        self._spinner.update(text=line)
        return self._spinner


def _own_stderr() -> TextIO | None:
    """A file of its own on descriptor 2's terminal, or None when stderr has no descriptor.

    Conversions redirect descriptor 2 and ``sys.stderr`` to capture the converters'
    logs (:func:`toolkit._quiet.captured_native_output`); the progress line must reach
    the terminal meanwhile, and must not land in what is captured.
    """
    try:
        descriptor = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # e.g. a test runner's buffer
        return None
    return os.fdopen(os.dup(descriptor), "w", encoding="utf-8", errors="replace")


def _clock(seconds: float) -> str:
    """``0:07``, ``12:41``: minutes and seconds, as a stopwatch shows them."""
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"
