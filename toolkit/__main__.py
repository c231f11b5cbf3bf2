"""``python -m toolkit`` is the ``edge`` command."""

from toolkit.cli.main import main

main(prog_name="edge")
