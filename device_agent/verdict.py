"""A verdict per measurement, as MLPerf gives one: VALID, or INVALID with the reasons.

INVALID: too few runs, too short, throttled, the robust spread above ``max_cv``, the
board's outputs not matching the host's, or outputs that are degenerate (all zero,
constant, NaN or inf: a latency of a file computing garbage describes no model).

The tail.  The spread is judged robustly (MAD / median), so rare OS stalls do not void a
steady run; but a run where many runs stall is not steady for the user who meets it (an
arm64 board: p50 0.44 ms, p99 20.7 ms, more than 10 % of runs ten times the median).
When more than ``MAX_STALL_SHARE`` (1 %) of the runs take more than ``STALL_MULTIPLE``
(10) times the median, the verdict carries a named condition beside its status::

    {"status": "VALID", "reasons": [], "conditions": ["stalls: 10.2 % of runs above 10x
     the median (0.44 ms)"]}

A condition does not make the run INVALID: the median is still measured right, and a
tail can belong to the variant itself (threads waiting on each other), which measuring
again would not remove; the reader is told what the median hides.  One 1 ms stall
among 100,000 runs (0.001 %) stays plain VALID.  The share is counted over the samples
the board ships (every k-th run when there were many), against the median of all runs.

The clock policy.  Clusters that ran on a governor other than ``performance`` (read before
and after the runs, :mod:`device_agent.clocks`) give a named condition too, never INVALID:
the figures are right for that governor, and the reader is told they depend on it
(``governor schedutil: figures depend on the load the governor sees; set performance for
stable figures``).  A board without cpufreq says nothing.

Example::

    judge(figures, settings)  # {"status": "INVALID", "reasons": ["too few runs: 12 < 50"]}
"""

from __future__ import annotations

from typing import Mapping, Sequence

from .clocks import governor_condition
from .settings import JobSettings
from .wire import VariantFigures, Verdict

VALID, INVALID = "VALID", "INVALID"
#: A run slower than this multiple of the median is a stall ...
STALL_MULTIPLE = 10.0
#: ... and more than this share of stalled runs is a named condition beside the status.
MAX_STALL_SHARE = 0.01


def stalls(samples_ms: Sequence[float], median_ms: float) -> str:
    """``"stalls: 10.2 % of runs above 10x the median (0.44 ms)"``, or "" for a steady run."""
    if not samples_ms or median_ms <= 0:
        return ""
    slow = sum(1 for sample in samples_ms if sample > STALL_MULTIPLE * median_ms)
    share = slow / len(samples_ms)
    if share <= MAX_STALL_SHARE:
        return ""
    return (f"stalls: {100 * share:.1f} % of runs above {STALL_MULTIPLE:g}x the median "
            f"({median_ms:.3g} ms)")


#: An energy figure resting on fewer sensor samples than this is named as rough: a 1 Hz
#: sensor over a 2 s measurement averages two readings of a power that moves every run.
MIN_POWER_SAMPLES = 10


def few_power_samples(figures: VariantFigures) -> str:
    """The condition of an energy figure from fewer than :data:`MIN_POWER_SAMPLES` sensor
    samples, or "" (no figure, or enough samples)."""
    power = figures.get("power", {})
    samples = power.get("active_samples")
    if "energy_per_inference_j" not in power or samples is None \
            or samples >= MIN_POWER_SAMPLES:
        return ""
    return (f"energy from {int(samples)} sensor sample{'s' if samples != 1 else ''} (fewer "
            f"than {MIN_POWER_SAMPLES}): a rough figure; measure longer (--min-seconds) or "
            "sample faster (power_rate_hz in the target file)")


def judge(figures: VariantFigures, settings: JobSettings | Mapping[str, object]) -> Verdict:
    """Check one variant's figures against the job's floors and limits."""
    settings = JobSettings.of(settings)
    reasons = []
    runs, min_runs = int(figures["runs"]), int(settings.min_runs)
    if runs < min_runs:
        reasons.append(f"too few runs: {runs} < {min_runs} (ceiling max_seconds="
                       f"{settings.max_seconds:g} or max_runs={settings.max_runs} hit)")
    # The run loop stops on elapsed wall time, so judge the same clock (not the sum of samples).
    seconds = float(figures.get("wall_seconds", figures["measured_seconds"]))
    min_seconds = float(settings.min_seconds)
    if seconds < min_seconds:
        reasons.append(f"too short: {seconds:.3f} s < {min_seconds:g} s")
    reasons.extend(figures.get("thermal", {}).get("throttled", []))
    # Robust (MAD / median): rare OS stalls must not void a steady run; see latency_summary.
    cv, max_cv = figures["latency_ms"].get("robust_cv"), float(settings.max_cv)
    unsteady = []
    if cv is not None and max_cv > 0 and cv > max_cv:
        unsteady.append(f"coefficient of variation {cv:.3f} (robust: MAD / median) above the "
                        f"limit {max_cv:g}")
        reasons.extend(unsteady)
    check = figures.get("output_check")
    if check is not None and check.get("degenerate"):
        reasons.append("outputs degenerate: " + str(check["degenerate"]))
    elif check is not None and not check.get("ok", False):
        reasons.append("outputs mismatched: " + str(check.get("summary", "")))
    verdict: Verdict = {"status": INVALID if reasons else VALID, "reasons": reasons}
    tail = stalls(figures.get("latency_samples_ms") or [],
                  float(figures["latency_ms"].get("p50") or 0.0))
    clocks = figures.get("clocks", {})
    governor = governor_condition([state for state in (clocks.get("before"), clocks.get("after"))
                                   if state is not None])
    conditions = [condition for condition in (tail, governor, few_power_samples(figures))
                  if condition]
    if conditions:
        verdict["conditions"] = conditions
    if reasons and reasons == unsteady:
        # Only the spread was wrong: the board's state changed during the runs (another
        # process, a frequency step), which a second attempt may not meet.
        verdict["unsteady_only"] = True
    return verdict
