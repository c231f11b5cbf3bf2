"""A verdict per measurement, as MLPerf gives one: VALID, or INVALID with the reasons.

Example::

    judge(figures, settings)  # {"status": "INVALID", "reasons": ["too few runs: 12 < 50"]}
"""

from __future__ import annotations

from typing import Any

VALID, INVALID = "VALID", "INVALID"


def judge(figures: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Check one variant's figures against the job's floors and limits."""
    reasons = []
    runs, min_runs = int(figures["runs"]), int(settings["min_runs"])
    if runs < min_runs:
        reasons.append(f"too few runs: {runs} < {min_runs} (ceiling max_seconds="
                       f"{settings['max_seconds']:g} or max_runs={settings['max_runs']} hit)")
    # The run loop stops on elapsed wall time, so judge the same clock (not the sum of samples).
    seconds = float(figures.get("wall_seconds", figures["measured_seconds"]))
    min_seconds = float(settings["min_seconds"])
    if seconds < min_seconds:
        reasons.append(f"too short: {seconds:.3f} s < {min_seconds:g} s")
    reasons.extend(figures.get("thermal", {}).get("throttled", []))
    # Robust (MAD / median): rare OS stalls must not void a steady run; see latency_summary.
    cv, max_cv = figures["latency_ms"].get("robust_cv"), float(settings["max_cv"])
    unsteady = []
    if cv is not None and max_cv > 0 and cv > max_cv:
        unsteady.append(f"coefficient of variation {cv:.3f} (robust: MAD / median) above the "
                        f"limit {max_cv:g}")
        reasons.extend(unsteady)
    check = figures.get("output_check")
    if check is not None and not check.get("ok", False):
        reasons.append("outputs mismatched: " + str(check.get("summary", "")))
    verdict: dict[str, Any] = {"status": INVALID if reasons else VALID, "reasons": reasons}
    if reasons and reasons == unsteady:
        # Only the spread was wrong: the board's state changed during the runs (another
        # process, a frequency step), which a second attempt may not meet.
        verdict["unsteady_only"] = True
    return verdict
