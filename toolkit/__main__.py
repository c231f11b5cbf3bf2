"""``python -m toolkit`` is the ``edge`` command."""

from .cli import main

main(prog_name="edge")
