"""Two stored runs side by side: every condition and figure of each target x variant.

``edge check`` says whether a figure moved; this says what else differed between the two
runs, so a user can tell a slower model from a slower board, runtime or thread count.
:func:`diff_runs` lines up the records of two runs by (target, variant) and, for each, lists
the conditions it was measured under and the figures it gave, differences first, with a
one-line reading of the whole:

- conditions that differ (as :func:`toolkit.gate.conditions.condition_differences` names
  them: runtime, threads, accelerator, board, governor, clock): ``"threads 1 vs 4, runtime
  ...: figures not comparable"``;
- otherwise the latency changes: ``"same conditions: p50 +12.0 % on local/int8"``;
- before either, the packages that built a file at another version, where the two files
  differ (:func:`toolkit.gate.conditions.toolchain_differences`): ``"built with
  litert-torch 0.9.0 vs 0.10.0, ..."``; the same bytes from another converter cannot move
  a figure, and are listed among the conditions only.

Every value is text as tables show it (units of :mod:`toolkit.units`); board strings are
shown as they were reported, and the terminal and the JSON writer escape them.

Example::

    diff = diff_runs(store.get_run("main"), store.get_run("latest"))
    diff.reading          # 'same conditions: p50 +12.0 % on local/int8'
    diff.to_dict()        # for --json
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

from toolkit.gate.conditions import condition_differences, toolchain_differences
from toolkit.results.record import ResultRecord
from toolkit.results.store import StoredRun
from toolkit.units import format_duration, format_energy, format_memory, format_size

__all__ = ["Fact", "RunDiff", "VariantDiff", "diff_runs"]

#: Latency changes smaller than this fraction are not named in the reading.
READING_TOLERANCE = 0.02


@dataclass(frozen=True, kw_only=True)
class Fact:
    """One condition or figure in both runs ("-" where a run does not record it)."""

    name: str
    base: str
    new: str
    #: new / base of a figure that is a number in both, None otherwise.
    ratio: float | None = None

    @property
    def change(self) -> str:
        """The relative change of a figure (``+12.0 %``), "" when not a number in both."""
        return "" if self.ratio is None else f"{100 * (self.ratio - 1):+.1f} %"

    @property
    def differs(self) -> bool:
        return self.base != self.new


@dataclass(frozen=True, kw_only=True)
class VariantDiff:
    """One target x variant of the two runs; ``only_in`` names the run that lacks the other."""

    target: str
    variant: str
    conditions: list[Fact] = field(default_factory=list)
    figures: list[Fact] = field(default_factory=list)
    #: condition_differences' wording of the conditions that make the figures incomparable.
    incomparable: list[str] = field(default_factory=list)
    #: toolchain_differences' wording of what built the two (differing) files differently.
    built: list[str] = field(default_factory=list)
    only_in: str | None = None

    @property
    def facts(self) -> list[Fact]:
        """Conditions then figures, the differing ones of each first."""
        return ([f for f in self.conditions if f.differs] + [f for f in self.figures if f.differs]
                + [f for f in self.conditions if not f.differs]
                + [f for f in self.figures if not f.differs])


@dataclass(frozen=True, kw_only=True)
class RunDiff:
    """Two runs compared: the reading, the run's own facts, and one block per target x variant."""

    base_run: str
    new_run: str
    reading: str
    run_facts: list[Fact]
    variants: list[VariantDiff]

    def to_dict(self) -> dict[str, object]:
        """The JSON of ``edge runs diff --json``; each fact says whether it differs."""
        def facts(items: list[Fact]) -> list[dict[str, object]]:
            return [{**asdict(f), "change": f.change, "differs": f.differs} for f in items]

        return {"base_run": self.base_run, "new_run": self.new_run, "reading": self.reading,
                "run": facts(self.run_facts),
                "variants": [{"target": v.target, "variant": v.variant, "only_in": v.only_in,
                              "incomparable": v.incomparable, "built": v.built,
                              "conditions": facts(v.conditions), "figures": facts(v.figures)}
                             for v in self.variants]}


def diff_runs(base: StoredRun, new: StoredRun) -> RunDiff:
    """``base`` and ``new`` side by side (see the module docstring)."""
    run_facts = [_fact("model", base.model_name, new.model_name),
                 _fact("model sha256", base.model_sha256, new.model_sha256),
                 _fact("git commit", base.git_commit, new.git_commit),
                 _fact("created", base.created_at, new.created_at)]
    before = {r.key: r for r in base.results}
    after = {r.key: r for r in new.results}
    variants = []
    for key in sorted(before.keys() | after.keys()):
        old, now = before.get(key), after.get(key)
        if old is None or now is None:
            variants.append(VariantDiff(target=key[0], variant=key[1],
                                        only_in=base.run_id if now is None else new.run_id))
            continue
        variants.append(VariantDiff(
            target=key[0], variant=key[1], conditions=_conditions(old, now),
            figures=_figures(old, now), incomparable=condition_differences(old, now),
            built=toolchain_differences(old, now) if old.sha256 != now.sha256 else []))
    return RunDiff(base_run=base.run_id, new_run=new.run_id,
                   reading=_reading(run_facts, variants), run_facts=run_facts, variants=variants)


