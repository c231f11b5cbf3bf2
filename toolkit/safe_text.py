"""Text from a board, a model file or a target file, made safe to show on a terminal.

A board answers with strings its administrator chose (hostname, CPU model, runtime name,
error messages, the agent's stderr), and a model or target file names things too.  Written
raw to a terminal, a control character in one of them is an instruction to the terminal:
``ESC ] 0 ; title BEL`` retitles the window, ``ESC [ 2 J`` clears the screen, ``ESC [ 31 m``
colours everything after it, a carriage return overwrites the line it is on.  The CLI passes
such strings through :func:`printable` on their way out (tables, error and warning lines,
the Markdown it prints), which shows each control character as its escape instead;
:func:`markdown_text` also escapes what Markdown would act on.

rich's own styling is written by rich around the text it is given: it is not touched.

Example::

    printable("\\x1b]0;owned\\x07Cortex-A76")  # shows \\x1b]0;owned\\x07Cortex-A76
    one_line("no runtime\\nedge: error: forged")  # "no runtime edge: error: forged"

Files a terminal may show later get the same treatment: the HTML report's control
characters (:func:`printable_lines`) and every CSV cell (:func:`csv_cell`, which also keeps
a cell from being read as a spreadsheet formula).
"""

from __future__ import annotations

import re

#: C0 controls but the tab (line breaks included: a string must not forge a line of its own
#: such as ``edge: error: ...``), DEL and the C1 controls (0x80-0x9f: 0x9b alone starts a CSI
#: sequence on terminals that read 8-bit controls), each shown as ``\xNN``.
_ESCAPED = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))
            if code != 0x09}


def printable(text: object) -> str:
    """``text`` with every control character but the tab shown as ``\\xNN``."""
    return str(text).translate(_ESCAPED)


#: :data:`_ESCAPED` but the line feed: a whole document (a report) keeps its lines.
_ESCAPED_KEEPING_LINES = {code: shown for code, shown in _ESCAPED.items() if code != 0x0A}


def printable_lines(text: str) -> str:
    """A document (lines of text) with every control character but the tab and the line
    feed shown as ``\\xNN``: the HTML report, which HTML escaping leaves control
    characters in, on a terminal (``edge report --format html``) or in a file ``cat`` shows."""
    return text.translate(_ESCAPED_KEEPING_LINES)


#: A spreadsheet takes a cell that starts with one of these as a formula (``=HYPERLINK(...)``,
#: ``@SUM(...)``, ``-2+3``); a tab or carriage return first can hide one.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """``value`` as a CSV cell: a string's control characters shown as ``\\xNN`` and, when
    a spreadsheet would take it as a formula, a ``'`` before it (OWASP's advice against CSV
    injection); numbers as they are.

    Example::

        csv_cell("=HYPERLINK(\"http://x\")")   # "'=HYPERLINK(\"http://x\")"
        csv_cell(-1.5)                          # -1.5
    """
    if not isinstance(value, str):
        return value
    return f"'{printable(value)}" if value.startswith(_FORMULA_START) else printable(value)


def one_line(text: object) -> str:
    """``text`` as one printable line: its line breaks folded into single spaces (an error
    or warning line stays one line), then :func:`printable`."""
    return printable(" ".join(part.strip() for part in str(text).splitlines() if part.strip()))


#: Every character Markdown (CommonMark with GitHub's tables) gives a meaning in running text,
#: and ``&`` (entities): a backslash makes each one literal, ``<`` included, so no string
#: from a board or a model file can open an HTML element, a link or a new table cell.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<>|&])")


def markdown_text(value: object) -> str | int | float | None:
    """``value`` shown as itself in Markdown: its special characters escaped, its line
    breaks made spaces (a line break would end the table row it is in) and its control
    characters shown as ``\\xNN`` (``edge deploy`` prints this Markdown on the terminal).

    The report's Markdown template passes every ``{{ }}`` through this (``finalize``): each
    one is data (names and figures), and the template's own markup is written around them.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", str(value))
    return printable(" ".join(text.splitlines()))
