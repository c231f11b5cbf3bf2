"""The regression gate: is a candidate slower than its baseline on the board, beyond noise?

:mod:`toolkit.gate.paired` measures both side by side on the board (``edge deploy
--against`` and ``edge check --paired``); :mod:`toolkit.gate.check` compares two stored runs
when they cannot be measured again: it pairs their records, judges each metric with
:mod:`toolkit.gate.metrics` and the noise figures of :mod:`toolkit.gate.spread`, and renders
the outcome with :mod:`toolkit.gate.render`.  Both gates take :mod:`toolkit.gate.thresholds`.
Import the module you need: this package imports nothing itself, so that ``toolkit.gate.check``
and ``toolkit.gate.paired`` each load only what they use.
"""