def _reading(run_facts: list[Fact], variants: list[VariantDiff]) -> str:
    """One line: what built the files differently, then what makes the figures
    incomparable, or else how latency moved."""
    incomparable: list[str] = []
    built: list[str] = []
    for v in variants:
        incomparable.extend(d for d in v.incomparable if d not in incomparable)
        built.extend(d for d in v.built if d not in built)
    prefix = ("model changed, " if run_facts[1].differs else "") + (
        f"built with {', '.join(built)}, " if built else "")
    if incomparable:
        return f"{prefix}{', '.join(incomparable)}: figures not comparable"
    moves = []
    for v in variants:
        p50 = next((f for f in v.figures if f.name == "p50"), None)
        if p50 is not None and p50.ratio is not None \
                and abs(p50.ratio - 1) >= READING_TOLERANCE:
            moves.append((abs(p50.ratio - 1), f"p50 {p50.change} on {v.target}/{v.variant}"))
    missing = [f"{v.target}/{v.variant} only in {v.only_in}" for v in variants if v.only_in]
    said = [text for _, text in sorted(moves, reverse=True)[:3]] + missing
    if len(moves) > 3:
        said.insert(3, f"{len(moves) - 3} more moved")
    return f"{prefix}same conditions: {'; '.join(said) if said else 'p50 within 2 %'}"


def _conditions(old: ResultRecord, new: ResultRecord) -> list[Fact]:
    facts = [_fact("runtime", old.runtime, new.runtime),
             _fact("threads", old.threads, new.threads)]
    for key, label in (("requested", "accelerator asked"), ("used", "accelerator used"),
                       ("api", "API")):
        facts.append(_fact(label, _get(old.measured.get("accelerator"), key),
                           _get(new.measured.get("accelerator"), key)))
    for key, label in (("hostname", "hostname"), ("cpu_model", "CPU"),
                       ("board_model", "board model"), ("machine", "machine"),
                       ("release", "kernel"), ("cpu_count", "CPU count"),
                       ("cpu_governor", "governor"), ("agent", "agent package"),
                       ("python", "agent python"),
                       ("runtimes", "runtimes installed")):
        facts.append(_fact(label, _get(old.board, key), _get(new.board, key)))
    facts.append(_fact("CPU clock (highest, MHz)", _clock(old), _clock(new)))
    facts.append(_fact("hottest zone (C, before/after)", _hottest(old), _hottest(new)))
    facts.append(_fact("throttled", _throttled(old), _throttled(new)))
    facts.append(_fact("inputs", old.measured.get("inputs"), new.measured.get("inputs")))
    facts.append(_fact("file sha256", old.sha256, new.sha256))
    # What built each file, edge first: every package either record names.
    for name in dict.fromkeys([*old.toolchain, *new.toolchain]):
        facts.append(_fact(f"built with {name}", old.toolchain.get(name),
                           new.toolchain.get(name)))
    return facts


#: (name, reader, format) of each figure compared; a number in both gets a relative change.
_FIGURES: tuple[tuple[str, Callable[[ResultRecord], float | None],
                      Callable[[float], str]], ...] = (
    ("size", lambda r: r.size_bytes, format_size),
    ("accuracy", lambda r: r.accuracy, lambda v: f"{v:.4f}"),
    ("cosine with float", lambda r: r.cosine_with_float, lambda v: f"{v:.4f}"),
    ("p50", lambda r: r.latency("p50"), format_duration),
    ("p90", lambda r: r.latency("p90"), format_duration),
    ("p99", lambda r: r.latency("p99"), format_duration),
    ("peak memory", lambda r: r.peak_rss_bytes, format_memory),
    ("energy per inference", lambda r: r.energy_per_inference_mj, format_energy),
)


def _figures(old: ResultRecord, new: ResultRecord) -> list[Fact]:
    facts = [_fact("status", old.status.value, new.status.value)]
    for name, read, show in _FIGURES:
        a, b = read(old), read(new)
        ratio = b / a if a is not None and b is not None and a != 0 else None
        facts.append(Fact(name=name, base="-" if a is None else show(a),
                          new="-" if b is None else show(b),
                          ratio=ratio if ratio is not None and math.isfinite(ratio) else None))
    facts.append(_fact("verdict", _verdict(old), _verdict(new)))
    return facts


def _fact(name: str, base: object, new: object) -> Fact:
    return Fact(name=name, base=_shown(base), new=_shown(new))


def _shown(value: object) -> str:
    """A recorded value as text; "-" when the run does not record it."""
    if value is None or value == "" or value == {}:
        return "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {v}" for k, v in sorted(value.items()))
    return str(value)


def _get(block: object, key: str) -> object:
    return block.get(key) if isinstance(block, Mapping) else None


def _clock(record: ResultRecord) -> str | None:
    clocks = [v for when in ("before", "after")
              for v in _mapping(_get(record.thermal.get(when), "cpu_mhz")).values()
              if isinstance(v, int | float) and not isinstance(v, bool) and v > 0]
    return f"{max(clocks):.0f}" if clocks else None


def _hottest(record: ResultRecord) -> str | None:
    found = []
    for when in ("before", "after"):
        zones = [v for v in _mapping(_get(record.thermal.get(when), "zones_c")).values()
                 if isinstance(v, int | float) and not isinstance(v, bool)]
        found.append(f"{max(zones):.0f}" if zones else "-")
    return None if found == ["-", "-"] else " / ".join(found)


def _throttled(record: ResultRecord) -> str | None:
    if "thermal" not in record.measured:
        return None
    throttled = record.thermal.get("throttled") or []
    return "; ".join(throttled) if throttled else "no"


def _verdict(record: ResultRecord) -> str | None:
    if record.verdict is None:
        return None
    reasons = "; ".join(record.verdict_reasons)
    return f"{record.verdict} ({reasons})" if reasons else record.verdict


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}
