"""The run: a typed plan (:mod:`.plan`), where boards come from (:mod:`.boards`), and the
one executor ``edge deploy`` and ``edge bench`` are presets of (:mod:`.execute`).

Nothing is imported here: ``import toolkit`` stays light (see ``tests/test_cli_startup.py``).
"""
