"""Pick the variant to ship: within an accuracy budget, fastest as measured on the board.

Host estimates mislead: on tflite-runtime 2.14 on x86, XNNPACK takes only float
models and int8 runs several times slower than fp32.  So ``edge deploy
--max-accuracy-drop P`` measures every candidate within the budget on each board
and picks the lowest median latency there, saying why when a smaller variant lost.

A figure is only as good as its measurement: only VALID measurements compete (an
INVALID one was too short, too noisy, throttled or computed wrong outputs), and a
latency difference within the runs' own noise decides nothing, so then the smaller
file wins.  Every candidate left out is named with its reason.

Example::

    within, over = split_by_budget(artifacts, max_drop=0.5)
    choice = choose_fastest("rpi4", records, left_out=over)
    print(*choice.lines(), sep="\\n")   # "rpi4: picked int8 (p50 0.41 ms) ..."
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from toolkit.artifacts.bundle import Artifact
from toolkit.errors import UsageError
from toolkit.results.facts import RuntimeCheck
from toolkit.results.record import ResultRecord

#: Two-sided 95 % normal quantile, for the distribution-free interval of a median.
_Z95 = 1.96


#: A drop above the budget by no more than this is the budget itself, in floating point:
#: 100 * (0.95 - 0.945) is 0.5000000000000004 points, and a variant at the budget is within it.
_AT_BUDGET_POINTS = 1e-9


def budget_verdict(reference: float, artifact: Artifact,
                   max_drop: float) -> tuple[float | None, str | None]:
    """The one accuracy-budget rule, for ``edge compress`` and ``edge deploy`` alike:
    ``(drop, why)``, the accuracy drop in points below ``reference`` (fp32's; None without
    a figure) and why ``artifact`` is outside ``max_drop`` points, or None when within.

    Outside: no finite accuracy figure (missing, NaN); a drop above ``max_drop`` (one at it
    is within); a runtime it was checked under computing it wrongly.  Accuracy is top-1,
    higher is better, for every model edge evaluates: a gain is a negative drop.
    """
    accuracy = artifact.accuracy
    drop = None if accuracy is None else 100 * (reference - accuracy)
    if drop is None or not math.isfinite(drop):
        return None, "no accuracy figure to hold to the budget"
    if drop > max_drop + _AT_BUDGET_POINTS:
        return drop, (f"over the accuracy budget: {drop:.2f} points below fp32 (budget "
                      f"{max_drop:g})" + _fine_tune_hint(artifact.config))
    wrong = [c for c in artifact.runtime_compat if not c.get("ok")]
    if wrong:
        return drop, "not correct on every runtime: " + "; ".join(_compat(c) for c in wrong)
    return drop, None


def split_by_budget(artifacts: Sequence[Artifact],
                    max_drop: float) -> tuple[list[Artifact], list[tuple[str, str]]]:
    """(within, left out with why): fp32's accuracy is the reference; drops are in points.

    Each candidate is judged by :func:`budget_verdict`, the rule ``edge compress`` uses too.
    """
    baseline = next((a for a in artifacts if a.variant == "fp32"), None)
    if baseline is None or baseline.accuracy is None or not math.isfinite(baseline.accuracy):
        raise UsageError("--max-accuracy-drop needs labelled eval data and the fp32 variant "
                         "as the reference")
    reference = baseline.accuracy
    within, over = [], []
    for artifact in artifacts:
        _, why = budget_verdict(reference, artifact, max_drop)
        if why is None:
            within.append(artifact)
        else:
            over.append((artifact.variant, why))
    return within, over


def _fine_tune_hint(config: Mapping[str, object]) -> str:
    """For a chain that fine-tunes, how to give it more training (the recipe grammar's
    options), since its fixed default epochs may be what lost the accuracy."""
    steps = config.get("steps")
    tuned = [step for step in steps if isinstance(step, Mapping) and step.get("epochs")] \
        if isinstance(steps, list) else []
    if not tuned:
        return ""
    step = tuned[-1]
    return (f"; its {step['recipe']} step fine-tuned {step['epochs']} epoch(s): more may "
            f"recover it (add :epochs={2 * int(step['epochs'])} to that step)")


def _compat(check: RuntimeCheck) -> str:
    runtime = f"{check.get('name', 'a runtime')} {check.get('version', '')}".strip()
    agreement = check.get("top1_agreement_with_source", check.get("top1_agreement"))
    why = check.get("error") or (f"top-1 agreement {agreement:.3f} with the source"
                                 if isinstance(agreement, int | float) else "outputs differ")
    return f"{runtime}: {why}"


@dataclass(frozen=True)
class Choice:
    target: str
    variant: str | None
    message: str
    #: Every candidate that did not compete, with why: (variant, reason).
    left_out: tuple[tuple[str, str], ...] = ()

    def lines(self) -> list[str]:
        """The pick, then one line per candidate left out."""
        return [self.message, *(f"  {self.target}: left out {variant}: {reason}"
                                for variant, reason in self.left_out)]


def choose_fastest(target: str, records: list[ResultRecord],
                   left_out: Sequence[tuple[str, str]] = ()) -> Choice:
    """The VALID measurement with the lowest p50 on ``target``, unless within noise.

    ``left_out``: candidates that never ran (e.g. over the accuracy budget), with why.
    When the fastest is not faster beyond noise than others, the smallest file among
    those tied wins, and the message says the difference was within noise.
    """
    out = list(left_out)
    valid = []
    for record in records:
        reason = _not_competing(record)
        if reason:
            out.append((record.variant, reason))
        else:
            valid.append(record)
    if not valid:
        return Choice(target, None, f"{target}: no variant within the budget has a VALID "
                      "measurement; nothing picked", tuple(out))
    valid.sort(key=_p50)
    fastest = valid[0]
    tied = [(r, why) for r in valid[1:] if (why := within_noise(fastest, r))]
    if tied:
        pick = min([fastest, *(r for r, _ in tied)],
                   key=lambda r: math.inf if r.size_bytes is None else r.size_bytes)
        others = [r for r in [fastest, *(r for r, _ in tied)] if r is not pick]
        why = "; ".join(f"{r.variant}: {reason}" for r, reason in tied)
        message = (f"{target}: picked {pick.variant} (p50 {_ms(_p50(pick))}, "
                   f"{_kib(pick)}): its latency and that of "
                   f"{', '.join(r.variant for r in others)} differ within noise ({why}), "
                   "so the smaller file wins")
    else:
        pick = fastest
        how = ("fastest within the accuracy budget, beyond noise" if len(valid) > 1 else
               "the only VALID measurement within the accuracy budget")
        message = f"{target}: picked {pick.variant} (p50 {_ms(_p50(pick))}, {how})"
    slower = [r for r in valid if r is not pick and all(r is not t for t, _ in tied)]
    if slower:
        message += "; " + ", ".join(f"{r.variant} is {_p50(r) / _p50(pick):.1f}x slower"
                                    for r in slower)
    smaller_but_slower = [r.variant for r in slower
                          if (r.size_bytes or 0) < (pick.size_bytes or 0)]
    if smaller_but_slower:
        message += f"; smaller {', '.join(smaller_but_slower)} lost on this board's latency"
    return Choice(target, pick.variant, message, tuple(out))


def _not_competing(record: ResultRecord) -> str | None:
    """Why a measured record cannot be picked, or None when it can."""
    if not record.ok:
        return f"{record.status}: {record.error or 'no reason given'}"
    if record.verdict is None:
        return "no verdict from the board (an older agent): validity unknown"
    if record.verdict != "VALID":
        reasons = "; ".join(record.verdict_reasons)
        return f"{record.verdict}: {reasons}" if reasons else record.verdict
    if not record.p50_ms:
        return "no latency figure"
    return None


def within_noise(fast: ResultRecord, slow: ResultRecord) -> str | None:
    """Why ``slow``'s median is not slower than ``fast``'s beyond noise, or None if it is.

    Two tests, either of which calls it noise: the relative difference is no larger than
    the noisier run's robust CV (MAD / median), or the 95 % intervals of the two medians
    (distribution-free, from the raw samples) overlap.
    """
    a, b = _p50(fast), _p50(slow)
    difference = (b - a) / a
    cv = max(_robust_cv(fast), _robust_cv(slow))
    if difference <= cv:
        return (f"p50 {_ms(a)} vs {_ms(b)}: {difference:+.1%}, not above the robust CV "
                f"{cv:.1%}")
    first, second = median_interval(fast), median_interval(slow)
    if first and second and second[0] <= first[1]:
        return (f"p50 {_ms(a)} vs {_ms(b)}: the medians' 95 % intervals overlap "
                f"([{_ms(first[0])}, {_ms(first[1])}] and [{_ms(second[0])}, {_ms(second[1])}])")
    return None


def median_interval(record: ResultRecord) -> tuple[float, float] | None:
    """A 95 % interval of the median from the raw samples (order statistics), or None.

    Distribution-free: the ranks n/2 -+ 1.96 sqrt(n)/2 of the sorted samples.
    """
    samples = sorted(float(s) for s in record.latency_samples_ms)
    n = len(samples)
    if n < 2:
        return None
    half_width = _Z95 * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half_width) - 1)
    high = min(n - 1, math.ceil(n / 2 + half_width))
    return samples[low], samples[high]


def _robust_cv(record: ResultRecord) -> float:
    return record.latency("robust_cv") or 0.0


def _p50(record: ResultRecord) -> float:
    return record.p50_ms or 0.0  # only records with a p50 compete (_not_competing)


def _ms(value: float) -> str:
    return f"{value * 1000:.3g} us" if value < 1 else f"{value:.4g} ms"


def _kib(record: ResultRecord) -> str:
    size = record.size_bytes
    return f"{size / 1024:.1f} KiB" if size is not None else "size unknown"
