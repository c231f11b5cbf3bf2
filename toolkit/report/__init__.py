"""Stage 7: a stored run as a report people read: HTML, Markdown or JSON (``render``), its
per-operator profile (``profile``) and its inline SVG charts (``svgplot``).
"""
