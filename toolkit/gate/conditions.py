"""What two stored measurements of one target x variant were measured under, and how it differs.

An unpaired ``edge check`` compares two runs measured at different times, perhaps with
another runtime, thread count or accelerator, on another machine of the same kind or
with the CPU at another clock.  Any of these moves latency as much as a change to the
model, so every difference the records show is named beside the verdict:
:func:`condition_differences` lists them, :func:`conditions_note` words the note.

Compared, where both records have the fact (records of older versions lack some):

- the runtime and its version (``ai-edge-litert 2.3.0 vs tflite-runtime 2.14.0``);
- the thread count;
- the accelerator asked for and the one used, and the API (Interpreter or CompiledModel);
- the board: hostname, CPU model, board model, kernel release, CPU count (a different
  CPU or board model is refused before this, as a different board);
- the CPU frequency governor (``cpu_governor`` in the board facts, when an agent sends it);
- the CPU clock: the highest ``cpu_mhz`` the board read before and after the runs,
  noted when the two differ by more than :data:`CLOCK_TOLERANCE` (clocks move a little
  from one reading to the next).

What built the two files is not a condition of the measurement but of the file:
:func:`toolchain_differences` names the packages (and edge) whose versions differ
between the two records (``litert-torch 0.9.0 vs 0.10.0``).

Example::

    condition_differences(base_record, new_record)  # ['threads 1 vs 4', ...]
    toolchain_differences(base_record, new_record)  # ['torch 2.12.0 vs 2.13.0']
"""

from __future__ import annotations

from collections.abc import Mapping

from toolkit.results.record import ResultRecord

__all__ = ["CLOCK_TOLERANCE", "condition_differences", "conditions_note",
           "toolchain_differences"]

#: Highest CPU clocks that differ by less than this fraction are not noted.
CLOCK_TOLERANCE = 0.10
#: Board facts compared, and how a note names them.
_BOARD_FACTS = (("hostname", "hostname"), ("cpu_model", "CPU"), ("board_model", "board"),
                ("release", "kernel"), ("cpu_count", "CPUs"), ("cpu_governor", "governor"))
#: Accelerator facts compared (``measured["accelerator"]``), and how a note names them.
_ACCELERATOR_FACTS = (("requested", "accelerator asked"), ("used", "accelerator used"),
                      ("api", "API"))


def condition_differences(base: ResultRecord, new: ResultRecord) -> list[str]:
    """Each condition in which ``new`` was measured differently from ``base``, as
    ``"what before vs after"``; empty when the records show no difference."""
    found = []
    if base.runtime and new.runtime and base.runtime != new.runtime:
        found.append(f"runtime {base.runtime} vs {new.runtime}")
    if base.threads is not None and new.threads is not None and base.threads != new.threads:
        found.append(f"threads {base.threads} vs {new.threads}")
    before, after = _mapping(base.measured.get("accelerator")), \
        _mapping(new.measured.get("accelerator"))
    found.extend(_differing(before, after, _ACCELERATOR_FACTS))
    found.extend(_differing(_mapping(base.board), _mapping(new.board), _BOARD_FACTS))
    clocks = _highest_clock(base), _highest_clock(new)
    if clocks[0] and clocks[1] and abs(clocks[1] / clocks[0] - 1) > CLOCK_TOLERANCE:
        found.append(f"CPU clock up to {clocks[0]:.0f} vs {clocks[1]:.0f} MHz")
    return found


def toolchain_differences(base: ResultRecord, new: ResultRecord) -> list[str]:
    """Each package (or edge) that built both files, at another version in ``new``:
    ``"litert-torch 0.9.0 vs 0.10.0"``; empty when a record does not say (older records)."""
    before, after = base.toolchain, new.toolchain
    return [f"{name} {before[name]} vs {after[name]}" for name in after
            if name in before and before[name] != after[name]]


def conditions_note(where: str, differences: list[str], baseline: str, run: str) -> str:
    """The note an unpaired check adds for ``where`` (a target, or target/variant)."""
    return (f"Conditions differ on {where} (baseline {baseline} vs run {run}): "
            f"{'; '.join(differences)}: a latency change may come from these, not the model "
            "(edge check --paired measures both files under the same ones).")


def _differing(before: Mapping[str, object], after: Mapping[str, object],
               facts: tuple[tuple[str, str], ...]) -> list[str]:
    found = []
    for key, label in facts:
        old, new = before.get(key), after.get(key)
        if _known(old) and _known(new) and str(old) != str(new):
            found.append(f"{label} {old} vs {new}")
    return found


def _known(value: object) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool) \
        and str(value) != ""


def _highest_clock(record: ResultRecord) -> float | None:
    """The highest CPU clock (MHz) the board read before or after the runs, if any."""
    clocks: list[float] = []
    for when in ("before", "after"):
        mhz = _mapping(_mapping(record.thermal).get(when)).get("cpu_mhz")
        clocks.extend(v for v in _mapping(mhz).values()
                      if isinstance(v, int | float) and not isinstance(v, bool) and v > 0)
    return float(max(clocks)) if clocks else None


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}
