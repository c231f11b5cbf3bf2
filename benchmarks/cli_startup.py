"""How long ``edge --help`` takes against ``python -c "import click"`` on this machine.

    python benchmarks/cli_startup.py [--runs 10] [--subcommands]

Each command runs ``--runs`` times in a fresh process, taking turns with ``import click``
(after one unmeasured run, so the
files are in the page cache and the modules' bytecode in ``__pycache__``, as after ``pip
install``: ``$PYTHONDONTWRITEBYTECODE`` is dropped for these runs); the medians of the wall
times are printed, and their ratio.
``edge`` is run as its console script runs it (``from toolkit.cli.main import main``), from
this checkout. A help screen that imports torch, numpy or paramiko shows up here as a
ratio far above 2 (about 15 before the command modules imported them lazily).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: What the ``edge`` console script does, word for word.
EDGE = [sys.executable, "-c", "import sys; from toolkit.cli.main import main; sys.exit(main())"]
CLICK = [sys.executable, "-c", "import click"]


def median_seconds(commands: list[list[str]], runs: int) -> list[float]:
    """Median wall time of ``runs`` fresh processes of each command (one warm-up first).

    The commands take turns, run after run, so that a load on the machine that comes and
    goes (it is shared) weighs on each alike instead of on whichever ran at the time.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    times: list[list[float]] = [[] for _ in commands]
    for index in range(runs + 1):
        for command, taken in zip(commands, times, strict=True):
            start = time.perf_counter()
            subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
            if index:
                taken.append(time.perf_counter() - start)
    return [statistics.median(taken) for taken in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="measured runs of each command")
    parser.add_argument("--subcommands", action="store_true",
                        help="also time `edge SUBCOMMAND --help` for every command group")
    args = parser.parse_args()
    click_s, help_s = median_seconds([CLICK, [*EDGE, "--help"]], args.runs)
    print(f"python -c 'import click'  median of {args.runs}: {click_s * 1000:7.1f} ms")
    print(f"edge --help               median of {args.runs}: {help_s * 1000:7.1f} ms")
    print(f"ratio edge --help / import click: {help_s / click_s:.2f} (goal: <= 2)")
    if args.subcommands:
        sys.path.insert(0, str(REPO))
        from toolkit.cli.main import main as edge

        for name in sorted(edge.commands):
            click_s, seconds = median_seconds([CLICK, [*EDGE, name, "--help"]], args.runs)
            print(f"edge {name + ' --help':<20} median of {args.runs}: {seconds * 1000:7.1f} ms "
                  f"(ratio {seconds / click_s:.2f} to import click run alongside)")


if __name__ == "__main__":
    main()
