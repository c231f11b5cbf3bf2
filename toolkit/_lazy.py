"""Public names of a package imported on first use (PEP 562), not when the package is.

``import toolkit`` happens before every ``edge`` command, ``edge --help`` included; if
the package's ``__init__`` imported what it re-exports, torch, numpy and paramiko would
load before the help screen (about ten times the start-up of ``import click``). With
:func:`attach`, a name's module is imported when the name is first read, and the name
is then kept in the package's namespace like an ordinary import.

Example (in a package's ``__init__.py``; type checkers read the ``TYPE_CHECKING``
imports)::

    if TYPE_CHECKING:
        from toolkit.gate.check import check_runs
    __getattr__, __dir__ = attach(__name__, {"check_runs": "check"}, globals())
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def attach(package: str, exports: dict[str, str], namespace: dict[str, object]
           ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a name to its submodule."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
