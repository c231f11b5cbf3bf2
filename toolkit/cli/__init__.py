"""The ``edge`` command: one module per command group, each parsing, calling the library
and rendering; ``main`` assembles them. No logic lives only here.
"""
